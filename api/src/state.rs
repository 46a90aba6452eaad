//! What every request shares: the pool, the command buses, configuration and the
//! injected clock, token sink and readiness probe.

use std::sync::Arc;

use aula_domain::application::Application;
use aula_domain::course::Course;
use aula_domain::exam_grade::ExamGrade;
use aula_domain::institution::Institution;
use aula_domain::student::Student;
use aula_domain::teacher::Teacher;
use aula_domain::user::{User, UserServices};
use aula_eventlog::health::LogHealth;
use aula_eventlog::CommandBus;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::clock::{Clock, SystemClock};
use crate::config::ApiConfig;
use crate::ratelimit::RateLimiter;
use crate::secrets::{DropTokens, TokenSink};

/// Whether the process's subscriptions (projections, processor) are running.
pub type ReadinessProbe = Arc<dyn Fn() -> bool + Send + Sync>;

pub(crate) struct Buses {
    pub user: CommandBus<User>,
    pub institution: CommandBus<Institution>,
    pub course: CommandBus<Course>,
    pub application: CommandBus<Application>,
    pub student: CommandBus<Student>,
    pub teacher: CommandBus<Teacher>,
    pub exam_grade: CommandBus<ExamGrade>,
}

impl Buses {
    fn new(pool: &PgPool, user_services: UserServices) -> Self {
        let upcasters = aula_domain::upcasters;
        Self {
            user: CommandBus::with_upcasters(pool.clone(), user_services, upcasters()),
            institution: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters()),
            course: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters()),
            // One short stream per applicant, rarely written twice: nothing worth caching.
            application: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters())
                .cache_capacity(0),
            student: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters()),
            teacher: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters()),
            exam_grade: CommandBus::with_upcasters(pool.clone(), Default::default(), upcasters()),
        }
    }
}

/// Shared state of the API. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) pool: PgPool,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tokens: Arc<dyn TokenSink>,
    pub(crate) readiness: ReadinessProbe,
    pub(crate) buses: Arc<Buses>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) account_writes: Arc<RateLimiter<uuid::Uuid>>,
    pub(crate) anonymous_reads: Arc<RateLimiter>,
    pub(crate) account_reads: Arc<RateLimiter<uuid::Uuid>>,
    /// Options for extra connections (projection rebuilds); `None`: the pool's own.
    pub(crate) connect: Option<PgConnectOptions>,
    /// Set when the process begins to stop: `/ready` answers 503 from then on, so a
    /// load balancer stops sending work while the listener still serves.
    pub(crate) draining: Arc<std::sync::atomic::AtomicBool>,
    /// What the log monitor saw last (`aula_eventlog::health`), when one runs.
    pub(crate) log_health: Option<tokio::sync::watch::Receiver<LogHealth>>,
    /// Where requests hash passwords, a bounded number at a time.
    pub(crate) hashing: Arc<crate::secrets::HashingLanes>,
    /// Whether the database accepts connections: requests stop waiting for it when it
    /// does not (`http::unless_unreachable`).
    pub(crate) reachability: aula_eventlog::db::Reachability,
    /// What subscriptions poll, one poll per question whatever the listeners.
    pub(crate) live: Arc<crate::graphql::shared_poll::LivePolls>,
    /// Signed-in WebSockets per account (`account_sockets`).
    pub(crate) account_sockets: Arc<crate::account_sockets::AccountSockets>,
}

impl AppState {
    /// State with the system clock, no token delivery, always-ready subscriptions and
    /// the configuration's user policy (`ApiConfig::user_services`).
    pub fn new(pool: PgPool, config: ApiConfig) -> Self {
        Self {
            buses: Arc::new(Buses::new(&pool, config.user_services.clone())),
            limiter: Arc::new(RateLimiter::new(config.rate_limit)),
            account_writes: Arc::new(RateLimiter::new(config.account_write_limit)),
            anonymous_reads: Arc::new(RateLimiter::new(config.anonymous_read_limit)),
            account_reads: Arc::new(RateLimiter::new(config.account_read_limit)),
            hashing: Arc::new(crate::secrets::HashingLanes::new(&config.password_lanes)),
            reachability: aula_eventlog::db::Reachability::new((*pool.connect_options()).clone()),
            live: Arc::new(crate::graphql::shared_poll::LivePolls::new(&pool, &config)),
            account_sockets: Arc::default(),
            pool,
            config: Arc::new(config),
            clock: Arc::new(SystemClock),
            tokens: Arc::new(DropTokens),
            readiness: Arc::new(|| true),
            connect: None,
            draining: Arc::default(),
            log_health: None,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where raw one-time tokens (sign-up confirmation, password reset) go when issued.
    pub fn with_token_sink(mut self, sink: Arc<dyn TokenSink>) -> Self {
        self.tokens = sink;
        self
    }

    /// The probe `GET /ready` asks whether the subscriptions are running.
    pub fn with_readiness(mut self, probe: ReadinessProbe) -> Self {
        self.readiness = probe;
        self
    }

    /// The flag that turns readiness off for a graceful stop (set it, wait the drain
    /// period, then stop the server).
    pub fn draining_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }

    /// The log monitor's state: `/ready` reports `degraded` while a transaction holds
    /// the log back past the monitor's threshold, `/metrics` exports it.
    pub fn with_log_health(mut self, health: tokio::sync::watch::Receiver<LogHealth>) -> Self {
        self.log_health = Some(health);
        self
    }

    /// The log monitor's latest state, if one runs.
    pub fn log_health(&self) -> Option<LogHealth> {
        self.log_health.as_ref().map(|h| h.borrow().clone())
    }

    /// Lockout thresholds and duration, trust window, reset-token lifetime, replacing
    /// `ApiConfig::user_services` (tests).
    pub fn with_user_services(mut self, services: UserServices) -> Self {
        self.buses = Arc::new(Buses::new(&self.pool, services));
        self
    }

    /// How background work (projection rebuilds) opens its own connections. Without
    /// it, the pool's connect options are used.
    pub fn with_connect_options(mut self, connect: PgConnectOptions) -> Self {
        self.connect = Some(connect);
        self
    }

    /// The options for extra connections: the configured ones, else the pool's.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect
            .clone()
            .unwrap_or_else(|| (*self.pool.connect_options()).clone())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }
}
