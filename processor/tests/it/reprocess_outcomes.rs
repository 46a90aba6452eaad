//! What reprocessing did, as an operator sees it (issue #19): a failed task retried
//! with success resolves its event; a failed original shows its latest copy and that
//! copy's outcome; "failed and not resolved" leaves the fixed ones out; a bulk job
//! counts its copies' outcomes and a second preview leaves out what the first fixed;
//! a copy records the reprocess request's id and starts a trace of its own.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aula_eventlog::metadata::{ORIGINAL_TRACEPARENT, REQUEST_ID, TRACEPARENT};
use aula_eventlog::subscription::SubscriptionOptions;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{shutdown, Actor, Wakeups};
use aula_processor::bulk::{self, BulkOptions};
use aula_processor::handlers::{Registry, TaskContext, TaskError, TaskHandler};
use aula_processor::kinds;
use aula_projections::admin_events::{self, EventListQuery};
use common::*;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Fails for good while `broken` is set, succeeds otherwise.
struct Switch(Arc<AtomicBool>);

#[async_trait::async_trait]
impl TaskHandler for Switch {
    async fn run(&self, _ctx: &TaskContext) -> Result<(), TaskError> {
        if self.0.load(Ordering::SeqCst) {
            Err(TaskError::permanent("the downstream system is down"))
        } else {
            Ok(())
        }
    }
}

/// Appends a `TeacherCreated` (one `notification.link_teacher` task) for `institution`.
async fn append(pool: &PgPool, institution: Uuid, metadata: Value) -> Uuid {
    let mut metadata = metadata;
    metadata["institution_id"] = Value::String(institution.to_string());
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('teacher', gen_random_uuid()::text, 1, 'TeacherCreated', '1.0', '{}', $1)
         RETURNING event_id",
    )
    .bind(metadata)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn row(pool: &PgPool, event_id: Uuid) -> Option<admin_events::AdminEventRow> {
    admin_events::admin_event(pool, event_id).await.unwrap()
}

async fn wait_status(pool: &PgPool, event_id: Uuid, status: &str) {
    eventually(&format!("{event_id} to be {status}"), || async {
        row(pool, event_id)
            .await
            .filter(|r| r.status == status)
            .map(|_| ())
    })
    .await
}

/// The admin list's failed events.
fn failed_events() -> EventListQuery {
    EventListQuery {
        status: Some("failed".into()),
        ..EventListQuery::default()
    }
}

/// The bulk preview of `query` (unresolved events only) and its filter, once the list
/// holds all `count` events: the projection may still be behind the processor.
async fn preview_once_listed(
    pool: &PgPool,
    query: &EventListQuery,
    count: i64,
) -> (aula_processor::Preview, aula_processor::BulkFilter) {
    eventually("the list to hold every event", || async {
        let (preview, filter) = bulk::preview_for(pool, query, false).await.unwrap();
        (preview.count == count).then_some((preview, filter))
    })
    .await
}

/// Failed events and what watches them: a processor whose `notification.link_teacher`
/// handler fails for good while `broken` is set, the `admin_events` projection, and
/// `events` appended for one institution, each waited for until it shows `failed`.
struct Failures {
    db: TestDatabase,
    broken: Arc<AtomicBool>,
    running: Running,
    trigger: shutdown::ShutdownTrigger,
    projection: aula_eventlog::subscription::SubscriptionHandle,
    events: Vec<Uuid>,
}

impl Failures {
    async fn of(count: usize, worker: &str) -> Failures {
        let db = TestDatabase::new().await;
        let broken = Arc::new(AtomicBool::new(true));
        let mut registry = Registry::new();
        registry.register(kinds::LINK_TEACHER_NOTIFICATIONS, Switch(broken.clone()));
        let running = start(&db, registry, fast_config(worker), true).await;
        let (trigger, stop) = shutdown::channel();
        let mut options = SubscriptionOptions::new(admin_events::NAME);
        options.poll_interval = std::time::Duration::from_millis(100);
        let projection =
            aula_projections::spawn_one(db.connect.clone(), options, Wakeups::polling_only(), stop);
        let institution = Uuid::new_v4();
        let mut events = Vec::new();
        for _ in 0..count {
            events.push(append(&db.pool, institution, serde_json::json!({})).await);
        }
        for event in &events {
            wait_status(&db.pool, *event, "failed").await;
        }
        Failures {
            db,
            broken,
            running,
            trigger,
            projection,
            events,
        }
    }

    /// Stops the projection and the processor, and drops the database.
    async fn stop(self) {
        self.trigger.trigger();
        within(self.projection.task).await.unwrap();
        self.running.stop().await;
        self.db.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_and_copies_resolve_failures_and_bulk_jobs_report_their_copies_outcomes() {
    let failures = Failures::of(3, "outcomes").await;
    let Failures {
        db, broken, events, ..
    } = &failures;
    assert_eq!(
        admin_events::failures_resolved_by_copy(&db.pool, None)
            .await
            .unwrap(),
        0
    );

    // The downstream system is back. A manual retry that succeeds resolves its event:
    // it leaves the failed events and the "has failed tasks" list.
    broken.store(false, Ordering::SeqCst);
    let failed_task: i64 = sqlx::query_scalar("SELECT id FROM tasks WHERE event_id = $1")
        .bind(events[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    aula_processor::retry_task(&db.pool, failed_task)
        .await
        .unwrap();
    wait_status(&db.pool, events[0], "succeeded").await;
    let retried = row(&db.pool, events[0]).await.unwrap();
    assert_eq!((retried.tasks_failed, retried.tasks_succeeded), (0, 1));
    let with_failed_tasks = admin_events::count_admin_events(
        &db.pool,
        &EventListQuery {
            has_failed_tasks: Some(true),
            ..EventListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(with_failed_tasks, 2);

    // Bulk-reprocess what is still failed.
    let failed = failed_events();
    let (preview, filter) = preview_once_listed(&db.pool, &failed, 2).await;
    assert_eq!(preview.already_resolved, 0);
    let job = bulk::start_with(
        &db.pool,
        &filter,
        preview.up_to,
        Actor::System,
        BulkOptions::default(),
    )
    .await
    .unwrap();
    // The job reports its copies' tasks' outcomes, not only the copies written.
    let finished = eventually("the copies' tasks to succeed", || async {
        let job = bulk::job(&db.pool, job).await.unwrap().unwrap();
        (job.status == "done" && job.outcomes.succeeded == 2).then_some(job)
    })
    .await;
    assert_eq!(finished.done, 2);
    let requests: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT metadata->>'request_id' FROM events WHERE metadata->>'reprocessed_from' IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(requests, vec![Some(format!("bulk-reprocess:{job}")); 2]);
    assert_eq!(
        (finished.outcomes.failed, finished.outcomes.running),
        (0, 0)
    );

    // Each original shows its latest copy and that it resolved it; its own status stays.
    for original in &events[1..] {
        let resolved = eventually("the original to name its copy", || async {
            row(&db.pool, *original)
                .await
                .filter(|r| r.latest_copy_id.is_some() && r.resolved_by_copy())
        })
        .await;
        assert_eq!(resolved.status, "failed");
        let copy = row(&db.pool, resolved.latest_copy_id.unwrap())
            .await
            .unwrap();
        assert_eq!(copy.reprocessed_from, Some(*original));
        assert_eq!(resolved.latest_copy_status.as_deref(), Some("succeeded"));
    }
    assert_eq!(
        admin_events::failures_resolved_by_copy(&db.pool, None)
            .await
            .unwrap(),
        2
    );
    let unresolved = EventListQuery {
        resolved: Some(false),
        ..failed_events()
    };
    assert_eq!(
        admin_events::list_admin_events(&db.pool, &unresolved)
            .await
            .unwrap()
            .events,
        vec![]
    );
    let listed = admin_events::list_admin_events(&db.pool, &failed)
        .await
        .unwrap()
        .events;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|r| r.resolved_by_copy()));

    // The same bulk again copies nothing: what the last one fixed is left out, unless
    // asked for.
    let (again, _) = bulk::preview_for(&db.pool, &failed, false).await.unwrap();
    assert_eq!((again.count, again.already_resolved), (0, 2));
    let (all, _) = bulk::preview_for(&db.pool, &failed, true).await.unwrap();
    assert_eq!(all.count, 2);

    failures.stop().await;
}

/// A bulk job of the unresolved failures while single `reprocessEvent`s resolve some of
/// them: the job does not copy those again, and counts them `skipped`, so that its
/// `done + failed + skipped` is its total (before, it ended `done` with fewer).
#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_job_counts_what_single_reprocesses_resolved_meanwhile_as_skipped() {
    let failures = Failures::of(6, "skipped").await;
    let Failures {
        db, broken, events, ..
    } = &failures;
    broken.store(false, Ordering::SeqCst);

    // The job is recorded from its preview (six unresolved failures) but not run yet.
    let failed = failed_events();
    let (preview, filter) = preview_once_listed(&db.pool, &failed, 6).await;
    let (job, owner, options) =
        common::job_in_batches_of_two(&db.pool, &filter, preview.up_to).await;

    // Meanwhile an operator reprocesses two of them one by one, and their copies fix them.
    for original in [events[1], events[4]] {
        aula_processor::reprocess_event(&db.pool, original, Actor::User(Uuid::new_v4()))
            .await
            .unwrap();
        eventually("the single copy to resolve its original", || async {
            row(&db.pool, original)
                .await
                .filter(|r| r.resolved_by_copy())
                .map(|_| ())
        })
        .await;
    }

    let end = bulk::run_job(&db.pool, job, &owner, options).await.unwrap();
    assert_eq!(end, bulk::RunEnd::Done);
    let finished = bulk::job(&db.pool, job).await.unwrap().unwrap();
    assert_eq!(finished.status, "done");
    assert_eq!(
        (
            finished.total,
            finished.done,
            finished.failed,
            finished.skipped
        ),
        (6, 4, 0, 2),
        "done + failed + skipped = total"
    );
    // The resolved ones got no second copy.
    for original in [events[1], events[4]] {
        let copies: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE metadata->>'reprocessed_from' = $1",
        )
        .bind(original.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(copies, 1);
    }

    failures.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_records_its_own_request_and_links_to_the_original_trace() {
    let db = TestDatabase::new().await;
    let original_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let original = append(
        &db.pool,
        Uuid::new_v4(),
        serde_json::json!({ "request_id": "original-request", "traceparent": original_trace }),
    )
    .await;
    let copy = aula_processor::reprocess::reprocess_event_for(
        &db.pool,
        original,
        Actor::User(Uuid::new_v4()),
        Some("reprocess-request"),
        None,
    )
    .await
    .unwrap();
    let metadata_of = |id: Uuid| {
        let pool = db.pool.clone();
        async move {
            let metadata: Value =
                sqlx::query_scalar("SELECT metadata::jsonb FROM events WHERE event_id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            metadata
        }
    };
    let metadata = metadata_of(copy.event_id).await;
    assert_eq!(metadata[REQUEST_ID], "reprocess-request");
    assert!(
        metadata.get(TRACEPARENT).is_none(),
        "no exporter here: no trace of its own, and never the original's"
    );
    assert_eq!(metadata[ORIGINAL_TRACEPARENT], original_trace);
    assert!(metadata["actor"].as_str().unwrap().starts_with("user:"));

    // A copy of the copy (no request named) links to the first original's trace.
    let again = aula_processor::reprocess_event(&db.pool, copy.event_id, Actor::System)
        .await
        .unwrap();
    let metadata = metadata_of(again.event_id).await;
    assert!(metadata.get(REQUEST_ID).is_none());
    assert_eq!(metadata[ORIGINAL_TRACEPARENT], original_trace);
    assert_eq!(metadata["reprocessed_from"], original.to_string());

    // The copy's tasks carry the link for their spans, not the original's parent.
    let copy_metadata = metadata_of(copy.event_id).await;
    let copy_event = aula_eventlog::RecordedEvent {
        position: aula_eventlog::LogPosition::START,
        event_id: copy.event_id,
        aggregate_type: "reprocessed".into(),
        aggregate_id: Uuid::new_v4().to_string(),
        sequence: 1,
        event_type: "TeacherCreated".into(),
        event_version: "1.0".into(),
        payload: serde_json::json!({}).into(),
        metadata: copy_metadata.into(),
        recorded_at: chrono::Utc::now(),
    };
    let tasks = aula_processor::reactions::tasks_for(&copy_event);
    assert_eq!(tasks.len(), 1);
    for task in aula_processor::reactions::tasks_for(&copy_event) {
        assert_eq!(task.payload[ORIGINAL_TRACEPARENT], original_trace);
        assert!(task.payload.get(TRACEPARENT).is_none());
    }
    db.drop_database().await;
}
