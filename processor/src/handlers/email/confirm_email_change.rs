//! `email.email_change_confirmation`: the one-time link that confirms a change of
//! e-mail address, to the new address or (a change asked by someone else for an active
//! account) to the current one, for the owner's consent.

use aula_domain::user::{EmailChangeLink, UserEvent};

use super::{wrong_event, EmailHandler, Letter, LinkWording};
use crate::handlers::{EventPayload, TaskContext, TaskError};
use crate::mail::html_escape;

pub(super) async fn letter(
    handler: &EmailHandler,
    ctx: &TaskContext,
    payload: &EventPayload<'_>,
) -> Result<Letter, TaskError> {
    let UserEvent::EmailChangeRequested {
        previous_email,
        new_email,
        token_hash,
        expires_at,
        link_to,
    } = payload.decode()?
    else {
        return Err(wrong_event(payload));
    };
    let (link, expires) = handler
        .one_time_link(
            ctx,
            "/confirm-email",
            &[("user", payload.aggregate_id)],
            &token_hash,
            expires_at,
        )
        .await?;
    let (to, subject, intro) = match (link_to, previous_email) {
        (EmailChangeLink::CurrentAddress, Some(current)) => (
            current,
            "Approve the change of your Aula e-mail address",
            format!(
                "Your institution's staff asked to change the e-mail address of your Aula account to {new_email}. It changes only if you approve it by opening this link."
            ),
        ),
        _ => (
            new_email,
            "Confirm your new Aula e-mail address",
            "Someone asked to use this address for an Aula account. Confirm it by opening this link.".to_owned(),
        ),
    };
    let closing = format!("The link expires at {expires} and works once. Until then the account keeps its current address. If you did not expect this, ignore this e-mail.");
    Ok(Letter::one_time(
        &to,
        subject,
        subject,
        &link,
        token_hash,
        LinkWording {
            text_intro: &intro,
            text_closing: &closing,
            html_intro: &html_escape(&intro),
            html_closing: &closing,
        },
    ))
}
