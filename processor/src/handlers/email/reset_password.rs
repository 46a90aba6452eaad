//! `email.password_reset`: the one-time link that sets a new password.

use aula_domain::user::UserEvent;

use super::{load_user, wrong_event, EmailHandler, Letter, LinkWording};
use crate::handlers::{EventPayload, TaskContext, TaskError};

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
    let expiry = format!("The link expires at {expires} and works once.");
    Ok(Letter::one_time(
        email,
        "Reset your Aula password",
        "Reset your password",
        &link,
        token_hash,
        LinkWording {
            text_intro: "Someone asked to reset the password of your Aula account.\n\nChoose a new password here:",
            text_closing: &format!(
                "{expiry} If it was not you, ignore this e-mail: your password is unchanged."
            ),
            html_intro: "Someone asked to reset the password of your Aula account.",
            html_closing: &format!("{expiry} If it was not you, ignore this e-mail."),
        },
    ))
}
