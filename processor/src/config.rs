//! Typed configuration of the processor, read from environment variables.

use std::path::PathBuf;
use std::time::Duration;

/// Tunables of the workers of one process. Every field has an environment variable
/// (see [`ProcessorConfig::from_env`]).
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// This process's name in `tasks.worker` (`AULA_WORKER_NAME`, default host-pid).
    pub worker_name: String,
    /// Tasks run at once by this process (`AULA_WORKER_CONCURRENCY`, default 16).
    pub concurrency: usize,
    /// Most tasks claimed by one statement (`AULA_WORKER_CLAIM_BATCH`, default 64).
    pub claim_batch: i64,
    /// How long a claim holds without a heartbeat (`AULA_TASK_LEASE_MS`, default 30 s).
    pub lease: Duration,
    /// Fallback poll when no notification arrives (`AULA_WORKER_POLL_MS`, default 1 s).
    pub poll_interval: Duration,
    /// How often expired leases are rescued (`AULA_WORKER_RESCUE_MS`, default 5 s).
    pub rescue_interval: Duration,
    /// First retry delay; doubles per attempt, with jitter (`AULA_RETRY_BASE_MS`, default 1 s).
    pub retry_base: Duration,
    /// Cap of the retry delay (`AULA_RETRY_MAX_MS`, default 10 min).
    pub retry_max: Duration,
    /// How long a graceful shutdown waits for in-flight tasks before releasing them
    /// (`AULA_WORKER_DRAIN_MS`, default 20 s).
    pub drain_timeout: Duration,
    /// Keep attempt history (`task_attempts`) (`AULA_TASK_HISTORY`, default true).
    pub record_attempts: bool,
    /// Most e-mail tasks (`kinds::KindClass::Mail`) run at once by this process
    /// (`AULA_WORKER_MAIL_CONCURRENCY`; `None`: half of `concurrency`, at least 1). See
    /// [`ProcessorConfig::class_cap`].
    pub mail_concurrency: Option<usize>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            worker_name: default_worker_name(),
            concurrency: 16,
            claim_batch: 64,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(20),
            record_attempts: true,
            mail_concurrency: None,
        }
    }
}

fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("{host}-{}", std::process::id())
}

/// A setting from the environment that cannot be used: start-up stops and says which
/// variable, what it held and what it takes, instead of running on a default nobody
/// chose (an unparsable `AULA_WORKER_CONCURRENCY` used to mean 16 without a word, and
/// `AULA_TASK_LEASE_MS=0` ran every task more than once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {value:?} is not {expected}")]
pub struct SettingError {
    pub name: &'static str,
    pub value: String,
    pub expected: String,
}

/// The variable `name`: `None` when unset or blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The number in `name`, within `range` (inclusive); `default` when unset.
pub(crate) fn number<T>(
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, SettingError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(value) = var(name) else {
        return Ok(default);
    };
    match value.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(SettingError {
            name,
            value,
            expected: format!("a whole number from {} to {}", range.start(), range.end()),
        }),
    }
}

/// Milliseconds in `name`, within `range`; `default` when unset.
pub(crate) fn millis(
    name: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, SettingError> {
    let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    number(name, default, range).map(Duration::from_millis)
}

/// `true` or `false` in `name`; `default` when unset.
fn flag(name: &'static str, default: bool) -> Result<bool, SettingError> {
    match var(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| SettingError {
            name,
            value,
            expected: "true or false".into(),
        }),
    }
}

const DAY_MS: u64 = 24 * 3600 * 1000;

impl ProcessorConfig {
    /// Timings short enough for tests (a lease of 5 s, retries within 200 ms, a poll
    /// every 100 ms) under `worker_name`; the crates' integration tests share it.
    pub fn quick(worker_name: &str) -> Self {
        Self {
            worker_name: worker_name.into(),
            concurrency: 8,
            claim_batch: 32,
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            rescue_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(10),
            record_attempts: true,
            mail_concurrency: None,
        }
    }

    /// Most tasks of `class` this process runs at once: its setting, or half of the
    /// slots (at least 1), never more than the slots. A cap that equals the slots
    /// binds nothing.
    pub fn class_cap(&self, class: crate::kinds::KindClass) -> usize {
        let setting = match class {
            crate::kinds::KindClass::Mail => self.mail_concurrency,
        };
        setting
            .unwrap_or(self.concurrency / 2)
            .clamp(1, self.concurrency.max(1))
    }

    /// Reads the settings (the defaults for those unset); a value that does not parse or
    /// is out of its range is an error naming its variable.
    pub fn from_env() -> Result<Self, SettingError> {
        let d = Self::default();
        let config = Self {
            worker_name: var("AULA_WORKER_NAME").unwrap_or(d.worker_name),
            concurrency: number("AULA_WORKER_CONCURRENCY", d.concurrency, 1..=1024)?,
            claim_batch: number("AULA_WORKER_CLAIM_BATCH", d.claim_batch, 1..=1000)?,
            // A lease must outlive the heartbeats that extend it (a third of it).
            lease: millis("AULA_TASK_LEASE_MS", d.lease, 1000..=DAY_MS)?,
            poll_interval: millis("AULA_WORKER_POLL_MS", d.poll_interval, 10..=3_600_000)?,
            rescue_interval: millis("AULA_WORKER_RESCUE_MS", d.rescue_interval, 10..=3_600_000)?,
            retry_base: millis("AULA_RETRY_BASE_MS", d.retry_base, 1..=DAY_MS)?,
            retry_max: millis("AULA_RETRY_MAX_MS", d.retry_max, 1..=7 * DAY_MS)?,
            drain_timeout: millis("AULA_WORKER_DRAIN_MS", d.drain_timeout, 0..=3_600_000)?,
            record_attempts: flag("AULA_TASK_HISTORY", d.record_attempts)?,
            mail_concurrency: match var("AULA_WORKER_MAIL_CONCURRENCY") {
                None => None,
                Some(_) => Some(number("AULA_WORKER_MAIL_CONCURRENCY", 1, 1..=1024)?),
            },
        };
        if config.retry_max < config.retry_base {
            return Err(SettingError {
                name: "AULA_RETRY_MAX_MS",
                value: config.retry_max.as_millis().to_string(),
                expected: format!(
                    "at least AULA_RETRY_BASE_MS ({})",
                    config.retry_base.as_millis()
                ),
            });
        }
        Ok(config)
    }
}

/// Where e-mails go and what they link to.
#[derive(Clone)]
pub struct MailConfig {
    /// `SMTP_URL`, e.g. `smtp://127.0.0.1:1025` or `smtps://user:pass@host`. When unset,
    /// e-mails are written as `.eml` files into `outbox_dir`. Never printed.
    pub smtp_url: Option<String>,
    /// `AULA_MAIL_OUTBOX` (default `./outbox`).
    pub outbox_dir: PathBuf,
    /// `AULA_MAIL_FROM` (default `Aula <no-reply@aula.localhost>`).
    pub from: String,
    /// `AULA_PUBLIC_BASE_URL` (default `http://localhost:8080`): links in e-mails.
    pub public_base_url: String,
    /// How long an e-mail task keeps trying to record a message the SMTP server has
    /// accepted before it gives up and lets the task run again, which sends it again
    /// (`AULA_MAIL_RECORD_PATIENCE_MS`, default 10 min).
    pub record_patience: Duration,
    /// How long an e-mail keeps waiting for an SMTP relay that cannot be reached
    /// (attempts that do not count, see `mail::Unreachable`), from its first such
    /// attempt, before it ends `dead` (`AULA_MAIL_UNREACHABLE_GIVE_UP_MINUTES`,
    /// default 24 h).
    pub unreachable_give_up: Duration,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<redacted>"))
            .field("outbox_dir", &self.outbox_dir)
            .field("from", &self.from)
            .field("public_base_url", &self.public_base_url)
            .field("record_patience", &self.record_patience)
            .field("unreachable_give_up", &self.unreachable_give_up)
            .finish()
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            outbox_dir: PathBuf::from("outbox"),
            from: "Aula <no-reply@aula.localhost>".into(),
            public_base_url: "http://localhost:8080".into(),
            record_patience: Duration::from_secs(600),
            unreachable_give_up: Duration::from_secs(24 * 3600),
        }
    }
}

impl MailConfig {
    /// Reads the settings (the defaults for those unset); a patience that is not a
    /// number of milliseconds (up to a day), or a give-up window that is not a number
    /// of minutes (1 to 30 days), is an error naming its variable.
    pub fn from_env() -> Result<Self, SettingError> {
        let d = Self::default();
        Ok(Self {
            smtp_url: std::env::var("SMTP_URL")
                .ok()
                .filter(|v| !v.trim().is_empty()),
            outbox_dir: std::env::var("AULA_MAIL_OUTBOX")
                .map(PathBuf::from)
                .unwrap_or(d.outbox_dir),
            from: std::env::var("AULA_MAIL_FROM").unwrap_or(d.from),
            public_base_url: std::env::var("AULA_PUBLIC_BASE_URL")
                .unwrap_or(d.public_base_url)
                .trim_end_matches('/')
                .to_owned(),
            record_patience: millis(
                "AULA_MAIL_RECORD_PATIENCE_MS",
                d.record_patience,
                0..=DAY_MS,
            )?,
            unreachable_give_up: Duration::from_secs(
                60 * number(
                    "AULA_MAIL_UNREACHABLE_GIVE_UP_MINUTES",
                    d.unreachable_give_up.as_secs() / 60,
                    1..=30 * 24 * 60,
                )?,
            ),
        })
    }
}
