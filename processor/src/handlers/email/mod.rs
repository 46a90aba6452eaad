//! The e-mail tasks: render the message for the task's event, send it once per
//! idempotency key, record it in `outbox_emails`.
//!
//! Each e-mail is one small template in a file of its own (`confirm_sign_up`,
//! `reset_password`, ...): it decodes its event and returns a `Letter`; this module
//! chooses the template by task kind, sends the letter once and records it.

use std::sync::Arc;

use aula_domain::course::{Course, CourseEvent, CourseServices};
use aula_domain::event_types;
use aula_domain::user::{User, UserServices};
use aula_domain::values::{Email, PersonName};
use aula_eventlog::CommandBus;
use chrono::Utc;

use super::{EventPayload, TaskContext, TaskError, TaskHandler};
use crate::config::MailConfig;
use crate::kinds::TaskKind;
use crate::mail::{html_escape, EmailMessage, Mailer};
use crate::tokens;

mod already_registered;
mod application_scheduled;
mod confirm_email_change;
mod confirm_sign_up;
mod declined;
mod email_change_notice;
mod enrolled;
mod enrollment_cancelled;
mod reset_password;
mod unreachable;
mod welcome;

pub use already_registered::ALREADY_REGISTERED_INTERVAL_SECONDS;

/// One e-mail as a template writes it: the recipient, the subject, the plain text and
/// the HTML body (inside the common [`html`] layout), and the one-time token to delete
/// once it is sent.
struct Letter {
    to: String,
    subject: String,
    text: String,
    html: String,
    token_hash: Option<String>,
}

impl Letter {
    /// A letter to `to` whose HTML page is titled `title` (text) and holds `body`.
    fn new(to: &Email, subject: impl Into<String>, text: String, title: &str, body: &str) -> Self {
        Self {
            to: to.as_str().to_owned(),
            subject: subject.into(),
            text,
            html: html(title, body),
            token_hash: None,
        }
    }

    /// A letter whose HTML page is titled with its subject.
    fn plain(to: &Email, subject: String, text: String, body: &str) -> Self {
        let html = html(&subject, body);
        Self {
            to: to.as_str().to_owned(),
            subject,
            text,
            html,
            token_hash: None,
        }
    }

    /// A letter to an applicant about `course`: a greeting and one `sentence`, written
    /// once for both bodies: `sentence` gets the course's name as it is for the plain
    /// text, then escaped and in bold for the HTML.
    fn about_course(
        to: &Email,
        name: &PersonName,
        subject: String,
        course: &str,
        sentence: impl Fn(&str) -> String,
    ) -> Self {
        let text = format!("Hello {name},\n\n{}\n", sentence(course));
        let body = format!(
            "<p>Hello {},</p><p>{}</p>",
            html_escape(name.as_str()),
            sentence(&format!("<b>{}</b>", html_escape(course)))
        );
        Self::plain(to, subject, text, &body)
    }

    /// The letter carries the one-time link of `token_hash`: the raw token is deleted
    /// once it is sent.
    fn with_token(self, token_hash: String) -> Self {
        Self {
            token_hash: Some(token_hash),
            ..self
        }
    }

    /// A letter built around the one-time `link` of `token_hash` (see
    /// [`EmailHandler::one_time_link`]): every such letter reads the same way, an
    /// introduction, the link on a line (a paragraph) of its own, and a closing line.
    fn one_time(
        to: &Email,
        subject: &str,
        title: &str,
        link: &str,
        token_hash: String,
        wording: LinkWording<'_>,
    ) -> Self {
        let LinkWording {
            text_intro,
            text_closing,
            html_intro,
            html_closing,
        } = wording;
        let text = format!("{text_intro}\n{link}\n\n{text_closing}\n");
        let body = format!(
            "<p>{html_intro}</p><p><a href=\"{0}\">{0}</a></p><p>{html_closing}</p>",
            html_escape(link)
        );
        Self::new(to, subject, text, title, &body).with_token(token_hash)
    }
}

/// What a one-time-link letter says around its link ([`Letter::one_time`]), in plain
/// text and in HTML. The HTML parts are markup already: whatever they quote from the
/// event must be escaped by the template.
struct LinkWording<'a> {
    text_intro: &'a str,
    text_closing: &'a str,
    html_intro: &'a str,
    html_closing: &'a str,
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

    pub(super) fn link(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut link = format!("{}{path}", self.config.public_base_url);
        for (index, (name, value)) in query.iter().enumerate() {
            link.push(if index == 0 { '?' } else { '&' });
            link.push_str(name);
            link.push('=');
            link.push_str(&percent_encode(value));
        }
        link
    }

    /// The one-time link of the token the API stashed under `token_hash`: to `path`
    /// with `query` and then the raw token as `token`; and when it expires, as the
    /// letters write it.
    pub(super) async fn one_time_link(
        &self,
        ctx: &TaskContext,
        path: &str,
        query: &[(&str, &str)],
        token_hash: &str,
        expires_at: chrono::DateTime<Utc>,
    ) -> Result<(String, String), TaskError> {
        let token = stashed_token(ctx, token_hash, expires_at).await?;
        let mut query = query.to_vec();
        query.push(("token", &token));
        let expires = expires_at.format("%Y-%m-%d %H:%M UTC").to_string();
        Ok((self.link(path, &query), expires))
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
        let mut conn = ctx.pool.acquire().await?;
        if let Err(e) = crate::mail::send(&*self.mailer, &rendered.message).await {
            // An unreachable relay is waited for, up to the give-up window.
            if e.is_unreachable() {
                let give_up = self.config.unreachable_give_up;
                return Err(unreachable::unreachable(ctx, &mut conn, e, give_up).await?);
            }
            unreachable::reached(ctx, &mut conn).await;
            return Err(if e.is_permanent() {
                TaskError::permanent(e)
            } else {
                TaskError::retry(e)
            });
        }
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
        let record = sqlx::query(RECORD_SENT_SQL)
            .bind(&ctx.task.idempotency_key)
            .bind(ctx.task.id)
            .bind(&ctx.task.kind)
            .bind(&rendered.message.to)
            .bind(&rendered.message.subject)
            .bind(self.mailer.transport());
        let Some(hash) = &rendered.token_hash else {
            // One statement commits on its own: no BEGIN and COMMIT round trips for
            // the e-mails without a token (every e-mail of an application).
            record.execute(&mut *conn).await?;
            return Ok(());
        };
        let mut tx = sqlx::Connection::begin(conn).await?;
        record.execute(&mut *tx).await?;
        tokens::take_token(&mut tx, hash).await?;
        tx.commit().await
    }
}

/// Records a sent e-mail; the relay was reached, so its unreachable time (if any, see
/// `unreachable.rs`) is forgotten in the same statement.
const RECORD_SENT_SQL: &str = "WITH reached AS (DELETE FROM mail_unreachable WHERE task_id = $2)
     INSERT INTO outbox_emails (idempotency_key, task_id, kind, recipient, subject, transport)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idempotency_key) DO NOTHING";

impl EmailHandler {
    /// `None`: nothing to send (the event no longer calls for it).
    async fn render(&self, ctx: &TaskContext) -> Result<Option<Rendered>, TaskError> {
        let payload = EventPayload::of(&ctx.task)?;
        let Some(kind) = TaskKind::parse(&ctx.task.kind) else {
            return Err(unknown_kind(&ctx.task.kind));
        };
        let letter = match kind {
            TaskKind::EmailSignupConfirmation => {
                confirm_sign_up::letter(self, ctx, &payload).await?
            }
            TaskKind::EmailPasswordReset => reset_password::letter(self, ctx, &payload).await?,
            TaskKind::EmailChangeConfirmation => {
                confirm_email_change::letter(self, ctx, &payload).await?
            }
            TaskKind::EmailChangeNotice => match email_change_notice::letter(&payload)? {
                Some(letter) => letter,
                None => return Ok(None),
            },
            TaskKind::EmailAlreadyRegistered => {
                match already_registered::letter(self, ctx, &payload).await? {
                    Some(letter) => letter,
                    None => return Ok(None),
                }
            }
            TaskKind::EmailWelcome => welcome::letter(self, &payload)?,
            TaskKind::EmailApplicationScheduled
                if payload.event_type == event_types::APPLICATION_SUBMITTED =>
            {
                application_scheduled::letter(ctx, &payload).await?
            }
            // The course's decisions (and the older `EnrollmentRequested` shape): the
            // letter follows the event, the course's name is read once for all of them.
            TaskKind::EmailApplicationScheduled
            | TaskKind::EmailEnrolled
            | TaskKind::EmailDeclined
            | TaskKind::EmailEnrollmentCancelled => {
                let event: CourseEvent = payload.decode()?;
                let course = course_name(ctx, payload.aggregate_id).await?;
                match event {
                    CourseEvent::EnrollmentRequested { name, email, .. } => {
                        application_scheduled::course_letter(&name, &email, &course)
                    }
                    CourseEvent::StudentEnrolled {
                        name,
                        email,
                        enrolled_on,
                        ..
                    } => enrolled::letter(&name, &email, enrolled_on, &course),
                    CourseEvent::EnrollmentDeclined {
                        name,
                        email,
                        reason,
                        ..
                    } => declined::letter(&name, &email, reason, &course),
                    CourseEvent::EnrollmentCancelled {
                        email,
                        cancelled_on,
                        ..
                    } => enrollment_cancelled::letter(&email, cancelled_on, &course),
                    _ => return Err(wrong_event(&payload)),
                }
            }
            _ => return Err(unknown_kind(&ctx.task.kind)),
        };
        Ok(Some(Rendered {
            message: EmailMessage {
                to: letter.to,
                subject: letter.subject,
                text: letter.text,
                html: letter.html,
                idempotency_key: ctx.task.idempotency_key.clone(),
            },
            token_hash: letter.token_hash,
        }))
    }
}

fn unknown_kind(kind: &str) -> TaskError {
    TaskError::permanent(format!("the e-mail handler does not know kind {kind}"))
}

pub(super) fn wrong_event(payload: &EventPayload<'_>) -> TaskError {
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
    match TaskKind::parse(kind) {
        Some(TaskKind::EmailSignupConfirmation) => {
            "the person signs up again with the same address"
        }
        Some(TaskKind::EmailPasswordReset) => "the person requests a new password reset",
        Some(TaskKind::EmailChangeConfirmation) => "the e-mail change is requested again",
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

/// The course's name: from this process's memory, else the `course_capacity` read
/// model (one row), else the course's stream when the read model has not seen the
/// course yet. Loading the stream per e-mail would replay every decision of a busy
/// course each time.
pub(crate) async fn course_name(ctx: &TaskContext, course_id: &str) -> Result<String, TaskError> {
    if let Ok(id) = course_id.parse::<uuid::Uuid>() {
        if let Some(name) = COURSE_NAMES.get(id) {
            return Ok(name);
        }
        let row = aula_projections::course_capacity::course_capacity(&ctx.pool, id).await?;
        if let Some(name) = row.and_then(|row| row.name) {
            COURSE_NAMES.put(id, &name);
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

/// Course names already read. A course's name is set once, by `CourseOpened`, and never
/// changes (no command renames a course), so a remembered name is never stale; a rush
/// of applications to one course read the same row once per e-mail before.
static COURSE_NAMES: CourseNames = CourseNames::new();

struct CourseNames(std::sync::Mutex<Option<std::collections::HashMap<uuid::Uuid, String>>>);

impl CourseNames {
    /// Bounded: past this many courses the memory starts over.
    const CAPACITY: usize = 10_000;

    const fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<std::collections::HashMap<uuid::Uuid, String>>> {
        // A panic while holding the lock cannot leave an entry half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: uuid::Uuid) -> Option<String> {
        self.lock().as_ref()?.get(&id).cloned()
    }

    fn put(&self, id: uuid::Uuid, name: &str) {
        let mut names = self.lock();
        let names = names.get_or_insert_with(Default::default);
        if names.len() >= Self::CAPACITY {
            names.clear();
        }
        names.insert(id, name.to_owned());
    }
}

/// The layout every HTML e-mail shares. `title` is text (it is often the subject,
/// which quotes names people chose: a course's, a student's), escaped here; `body` is
/// markup whose templates escaped what they quote.
fn html(title: &str, body: &str) -> String {
    let title = html_escape(title);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif\"><h1>{title}</h1>{body}<p style=\"color:#666\">Aula</p></body></html>"
    )
}

/// The user an e-mail is about, as of now (its address may have changed since the
/// event).
pub(super) async fn load_user(ctx: &TaskContext, id: &str) -> Result<User, TaskError> {
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
