//! Sending e-mail: the [`Mailer`] trait, SMTP through lettre ([`SmtpMailer`]) and a
//! folder of `.eml` files ([`FileMailer`]) for machines with no SMTP server.
//!
//! Every message carries a `Message-ID` derived from its idempotency key, so a message
//! re-sent after a crash (between the SMTP conversation and our record of it) can be
//! recognised downstream; the file outbox simply overwrites the same file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::MailConfig;

/// One e-mail, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The task's idempotency key: one e-mail per key.
    pub idempotency_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("could not build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("the SMTP server refused or failed: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("the SMTP server did not finish the conversation within {0:?}")]
    Timeout(Duration),
    #[error("could not write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MailError {
    /// Whether the SMTP server could not be used at all: no connection, a connection
    /// lost or closed (lettre: an incomplete response), or no answer within the
    /// deadline (not a 4xx/5xx reply of the server's, not TLS or a bad message). Like a
    /// database outage, such an attempt says nothing about the e-mail: it is retried
    /// without counting against the task's attempts, so an outage of the relay longer
    /// than the retries' ~2 minutes no longer ends its e-mails `dead`; only one longer
    /// than `MailConfig::unreachable_give_up` does ([`RelayGivenUp`]).
    pub fn is_unreachable(&self) -> bool {
        match self {
            MailError::Timeout(_) => true,
            MailError::Smtp(e) => {
                e.is_timeout()
                    || (e.status().is_none()
                        && !e.is_client()
                        && !e.is_tls()
                        && !e.is_transient()
                        && !e.is_permanent())
            }
            _ => false,
        }
    }

    /// The outcome label of [`crate::metrics::EMAILS`] for a send that failed so.
    fn outcome(&self) -> &'static str {
        if self.is_unreachable() {
            "unreachable"
        } else {
            "failed"
        }
    }

    /// Whether trying again may succeed (a bad address never will).
    pub fn is_permanent(&self) -> bool {
        match self {
            MailError::Address { .. } | MailError::Build(_) => true,
            MailError::Smtp(e) => e.is_permanent(),
            MailError::Io { .. } | MailError::Timeout(_) => false,
        }
    }
}

/// A send that could not reach the SMTP server ([`MailError::is_unreachable`]), as the
/// task's error: its message (the task's `last_error` on the dashboard) says that the
/// relay is the problem, that the attempt is not counted, since when the relay has
/// been unreachable for this e-mail and when it will be given up.
#[derive(Debug, thiserror::Error)]
#[error(
    "the SMTP server could not be reached (retried; the attempt does not count): \
     unreachable since {}, given up at {} unless it answers by then",
    .since.format("%Y-%m-%d %H:%M:%S UTC"),
    .give_up_at.format("%Y-%m-%d %H:%M:%S UTC")
)]
pub struct Unreachable {
    pub since: chrono::DateTime<chrono::Utc>,
    pub give_up_at: chrono::DateTime<chrono::Utc>,
    #[source]
    pub error: MailError,
}

/// An e-mail whose SMTP server stayed unreachable past `MailConfig::unreachable_give_up`
/// since its first unreachable attempt: it ends `dead` with this as its last error, so
/// that a relay pointing nowhere (a wrong `SMTP_URL`) shows instead of keeping every
/// e-mail pending for ever.
#[derive(Debug, thiserror::Error)]
#[error(
    "given up: the SMTP server could not be reached for {}, since {} (check SMTP_URL \
     and the relay, then retry the task)",
    spoken(.waited),
    .since.format("%Y-%m-%d %H:%M:%S UTC")
)]
pub struct RelayGivenUp {
    pub since: chrono::DateTime<chrono::Utc>,
    pub waited: chrono::Duration,
    #[source]
    pub error: MailError,
}

/// `3 h 5 min`, `12 min`, `40 s`: a wait as the dashboard shows it.
fn spoken(waited: &chrono::Duration) -> String {
    let seconds = waited.num_seconds().max(0);
    match (seconds / 3600, seconds % 3600 / 60) {
        (0, 0) => format!("{seconds} s"),
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    }
}

#[async_trait::async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, message: &EmailMessage) -> Result<(), MailError>;
    /// A short name for `outbox_emails.transport` ("smtp", "file").
    fn transport(&self) -> &'static str;
}

/// Sends `message` through `mailer` in an `email.send` span (a child of the task's),
/// counting it in [`crate::metrics::EMAILS`]. Handlers send through this, not
/// `Mailer::send` directly. The recipient is not logged.
pub async fn send(mailer: &dyn Mailer, message: &EmailMessage) -> Result<(), MailError> {
    use tracing::Instrument as _;
    let transport = mailer.transport();
    let span = tracing::info_span!("email.send", transport);
    let result = mailer.send(message).instrument(span).await;
    let outcome = result.as_ref().map_or_else(MailError::outcome, |()| "sent");
    crate::metrics::EMAILS.with([transport, outcome]).inc();
    result
}

/// Builds the MIME message (multipart/alternative: plain text + HTML).
pub fn build_message(from: &str, message: &EmailMessage) -> Result<Message, MailError> {
    let parse = |address: &str| -> Result<Mailbox, MailError> {
        address.parse().map_err(|source| MailError::Address {
            address: address.to_owned(),
            source,
        })
    };
    let from = parse(from)?;
    let domain = from.email.domain().to_owned();
    let message_id = format!(
        "<{}@{domain}>",
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            message.idempotency_key.as_bytes()
        )
    );
    Ok(Message::builder()
        .from(from)
        .to(parse(&message.to)?)
        .subject(message.subject.clone())
        .message_id(Some(message_id))
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))?)
}

/// SMTP through lettre's pooled async transport.
///
/// lettre bounds only the connect with its timeout: a server that accepts and then
/// stops answering (or answers one byte a minute) held a worker for ever, its lease
/// kept alive by the heartbeat, and with every worker so held nothing else ran. Each
/// send therefore has a deadline ([`SEND_TIMEOUT`]) for the whole conversation; past
/// it the send fails as a transient error (the task is retried) and the transport, whose
/// pool would take back the connection left mid-conversation and hand it to the next
/// send out of step, is replaced by a fresh one.
pub struct SmtpMailer {
    transport: std::sync::RwLock<Arc<AsyncSmtpTransport<Tokio1Executor>>>,
    url: String,
    from: String,
    /// The deadline of one send, the whole SMTP conversation.
    send_timeout: Duration,
    /// Host and port, for the `smtp` CLIENT span.
    server: Option<crate::spans::SmtpServer>,
}

/// How long one e-mail's SMTP conversation may take before it is given up (and the
/// task retried).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl SmtpMailer {
    /// `url`: `smtp://host:port` (plain), `smtp://host?tls=required` (STARTTLS),
    /// `smtps://user:password@host` (TLS), as lettre's `from_url` reads it.
    pub fn from_url(url: &str, from: impl Into<String>) -> Result<Self, MailError> {
        Ok(Self {
            transport: std::sync::RwLock::new(Arc::new(Self::transport_for(url)?)),
            url: url.to_owned(),
            from: from.into(),
            send_timeout: SEND_TIMEOUT,
            server: crate::spans::SmtpServer::from_url(url),
        })
    }

    /// Another deadline for one send than [`SEND_TIMEOUT`].
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    fn transport_for(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
        Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
            .timeout(Some(Duration::from_secs(30)))
            .build())
    }

    fn current(&self) -> Arc<AsyncSmtpTransport<Tokio1Executor>> {
        self.transport
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces `stale` (unless another send already did): its pooled connections,
    /// the one left mid-conversation among them, are closed once nothing uses them.
    fn retire(&self, stale: &Arc<AsyncSmtpTransport<Tokio1Executor>>) {
        let Ok(fresh) = Self::transport_for(&self.url) else {
            return;
        };
        let mut current = self
            .transport
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if Arc::ptr_eq(&current, stale) {
            *current = Arc::new(fresh);
        }
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &EmailMessage) -> Result<(), MailError> {
        use tracing::Instrument as _;
        let built = build_message(&self.from, message)?;
        let span = match &self.server {
            Some(server) => crate::spans::smtp(server),
            None => tracing::Span::none(),
        };
        let transport = self.current();
        let sent = tokio::time::timeout(
            self.send_timeout,
            transport.send(built).instrument(span.clone()),
        )
        .await;
        let sent = match sent {
            Ok(sent) => sent.map(|_| ()).map_err(MailError::from),
            Err(_) => {
                self.retire(&transport);
                Err(MailError::Timeout(self.send_timeout))
            }
        };
        if let Err(error) = &sent {
            let kind = match error {
                MailError::Timeout(_) => "smtp_timeout",
                error if error.is_permanent() => "smtp_permanent",
                _ => "smtp_transient",
            };
            aula_eventlog::trace::record_error(&span, kind, &error.to_string());
        }
        sent
    }

    fn transport(&self) -> &'static str {
        "smtp"
    }
}

/// Writes each e-mail as `<outbox>/<idempotency key>.eml` (written to a temporary file,
/// then renamed, so a reader never sees half a message).
pub struct FileMailer {
    dir: PathBuf,
    from: String,
    /// The folder was made (and its mode set) by this mailer: later messages go
    /// straight to their file, without two more file-system calls each.
    prepared: std::sync::atomic::AtomicBool,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            from: from.into(),
            prepared: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an e-mail with this idempotency key is written to.
    pub fn path_for(&self, idempotency_key: &str) -> PathBuf {
        let name: String = idempotency_key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{name}.eml"))
    }

    /// Makes the folder. The messages carry one-time sign-up and reset links: only this
    /// user may read them (the folder, and each file, whatever the umask or an older
    /// folder says).
    async fn prepare(&self) -> Result<(), MailError> {
        let io = |source| MailError::Io {
            path: self.dir.clone(),
            source,
        };
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .await
            .map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io)
    }
}

#[async_trait::async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: &EmailMessage) -> Result<(), MailError> {
        let built = build_message(&self.from, message)?;
        let path = self.path_for(&message.idempotency_key);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MailError::Io { path, source }
        };
        let temporary = path.with_extension("eml.tmp");
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true).mode(0o600);
        use std::sync::atomic::Ordering;
        if !self.prepared.load(Ordering::Acquire) {
            self.prepare().await?;
            self.prepared.store(true, Ordering::Release);
        }
        let mut file = match options.open(&temporary).await {
            // The folder went away since it was made: make it again.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.prepare().await?;
                options.open(&temporary).await
            }
            other => other,
        }
        .map_err(io(&temporary))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &built.formatted())
            .await
            .map_err(io(&temporary))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io(&temporary))?;
        drop(file);
        tokio::fs::rename(&temporary, &path)
            .await
            .map_err(io(&path))?;
        Ok(())
    }

    fn transport(&self) -> &'static str {
        "file"
    }
}

/// The mailer the configuration asks for: SMTP when `SMTP_URL` is set, else the file
/// outbox (and the log says where it is).
pub fn from_config(config: &MailConfig) -> Result<Box<dyn Mailer>, MailError> {
    match &config.smtp_url {
        Some(url) => {
            tracing::info!("e-mails go out over SMTP (SMTP_URL)");
            Ok(Box::new(SmtpMailer::from_url(url, config.from.clone())?))
        }
        None => {
            let dir = std::path::absolute(&config.outbox_dir)
                .unwrap_or_else(|_| config.outbox_dir.clone());
            tracing::info!(outbox = %dir.display(), "SMTP_URL is not set: e-mails are written as .eml files into the outbox folder");
            Ok(Box::new(FileMailer::new(dir, config.from.clone())))
        }
    }
}

/// Escapes text for HTML bodies.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_mailer_writes_one_eml_per_idempotency_key() {
        let dir = std::env::temp_dir().join(format!("aula-outbox-{}", uuid::Uuid::new_v4()));
        let mailer = FileMailer::new(&dir, "Aula <no-reply@aula.localhost>");
        let message = EmailMessage {
            to: "ada@example.org".into(),
            subject: "Hello <you>".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
            idempotency_key: "email.welcome:1234".into(),
        };
        mailer.send(&message).await.unwrap();
        mailer.send(&message).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        // Sign-up and reset links are in there: nobody else may read them.
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&mailer.path_for("email.welcome:1234")), 0o600);
        let text = std::fs::read_to_string(mailer.path_for("email.welcome:1234")).unwrap();
        assert!(text.contains("To: ada@example.org"), "{text}");
        assert!(text.contains("plain body"));
        assert!(text.contains("<p>html body</p>"));
        assert!(text.contains("multipart/alternative"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn file_mailer_makes_its_folder_again_when_it_went_away() {
        let dir = std::env::temp_dir().join(format!("aula-outbox-{}", uuid::Uuid::new_v4()));
        let mailer = FileMailer::new(&dir, "Aula <no-reply@aula.localhost>");
        let message = |key: &str| EmailMessage {
            to: "ada@example.org".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            idempotency_key: key.into(),
        };
        mailer.send(&message("first")).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        mailer.send(&message("second")).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(mailer.path_for("second").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_address_is_a_permanent_error() {
        let message = EmailMessage {
            to: "not an address".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            idempotency_key: "k".into(),
        };
        let error = build_message("Aula <a@b.co>", &message).unwrap_err();
        assert!(error.is_permanent());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
