//! `email.welcome`: to a new student.

use aula_domain::student::StudentEvent;

use super::{EmailHandler, Letter};
use crate::handlers::{EventPayload, TaskError};
use crate::mail::html_escape;

pub(super) fn letter(
    handler: &EmailHandler,
    payload: &EventPayload<'_>,
) -> Result<Letter, TaskError> {
    let StudentEvent::StudentCreated { name, email, .. } = payload.decode()?;
    let link = handler.link("/", &[]);
    Ok(Letter::new(
        &email,
        format!("Welcome to Aula, {name}"),
        format!("Hello {name},\n\nyour student record was created. Sign in at {link}\n"),
        &format!("Welcome, {name}"),
        &format!(
            "<p>Your student record was created.</p><p><a href=\"{0}\">{0}</a></p>",
            html_escape(&link)
        ),
    ))
}
