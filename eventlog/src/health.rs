//! Is the log flowing? Readers only see rows of transactions older than every running
//! one (see [`crate::log`]), so one transaction left open anywhere in the cluster, by
//! any client, stalls every projection and the processor until it ends. This module
//! makes that visible: which transaction holds the log back and for how long, every
//! subscription's lag, and a monitor that warns (naming the blocking backend) and
//! reports a degraded state past a threshold.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// The oldest transaction that holds back the log readers.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocker {
    /// The backend's process id (`None` for a prepared transaction, which has none).
    pub pid: Option<i32>,
    /// `application_name` of the backend, or `prepared transaction <gid>`.
    pub application_name: String,
    pub database: Option<String>,
    /// `pg_stat_activity.state` (`idle in transaction`, `active`, ...).
    pub state: Option<String>,
    /// Seconds since the transaction began.
    pub age_seconds: f64,
}

/// A transaction holds back the log readers when it has a transaction id (it wrote, or
/// locked rows) and is still open: `pg_snapshot_xmin` cannot pass it. Its age is
/// counted from its start (`xact_start`), an upper bound of when it took its id.
/// Prepared (two-phase) transactions count too. Our own backend is left out.
///
/// Reading other roles' sessions needs `pg_read_all_stats` (or a superuser): without
/// it PostgreSQL hides their `backend_xid`, and they are not seen here.
const BLOCKER_SQL: &str = "
SELECT pid, application_name, database, state, age_seconds FROM (
    SELECT pid, COALESCE(NULLIF(application_name, ''), '(none)') AS application_name,
           datname::text AS database, state,
           extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age_seconds
    FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
    UNION ALL
    SELECT NULL, 'prepared transaction ' || gid, database::text, 'prepared',
           extract(epoch FROM clock_timestamp() - prepared)::float8
    FROM pg_prepared_xacts
) t
ORDER BY age_seconds DESC
LIMIT 1";

/// `(pid, application_name, database, state, age_seconds)`.
type BlockerRow = (Option<i32>, String, Option<String>, Option<String>, f64);

/// The oldest open transaction holding back the log, if any.
pub async fn oldest_blocker(pool: &PgPool) -> Result<Option<Blocker>, sqlx::Error> {
    let row: Option<BlockerRow> = sqlx::query_as(BLOCKER_SQL).fetch_optional(pool).await?;
    Ok(row.map(
        |(pid, application_name, database, state, age_seconds)| Blocker {
            pid,
            application_name,
            database,
            state,
            age_seconds: age_seconds.max(0.0),
        },
    ))
}

/// How far one subscription is behind the log.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionLag {
    pub name: String,
    /// `global_position` of the last event it handled (0: none yet).
    pub position: i64,
    /// Committed events after its checkpoint (readable or still held back).
    pub lag_events: i64,
    /// How long the oldest of those has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
}

/// SQL: the events `e` a subscription has still to read, those after its checkpoint row
/// `c` (of `subscription_checkpoints`) in commit order; with no row, the whole log. A
/// range of the `(tx_id, global_position)` index, so what it reads is the lag.
pub const BEHIND_CHECKPOINT: &str =
    "(e.tx_id, e.global_position) > (COALESCE(c.tx_id, '0'::xid8), COALESCE(c.global_position, 0))";

/// The largest lag counted event by event; a larger one is reported as this.
pub const MAX_COUNTED_LAG: i64 = 100_000;

/// Every subscription that has ever run (projections, `processor.reactions`, ...).
/// The counts walk the `(tx_id, global_position)` index from each checkpoint, and stop
/// at [`MAX_COUNTED_LAG`]: `/metrics` is scraped often (and by anyone who can reach
/// it), so a scrape must cost the same after an outage left a large backlog.
pub async fn subscription_lags(pool: &PgPool) -> Result<Vec<SubscriptionLag>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, Option<f64>)> = sqlx::query_as(&format!(
        "SELECT c.name, COALESCE(c.global_position, 0),
                (SELECT count(*) FROM (SELECT 1 FROM events e
                  WHERE {BEHIND_CHECKPOINT}
                  LIMIT $1) behind),
                (SELECT extract(epoch FROM clock_timestamp() - e.recorded_at)::float8 FROM events e
                  WHERE {BEHIND_CHECKPOINT}
                  ORDER BY e.tx_id, e.global_position LIMIT 1)
         FROM subscription_checkpoints c
         ORDER BY c.name",
    ))
    .bind(MAX_COUNTED_LAG)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, position, lag_events, oldest)| SubscriptionLag {
            name,
            position,
            lag_events,
            lag_seconds: if lag_events == 0 {
                0.0
            } else {
                oldest.unwrap_or(0.0).max(0.0)
            },
        })
        .collect())
}

/// Settings of the [`spawn_monitor`] loop.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// A transaction holding the log back longer than this makes the state degraded
    /// and is logged as a warning (`AULA_LOG_STALL_THRESHOLD_SECONDS`, default 30 s).
    pub threshold: Duration,
    /// How often to look (`AULA_LOG_MONITOR_INTERVAL_MS`, default 5 s).
    pub interval: Duration,
    /// How often the warning repeats while the same transaction still blocks.
    pub repeat_warning: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            threshold: Duration::from_secs(30),
            interval: Duration::from_secs(5),
            repeat_warning: Duration::from_secs(60),
        }
    }
}

impl MonitorOptions {
    pub fn from_env() -> Self {
        let d = Self::default();
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        Self {
            threshold: env("AULA_LOG_STALL_THRESHOLD_SECONDS")
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(d.threshold),
            interval: env("AULA_LOG_MONITOR_INTERVAL_MS")
                .filter(|ms| *ms >= 10.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                .unwrap_or(d.interval),
            repeat_warning: d.repeat_warning,
        }
    }
}

/// What the monitor saw last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogHealth {
    /// The oldest transaction holding the log back (any age), when it could be read.
    pub blocker: Option<Blocker>,
    /// True while `blocker` is older than the threshold: the read models and the
    /// processor are stalled.
    pub degraded: bool,
}

/// Watches the log in the background until `shutdown`; the receiver always holds the
/// latest [`LogHealth`] (cheap to read: `/ready` reads it without a query).
pub fn spawn_monitor(
    pool: PgPool,
    options: MonitorOptions,
    mut shutdown: Shutdown,
) -> watch::Receiver<LogHealth> {
    let (tx, rx) = watch::channel(LogHealth::default());
    tokio::spawn(async move {
        // (pid, name) of the blocker last warned about, and when.
        let mut warned: Option<((Option<i32>, String), tokio::time::Instant)> = None;
        loop {
            match oldest_blocker(&pool).await {
                Ok(blocker) => {
                    let degraded = blocker
                        .as_ref()
                        .is_some_and(|b| b.age_seconds >= options.threshold.as_secs_f64());
                    match (&blocker, degraded) {
                        (Some(b), true) => {
                            let key = (b.pid, b.application_name.clone());
                            let due = match &warned {
                                Some((last, at)) => {
                                    *last != key || at.elapsed() >= options.repeat_warning
                                }
                                None => true,
                            };
                            if due {
                                tracing::warn!(
                                    pid = b.pid,
                                    application_name = %b.application_name,
                                    database = b.database.as_deref().unwrap_or("-"),
                                    state = b.state.as_deref().unwrap_or("-"),
                                    age_seconds = b.age_seconds.round(),
                                    threshold_seconds = options.threshold.as_secs_f64(),
                                    "an open transaction is holding back the event log: every projection and the processor wait until it ends (end it, e.g. SELECT pg_terminate_backend(pid))"
                                );
                                warned = Some((key, tokio::time::Instant::now()));
                            }
                        }
                        _ => {
                            if warned.take().is_some() {
                                tracing::info!("the event log is no longer held back");
                            }
                        }
                    }
                    tx.send_replace(LogHealth { blocker, degraded });
                }
                Err(error) => {
                    // The database itself is the problem; /ready says so already.
                    tracing::debug!(%error, "log monitor: reading pg_stat_activity failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(options.interval) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
    rx
}
