//! The broker's settings, from the environment (documented in docs/configuration.md).

use std::time::Duration;

/// What the stream keeps (JetStream's retention policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Messages stay until a limit (age) removes them.
    Limits,
    /// Messages stay while a consumer has not acknowledged them.
    Interest,
    /// Each message is removed once one consumer acknowledged it.
    WorkQueue,
}

impl Retention {
    pub fn parse(text: &str) -> Option<Retention> {
        match text.trim().to_ascii_lowercase().as_str() {
            "limits" => Some(Retention::Limits),
            "interest" => Some(Retention::Interest),
            "workqueue" | "work_queue" => Some(Retention::WorkQueue),
            _ => None,
        }
    }
}

/// Settings of the `broker.nats` subscription and of the stream it creates.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `AULA_NATS_URL`: unset, no events are published.
    pub url: Option<String>,
    /// `AULA_NATS_STREAM` (default `AULA_EVENTS`).
    pub stream: String,
    /// `AULA_NATS_SUBJECT_PREFIX` (default `aula.events`): subjects are
    /// `<prefix>.<aggregate>.<event type>`, the stream takes `<prefix>.>`.
    pub subject_prefix: String,
    /// `AULA_NATS_RETENTION`: `limits` (default), `interest` or `workqueue`.
    pub retention: Retention,
    /// `AULA_NATS_MAX_AGE_HOURS` (default 0: kept until removed by other limits).
    pub max_age: Duration,
    /// `AULA_NATS_DUPLICATE_WINDOW_SECONDS` (default 900) for a stream we create.
    pub duplicate_window: Duration,
    /// `AULA_NATS_RETRY_HORIZON_SECONDS` (default 600): the longest time after its first
    /// publish that an event is published again without first looking it up in the
    /// stream. Must not exceed the stream's duplicate window.
    pub retry_horizon: Duration,
    /// `AULA_NATS_ACK_TIMEOUT_MS` (default 5000): how long an acknowledgement is awaited.
    pub ack_timeout: Duration,
    /// `AULA_NATS_BATCH` (default 2000): events read, published and checkpointed together
    /// (all of a batch's acknowledgements are in flight at once).
    pub batch_size: i64,
    /// `AULA_NATS_RETRY_MAX_MS` (default 5000): the longest pause between two attempts
    /// while the broker is unreachable.
    pub retry_max: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: None,
            stream: "AULA_EVENTS".into(),
            subject_prefix: "aula.events".into(),
            retention: Retention::Limits,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(900),
            retry_horizon: Duration::from_secs(600),
            ack_timeout: Duration::from_secs(5),
            batch_size: 2000,
            retry_max: Duration::from_secs(5),
        }
    }
}

impl BrokerConfig {
    /// The settings from `AULA_NATS_*`; unset or unparsable values take the defaults
    /// (an unknown retention is an error, so a typo does not create the wrong stream).
    pub fn from_env() -> Result<BrokerConfig, String> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn number(name: &str) -> Result<Option<u64>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name} must be a whole number, not {v:?}"))
                })
                .transpose()
        }
        let mut config = BrokerConfig {
            url: var("AULA_NATS_URL"),
            ..BrokerConfig::default()
        };
        if let Some(stream) = var("AULA_NATS_STREAM") {
            config.stream = stream;
        }
        if let Some(prefix) = var("AULA_NATS_SUBJECT_PREFIX") {
            config.subject_prefix = prefix.trim_end_matches('.').to_owned();
        }
        if let Some(retention) = var("AULA_NATS_RETENTION") {
            config.retention = Retention::parse(&retention).ok_or_else(|| {
                format!(
                    "AULA_NATS_RETENTION must be limits, interest or workqueue, not {retention:?}"
                )
            })?;
        }
        if let Some(hours) = number("AULA_NATS_MAX_AGE_HOURS")? {
            config.max_age = Duration::from_secs(hours * 3600);
        }
        if let Some(seconds) = number("AULA_NATS_DUPLICATE_WINDOW_SECONDS")? {
            config.duplicate_window = Duration::from_secs(seconds);
        }
        if let Some(seconds) = number("AULA_NATS_RETRY_HORIZON_SECONDS")? {
            config.retry_horizon = Duration::from_secs(seconds);
        }
        if let Some(ms) = number("AULA_NATS_ACK_TIMEOUT_MS")? {
            config.ack_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(batch) = number("AULA_NATS_BATCH")? {
            config.batch_size = i64::try_from(batch.clamp(1, 100_000)).unwrap_or(2000);
        }
        if let Some(ms) = number("AULA_NATS_RETRY_MAX_MS")? {
            config.retry_max = Duration::from_millis(ms.max(1));
        }
        config.validate()?;
        Ok(config)
    }

    /// Settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.duplicate_window < self.retry_horizon {
            return Err(format!(
                "AULA_NATS_DUPLICATE_WINDOW_SECONDS ({} s) is shorter than AULA_NATS_RETRY_HORIZON_SECONDS ({} s): a retry after the window would be stored twice",
                self.duplicate_window.as_secs(),
                self.retry_horizon.as_secs()
            ));
        }
        if self.stream.is_empty()
            || self
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(format!(
                "AULA_NATS_STREAM {:?} is not a valid stream name",
                self.stream
            ));
        }
        Ok(())
    }
}
