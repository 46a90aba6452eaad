//! The service's start and stop, as a newcomer and an operator meet them.
//!
//! - Graceful stop (issue #16, finding 7): on a stop signal, readiness turns off first
//!   while requests are still served for the drain period, then the listener closes.
//! - First minutes (issue #24, items 8 and 9), with the real binary: the database URL
//!   the start-up log prints attaches a second process and psql; the log names the
//!   PostgreSQL binaries and `AULA_PG_BIN` is honoured or refused; a busy port or a
//!   short token secret is reported before PostgreSQL starts; an unreachable database
//!   is reported at once with its cause and without its password; text logs written to
//!   a pipe have no colour codes.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aula_eventlog::testing::TestDatabase;
use serde_json::{json, Value};
use support::service::Service;
use tokio::io::AsyncBufReadExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_turns_readiness_off_then_drains_then_closes() {
    let db = TestDatabase::new().await;
    let mut service = Service::start(&db, |args| args.drain_seconds = 5).await;
    let base = service.base.clone();
    let client = reqwest::Client::new();

    service.request_stop();
    let stop_requested = Instant::now();
    // Readiness is off at once...
    let deadline = Instant::now() + Duration::from_millis(500);
    let ready = loop {
        let ready = client.get(format!("{base}/ready")).send().await.unwrap();
        if ready.status().as_u16() == 503 || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    // ...while requests are still answered during the drain.
    let response = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "{ health { status } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(stop_requested.elapsed() < Duration::from_secs(4));
    // Then the listener closes and the service ends.
    service.stop(Duration::from_secs(20)).await;
    assert!(stop_requested.elapsed() >= Duration::from_secs(5));
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}

/// A scratch data directory, short enough for a Unix socket path inside it.
fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(format!(
        "/tmp/aula-lc-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `aula` binary with `args`, on `data_dir`, with nothing of the test's own
/// environment that would change what it does.
fn aula(data_dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_aula"));
    command
        .args(args)
        .env("AULA_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .env("AULA_LOG_FORMAT", "text")
        .env_remove("DATABASE_URL")
        .env_remove("AULA_PG_BIN")
        .env_remove("AULA_TOKEN_SECRET")
        .env_remove("AULA_HTTP_ADDR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command that must fail soon; its standard error and how long it took.
async fn fails(mut command: tokio::process::Command, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let output = tokio::time::timeout(within, command.output())
        .await
        .unwrap_or_else(|_| panic!("still running after {within:?}"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it succeeded: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    (stderr, started.elapsed())
}

/// Neither said nor done: no PostgreSQL in the output, none in the data directory.
#[track_caller]
fn assert_postgresql_not_started(stderr: &str, data_dir: &Path) {
    assert!(
        !stderr.contains("PostgreSQL"),
        "PostgreSQL was started: {stderr}"
    );
    assert!(
        !data_dir.join("postgres").exists(),
        "PostgreSQL was started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_port_or_a_short_token_secret_is_reported_before_postgresql_starts() {
    let data_dir = scratch_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let (stderr, _) = fails(
        aula(&data_dir, &["serve", "--http-addr", &busy]),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        stderr.contains(&busy) && stderr.contains("already in use"),
        "{stderr}"
    );
    assert_postgresql_not_started(&stderr, &data_dir);

    // `aula` alone (the README's run command) reads the same settings from the
    // environment as `aula serve`.
    let mut bare = aula(&data_dir, &[]);
    bare.env("AULA_HTTP_ADDR", &busy);
    let (stderr, _) = fails(bare, Duration::from_secs(30)).await;
    assert!(
        stderr.contains(&busy) && stderr.contains("already in use"),
        "{stderr}"
    );
    assert_postgresql_not_started(&stderr, &data_dir);

    let free = format!("127.0.0.1:{}", support::free_port());
    let mut short = aula(&data_dir, &["serve", "--http-addr", &free]);
    short.env("AULA_TOKEN_SECRET", "too short");
    let (stderr, _) = fails(short, Duration::from_secs(30)).await;
    assert!(
        stderr.contains("AULA_TOKEN_SECRET") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert_postgresql_not_started(&stderr, &data_dir);
    drop(taken);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A worker, archive, e-mail, login or drain setting that does not parse, or is out of its
/// range, stops start-up with a message naming the variable (they used to fall back to
/// their defaults without a word, and `AULA_TASK_LEASE_MS=0` ran every task twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_worker_or_archive_setting_is_reported_before_postgresql_starts() {
    let data_dir = scratch_dir();
    let free = format!("127.0.0.1:{}", support::free_port());
    for (name, value, expected) in [
        (
            "AULA_WORKER_CONCURRENCY",
            "abc",
            "a whole number from 1 to 1024",
        ),
        ("AULA_TASK_LEASE_MS", "0", "a whole number from 1000 to"),
        ("AULA_RETRY_BASE_MS", "-1", "a whole number from 1 to"),
        ("AULA_TASK_HISTORY", "maybe", "true or false"),
        ("AULA_ARCHIVE_AT", "25:99", "a time of day as HH:MM"),
        (
            "AULA_ARCHIVE_UTC_OFFSET_MINUTES",
            "99999",
            "from -720 to 840",
        ),
        ("AULA_ARCHIVE_BATCH", "0", "from 1 to 100000"),
        ("AULA_MAIL_RECORD_PATIENCE_MS", "soon", "a whole number"),
        (
            "AULA_MAIL_UNREACHABLE_GIVE_UP_MINUTES",
            "0",
            "a whole number from 1 to 43200",
        ),
        ("AULA_WEBHOOK_TIMEOUT_MS", "0", "from 100 to 300000"),
        ("AULA_DRAIN_SECONDS", "999999999999999", "0..=3600"),
        ("AULA_LOGIN_MAX_FAILURES_PER_SOURCE", "0", "from 1 to 100"),
        ("AULA_LOGIN_LOCKOUT_MINUTES", "forever", "from 1 to 1440"),
    ] {
        let mut serve = aula(&data_dir, &["serve", "--http-addr", &free]);
        serve.env(name, value);
        let (stderr, _) = fails(serve, Duration::from_secs(30)).await;
        assert!(
            stderr.contains(name) || stderr.contains("drain-seconds"),
            "{name}={value}: {stderr}"
        );
        assert!(stderr.contains(expected), "{name}={value}: {stderr}");
        assert_postgresql_not_started(&stderr, &data_dir);
    }
    let mut retries = aula(&data_dir, &["serve", "--http-addr", &free]);
    retries.env("AULA_RETRY_BASE_MS", "5000");
    retries.env("AULA_RETRY_MAX_MS", "1000");
    let (stderr, _) = fails(retries, Duration::from_secs(30)).await;
    assert!(
        stderr.contains("AULA_RETRY_MAX_MS") && stderr.contains("at least AULA_RETRY_BASE_MS"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn aula_pg_bin_without_postgresql_is_refused() {
    let data_dir = scratch_dir();
    let mut command = aula(&data_dir, &["migrate"]);
    command.env("AULA_PG_BIN", "/nonexistent");
    let (stderr, _) = fails(command, Duration::from_secs(30)).await;
    assert!(stderr.contains("AULA_PG_BIN=/nonexistent"), "{stderr}");
    assert!(stderr.contains("initdb"), "{stderr}");
    assert!(!data_dir.join("postgres/pgdata/PG_VERSION").exists());
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_reported_at_once_with_its_cause() {
    let data_dir = scratch_dir();
    // `aula migrate` against `host`: it fails within 8 s, without the password.
    let migrate_at = |host: String| {
        let mut migrate = aula(&data_dir, &["migrate"]);
        let url = format!("postgresql://aula:hunter2-not-to-be-seen@{host}/aula");
        migrate.env("DATABASE_URL", url);
        async move {
            let (stderr, took) = fails(migrate, Duration::from_secs(30)).await;
            assert!(took < Duration::from_secs(8), "took {took:?}: {stderr}");
            assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
            stderr
        }
    };
    let refused = format!("127.0.0.1:{}", support::free_port());
    let stderr = migrate_at(refused.clone()).await;
    assert!(
        stderr.contains(&refused) && stderr.contains("refused"),
        "the cause and the place: {stderr}"
    );
    assert!(!stderr.contains("pool timed out"), "{stderr}");

    let stderr = migrate_at("no-such-host.invalid:5432".to_owned()).await;
    assert!(
        stderr.contains("cannot connect to PostgreSQL at no-such-host.invalid:5432"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_database_url_attaches_a_second_process() {
    let data_dir = scratch_dir();
    let (child, mut lines) = serve_with_private_postgres(&data_dir);
    let mut log = Vec::new();
    let within = Duration::from_secs(120);
    let ready = line_containing(&mut lines, &mut log, "private PostgreSQL ready", within).await;
    let url = ready.split("url=").nth(1).expect("the line names the URL");
    let url = url.split_whitespace().next().unwrap().to_owned();
    let log_text = log.join("\n");
    assert!(
        log_text.contains("PostgreSQL server binaries") && log_text.contains("bin/postgres"),
        "the log names the binaries: {log_text}"
    );
    assert!(
        !log_text.contains('\u{1b}'),
        "colour codes in a pipe: {log_text:?}"
    );

    // A second process, with the URL as it was printed.
    let migrate = tokio::time::timeout(
        Duration::from_secs(60),
        aula(&data_dir, &["migrate"])
            .env("DATABASE_URL", &url)
            .output(),
    )
    .await
    .expect("aula migrate within 60 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(migrate.status.success(), "DATABASE_URL={url}: {stderr}");
    assert!(stderr.contains("database schema is up to date"), "{stderr}");
    // And psql, as the log line promises.
    let psql = tokio::process::Command::new("psql")
        .args([url.as_str(), "-Atc", "SELECT 40 + 2"])
        .output()
        .await
        .expect("psql (Debian: postgresql-client)");
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );

    // SIGTERM: it stops cleanly, and its private PostgreSQL with it.
    let status = terminate(child, lines, &mut log, Duration::from_secs(60)).await;
    assert!(status.success(), "{:#?}", log);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A stop signal while the service is still starting (here: while its private
/// PostgreSQL starts) is kept and honoured once it is up: a clean stop, exit status 0,
/// the private PostgreSQL stopped with it. Before, the handler was installed only after
/// start-up, so such a SIGTERM killed the process and left its PostgreSQL running.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_signal_during_start_up_stops_cleanly() {
    let data_dir = scratch_dir();
    let (child, mut lines) = serve_with_private_postgres(&data_dir);
    let mut log = Vec::new();
    let starting = "starting a private PostgreSQL";
    line_containing(&mut lines, &mut log, starting, Duration::from_secs(60)).await;
    let status = terminate(child, lines, &mut log, Duration::from_secs(120)).await;
    assert!(status.success(), "{status:?}: {log:#?}");
    let text = log.join("\n");
    assert!(text.contains("shutdown requested"), "{text}");
    assert!(
        !data_dir.join("postgres/pgdata/postmaster.pid").exists(),
        "the private PostgreSQL still runs: {text}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

type LogLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>;

/// `aula serve` on a free loopback port with its private PostgreSQL under `data_dir`,
/// and the lines of its log as they come.
fn serve_with_private_postgres(data_dir: &Path) -> (tokio::process::Child, LogLines) {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut serve = aula(
        data_dir,
        &["serve", "--http-addr", &addr, "--drain-seconds", "0"],
    );
    serve.env(
        "AULA_TOKEN_SECRET",
        "lifecycle test secret, at least 32 bytes long",
    );
    serve.stderr(Stdio::piped());
    let mut child = serve.spawn().unwrap();
    let lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// Reads the log, keeping every line in `log`, until a line contains `text`, and returns
/// that line; fails when `within` has passed or the log ends first.
async fn line_containing(
    lines: &mut LogLines,
    log: &mut Vec<String>,
    text: &str,
    within: Duration,
) -> String {
    let found = tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line.clone());
            if line.contains(text) {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no log line with {text:?} within {within:?}: {log:#?}"));
    found.unwrap_or_else(|| panic!("aula serve ended before {text:?}: {log:#?}"))
}

/// Sends SIGTERM, then collects the rest of the log until the process ends (within
/// `within`), and returns how it ended.
async fn terminate(
    mut child: tokio::process::Child,
    mut lines: LogLines,
    log: &mut Vec<String>,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = child.id().expect("still running") as i32;
    // SAFETY: kill has no memory preconditions; `pid` is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push(line);
        }
        child.wait().await.unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("stopped within {within:?}"))
}
