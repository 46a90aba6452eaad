//! Queue controls against a real PostgreSQL (issue #19): cancel (and a claim racing
//! it), force release (and the released worker's late outcome refused by the fence),
//! pause and resume a kind, a waiting task's priority, and the `retrying` status. Every
//! test also checks the status counters against the tasks themselves.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use aula_processor::controls::{self, ControlError, DISPLAY_STATUS_SQL};
use aula_processor::kinds;
use aula_processor::queue::{self, NewTask};
use aula_processor::task_list::{list_tasks, TaskListQuery};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

fn operator() -> Actor {
    Actor::User(Uuid::from_u128(7))
}

async fn insert(pool: &PgPool, kind: &str, n: usize) -> Vec<i64> {
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| NewTask::new(kind, format!("{kind}:{i}:{}", Uuid::new_v4()), json!({})))
        .collect();
    let mut conn = pool.acquire().await.unwrap();
    queue::insert_tasks(&mut conn, &tasks).await.unwrap();
    sqlx::query_scalar("SELECT id FROM tasks WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn status_of(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar(&format!(
        "SELECT {DISPLAY_STATUS_SQL} FROM tasks WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The counters (`task_status_counts`) agree with the tasks, `retrying` included.
async fn assert_counts_match(pool: &PgPool) {
    let actual: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(&format!(
        "SELECT {DISPLAY_STATUS_SQL}, count(*) FROM tasks GROUP BY 1"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let counted: BTreeMap<String, i64> = aula_processor::status_counts(pool)
        .await
        .unwrap()
        .into_iter()
        .filter(|(kind, _, n)| kind == "task" && *n != 0)
        .map(|(_, status, n)| (status, n))
        .collect();
    assert_eq!(counted, actual);
}

async fn audit_actions(pool: &PgPool) -> Vec<(String, Option<i64>, Option<String>)> {
    controls::control_log(pool, None, 100)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| (e.action, e.task_id, e.kind))
        .collect()
}

/// The status a control moved its task from, and to.
fn moved(change: &controls::TaskControlled) -> (&str, &str) {
    (&change.from, &change.to)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempt_leaves_the_task_retrying_with_its_next_run_time() {
    let db = TestDatabase::new().await;
    let id = insert(&db.pool, kinds::NOOP, 1).await[0];
    assert_eq!(status_of(&db.pool, id).await, "pending");
    let claimed = queue::claim(&db.pool, "w", 10, LEASE, true).await.unwrap();
    let failed = claimed[0].failed("smtp down", Some(Duration::from_secs(3600)));
    queue::fail(&db.pool, &[failed]).await.unwrap();
    assert_eq!(status_of(&db.pool, id).await, "retrying");
    assert_counts_match(&db.pool).await;

    let listed = |status: &str| TaskListQuery {
        status: Some(status.into()),
        ..TaskListQuery::default()
    };
    let page = list_tasks(&db.pool, &listed("retrying")).await.unwrap();
    assert_eq!(page.tasks.len(), 1);
    let row = &page.tasks[0];
    assert_eq!((row.id, row.status.as_str()), (id, "retrying"));
    assert!(row.run_at > chrono::Utc::now() + chrono::Duration::minutes(59));
    assert!(list_tasks(&db.pool, &listed("pending"))
        .await
        .unwrap()
        .tasks
        .is_empty());

    // Due again, it is claimed like any pending task, and leaves the retrying count.
    sqlx::query("UPDATE tasks SET run_at = now()")
        .execute(&db.pool)
        .await
        .unwrap();
    let claimed = queue::claim_deferred(&db.pool, "w", 10, LEASE, true)
        .await
        .unwrap();
    assert_eq!((claimed[0].id, claimed[0].attempt), (id, 2));
    assert_counts_match(&db.pool).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_waiting_task_keeps_it_in_history_and_no_claim_takes_it() {
    let db = TestDatabase::new().await;
    let ids = insert(&db.pool, kinds::NOOP, 3).await;
    // One retrying, one pending, one running.
    let claimed = queue::claim(&db.pool, "w", 1, LEASE, true).await.unwrap();
    let retrying = claimed[0].id;
    queue::fail(
        &db.pool,
        &[claimed[0].failed("boom", Some(Duration::from_secs(3600)))],
    )
    .await
    .unwrap();
    let pending = ids.iter().copied().find(|id| *id != retrying).unwrap();
    let done = controls::cancel_task(&db.pool, pending, &operator())
        .await
        .unwrap();
    assert_eq!(moved(&done), ("pending", "cancelled"));
    let done = controls::cancel_task(&db.pool, retrying, &operator())
        .await
        .unwrap();
    assert_eq!(done.from, "retrying");
    let running = queue::claim(&db.pool, "w", 10, LEASE, true).await.unwrap();
    assert_eq!(running.len(), 1, "only the third task was claimable");
    let refused = controls::cancel_task(&db.pool, running[0].id, &operator()).await;
    assert!(
        matches!(refused, Err(ControlError::WrongStatus { ref status, .. }) if status == "running"),
        "{refused:?}"
    );
    assert!(matches!(
        controls::cancel_task(&db.pool, 999_999, &operator()).await,
        Err(ControlError::TaskNotFound(999_999))
    ));
    // Cancelled stays cancelled: a due run time changes nothing.
    sqlx::query("UPDATE tasks SET run_at = now() - interval '1 hour' WHERE status = 'cancelled'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(queue::claim(&db.pool, "w", 10, LEASE, true)
        .await
        .unwrap()
        .is_empty());
    let (finished, attempts): (bool, i64) = sqlx::query_as(
        "SELECT bool_and(finished_at IS NOT NULL),
                (SELECT count(*) FROM task_attempts WHERE task_id = $1)
         FROM tasks WHERE status = 'cancelled'",
    )
    .bind(retrying)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(finished);
    assert_eq!(attempts, 1, "the failed attempt stays in the history");
    assert_counts_match(&db.pool).await;
    assert_eq!(
        audit_actions(&db.pool).await,
        vec![
            ("cancel".into(), Some(pending), Some(kinds::NOOP.into())),
            ("cancel".into(), Some(retrying), Some(kinds::NOOP.into())),
        ]
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_racing_a_cancel_never_runs_a_cancelled_task() {
    let db = TestDatabase::new().await;
    let ids = insert(&db.pool, kinds::NOOP, 400).await;
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let mut claimed = Vec::new();
                for _ in 0..200 {
                    let batch = queue::claim_deferred(&pool, &format!("w{w}"), 3, LEASE, true)
                        .await
                        .unwrap();
                    claimed.extend(batch.iter().map(|t| t.id));
                    tokio::task::yield_now().await;
                }
                claimed
            })
        })
        .collect();
    let cancellers: Vec<_> = (0..4)
        .map(|c| {
            let pool = db.pool.clone();
            // Each canceller takes every fourth task, from both ends of the list, so
            // cancels meet claims on the tasks the claims reach first and last.
            let mine: Vec<i64> = ids.iter().copied().skip(c).step_by(4).collect();
            tokio::spawn(async move {
                let mut cancelled = Vec::new();
                let (front, back) = mine.split_at(mine.len() / 2);
                for id in front.iter().chain(back.iter().rev()) {
                    match controls::cancel_task(&pool, *id, &operator()).await {
                        Ok(_) => cancelled.push(*id),
                        Err(ControlError::WrongStatus { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                cancelled
            })
        })
        .collect();
    let mut claimed = HashSet::new();
    for handle in claimers {
        for id in handle.await.unwrap() {
            assert!(claimed.insert(id), "task {id} claimed twice");
        }
    }
    let mut cancelled = HashSet::new();
    for handle in cancellers {
        cancelled.extend(handle.await.unwrap());
    }
    assert!(claimed.is_disjoint(&cancelled));
    assert!(
        !claimed.is_empty() && !cancelled.is_empty(),
        "no race happened"
    );
    for id in &claimed {
        assert_eq!(status_of(&db.pool, *id).await, "running");
    }
    let cancelled_attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE t.status = 'cancelled'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(cancelled_attempts, 0, "a cancelled task was started");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE status NOT IN ('running', 'cancelled', 'pending')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_counts_match(&db.pool).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_force_released_task_is_claimable_again_and_its_old_worker_is_fenced_out() {
    let db = TestDatabase::new().await;
    let id = insert(&db.pool, kinds::NOOP, 1).await[0];
    let first = queue::claim(&db.pool, "stuck", 1, LEASE, true)
        .await
        .unwrap()
        .remove(0);
    assert!(matches!(
        controls::cancel_task(&db.pool, id, &operator()).await,
        Err(ControlError::WrongStatus { .. })
    ));
    let released = controls::force_release(&db.pool, id, &operator())
        .await
        .unwrap();
    assert_eq!(moved(&released), ("running", "retrying"));
    let (outcome, lease): (String, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT a.outcome, t.lease_until FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.task_id = $1 AND a.attempt = 1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((outcome.as_str(), lease), ("force_released", None));
    assert!(matches!(
        controls::force_release(&db.pool, id, &operator()).await,
        Err(ControlError::WrongStatus { .. })
    ));

    // The stuck worker wakes up: nothing it reports is accepted, before or after the
    // task is claimed again.
    assert!(queue::heartbeat(&db.pool, &[first.done()], LEASE)
        .await
        .unwrap()
        .is_empty());
    assert!(queue::complete_deferred(&db.pool, &[first.done()])
        .await
        .unwrap()
        .is_empty());
    assert!(queue::complete(&db.pool, &[first.done()])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(status_of(&db.pool, id).await, "retrying");
    let second = queue::claim(&db.pool, "fresh", 1, LEASE, true)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((second.id, second.attempt), (id, 2));
    assert!(queue::complete_deferred(&db.pool, &[first.done()])
        .await
        .unwrap()
        .is_empty());
    assert!(queue::fail(&db.pool, &[first.failed("late", None)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(status_of(&db.pool, id).await, "running");
    assert_eq!(
        queue::complete_deferred(&db.pool, &[second.done()])
            .await
            .unwrap(),
        vec![id]
    );
    assert_eq!(status_of(&db.pool, id).await, "succeeded");
    assert_counts_match(&db.pool).await;
    assert_eq!(
        audit_actions(&db.pool).await,
        vec![("force_release".into(), Some(id), Some(kinds::NOOP.into()))]
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_kind_is_never_claimed_and_resuming_makes_it_claimable() {
    let db = TestDatabase::new().await;
    let grades = insert(&db.pool, kinds::NOTIFY_GRADE, 5).await;
    let noops = insert(&db.pool, kinds::NOOP, 2).await;
    // Grade notifications come first by priority (40 < 50): pausing them lets the
    // noops through.
    let paused = controls::pause_kind(&db.pool, kinds::NOTIFY_GRADE, &operator())
        .await
        .unwrap();
    assert_eq!((paused.changed, paused.tasks), (true, 5));
    let again = controls::pause_kind(&db.pool, kinds::NOTIFY_GRADE, &operator())
        .await
        .unwrap();
    assert!(!again.changed);
    assert!(matches!(
        controls::pause_kind(&db.pool, "no.such.kind", &operator()).await,
        Err(ControlError::UnknownKind(_))
    ));
    for id in &grades {
        assert_eq!(status_of(&db.pool, *id).await, "paused");
    }
    // A task of the paused kind that becomes due afterwards is parked by the first
    // claim that meets it, never run.
    let late = insert(&db.pool, kinds::NOTIFY_GRADE, 1).await;
    let late: Vec<i64> = late.into_iter().filter(|id| !grades.contains(id)).collect();
    assert_eq!(late.len(), 1);
    let claimed: Vec<i64> = queue::claim_deferred(&db.pool, "w", 10, LEASE, true)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(claimed, noops);
    assert_eq!(status_of(&db.pool, late[0]).await, "paused");
    assert!(queue::claim(&db.pool, "w", 10, LEASE, true)
        .await
        .unwrap()
        .is_empty());
    let listed = controls::paused_kinds(&db.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].kind.as_str(), listed[0].waiting),
        (kinds::NOTIFY_GRADE, 6)
    );
    assert_eq!(listed[0].paused_by, operator().to_string());
    assert_counts_match(&db.pool).await;

    // A priority change and a cancel apply to parked tasks too.
    let previous = controls::set_priority(&db.pool, grades[0], 5, &operator())
        .await
        .unwrap();
    assert_eq!(previous, 40);
    controls::cancel_task(&db.pool, grades[1], &operator())
        .await
        .unwrap();

    let resumed = controls::resume_kind(&db.pool, kinds::NOTIFY_GRADE, &operator())
        .await
        .unwrap();
    assert_eq!((resumed.changed, resumed.tasks), (true, 5));
    assert!(controls::paused_kinds(&db.pool).await.unwrap().is_empty());
    let first = queue::claim(&db.pool, "w", 1, LEASE, true).await.unwrap();
    assert_eq!(first[0].id, grades[0], "priority 5 runs first");
    let claimed = queue::claim(&db.pool, "w", 10, LEASE, true).await.unwrap();
    assert_eq!(claimed.len(), 4);
    assert_counts_match(&db.pool).await;
    let actions: Vec<String> = audit_actions(&db.pool)
        .await
        .into_iter()
        .map(|(action, _, _)| action)
        .collect();
    assert_eq!(actions, ["pause", "set_priority", "cancel", "resume"]);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_parked_while_its_kind_was_resumed_is_unparked_by_the_sweep() {
    let db = TestDatabase::new().await;
    let ids = insert(&db.pool, kinds::NOOP, 2).await;
    controls::pause_kind(&db.pool, kinds::NOOP, &operator())
        .await
        .unwrap();
    // A claim whose snapshot predates the resume can park a task after the resume
    // moved the parked ones back; that late park is made by hand here.
    controls::resume_kind(&db.pool, kinds::NOOP, &operator())
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET status = 'paused' WHERE id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(controls::unpark_resumed(&db.pool).await.unwrap(), 1);
    assert_eq!(status_of(&db.pool, ids[0]).await, "pending");
    // While paused, the sweep leaves parked tasks alone.
    controls::pause_kind(&db.pool, kinds::NOOP, &operator())
        .await
        .unwrap();
    assert_eq!(controls::unpark_resumed(&db.pool).await.unwrap(), 0);
    assert_eq!(status_of(&db.pool, ids[1]).await, "paused");
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_tasks_priority_changes_its_place_and_nothing_else_can_change() {
    let db = TestDatabase::new().await;
    let ids = insert(&db.pool, kinds::NOOP, 3).await;
    assert_eq!(
        controls::set_priority(&db.pool, ids[2], 1, &operator())
            .await
            .unwrap(),
        50
    );
    assert!(matches!(
        controls::set_priority(&db.pool, ids[1], 101, &operator()).await,
        Err(ControlError::PriorityOutOfRange(101))
    ));
    assert!(matches!(
        controls::set_priority(&db.pool, ids[1], -1, &operator()).await,
        Err(ControlError::PriorityOutOfRange(-1))
    ));
    let first = queue::claim(&db.pool, "w", 1, LEASE, true).await.unwrap();
    assert_eq!(first[0].id, ids[2]);
    assert!(matches!(
        controls::set_priority(&db.pool, ids[2], 3, &operator()).await,
        Err(ControlError::WrongStatus { .. })
    ));
    let page = list_tasks(
        &db.pool,
        &TaskListQuery {
            priority: Some(1),
            ..TaskListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    db.drop_database().await;
}
