//! The `Teacher` aggregate: a person teaching at an institution. Its login account is a
//! separate [`crate::user::User`] (role `Teacher`) that the caller creates; the teacher
//! only carries its `user_id`.

use serde::{Deserialize, Serialize};

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{Email, InstitutionId, PersonName, UserId};

/// The teacher aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeacherServices;

#[derive(Debug, Clone, PartialEq)]
pub enum TeacherCommand {
    /// Actor: an institution manager (or the demo-data seeding task).
    CreateTeacher {
        institution_id: InstitutionId,
        user_id: UserId,
        name: PersonName,
        email: Email,
    },
}

/// Events of the `teacher` aggregate, internally tagged: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TeacherEvent {
    TeacherCreated {
        institution_id: InstitutionId,
        user_id: UserId,
        name: PersonName,
        email: Email,
    },
}

impl_domain_event!(TeacherEvent { TeacherCreated => TEACHER_CREATED });

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeacherError {
    #[error("the teacher already exists")]
    AlreadyExists,
}

impl TeacherError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "TEACHER_ALREADY_EXISTS",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::AlreadyExists => RejectionKind::Conflict,
        }
    }
}

impl_rejection!(TeacherError);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Teacher {
    institution_id: Option<InstitutionId>,
    user_id: Option<UserId>,
    name: Option<PersonName>,
    email: Option<Email>,
}

impl Teacher {
    pub fn institution_id(&self) -> Option<InstitutionId> {
        self.institution_id
    }
    pub fn user_id(&self) -> Option<UserId> {
        self.user_id
    }
    pub fn name(&self) -> Option<&PersonName> {
        self.name.as_ref()
    }
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
}

impl_aggregate!(
    Teacher,
    type: "teacher",
    command: TeacherCommand,
    event: TeacherEvent,
    error: TeacherError,
    services: TeacherServices,
);

impl Teacher {
    fn decide(&self, command: TeacherCommand) -> Result<Vec<TeacherEvent>, TeacherError> {
        match command {
            TeacherCommand::CreateTeacher {
                institution_id,
                user_id,
                name,
                email,
            } => {
                if self.institution_id.is_some() {
                    return Err(TeacherError::AlreadyExists);
                }
                Ok(vec![TeacherEvent::TeacherCreated {
                    institution_id,
                    user_id,
                    name,
                    email,
                }])
            }
        }
    }

    fn evolve(&mut self, event: TeacherEvent) {
        match event {
            TeacherEvent::TeacherCreated {
                institution_id,
                user_id,
                name,
                email,
            } => {
                self.institution_id = Some(institution_id);
                self.user_id = Some(user_id);
                self.name = Some(name);
                self.email = Some(email);
            }
        }
    }
}

/// One instance of every [`TeacherEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<TeacherEvent> {
    use crate::samples::*;
    vec![TeacherEvent::TeacherCreated {
        institution_id: institution_id(),
        user_id: user_id(),
        name: PersonName::parse("Grace Hopper").expect("valid literal"),
        email: Email::parse("grace@example.org").expect("valid literal"),
    }]
}
