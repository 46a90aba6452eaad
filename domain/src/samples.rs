//! Fixed example values for the `sample_events()` functions, which feed the event catalog
//! and the serde round-trip tests. Deterministic so the rendered catalog is stable.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use crate::values::*;

// Every `expect` below parses a literal that satisfies the rule it is checked against.

pub(crate) fn instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 14, 30, 0)
        .single()
        .expect("valid literal instant")
}

pub(crate) fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 2, 3).expect("valid literal date")
}

pub(crate) fn email() -> Email {
    Email::parse("ada@example.org").expect("valid literal email")
}

pub(crate) fn person_name() -> PersonName {
    PersonName::parse("Ada Lovelace").expect("valid literal name")
}

pub(crate) fn birth_date() -> BirthDate {
    let date = NaiveDate::from_ymd_opt(2008, 3, 14).expect("valid literal date");
    BirthDate::parse(date, day()).expect("birth date before the sample day")
}

pub(crate) fn capacity() -> Capacity {
    Capacity::new(30).expect("30 is within range")
}

pub(crate) fn note() -> GradeNote {
    GradeNote::parse("7.50").expect("valid literal note")
}

pub(crate) fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0001))
}
pub(crate) fn institution_id() -> InstitutionId {
    InstitutionId::from_uuid(Uuid::from_u128(0x0002))
}
pub(crate) fn campus_id() -> CampusId {
    CampusId::from_uuid(Uuid::from_u128(0x0003))
}
pub(crate) fn course_id() -> CourseId {
    CourseId::from_uuid(Uuid::from_u128(0x0004))
}
pub(crate) fn student_id() -> StudentId {
    StudentId::from_uuid(Uuid::from_u128(0x0005))
}
pub(crate) fn teacher_id() -> TeacherId {
    TeacherId::from_uuid(Uuid::from_u128(0x0006))
}
pub(crate) fn application_id() -> ApplicationId {
    ApplicationId::from_uuid(Uuid::from_u128(0x0007))
}
