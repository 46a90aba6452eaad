//! `email.application_scheduled`: the applicant hears that the application is queued,
//! for an `ApplicationSubmitted` and for the older `EnrollmentRequested` in a course's
//! stream.

use aula_domain::application::ApplicationEvent;
use aula_domain::values::{Email, PersonName};

use super::{course_name, Letter};
use crate::handlers::{EventPayload, TaskContext, TaskError};

/// For an `ApplicationSubmitted`.
pub(super) async fn letter(
    ctx: &TaskContext,
    payload: &EventPayload<'_>,
) -> Result<Letter, TaskError> {
    let ApplicationEvent::ApplicationSubmitted {
        name,
        email,
        course_id,
        ..
    } = payload.decode()?;
    let course = course_name(ctx, &course_id.to_string()).await?;
    Ok(course_letter(&name, &email, &course))
}

/// For an application to `course`, of either shape.
pub(super) fn course_letter(name: &PersonName, email: &Email, course: &str) -> Letter {
    Letter::about_course(
        email,
        name,
        format!("Your application to {course} was scheduled"),
        course,
        |course| {
            format!("we received your application to {course}. It is queued; you will get another e-mail when it is decided.")
        },
    )
}
