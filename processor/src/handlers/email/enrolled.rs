//! `email.enrolled`: the application was accepted.

use aula_domain::values::{Email, PersonName};
use chrono::NaiveDate;

use super::Letter;

pub(super) fn letter(
    name: &PersonName,
    email: &Email,
    enrolled_on: NaiveDate,
    course: &str,
) -> Letter {
    Letter::about_course(
        email,
        name,
        format!("You are enrolled in {course}"),
        course,
        |course| format!("you are enrolled in {course} (since {enrolled_on})."),
    )
}
