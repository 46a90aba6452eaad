//! The `Institution` aggregate: a college, its campuses and the courses it offers.
//!
//! It owns the catalogue (which courses exist, on which campus, with which name) and its
//! uniqueness rules. Seats are not decided here: each offered course gets its own
//! [`crate::course::Course`] aggregate (the caller issues `OpenCourse` right after
//! `CourseOffered`), so enrollments in different courses never contend for one stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::event_types::impl_domain_event;
use crate::values::{
    CampusId, CampusName, Capacity, CityName, CourseId, CourseName, InstitutionName, UserId,
};

/// The institution aggregate needs no external services.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstitutionServices;

#[derive(Debug, Clone, PartialEq)]
pub enum InstitutionCommand {
    /// Actor: the API right after `ConfirmSignUp` (the new manager), or an admin.
    CreateInstitution {
        name: InstitutionName,
        manager_user_id: UserId,
    },
    /// Actor: an institution manager (or the demo-data seeding task).
    CreateCampus {
        campus_id: CampusId,
        name: CampusName,
        city: CityName,
    },
    /// Actor: an institution manager (or the demo-data seeding task).
    OfferCourse {
        course_id: CourseId,
        campus_id: CampusId,
        name: CourseName,
        capacity: Capacity,
    },
}

/// Events of the `institution` aggregate, internally tagged: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InstitutionEvent {
    InstitutionCreated {
        name: InstitutionName,
        manager_user_id: UserId,
    },
    CampusCreated {
        campus_id: CampusId,
        name: CampusName,
        city: CityName,
    },
    CourseOffered {
        course_id: CourseId,
        campus_id: CampusId,
        name: CourseName,
        capacity: Capacity,
    },
}

impl_domain_event!(InstitutionEvent {
    InstitutionCreated => INSTITUTION_CREATED,
    CampusCreated => CAMPUS_CREATED,
    CourseOffered => COURSE_OFFERED,
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstitutionError {
    #[error("institution not found")]
    NotFound,
    #[error("the institution already exists")]
    AlreadyExists,
    #[error("a campus with this id already exists")]
    CampusAlreadyExists,
    #[error("a campus with this name already exists in the institution")]
    DuplicateCampusName,
    #[error("campus not found")]
    CampusNotFound,
    #[error("a course with this id already exists")]
    CourseAlreadyExists,
    #[error("a course with this name already exists on the campus")]
    DuplicateCourseName,
}

impl InstitutionError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "INSTITUTION_NOT_FOUND",
            Self::AlreadyExists => "INSTITUTION_ALREADY_EXISTS",
            Self::CampusAlreadyExists => "CAMPUS_ALREADY_EXISTS",
            Self::DuplicateCampusName => "DUPLICATE_CAMPUS_NAME",
            Self::CampusNotFound => "CAMPUS_NOT_FOUND",
            Self::CourseAlreadyExists => "COURSE_ALREADY_EXISTS",
            Self::DuplicateCourseName => "DUPLICATE_COURSE_NAME",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::NotFound | Self::CampusNotFound => RejectionKind::NotFound,
            Self::AlreadyExists
            | Self::CampusAlreadyExists
            | Self::DuplicateCampusName
            | Self::CourseAlreadyExists
            | Self::DuplicateCourseName => RejectionKind::Conflict,
        }
    }
}

impl_rejection!(InstitutionError);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campus {
    pub name: CampusName,
    pub city: CityName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedCourse {
    pub campus_id: CampusId,
    pub name: CourseName,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Institution {
    name: Option<InstitutionName>,
    manager_user_id: Option<UserId>,
    campuses: BTreeMap<CampusId, Campus>,
    courses: BTreeMap<CourseId, OfferedCourse>,
}

/// Names are unique regardless of case ("Centro" and "centro" are the same campus to a
/// person reading a list).
fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

impl Institution {
    pub fn name(&self) -> Option<&InstitutionName> {
        self.name.as_ref()
    }
    pub fn manager_user_id(&self) -> Option<UserId> {
        self.manager_user_id
    }
    pub fn campuses(&self) -> &BTreeMap<CampusId, Campus> {
        &self.campuses
    }
    pub fn courses(&self) -> &BTreeMap<CourseId, OfferedCourse> {
        &self.courses
    }

    fn decide(
        &self,
        command: InstitutionCommand,
    ) -> Result<Vec<InstitutionEvent>, InstitutionError> {
        if let InstitutionCommand::CreateInstitution {
            name,
            manager_user_id,
        } = command
        {
            if self.name.is_some() {
                return Err(InstitutionError::AlreadyExists);
            }
            return Ok(vec![InstitutionEvent::InstitutionCreated {
                name,
                manager_user_id,
            }]);
        }
        if self.name.is_none() {
            return Err(InstitutionError::NotFound);
        }
        match command {
            InstitutionCommand::CreateInstitution { .. } => Err(InstitutionError::AlreadyExists),
            InstitutionCommand::CreateCampus {
                campus_id,
                name,
                city,
            } => {
                if self.campuses.contains_key(&campus_id) {
                    return Err(InstitutionError::CampusAlreadyExists);
                }
                if self
                    .campuses
                    .values()
                    .any(|campus| same_name(campus.name.as_str(), name.as_str()))
                {
                    return Err(InstitutionError::DuplicateCampusName);
                }
                Ok(vec![InstitutionEvent::CampusCreated {
                    campus_id,
                    name,
                    city,
                }])
            }
            InstitutionCommand::OfferCourse {
                course_id,
                campus_id,
                name,
                capacity,
            } => {
                if !self.campuses.contains_key(&campus_id) {
                    return Err(InstitutionError::CampusNotFound);
                }
                if self.courses.contains_key(&course_id) {
                    return Err(InstitutionError::CourseAlreadyExists);
                }
                if self.courses.values().any(|course| {
                    course.campus_id == campus_id && same_name(course.name.as_str(), name.as_str())
                }) {
                    return Err(InstitutionError::DuplicateCourseName);
                }
                Ok(vec![InstitutionEvent::CourseOffered {
                    course_id,
                    campus_id,
                    name,
                    capacity,
                }])
            }
        }
    }
}

impl_aggregate!(
    Institution,
    type: "institution",
    command: InstitutionCommand,
    event: InstitutionEvent,
    error: InstitutionError,
    services: InstitutionServices,
);

impl Institution {
    fn evolve(&mut self, event: InstitutionEvent) {
        match event {
            InstitutionEvent::InstitutionCreated {
                name,
                manager_user_id,
            } => {
                self.name = Some(name);
                self.manager_user_id = Some(manager_user_id);
            }
            InstitutionEvent::CampusCreated {
                campus_id,
                name,
                city,
            } => {
                self.campuses.insert(campus_id, Campus { name, city });
            }
            InstitutionEvent::CourseOffered {
                course_id,
                campus_id,
                name,
                ..
            } => {
                self.courses
                    .insert(course_id, OfferedCourse { campus_id, name });
            }
        }
    }
}

/// One instance of every [`InstitutionEvent`] variant (catalog and round-trip tests).
pub fn sample_events() -> Vec<InstitutionEvent> {
    use crate::samples::*;
    vec![
        InstitutionEvent::InstitutionCreated {
            name: InstitutionName::parse("Escola Aurora").expect("valid literal"),
            manager_user_id: user_id(),
        },
        InstitutionEvent::CampusCreated {
            campus_id: campus_id(),
            name: CampusName::parse("Centro").expect("valid literal"),
            city: CityName::parse("Recife").expect("valid literal"),
        },
        InstitutionEvent::CourseOffered {
            course_id: course_id(),
            campus_id: campus_id(),
            name: CourseName::parse("Física I").expect("valid literal"),
            capacity: capacity(),
        },
    ]
}
