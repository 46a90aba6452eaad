//! `aula bench tasks` end to end on a small scale: the real binary starts its worker
//! processes (itself, `bench task-worker`), waits until they are ready, inserts, and
//! drains. Figures are printed, not asserted; the shape and the history are.

use aula_eventlog::testing::TestDatabase;

/// A URL of the test server (its `postgres` database): the benchmark creates and drops
/// a database of its own there.
fn server_url(db: &TestDatabase) -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let options = &db.connect;
    let socket = options
        .get_socket()
        .expect("the private test server listens on a socket");
    format!(
        "postgresql://{}@localhost/postgres?host={}&port={}",
        options.get_username(),
        socket.display(),
        options.get_port()
    )
}

/// Runs `aula bench tasks` with `args` against the test server; its standard output.
async fn bench_tasks(db: &TestDatabase, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aula"))
        .args(["bench", "tasks"])
        .args(args)
        .env("DATABASE_URL", server_url(db))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running aula bench tasks");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "aula bench tasks failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_tasks_drains_with_separate_worker_processes_and_keeps_history() {
    // Only to have the test server running.
    let db = TestDatabase::new().await;
    let stdout = bench_tasks(
        &db,
        &["--tasks", "3000", "--processes", "2", "--concurrency", "8"],
    )
    .await;
    assert!(
        stdout.contains("3000 no-op tasks, 2 worker processes x 8 concurrency"),
        "{stdout}"
    );
    assert!(stdout.contains("(3000 attempt records)"), "{stdout}");
    assert!(stdout.contains("tasks/s"), "{stdout}");
}

/// The same with every task issued by an event of its own (production's completion path:
/// `queue::complete` and the event's admin row).
#[tokio::test(flavor = "multi_thread")]
async fn bench_tasks_drains_tasks_issued_by_events() {
    let db = TestDatabase::new().await;
    let stdout = bench_tasks(
        &db,
        &[
            "--tasks",
            "2000",
            "--processes",
            "2",
            "--concurrency",
            "8",
            "--issued-by-events",
        ],
    )
    .await;
    assert!(
        stdout.contains(
            "2000 no-op tasks each issued by an event, 2 worker processes x 8 concurrency"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("(2000 attempt records)"), "{stdout}");
}
