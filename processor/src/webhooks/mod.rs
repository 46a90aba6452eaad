//! Webhooks (issue #21): events delivered to other systems' endpoints, signed to the
//! Standard Webhooks spec, retried, recorded and replayable.
//!
//! - [`endpoints`]: registering, changing, rotating and deleting endpoints; their
//!   secrets ([`signing::WebhookSecret`]) and health.
//! - [`fanout`]: in the reactions' batch transaction, one message per (event, endpoint)
//!   with a stable id and the event's public form as body, and its first delivery task.
//! - [`deliver`]: the `webhook.deliver` task: one attempt, recorded; the next attempt is a
//!   new task on the webhook schedule (not the queue's backoff), so the queue itself is
//!   used as it is.
//! - [`target`]: HTTPS and SSRF checks, at registration and at every delivery.
//! - [`http`]: the request itself (no redirects, one deadline, bounded excerpt).
//! - [`recover`]: "recover since T" jobs; resending one message.
//! - [`signing`]: `whsec_` secrets and `v1` signatures, `whsk_`/`whpk_` keys and `v1a`
//!   signatures.
//! - [`audit`]: every endpoint operation recorded as an event, for the audit log.
//! - `successes`, `loads`: successful attempts recorded, and deliveries read, in
//!   batches: one statement for all the deliveries that finished (started) meanwhile.
//!
//! **Invariant:** a message's id and body never change: every attempt, every copy after
//! a crash and every resend carries the same `webhook-id` and the same bytes.

pub mod audit;
mod batcher;
pub mod deliver;
pub mod endpoints;
pub mod fanout;
pub mod http;
mod loads;
pub mod recover;
pub mod signing;
mod successes;
pub mod target;

use std::time::Duration;

pub use deliver::WebhookDelivery;
pub use endpoints::{Endpoint, EndpointChange, NewEndpoint, WebhookError};
pub use signing::{SignatureScheme, Signer, WebhookSecret, WebhookSigningKey};

/// The webhook settings (environment variables in brackets; see docs/configuration.md).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Hosts that may be reached over plain `http` (`AULA_WEBHOOK_INSECURE_HOSTS`,
    /// comma-separated; default none).
    pub insecure_hosts: Vec<String>,
    /// Internal networks webhooks may reach anyway (`AULA_WEBHOOK_ALLOWED_NETWORKS`,
    /// comma-separated CIDRs, e.g. `127.0.0.0/8,::1/128`; default none).
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Deadline of one attempt, connection included (`AULA_WEBHOOK_TIMEOUT_MS`, 15 s).
    pub timeout: Duration,
    /// The delays before each retry (`AULA_WEBHOOK_RETRY_SCHEDULE`, comma-separated
    /// seconds; default 5, 300, 1800, 7200, 18000, 36000, 36000: with the immediate
    /// first attempt, 8 attempts). Each gets up to ±10 % jitter.
    pub retry_schedule: Vec<Duration>,
    /// An endpoint failing without a success for this long is disabled and its owner
    /// e-mailed (`AULA_WEBHOOK_DISABLE_AFTER_HOURS`, default 120 = 5 days).
    pub disable_after: Duration,
    /// Endpoints per institution, and platform-wide (`AULA_WEBHOOK_MAX_ENDPOINTS`, 50).
    pub max_endpoints: i64,
    /// Longest rotation window (`AULA_WEBHOOK_MAX_ROTATION_HOURS`, default 168 = 7 days).
    pub max_rotation_window: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            allowed_networks: Vec::new(),
            timeout: Duration::from_secs(15),
            retry_schedule: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_endpoints: 50,
            max_rotation_window: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

fn list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl WebhookConfig {
    /// Reads the settings; an unparsable value is an error naming its variable.
    pub fn from_env() -> Result<Self, String> {
        let d = Self::default();
        let allowed_networks = list("AULA_WEBHOOK_ALLOWED_NETWORKS")
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("AULA_WEBHOOK_ALLOWED_NETWORKS: {n:?} is not a network"))
            })
            .collect::<Result<_, _>>()?;
        let retry_schedule = match std::env::var("AULA_WEBHOOK_RETRY_SCHEDULE") {
            Ok(text) if !text.trim().is_empty() => text
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| format!("AULA_WEBHOOK_RETRY_SCHEDULE: {s:?} is not seconds"))
                })
                .collect::<Result<_, _>>()?,
            _ => d.retry_schedule,
        };
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: {v:?} is not a number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Self {
            insecure_hosts: list("AULA_WEBHOOK_INSECURE_HOSTS"),
            allowed_networks,
            // A deadline of 0 failed every attempt at once.
            timeout: crate::config::millis("AULA_WEBHOOK_TIMEOUT_MS", d.timeout, 100..=300_000)
                .map_err(|e| e.to_string())?,
            retry_schedule,
            disable_after: Duration::from_secs(
                number("AULA_WEBHOOK_DISABLE_AFTER_HOURS", 120)? * 3600,
            ),
            max_endpoints: number("AULA_WEBHOOK_MAX_ENDPOINTS", 50)? as i64,
            max_rotation_window: Duration::from_secs(
                number("AULA_WEBHOOK_MAX_ROTATION_HOURS", 168)? * 3600,
            ),
        })
    }

    /// The delay before the attempt after `attempt` (1-based), with ±10 % jitter, or
    /// `None` when the schedule is exhausted.
    pub fn retry_delay(&self, attempt: i32) -> Option<Duration> {
        use rand::Rng;
        let base = *self
            .retry_schedule
            .get(usize::try_from(attempt - 1).ok()?)?;
        let jitter = rand::thread_rng().gen_range(0.9..=1.1);
        Some(base.mul_f64(jitter))
    }
}

/// The `webhook-id` of a message: `msg_` and the message's uuid in hex.
pub fn message_header_id(id: uuid::Uuid) -> String {
    format!("msg_{}", id.simple())
}

/// Parses a `webhook-id` (or a bare uuid) back into the message's uuid.
pub fn parse_message_id(text: &str) -> Option<uuid::Uuid> {
    text.strip_prefix("msg_").unwrap_or(text).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_standard_one() {
        let config = WebhookConfig::default();
        let expected = [5u64, 300, 1800, 7200, 18000, 36000, 36000];
        for (i, seconds) in expected.iter().enumerate() {
            let delay = config.retry_delay(i as i32 + 1).unwrap().as_secs_f64();
            let base = *seconds as f64;
            assert!(delay >= base * 0.9 - 1e-6 && delay <= base * 1.1 + 1e-6);
        }
        assert_eq!(config.retry_delay(8), None, "8 attempts in all");
    }

    #[test]
    fn message_ids_round_trip() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(parse_message_id(&message_header_id(id)), Some(id));
    }
}
