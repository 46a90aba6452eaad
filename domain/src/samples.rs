//! Fixed example values for the `sample_events()` functions, which feed the event catalog
//! and the serde round-trip tests, and for the aggregates' tests. Deterministic so the
//! rendered catalog is stable.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use crate::values::*;

// Every `expect` below parses a literal that satisfies the rule it is checked against.

pub fn instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 14, 30, 0)
        .single()
        .expect("valid literal instant")
}

/// A documentation address (RFC 5737).
pub fn login_source() -> LoginSource {
    LoginSource::parse("203.0.113.9").expect("an IPv4 address")
}

pub fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 2, 3).expect("valid literal date")
}

pub fn email() -> Email {
    Email::parse("ada@example.org").expect("valid literal email")
}

pub fn person_name() -> PersonName {
    PersonName::parse("Ada Lovelace").expect("valid literal name")
}

pub fn birth_date() -> BirthDate {
    let date = NaiveDate::from_ymd_opt(2008, 3, 14).expect("valid literal date");
    BirthDate::parse(date, day()).expect("birth date before the sample day")
}

pub fn capacity() -> Capacity {
    Capacity::new(30).expect("30 is within range")
}

pub fn note() -> GradeNote {
    GradeNote::parse("7.50").expect("valid literal note")
}

/// The one sample id of each kind: `name() -> Type`, the uuid `n`.
macro_rules! sample_ids {
    ($($name:ident: $id:ident = $n:literal),+ $(,)?) => {
        $(
            pub fn $name() -> $id {
                $id::from_uuid(Uuid::from_u128($n))
            }
        )+
    };
}

sample_ids! {
    user_id: UserId = 0x0001,
    institution_id: InstitutionId = 0x0002,
    campus_id: CampusId = 0x0003,
    course_id: CourseId = 0x0004,
    student_id: StudentId = 0x0005,
    teacher_id: TeacherId = 0x0006,
    application_id: ApplicationId = 0x0007,
}
