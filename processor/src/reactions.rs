//! Reactions: the subscription `processor.reactions` maps each event to the tasks it
//! issues and inserts them in the subscription's batch transaction (one `unnest`
//! INSERT per batch), so the tasks and the checkpoint commit together.
//!
//! | event | tasks |
//! |---|---|
//! | `PendingUserRegisterCreated` | `email.signup_confirmation` |
//! | `RegisteredEmailSignUpAttempted` | `email.already_registered` |
//! | `SignUpConfirmed` | `institution.create` |
//! | `InstitutionCreated` | `demo.seed` |
//! | `ResetPasswordTokenCreated` | `email.password_reset` |
//! | `EmailChangeRequested` | `email.email_change_confirmation`, `email.email_change_notice` |
//! | `StudentCreated` | `notification.link_student`, `email.welcome` |
//! | `TeacherCreated` | `notification.link_teacher` |
//! | `ExamGradeNoteAdded` / `ExamGradeNoteChanged` | `notification.grade` |
//! | `ApplicationSubmitted` | `email.application_scheduled` (decided by [`crate::admissions`]) |
//! | `EnrollmentRequested` (older shape) | `email.application_scheduled`, `enrollment.decide` |
//! | `StudentEnrolled` / `EnrollmentDeclined` | `email.enrolled` / `email.declined` |
//! | `EnrollmentCancelled` | `email.enrollment_cancelled` |
//!
//! A task's payload carries its event's trace context (`traceparent`, `tracestate`)
//! when the event has one, so its attempts continue the event's trace.
//!
//! Every event is also matched against the webhook endpoints: one message per (event,
//! endpoint) and its first `webhook.deliver` task ([`crate::webhooks::fanout`]); those
//! tasks are not the event's (no `event_id`), so a slow receiver never holds the
//! event's processing status.
//!
//! Every event of a batch also gets its processing status in `admin_events` in the same
//! transaction ([`crate::processing::record`]).
//!
//! **Invariant:** an event issues each kind of task at most once: `UNIQUE (event_id,
//! kind)` with `ON CONFLICT DO NOTHING`. A reprocessed copy (metadata
//! `reprocessed_from`) is a different event with the same type and payload, so it is
//! treated like its original and issues fresh tasks linked to the copy.

use aula_domain::event_types;
use aula_eventlog::metadata::{ORIGINAL_TRACEPARENT, TRACEPARENT, TRACESTATE};
use aula_eventlog::shutdown::Shutdown;
use aula_eventlog::subscription::{self, BoxError, SubscriptionHandle};
use aula_eventlog::trace::TraceContext;
use aula_eventlog::{Consumer, RecordedEvent, SubscriptionOptions, Wakeups};
use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::kinds::TaskKind;
use crate::processing;
use crate::queue::{bind_new_tasks, NewTask, INSERT_TASKS_SQL};
use crate::webhooks::fanout::{self, Subscriber};

pub const REACTIONS_SUBSCRIPTION: &str = "processor.reactions";

// The metadata keys of a reprocessed copy live with the other metadata keys; named here
// too for the modules that read them beside the reactions.
pub use aula_eventlog::metadata::{REPROCESSED_FROM, TASK_PRIORITY};

/// The task kinds an event type issues.
pub fn kinds_for(event_type: &str) -> &'static [TaskKind] {
    use TaskKind::*;
    match event_type {
        event_types::PENDING_USER_REGISTER_CREATED => &[EmailSignupConfirmation],
        event_types::REGISTERED_EMAIL_SIGN_UP_ATTEMPTED => &[EmailAlreadyRegistered],
        event_types::SIGN_UP_CONFIRMED => &[InstitutionCreate],
        event_types::INSTITUTION_CREATED => &[DemoSeed],
        event_types::RESET_PASSWORD_TOKEN_CREATED => &[EmailPasswordReset],
        event_types::EMAIL_CHANGE_REQUESTED => &[EmailChangeConfirmation, EmailChangeNotice],
        event_types::STUDENT_CREATED => &[LinkStudentNotifications, EmailWelcome],
        event_types::TEACHER_CREATED => &[LinkTeacherNotifications],
        event_types::EXAM_GRADE_NOTE_ADDED | event_types::EXAM_GRADE_NOTE_CHANGED => &[NotifyGrade],
        event_types::APPLICATION_SUBMITTED => &[EmailApplicationScheduled],
        event_types::ENROLLMENT_REQUESTED => &[EmailApplicationScheduled, EnrollmentDecide],
        event_types::ENROLLMENT_CANCELLED => &[EmailEnrollmentCancelled],
        event_types::STUDENT_ENROLLED => &[EmailEnrolled],
        event_types::ENROLLMENT_DECLINED => &[EmailDeclined],
        _ => &[],
    }
}

/// The tasks `event` issues. The task payload is the event's aggregate, type, version
/// and payload, so handlers decode it with the domain's types (and upcasters).
pub fn tasks_for(event: &RecordedEvent) -> Vec<NewTask> {
    tasks_for_subject(event, None)
}

/// [`tasks_for`], naming `subject` (aggregate type and id) as the task's aggregate.
///
/// A reprocessed copy lives in a stream of its own (`reprocessed`, a new id), but its
/// tasks act on what the original was about: the course of an `EnrollmentRequested`,
/// the institution of an `InstitutionCreated`. Handlers take that from the payload's
/// `aggregate_id`, so for a copy it is the original's (a copy's tasks failed for good
/// with "course not found" before).
pub fn tasks_for_subject(event: &RecordedEvent, subject: Option<(&str, &str)>) -> Vec<NewTask> {
    let kinds = kinds_for(&event.event_type);
    if kinds.is_empty() {
        return Vec::new();
    }
    let institution_id = crate::webhooks::fanout::institution_of(event);
    let (aggregate_type, aggregate_id) =
        subject.unwrap_or((&event.aggregate_type, &event.aggregate_id));
    let mut payload = json!({
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "event": event.payload,
        "reprocessed_from": event.metadata.get(REPROCESSED_FROM),
    });
    // The event's trace context travels with its tasks: each attempt's span is a child
    // of the append that wrote the event, and linked to it (see `crate::spans`).
    if let (Some(context), Some(object)) = (
        TraceContext::from_json(&event.metadata),
        payload.as_object_mut(),
    ) {
        object.insert(TRACEPARENT.into(), context.traceparent.into());
        if let Some(state) = context.tracestate {
            object.insert(TRACESTATE.into(), state.into());
        }
    }
    // A copy's tasks link to its original's trace (`crate::spans::task_attempt`).
    if let (Some(original), Some(object)) = (
        event.metadata.get(ORIGINAL_TRACEPARENT),
        payload.as_object_mut(),
    ) {
        object.insert(ORIGINAL_TRACEPARENT.into(), original.clone());
    }
    kinds
        .iter()
        .map(|kind| {
            let mut task = NewTask::new(
                kind.name(),
                format!("{kind}:{}", event.event_id),
                payload.clone(),
            );
            task.event_id = Some(event.event_id);
            task.event_type = Some(event.event_type.clone());
            task.institution_id = institution_id;
            task.correlation_id = event.correlation_id();
            if let Some(priority) = task_priority(event) {
                task.priority = priority;
            }
            task
        })
        .collect()
}

/// The priority a reprocessed copy asks for its tasks (metadata [`TASK_PRIORITY`]).
fn task_priority(event: &RecordedEvent) -> Option<i16> {
    event
        .metadata
        .get(TASK_PRIORITY)
        .and_then(Value::as_str)
        .and_then(|p| p.parse().ok())
}

/// For each reprocessed copy among `events` that issues tasks: the aggregate type and
/// id of its original, in one indexed look-up.
async fn original_subjects(
    tx: &mut PgConnection,
    events: &[RecordedEvent],
) -> Result<std::collections::HashMap<Uuid, (String, String)>, sqlx::Error> {
    let copies: Vec<(Uuid, Uuid)> = events
        .iter()
        .filter(|event| !kinds_for(&event.event_type).is_empty())
        .filter_map(|event| Some((event.event_id, event.reprocessed_from()?)))
        .collect();
    if copies.is_empty() {
        return Ok(Default::default());
    }
    let originals: Vec<Uuid> = copies.iter().map(|(_, original)| *original).collect();
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT event_id, aggregate_type, aggregate_id FROM events WHERE event_id = ANY($1)",
    )
    .bind(&originals)
    .fetch_all(&mut *tx)
    .await?;
    let by_original: std::collections::HashMap<Uuid, (String, String)> = rows
        .into_iter()
        .map(|(id, kind, aggregate)| (id, (kind, aggregate)))
        .collect();
    Ok(copies
        .into_iter()
        .filter_map(|(copy, original)| Some((copy, by_original.get(&original)?.clone())))
        .collect())
}

/// The batch's tasks inserted ([`INSERT_TASKS_SQL`]), the enabled webhook endpoints
/// read ([`fanout::ENDPOINTS_SQL`]) and, when there is none, the events' admin rows
/// locked ([`processing::lock_rows_sql!`], ids in `$11`), in one statement: two round
/// trips of the batch's transaction fewer. A row with a `task_id` is an inserted task,
/// one with an `endpoint_id` an endpoint, one with a `locked_row` an event's row. The
/// endpoints are read in the insert's snapshot, taken within the batch's transaction
/// like the look-up of their own it replaces.
///
/// The lock order holds (tasks, then `admin_events` in log order; `processing`): the
/// rows are locked only after the insert has run to its end (the lock's condition
/// counts what the insert returned, a one-time filter evaluated before the scan), and
/// not at all when an endpoint exists, since the webhooks' fan-out then inserts tasks
/// after this statement: `processing::record_issued` locks them after it, as before.
/// The recount, which completes the duplicates' check (ADR 0003), stays a statement of
/// its own after this one. `FOR UPDATE` returns each row's latest committed version,
/// so a row locked here reads as one locked by a statement of its own.
static INSERT_TASKS_READING_ENDPOINTS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH inserted AS ({INSERT_TASKS_SQL}),
         endpoints AS ({endpoints}),
         locked AS ({lock})
         SELECT id AS task_id, event_id, NULL::uuid AS endpoint_id, NULL::uuid AS institution_id,
                NULL::text[] AS event_types, NULL::timestamptz AS created_at,
                NULL::text AS locked_row
         FROM inserted
         UNION ALL
         SELECT NULL, NULL, e.id, e.institution_id, e.event_types, e.created_at, NULL
         FROM endpoints e
         UNION ALL
         SELECT NULL, NULL, NULL, NULL, NULL, NULL, to_jsonb(l)::text
         FROM locked l",
        endpoints = fanout::ENDPOINTS_SQL,
        lock = processing::lock_rows_sql!(
            "$11",
            "AND (SELECT count(*) FROM inserted) >= 0 AND NOT EXISTS (SELECT 1 FROM endpoints)"
        ),
    )
});

/// A row of [`INSERT_TASKS_READING_ENDPOINTS_SQL`].
#[derive(sqlx::FromRow)]
struct InsertedOrEndpoint {
    task_id: Option<i64>,
    event_id: Option<Uuid>,
    endpoint_id: Option<Uuid>,
    institution_id: Option<Uuid>,
    event_types: Option<Vec<String>>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    locked_row: Option<String>,
}

/// What [`insert_tasks_reading_endpoints`] returns: the inserted tasks' `(id,
/// event_id)` (for [`processing::record_issued`]), the endpoints, and the events' rows
/// when the statement locked them (no endpoint).
struct Inserted {
    tasks: Vec<(i64, Option<Uuid>)>,
    subscribers: Vec<Subscriber>,
    locked: Option<processing::LockedRows>,
}

/// Runs [`INSERT_TASKS_READING_ENDPOINTS_SQL`] for `tasks` and the rows of `events`.
async fn insert_tasks_reading_endpoints(
    tx: &mut PgConnection,
    tasks: &[NewTask],
    events: &[RecordedEvent],
) -> Result<Inserted, BoxError> {
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    let rows: Vec<InsertedOrEndpoint> =
        bind_new_tasks(sqlx::query_as(&INSERT_TASKS_READING_ENDPOINTS_SQL), tasks)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
    let mut inserted = Vec::new();
    let mut subscribers = Vec::new();
    let mut locked = processing::LockedRows::of(&ids);
    for row in rows {
        match (row.task_id, row.endpoint_id, row.created_at, row.locked_row) {
            (Some(task_id), _, _, _) => inserted.push((task_id, row.event_id)),
            (None, Some(id), Some(created_at), _) => subscribers.push(Subscriber {
                id,
                institution_id: row.institution_id,
                event_types: row.event_types,
                created_at,
            }),
            (None, None, _, Some(json)) => locked.push(&json)?,
            // `webhook_endpoints.id` and `created_at` are NOT NULL.
            _ => {}
        }
    }
    // With an endpoint the statement locked nothing (see above).
    let locked = subscribers.is_empty().then_some(locked);
    Ok(Inserted {
        tasks: inserted,
        subscribers,
        locked,
    })
}

/// The reactions consumer.
#[derive(Debug, Default)]
pub struct Reactions;

#[async_trait::async_trait]
impl Consumer for Reactions {
    async fn handle(
        &mut self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        // The batch commits without waiting for the WAL flush: see
        // `spawn_reactions_with`.
        let subjects = original_subjects(&mut *tx, events).await?;
        let tasks: Vec<NewTask> = events
            .iter()
            .flat_map(|event| {
                let subject = subjects
                    .get(&event.event_id)
                    .map(|(kind, id)| (kind.as_str(), id.as_str()));
                tasks_for_subject(event, subject)
            })
            .collect();
        // Round trips of the batch's transaction (`aula bench latency` waits for each):
        // the tasks' insert, which reads the webhook endpoints too and, when there is
        // none, locks the events' rows; the webhooks' messages and tasks, only when an
        // endpoint wants one of the events; the events' rows locked, only when there is
        // an endpoint; their recount, which completes the tasks' duplicates' check; the
        // rows and the counters written. (The subscription's own: `BEGIN` with the
        // checkpoint's move, and `COMMIT`.)
        let inserted = insert_tasks_reading_endpoints(&mut *tx, &tasks, events).await?;
        // Webhook messages and their first delivery tasks, in the same transaction.
        let webhooks = fanout::fan_out_to(&mut *tx, events, &inserted.subscribers).await?;
        // Every event gets its processing status (one without tasks is done at once).
        let issued = processing::record_issued(
            &mut *tx,
            &inserted.tasks,
            &webhooks,
            events,
            inserted.locked,
        )
        .await?;
        let tasks = issued + webhooks.len();
        if tasks > 0 {
            tracing::debug!(events = events.len(), tasks, "reactions issued tasks");
        }
        Ok(())
    }
}

/// Starts this process's instance of the reactions subscription (one instance is
/// active across all processes; the others stand by).
pub fn spawn_reactions(
    connect: PgConnectOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    spawn_reactions_with(connect, reactions_options(), wakeups, shutdown)
}

/// How long the reactions read again at once when a notification finds the new events
/// held back by an older transaction still running (usually a worker's completion
/// waiting for its flush), before they back off from 1 ms: the time between an event's
/// commit and its tasks' (`SubscriptionOptions::held_back_spin`).
pub const HELD_BACK_SPIN: Duration = Duration::from_millis(3);

/// The reactions' subscription options ([`HELD_BACK_SPIN`]; the rest the defaults).
pub fn reactions_options() -> SubscriptionOptions {
    SubscriptionOptions {
        held_back_spin: HELD_BACK_SPIN,
        ..SubscriptionOptions::new(REACTIONS_SUBSCRIPTION)
    }
}

/// [`spawn_reactions`] with explicit options (tests use short intervals).
pub fn spawn_reactions_with(
    connect: PgConnectOptions,
    options: SubscriptionOptions,
    wakeups: Wakeups,
    shutdown: Shutdown,
) -> SubscriptionHandle {
    // Like every subscription's (`aula_eventlog::subscription`), the batches (their
    // tasks, the events' rows and the checkpoint) commit without waiting for the WAL
    // flush: the workers see the tasks a flush earlier (event commit -> task start). A
    // database crash can lose only the last batches, and loses their tasks and their
    // checkpoint together, so the events are read again and issue the same tasks
    // (exactly once, `(event_id, kind)`). Whatever a worker records of such a task
    // commits synchronously after it, and flushing that WAL flushes the batch too: an
    // effect is never durable without its task.
    subscription::spawn(connect, options, Reactions, wakeups, shutdown)
}

/// The original's id when `payload` (a task payload built by [`tasks_for`]) came from a
/// reprocessed copy.
pub fn reprocessed_from(task_payload: &Value) -> Option<Uuid> {
    task_payload
        .get(REPROCESSED_FROM)
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;
    use aula_eventlog::LogPosition;

    fn event(event_type: &str, metadata: Value) -> RecordedEvent {
        RecordedEvent {
            position: LogPosition::START,
            event_id: Uuid::new_v4(),
            aggregate_type: "course".into(),
            aggregate_id: Uuid::new_v4().to_string(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: json!({"type": event_type}).into(),
            metadata: metadata.into(),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn enrollment_requested_issues_an_email_and_the_decision() {
        let institution = Uuid::new_v4();
        let e = event(
            "EnrollmentRequested",
            json!({"institution_id": institution.to_string()}),
        );
        let tasks = tasks_for(&e);
        let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [kinds::EMAIL_APPLICATION_SCHEDULED, kinds::ENROLLMENT_DECIDE]
        );
        assert!(tasks.iter().all(|t| t.event_id == Some(e.event_id)
            && t.institution_id == Some(institution)
            && t.idempotency_key.ends_with(&e.event_id.to_string())));
    }

    #[test]
    fn an_application_issues_its_scheduled_email_ahead_of_decision_work() {
        // The decision is the admissions subscription's, not a task.
        let tasks = tasks_for(&event("ApplicationSubmitted", json!({})));
        let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(kinds, [kinds::EMAIL_APPLICATION_SCHEDULED]);
        let scheduled = crate::kinds::policy(kinds::EMAIL_APPLICATION_SCHEDULED).priority;
        for later in [
            kinds::ENROLLMENT_DECIDE,
            kinds::EMAIL_ENROLLED,
            kinds::EMAIL_DECLINED,
        ] {
            assert!(scheduled < crate::kinds::policy(later).priority, "{later}");
        }
    }

    #[test]
    fn a_cancellation_emails_the_student() {
        let tasks = tasks_for(&event("EnrollmentCancelled", json!({})));
        let kinds: Vec<&str> = tasks.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(kinds, [kinds::EMAIL_ENROLLMENT_CANCELLED]);
    }

    #[test]
    fn a_copy_issues_the_same_kinds_with_its_own_keys() {
        let original = event("StudentCreated", json!({}));
        let mut copy = original.clone();
        copy.event_id = Uuid::new_v4();
        copy.metadata = json!({"reprocessed_from": original.event_id.to_string()}).into();
        let a = tasks_for(&original);
        let b = tasks_for(&copy);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.iter().map(|t| &t.kind).collect::<Vec<_>>(),
            b.iter().map(|t| &t.kind).collect::<Vec<_>>()
        );
        assert_ne!(a[0].idempotency_key, b[0].idempotency_key);
        assert_eq!(reprocessed_from(&b[0].payload), Some(original.event_id));
    }

    #[test]
    fn tasks_carry_the_events_trace_context() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = event("StudentCreated", json!({ "traceparent": traceparent }));
        for task in tasks_for(&traced) {
            assert_eq!(task.payload[TRACEPARENT], traceparent);
            assert!(task.payload.get(TRACESTATE).is_none());
        }
        let untraced = event("StudentCreated", json!({}));
        assert!(tasks_for(&untraced)
            .iter()
            .all(|t| t.payload.get(TRACEPARENT).is_none()));
    }

    #[test]
    fn other_events_issue_nothing() {
        assert!(tasks_for(&event("CourseOpened", json!({}))).is_empty());
        assert!(tasks_for(&event("LoginFailed", json!({}))).is_empty());
    }
}
