//! Identifiers: typed UUIDs, one type per kind of thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ValidationError, ValidationReason};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Any UUID is valid; the domain never generates ids (that needs randomness or a
        /// clock), callers pass them in. Serialized as the plain UUID string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| ValidationError::new("id", ValidationReason::InvalidFormat))
            }
        }
    };
}

id_type!(
    /// Identifies a [`crate::user::User`] (a login account).
    UserId
);
id_type!(
    /// Identifies an [`crate::institution::Institution`].
    InstitutionId
);
id_type!(
    /// Identifies a campus inside an institution.
    CampusId
);
id_type!(
    /// Identifies a course; also the id of its [`crate::course::Course`] enrollment aggregate.
    CourseId
);
id_type!(
    /// Identifies a [`crate::student::Student`].
    StudentId
);
id_type!(
    /// Identifies a [`crate::teacher::Teacher`].
    TeacherId
);
id_type!(
    /// Identifies one application to a course: the stream of an
    /// [`crate::application::Application`] (derived from course and e-mail), or an older
    /// `RequestEnrollment` in the course's stream.
    ApplicationId
);
id_type!(
    /// Identifies an [`crate::exam_grade::ExamGrade`]: one per (exam, student).
    ExamGradeId
);
