//! `email.declined`: the application was declined, and why.

use aula_domain::course::DeclineReason;
use aula_domain::values::{Email, PersonName};

use super::Letter;

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
    Letter::about_course(
        email,
        name,
        format!("Your application to {course} was declined"),
        course,
        |course| format!("your application to {course} was declined: {reason}."),
    )
}
