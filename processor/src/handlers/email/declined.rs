//! `email.declined`: the application was declined, and why.

use aula_domain::course::DeclineReason;
use aula_domain::values::{Email, PersonName};

use super::Letter;
use crate::mail::html_escape;

pub(super) fn letter(
    name: &PersonName,
    email: &Email,
    reason: DeclineReason,
    course: &str,
) -> Letter {
    let reason = match reason {
        DeclineReason::ClassFull => "the class is full",
        DeclineReason::AlreadyEnrolled => "you are already enrolled in this course",
        DeclineReason::CourseClosed => "the course is closed",
    };
    Letter::plain(
        email,
        format!("Your application to {course} was declined"),
        format!("Hello {name},\n\nyour application to {course} was declined: {reason}.\n"),
        &format!(
            "<p>Hello {},</p><p>your application to <b>{}</b> was declined: {reason}.</p>",
            html_escape(name.as_str()),
            html_escape(course)
        ),
    )
}
