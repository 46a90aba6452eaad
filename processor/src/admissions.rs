//! Admissions: the subscription `processor.admissions` decides the applications
//! (`ApplicationSubmitted`, each in a stream of its own) in the log's **commit order**.
//!
//! For every batch of the log it reads, it groups the new applications by course,
//! keeping their commit order, and issues one `DecideApplications` per course: one
//! command and one append decide many applications, and the first applications
//! committed get the seats. One instance is active across all processes (the
//! subscription's advisory lock), so one decider works on a course at a time and the
//! course's stream sees no race of deciders.
//!
//! **Exactly once:** the decisions are commands on the `course` aggregate, committed by
//! the command bus before the batch's checkpoint. A crash in between offers the batch
//! again; the course skips applications it already decided, so nothing is decided
//! twice and the checkpoint then moves on. A lost race with a manager's command
//! (cancellation, capacity change) is retried by the bus on fresh state; one that keeps
//! losing fails the batch, which the subscription retries.
//!
//! Older applications (`EnrollmentRequested`, in the course's own stream) are still
//! decided one by one by the `enrollment.decide` task.

use std::collections::BTreeMap;

use aula_domain::application::{Application, ApplicationEvent};
use aula_domain::course::{
    ApplicationToDecide, Course, CourseCommand, CourseServices, EnrollmentError,
};
use aula_domain::event_types;
use aula_eventlog::shutdown::Shutdown;
use aula_eventlog::subscription::{self, BoxError, SubscriptionHandle};
use aula_eventlog::{
    CommandBus, CommandError, Consumer, EventMetadata, RecordedEvent, SubscriptionOptions, Wakeups,
};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use aula_eventlog::metadata::REPROCESSED_FROM;

pub const ADMISSIONS_SUBSCRIPTION: &str = "processor.admissions";

/// The event type the admissions decide.
pub const DECIDED_EVENT_TYPES: &[&str] = &[event_types::APPLICATION_SUBMITTED];

/// The applications of one course in a batch, in commit order.
struct CourseBatch {
    applications: Vec<ApplicationToDecide>,
    /// The first application's event: the cause recorded on the decisions.
    first_event: Uuid,
    correlation_id: Option<Uuid>,
    institution_id: Option<Uuid>,
}

/// The admissions consumer.
pub struct Admissions {
    bus: CommandBus<Course>,
}

impl Admissions {
    pub fn new(pool: PgPool) -> Self {
        Self {
            bus: CommandBus::with_upcasters(pool, CourseServices, aula_domain::upcasters()),
        }
    }
}

fn decode(event: &RecordedEvent) -> Result<ApplicationEvent, BoxError> {
    let mut serialized = SerializedEvent {
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence as usize,
        aggregate_type: event.aggregate_type.clone(),
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        payload: event.payload.value().clone(),
        metadata: event.metadata.value().clone(),
    };
    for upcaster in aula_domain::upcasters() {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    serde_json::from_value(serialized.payload).map_err(|error| {
        format!(
            "event at position {} ({}) does not decode: {error}",
            event.global_position(),
            event.event_type
        )
        .into()
    })
}

/// The batch's applications by course, each course's in commit order. Reprocessed
/// copies are skipped: the original was (or will be) decided.
fn group(events: &[RecordedEvent]) -> Result<BTreeMap<Uuid, CourseBatch>, BoxError> {
    let mut courses: BTreeMap<Uuid, CourseBatch> = BTreeMap::new();
    for event in events {
        if event.aggregate_type != Application::TYPE
            || !DECIDED_EVENT_TYPES.contains(&event.event_type.as_str())
            || event.metadata.get(REPROCESSED_FROM).is_some()
        {
            continue;
        }
        let ApplicationEvent::ApplicationSubmitted {
            application_id,
            course_id,
            institution_id,
            name,
            birth_date,
            email,
            ..
        } = decode(event)?;
        let batch = courses
            .entry(course_id.as_uuid())
            .or_insert_with(|| CourseBatch {
                applications: Vec::new(),
                first_event: event.event_id,
                correlation_id: event.correlation_id(),
                institution_id: Some(institution_id.as_uuid()),
            });
        batch.applications.push(ApplicationToDecide {
            application_id,
            name,
            email,
            birth_date,
        });
    }
    Ok(courses)
}

#[async_trait::async_trait]
impl Consumer for Admissions {
    async fn handle(
        &mut self,
        _tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let courses = group(events)?;
        let today = chrono::Utc::now().date_naive();
        for (course, batch) in courses {
            let metadata = EventMetadata::caused_by_event(
                batch.first_event,
                batch.correlation_id.unwrap_or_else(Uuid::new_v4),
                batch.institution_id,
            );
            let count = batch.applications.len();
            let command = CourseCommand::DecideApplications {
                applications: batch.applications,
                today,
            };
            match self
                .bus
                .execute(&course.to_string(), command, &metadata)
                .await
            {
                Ok(committed) => {
                    tracing::debug!(%course, applications = count, decided = committed.events.len(), "applications decided");
                }
                // The API checks that a course exists before accepting an application;
                // one that was never opened has nothing to decide with.
                Err(CommandError::Rejected(EnrollmentError::CourseNotFound)) => {
                    tracing::warn!(%course, applications = count, "applications to a course that was never opened: left undecided");
                }
                Err(CommandError::Rejected(rejection)) => {
                    return Err(
                        format!("course {course} refused its decisions: {rejection}").into(),
                    )
                }
                Err(error) => return Err(Box::new(error)),
            }
        }
        Ok(())
    }
}

/// Starts this process's instance of the admissions subscription (one instance is
/// active across all processes; the others stand by).
pub fn spawn_admissions(
    pool: PgPool,
    connect: PgConnectOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    spawn_admissions_with(
        pool,
        connect,
        SubscriptionOptions::new(ADMISSIONS_SUBSCRIPTION),
        wakeups,
        shutdown,
    )
}

/// [`spawn_admissions`] with explicit options (tests use short intervals).
pub fn spawn_admissions_with(
    pool: PgPool,
    connect: PgConnectOptions,
    options: SubscriptionOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    subscription::spawn(connect, options, Admissions::new(pool), wakeups, shutdown)
}
