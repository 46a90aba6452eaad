//! Connecting to the database: settings every connection of ours carries; and the
//! small pieces every crate's statements share (batch columns, list pages).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool};

/// Our session settings. A transaction left idle (a bug, a stalled client) would hold
/// back every log reader, which waits for all older transactions to end; the server
/// ends such a session after 60 s instead.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        ("idle_in_transaction_session_timeout", "60s"),
        ("lock_timeout", "30s"),
    ])
}

/// A pooled connection idle for less than this is handed out without a liveness check.
///
/// sqlx checks every connection it hands out with a round trip of its own (and every
/// connection given back, with another one): on the append path that doubled the round
/// trips of a command. A connection used a moment ago is alive unless the server died
/// in that moment, and then the statement fails as it would a moment later, with an
/// I/O error that [`is_unavailable`] classes as "not now". A connection that sat idle
/// longer (the case of a server restart or a dropped network) is still checked.
pub const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool for request handling and workers.
pub async fn pool(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(session_options(options))
        .await
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    aula_migrations::run(pool).await
}

/// Database errors that say "not now" rather than "never": no connection could be had
/// (pool timeout, closed pool, I/O, TLS), the server is shutting down, starting or
/// refusing connections (SQLSTATE classes 08 and 53, 57P01-57P03), the transaction
/// lost a serialization race or a deadlock (40001, 40P01), or a lock held elsewhere
/// (an operator's `LOCK TABLE`, a migration) outlasted our `lock_timeout` (55P03). A
/// retry can succeed. The one classification the API (`UNAVAILABLE`, 503) and the
/// processor (retry without using up the budget) share.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
                )
        }),
        _ => false,
    }
}

/// Whether the database server accepts connections, as last seen by a direct connect
/// (never through a pool: a pool whose connections are all busy is not an outage).
///
/// sqlx's pool retries a refused connect until its acquire timeout (10 s), so while
/// the server is down every request would wait that long before its `UNAVAILABLE`.
/// A request that has run for [`SUSPECT_AFTER`] calls [`Reachability::cut`]'s watch,
/// which asks for a probe (at most one at a time, one per [`PROBE_EVERY`]): a refused
/// connect, or a server that says it is starting or stopping, marks the database
/// unreachable, and every request waiting on it is answered at once; the probe then
/// tries again every [`PROBE_EVERY`] and clears the mark with its first successful
/// connect. Anything else (a connect that succeeds, is slow, or is refused for too
/// many connections) is not an outage and leaves requests queueing as before.
#[derive(Clone)]
pub struct Reachability {
    inner: std::sync::Arc<ReachabilityInner>,
}

struct ReachabilityInner {
    options: PgConnectOptions,
    /// `true` while the last probe found the server refusing connections.
    unreachable: tokio::sync::watch::Sender<bool>,
    /// A probe runs (one at a time).
    probing: std::sync::atomic::AtomicBool,
    /// When the last probe started (`None`: never).
    last_probe: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// How long a request runs before it asks whether the database is reachable.
pub const SUSPECT_AFTER: Duration = Duration::from_millis(500);
/// The pause between probes; also the longest an ended outage stays marked.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe waits for the server: a connect slower than this proves nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Reachability {
    /// Probes with `options` (the pool's connect options).
    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            inner: std::sync::Arc::new(ReachabilityInner {
                options: session_options(options),
                unreachable: tokio::sync::watch::Sender::new(false),
                probing: Default::default(),
                last_probe: Default::default(),
            }),
        }
    }

    /// Whether the last probe found the server refusing connections.
    pub fn is_unreachable(&self) -> bool {
        *self.inner.unreachable.borrow()
    }

    /// Resolves when the work started at `started` should be given up because the
    /// database is unreachable: never for work that finishes within
    /// [`SUSPECT_AFTER`], and never while the server accepts connections, however
    /// busy the pool is. Race it against the work.
    pub async fn cut(&self, started: tokio::time::Instant) {
        tokio::time::sleep_until(started + SUSPECT_AFTER).await;
        let mut changes = self.inner.unreachable.subscribe();
        loop {
            if *changes.borrow_and_update() {
                return;
            }
            self.suspect();
            let _ = tokio::time::timeout(PROBE_EVERY, changes.changed()).await;
        }
    }

    /// Starts a probe unless one runs or one started less than [`PROBE_EVERY`] ago.
    pub fn suspect(&self) {
        use std::sync::atomic::Ordering;
        {
            let now = tokio::time::Instant::now();
            let mut last = self
                .inner
                .last_probe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|last| now < last + PROBE_EVERY) {
                return;
            }
            if self.inner.probing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(now);
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                let refused = match tokio::time::timeout(PROBE_TIMEOUT, probe(&inner.options)).await
                {
                    Ok(Err(error)) => refuses_connections(&error).then_some(error),
                    Ok(Ok(())) | Err(_) => None,
                };
                let Some(error) = refused else {
                    if inner.unreachable.send_replace(false) {
                        tracing::info!("the database accepts connections again");
                    }
                    break;
                };
                if !inner.unreachable.send_replace(true) {
                    tracing::warn!(%error, "the database refuses connections: requests that need it are answered UNAVAILABLE at once until it is back");
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            inner.probing.store(false, Ordering::Release);
        });
    }
}

async fn probe(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let connection = sqlx::PgConnection::connect_with(options).await?;
    // It connected: whatever the goodbye does, the server accepts connections.
    let _ = connection.close().await;
    Ok(())
}

/// A connect error that says the server takes no connection now: nothing listens
/// (refused, no socket file), or the server is starting, stopping or recovering
/// (57P01-57P03). Not "too many connections" (53300): a crowd, not an outage.
fn refuses_connections(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// One array parameter of a batch statement (`unnest($1::uuid[], ...)`): `field` of
/// every row, in order. Batch writes bind each column of their rows this way.
pub fn column<'a, T, U>(rows: &'a [T], field: impl FnMut(&'a T) -> U) -> Vec<U> {
    rows.iter().map(field).collect()
}

/// Takes the two-key advisory lock `key` until the end of the transaction on `conn`,
/// unless another session holds it: whether it did. Upkeep that one process at a time
/// should run (per database) takes one and, without it, leaves the work to its holder.
pub async fn try_transaction_lock(
    conn: &mut sqlx::PgConnection,
    key: (i32, i32),
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
        .bind(key.0)
        .bind(key.1)
        .fetch_one(conn)
        .await
}

/// Page size of a list when the caller names none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page size of a list.
pub const MAX_PAGE_SIZE: i64 = 500;

/// The page size a list serves for the one asked: [`DEFAULT_PAGE_SIZE`] when none,
/// else within 1..=[`MAX_PAGE_SIZE`].
pub fn page_size(asked: Option<i64>) -> i64 {
    asked.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE)
}

/// Why a keyset-paginated list gave no page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The cursor names no row of this list: the list did not hand it out.
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl PageError {
    /// The error of a list's statement, which casts its cursor's key (if `with_cursor`)
    /// and nothing else it was given: PostgreSQL refusing a value there
    /// ([`is_data_exception`]) is a cursor the list did not hand out.
    pub fn of_statement(error: sqlx::Error, with_cursor: bool) -> Self {
        if with_cursor && is_data_exception(&error) {
            PageError::BadCursor
        } else {
            PageError::Database(error)
        }
    }
}

/// Whether `error` is PostgreSQL refusing a value (SQLSTATE class 22, data exception:
/// a text that does not cast to the type asked for). The keyset lists cast only their
/// cursor's key in SQL, so for them this means a cursor they did not hand out.
pub fn is_data_exception(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")))
}

/// A page of rows and the cursor of the next page (`None`: last page).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Page<T, C> {
    pub rows: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// The page of `limit` rows out of a query that fetched `limit + 1`: the extra row
    /// only says there is a next page, whose cursor is the last kept row's `key`.
    pub fn from_overfetch(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> C) -> Self {
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(key)
        } else {
            None
        };
        Page { rows, next }
    }
}
