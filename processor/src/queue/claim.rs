//! Claiming due tasks: the claim statements (see the module `queue` for their rules
//! of plans) and the claiming loop's [`ClaimHint`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::TaskRow;
use crate::processing;

/// Claims up to `limit` due tasks for `worker`, holding them for `lease`.
///
/// One statement, so one round trip and no open transaction: it locks the due rows
/// (`SKIP LOCKED`), marks them running, records the attempts' start, moves the issuing
/// events' task counts in `admin_events` (pending to running: the event's status stays
/// `pending`, so nothing else of [`processing::record`] applies) and the status counts.
/// Rows are locked in the order of the module's invariant: tasks, then `admin_events`
/// in log order, then `task_status_counts` by key.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    run_claim(
        CLAIM_SQL,
        pool,
        worker,
        limit,
        lease,
        record_attempts,
        None,
        ClaimStart::Front,
        &[],
    )
    .await
}

/// Where a worker's claim starts its walk of the claim index (see [`ClaimHint`]), and so
/// which statement it runs and which parameters follow the common five.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStart {
    /// At the index's front ([`CLAIM_DEFERRED_SQL`]).
    Front,
    /// At a hint ([`CLAIM_DEFERRED_FROM_SQL`]: `$7`, `$8`).
    AtHint(ClaimHint),
    /// The priorities before a hint's, from the front up to there
    /// ([`CLAIM_DEFERRED_BEFORE_SQL`]: `$7`).
    BeforeHint(ClaimHint),
}

/// Runs one of the claim statements (they take the same five parameters; the deferred
/// ones, `queue_refresh` as `$6`; a hinted one its hint after them; and one that leaves
/// kinds out, `excluding` last).
#[allow(clippy::too_many_arguments)]
async fn run_claim(
    sql: &'static str,
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
    queue_refresh: Option<bool>,
    start: ClaimStart,
    excluding: &[&str],
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let shard = processing::claim_shard();
    let mut query = sqlx::query_as(sql)
        .bind(limit)
        .bind(lease.as_millis() as f64)
        .bind(worker)
        .bind(record_attempts)
        .bind(shard);
    if let Some(queue_refresh) = queue_refresh {
        query = query.bind(queue_refresh);
    }
    match start {
        ClaimStart::Front => {}
        ClaimStart::AtHint(hint) => query = query.bind(hint.priority).bind(hint.run_at),
        ClaimStart::BeforeHint(hint) => query = query.bind(hint.priority),
    }
    if !excluding.is_empty() {
        query = query.bind(excluding);
    }
    query.fetch_all(pool).await
}

/// The CTEs every claim starts with: pick the due tasks (`SKIP LOCKED`), park those of
/// a paused kind, mark the others running under a lease, record the attempts' start
/// (when `$4`), and list the tasks' moves between counted statuses (`moved`). A macro,
/// not a `const`, so `concat!` can build the statements at compile time.
///
/// Pausing a kind (`controls::pause_kind`) parks its waiting tasks (status `paused`,
/// outside `task_queue_claim_idx`). A task of a paused kind that becomes due afterwards
/// (inserted, retried, released) is parked here, by the first claim that meets it, so
/// no later claim steps over it again: the claim keeps walking `task_queue_claim_idx` in
/// `(priority, run_at)` order and stops after `$1` rows, however many tasks of paused
/// kinds wait. Filtering paused kinds in `due` instead would make every claim step over
/// all of them (heap fetches included: the index does not hold `kind`). With nothing
/// paused, `task_kind_pauses` is empty and the anti-join costs one probe of an empty
/// table per claim. `retried` (a pending task with an error recorded: `retrying`)
/// tells the counters which status a claimed or parked task leaves.
macro_rules! claim_ctes {
    () => {
        claim_ctes!("")
    };
    ($from:literal) => {
        concat!(
            "WITH due AS (
         SELECT id, kind FROM task_queue
         WHERE status = 'pending' AND run_at <= now()",
            $from,
            "
         ORDER BY priority, run_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED
     ), parked AS (
         UPDATE task_queue t SET status = 'paused'
         WHERE t.id = ANY(ARRAY(SELECT d.id FROM due d
                                WHERE EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = d.kind)))
         RETURNING t.id, t.last_error IS NOT NULL AS retried
     ), claimed AS (
         UPDATE task_queue t
         SET status = 'running', attempt = t.attempt + 1,
             lease_until = now() + $2 * interval '1 millisecond', worker = $3,
             started_at = COALESCE(t.started_at, now()), claimed_at = now()
         WHERE t.id = ANY(ARRAY(SELECT d.id FROM due d
                                WHERE NOT EXISTS (SELECT 1 FROM task_kind_pauses p WHERE p.kind = d.kind)))
         RETURNING t.id, t.kind, t.attempt, t.max_attempts, t.event_id, t.event_type,
             t.origin_task_id, t.idempotency_key, t.payload, t.institution_id, t.correlation_id,
             t.created_at, t.claimed_at, t.priority, t.run_at, t.last_error IS NOT NULL AS retried
     ), started AS (
         INSERT INTO task_attempts (task_id, attempt, worker)
         SELECT id, attempt, $3 FROM claimed WHERE $4
     ), moved AS (
         SELECT CASE WHEN retried THEN 'retrying' ELSE 'pending' END AS status, -1 AS n FROM claimed
         UNION ALL SELECT 'running', 1 FROM claimed
         UNION ALL SELECT CASE WHEN retried THEN 'retrying' ELSE 'pending' END, -1 FROM parked
         UNION ALL SELECT 'paused', 1 FROM parked
     ), "
        )
    };
}

/// See [`claim`] and the module's rules for plans. An event row nobody had counted yet
/// (all counts 0, `pending`: its task was inserted before the projection wrote the row)
/// becomes counted here, as [`processing::record`] would do.
pub const CLAIM_SQL: &str = concat!(claim_ctes!(), "by_event AS (
         SELECT event_id, count(*)::int AS n FROM claimed WHERE event_id IS NOT NULL GROUP BY event_id
     ), event_rows AS (
         SELECT a.event_id, b.n, a.status,
                (a.status = 'pending' AND a.tasks_pending = 0 AND a.tasks_running = 0
                 AND a.tasks_succeeded = 0 AND a.tasks_failed = 0) AS unseen
         FROM admin_events a
         JOIN by_event b ON b.event_id = a.event_id
         WHERE a.event_id = ANY(ARRAY(SELECT event_id FROM by_event))
         ORDER BY a.tx_id, a.global_position
         FOR UPDATE OF a
     ), event_counts AS (
         UPDATE admin_events a
         SET tasks_pending = greatest(a.tasks_pending - r.n, 0),
             tasks_running = a.tasks_running + r.n
         FROM event_rows r
         WHERE a.event_id = r.event_id
     ), requeued AS (
         -- An event leaving `retrying` needs its tasks recounted (another of them may
         -- still wait for a retry): the refresher does it, as for the workers' claims.
         INSERT INTO admin_event_refresh (event_id)
         SELECT event_id FROM event_rows WHERE status = 'retrying'
     ), deltas AS (
         SELECT 'task' AS kind, status, sum(n) AS n FROM moved GROUP BY status
         UNION ALL SELECT 'event', 'pending', count(*) FROM event_rows WHERE unseen
     ), counted AS (
         INSERT INTO task_status_counts (kind, status, shard, count)
         SELECT kind, status, $5, n FROM deltas WHERE n <> 0
         ORDER BY kind, status
         ON CONFLICT (kind, status, shard)
         DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
     )
     SELECT * FROM claimed");

/// [`claim`] for the workers: the same claim, but the issuing events' rows in
/// `admin_events` are left alone. Their ids are queued in `admin_event_refresh` for the
/// refresher ([`processing::run_refresher`]), which recounts them in batches. No
/// `admin_events` row is locked or rewritten, so a claim's cost does not depend on the
/// event rows (ADR 0001).
pub async fn claim_deferred(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    claim_deferred_from(pool, worker, limit, lease, record_attempts, None).await
}

/// The part of [`CLAIM_DEFERRED_SQL`] after the claim's CTEs, shared with
/// [`CLAIM_DEFERRED_FROM_SQL`].
macro_rules! claim_deferred_tail {
    () => {
        "queued AS (
         -- Due a moment later: refreshed with the task's completion if that comes
         -- first (migration 0047, `processing::CLAIM_REFRESH_DELAY_MS`).
         INSERT INTO admin_event_refresh (event_id, not_before)
         SELECT DISTINCT event_id, now() + interval '300 milliseconds'
         FROM claimed WHERE event_id IS NOT NULL AND $6
     ), counted AS (
         INSERT INTO task_status_counts (kind, status, shard, count)
         SELECT 'task', status, $5, sum(n) FROM moved
         GROUP BY status HAVING sum(n) <> 0
         ORDER BY status
         ON CONFLICT (kind, status, shard)
         DO UPDATE SET count = task_status_counts.count + EXCLUDED.count
     )
     SELECT * FROM claimed"
    };
}

/// Where a claim may start its walk of the claim index: the first `(priority, run_at)`
/// of the claiming loop's previous claim.
///
/// Why: a claim marks its tasks running, which takes them out of the partial index
/// `task_queue_claim_idx`, but their old entries stay in the index (dead, then marked
/// dead by the scans that meet them) until VACUUM removes them. A claim that starts at
/// the index's front walks every entry the drain has claimed since the last VACUUM, so
/// its cost grew with the backlog (one claim after 100,000 of 200,000 tasks read 2,944
/// buffers in 19 ms). A hinted claim starts where the loop's last claim started, so it
/// walks only what the other claimers took since.
///
/// What it may miss: a task due *before* the hint that became pending after it was set.
/// - A task of a more urgent priority whose `run_at` came (a retry's backoff, a task
///   scheduled for later): nothing announces that moment, so every
///   [`ClaimHint::LIFETIME`] the loop claims the due tasks of the priorities before the
///   hint's ([`ClaimStart::BeforeHint`]). That walk stops where the hint's priority
///   starts, so it does not step over the entries the drain left behind at the hint's
///   own priority, which a claim from the front walks.
/// - Tasks that become pending with an earlier `run_at` at the hint's priority: inserted
///   ones and those an operator resumes or retries are notified, and a notification
///   drops the hint unless it shows the new tasks sort after it ([`Notified`]);
///   released and rescued tasks are due `now()`, after the hint. What is
///   left (a claim that locked tasks and then rolled back) is found by the claim from
///   the front that the loop makes at least every [`ClaimHint::FRONT_EVERY`]. A hinted
///   claim that finds fewer tasks than it asked for keeps its hint (through session 14 it
///   sent the next claim to the front, whose walk grew with the drain's history).
///
/// So the hint is a shortcut, never the rule: no task is ever skipped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimHint {
    pub priority: i16,
    pub run_at: DateTime<Utc>,
}

impl ClaimHint {
    /// How long a loop claims from a hint before it looks at the priorities before it
    /// ([`ClaimStart::BeforeHint`]): how long a more urgent task that came due may wait.
    pub const LIFETIME: Duration = Duration::from_secs(1);

    /// How long a loop claims from hints before it claims from the index's front again.
    ///
    /// It was [`ClaimHint::LIFETIME`] until session 12: in a drain of 200,000 tasks by
    /// four processes, those claims from the front (1.8 a second per process) read 2,290
    /// buffers per task claimed (the entries of the tasks claimed since the previous one,
    /// not yet marked dead), a quarter of all the claims' buffer reads.
    pub const FRONT_EVERY: Duration = Duration::from_secs(10);

    /// The hint a claim leaves: its first task in claim order (`None` for no task).
    pub fn of(claimed: &[TaskRow]) -> Option<ClaimHint> {
        claimed
            .iter()
            .map(|t| ClaimHint {
                priority: t.priority,
                run_at: t.run_at,
            })
            .min()
    }
}

/// What the task notifications since a claiming loop last looked say about where the
/// new tasks sort: `task_queue`'s insert trigger (migration 0049) sends the least
/// priority and least `run_at` of the rows a statement inserted, as `"<priority>
/// <run_at in microseconds since the epoch>"`; other notifications (an operator's
/// controls, a lost connection) say nothing, so the tasks may sort anywhere.
///
/// Why: every insert used to drop the loop's hint, so under a steady stream of new tasks
/// (a rush of applications, each issuing e-mails) nearly every claim walked the claim
/// index from its front. New tasks are mostly due `now()` at a priority the hint has
/// already reached, so they sort after it and a hinted claim finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// The new tasks sort at or after this key (the least of each column, so never
    /// after the least task).
    From(ClaimHint),
    /// Nothing is known: new tasks may sort anywhere.
    Anywhere,
}

impl Notified {
    /// Reads a notification's payload (`None`: the connection was lost).
    pub fn parse(payload: Option<&str>) -> Notified {
        let key = payload.and_then(|payload| {
            let (priority, micros) = payload.split_once(' ')?;
            Some(ClaimHint {
                priority: priority.parse().ok()?,
                run_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            })
        });
        key.map_or(Notified::Anywhere, Notified::From)
    }

    /// What two notifications say together.
    pub fn and(self, other: Notified) -> Notified {
        match (self, other) {
            (Notified::From(a), Notified::From(b)) => Notified::From(a.min(b)),
            _ => Notified::Anywhere,
        }
    }

    /// Whether a task so notified may sort before `hint` (a hinted claim would miss it).
    pub fn may_precede(self, hint: ClaimHint) -> bool {
        match self {
            Notified::From(key) => key < hint,
            Notified::Anywhere => true,
        }
    }
}

/// [`claim_deferred`] from a [`ClaimHint`] (from the index's front without one).
pub async fn claim_deferred_from(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
    hint: Option<ClaimHint>,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let start = hint.map_or(ClaimStart::Front, ClaimStart::AtHint);
    claim_deferred_at(pool, worker, limit, lease, record_attempts, start).await
}

/// [`claim_deferred`] starting where `start` says.
pub async fn claim_deferred_at(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
    record_attempts: bool,
    start: ClaimStart,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let claim = (worker, limit, lease, record_attempts);
    claim_for_workers(pool, claim, true, start).await
}

/// The workers' claim: [`claim_deferred_at`] (`worker`, `limit`, `lease`,
/// `record_attempts`) that queues the refresh of the issuing events' rows only if
/// `queue_refresh`. The workers pass `false` and queue one themselves for the tasks they
/// still run [`processing::CLAIM_REFRESH_DELAY_MS`] after their claim (`worker`'s
/// notices), so a task that finishes sooner costs the queue no refresh id at all,
/// rather than one that its completion's refresh then deletes.
pub async fn claim_for_workers(
    pool: &PgPool,
    claim: (&str, i64, Duration, bool),
    queue_refresh: bool,
    start: ClaimStart,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    claim_for_workers_excluding(pool, claim, queue_refresh, start, &[]).await
}

/// [`claim_for_workers`] that leaves the tasks of the kinds in `excluding` where they
/// are (pending): those of a class at its cap in this process (`kinds::KindClass`).
///
/// With `excluding` empty it runs the very statements [`claim_for_workers`] runs: the
/// claim's hot path is untouched. Otherwise the walk of `task_queue_claim_idx` steps over
/// the excluded kinds' due tasks (a heap fetch each: the index does not hold `kind`) to
/// reach the others; that walk is what a capped class costs, and only while it is at
/// its cap.
pub async fn claim_for_workers_excluding(
    pool: &PgPool,
    (worker, limit, lease, record_attempts): (&str, i64, Duration, bool),
    queue_refresh: bool,
    start: ClaimStart,
    excluding: &[&str],
) -> Result<Vec<TaskRow>, sqlx::Error> {
    let sql = match (start, excluding.is_empty()) {
        (ClaimStart::Front, true) => CLAIM_DEFERRED_SQL,
        (ClaimStart::AtHint(_), true) => CLAIM_DEFERRED_FROM_SQL,
        (ClaimStart::BeforeHint(_), true) => CLAIM_DEFERRED_BEFORE_SQL,
        (ClaimStart::Front, false) => CLAIM_DEFERRED_EXCLUDING_SQL,
        (ClaimStart::AtHint(_), false) => CLAIM_DEFERRED_FROM_EXCLUDING_SQL,
        (ClaimStart::BeforeHint(_), false) => CLAIM_DEFERRED_BEFORE_EXCLUDING_SQL,
    };
    let queue_refresh = Some(queue_refresh);
    run_claim(
        sql,
        pool,
        worker,
        limit,
        lease,
        record_attempts,
        queue_refresh,
        start,
        excluding,
    )
    .await
}

/// See [`claim_deferred`] and the module's rules for plans.
pub const CLAIM_DEFERRED_SQL: &str = concat!(claim_ctes!(), claim_deferred_tail!());

/// [`CLAIM_DEFERRED_SQL`] that starts its walk of `task_queue_claim_idx` at a
/// [`ClaimHint`] (`$7`, `$8`) instead of at the index's front; see [`ClaimHint`].
pub const CLAIM_DEFERRED_FROM_SQL: &str = concat!(
    claim_ctes!(" AND (priority, run_at) >= ($7, $8)"),
    claim_deferred_tail!()
);

/// [`CLAIM_DEFERRED_SQL`] limited to the priorities before `$7` (an index condition, so
/// the walk stops there); see [`ClaimStart::BeforeHint`].
pub const CLAIM_DEFERRED_BEFORE_SQL: &str =
    concat!(claim_ctes!(" AND priority < $7"), claim_deferred_tail!());

/// [`CLAIM_DEFERRED_SQL`] that leaves the kinds in `$7` pending; see
/// [`claim_for_workers_excluding`].
pub const CLAIM_DEFERRED_EXCLUDING_SQL: &str = concat!(
    claim_ctes!(" AND kind <> ALL($7::text[])"),
    claim_deferred_tail!()
);

/// [`CLAIM_DEFERRED_FROM_SQL`] that leaves the kinds in `$9` pending.
pub const CLAIM_DEFERRED_FROM_EXCLUDING_SQL: &str = concat!(
    claim_ctes!(" AND (priority, run_at) >= ($7, $8) AND kind <> ALL($9::text[])"),
    claim_deferred_tail!()
);

/// [`CLAIM_DEFERRED_BEFORE_SQL`] that leaves the kinds in `$8` pending.
pub const CLAIM_DEFERRED_BEFORE_EXCLUDING_SQL: &str = concat!(
    claim_ctes!(" AND priority < $7 AND kind <> ALL($8::text[])"),
    claim_deferred_tail!()
);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(priority: i16, micros: i64) -> ClaimHint {
        ClaimHint {
            priority,
            run_at: DateTime::from_timestamp_micros(micros).unwrap(),
        }
    }

    #[test]
    fn a_notification_reads_as_the_least_key_or_anywhere() {
        assert_eq!(
            Notified::parse(Some("15 1765000000123456")),
            Notified::From(key(15, 1_765_000_000_123_456))
        );
        assert_eq!(Notified::parse(Some("-3 -5")), Notified::From(key(-3, -5)));
        for unknown in [
            None,
            Some(""),
            Some("15"),
            Some("x 1"),
            Some("15 y"),
            Some("1 2 3"),
        ] {
            assert_eq!(Notified::parse(unknown), Notified::Anywhere, "{unknown:?}");
        }
    }

    #[test]
    fn notifications_together_say_the_least_and_anywhere_wins() {
        let (early, late) = (Notified::From(key(10, 5)), Notified::From(key(10, 9)));
        assert_eq!(early.and(late), early);
        assert_eq!(late.and(early), early);
        assert_eq!(
            late.and(Notified::From(key(5, 100))),
            Notified::From(key(5, 100))
        );
        assert_eq!(early.and(Notified::Anywhere), Notified::Anywhere);
        assert_eq!(Notified::Anywhere.and(early), Notified::Anywhere);
    }

    #[test]
    fn only_what_sorts_before_the_hint_drops_it() {
        let hint = key(20, 1_000);
        assert!(!Notified::From(key(20, 1_000)).may_precede(hint));
        assert!(!Notified::From(key(20, 2_000)).may_precede(hint));
        assert!(!Notified::From(key(25, 0)).may_precede(hint));
        assert!(Notified::From(key(20, 999)).may_precede(hint));
        assert!(Notified::From(key(19, 5_000)).may_precede(hint));
        assert!(Notified::Anywhere.may_precede(hint));
    }
}
