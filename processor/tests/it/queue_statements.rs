//! The queue's statements themselves: where a claim starts (its hint), the plans the
//! batch statements get under generic plans, and the `(event, kind)` dedupe across the
//! queue and its history.

use std::time::Duration;

use crate::common::{until_waiting_on_a_lock, within};
use aula_eventlog::testing::TestDatabase;
use aula_processor::queue::{self, NewTask};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::queue::{insert, task};
use crate::reactions_batch::teacher_created_read_from_the_log;

/// The claiming loop's shortcut (`queue::ClaimHint`): a hinted claim walks the claim
/// index from its hint, so it does not see a more urgent task that arrived after the
/// hint was taken; the claim from the front, which the loop makes at least once per
/// `ClaimHint::FRONT_EVERY` and whenever tasks are notified, does, and so does the claim
/// of the priorities before the hint's, made every `ClaimHint::LIFETIME`. The plans
/// really start at the hint and stop at its priority (index conditions), or the
/// shortcuts would save nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_hinted_claim_starts_at_its_hint_and_the_front_finds_what_it_passed() {
    let db = TestDatabase::new().await;
    let lease = Duration::from_secs(30);
    let tasks: Vec<NewTask> = (0..6).map(|i| task("noop", &format!("k{i}"))).collect();
    insert(&db.pool, &tasks).await;
    let first = queue::claim_deferred_from(&db.pool, "w", 2, lease, true, None)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let hint = queue::ClaimHint::of(&first).unwrap();
    assert_eq!(hint.priority, first[0].priority);

    let mut urgent = task("noop", "urgent");
    urgent.priority = 0;
    insert(&db.pool, &[urgent]).await;
    let hinted = queue::claim_deferred_from(&db.pool, "w", 10, lease, true, Some(hint))
        .await
        .unwrap();
    let mut keys: Vec<String> = hinted.iter().map(|t| t.idempotency_key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["k2", "k3", "k4", "k5"].map(String::from).to_vec());
    let front = queue::claim_deferred_from(&db.pool, "w", 10, lease, true, None)
        .await
        .unwrap();
    assert_eq!(front.len(), 1);
    assert_eq!(front[0].idempotency_key, "urgent");

    // The claim of the priorities before the hint (every `ClaimHint::LIFETIME`) finds a
    // more urgent task and nothing at the hint's own priority.
    let mut urgent = task("noop", "urgent again");
    urgent.priority = 0;
    insert(&db.pool, &[urgent, task("noop", "k6")]).await;
    let before = queue::claim_deferred_at(
        &db.pool,
        "w",
        10,
        lease,
        true,
        queue::ClaimStart::BeforeHint(hint),
    )
    .await
    .unwrap();
    let keys: Vec<&str> = before.iter().map(|t| t.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["urgent again"]);

    // A backlog as the shortcut is for, with its statistics.
    analyzed_backlog(&db.pool).await;
    assert_starts_at_the_hint(
        &db.pool,
        queue::CLAIM_DEFERRED_FROM_SQL,
        "bigint, float8, text, bool, smallint, bool, smallint, timestamptz",
        "24, 60000, 'w', true, 1, true, 50, now()",
    )
    .await;
    let plan = generic_plan(
        &db.pool,
        queue::CLAIM_DEFERRED_BEFORE_SQL,
        "bigint, float8, text, bool, smallint, bool, smallint",
        "24, 60000, 'w', true, 1, true, 50",
    )
    .await;
    let text = plan.join("\n");
    assert!(
        text.contains("task_queue_claim_idx")
            && plan
                .iter()
                .any(|line| line.contains("Index Cond:") && line.contains("(priority < $7)")),
        "the claim before the hint does not stop its index scan at the hint's priority:\n{text}"
    );
    db.drop_database().await;
}

/// Migration 0049: an insert's notification carries the least priority and `run_at` of
/// the tasks it inserted (`queue::Notified`), so a claiming loop keeps its hint when the
/// new tasks sort after it; a statement that inserts nothing notifies nobody.
#[tokio::test(flavor = "multi_thread")]
async fn an_insert_notifies_where_its_tasks_sort() {
    let db = TestDatabase::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener
        .listen(aula_processor::worker::NOTIFY_CHANNEL)
        .await
        .unwrap();
    let soon: DateTime<Utc> = "2026-12-07T10:00:00.123456Z".parse().unwrap();
    let later: DateTime<Utc> = "2026-12-07T11:00:00.5Z".parse().unwrap();
    let mut urgent = task("noop", "urgent later");
    urgent.priority = 5;
    urgent.run_at = Some(later);
    let mut soon_task = task("noop", "soon");
    soon_task.priority = 40;
    soon_task.run_at = Some(soon);
    insert(&db.pool, &[urgent, soon_task]).await;
    let heard = within(listener.recv()).await.unwrap();
    let key = queue::ClaimHint {
        priority: 5,
        run_at: soon,
    };
    assert_eq!(heard.payload(), format!("5 {}", soon.timestamp_micros()));
    assert_eq!(
        queue::Notified::parse(Some(heard.payload())),
        queue::Notified::From(key)
    );

    // A statement that inserts no row says nothing.
    sqlx::query("INSERT INTO task_queue SELECT * FROM task_queue WHERE false")
        .execute(&db.pool)
        .await
        .unwrap();
    let last = task("noop", "last");
    let priority = last.priority;
    insert(&db.pool, &[last]).await;
    let heard = within(listener.recv()).await.unwrap();
    let last = queue::Notified::parse(Some(heard.payload()));
    assert!(
        matches!(last, queue::Notified::From(k) if k.priority == priority),
        "the first notification after the empty insert is the last insert's: {last:?}"
    );
    // The listener holds one of the pool's connections: closing the pool waits for it.
    drop(listener);
    db.drop_database().await;
}

/// 2,000 pending tasks and fresh statistics: the backlog a claim's plan is made for.
async fn analyzed_backlog(pool: &PgPool) {
    let backlog: Vec<NewTask> = (0..2_000).map(|i| task("noop", &format!("b{i}"))).collect();
    insert(pool, &backlog).await;
    sqlx::query("ANALYZE task_queue")
        .execute(pool)
        .await
        .unwrap();
}

/// Asserts that the generic plan of a hinted claim starts its walk of the claim index at
/// the hint (`$7, $8`), rather than at the queue's front.
async fn assert_starts_at_the_hint(pool: &PgPool, statement: &str, types: &str, args: &str) {
    let plan = generic_plan(pool, statement, types, args).await;
    let text = plan.join("\n");
    assert!(
        text.contains("task_queue_claim_idx")
            && plan.iter().any(|line| line.contains("Index Cond:")
                && line.contains("ROW(priority, run_at) >= ROW($7, $8)")),
        "the hinted claim does not start its index scan at the hint:\n{text}"
    );
}

/// The plan of `statement` that a prepared statement gets once PostgreSQL switches it to
/// a generic plan (one that cannot see the batch's size), as EXPLAIN lines.
async fn generic_plan(pool: &PgPool, statement: &str, types: &str, args: &str) -> Vec<String> {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("PREPARE checked({types}) AS {statement}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan = sqlx::raw_sql(&format!("EXPLAIN (COSTS OFF) EXECUTE checked({args})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, 0))
        .collect();
    sqlx::raw_sql("DEALLOCATE checked; RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .unwrap();
    plan
}

/// The rules for plans in `queue`'s docs, each from a measured meltdown under load,
/// checked on the plans the batch statements actually get: generic ones, with the
/// statistics `ANALYZE` takes while no task runs (so the partial lease index looks empty)
/// and a thousand tasks running when they are used.
#[tokio::test(flavor = "multi_thread")]
async fn batch_statements_find_their_rows_by_key_under_generic_plans() {
    let db = TestDatabase::new().await;
    let pool = &db.pool;
    aula_processor::bench::insert_event_noop_tasks(pool, 2_000)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
    let claimed = queue::claim(pool, "w", 1_000, Duration::from_secs(60), true)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1_000);
    let ids = format!(
        "'{{{}}}'",
        claimed
            .iter()
            .map(|t| t.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let attempts = format!("'{{{}}}'", vec!["1"; claimed.len()].join(","));
    let claimed_at = format!(
        "'{{{}}}'",
        claimed
            .iter()
            .map(|t| format!("\"{}\"", t.claimed_at.to_rfc3339()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let errors = format!("'{{{}}}'", vec!["boom"; claimed.len()].join(","));
    let delays = format!("'{{{}}}'", vec!["1000"; claimed.len()].join(","));
    let spares = format!("'{{{}}}'", vec!["false"; claimed.len()].join(","));
    let statements = [
        (
            "claim",
            queue::CLAIM_SQL,
            "bigint, float8, text, bool, smallint",
            "24, 60000, 'w', true, 1".to_owned(),
        ),
        (
            "complete",
            queue::COMPLETE_SQL,
            "bigint[], int[], timestamptz[]",
            format!("{ids}, {attempts}, {claimed_at}"),
        ),
        (
            "complete_eventless",
            queue::COMPLETE_EVENTLESS_SQL,
            "bigint[], int[], smallint, timestamptz[]",
            format!("{ids}, {attempts}, 1, {claimed_at}"),
        ),
        (
            "fail",
            queue::FAIL_SQL,
            "bigint[], int[], text[], float8[], timestamptz[], bool[], bool[]",
            format!("{ids}, {attempts}, {errors}, {delays}, {claimed_at}, {spares}, {spares}"),
        ),
        (
            "heartbeat",
            queue::HEARTBEAT_SQL,
            "bigint[], int[], float8, timestamptz[]",
            format!("{ids}, {attempts}, 60000, {claimed_at}"),
        ),
        (
            "release",
            queue::RELEASE_SQL,
            "bigint[], int[], timestamptz[]",
            format!("{ids}, {attempts}, {claimed_at}"),
        ),
    ];
    for (name, statement, types, args) in statements {
        let plan = generic_plan(pool, statement, types, &args).await;
        let text = plan.join("\n");
        assert!(
            !text.contains("task_queue_lease_idx"),
            "{name} scans the running tasks instead of finding its batch by key:\n{text}"
        );
        for line in &plan {
            assert!(
                !(line.contains("Cond:") && line.contains("= ANY") && line.contains(" AND ")),
                "{name} prepares an ANY array once per joined row ({line}):\n{text}"
            );
        }
        assert!(
            text.contains("task_queue_pkey"),
            "{name} does not use the primary key of the queue:\n{text}"
        );
    }
}

fn issued_by(event_id: uuid::Uuid) -> NewTask {
    NewTask {
        event_id: Some(event_id),
        event_type: Some("Tested".into()),
        ..task("noop", "issued")
    }
}

/// The completion of a claimed task, left uncommitted in the transaction returned: its
/// queue row deleted, its history row inserted, for a race against that commit.
async fn completing(
    pool: &PgPool,
    claimed: &queue::TaskRow,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let done = claimed.done();
    let mut completing = pool.begin().await.unwrap();
    let finished: Vec<(i64, Option<uuid::Uuid>, Option<DateTime<Utc>>)> =
        sqlx::query_as(queue::COMPLETE_SQL)
            .bind(vec![done.id])
            .bind(vec![done.attempt])
            .bind(vec![done.claimed_at])
            .fetch_all(&mut *completing)
            .await
            .unwrap();
    assert_eq!(finished.len(), 1);
    completing
}

/// An event issues a task of a kind once, across the queue and the history: an insert
/// that races the completion of the event's task (its queue row deleted, its history
/// row inserted, not committed yet) waits for that completion at the queue's unique
/// index, then finds the history row in its next statement and takes its own row back
/// before anyone could claim it. Once the completion committed, the history alone keeps
/// the kind out.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_issues_a_kind_once_even_while_its_task_finishes() {
    let db = TestDatabase::new().await;
    let pool = &db.pool;
    let event_id = uuid::Uuid::new_v4();
    insert(pool, &[issued_by(event_id)]).await;
    let claimed = queue::claim(pool, "w", 1, Duration::from_secs(60), true)
        .await
        .unwrap();
    let completing = completing(pool, &claimed[0]).await;
    let again = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            queue::insert_tasks(&mut conn, &[issued_by(event_id)])
                .await
                .unwrap()
        }
    });
    until_waiting_on_a_lock(
        pool,
        "INSERT INTO task_queue%",
        "the insert to wait for the completion's commit",
    )
    .await;
    completing.commit().await.unwrap();
    assert_eq!(within(again).await.unwrap(), 0);
    assert_eq!(
        queue::insert_tasks(&mut pool.acquire().await.unwrap(), &[issued_by(event_id)])
            .await
            .unwrap(),
        0
    );
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["succeeded"]);
}

/// The reactions' insert and its removal of duplicates check each new task against the
/// history by its `(event_id, kind)` key, one index probe per task, whatever the
/// history's statistics say: neither a hash of the whole history (every finished task
/// read per batch) nor a loop over all of it per task (1.3 to 6 s per batch of 500 in
/// `aula bench rush`, on a new database whose history had no statistics yet).
#[tokio::test(flavor = "multi_thread")]
async fn new_tasks_probe_the_history_by_key_with_or_without_its_statistics() {
    let db = TestDatabase::new().await;
    let pool = &db.pool;
    sqlx::query(
        "INSERT INTO tasks (kind, status, event_id, event_type, idempotency_key)
         SELECT 'noop', 'succeeded', gen_random_uuid(), 'Tested', 'done-' || g
         FROM generate_series(1, 3000) g",
    )
    .execute(pool)
    .await
    .unwrap();
    let statements = [
        (
            "insert",
            queue::INSERT_TASKS_SQL,
            "text[], smallint[], int[], timestamptz[], uuid[], text[], text[], jsonb[], uuid[], uuid[]",
            "ARRAY['noop'], ARRAY[50::smallint], ARRAY[5], ARRAY[NULL::timestamptz], \
             ARRAY[gen_random_uuid()], ARRAY['Tested'], ARRAY['k'], ARRAY['{}'::jsonb], \
             ARRAY[NULL::uuid], ARRAY[NULL::uuid]",
        ),
        (
            "drop duplicates",
            queue::DROP_FINISHED_DUPLICATES_SQL,
            "bigint[]",
            "ARRAY[1, 2, 3]::bigint[]",
        ),
    ];
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(pool).await.unwrap();
        }
        for (name, statement, types, args) in statements {
            let plan = generic_plan(pool, statement, types, args).await;
            let text = plan.join("\n");
            assert!(
                plan.iter()
                    .any(|line| line.contains("tasks_event_kind_key")),
                "{name} (analyzed: {analyzed}) does not use the history's key:\n{text}"
            );
            assert!(
                plan.iter().any(|line| line.contains("Index Cond:")
                    && line.contains("(event_id = ")
                    && line.contains("(kind = ")),
                "{name} (analyzed: {analyzed}) does not probe the history per task:\n{text}"
            );
            for whole in ["Hash", "Materialize", "Seq Scan on task_history"] {
                assert!(
                    !text.contains(whole),
                    "{name} (analyzed: {analyzed}) reads the whole history ({whole}):\n{text}"
                );
            }
        }
    }
    db.drop_database().await;
}

/// The same race through the reactions' batch (`Reactions::handle`), whose insert reads
/// the webhook endpoints in its statement and whose check of the history runs in the
/// events' recount: the task taken back is in neither the event's row nor the counts.
#[tokio::test(flavor = "multi_thread")]
async fn a_reactions_batch_issues_a_kind_once_even_while_its_task_finishes() {
    use aula_eventlog::Consumer;
    use aula_processor::reactions::{tasks_for, Reactions};

    let db = TestDatabase::new().await;
    let pool = &db.pool;
    let events = teacher_created_read_from_the_log(pool).await;
    let event = events[0].clone();
    // The event's task, issued before (a checkpoint moved back), now running.
    insert(pool, &tasks_for(&event)).await;
    let claimed = queue::claim(pool, "w", 1, Duration::from_secs(60), true)
        .await
        .unwrap();
    let pending_tasks = "SELECT COALESCE(sum(count), 0)::bigint FROM task_status_counts
                         WHERE kind = 'task' AND status = 'pending'";
    let pending_before: i64 = sqlx::query_scalar(pending_tasks)
        .fetch_one(pool)
        .await
        .unwrap();

    let completing = completing(pool, &claimed[0]).await;
    let batch = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            Reactions.handle(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    });
    until_waiting_on_a_lock(
        pool,
        "WITH inserted AS%",
        "the batch's insert to wait for the completion's commit",
    )
    .await;
    completing.commit().await.unwrap();
    within(batch).await.unwrap();

    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE event_id = $1")
        .bind(event.event_id)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["succeeded"]);
    let row: (String, i32, i32, i32) = sqlx::query_as(
        "SELECT status, tasks_pending, tasks_running, tasks_succeeded FROM admin_events
         WHERE event_id = $1",
    )
    .bind(event.event_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(row, ("succeeded".to_owned(), 0, 0, 1));
    let pending_after: i64 = sqlx::query_scalar(pending_tasks)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        pending_after, pending_before,
        "the task taken back is not counted"
    );
    db.drop_database().await;
}

/// A claim that leaves a capped class's kinds out (`queue::claim_for_workers_excluding`,
/// the worker's while e-mails hold their cap) takes the tasks behind them and leaves
/// theirs pending; from a hint it still starts its index scan there.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_excluding_kinds_takes_the_tasks_behind_them() {
    let db = TestDatabase::new().await;
    let lease = Duration::from_secs(30);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut mail = task("email.welcome", &format!("m{i}"));
        mail.priority = 10;
        tasks.push(mail);
    }
    tasks.push(task("noop", "behind"));
    insert(&db.pool, &tasks).await;
    let claim = ("w", 2, lease, true);
    let start = queue::ClaimStart::Front;
    let taken =
        queue::claim_for_workers_excluding(&db.pool, claim, false, start, &["email.welcome"])
            .await
            .unwrap();
    let keys: Vec<&str> = taken.iter().map(|t| t.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["behind"]);
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_queue WHERE kind = 'email.welcome' AND status = 'pending'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 4, "the excluded kind's tasks stay pending");
    let taken = queue::claim_for_workers(&db.pool, claim, false, start)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2, "without the exclusion they are claimed");

    // A backlog, with its statistics, for the plans.
    analyzed_backlog(&db.pool).await;
    assert_starts_at_the_hint(
        &db.pool,
        queue::CLAIM_DEFERRED_FROM_EXCLUDING_SQL,
        "bigint, float8, text, bool, smallint, bool, smallint, timestamptz, text[]",
        "24, 60000, 'w', true, 1, true, 50, now(), '{email.welcome}'",
    )
    .await;
    for (sql, types, args) in [
        (
            queue::CLAIM_DEFERRED_EXCLUDING_SQL,
            "bigint, float8, text, bool, smallint, bool, text[]",
            "24, 60000, 'w', true, 1, true, '{email.welcome}'",
        ),
        (
            queue::CLAIM_DEFERRED_BEFORE_EXCLUDING_SQL,
            "bigint, float8, text, bool, smallint, bool, smallint, text[]",
            "24, 60000, 'w', true, 1, true, 50, '{email.welcome}'",
        ),
    ] {
        let text = generic_plan(&db.pool, sql, types, args).await.join("\n");
        assert!(text.contains("task_queue_claim_idx"), "{text}");
    }
    db.drop_database().await;
}
