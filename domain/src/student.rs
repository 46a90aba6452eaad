//! The `Student` aggregate: a person studying at an institution. Its login account is a
//! separate [`crate::user::User`] (role `Student`) that the caller creates; the student
//! only carries its `user_id`.
//!
//! `StudentCreated` is at version 2.0: version 1.0 named the name field `full_name` and
//! stored the e-mail as typed. [`crate::upcasters()`] turns stored 1.0 payloads into 2.0.

use serde::{Deserialize, Serialize};

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{BirthDate, Email, InstitutionId, PersonName, UserId};

/// Current version of `StudentCreated` (see the module docs for 1.0).
pub const STUDENT_CREATED_VERSION: &str = "2.0";

/// The student aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct StudentServices;

#[derive(Debug, Clone, PartialEq)]
pub enum StudentCommand {
    /// Actor: an institution manager (or the demo-data seeding task).
    CreateStudent {
        institution_id: InstitutionId,
        user_id: UserId,
        name: PersonName,
        email: Email,
        birth_date: BirthDate,
    },
}

/// Events of the `student` aggregate, internally tagged: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StudentEvent {
    StudentCreated {
        institution_id: InstitutionId,
        user_id: UserId,
        name: PersonName,
        email: Email,
        birth_date: BirthDate,
    },
}

impl_domain_event!(StudentEvent, version = STUDENT_CREATED_VERSION { StudentCreated => STUDENT_CREATED });

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StudentError {
    #[error("the student already exists")]
    AlreadyExists,
}

impl StudentError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyExists => "STUDENT_ALREADY_EXISTS",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::AlreadyExists => RejectionKind::Conflict,
        }
    }
}

impl_rejection!(StudentError);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Student {
    institution_id: Option<InstitutionId>,
    user_id: Option<UserId>,
    name: Option<PersonName>,
    email: Option<Email>,
    birth_date: Option<BirthDate>,
}

impl Student {
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
    pub fn birth_date(&self) -> Option<BirthDate> {
        self.birth_date
    }
}

impl_aggregate!(
    Student,
    type: "student",
    command: StudentCommand,
    event: StudentEvent,
    error: StudentError,
    services: StudentServices,
);

impl Student {
    fn decide(&self, command: StudentCommand) -> Result<Vec<StudentEvent>, StudentError> {
        match command {
            StudentCommand::CreateStudent {
                institution_id,
                user_id,
                name,
                email,
                birth_date,
            } => {
                if self.institution_id.is_some() {
                    return Err(StudentError::AlreadyExists);
                }
                Ok(vec![StudentEvent::StudentCreated {
                    institution_id,
                    user_id,
                    name,
                    email,
                    birth_date,
                }])
            }
        }
    }

    fn evolve(&mut self, event: StudentEvent) {
        match event {
            StudentEvent::StudentCreated {
                institution_id,
                user_id,
                name,
                email,
                birth_date,
            } => {
                self.institution_id = Some(institution_id);
                self.user_id = Some(user_id);
                self.name = Some(name);
                self.email = Some(email);
                self.birth_date = Some(birth_date);
            }
        }
    }
}

/// One instance of every [`StudentEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<StudentEvent> {
    use crate::samples::*;
    vec![StudentEvent::StudentCreated {
        institution_id: institution_id(),
        user_id: user_id(),
        name: person_name(),
        email: email(),
        birth_date: birth_date(),
    }]
}
