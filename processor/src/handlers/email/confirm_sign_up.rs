//! `email.signup_confirmation`: the one-time link that confirms a sign-up.

use aula_domain::user::UserEvent;

use super::{wrong_event, EmailHandler, Letter, LinkWording};
use crate::handlers::{EventPayload, TaskContext, TaskError};

pub(super) async fn letter(
    handler: &EmailHandler,
    ctx: &TaskContext,
    payload: &EventPayload<'_>,
) -> Result<Letter, TaskError> {
    let UserEvent::PendingUserRegisterCreated {
        email,
        token_hash,
        expires_at,
    } = payload.decode()?
    else {
        return Err(wrong_event(payload));
    };
    let (link, expires) = handler
        .one_time_link(
            ctx,
            "/confirm-sign-up",
            &[("user", payload.aggregate_id)],
            &token_hash,
            expires_at,
        )
        .await?;
    let closing =
        format!("The link expires at {expires}. If you did not sign up, ignore this e-mail.");
    Ok(Letter::one_time(
        &email,
        "Confirm your Aula sign-up",
        "Welcome to Aula!",
        &link,
        token_hash,
        LinkWording {
            text_intro: "Welcome to Aula!\n\nConfirm your sign-up by opening this link:",
            text_closing: &closing,
            html_intro: "Confirm your sign-up:",
            html_closing: &closing,
        },
    ))
}
