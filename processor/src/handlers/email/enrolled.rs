//! `email.enrolled`: the application was accepted.

use aula_domain::values::{Email, PersonName};
use chrono::NaiveDate;

use super::Letter;
use crate::mail::html_escape;

pub(super) fn letter(
    name: &PersonName,
    email: &Email,
    enrolled_on: NaiveDate,
    course: &str,
) -> Letter {
    Letter::plain(
        email,
        format!("You are enrolled in {course}"),
        format!("Hello {name},\n\nyou are enrolled in {course} (since {enrolled_on}).\n"),
        &format!(
            "<p>Hello {},</p><p>you are enrolled in <b>{}</b> (since {enrolled_on}).</p>",
            html_escape(name.as_str()),
            html_escape(course)
        ),
    )
}
