//! `email.email_change_notice`: tells the current address that a change to another
//! address was requested (when the confirmation link goes to the new one).

use aula_domain::user::{EmailChangeLink, UserEvent};

use super::{wrong_event, Letter};
use crate::handlers::{EventPayload, TaskError};
use crate::mail::html_escape;

/// `None` when the owner approves at the current address: that link is the notice.
pub(super) fn letter(payload: &EventPayload<'_>) -> Result<Option<Letter>, TaskError> {
    let UserEvent::EmailChangeRequested {
        previous_email,
        new_email,
        link_to,
        ..
    } = payload.decode()?
    else {
        return Err(wrong_event(payload));
    };
    let (Some(previous), EmailChangeLink::NewAddress) = (previous_email, link_to) else {
        return Ok(None);
    };
    let shown = masked(new_email.as_str());
    let text = format!("Someone asked to change the e-mail address of your Aula account to {shown}.\n\nNothing changes unless that address confirms it. If it was not you or your institution, tell your institution's staff or the platform's administrators.\n");
    let body = format!(
        "<p>Someone asked to change the e-mail address of your Aula account to {}.</p><p>Nothing changes unless that address confirms it. If it was not you or your institution, tell your institution's staff or the platform's administrators.</p>",
        html_escape(&shown)
    );
    Ok(Some(Letter::new(
        &previous,
        "A change of your Aula e-mail address was requested",
        text,
        "A change of your e-mail address was requested",
        &body,
    )))
}

/// `ana.lima@example.org` as `a***@example.org`: enough for the owner to recognise
/// it, not a new address handed to whoever reads the old mailbox.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}
