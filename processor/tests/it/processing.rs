//! Processing status in `admin_events`, the rollups and the status counts, against a
//! real PostgreSQL: kept in the transactions of the task changes, equal to a full
//! recount after a random concurrent workload.

use aula_projections::admin_events::{list_admin_events, EventListQuery, EventSort};
use std::collections::BTreeMap;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Consumer, LogPosition, RecordedEvent};
use aula_processor::archive::{archive_once, ArchiveConfig};
use aula_processor::dashboard;
use aula_processor::processing::{self, local_midnight, processing_rate_today, status_counts};
use aula_processor::queue::{self, Done};
use aula_processor::reactions::Reactions;
use aula_processor::reprocess::retry_task;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

pub(crate) const LONG_LEASE: Duration = Duration::from_secs(300);

pub(crate) fn event(event_type: &str, position: i64) -> RecordedEvent {
    RecordedEvent {
        position: LogPosition {
            tx_id: position,
            global_position: position,
        },
        event_id: Uuid::new_v4(),
        aggregate_type: "test".into(),
        aggregate_id: Uuid::new_v4().to_string(),
        sequence: 1,
        event_type: event_type.into(),
        event_version: "1.0".into(),
        payload: json!({}).into(),
        metadata: json!({}).into(),
        // Whole milliseconds, as PostgreSQL keeps microseconds.
        recorded_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 1000).unwrap(),
    }
}

/// Runs the reactions consumer on `events` in one transaction, as the subscription does.
pub(crate) async fn react(pool: &PgPool, events: &[RecordedEvent]) {
    let mut tx = pool.begin().await.unwrap();
    Reactions.handle(&mut tx, events).await.unwrap();
    tx.commit().await.unwrap();
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct Processing {
    pub(crate) event_type: String,
    pub(crate) status: String,
    pub(crate) processed_at: Option<DateTime<Utc>>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) error: Option<String>,
    pub(crate) tasks_pending: i32,
    pub(crate) tasks_running: i32,
    pub(crate) tasks_succeeded: i32,
    pub(crate) tasks_failed: i32,
}

pub(crate) async fn processing_of(pool: &PgPool, event_id: Uuid) -> Processing {
    sqlx::query_as(
        "SELECT event_type, status, processed_at, duration_ms, error, tasks_pending, tasks_running,
                tasks_succeeded, tasks_failed
         FROM admin_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) fn counts(p: &Processing) -> [i32; 4] {
    [
        p.tasks_pending,
        p.tasks_running,
        p.tasks_succeeded,
        p.tasks_failed,
    ]
}

async fn counts_map(pool: &PgPool) -> BTreeMap<(String, String), i64> {
    status_counts(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, s, n)| ((k, s), n))
        .collect()
}

fn expected_counts(
    events: &[(&str, i64)],
    tasks: &[(&str, i64)],
) -> BTreeMap<(String, String), i64> {
    let mut map = BTreeMap::new();
    for s in processing::EVENT_STATUSES {
        map.insert(("event".to_owned(), s.to_string()), 0);
    }
    for s in processing::TASK_STATUSES {
        map.insert(("task".to_owned(), s.to_string()), 0);
    }
    for (s, n) in events {
        map.insert(("event".to_owned(), s.to_string()), *n);
    }
    for (s, n) in tasks {
        map.insert(("task".to_owned(), s.to_string()), *n);
    }
    map
}

async fn task_finished_max(pool: &PgPool, event_id: Uuid) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT max(finished_at) FROM tasks WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_whose_tasks_succeed_and_one_without_tasks_are_succeeded() {
    let db = TestDatabase::new().await;
    let student = event("StudentCreated", 1);
    let other = event("CourseOpened", 2);
    // The projection wrote the second event's row first: its identity stays as written.
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, recorded_at, tx_id) VALUES ($1, 2, 'CourseOpened', 'course', 'c-1', 7, $2, 2)",
    )
    .bind(other.event_id)
    .bind(other.recorded_at)
    .execute(&db.pool)
    .await
    .unwrap();
    react(&db.pool, &[student.clone(), other.clone()]).await;

    let p = processing_of(&db.pool, student.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("pending", [2, 0, 0, 0]));
    assert_eq!((p.processed_at, p.duration_ms), (None, None));
    let o = processing_of(&db.pool, other.event_id).await;
    assert_eq!(
        (o.status.as_str(), o.processed_at, o.duration_ms, counts(&o)),
        ("succeeded", Some(other.recorded_at), Some(0), [0, 0, 0, 0])
    );
    let (aggregate_id, sequence): (String, i64) =
        sqlx::query_as("SELECT aggregate_id, sequence FROM admin_events WHERE event_id = $1")
            .bind(other.event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((aggregate_id.as_str(), sequence), ("c-1", 7));

    let claimed = queue::claim(&db.pool, "w", 10, LONG_LEASE, true)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let p = processing_of(&db.pool, student.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("pending", [0, 2, 0, 0]));
    assert_eq!(
        counts_map(&db.pool).await,
        expected_counts(&[("pending", 1), ("succeeded", 1)], &[("running", 2)])
    );

    let done: Vec<Done> = claimed.iter().map(|t| t.done()).collect();
    assert_eq!(
        queue::complete(&db.pool, &done[..1]).await.unwrap().len(),
        1
    );
    let p = processing_of(&db.pool, student.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("pending", [0, 1, 1, 0]));
    assert_eq!(
        queue::complete(&db.pool, &done[1..]).await.unwrap().len(),
        1
    );

    let p = processing_of(&db.pool, student.event_id).await;
    let finished = task_finished_max(&db.pool, student.event_id).await;
    assert_eq!(p.status, "succeeded");
    assert_eq!(counts(&p), [0, 0, 2, 0]);
    assert_eq!(p.processed_at, Some(finished));
    assert_eq!(
        p.duration_ms,
        Some((finished - student.recorded_at).num_milliseconds())
    );
    assert_eq!(p.error, None);
    assert_eq!(
        counts_map(&db.pool).await,
        expected_counts(&[("succeeded", 2)], &[("succeeded", 2)])
    );

    // The projection's upsert of an event the processor wrote first keeps its status.
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, recorded_at, tx_id) VALUES ($1, 1, 'StudentCreated', 'student', 's-1', 3, $2, 1)
         ON CONFLICT (event_id) DO UPDATE SET global_position = EXCLUDED.global_position,
             event_type = EXCLUDED.event_type, aggregate_type = EXCLUDED.aggregate_type,
             aggregate_id = EXCLUDED.aggregate_id, sequence = EXCLUDED.sequence,
             recorded_at = EXCLUDED.recorded_at",
    )
    .bind(student.event_id)
    .bind(student.recorded_at)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(processing_of(&db.pool, student.event_id).await, p);

    // Both events were processed today: one at its recorded_at, one at `finished`.
    let now = finished + chrono::Duration::seconds(1);
    let since = local_midnight(now, 60);
    let today = [other.recorded_at, finished]
        .iter()
        .filter(|t| **t >= processing::minute_of(since))
        .count() as f64;
    let hours = (now - since).num_milliseconds() as f64 / 3_600_000.0;
    let rate = processing_rate_today(&db.pool, now, 60).await.unwrap();
    assert!(
        (rate - today / hours.max(1.0 / 60.0)).abs() < 1e-9,
        "{rate} vs {today} / {hours}"
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_task_fails_its_event_with_the_last_error_and_a_manual_retry_reopens_it() {
    let db = TestDatabase::new().await;
    let teacher = event("TeacherCreated", 1); // one task, 5 attempts
    react(&db.pool, std::slice::from_ref(&teacher)).await;
    for attempt in 1..=4 {
        let claimed = queue::claim(&db.pool, "w", 10, LONG_LEASE, true)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        if attempt > 1 {
            // Its retry is running: once the refresher recounted it, it is pending again.
            processing::refresh_all(&db.pool).await.unwrap();
            let p = processing_of(&db.pool, teacher.event_id).await;
            assert_eq!((p.status.as_str(), counts(&p)), ("pending", [0, 1, 0, 0]));
        }
        let failed = claimed[0].failed(format!("smtp down ({attempt})"), Some(Duration::ZERO));
        assert_eq!(queue::fail(&db.pool, &[failed]).await.unwrap().len(), 1);
        let p = processing_of(&db.pool, teacher.event_id).await;
        // Waiting for its retry: the event says so, and the admin list filters on it
        // (also sorted by processed time, which reads unfinished events apart).
        assert_eq!((p.status.as_str(), counts(&p)), ("retrying", [1, 0, 0, 0]));
        for sort in [EventSort::Position, EventSort::ProcessedAt] {
            let listed = |status: &str| EventListQuery {
                status: Some(status.into()),
                sort,
                ..EventListQuery::default()
            };
            let retrying = list_admin_events(&db.pool, &listed("retrying"))
                .await
                .unwrap();
            assert_eq!(
                retrying
                    .events
                    .iter()
                    .map(|e| e.event_id)
                    .collect::<Vec<_>>(),
                vec![teacher.event_id],
                "{sort:?}"
            );
            let pending = list_admin_events(&db.pool, &listed("pending"))
                .await
                .unwrap();
            assert!(pending.events.is_empty(), "{sort:?}");
        }
        assert_eq!(
            p.error.as_deref(),
            Some(format!("smtp down ({attempt})").as_str())
        );
    }
    // The last attempt's worker is lost: the rescue makes the task dead.
    let claimed = queue::claim(&db.pool, "w", 10, LONG_LEASE, true)
        .await
        .unwrap();
    assert_eq!(claimed[0].attempt, 5);
    sqlx::query("UPDATE tasks SET lease_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(queue::rescue_expired(&db.pool, 100).await.unwrap(), 1);

    let p = processing_of(&db.pool, teacher.event_id).await;
    let finished = task_finished_max(&db.pool, teacher.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("failed", [0, 0, 0, 1]));
    assert_eq!(p.processed_at, Some(finished));
    assert_eq!(
        p.duration_ms,
        Some((finished - teacher.recorded_at).num_milliseconds())
    );
    assert_eq!(
        p.error.as_deref(),
        Some("the lease expired: worker w was lost")
    );
    assert_eq!(
        counts_map(&db.pool).await,
        expected_counts(&[("failed", 1)], &[("dead", 1)])
    );
    let per_minute = processing::processed_per_minute(
        &db.pool,
        "event",
        processing::minute_of(finished),
        finished + chrono::Duration::minutes(1),
    )
    .await
    .unwrap();
    assert_eq!(
        per_minute,
        vec![(processing::minute_of(finished), "failed".to_owned(), 1)]
    );

    // A manual retry: the event is pending again and leaves its rollup minute.
    let dead_id = claimed[0].id;
    let retry = retry_task(&db.pool, dead_id).await.unwrap();
    let p = processing_of(&db.pool, teacher.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("pending", [1, 0, 0, 0]));
    assert_eq!(p.processed_at, None);
    assert_eq!(
        counts_map(&db.pool).await,
        expected_counts(&[("pending", 1)], &[("dead", 1), ("pending", 1)])
    );
    let rate = processing_rate_today(&db.pool, finished, 0).await.unwrap();
    assert_eq!(rate, 0.0);

    // It succeeds: its outcome replaces the dead task's, so the event is resolved and
    // leaves the failed events (the dead task keeps its status and history).
    let claimed = queue::claim(&db.pool, "w", 10, LONG_LEASE, true)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, retry);
    queue::complete(&db.pool, &[claimed[0].done()])
        .await
        .unwrap();
    let p = processing_of(&db.pool, teacher.event_id).await;
    assert_eq!((p.status.as_str(), counts(&p)), ("succeeded", [0, 0, 1, 0]));
    assert_eq!(
        p.processed_at,
        Some(task_finished_max(&db.pool, teacher.event_id).await)
    );
    assert_eq!(
        counts_map(&db.pool).await,
        expected_counts(&[("succeeded", 1)], &[("dead", 1), ("succeeded", 1)])
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_today_counts_processed_events_since_local_midnight_per_hour() {
    let db = TestDatabase::new().await;
    // Local time UTC-3: at 10:30Z it is 07:30, midnight was 03:00Z, 7.5 hours ago.
    sqlx::query(
        "INSERT INTO processing_rollups (minute, kind, status, shard, count) VALUES
             ('2026-11-22T02:59:00Z', 'event', 'succeeded', 0, 100), -- yesterday, local
             ('2026-11-22T03:00:00Z', 'event', 'succeeded', 0, 4),
             ('2026-11-22T03:00:00Z', 'event', 'succeeded', 3, 1),
             ('2026-11-22T06:10:00Z', 'event', 'pending', 0, 50),    -- not a final status
             ('2026-11-22T09:15:00Z', 'event', 'failed', 1, 2),
             ('2026-11-22T09:15:00Z', 'task', 'succeeded', 1, 70),   -- tasks, not events
             ('2026-11-22T10:30:00Z', 'event', 'succeeded', 2, 2),
             ('2026-11-22T10:31:00Z', 'event', 'succeeded', 0, 9)    -- after now",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let now: DateTime<Utc> = "2026-11-22T10:30:00Z".parse().unwrap();
    let rate = processing_rate_today(&db.pool, now, -180).await.unwrap();
    assert!((rate - 9.0 / 7.5).abs() < 1e-9, "{rate}");
    // In UTC, midnight was 10.5 hours ago and the 02:59 minute counts too.
    let rate = processing_rate_today(&db.pool, now, 0).await.unwrap();
    assert!((rate - 109.0 / 10.5).abs() < 1e-9, "{rate}");
    db.drop_database().await;
}

/// One worker's random walk over the queue.
async fn random_worker(pool: PgPool, name: String, seed: u64, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..rounds {
        let limit = rng.gen_range(1..6);
        let claimed = queue::claim(&pool, &name, limit, LONG_LEASE, true)
            .await
            .unwrap();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut released = Vec::new();
        let mut lost = Vec::new();
        for task in &claimed {
            let me = task.done();
            match rng.gen_range(0..10) {
                0..=4 => done.push(me),
                5 | 6 => failed
                    .push(task.failed(format!("retryable {}", task.attempt), Some(Duration::ZERO))),
                7 => failed.push(task.failed("permanent", None)),
                8 => released.push(me),
                _ => lost.push(task.id),
            }
        }
        queue::complete(&pool, &done).await.unwrap();
        queue::fail(&pool, &failed).await.unwrap();
        queue::release(&pool, &released).await.unwrap();
        if !lost.is_empty() {
            sqlx::query(
                "UPDATE tasks SET lease_until = now() - interval '1 second'
                 WHERE id = ANY($1) AND status = 'running'",
            )
            .bind(&lost)
            .execute(&pool)
            .await
            .unwrap();
            queue::rescue_expired(&pool, 100).await.unwrap();
        }
        if rng.gen_ratio(1, 8) {
            let finished: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM tasks WHERE status IN ('failed', 'dead', 'succeeded')
                 ORDER BY random() LIMIT 1",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some(id) = finished {
                // Another worker may have archived it meanwhile.
                let _ = retry_task(&pool, id).await;
            }
        }
    }
}

type Keyed = BTreeMap<(String, String, String), i64>;

async fn keyed(pool: &PgPool, sql: &str) -> Keyed {
    let rows: Vec<(String, String, String, i64)> =
        sqlx::query_as(sql).fetch_all(pool).await.unwrap();
    rows.into_iter()
        .filter(|r| r.3 != 0)
        .map(|(a, b, c, n)| ((a, b, c), n))
        .collect()
}

/// What the live read `live` keeps equals a recount (`recount`) of the rows; returns it.
async fn live_equals_recount(pool: &PgPool, live: &str, recount: &str, what: &str) -> Keyed {
    let live = keyed(pool, live).await;
    assert_eq!(live, keyed(pool, recount).await, "{what}");
    live
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_counts_and_event_rows_equal_a_full_recount_after_a_random_workload() {
    let db = TestDatabase::new().await;
    let mut rng = StdRng::seed_from_u64(7);
    let types = [
        "StudentCreated",
        "EnrollmentRequested",
        "TeacherCreated",
        "ExamGradeNoteAdded",
        "CourseOpened",
        "DemoNothing",
    ];
    let mut position = 0;
    let mut all = Vec::new();
    for _ in 0..12 {
        let batch: Vec<RecordedEvent> = (0..rng.gen_range(1..12))
            .map(|_| {
                position += 1;
                event(types[rng.gen_range(0..types.len())], position)
            })
            .collect();
        react(&db.pool, &batch).await;
        all.extend(batch);
    }
    // Benchmark-like tasks without an event count as tasks only.
    let mut conn = db.pool.acquire().await.unwrap();
    let noop: Vec<_> = (0..15)
        .map(|i| queue::NewTask::new("noop", format!("noop-{i}"), json!({})))
        .collect();
    queue::insert_tasks(&mut conn, &noop).await.unwrap();
    drop(conn);

    let workers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(random_worker(db.pool.clone(), format!("w{i}"), 100 + i, 40)))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    // A claim of a task whose event was `retrying` leaves that event's recount to the
    // refresher (`queue::CLAIM_SQL`), which every worker process runs: run it here too.
    processing::refresh_all(&db.pool).await.unwrap();
    // Archive what succeeded (a clock a year ahead): the counts keep archived tasks.
    let later = Utc::now() + chrono::Duration::days(365);
    archive_once(&db.pool, later, &ArchiveConfig::default())
        .await
        .unwrap();
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks_archive")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        archived > 0,
        "the workload should have succeeded some tasks"
    );

    // Statuses as counted: a pending task with an error is `retrying`.
    const ALL_TASKS: &str = "(SELECT event_id, status, finished_at FROM
                                 (SELECT event_id, last_error, finished_at,
                                         CASE WHEN status = 'pending' AND last_error IS NOT NULL
                                              THEN 'retrying' ELSE status END AS status FROM tasks
                                  UNION ALL SELECT event_id, last_error, finished_at, status
                                  FROM tasks_archive) a)";
    // Status counts.
    let recount = live_equals_recount(
        &db.pool,
        "SELECT kind, status, '', sum(count)::bigint FROM task_status_counts GROUP BY 1, 2",
        &format!(
            "SELECT 'task', status, '', count(*) FROM {ALL_TASKS} t GROUP BY 2
             UNION ALL SELECT 'event', status, '', count(*) FROM admin_events GROUP BY 2"
        ),
        "status counts",
    )
    .await;
    let from_fn: Keyed = status_counts(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.2 != 0)
        .map(|(k, s, n)| ((k, s, String::new()), n))
        .collect();
    assert_eq!(from_fn, recount);

    // Rollups.
    let live = live_equals_recount(
        &db.pool,
        "SELECT kind, status, minute::text, sum(count)::bigint FROM processing_rollups GROUP BY 1, 2, 3",
        &format!(
            "SELECT 'task', status, date_trunc('minute', finished_at)::text, count(*) FROM {ALL_TASKS} t
             WHERE status IN ('succeeded', 'failed', 'dead') GROUP BY 2, 3
             UNION ALL
             SELECT 'event', status, date_trunc('minute', processed_at)::text, count(*) FROM admin_events
             WHERE status IN ('succeeded', 'failed') GROUP BY 2, 3"
        ),
        "rollups",
    )
    .await;
    assert!(!live.is_empty());

    // The dashboard's rollups (issue #23): events per minute and per hour equal a recount
    // of the events' rows, for their institution (none here) and for the platform; the
    // tasks' deltas add up to the events' task counts.
    for width in ["minute", "hour"] {
        for institution in [dashboard::NO_INSTITUTION, dashboard::ALL_INSTITUTIONS] {
            let live = live_equals_recount(
                &db.pool,
                &format!(
                    "SELECT kind, status, bucket::text, sum(count)::bigint FROM dashboard_rollups
                     WHERE width = '{width}' AND institution_id = '{institution}' AND kind = 'event'
                     GROUP BY 1, 2, 3"
                ),
                &format!(
                    "SELECT 'event', status, date_trunc('{width}', processed_at)::text, count(*)
                     FROM admin_events WHERE status IN ('succeeded', 'failed') GROUP BY 2, 3"
                ),
                &format!("{width} {institution}"),
            )
            .await;
            assert!(!live.is_empty());
            let tasks: (i64, i64) = sqlx::query_as(&format!(
                "SELECT COALESCE(sum(count) FILTER (WHERE status = 'succeeded'), 0)::bigint,
                        COALESCE(sum(count) FILTER (WHERE status = 'failed'), 0)::bigint
                 FROM dashboard_rollups
                 WHERE width = '{width}' AND institution_id = '{institution}' AND kind = 'task'"
            ))
            .fetch_one(&db.pool)
            .await
            .unwrap();
            let counted: (i64, i64) = sqlx::query_as(
                "SELECT sum(tasks_succeeded)::bigint, sum(tasks_failed)::bigint FROM admin_events",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(tasks, counted, "{width} {institution}");
        }
    }
    // What the chart reads: the last hour's points sum to the events processed in it.
    let points = dashboard::series(&db.pool, None, dashboard::Width::Minute, 60, Utc::now())
        .await
        .unwrap();
    assert_eq!(points.len(), 60);
    let charted: i64 = points
        .iter()
        .map(|p| p.events_succeeded + p.events_failed)
        .sum();
    let processed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_events WHERE status IN ('succeeded', 'failed')
         AND processed_at >= date_trunc('minute', now()) - interval '59 minutes'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(charted, processed);
    // The upkeep samples the queue once a minute and keeps what the charts need.
    assert!(dashboard::maintain(&db.pool, Utc::now()).await.unwrap());
    assert!(!dashboard::maintain(&db.pool, Utc::now()).await.unwrap());
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM dashboard_queue_depth")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(samples >= 1);

    // Every event's row against its tasks.
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT event_id, recorded_at FROM admin_events")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), all.len());
    // Only each kind's latest task counts for its event (a manual retry replaces the
    // outcome of the task it retries).
    let tasks: Vec<(Option<Uuid>, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        // `retrying` is not stored: a pending task with an error recorded waits for its
        // retry (the status the dashboard and the event's row show).
        "SELECT DISTINCT ON (event_id, kind) event_id,
                CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 'retrying'
                     ELSE status END,
                finished_at
         FROM (SELECT id, event_id, kind, status, last_error, finished_at FROM tasks
               UNION ALL
               SELECT id, event_id, kind, status, last_error, finished_at FROM tasks_archive) t
         ORDER BY event_id, kind, id DESC",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (id, recorded_at) in rows {
        let row = processing_of(&db.pool, id).await;
        let (status, processed_at, duration_ms) =
            (row.status.clone(), row.processed_at, row.duration_ms);
        let mine: Vec<_> = tasks.iter().filter(|t| t.0 == Some(id)).collect();
        let count = |st: &[&str]| mine.iter().filter(|t| st.contains(&t.1.as_str())).count() as i32;
        let expected = [
            count(&["pending", "retrying"]),
            count(&["running"]),
            count(&["succeeded"]),
            count(&["failed", "dead"]),
        ];
        assert_eq!(counts(&row), expected, "event {id}");
        let expected_status = if expected[0] + expected[1] > 0 {
            if count(&["retrying"]) > 0 {
                "retrying"
            } else {
                "pending"
            }
        } else if expected[3] > 0 {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(status, expected_status, "event {id}");
        let expected_processed = match expected_status {
            "pending" | "retrying" => None,
            _ if mine.is_empty() => Some(recorded_at),
            _ => mine.iter().filter_map(|t| t.2).max(),
        };
        assert_eq!(processed_at, expected_processed, "event {id}");
        assert_eq!(
            duration_ms,
            expected_processed.map(|at| (at - recorded_at).num_milliseconds()),
            "event {id}"
        );
    }
    db.drop_database().await;
}
