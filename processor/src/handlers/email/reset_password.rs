//! `email.password_reset`: the one-time link that sets a new password.

use aula_domain::user::UserEvent;

use super::{load_user, wrong_event, EmailHandler, Letter};
use crate::handlers::{EventPayload, TaskContext, TaskError};
use crate::mail::html_escape;

pub(super) async fn letter(
    handler: &EmailHandler,
    ctx: &TaskContext,
    payload: &EventPayload<'_>,
) -> Result<Letter, TaskError> {
    let UserEvent::ResetPasswordTokenCreated {
        token_hash,
        expires_at,
    } = payload.decode()?
    else {
        return Err(wrong_event(payload));
    };
    // To the account's address as of now: it may have changed since the event.
    let user = load_user(ctx, payload.aggregate_id).await?;
    let Some(email) = user.email() else {
        return Err(TaskError::permanent("the user has no e-mail address"));
    };
    let (link, expires) = handler
        .one_time_link(ctx, "/reset-password", &[], &token_hash, expires_at)
        .await?;
    let text = format!("Someone asked to reset the password of your Aula account.\n\nChoose a new password here:\n{link}\n\nThe link expires at {expires} and works once. If it was not you, ignore this e-mail: your password is unchanged.\n");
    let body = format!(
        "<p>Someone asked to reset the password of your Aula account.</p><p><a href=\"{0}\">{0}</a></p><p>The link expires at {expires} and works once. If it was not you, ignore this e-mail.</p>",
        html_escape(&link)
    );
    Ok(Letter::new(
        email,
        "Reset your Aula password",
        text,
        "Reset your password",
        &body,
    )
    .with_token(token_hash))
}
