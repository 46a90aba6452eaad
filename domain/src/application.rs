//! The `Application` aggregate (TYPE `application`): one applicant's application to one
//! course, in a stream of its own.
//!
//! Accepting an application must never contend with other applicants: were every
//! application appended to its course's stream, concurrent applicants would race for
//! the same optimistic-concurrency slot. So `SubmitApplication` only records
//! `ApplicationSubmitted` here, and the seats are decided afterwards, in the log's
//! commit order, by the processor's `processor.admissions` subscription issuing
//! [`crate::course::CourseCommand::DecideApplications`] to the course in batches.
//!
//! **Identity:** the stream id is derived from the course and the applicant's
//! normalized e-mail ([`application_id_for`]), so the same e-mail applying twice to the
//! same course lands on the same stream: one application. A repeat is answered with the
//! existing application and records nothing; a repeat under the same client
//! idempotency key but with other data is refused ([`ApplicationError::IdempotencyKeyReused`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{ApplicationId, BirthDate, CourseId, Email, InstitutionId, PersonName};

/// The namespace of application ids (UUID v5 over course id and e-mail).
const APPLICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6175_6c61_2d61_7070_6c69_6361_7469_6f6e);

/// The id of `email`'s application to `course`: the same for every repeat, so a repeat
/// reaches the same stream.
pub fn application_id_for(course: CourseId, email: &Email) -> ApplicationId {
    let name = format!("{}/{}", course.as_uuid(), email.as_str());
    ApplicationId::from_uuid(Uuid::new_v5(&APPLICATION_NAMESPACE, name.as_bytes()))
}

/// The application aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplicationServices;

#[derive(Debug, Clone, PartialEq)]
pub enum ApplicationCommand {
    /// Actor: an applicant (anonymous). The API checked that the course exists and is
    /// open; `institution_id` is the course's.
    SubmitApplication {
        course_id: CourseId,
        institution_id: InstitutionId,
        name: PersonName,
        birth_date: BirthDate,
        email: Email,
        requested_at: DateTime<Utc>,
        /// The client's idempotency key, if it sent one.
        idempotency_key: Option<String>,
    },
}

/// Events of the `application` aggregate, internally tagged: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApplicationEvent {
    /// Carries everything the decision and the e-mails need.
    ApplicationSubmitted {
        application_id: ApplicationId,
        course_id: CourseId,
        institution_id: InstitutionId,
        name: PersonName,
        birth_date: BirthDate,
        email: Email,
        requested_at: DateTime<Utc>,
        #[serde(default)]
        idempotency_key: Option<String>,
    },
}

impl_domain_event!(ApplicationEvent { ApplicationSubmitted => APPLICATION_SUBMITTED });

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplicationError {
    #[error("this idempotency key was already used for an application with other data")]
    IdempotencyKeyReused,
    #[error("this application belongs to another course")]
    OtherCourse,
}

impl ApplicationError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::OtherCourse => "APPLICATION_OF_OTHER_COURSE",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        RejectionKind::Conflict
    }
}

impl_rejection!(ApplicationError);

/// What was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub course_id: CourseId,
    pub institution_id: InstitutionId,
    pub name: PersonName,
    pub birth_date: BirthDate,
    pub email: Email,
    pub requested_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    submitted: Option<Submitted>,
}

impl Application {
    pub fn submitted(&self) -> Option<&Submitted> {
        self.submitted.as_ref()
    }
}

impl_aggregate!(
    Application,
    type: "application",
    command: ApplicationCommand,
    event: ApplicationEvent,
    error: ApplicationError,
    services: ApplicationServices,
);

impl Application {
    fn decide(
        &self,
        command: ApplicationCommand,
    ) -> Result<Vec<ApplicationEvent>, ApplicationError> {
        let ApplicationCommand::SubmitApplication {
            course_id,
            institution_id,
            name,
            birth_date,
            email,
            requested_at,
            idempotency_key,
        } = command;
        if let Some(existing) = &self.submitted {
            if existing.course_id != course_id {
                return Err(ApplicationError::OtherCourse);
            }
            // The same key must mean the same request; without one (or under another
            // key) the same e-mail is simply the same application again.
            let same_input = existing.name == name
                && existing.birth_date == birth_date
                && existing.email == email;
            if idempotency_key.is_some()
                && existing.idempotency_key == idempotency_key
                && !same_input
            {
                return Err(ApplicationError::IdempotencyKeyReused);
            }
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::ApplicationSubmitted {
            application_id: application_id_for(course_id, &email),
            course_id,
            institution_id,
            name,
            birth_date,
            email,
            requested_at,
            idempotency_key,
        }])
    }

    fn evolve(&mut self, event: ApplicationEvent) {
        let ApplicationEvent::ApplicationSubmitted {
            course_id,
            institution_id,
            name,
            birth_date,
            email,
            requested_at,
            idempotency_key,
            ..
        } = event;
        self.submitted = Some(Submitted {
            course_id,
            institution_id,
            name,
            birth_date,
            email,
            requested_at,
            idempotency_key,
        });
    }
}

/// One instance of every [`ApplicationEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<ApplicationEvent> {
    use crate::samples::*;
    vec![ApplicationEvent::ApplicationSubmitted {
        application_id: application_id_for(course_id(), &email()),
        course_id: course_id(),
        institution_id: institution_id(),
        name: person_name(),
        birth_date: birth_date(),
        email: email(),
        requested_at: instant(),
        idempotency_key: Some("client-key-1".into()),
    }]
}
