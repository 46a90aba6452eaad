//! Rebuilding a read model from history while the live one keeps serving.
//!
//! 1. Copies of the projection's tables are created empty in a schema of their own,
//!    `rebuild_<name>` (`CREATE TABLE ... (LIKE live INCLUDING ALL)`, so the copies have
//!    every column, default and index the migrations declare).
//! 2. A fresh consumer fills them from position zero on a connection whose
//!    `search_path` puts that schema first: the handlers' SQL is the live one, unchanged.
//!    Most projections write this bulk load by `COPY` instead of their handlers'
//!    upserts, each the rows its handler would write (`BulkLoad`).
//!    Their secondary indexes are dropped for this bulk load. Progress is written to
//!    `projection_rebuilds` after every batch. Then the columns other components own
//!    ([`crate::admin_events::PRESERVED_COLUMNS`]) are carried over from the live rows
//!    in bulk, and the secondary indexes of every projection are built by a few
//!    connections from one queue.
//! 3. One transaction swaps them in: it locks the subscription's checkpoint row (so the
//!    live subscription is between batches and stays there), catches up the last few
//!    events, carries over again what the other components changed meanwhile, moves the
//!    live tables out and the rebuilt ones in (`ALTER TABLE ... SET SCHEMA`), and sets
//!    the checkpoint to the rebuilt position.
//! 4. The live subscription's next batch finds the checkpoint moved (its compare-and-set
//!    fence), reloads it and continues from there on the new tables.
//!
//! **Invariant:** readers never see a half-built table: the swap is one transaction,
//! and until it commits every query reads the live tables.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use aula_eventlog::log::{LogPosition, RecordedEvent};
use aula_eventlog::subscription::error_chain;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

use crate::admin_events;

mod carry;
mod shadow;

use carry::carry_over;
use shadow::{DeferredIndex, Target};

/// Events read and handled per transaction while rebuilding.
pub const REBUILD_BATCH: i64 = 10_000;

/// Session settings of a rebuild's connections. The shadow tables are worthless until
/// the swap commits, so their loading transactions need not wait for the WAL flush
/// (`synchronous_commit = off`; a crash loses the rebuild, never live data: the swap
/// itself commits synchronously). Index builds get more memory, to sort in memory.
const REBUILD_SETTINGS: [(&str, &str); 2] = [
    ("synchronous_commit", "off"),
    ("maintenance_work_mem", "256MB"),
];

/// Batches read ahead of the slowest projection of a rebuild.
const QUEUED_BATCHES: usize = 2;

/// Secondary indexes of the shadow tables built at the same time (one connection each).
const INDEX_BUILDERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the projection failed on the event at position {global_position}: {message}")]
    Consumer {
        global_position: i64,
        message: String,
    },
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildReport {
    pub name: String,
    pub events: i64,
    pub position: i64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Of `seconds`, the time spent reading the log and the time spent in the handlers.
    pub read_seconds: f64,
    pub handle_seconds: f64,
    /// Wall time of the phases of the whole run: loading the shadow tables from the
    /// log, then building the secondary indexes (all projections' together), and, within
    /// that phase, beside the first builds, carrying over the processor's columns.
    pub load_seconds: f64,
    pub carry_seconds: f64,
    pub index_seconds: f64,
}

/// The latest rebuild of a projection, from `projection_rebuilds`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct RebuildProgress {
    pub name: String,
    /// `running`, `swapping`, `done` or `failed`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub position: i64,
    pub events_done: i64,
    pub events_per_second: f64,
    /// Events in the log after `position` (an estimate while running; 0 when done).
    pub remaining: i64,
    pub error: Option<String>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Rebuilds the projection `name` (one of [`crate::NAMES`]) and swaps it in. Runs on
/// its own connections, made with `connect`; `pool` only records failures.
pub async fn rebuild(
    pool: &PgPool,
    connect: PgConnectOptions,
    name: &str,
) -> Result<RebuildReport, RebuildError> {
    let mut reports = rebuild_many(pool, connect, &[name]).await?;
    reports
        .pop()
        .ok_or_else(|| RebuildError::UnknownProjection(name.into()))
}

/// Rebuilds several projections at once: the log is read once and each batch is
/// handed to every projection, each on its own connection (so the database works on
/// them in parallel) and at its own pace, while the next batches are being read. Each one is swapped in on its
/// own as soon as the log is exhausted. If any fails, none is swapped in.
pub async fn rebuild_many(
    pool: &PgPool,
    connect: PgConnectOptions,
    names: &[&str],
) -> Result<Vec<RebuildReport>, RebuildError> {
    let connect = aula_eventlog::db::session_options(connect).options(REBUILD_SETTINGS);
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let tables =
            crate::tables(name).ok_or_else(|| RebuildError::UnknownProjection(name.to_string()))?;
        let consumer = crate::consumer(name)
            .ok_or_else(|| RebuildError::UnknownProjection(name.to_string()))?;
        let mut conn = PgConnection::connect_with(
            &connect
                .clone()
                .application_name(&format!("aula rebuild {name}")),
        )
        .await?;
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('aula.rebuild/' || $1, 0))",
        )
        .bind(*name)
        .fetch_one(&mut conn)
        .await?;
        if !locked {
            return Err(RebuildError::AlreadyRunning(name.to_string()));
        }
        targets.push(Target {
            name: name.to_string(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            shadow: format!("rebuild_{name}"),
            live: String::new(),
            conn,
            consumer,
            bulk: BulkLoad::of(name),
            position: LogPosition::START,
            done: 0,
            last_recorded_at: None,
            handle_seconds: 0.0,
            carried_since: 0,
            deferred_indexes: Vec::new(),
            deferred_options: Vec::new(),
        });
    }
    let reader =
        PgConnection::connect_with(&connect.clone().application_name("aula rebuild reader"))
            .await?;
    let result = run(reader, &mut targets, &connect).await;
    if let Err(error) = &result {
        tracing::error!(projections = ?names, %error, "rebuild failed");
        let shadows: Vec<(String, String)> = targets
            .iter()
            .map(|t| (t.name.clone(), t.shadow.clone()))
            .collect();
        for (name, shadow) in shadows {
            let _ = sqlx::query(
                "UPDATE projection_rebuilds SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
                 WHERE name = $1 AND state <> 'done'",
            )
            .bind(&name)
            .bind(error.to_string())
            .execute(pool)
            .await;
            // The shadow tables are worthless now; the connection may be broken: use the pool.
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&shadow));
            let _ = pool.execute(drop.as_str()).await;
        }
    }
    for target in targets {
        let _ = target.conn.close().await;
    }
    result
}

async fn run(
    mut reader: PgConnection,
    targets: &mut Vec<Target>,
    connect: &PgConnectOptions,
) -> Result<Vec<RebuildReport>, RebuildError> {
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut reader)
        .await?;
    for target in targets.iter_mut() {
        target.prepare(total).await?;
    }
    // The log is read once; each batch goes to every projection through a queue of its
    // own, so each works at its own pace (a batch waits for no other projection's
    // handling of it) while the reader keeps up to QUEUED_BATCHES ahead of the slowest.
    // The reader and every projection are tasks of their own: the client's share of the
    // load (decoding the log, the projections' logic, encoding their rows) then runs on
    // all the runtime's threads, not on the one thread of the caller's future, which
    // the whole load waited on (issue #20).
    let (senders, receivers): (Vec<_>, Vec<_>) = targets
        .iter()
        .map(|_| tokio::sync::mpsc::channel::<Arc<Vec<RecordedEvent>>>(QUEUED_BATCHES))
        .unzip();
    let reading = tokio::spawn(async move {
        let read = read_log(&mut reader, senders).await;
        // Closed whatever happened, as `read_batch_copy` requires after a failure.
        let _ = reader.close().await;
        read
    });
    let feeders: Vec<_> = std::mem::take(targets)
        .into_iter()
        .zip(receivers)
        .map(|(mut target, mut batches)| {
            tokio::spawn(async move {
                while let Some(batch) = batches.recv().await {
                    if let Err(error) = target.feed(&batch, started).await {
                        // Dropping the queue stops the reader.
                        return (target, Err(error));
                    }
                }
                let finished = target.finish_load().await;
                (target, finished)
            })
        })
        .collect();
    let _abort = AbortOnDrop(
        feeders
            .iter()
            .map(|feeder| feeder.abort_handle())
            .chain([reading.abort_handle()])
            .collect(),
    );
    // Every target comes back, also after a failure: the caller cleans up after them.
    let mut fed = Ok(());
    for feeder in feeders {
        let (target, result) = feeder
            .await
            .unwrap_or_else(|failure| std::panic::resume_unwind(failure.into_panic()));
        targets.push(target);
        if fed.is_ok() {
            fed = result;
        }
    }
    let read = reading
        .await
        .unwrap_or_else(|failure| std::panic::resume_unwind(failure.into_panic()));
    fed?;
    let read_seconds = read?;
    let load_seconds = started.elapsed().as_secs_f64();
    let clock = Instant::now();
    // Every projection's secondary indexes, by a few builders taking them from one queue
    // (a projection's own connection would build its indexes one after the other, and
    // the largest projection would finish long after the others). The longest builds
    // first, so the others fill in beside them rather than after: the GIN indexes, then
    // the largest tables'. They start at once, beside the carry-over, except those of
    // the table the carry-over updates, which join the queue when it is done (cheaper
    // updates without them). Then the swaps.
    let mut now: Vec<DeferredIndex> = Vec::new();
    let mut after_carry: Vec<DeferredIndex> = Vec::new();
    for target in targets.iter_mut().rev() {
        for index in std::mem::take(&mut target.deferred_indexes) {
            if target.name == admin_events::NAME && index.table == "admin_events" {
                after_carry.push(index);
            } else {
                now.push(index);
            }
        }
    }
    now.sort_by_key(|index| !index.gin);
    let (queue, definitions) = tokio::sync::mpsc::unbounded_channel();
    for index in now {
        let _ = queue.send(index.definition);
    }
    let definitions = tokio::sync::Mutex::new(definitions);
    let carrying = async {
        let clock = Instant::now();
        for target in targets.iter_mut() {
            target.carried_since =
                carry_over(&target.name, &target.shadow, &target.live, &mut target.conn).await?;
        }
        for index in after_carry {
            let _ = queue.send(index.definition);
        }
        // The builders stop when the queue is empty and closed.
        drop(queue);
        Ok::<f64, RebuildError>(clock.elapsed().as_secs_f64())
    };
    let (carried, built) = tokio::join!(carrying, build_indexes(connect, &definitions));
    let carry_seconds = carried?;
    built?;
    let index_seconds = clock.elapsed().as_secs_f64();
    let mut reports = Vec::with_capacity(targets.len());
    for target in targets.iter_mut() {
        let seconds = target.swap(started).await?;
        tracing::info!(projection = %target.name, events = target.done, seconds, "rebuilt");
        reports.push(RebuildReport {
            name: target.name.clone(),
            events: target.done,
            position: target.position.global_position,
            seconds,
            events_per_second: target.done as f64 / seconds.max(1e-6),
            read_seconds,
            handle_seconds: target.handle_seconds,
            load_seconds,
            carry_seconds,
            index_seconds,
        });
    }
    Ok(reports)
}

/// Aborts the load's tasks when the rebuild's future is dropped before they end: they
/// would go on loading for no one, holding the projections' rebuild locks. (Aborting
/// a task that has ended does nothing.)
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Reads the whole log in batches and hands each to every sender, until the log is
/// exhausted or a projection stopped (its queue closed: its feeder reports the error).
/// Returns the time spent reading.
async fn read_log(
    reader: &mut PgConnection,
    senders: Vec<tokio::sync::mpsc::Sender<Arc<Vec<RecordedEvent>>>>,
) -> Result<f64, RebuildError> {
    let mut read_seconds = 0.0;
    let mut position = LogPosition::START;
    loop {
        let clock = Instant::now();
        // Streamed by a binary `COPY` and decoded here: the same read and the same
        // events as `read_history`, for less of the client's work per row.
        let batch = aula_eventlog::log::read_batch_copy(reader, position, REBUILD_BATCH).await?;
        read_seconds += clock.elapsed().as_secs_f64();
        let Some(last) = batch.last() else { break };
        position = last.position;
        let batch = Arc::new(batch);
        for sender in &senders {
            if sender.send(batch.clone()).await.is_err() {
                return Ok(read_seconds);
            }
        }
    }
    // Dropping the senders ends every feeder's queue.
    Ok(read_seconds)
}

/// Runs the statements of `definitions` (CREATE INDEX statements naming their schema) on
/// [`INDEX_BUILDERS`] connections of their own, each taking the next one, until the
/// queue is closed and empty.
async fn build_indexes(
    connect: &PgConnectOptions,
    definitions: &tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Result<(), RebuildError> {
    let builders = (0..INDEX_BUILDERS).map(|_| async {
        let mut conn =
            PgConnection::connect_with(&connect.clone().application_name("aula rebuild indexes"))
                .await?;
        loop {
            // One builder waits on the queue at a time; the lock is released before
            // the build.
            let next = definitions.lock().await.recv().await;
            let Some(definition) = next else { break };
            (&mut conn).execute(definition.as_str()).await?;
        }
        conn.close().await?;
        Ok::<(), RebuildError>(())
    });
    // Every builder is waited for, also when one fails: the caller drops the schema next.
    let results = futures::future::join_all(builders).await;
    results.into_iter().collect()
}

/// The projections whose rows a rebuild's bulk load writes by `COPY` instead of by
/// their live handler's upserts, into tables only the rebuild writes, where those
/// upserts (the arrays parsed, a speculative insertion and its confirmation per row)
/// are the most of the load's work (issue #20): the audit and admin views (one new row
/// per event), the enrollments and the directory's applications (one per enrollment,
/// per application; the keys loaded so far stand in for the upserts'
/// `ON CONFLICT DO NOTHING`), and the age counts (kept in memory, written at the end).
/// The catch-up inside the swap, on the built tables, uses the live handler.
#[derive(Debug)]
enum BulkLoad {
    AuditLog,
    AdminEvents,
    CourseEnrollments(HashSet<(Uuid, Uuid)>),
    Directory(HashSet<Uuid>),
    AgeMetrics(crate::age_metrics::BulkCounts),
}

impl BulkLoad {
    fn of(name: &str) -> Option<BulkLoad> {
        match name {
            crate::audit_log::NAME => Some(BulkLoad::AuditLog),
            admin_events::NAME => Some(BulkLoad::AdminEvents),
            crate::enrollments::NAME => Some(BulkLoad::CourseEnrollments(HashSet::new())),
            crate::directory::NAME => Some(BulkLoad::Directory(HashSet::new())),
            crate::age_metrics::NAME => Some(BulkLoad::AgeMetrics(Default::default())),
            _ => None,
        }
    }

    async fn load(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
    ) -> Result<(), RebuildError> {
        let loaded = match self {
            BulkLoad::AuditLog => crate::audit_log::load(conn, batch).await,
            BulkLoad::AdminEvents => admin_events::load(conn, batch).await,
            BulkLoad::CourseEnrollments(loaded) => {
                crate::enrollments::load(conn, batch, loaded).await
            }
            BulkLoad::Directory(loaded) => crate::directory::load(conn, batch, loaded).await,
            BulkLoad::AgeMetrics(counts) => counts.load(batch),
        };
        loaded.map_err(|error| RebuildError::Consumer {
            global_position: batch.first().map_or(0, |e| e.global_position()),
            message: error_chain(&error),
        })
    }

    /// After the last batch (at `position`): writes what was kept back, and lets go
    /// of what was kept to stand in for the upserts.
    async fn finish(
        &mut self,
        conn: &mut PgConnection,
        position: LogPosition,
    ) -> Result<(), RebuildError> {
        let written = match self {
            BulkLoad::AgeMetrics(counts) => counts.write(conn).await,
            BulkLoad::CourseEnrollments(loaded) => {
                *loaded = HashSet::new();
                Ok(())
            }
            BulkLoad::Directory(loaded) => {
                *loaded = HashSet::new();
                Ok(())
            }
            BulkLoad::AuditLog | BulkLoad::AdminEvents => Ok(()),
        };
        written.map_err(|error| RebuildError::Consumer {
            global_position: position.global_position,
            message: error_chain(&error),
        })
    }
}

/// The latest rebuild of every projection that was ever rebuilt, by name.
pub async fn rebuild_progress(pool: &PgPool) -> Result<Vec<RebuildProgress>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.name, r.state, r.started_at, r.finished_at, r.updated_at,
                r.global_position AS position, r.events_done, r.events_per_second,
                CASE WHEN r.state = 'done' THEN 0
                     ELSE (SELECT count(*) FROM events e WHERE e.global_position > r.global_position) END
                  AS remaining,
                r.error
         FROM projection_rebuilds r ORDER BY r.name",
    )
    .fetch_all(pool)
    .await
}
