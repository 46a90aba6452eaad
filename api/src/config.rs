//! The API's configuration: every knob the binary may set, with production defaults.

use std::fmt;
use std::time::Duration;

use aula_domain::user::UserServices;

mod logins;

pub use logins::{check_login_policy, login_policy_from, login_policy_from_env};

/// A secret that never prints (not in `Debug`, not in logs).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A token bucket: per client address or per account, as the setting using it says.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    /// Requests a client may make at once before it is limited.
    pub burst: u32,
    /// Requests per minute refilled into the bucket.
    pub per_minute: u32,
}

/// Cost of the Argon2id password hash. Production uses the argon2 crate's defaults
/// (19 MiB, 2 passes); tests may lower it.
#[derive(Debug, Clone, Copy)]
pub struct PasswordHashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// How many password hashes run at once, and how requests wait for one (see
/// `secrets::HashingLanes`): beyond `max_waiting` waiting requests, or after `max_wait`,
/// a request that needs a hash is answered `UNAVAILABLE` (503, `Retry-After`).
#[derive(Debug, Clone, Copy)]
pub struct PasswordLanes {
    /// Hashes at once; `None`: the machine's parallelism.
    pub lanes: Option<usize>,
    /// Requests waiting for a lane at most; more are refused at once.
    pub max_waiting: usize,
    /// Longest wait for a lane.
    pub max_wait: Duration,
}

impl Default for PasswordLanes {
    fn default() -> Self {
        Self {
            lanes: None,
            max_waiting: 128,
            max_wait: Duration::from_secs(5),
        }
    }
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

/// Limits of the HTTP server itself, before any request reaches a handler.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection waits for its next request before it is closed.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body once its headers arrived.
    pub body_timeout: Duration,
    /// A write to a client that makes no progress this long ends the connection (a
    /// client that never reads its answer).
    pub write_timeout: Duration,
    /// On stop, how long open connections may take to finish before they are dropped.
    pub stop_deadline: Duration,
    /// Open connections in all (WebSockets included); more are answered 503 and
    /// closed. Lowered at start-up to what the process's open-file limit allows.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: its /64). Trusted proxies
    /// are held to the overall cap only.
    pub max_connections_per_client: usize,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are believed: only
    /// when the TCP peer is in one of these networks is the client taken from them
    /// (the rightmost address that is not itself a trusted proxy). Empty: the TCP peer
    /// is the client, whatever the headers say.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            stop_deadline: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_client: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Key of the HMAC-SHA256 that signs access tokens. At least 32 bytes.
    pub token_secret: Secret,
    /// How long an access token from `login` stays valid.
    pub token_ttl: Duration,
    /// How long a sign-up confirmation token stays valid.
    pub signup_token_ttl: Duration,
    /// Public mutations (sign-up, login, applications...), per client address.
    pub rate_limit: RateLimitConfig,
    /// Mutations of signed-in callers, per account.
    pub account_write_limit: RateLimitConfig,
    /// Queries and subscriptions started by anonymous callers, per client address.
    pub anonymous_read_limit: RateLimitConfig,
    /// Queries and subscriptions started by signed-in callers, per account, whatever
    /// address they come from (over HTTP and `/graphql/ws` alike).
    pub account_read_limit: RateLimitConfig,
    /// Upper bound of a read-your-writes wait.
    pub read_your_writes_timeout: Duration,
    /// Names of the subscriptions (rows of `subscription_checkpoints`) a read-your-writes
    /// wait waits for. Empty: nothing to wait for.
    pub projections: Vec<String>,
    /// Whole-request timeout of `POST /graphql`.
    pub request_timeout: Duration,
    /// Largest accepted request body, and largest WebSocket message.
    pub body_limit_bytes: usize,
    pub server: ServerLimits,
    pub max_query_depth: usize,
    pub max_query_complexity: usize,
    /// Bounds of the raw document, checked before it is parsed (nesting of values and
    /// selections, tokens, aliases, directives) and right after (selections with
    /// fragments expanded); the same over HTTP and WebSocket.
    pub document_limits: crate::graphql::limits::DocumentLimits,
    /// Largest page a list field returns (`first` above it is a VALIDATION error).
    pub max_page_size: usize,
    /// `requestPasswordReset` never answers sooner than this, whether or not the
    /// address has an account, so timing does not tell which addresses do.
    pub reset_request_floor: Duration,
    /// Longest accepted password (Argon2 work grows with it).
    pub max_password_chars: usize,
    pub password_hashing: PasswordHashing,
    /// How many of those hashes run at once, and how long requests wait for one.
    pub password_lanes: PasswordLanes,
    /// How often the `logPosition` subscription polls the log.
    pub subscription_poll_interval: Duration,
    /// How often a subscription over a WebSocket checks that its account was not
    /// deactivated meanwhile (it also ends when its token expires).
    pub socket_recheck_interval: Duration,
    /// How often the server pings a `/graphql/ws` socket (a protocol ping once
    /// acknowledged, and a WebSocket ping frame), so quiet sockets stay open through
    /// proxies and dead ones are found (see `keepalive.rs`).
    pub socket_ping_interval: Duration,
    /// A socket from which nothing arrived for this long (no message, no pong) is
    /// closed with `3008 timeout`. Longer than [`Self::socket_ping_interval`].
    pub socket_idle_timeout: Duration,
    /// Bytes of messages that may wait for a `/graphql/ws` client behind the one being
    /// written (which may be of any size); past it the socket is dropped, so a
    /// client that asks and never reads holds neither memory nor database connections.
    pub socket_unsent_limit_bytes: usize,
    /// A `/graphql/ws` socket that sent no `connection_init` within this is closed
    /// with `4408 Connection initialisation timeout` (graphql-transport-ws).
    pub socket_init_timeout: Duration,
    /// Signed-in `/graphql/ws` sockets one account may have open at once; one more
    /// `connection_init` is refused (`FORBIDDEN`, `TOO_MANY_SOCKETS`).
    pub max_sockets_per_account: usize,
    /// The local time zone of `processingSummary.ratePerHourToday` ("today" starts at
    /// local midnight), in minutes east of UTC. Default 0 (UTC).
    pub processing_utc_offset_minutes: i32,
    /// What webhook endpoints may be registered (HTTPS, SSRF, limits): the same
    /// settings the delivering workers use (`AULA_WEBHOOK_*`, see docs/configuration.md).
    /// Default: the strict defaults.
    pub webhooks: aula_processor::webhooks::WebhookConfig,
    /// Login thresholds, lockout duration and trust window, reset-token lifetime
    /// (`AULA_LOGIN_*`, see [`login_policy_from_env`]). Default: the domain's.
    pub user_services: UserServices,
}

/// Largest UTC offset of a real time zone (UTC+14:00).
const MAX_UTC_OFFSET_MINUTES: i32 = 14 * 60;

/// A configuration the API refuses to run with.
#[derive(Debug, thiserror::Error)]
#[error("invalid API configuration: {0}")]
pub struct ConfigError(pub String);

impl ApiConfig {
    /// Checks what the types cannot: a long enough secret, non-zero limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token_secret.expose().len() < 32 {
            return Err(ConfigError(
                "the token secret needs at least 32 bytes".into(),
            ));
        }
        if self.token_ttl.is_zero() || self.request_timeout.is_zero() {
            return Err(ConfigError(
                "token ttl and request timeout must be positive".into(),
            ));
        }
        if self.body_limit_bytes == 0
            || self.max_page_size == 0
            || self.rate_limit.burst == 0
            || self.account_write_limit.burst == 0
            || self.anonymous_read_limit.burst == 0
            || self.account_read_limit.burst == 0
        {
            return Err(ConfigError(
                "body limit, page size and rate-limit bursts must be positive".into(),
            ));
        }
        if self.socket_ping_interval.is_zero()
            || self.socket_idle_timeout <= self.socket_ping_interval
        {
            return Err(ConfigError(
                "the socket ping interval must be positive and shorter than the idle timeout"
                    .into(),
            ));
        }
        check_login_policy(&self.user_services)?;
        if self.processing_utc_offset_minutes.abs() > MAX_UTC_OFFSET_MINUTES {
            return Err(ConfigError(format!(
                "the processing UTC offset must be within ±{MAX_UTC_OFFSET_MINUTES} minutes"
            )));
        }
        Ok(())
    }

    /// Production defaults around the one value that has none.
    pub fn new(token_secret: Secret) -> Self {
        Self {
            token_secret,
            token_ttl: Duration::from_secs(15 * 60),
            signup_token_ttl: Duration::from_secs(24 * 60 * 60),
            rate_limit: RateLimitConfig {
                burst: 10,
                per_minute: 30,
            },
            account_write_limit: RateLimitConfig {
                burst: 60,
                per_minute: 600,
            },
            anonymous_read_limit: RateLimitConfig {
                burst: 120,
                per_minute: 1200,
            },
            // A dashboard tab asks about 3 a second at most (header, list, drawer);
            // this leaves room for several tabs and scripts of one account.
            account_read_limit: RateLimitConfig {
                burst: 300,
                per_minute: 3000,
            },
            read_your_writes_timeout: Duration::from_secs(5),
            projections: Vec::new(),
            webhooks: aula_processor::webhooks::WebhookConfig::default(),
            request_timeout: Duration::from_secs(30),
            body_limit_bytes: 64 * 1024,
            server: ServerLimits::default(),
            // The standard introspection query (9 `ofType` levels under an argument's
            // type) is 14 deep; selections and complexity stay bounded apart.
            max_query_depth: 16,
            max_query_complexity: 500,
            document_limits: Default::default(),
            max_page_size: 100,
            max_password_chars: 256,
            reset_request_floor: Duration::from_millis(150),
            password_hashing: PasswordHashing::default(),
            password_lanes: PasswordLanes::default(),
            subscription_poll_interval: Duration::from_millis(500),
            socket_recheck_interval: Duration::from_secs(30),
            socket_ping_interval: Duration::from_secs(15),
            socket_idle_timeout: Duration::from_secs(60),
            socket_unsent_limit_bytes: 1024 * 1024,
            socket_init_timeout: Duration::from_secs(10),
            max_sockets_per_account: 32,
            processing_utc_offset_minutes: 0,
            user_services: UserServices::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_never_prints() {
        let config = ApiConfig::new(Secret::new(b"super secret value".to_vec()));
        let printed = format!("{config:?}");
        assert!(!printed.contains("super secret value"));
        assert!(printed.contains("Secret(***)"));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ApiConfig::new(Secret::new(b"short".to_vec()))
            .validate()
            .is_err());
        assert!(ApiConfig::new(Secret::new([7u8; 32].to_vec()))
            .validate()
            .is_ok());
    }

    #[test]
    fn sockets_are_pinged_more_often_than_they_time_out() {
        let mut config = ApiConfig::new(Secret::new([7u8; 32].to_vec()));
        assert!(config.socket_ping_interval < config.socket_idle_timeout);
        config.socket_ping_interval = config.socket_idle_timeout;
        assert!(config.validate().is_err());
        config.socket_ping_interval = Duration::ZERO;
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_processing_offset_must_be_a_real_zone() {
        let mut config = ApiConfig::new(Secret::new([7u8; 32].to_vec()));
        assert_eq!(config.processing_utc_offset_minutes, 0);
        config.processing_utc_offset_minutes = -3 * 60;
        assert!(config.validate().is_ok());
        config.processing_utc_offset_minutes = 15 * 60;
        assert!(config.validate().is_err());
    }
}
