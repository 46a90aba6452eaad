//! Bulk reprocessing against a real PostgreSQL: the preview's counts, a job that copies
//! exactly the events at or before the preview's position, cancellation, single-use
//! confirm tokens, and a job resumed by another runner after its own died.

use std::time::Duration;

use aula_eventlog::shutdown;
use aula_eventlog::subscription::{SubscriptionOptions, Wakeups};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, LogPosition};
use aula_processor::bulk::{self, BulkFilter, BulkOptions};
use aula_projections::admin_events::EventListQuery;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common;
use common::{eventually, scalar_i64};

/// Appends `n` events of `event_type` for `institution` and writes their
/// `admin_events` rows as the projection would, with processing `status`.
async fn append(pool: &PgPool, event_type: &str, institution: Uuid, status: &str, n: i64) {
    insert_events(pool, event_type, institution, n).await;
    project(pool, status).await;
}

/// Appends `n` events of `event_type` for `institution` to the log only.
async fn insert_events<'c, E: sqlx::PgExecutor<'c>>(
    executor: E,
    event_type: &str,
    institution: Uuid,
    n: i64,
) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'test', gen_random_uuid()::text, 1, $1, '1.0', '{}'::json,
                json_build_object('institution_id', $2::text)
         FROM generate_series(1, $3)",
    )
    .bind(event_type)
    .bind(institution.to_string())
    .bind(n)
    .execute(executor)
    .await
    .unwrap();
}

/// Writes the rows of every event and moves the projection's checkpoint to the last one
/// (no other transaction is open in the tests that use it).
async fn project(pool: &PgPool, status: &str) {
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, institution_id, recorded_at, reprocessed_from, status, processed_at, duration_ms,
             tx_id)
         SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                (metadata->>'institution_id')::uuid, recorded_at,
                (metadata->>'reprocessed_from')::uuid, $1,
                -- As the processor writes it: a time and a duration once not pending.
                CASE WHEN $1 <> 'pending' THEN recorded_at END,
                CASE WHEN $1 <> 'pending' THEN 0 END,
                tx_id::text::bigint
         FROM events ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscription_checkpoints (name, tx_id, global_position)
         SELECT 'admin_events', tx_id, global_position FROM events
         ORDER BY tx_id DESC, global_position DESC LIMIT 1
         ON CONFLICT (name) DO UPDATE
         SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// The last event's place in the log, as a reader orders it.
async fn last_position(pool: &PgPool) -> LogPosition {
    let (tx_id, global_position) = sqlx::query_as(
        "SELECT tx_id::text::bigint, global_position FROM events
         ORDER BY tx_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    LogPosition {
        tx_id,
        global_position,
    }
}

/// `n` succeeded `CourseCreated` events of one institution, and the preview of every
/// event.
async fn courses_previewed(pool: &PgPool, n: i64) -> bulk::Preview {
    append(pool, "CourseCreated", Uuid::new_v4(), "succeeded", n).await;
    bulk::preview(pool, &EventListQuery::default())
        .await
        .unwrap()
}

async fn copies_of_type(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'reprocessed' AND event_type = $1",
    )
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_finished(pool: &PgPool, id: Uuid) -> bulk::BulkJob {
    eventually("the job to finish", || async {
        let job = bulk::job(pool, id).await.unwrap().unwrap();
        (job.status != "running").then_some(job)
    })
    .await
}

#[tokio::test]
async fn the_preview_counts_what_the_filter_matches_by_type_and_status() {
    let db = TestDatabase::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "CourseCreated", a, "succeeded", 5).await;
    append(&db.pool, "StudentEnrolled", a, "failed", 3).await;
    append(&db.pool, "CourseCreated", b, "succeeded", 4).await;

    let all = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    assert_eq!(all.count, 12);
    assert_eq!(
        all.by_type,
        vec![("CourseCreated".into(), 9), ("StudentEnrolled".into(), 3)]
    );
    assert_eq!(
        all.by_status,
        vec![("failed".into(), 3), ("succeeded".into(), 9)]
    );
    assert_eq!(all.up_to, last_position(&db.pool).await);

    let query = EventListQuery {
        institution_id: Some(a),
        event_types: vec!["CourseCreated".into()],
        ..EventListQuery::default()
    };
    let scoped = bulk::preview(&db.pool, &query).await.unwrap();
    assert_eq!(scoped.count, 5);
    assert_eq!(scoped.by_status, vec![("succeeded".into(), 5)]);

    let failed_only = EventListQuery {
        status: Some("failed".into()),
        ..EventListQuery::default()
    };
    assert_eq!(
        bulk::preview(&db.pool, &failed_only).await.unwrap().count,
        3
    );
}

#[tokio::test]
async fn a_job_copies_every_matching_event_up_to_the_preview_position_and_no_later_one() {
    let db = TestDatabase::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "CourseCreated", a, "succeeded", 450).await;
    append(&db.pool, "CourseCreated", b, "succeeded", 7).await;
    let query = EventListQuery {
        institution_id: Some(a),
        ..EventListQuery::default()
    };
    let preview = bulk::preview(&db.pool, &query).await.unwrap();
    assert_eq!(preview.count, 450);
    // Arrives after the preview: not included.
    append(&db.pool, "CourseCreated", a, "succeeded", 20).await;

    let admin = Uuid::new_v4();
    let id = bulk::start(
        &db.pool,
        &BulkFilter::from(&query),
        preview.up_to,
        Actor::User(admin),
    )
    .await
    .unwrap();
    let job = wait_finished(&db.pool, id).await;
    assert_eq!(job.status, "done");
    assert_eq!((job.total, job.done, job.failed), (450, 450, 0));
    assert_eq!(job.requested_by, format!("user:{admin}"));
    assert_eq!(job.institution_id, Some(a));
    assert_eq!(
        (job.up_to_tx, job.up_to_position),
        (preview.up_to.tx_id, preview.up_to.global_position)
    );

    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, 450);
    // Each original at or before the position, of institution a, has exactly one copy;
    // the later ones and the other institution's have none.
    let (copied, late_copied, other_copied): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE (e.tx_id::text::bigint, e.global_position) <= ($4, $1)),
                count(*) FILTER (WHERE (e.tx_id::text::bigint, e.global_position) > ($4, $1)),
                count(*) FILTER (WHERE (e.metadata->>'institution_id')::uuid = $3)
         FROM events e
         WHERE e.aggregate_type = 'test'
           AND (SELECT count(*) FROM events c
                WHERE c.metadata->>'reprocessed_from' = e.event_id::text) = 1
           AND ((e.metadata->>'institution_id')::uuid = $2 OR (e.metadata->>'institution_id')::uuid = $3)",
    )
    .bind(preview.up_to.global_position)
    .bind(a)
    .bind(b)
    .bind(preview.up_to.tx_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((copied, late_copied, other_copied), (450, 0, 0));

    // A second job over everything skips the copies themselves.
    project(&db.pool, "pending").await;
    let everything = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    assert_eq!(everything.count, 450 + 7 + 20);
}

/// The race the bound exists for. An event inserted before the preview but committed
/// after it has a smaller position than an event the log already holds; a bound by
/// position alone took it in. With the real projection running, the preview must count
/// what the list held, and the job must copy exactly that, not what reached the list
/// afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_committed_after_the_preview_is_not_included_though_its_position_is_smaller() {
    let db = TestDatabase::new().await;
    let (trigger, shutdown) = shutdown::channel();
    let mut options = SubscriptionOptions::new(aula_projections::admin_events::NAME);
    options.poll_interval = Duration::from_millis(20);
    options.standby_interval = Duration::from_millis(20);
    let projection = aula_projections::spawn_one(
        db.connect.clone(),
        options,
        Wakeups::polling_only(),
        shutdown,
    );
    let handled = |n: i64| {
        let pool = db.pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                let count = scalar_i64(
                    &pool,
                    "SELECT COALESCE((SELECT events_handled FROM subscription_checkpoints
                                      WHERE name = 'admin_events'), 0)",
                )
                .await;
                (count == n).then_some(())
            }
        }
    };
    let institution = Uuid::new_v4();
    insert_events(&db.pool, "CourseCreated", institution, 5).await;
    eventually("the projection to handle the first events", handled(5)).await;

    // Inserted now, committed after the preview.
    let mut late = db.pool.begin().await.unwrap();
    insert_events(&mut *late, "CourseCreated", institution, 1).await;
    // Committed now, with a larger position; the projection cannot pass the open
    // transaction, so the list does not hold it either.
    insert_events(&db.pool, "CourseCreated", institution, 1).await;

    let preview = bulk::preview(&db.pool, &EventListQuery::default())
        .await
        .unwrap();
    assert_eq!(preview.count, 5);
    late.commit().await.unwrap();
    eventually("the projection to handle the later events", handled(7)).await;

    let id = bulk::start(
        &db.pool,
        &BulkFilter::default(),
        preview.up_to,
        Actor::System,
    )
    .await
    .unwrap();
    let job = wait_finished(&db.pool, id).await;
    assert_eq!((job.status.as_str(), job.total, job.done), ("done", 5, 5));
    // Exactly the five events the preview counted have a copy.
    let uncopied: Vec<i64> = sqlx::query_scalar(
        "SELECT e.global_position FROM events e
         WHERE e.aggregate_type = 'test'
           AND NOT EXISTS (SELECT 1 FROM events c WHERE c.metadata->>'reprocessed_from' = e.event_id::text)
         ORDER BY e.global_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let positions = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'test'",
    )
    .await;
    assert_eq!(positions, 7);
    assert_eq!(
        uncopied.len(),
        2,
        "copied besides the preview's five: {uncopied:?}"
    );
    trigger.trigger();
    projection.task.await.unwrap();
}

/// A job of everything `preview` counted, run on `runner`'s connections in batches of
/// 10 with 100 ms between them, once its first batch is done.
async fn started_in_small_batches(runner: &PgPool, pool: &PgPool, preview: &bulk::Preview) -> Uuid {
    let id = bulk::start_with(
        runner,
        &BulkFilter::default(),
        preview.up_to,
        Actor::System,
        BulkOptions {
            batch_size: 10,
            pause: Duration::from_millis(100),
            ..BulkOptions::default()
        },
    )
    .await
    .unwrap();
    eventually("a first batch", || async {
        let job = bulk::job(pool, id).await.unwrap().unwrap();
        (job.done > 0).then_some(())
    })
    .await;
    id
}

#[tokio::test]
async fn cancelling_stops_a_job_before_its_next_batch() {
    let db = TestDatabase::new().await;
    let preview = courses_previewed(&db.pool, 300).await;
    let id = started_in_small_batches(&db.pool, &db.pool, &preview).await;
    let cancelled = bulk::cancel(&db.pool, id).await.unwrap();
    assert_eq!(cancelled.status, "cancelled");
    // Let any batch in flight finish, then check nothing moves any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = bulk::job(&db.pool, id).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = bulk::job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(later.status, "cancelled");
    assert_eq!(later.done, after.done);
    assert!(later.done < 300, "cancelled after {} of 300", later.done);
    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, later.done);

    // Cancelling a finished job leaves it as it was; an unknown job is an error.
    assert_eq!(
        bulk::cancel(&db.pool, id).await.unwrap().status,
        "cancelled"
    );
    assert!(matches!(
        bulk::cancel(&db.pool, Uuid::new_v4()).await,
        Err(bulk::BulkError::JobNotFound(_))
    ));
}

/// How many originals of `event_type` have exactly `n` copies.
async fn originals_with_copies(pool: &PgPool, event_type: &str, n: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e
         WHERE e.aggregate_type = 'test' AND e.event_type = $1
           AND (SELECT count(*) FROM events c
                WHERE c.metadata->>'reprocessed_from' = e.event_id::text) = $2",
    )
    .bind(event_type)
    .bind(n)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_runner_dies_is_resumed_elsewhere_and_copies_every_event_exactly_once() {
    let db = TestDatabase::new().await;
    let preview = courses_previewed(&db.pool, 120).await;
    let options = BulkOptions {
        batch_size: 7,
        pause: Duration::from_millis(30),
        lease: Duration::from_millis(800),
    };
    let id = bulk::create_job(
        &db.pool,
        &BulkFilter::default(),
        preview.up_to,
        Actor::System,
        None,
        "doomed",
        options.lease,
    )
    .await
    .unwrap();

    // The first runner has a pool of its own; it dies mid-way: its task is aborted
    // (whatever batch it had open is rolled back) and its connections are closed.
    let doomed_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.connect.clone())
        .await
        .unwrap();
    let doomed = tokio::spawn({
        let pool = doomed_pool.clone();
        async move { bulk::run_job(&pool, id, "doomed", options).await }
    });
    eventually(
        "the first runner to have committed a few batches",
        || async {
            let job = bulk::job(&db.pool, id).await.unwrap().unwrap();
            (job.done >= 30).then_some(())
        },
    )
    .await;
    doomed.abort();
    let _ = doomed.await;
    doomed_pool.close().await;
    let orphaned = bulk::job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(orphaned.status, "running");
    assert!(
        orphaned.done < 120,
        "the runner died after {} of 120",
        orphaned.done
    );
    assert_eq!(
        copies_of_type(&db.pool, "CourseCreated").await,
        orphaned.done,
        "the copies are exactly the committed progress"
    );

    // A live service's resumer takes the job over once its lease has expired.
    let (stop, shutdown) = aula_eventlog::shutdown::channel();
    let resumer = tokio::spawn(bulk::run_resumer(db.pool.clone(), options, shutdown));
    let job = wait_finished(&db.pool, id).await;
    stop.trigger();
    resumer.await.unwrap();
    assert_eq!(job.status, "done");
    assert_eq!((job.total, job.done, job.failed), (120, 120, 0));
    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, 120);
    assert_eq!(
        originals_with_copies(&db.pool, "CourseCreated", 1).await,
        120,
        "every original copied exactly once"
    );
    let owner: Option<String> =
        sqlx::query_scalar("SELECT owner FROM bulk_reprocess_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(owner.as_deref(), Some("doomed"));

    // The first runner, were it only slow and back now, is fenced out.
    assert_eq!(
        bulk::run_job(&db.pool, id, "doomed", options)
            .await
            .unwrap(),
        bulk::RunEnd::Stopped
    );
    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, 120);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirm_token_starts_one_job_only() {
    let db = TestDatabase::new().await;
    let preview = courses_previewed(&db.pool, 5).await;
    let start = |token: &'static str| {
        let pool = db.pool.clone();
        async move {
            bulk::start_confirmed(
                &pool,
                &BulkFilter::default(),
                preview.up_to,
                Actor::System,
                token,
            )
            .await
        }
    };
    let id = start("token-one").await.unwrap();
    assert!(matches!(
        start("token-one").await,
        Err(bulk::BulkError::ConfirmTokenUsed)
    ));
    // Another token is another job.
    start("token-two").await.unwrap();
    let job = wait_finished(&db.pool, id).await;
    assert_eq!(job.status, "done");
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM bulk_reprocess_jobs").await,
        2
    );
}

/// The job's connections are cut mid-job (as by a database restart): the job pauses
/// and goes on from where it stood instead of ending `failed`, and copies every event
/// exactly once. Before: it ended `failed` (or, when marking it failed failed too, sat
/// `running` until its lease passed to another service).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_connections_are_cut_pauses_and_finishes() {
    let db = TestDatabase::new().await;
    let preview = courses_previewed(&db.pool, 100).await;
    let runner = aula_eventlog::db::pool(db.connect.clone().application_name("bulk-runner"), 4)
        .await
        .unwrap();
    let id = started_in_small_batches(&runner, &db.pool, &preview).await;
    for _ in 0..3 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'bulk-runner'",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let finished = wait_finished(&db.pool, id).await;
    assert_eq!(finished.status, "done", "{:?}", finished.error);
    assert_eq!(
        (finished.done, finished.failed, finished.skipped),
        (100, 0, 0)
    );
    assert_eq!(
        originals_with_copies(&db.pool, "CourseCreated", 1).await,
        100
    );
}

/// Five failed `CourseCreated` and five pending `CourseUpdated`, and a job (in batches
/// of two, not yet run) on the failed events: the job, its runner's name and options.
async fn job_on_failed_courses() -> (TestDatabase, Uuid, String, BulkOptions) {
    let db = TestDatabase::new().await;
    let institution = Uuid::new_v4();
    append(&db.pool, "CourseCreated", institution, "failed", 5).await;
    append(&db.pool, "CourseUpdated", institution, "pending", 5).await;
    let filter = BulkFilter {
        status: Some("failed".into()),
        ..BulkFilter::default()
    };
    let up_to = bulk::current_bound(&db.pool).await.unwrap();
    let (id, owner, options) = common::job_in_batches_of_two(&db.pool, &filter, up_to).await;
    (db, id, owner, options)
}

/// A job works on the set its preview matched when it started: an event at or before
/// the bound that starts matching the filter afterwards (its tasks failed after the
/// preview) is not copied, so `done + failed + skipped` is `total`. Before: the job
/// copied it too and ended with `done` 10 of `total` 5.
#[tokio::test]
async fn an_event_that_starts_matching_after_the_start_is_not_in_the_job() {
    let (db, id, owner, options) = job_on_failed_courses().await;
    // Their tasks fail after the job started: they match its filter now.
    sqlx::query(
        "UPDATE admin_events SET status = 'failed', processed_at = recorded_at, duration_ms = 0
         WHERE event_type = 'CourseUpdated'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let end = bulk::run_job(&db.pool, id, &owner, options).await.unwrap();
    assert_eq!(end, bulk::RunEnd::Done);
    let job = bulk::job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        (job.total, job.done, job.failed, job.skipped),
        (5, 5, 0, 0),
        "total, done, failed, skipped"
    );
    assert_eq!(copies_of_type(&db.pool, "CourseCreated").await, 5);
    assert_eq!(copies_of_type(&db.pool, "CourseUpdated").await, 0);
}

/// A job recorded before its members were (migration 0053: `fixed_members` false)
/// filters the list as it goes, but stops once it has copied `total` events.
#[tokio::test]
async fn a_job_recorded_before_its_members_stops_at_its_total() {
    let (db, id, owner, options) = job_on_failed_courses().await;
    sqlx::raw_sql(
        "UPDATE bulk_reprocess_jobs SET fixed_members = false;
         DELETE FROM bulk_reprocess_members;
         UPDATE admin_events SET status = 'failed', processed_at = recorded_at, duration_ms = 0
         WHERE event_type = 'CourseUpdated';",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    bulk::run_job(&db.pool, id, &owner, options).await.unwrap();
    let job = bulk::job(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        (
            job.status.as_str(),
            job.total,
            job.done + job.failed + job.skipped
        ),
        ("done", 5, 5)
    );
}
