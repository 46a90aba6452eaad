//! `email.signup_confirmation`: the one-time link that confirms a sign-up.

use aula_domain::user::UserEvent;

use super::{wrong_event, EmailHandler, Letter};
use crate::handlers::{EventPayload, TaskContext, TaskError};
use crate::mail::html_escape;

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
    let text = format!("Welcome to Aula!\n\nConfirm your sign-up by opening this link:\n{link}\n\nThe link expires at {expires}. If you did not sign up, ignore this e-mail.\n");
    let body = format!(
        "<p>Confirm your sign-up:</p><p><a href=\"{0}\">{0}</a></p><p>The link expires at {expires}. If you did not sign up, ignore this e-mail.</p>",
        html_escape(&link)
    );
    Ok(Letter::new(
        &email,
        "Confirm your Aula sign-up",
        text,
        "Welcome to Aula!",
        &body,
    )
    .with_token(token_hash))
}
