//! `email.already_registered`: to the owner of an account someone signed up for again,
//! at most once per address per interval.

use aula_domain::user::{UserEvent, UserStatus};

use super::{load_user, wrong_event, EmailHandler, Letter};
use crate::handlers::{EventPayload, TaskContext, TaskError};
use crate::kinds;
use crate::mail::html_escape;

/// At most one `email.already_registered` per address in this many seconds.
pub const ALREADY_REGISTERED_INTERVAL_SECONDS: f64 = 3600.0;

/// `None` for a deactivated account, or when one went to the address recently.
pub(super) async fn letter(
    handler: &EmailHandler,
    ctx: &TaskContext,
    payload: &EventPayload<'_>,
) -> Result<Option<Letter>, TaskError> {
    let UserEvent::RegisteredEmailSignUpAttempted { .. } = payload.decode()? else {
        return Err(wrong_event(payload));
    };
    let user = load_user(ctx, payload.aggregate_id).await?;
    // A deactivated account's owner is not invited to sign in.
    let (UserStatus::Active, Some(email)) = (user.status(), user.email()) else {
        return Ok(None);
    };
    // Anyone can sign up with anyone's address: at most one of these per address per
    // interval, so that an owner cannot be flooded. (Two tasks running at the same
    // moment may both send; that is bounded by the workers' concurrency.)
    let recent: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM outbox_emails
         WHERE recipient = $1 AND kind = $2 AND sent_at > now() - $3 * interval '1 second'
         LIMIT 1",
    )
    .bind(email.as_str())
    .bind(kinds::EMAIL_ALREADY_REGISTERED)
    .bind(ALREADY_REGISTERED_INTERVAL_SECONDS)
    .fetch_optional(&ctx.pool)
    .await?;
    if recent.is_some() {
        tracing::info!(
            task = ctx.task.id,
            "an already-registered e-mail went to this address recently; not sending another"
        );
        return Ok(None);
    }
    let sign_in = handler.link("/", &[]);
    let text = format!("Someone asked to sign up for Aula with this e-mail address, which already has an account.\n\nSign in here:\n{sign_in}\n\nIf you forgot your password, use \"Forgot password\" on that page. If it was not you, ignore this e-mail: nothing was changed.\n");
    let body = format!(
        "<p>Someone asked to sign up for Aula with this e-mail address, which already has an account.</p><p>Sign in here: <a href=\"{0}\">{0}</a></p><p>If you forgot your password, use \"Forgot password\" on that page. If it was not you, ignore this e-mail: nothing was changed.</p>",
        html_escape(&sign_in)
    );
    Ok(Some(Letter::new(
        email,
        "You already have an Aula account",
        text,
        "You already have an account",
        &body,
    )))
}
