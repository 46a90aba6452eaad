//! The e-mail tasks: render the message for the task's event, send it once per
//! idempotency key, record it in `outbox_emails`.

use std::sync::Arc;

use aula_domain::application::ApplicationEvent;
use aula_domain::course::{Course, CourseEvent, CourseServices, DeclineReason};
use aula_domain::student::StudentEvent;
use aula_domain::user::{EmailChangeLink, User, UserEvent, UserServices, UserStatus};
use aula_eventlog::CommandBus;
use chrono::Utc;

use super::{EventPayload, TaskContext, TaskError, TaskHandler};
use crate::config::MailConfig;
use crate::kinds;
use crate::mail::{html_escape, EmailMessage, Mailer};
use crate::tokens;

/// At most one `email.already_registered` per address in this many seconds.
pub const ALREADY_REGISTERED_INTERVAL_SECONDS: f64 = 3600.0;

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

/// Handles every `email.*` kind.
pub struct EmailHandler {
    mailer: Arc<dyn Mailer>,
    config: MailConfig,
}

impl EmailHandler {
    pub fn new(mailer: Arc<dyn Mailer>, config: MailConfig) -> Self {
        Self { mailer, config }
    }

    fn link(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut link = format!("{}{path}", self.config.public_base_url);
        for (index, (name, value)) in query.iter().enumerate() {
            link.push(if index == 0 { '?' } else { '&' });
            link.push_str(name);
            link.push('=');
            link.push_str(&percent_encode(value));
        }
        link
    }
}

/// What a rendered e-mail needs besides the message: the one-time token to delete
/// once it is sent.
struct Rendered {
    message: EmailMessage,
    token_hash: Option<String>,
}

#[async_trait::async_trait]
impl TaskHandler for EmailHandler {
    async fn run(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let key = &ctx.task.idempotency_key;
        let sent: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM outbox_emails WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&ctx.pool)
                .await?;
        if sent.is_some() {
            tracing::debug!(
                task = ctx.task.id,
                key,
                "e-mail already sent; nothing to do"
            );
            return Ok(());
        }
        let Some(rendered) = self.render(ctx).await? else {
            return Ok(());
        };
        // The connection the send will be recorded with, taken before the SMTP
        // conversation: once the server has accepted the message, recording it must not
        // wait for a busy pool (nor fail on one), or the task would run again and send
        // the message again.
        let conn = ctx.pool.acquire().await?;
        crate::mail::send(&*self.mailer, &rendered.message)
            .await
            .map_err(|e| {
                if e.is_permanent() {
                    TaskError::permanent(e)
                } else {
                    TaskError::retry(e)
                }
            })?;
        self.record_sent(ctx, conn, &rendered).await
    }
}

impl EmailHandler {
    /// Records a sent e-mail (and takes its one-time token) in one transaction. When
    /// that fails, only the record is tried again, with backoff, on the held
    /// connection first and then on fresh ones, for up to `record_patience`: the task
    /// stays running meanwhile (the worker's heartbeat keeps its lease). Only past
    /// that does the task fail, to be retried, which sends the message again.
    async fn record_sent(
        &self,
        ctx: &TaskContext,
        conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
        rendered: &Rendered,
    ) -> Result<(), TaskError> {
        let started = std::time::Instant::now();
        let mut held = Some(conn);
        let mut tries = 0i32;
        loop {
            tries += 1;
            let result = async {
                let mut conn = match held.take() {
                    Some(conn) => conn,
                    None => ctx.pool.acquire().await?,
                };
                self.insert_record(ctx, &mut conn, rendered).await
            }
            .await;
            let error = match result {
                Ok(()) => {
                    if tries > 1 {
                        tracing::info!(
                            task = ctx.task.id,
                            tries,
                            "the sent e-mail was recorded after retries; not sending it again"
                        );
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            let pause = crate::queue::backoff(
                tries,
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(5),
            );
            if started.elapsed() + pause > self.config.record_patience {
                tracing::error!(task = ctx.task.id, tries, %error, "the e-mail was sent but could not be recorded; the task will run again and send it again");
                return Err(TaskError::retry(format!(
                    "the e-mail was sent but recording it failed {tries} times: {error}"
                )));
            }
            tracing::warn!(task = ctx.task.id, tries, %error, ?pause, "recording a sent e-mail failed; retrying the record, not the send");
            tokio::time::sleep(pause).await;
        }
    }

    async fn insert_record(
        &self,
        ctx: &TaskContext,
        conn: &mut sqlx::PgConnection,
        rendered: &Rendered,
    ) -> Result<(), sqlx::Error> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        sqlx::query(
            "INSERT INTO outbox_emails (idempotency_key, task_id, kind, recipient, subject, transport)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&ctx.task.idempotency_key)
        .bind(ctx.task.id)
        .bind(&ctx.task.kind)
        .bind(&rendered.message.to)
        .bind(&rendered.message.subject)
        .bind(self.mailer.transport())
        .execute(&mut *tx)
        .await?;
        if let Some(hash) = &rendered.token_hash {
            tokens::take_token(&mut tx, hash).await?;
        }
        tx.commit().await
    }
}

impl EmailHandler {
    /// `None`: nothing to send (the event no longer calls for it).
    async fn render(&self, ctx: &TaskContext) -> Result<Option<Rendered>, TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let key = ctx.task.idempotency_key.clone();
        let message = |to: &str, subject: String, text: String, html: String| EmailMessage {
            to: to.to_owned(),
            subject,
            text,
            html,
            idempotency_key: key.clone(),
        };
        let rendered = match ctx.task.kind.as_str() {
            kinds::EMAIL_SIGNUP_CONFIRMATION => {
                let UserEvent::PendingUserRegisterCreated {
                    email,
                    token_hash,
                    expires_at,
                } = payload.decode()?
                else {
                    return Err(wrong_event(&payload));
                };
                let token = stashed_token(ctx, &token_hash, expires_at).await?;
                let link = self.link(
                    "/confirm-sign-up",
                    &[("user", payload.aggregate_id), ("token", &token)],
                );
                let expires = expires_at.format("%Y-%m-%d %H:%M UTC");
                Rendered {
                    message: message(
                        email.as_str(),
                        "Confirm your Aula sign-up".into(),
                        format!("Welcome to Aula!\n\nConfirm your sign-up by opening this link:\n{link}\n\nThe link expires at {expires}. If you did not sign up, ignore this e-mail.\n"),
                        html(
                            "Welcome to Aula!",
                            &format!(
                                "<p>Confirm your sign-up:</p><p><a href=\"{0}\">{0}</a></p><p>The link expires at {expires}. If you did not sign up, ignore this e-mail.</p>",
                                html_escape(&link)
                            ),
                        ),
                    ),
                    token_hash: Some(token_hash),
                }
            }
            kinds::EMAIL_PASSWORD_RESET => {
                let UserEvent::ResetPasswordTokenCreated {
                    token_hash,
                    expires_at,
                } = payload.decode()?
                else {
                    return Err(wrong_event(&payload));
                };
                let user = load_user(ctx, payload.aggregate_id).await?;
                let Some(email) = user.email() else {
                    return Err(TaskError::permanent("the user has no e-mail address"));
                };
                let token = stashed_token(ctx, &token_hash, expires_at).await?;
                let link = self.link("/reset-password", &[("token", &token)]);
                let expires = expires_at.format("%Y-%m-%d %H:%M UTC");
                Rendered {
                    message: message(
                        email.as_str(),
                        "Reset your Aula password".into(),
                        format!("Someone asked to reset the password of your Aula account.\n\nChoose a new password here:\n{link}\n\nThe link expires at {expires} and works once. If it was not you, ignore this e-mail: your password is unchanged.\n"),
                        html(
                            "Reset your password",
                            &format!(
                                "<p>Someone asked to reset the password of your Aula account.</p><p><a href=\"{0}\">{0}</a></p><p>The link expires at {expires} and works once. If it was not you, ignore this e-mail.</p>",
                                html_escape(&link)
                            ),
                        ),
                    ),
                    token_hash: Some(token_hash),
                }
            }
            kinds::EMAIL_CHANGE_CONFIRMATION => {
                let UserEvent::EmailChangeRequested {
                    previous_email,
                    new_email,
                    token_hash,
                    expires_at,
                    link_to,
                } = payload.decode()?
                else {
                    return Err(wrong_event(&payload));
                };
                let token = stashed_token(ctx, &token_hash, expires_at).await?;
                let link = self.link(
                    "/confirm-email",
                    &[("user", payload.aggregate_id), ("token", &token)],
                );
                let expires = expires_at.format("%Y-%m-%d %H:%M UTC");
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
                Rendered {
                    message: message(
                        to.as_str(),
                        subject.into(),
                        format!("{intro}\n{link}\n\nThe link expires at {expires} and works once. Until then the account keeps its current address. If you did not expect this, ignore this e-mail.\n"),
                        html(
                            subject,
                            &format!(
                                "<p>{}</p><p><a href=\"{1}\">{1}</a></p><p>The link expires at {expires} and works once. Until then the account keeps its current address. If you did not expect this, ignore this e-mail.</p>",
                                html_escape(&intro),
                                html_escape(&link)
                            ),
                        ),
                    ),
                    token_hash: Some(token_hash),
                }
            }
            kinds::EMAIL_CHANGE_NOTICE => {
                let UserEvent::EmailChangeRequested {
                    previous_email,
                    new_email,
                    link_to,
                    ..
                } = payload.decode()?
                else {
                    return Err(wrong_event(&payload));
                };
                // When the owner approves at the current address, that link is the notice.
                let (Some(previous), EmailChangeLink::NewAddress) = (previous_email, link_to)
                else {
                    return Ok(None);
                };
                let shown = masked(new_email.as_str());
                Rendered {
                    message: message(
                        previous.as_str(),
                        "A change of your Aula e-mail address was requested".into(),
                        format!("Someone asked to change the e-mail address of your Aula account to {shown}.\n\nNothing changes unless that address confirms it. If it was not you or your institution, tell your institution's staff or the platform's administrators.\n"),
                        html(
                            "A change of your e-mail address was requested",
                            &format!(
                                "<p>Someone asked to change the e-mail address of your Aula account to {}.</p><p>Nothing changes unless that address confirms it. If it was not you or your institution, tell your institution's staff or the platform's administrators.</p>",
                                html_escape(&shown)
                            ),
                        ),
                    ),
                    token_hash: None,
                }
            }
            kinds::EMAIL_ALREADY_REGISTERED => {
                let UserEvent::RegisteredEmailSignUpAttempted { .. } = payload.decode()? else {
                    return Err(wrong_event(&payload));
                };
                let user = load_user(ctx, payload.aggregate_id).await?;
                // A deactivated account's owner is not invited to sign in.
                let (UserStatus::Active, Some(email)) = (user.status(), user.email()) else {
                    return Ok(None);
                };
                // Anyone can sign up with anyone's address: at most one of these per
                // address per interval, so that an owner cannot be flooded. (Two tasks
                // running at the same moment may both send; that is bounded by the
                // workers' concurrency.)
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
                let sign_in = self.link("/", &[]);
                Rendered {
                    message: message(
                        email.as_str(),
                        "You already have an Aula account".into(),
                        format!("Someone asked to sign up for Aula with this e-mail address, which already has an account.\n\nSign in here:\n{sign_in}\n\nIf you forgot your password, use \"Forgot password\" on that page. If it was not you, ignore this e-mail: nothing was changed.\n"),
                        html(
                            "You already have an account",
                            &format!(
                                "<p>Someone asked to sign up for Aula with this e-mail address, which already has an account.</p><p>Sign in here: <a href=\"{0}\">{0}</a></p><p>If you forgot your password, use \"Forgot password\" on that page. If it was not you, ignore this e-mail: nothing was changed.</p>",
                                html_escape(&sign_in)
                            ),
                        ),
                    ),
                    token_hash: None,
                }
            }
            kinds::EMAIL_WELCOME => {
                let StudentEvent::StudentCreated { name, email, .. } = payload.decode()?;
                let link = self.link("/", &[]);
                Rendered {
                    message: message(
                        email.as_str(),
                        format!("Welcome to Aula, {name}"),
                        format!("Hello {name},\n\nyour student record was created. Sign in at {link}\n"),
                        html(
                            &format!("Welcome, {}", html_escape(name.as_str())),
                            &format!(
                                "<p>Your student record was created.</p><p><a href=\"{0}\">{0}</a></p>",
                                html_escape(&link)
                            ),
                        ),
                    ),
                    token_hash: None,
                }
            }
            kinds::EMAIL_APPLICATION_SCHEDULED if payload.event_type == "ApplicationSubmitted" => {
                let ApplicationEvent::ApplicationSubmitted {
                    name,
                    email,
                    course_id,
                    ..
                } = payload.decode()?;
                let course = course_name(ctx, &course_id.to_string()).await?;
                let subject = format!("Your application to {course} was scheduled");
                let body = format!("<p>Hello {},</p><p>we received your application to <b>{}</b>. It is queued; you will get another e-mail when it is decided.</p>", html_escape(name.as_str()), html_escape(&course));
                Rendered {
                    message: message(
                        email.as_str(),
                        subject.clone(),
                        format!("Hello {name},\n\nwe received your application to {course}. It is queued; you will get another e-mail when it is decided.\n"),
                        html(&subject, &body),
                    ),
                    token_hash: None,
                }
            }
            kinds::EMAIL_APPLICATION_SCHEDULED
            | kinds::EMAIL_ENROLLED
            | kinds::EMAIL_DECLINED
            | kinds::EMAIL_ENROLLMENT_CANCELLED => {
                let event: CourseEvent = payload.decode()?;
                let course = course_name(ctx, payload.aggregate_id).await?;
                let course_html = html_escape(&course);
                let (to, subject, text, body) = match event {
                    CourseEvent::EnrollmentRequested { name, email, .. } => (
                        email,
                        format!("Your application to {course} was scheduled"),
                        format!("Hello {name},\n\nwe received your application to {course}. It is queued; you will get another e-mail when it is decided.\n"),
                        format!("<p>Hello {},</p><p>we received your application to <b>{course_html}</b>. It is queued; you will get another e-mail when it is decided.</p>", html_escape(name.as_str())),
                    ),
                    CourseEvent::StudentEnrolled { name, email, enrolled_on, .. } => (
                        email,
                        format!("You are enrolled in {course}"),
                        format!("Hello {name},\n\nyou are enrolled in {course} (since {enrolled_on}).\n"),
                        format!("<p>Hello {},</p><p>you are enrolled in <b>{course_html}</b> (since {enrolled_on}).</p>", html_escape(name.as_str())),
                    ),
                    CourseEvent::EnrollmentDeclined { name, email, reason, .. } => {
                        let reason = match reason {
                            DeclineReason::ClassFull => "the class is full",
                            DeclineReason::AlreadyEnrolled => "you are already enrolled in this course",
                            DeclineReason::CourseClosed => "the course is closed",
                        };
                        (
                            email,
                            format!("Your application to {course} was declined"),
                            format!("Hello {name},\n\nyour application to {course} was declined: {reason}.\n"),
                            format!("<p>Hello {},</p><p>your application to <b>{course_html}</b> was declined: {reason}.</p>", html_escape(name.as_str())),
                        )
                    }
                    CourseEvent::EnrollmentCancelled { email, cancelled_on, .. } => (
                        email,
                        format!("Your enrollment in {course} was cancelled"),
                        format!("Hello,\n\nyour enrollment in {course} was cancelled on {cancelled_on} and your seat released. If you think this is a mistake, contact your institution.\n"),
                        format!("<p>Hello,</p><p>your enrollment in <b>{course_html}</b> was cancelled on {cancelled_on} and your seat released. If you think this is a mistake, contact your institution.</p>"),
                    ),
                    _ => return Err(wrong_event(&payload)),
                };
                Rendered {
                    message: message(to.as_str(), subject.clone(), text, html(&subject, &body)),
                    token_hash: None,
                }
            }
            other => {
                return Err(TaskError::permanent(format!(
                    "the e-mail handler does not know kind {other}"
                )))
            }
        };
        Ok(Some(rendered))
    }
}

fn wrong_event(payload: &EventPayload<'_>) -> TaskError {
    TaskError::permanent(format!(
        "unexpected event {} for this task kind",
        payload.event_type
    ))
}

/// The raw token the API stashed for `token_hash` (see [`crate::tokens`]).
async fn stashed_token(
    ctx: &TaskContext,
    token_hash: &str,
    expires_at: chrono::DateTime<Utc>,
) -> Result<String, TaskError> {
    match tokens::find_token(&ctx.pool, token_hash).await? {
        Some(token) => Ok(token),
        None if expires_at <= Utc::now() => Err(TaskError::permanent(
            "the one-time token expired before its e-mail could be sent",
        )),
        None if original_already_sent(ctx).await? => Err(TaskError::final_outcome(format!(
            "this is a reprocessed copy and the original's e-mail already sent the one-time \
             link (its raw token is kept only until then, and only its hash is stored): \
             ask for a new link instead ({})",
            new_link_advice(&ctx.task.kind)
        ))),
        None => Err(TaskError::retry(
            "the raw one-time token has not been stashed yet (pending_tokens)",
        )),
    }
}

/// What a person does to get a fresh one-time link of `kind` (the reprocess preview
/// says the same, `aula_processor::reprocess::one_time_link_note`).
pub(crate) fn new_link_advice(kind: &str) -> &'static str {
    match kind {
        kinds::EMAIL_SIGNUP_CONFIRMATION => "the person signs up again with the same address",
        kinds::EMAIL_PASSWORD_RESET => "the person requests a new password reset",
        kinds::EMAIL_CHANGE_CONFIRMATION => "the e-mail change is requested again",
        _ => "the person repeats the request",
    }
}

/// Whether this task belongs to a reprocessed copy whose original's e-mail of the same
/// kind was sent: the raw token went with it, so waiting for it is pointless (a copy
/// retried eight times before failing).
async fn original_already_sent(ctx: &TaskContext) -> Result<bool, TaskError> {
    let Some(original) = crate::reactions::reprocessed_from(&ctx.task.payload) else {
        return Ok(false);
    };
    let sent: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM outbox_emails WHERE idempotency_key = $1")
            .bind(format!("{}:{original}", ctx.task.kind))
            .fetch_optional(&ctx.pool)
            .await?;
    Ok(sent.is_some())
}

/// The course's name: from the `course_capacity` read model (one row), or from the
/// course's stream when the read model has not seen the course yet. Loading the stream
/// per e-mail would replay every decision of a busy course each time.
pub(crate) async fn course_name(ctx: &TaskContext, course_id: &str) -> Result<String, TaskError> {
    if let Ok(id) = course_id.parse::<uuid::Uuid>() {
        let row = aula_projections::course_capacity::course_capacity(&ctx.pool, id).await?;
        if let Some(name) = row.and_then(|row| row.name) {
            return Ok(name);
        }
    }
    let bus = CommandBus::<Course>::with_upcasters(
        ctx.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let (course, _) = bus.load(course_id).await?;
    Ok(course
        .name()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "your course".into()))
}

fn html(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif\"><h1>{title}</h1>{body}<p style=\"color:#666\">Aula</p></body></html>"
    )
}

/// The user an e-mail is about, as of now (its address may have changed since the
/// event).
async fn load_user(ctx: &TaskContext, id: &str) -> Result<User, TaskError> {
    let bus = CommandBus::<User>::with_upcasters(
        ctx.pool.clone(),
        UserServices::default(),
        aula_domain::upcasters(),
    );
    Ok(bus.load(id).await?.0)
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_built_from_the_base_url_and_encoded() {
        let handler = EmailHandler::new(
            Arc::new(crate::mail::FileMailer::new("/tmp", "a@b.co")),
            MailConfig {
                public_base_url: "https://aula.example".into(),
                ..MailConfig::default()
            },
        );
        assert_eq!(
            handler.link("/reset-password", &[("token", "a b/c"), ("x", "y")]),
            "https://aula.example/reset-password?token=a%20b%2Fc&x=y"
        );
    }
}
