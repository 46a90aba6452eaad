//! The ids and dates the aggregates' tests share: one institution (2)
//! with its manager (user 1), campus 3, course 4, student 5 and teacher 6, on
//! 2026-02-03, with an applicant born 2008-03-14.

use chrono::{DateTime, TimeZone, Utc};

// The domain's own sample values: the same institution, people and day as the catalog's.
pub use aula_domain::samples::{
    birth_date, campus_id, course_id, day as today, institution_id, student_id, teacher_id, user_id,
};

/// Nine in the morning of [`today`].
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 9, 0, 0).unwrap()
}
