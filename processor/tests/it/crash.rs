//! The crash test: worker *processes* (the `aula-worker` binary) share one database;
//! one is killed with SIGKILL in the middle of a run of thousands of tasks; another is
//! started. Every task must end succeeded, with its effect recorded exactly once, and
//! no attempt may have run twice (claims are exclusive; the killed process's tasks are
//! rescued when their leases expire and run again as a *new* attempt).

use crate::common;

use std::process::{Child, Command, Stdio};

use aula_eventlog::testing::TestDatabase;
use aula_processor::queue::{self, NewTask};
use common::*;
use serde_json::json;

/// A URL the child process can connect with to the test's database.
fn database_url(db: &TestDatabase) -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        // Same server, the test's database.
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base.to_owned(), format!("?{query}")),
            None => (url.clone(), String::new()),
        };
        let server = match base.rsplit_once('/') {
            Some((server, _)) if server.contains("//") && !server.ends_with('/') => {
                server.to_owned()
            }
            _ => base,
        };
        return format!("{server}/{}{query}", db.name);
    }
    let options = &db.connect;
    let socket = options
        .get_socket()
        .expect("the private test server listens on a socket");
    format!(
        "postgresql://{}@localhost/{}?host={}&port={}",
        options.get_username(),
        db.name,
        socket.display(),
        options.get_port()
    )
}

/// Kills (SIGKILL) and reaps the child if the test ends early, so no worker outlives it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_worker(url: &str, name: &str) -> Worker {
    spawn_worker_with(url, name, |_| {})
}

/// [`spawn_worker`] with more of the environment set by `configure`.
fn spawn_worker_with(url: &str, name: &str, configure: impl Fn(&mut Command)) -> Worker {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aula-worker"));
    configure(&mut command);
    let child = command
        .env("DATABASE_URL", url)
        .env("AULA_WORKER_NAME", name)
        .env("AULA_WORKER_CONCURRENCY", "8")
        .env("AULA_WORKER_CLAIM_BATCH", "16")
        .env("AULA_TASK_LEASE_MS", "1500")
        .env("AULA_WORKER_RESCUE_MS", "200")
        .env("AULA_WORKER_POLL_MS", "100")
        .env("AULA_WORKER_TEST_EFFECTS", "1")
        .env(
            "AULA_MAIL_OUTBOX",
            std::env::temp_dir().join("aula-crash-test-outbox"),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the aula-worker binary");
    Worker(child)
}

/// How long the crash test's long tasks run, in ms.
const LONG_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_worker_process_mid_run_loses_and_duplicates_nothing() {
    let db = TestDatabase::new().await;
    sqlx::raw_sql(
        "CREATE TABLE test_executions (task_id bigint NOT NULL, attempt int NOT NULL, worker text NOT NULL,
                                       at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE test_effects (task_id bigint PRIMARY KEY, worker text NOT NULL);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let total: i64 = 4000;
    // 10 ms each: two workers of 8 take ~2.5 s, so the kill below lands mid-run. Every
    // 50th takes 1 s: the kill waits until the victim is inside one of those, so it
    // lands while the victim holds a task even on a loaded machine (with short tasks
    // alone, the victim could finish its last ones between the check and the kill).
    let tasks: Vec<NewTask> = (0..total)
        .map(|i| {
            let sleep_ms = if i % 50 == 0 { LONG_MS } else { 10 };
            NewTask::new(
                "test.effect",
                format!("effect-{i}"),
                json!({ "sleep_ms": sleep_ms }),
            )
        })
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    for chunk in tasks.chunks(1000) {
        queue::insert_tasks(&mut conn, chunk).await.unwrap();
    }
    drop(conn);

    let url = database_url(&db);
    let mut victim = spawn_worker(&url, "victim");
    let mut survivor = spawn_worker(&url, "survivor");
    // Let the victim get well into the run, with tasks in flight, then SIGKILL it.
    eventually("the victim to have done a share of the work", || async {
        let done = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM test_effects WHERE worker = 'victim'",
        )
        .await;
        // A long task the victim started within the last half of its run time, and
        // has not finished: it is still inside it for ~0.5 s more.
        let inside_a_long_one = scalar_i64(
            &db.pool,
            &format!(
                "SELECT count(*) FROM test_executions e JOIN tasks t ON t.id = e.task_id
                  WHERE e.worker = 'victim' AND t.status = 'running' AND t.worker = 'victim'
                    AND (t.payload->>'sleep_ms')::int = {LONG_MS}
                    AND e.at > clock_timestamp() - interval '{} ms'
                    AND NOT EXISTS (SELECT 1 FROM test_effects f WHERE f.task_id = e.task_id)",
                LONG_MS / 2
            ),
        )
        .await;
        (done >= total / 8 && inside_a_long_one > 0).then_some(())
    })
    .await;
    victim.0.kill().expect("SIGKILL the victim"); // Child::kill sends SIGKILL on Unix.
    victim.0.wait().unwrap();
    // A statement the victim had sent may still run to its end (a completion in
    // autocommit then commits: the task did run). Count what is orphaned once the
    // victim's sessions are gone.
    until_count(
        &db.pool,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'victim'",
        "the victim's database sessions to end",
        |sessions| sessions == 0,
    )
    .await;
    let orphaned = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM tasks WHERE status = 'running' AND worker = 'victim'",
    )
    .await;
    let mut late = spawn_worker(&url, "late");

    wait_idle(&db.pool, total).await;
    for worker in [&mut survivor, &mut late] {
        // SIGTERM: a graceful stop; nothing is left to drain.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(worker.0.id().to_string())
            .status();
    }
    for worker in [&mut survivor, &mut late] {
        let status = worker.0.wait().unwrap();
        assert!(status.success(), "a worker exited with {status}");
    }

    assert_each_task_succeeded_once(&db.pool, "test_effects", total).await;
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM (SELECT task_id, attempt FROM test_executions GROUP BY 1, 2 HAVING count(*) > 1) d").await,
        0,
        "no attempt ran twice"
    );
    // The victim's in-flight tasks were rescued and run again as new attempts.
    assert!(orphaned > 0, "the kill landed while the victim held tasks");
    let rescued = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM task_attempts WHERE outcome = 'lease_expired' AND worker = 'victim'",
    )
    .await;
    assert!(
        rescued >= orphaned,
        "rescued {rescued} of {orphaned} orphaned tasks"
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM task_attempts WHERE outcome = 'running'"
        )
        .await,
        0
    );
    let by_others = scalar_i64(
        &db.pool,
        "SELECT count(*) FROM test_effects WHERE worker <> 'victim'",
    )
    .await;
    assert!(by_others > 0);
    // The status counts and rollups were written in the tasks' transactions: the kill
    // left none of them behind.
    let counts = aula_processor::status_counts(&db.pool).await.unwrap();
    let succeeded = counts
        .iter()
        .find(|(kind, status, _)| kind == "task" && status == "succeeded")
        .map(|c| c.2);
    assert_eq!(succeeded, Some(total));
    assert!(counts
        .iter()
        .all(|(kind, status, n)| kind != "task" || status == "succeeded" || *n == 0));
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT COALESCE(sum(count), 0)::bigint FROM processing_rollups
             WHERE kind = 'task' AND status = 'succeeded'"
        )
        .await,
        total
    );
}

/// Deliveries survive a SIGKILL too: every message reaches the receiver (which
/// verifies it with the Standard Webhooks library) at least once, and every copy of a
/// message carries the same `webhook-id` and body.
#[tokio::test(flavor = "multi_thread")]
async fn killing_a_worker_process_mid_delivery_delivers_every_message_with_its_id() {
    use aula_processor::webhooks::{fanout, message_header_id};
    use common::webhook_receiver::Receiver;
    use std::collections::HashMap;
    use uuid::Uuid;

    let db = TestDatabase::new().await;
    let (endpoint, secret) = loopback_endpoint(&db.pool, "crash test").await;
    // Slow enough that the kill lands with requests in flight.
    let receiver = Receiver::start_with(
        json!({"behaviour": "ok", "secrets": [secret.reveal()], "delay_ms": 20}),
    )
    .await;
    sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE id = $1")
        .bind(endpoint.id)
        .bind(receiver.url())
        .execute(&db.pool)
        .await
        .unwrap();
    let total = 400usize;
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..total {
        let event = Uuid::new_v4();
        let id = fanout::message_id(event, endpoint.id);
        sqlx::query(
            "INSERT INTO webhook_messages (id, endpoint_id, event_id, event_type, event_recorded_at, body)
             VALUES ($1, $2, $3, 'CampusCreated', now(), $4)",
        )
        .bind(id)
        .bind(endpoint.id)
        .bind(event)
        .bind(json!({"type": "CampusCreated", "data": {"n": i}}).to_string())
        .execute(&db.pool)
        .await
        .unwrap();
        ids.push(id);
        tasks.push(fanout::delivery_task(id, 1, false, None));
    }
    let mut conn = db.pool.acquire().await.unwrap();
    queue::insert_tasks(&mut conn, &tasks).await.unwrap();
    drop(conn);

    let url = database_url(&db);
    let webhook_env = |command: &mut Command| {
        command
            .env("AULA_WEBHOOK_INSECURE_HOSTS", "127.0.0.1")
            .env("AULA_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env("AULA_WEBHOOK_RETRY_SCHEDULE", "0.1,0.1,0.1,0.1");
    };
    let mut victim = spawn_worker_with(&url, "victim", webhook_env);
    let mut survivor = spawn_worker_with(&url, "survivor", webhook_env);
    eventually("the victim to be delivering", || async {
        let running = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM tasks WHERE status = 'running' AND worker = 'victim'",
        )
        .await;
        (receiver.requests().len() >= total / 8 && running > 0).then_some(())
    })
    .await;
    victim.0.kill().expect("SIGKILL the victim");
    victim.0.wait().unwrap();
    let mut late = spawn_worker_with(&url, "late", webhook_env);
    until_count(
        &db.pool,
        "SELECT count(*) FROM webhook_messages WHERE status <> 'delivered'",
        "every message delivered",
        |open| open == 0,
    )
    .await;
    for worker in [&mut survivor, &mut late] {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(worker.0.id().to_string())
            .status();
        let _ = worker.0.wait();
    }
    let requests = receiver.requests();
    let mut bodies: HashMap<String, Vec<String>> = HashMap::new();
    for request in &requests {
        assert_eq!(request["verified"], json!([true]), "{request}");
        bodies
            .entry(request["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(request["body"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let copies = bodies
            .get(&message_header_id(*id))
            .unwrap_or_else(|| panic!("message {id} never arrived"));
        assert!(
            copies.iter().all(|b| *b == copies[0]),
            "every copy is the same"
        );
    }
    assert_eq!(bodies.len(), total, "no message under another id");
}
