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
        }
    }
}

fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("{host}-{}", std::process::id())
}

fn env_ms(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
        }
    }

    pub fn from_env() -> Self {
        let d = Self::default();
        Self {
            worker_name: std::env::var("AULA_WORKER_NAME").unwrap_or(d.worker_name),
            concurrency: env_parse("AULA_WORKER_CONCURRENCY", d.concurrency).max(1),
            claim_batch: env_parse("AULA_WORKER_CLAIM_BATCH", d.claim_batch).max(1),
            lease: env_ms("AULA_TASK_LEASE_MS", d.lease),
            poll_interval: env_ms("AULA_WORKER_POLL_MS", d.poll_interval),
            rescue_interval: env_ms("AULA_WORKER_RESCUE_MS", d.rescue_interval),
            retry_base: env_ms("AULA_RETRY_BASE_MS", d.retry_base),
            retry_max: env_ms("AULA_RETRY_MAX_MS", d.retry_max),
            drain_timeout: env_ms("AULA_WORKER_DRAIN_MS", d.drain_timeout),
            record_attempts: env_parse("AULA_TASK_HISTORY", d.record_attempts),
        }
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
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<redacted>"))
            .field("outbox_dir", &self.outbox_dir)
            .field("from", &self.from)
            .field("public_base_url", &self.public_base_url)
            .field("record_patience", &self.record_patience)
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
        }
    }
}

impl MailConfig {
    pub fn from_env() -> Self {
        let d = Self::default();
        Self {
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
            record_patience: env_ms("AULA_MAIL_RECORD_PATIENCE_MS", d.record_patience),
        }
    }
}
