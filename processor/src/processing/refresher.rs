//! The refresher: brings the `admin_events` rows of the events the workers queued in
//! `admin_event_refresh` up to date, in batches, off the workers' path (ADR 0001).

use std::collections::HashMap;

use aula_eventlog::db::try_transaction_lock;
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use super::counters::{write_counters, Counters};
use super::update_events;
use crate::dashboard;

/// The refreshers' advisory locks (the two-key form, apart from the one-key locks of the
/// subscriptions): `(REFRESH_LOCK.0, REFRESH_LOCK.1 + slot)` for each slot below
/// [`REFRESHERS`]. A round takes a free slot or does nothing.
const REFRESH_LOCK: (i32, i32) = (0x6175_6c61, 17);

/// How many refresh rounds may run at once, across all processes.
///
/// One was not enough under a drain: the workers finished 3,489 tasks/s over 1,000,000
/// tasks and one refresher, sharing two cores with them, wrote ~3,150 rows/s, so the
/// admin view fell 27.7 s behind. Two rounds take disjoint ids (`SKIP LOCKED`) and lock
/// their events' rows in log order, as every writer of `admin_events` does, so they
/// cannot deadlock; an event both take (its claim's id in one, its completion's in the
/// other) is recounted by each, after its row lock, so the second sees the first's row.
///
/// Four since session 14, one per worker process of `aula bench tasks`: the workers
/// finished 12,500–13,800 tasks/s and two rounds at a time, sharing the two cores with
/// eight busy worker connections, left the admin view 1.3–1.8 s behind at the end of a
/// drain of 100,000 tasks (the target is 1 s). The rounds compete for the same cores as
/// the workers, so a refresher that keeps up takes a little of their rate.
pub const REFRESHERS: i32 = 4;

/// How many queued ids one refresh takes at most (one transaction).
///
/// Small enough that a round is short: while its transaction runs, its snapshot holds
/// back the server's horizon, and no scan can mark a tuple that died after it as dead
/// in an index. The claims walk exactly such entries (the tasks claimed in the last
/// moments, see `queue::ClaimHint`): with rounds of 10,000 ids taking 1–2 s under load,
/// every claim from the front fetched thousands of dead heap tuples (12,737 buffers per
/// claim in a 200,000-task drain).
pub const REFRESH_BATCH: i64 = 1_000;

/// How long after a claim its event's id is due for the refresher (the literal in
/// `queue::CLAIM_DEFERRED_SQL`; the workers queue it themselves for the tasks they still
/// run then, `worker`'s notices): a task that finishes sooner has its event's row
/// written once, at its final status; one still running then is shown running. Well
/// inside the admin view's one second behind the tasks, with the refresher's poll.
pub const CLAIM_REFRESH_DELAY_MS: u64 = 300;

/// Brings up to `limit` queued events' rows in `admin_events` up to date with their
/// tasks (see [`record`](super::record): the same rules, counted from the tasks), in one transaction
/// that also deletes the ids it took from `admin_event_refresh`. The workers' claims and
/// completions queue those ids instead of writing the rows themselves.
///
/// Returns how many queued ids it took, or `None` when [`REFRESHERS`] rounds are running
/// already (they are taking them).
pub async fn refresh(pool: &PgPool, limit: i64) -> Result<Option<usize>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The first free slot, one try at a time: a single statement trying them all could
    // take every lock its filter evaluates.
    let mut slot_taken = false;
    for slot in 0..REFRESHERS {
        if try_transaction_lock(&mut tx, (REFRESH_LOCK.0, REFRESH_LOCK.1 + slot)).await? {
            slot_taken = true;
            break;
        }
    }
    if !slot_taken {
        return Ok(None);
    }
    // The events with an id due, and every id queued for them, due or not: the recount
    // below covers what each of them was queued for (it committed before this delete
    // saw its id). So a claim's id, due `CLAIM_REFRESH_DELAY_MS` after the claim, goes
    // with its task's completion when that comes first, and the row is written once.
    // Ids another round holds are skipped (it takes them, and recounts their events).
    let taken: Vec<Uuid> = sqlx::query_scalar(
        //
        // The due ids are found by a scan that stops after `$1` rows (no DISTINCT, which
        // would read the whole table first); their events' ids by the index of 0048,
        // through `= ANY(ARRAY(...))`: a semi-join on the CTE is planned, with the
        // statistics of a table that is mostly empty, as a hash join over a scan of the
        // whole table. The rows are deleted by `ctid` (the table has no key): both
        // selections lock what they return, so no other round deletes it meanwhile.
        "WITH due AS (
             SELECT event_id FROM admin_event_refresh
             WHERE not_before <= now()
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), queued AS (
             SELECT r.ctid AS row_id FROM admin_event_refresh r
             WHERE r.event_id = ANY(ARRAY(SELECT event_id FROM due))
             FOR UPDATE SKIP LOCKED
         )
         DELETE FROM admin_event_refresh r
         WHERE r.ctid = ANY(ARRAY(SELECT row_id FROM queued))
         RETURNING r.event_id",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if taken.is_empty() {
        return Ok(Some(0));
    }
    let mut counters = Counters::default();
    update_events(&mut tx, &taken, &HashMap::new(), &[], &mut counters).await?;
    write_counters(&mut tx, &counters).await?;
    tx.commit().await?;
    Ok(Some(taken.len()))
}

/// How many ids a round must take for the next round to start at once, without the
/// pause that lets a trickle of ids gather into a batch.
///
/// It was a whole [`REFRESH_BATCH`] until session 14: under a drain whose rounds took
/// ~760 ids each, every round was followed by the pause, so two refreshers wrote about
/// 6,000 rows/s while the workers finished 11,000 tasks/s, and the admin view was 2.5 to
/// 3.3 s behind at the end of a drain of 100,000 tasks (the target is 1 s). A round that
/// takes this many ids shows a stream that the next round's batch will not be short of.
pub const KEEP_GOING: usize = REFRESH_BATCH as usize / 4;

/// How many ids a process's refresher takes between two VACUUMs of
/// `admin_event_refresh` it runs itself (at most one a second).
///
/// Why: the rounds find their ids by a scan of the table from its first page, and every
/// id taken leaves a dead row there until a VACUUM. Autovacuum visits a database once a
/// minute at best (`autovacuum_naptime`), so under a long drain the rounds read more and
/// more dead rows: at 1,000,000 tasks 7,000 pages a round, 36 ms each and half of the
/// database's time (BENCHMARKS.md, session 15). A VACUUM of a table whose live rows are
/// few costs about what one such round cost, and keeps every round short.
pub const VACUUM_AFTER: usize = 20_000;

/// Vacuums `admin_event_refresh` (see [`VACUUM_AFTER`]); skipped, not waited for, while
/// another process's VACUUM holds the table. Outside any transaction, as VACUUM must be.
pub async fn vacuum_queue(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("VACUUM (SKIP_LOCKED) admin_event_refresh")
        .execute(pool)
        .await?;
    Ok(())
}

/// When the queue has grown this many times over since the last ANALYZE of
/// `task_queue` that a process's refresher ran (and holds at least
/// [`ANALYZE_FROM`] open tasks), the refresher runs one (at most every 10 s).
///
/// Why: a pooled connection keeps the plan it made for a statement, and a plan made
/// while the queue was empty (a table PostgreSQL last saw with no rows) reads the whole
/// table where an index reads one page: with 1,000,000 tasks waiting, the claims from
/// the index's front updated their tasks by a scan of the queue (7,500 pages each) and
/// the check for parked tasks scanned it too (24,000 pages, 150 ms). Autovacuum's
/// ANALYZE, which makes every connection plan again, comes a minute later at best, and
/// later still while it works through the large tables the same burst wrote.
pub const ANALYZE_GROWTH: i64 = 4;

/// See [`ANALYZE_GROWTH`]: below this many open tasks, no plan is slow enough to matter.
pub const ANALYZE_FROM: i64 = 1_000;

/// Open tasks (pending, retrying or running) from the status counts: a few rows, exact.
pub async fn open_tasks(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(count), 0)::bigint FROM task_status_counts
         WHERE kind = 'task' AND status IN ('pending', 'retrying', 'running')",
    )
    .fetch_one(pool)
    .await
}

/// Analyzes `task_queue` for a queue of `open` tasks (see [`ANALYZE_GROWTH`]), unless
/// another process's refresher is doing it or its statistics already count more than
/// `open / ANALYZE_GROWTH` rows. Returns whether it analyzed.
///
/// - One process at a time (an advisory lock), and none when the statistics fit:
///   every process's refresher sees the same growth, and with four worker processes a
///   burst of 100,000 tasks was analyzed four times in a row (1.4 s of the server's
///   time, a tenth of the drain's) where the first ANALYZE had made the plans fit.
/// - It waits for the table's lock rather than skip: until session 17 it skipped when
///   autovacuum held the table, which it often does right after a burst (the burst's
///   inserts are what wakes it), and the plans made on the empty queue stayed until
///   autovacuum was done. Autovacuum gives way to the waiting ANALYZE after
///   `deadlock_timeout` and comes back later.
pub async fn analyze_queue(pool: &PgPool, open: i64) -> Result<bool, sqlx::Error> {
    // ANALYZE may run in a transaction: the lock is released with it, whatever happens.
    let mut tx = pool.begin().await?;
    if !try_transaction_lock(&mut tx, ANALYZE_LOCK).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    let counted: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'task_queue'::regclass")
            .fetch_one(&mut *tx)
            .await?;
    if (counted.max(0.0) as i64).saturating_mul(ANALYZE_GROWTH) > open {
        // Rolled back now, not when the connection is next used: a dropped transaction
        // leaves its ROLLBACK queued, and the lock held, on a connection back in its
        // pool, where the next caller on another connection would find it taken.
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("ANALYZE task_queue")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// The advisory lock of [`analyze_queue`] (two-key form, beside [`REFRESH_LOCK`]'s).
const ANALYZE_LOCK: (i32, i32) = (REFRESH_LOCK.0, REFRESH_LOCK.1 + REFRESHERS);

/// The refresher's upkeep of the two queue tables: when to VACUUM
/// `admin_event_refresh` ([`VACUUM_AFTER`]) and ANALYZE `task_queue`
/// ([`ANALYZE_GROWTH`]). Each runs beside the rounds, one at a time.
#[derive(Default)]
struct Upkeep {
    taken_since_vacuum: usize,
    vacuumed: Option<tokio::time::Instant>,
    vacuuming: Option<tokio::task::JoinHandle<()>>,
    /// Open tasks at the last ANALYZE (or the least seen since).
    analyzed_at: i64,
    analyzed: Option<tokio::time::Instant>,
    checked: Option<tokio::time::Instant>,
    analyzing: Option<tokio::task::JoinHandle<()>>,
}

impl Upkeep {
    /// Starts what is due.
    async fn run(&mut self, pool: &PgPool) {
        use std::time::Duration;
        let since = |at: Option<tokio::time::Instant>| at.map_or(Duration::MAX, |at| at.elapsed());
        let idle = |job: &Option<tokio::task::JoinHandle<()>>| {
            job.as_ref().is_none_or(|job| job.is_finished())
        };
        if self.taken_since_vacuum >= VACUUM_AFTER
            && since(self.vacuumed) >= Duration::from_secs(1)
            && idle(&self.vacuuming)
        {
            self.taken_since_vacuum = 0;
            self.vacuumed = Some(tokio::time::Instant::now());
            let pool = pool.clone();
            self.vacuuming = Some(tokio::spawn(async move {
                if let Err(error) = vacuum_queue(&pool).await {
                    tracing::debug!(%error, "vacuuming the refresh queue failed; autovacuum will");
                }
            }));
        }
        // The open count is read at most once a second.
        if since(self.checked) < Duration::from_secs(1) || !idle(&self.analyzing) {
            return;
        }
        self.checked = Some(tokio::time::Instant::now());
        let Ok(open) = open_tasks(pool).await else {
            return;
        };
        self.analyzed_at = self.analyzed_at.min(open);
        if open >= ANALYZE_FROM
            && open >= self.analyzed_at.saturating_mul(ANALYZE_GROWTH)
            && since(self.analyzed) >= Duration::from_secs(10)
        {
            self.analyzed_at = open;
            self.analyzed = Some(tokio::time::Instant::now());
            let pool = pool.clone();
            self.analyzing = Some(tokio::spawn(async move {
                match analyze_queue(&pool, open).await {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(open, "the task queue grew: analyzed it, so that its statements are planned for its size"),
                    Err(error) => tracing::debug!(%error, "analyzing the task queue failed; autovacuum will"),
                }
            }));
        }
    }
}

/// Queues a refresh of these events' rows, due at once (the workers' notices of the
/// tasks they still run a moment after their claim).
pub async fn queue_refresh(pool: &PgPool, events: &[Uuid]) -> Result<u64, sqlx::Error> {
    let queued = sqlx::query(
        "INSERT INTO admin_event_refresh (event_id) SELECT DISTINCT e FROM unnest($1::uuid[]) AS e",
    )
    .bind(events)
    .execute(pool)
    .await?;
    Ok(queued.rows_affected())
}

/// Refreshes until nothing is queued (or another process is refreshing).
pub async fn refresh_all(pool: &PgPool) -> Result<(), sqlx::Error> {
    while let Some(n) = refresh(pool, REFRESH_BATCH).await? {
        if n < REFRESH_BATCH as usize {
            break;
        }
    }
    Ok(())
}

/// The refresher of one process: runs [`refresh`] when `wake` is notified (the workers
/// queued ids) or every `poll` (another process's workers did), pausing `pause` after
/// rounds that found fewer than [`KEEP_GOING`] ids so that a trickle of ids arrives in
/// batches; stops when
/// `stop` turns true, after a last round.
pub async fn run_refresher(
    pool: PgPool,
    wake: std::sync::Arc<tokio::sync::Notify>,
    poll: std::time::Duration,
    pause: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    // The dashboard's upkeep (`dashboard::maintain`) rides on this loop: one per
    // process, off the workers' path, at most once a minute.
    let mut next_upkeep = tokio::time::Instant::now();
    let mut upkeep = Upkeep::default();
    loop {
        upkeep.run(&pool).await;
        if tokio::time::Instant::now() >= next_upkeep {
            next_upkeep = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            if let Err(error) = dashboard::maintain(&pool, Utc::now()).await {
                tracing::warn!(%error, "the dashboard's upkeep failed; it runs again in a minute");
            }
        }
        let round = tokio::select! {
            round = refresh(&pool, REFRESH_BATCH) => round,
            // A round is one transaction: abandoned, it rolls back and the ids stay queued.
            _ = stop.wait_for(|s| *s) => break,
        };
        let wait = match round {
            Ok(Some(n)) if n > 0 => {
                failures = 0;
                upkeep.taken_since_vacuum += n;
                if n >= KEEP_GOING {
                    continue;
                }
                Some(pause)
            }
            Ok(_) => {
                failures = 0;
                None
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "refreshing the events' processing rows failed; retrying");
                Some(crate::kinds::backoff(
                    failures as i32,
                    std::time::Duration::from_millis(100),
                    std::time::Duration::from_secs(5),
                ))
            }
        };
        match wait {
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            },
            None => tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.wait_for(|s| *s) => break,
            },
        }
    }
    if let Err(error) = refresh_all(&pool).await {
        tracing::warn!(%error, "the last refresh of the events' processing rows failed; another process or the next start will do it");
    }
}
