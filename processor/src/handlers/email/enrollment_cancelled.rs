//! `email.enrollment_cancelled`: to the student whose enrollment a manager cancelled.

use aula_domain::values::Email;
use chrono::NaiveDate;

use super::Letter;
use crate::mail::html_escape;

pub(super) fn letter(email: &Email, cancelled_on: NaiveDate, course: &str) -> Letter {
    Letter::plain(
        email,
        format!("Your enrollment in {course} was cancelled"),
        format!("Hello,\n\nyour enrollment in {course} was cancelled on {cancelled_on} and your seat released. If you think this is a mistake, contact your institution.\n"),
        &format!(
            "<p>Hello,</p><p>your enrollment in <b>{}</b> was cancelled on {cancelled_on} and your seat released. If you think this is a mistake, contact your institution.</p>",
            html_escape(course)
        ),
    )
}
