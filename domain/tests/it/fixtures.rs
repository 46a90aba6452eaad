//! The ids and dates the aggregates' tests share: one institution (2)
//! with its manager (user 1), campus 3, course 4, student 5 and teacher 6, on
//! 2026-02-03, with an applicant born 2008-03-14.

use aula_domain::values::{BirthDate, CampusId, CourseId, InstitutionId, UserId};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

pub fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(1))
}

pub fn institution_id() -> InstitutionId {
    InstitutionId::from_uuid(Uuid::from_u128(2))
}

pub fn campus_id() -> CampusId {
    CampusId::from_uuid(Uuid::from_u128(3))
}

pub fn course_id() -> CourseId {
    CourseId::from_uuid(Uuid::from_u128(4))
}

pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 2, 3).unwrap()
}

/// Nine in the morning of [`today`].
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 9, 0, 0).unwrap()
}

pub fn birth_date() -> BirthDate {
    BirthDate::parse(NaiveDate::from_ymd_opt(2008, 3, 14).unwrap(), today()).unwrap()
}
