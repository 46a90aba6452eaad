//! Finding 14, end to end: `aula serve` on its private PostgreSQL. The postmaster is
//! SIGKILLed: the service comes back by itself. Then it is killed so that it cannot
//! come back (its configuration is gone): `serve` stops and returns an error, which
//! makes the binary exit non-zero.

use crate::support;
use std::path::Path;
use std::time::{Duration, Instant};

use aula::cli::{GlobalArgs, LogFormat, ServeArgs};
use support::service::Service;

/// The status `/ready` answers at `base` (0: no answer).
async fn ready(client: &reqwest::Client, base: &str) -> u16 {
    match client.get(format!("{base}/ready")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// `aula serve` on its private PostgreSQL in `data_dir` (no `DATABASE_URL`), with `args`
/// adjusted by `configure`, once ready; and a client that waits 5 s at most.
async fn serve_on_private_postgres(
    data_dir: &Path,
    configure: impl FnOnce(&mut ServeArgs),
) -> (Service, reqwest::Client) {
    let global = GlobalArgs {
        database_url: None,
        data_dir: data_dir.to_owned(),
        log_format: LogFormat::Text,
    };
    let mut args = ServeArgs {
        http_addr: ([127, 0, 0, 1], support::free_port()).into(),
        token_secret: Some("private postgres fault test secret, 32+ bytes".into()),
        ..ServeArgs::default()
    };
    configure(&mut args);
    let service = Service::serve(global, args, Duration::from_secs(120)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    (service, client)
}

fn postmaster_pid(pgdata: &std::path::Path) -> i32 {
    std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_restarts_a_killed_private_postgres_and_exits_when_it_cannot() {
    support::alone_in_own_process!(
        the_service_restarts_a_killed_private_postgres_and_exits_when_it_cannot
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,aula_eventlog=info".into()),
        )
        .with_test_writer()
        .try_init();
    std::env::set_var("AULA_PG_MAX_RESTARTS", "3");
    let data_dir = std::env::temp_dir().join(format!("aula-pgf-{}", uuid::Uuid::new_v4().simple()));
    let pgdata = data_dir.join("postgres").join("pgdata");
    let (mut service, client) = serve_on_private_postgres(&data_dir, |_| {}).await;
    let base = service.base.clone();

    // 1. Killed: back by itself. Count what /ready answered meanwhile.
    let first = postmaster_pid(&pgdata);
    // SAFETY: kill(2) on the postmaster the service started.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut answers: std::collections::BTreeMap<u16, u32> = Default::default();
    let mut seen_down = false;
    loop {
        let status = ready(&client, &base).await;
        *answers.entry(status).or_default() += 1;
        seen_down |= status != 200;
        if seen_down && status == 200 {
            break;
        }
        if !seen_down && killed.elapsed() > Duration::from_secs(2) {
            // Restarted before /ready ever noticed.
            break;
        }
        service.assert_running().await;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not back within 60 s: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = killed.elapsed();
    let second = postmaster_pid(&pgdata);
    assert_ne!(first, second, "a new postmaster runs");
    assert_eq!(ready(&client, &base).await, 200);
    eprintln!(
        "postmaster SIGKILL under aula serve: /ready 200 again after {:.2} s; /ready answers meanwhile (status: count) {answers:?}",
        recovery.as_secs_f64()
    );

    // 2. Killed for good: the service gives up after its restarts and returns an error.
    std::fs::remove_file(pgdata.join("postgresql.conf")).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(second, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(120), service.task)
        .await
        .expect("serve returns once the database cannot come back")
        .unwrap();
    let error = result.expect_err("serve fails, so the process exits non-zero");
    assert!(
        error
            .to_string()
            .contains("did not come back after 3 restarts"),
        "{error:#}"
    );
    eprintln!(
        "unrecoverable: serve returned its error {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The private PostgreSQL dies of a full disk (its next WAL segment cannot be created,
/// and crash recovery needs it too): `aula serve` does not give up on it after its
/// restarts, as it does for a server that cannot come back, but answers meanwhile and
/// serves again once space is freed. Mounts a tmpfs, so it needs root (as CI runs).
#[tokio::test(flavor = "multi_thread")]
async fn the_service_outlives_a_full_disk_under_its_private_postgres() {
    use std::io::Write as _;
    support::alone_in_own_process!(the_service_outlives_a_full_disk_under_its_private_postgres);
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test mounts a tmpfs and needs root"
    );
    std::env::set_var("AULA_PG_MAX_RESTARTS", "2");
    let data_dir =
        std::env::temp_dir().join(format!("aula-full-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200m,mode=0755", "tmpfs"])
        .arg(&data_dir)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a tmpfs on {}",
        data_dir.display()
    );
    let (mut service, client) =
        serve_on_private_postgres(&data_dir, |args| args.drain_seconds = 0).await;
    let base = service.base.clone();

    // The disk fills to the last byte, then the log needs a new segment file.
    let ballast = data_dir.join("ballast");
    {
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let small = vec![0u8; 4096];
        while file.write_all(&small).is_ok() {}
    }
    let socket_dir = data_dir.join("postgres").join("run");
    let url = format!(
        "postgresql://aula@localhost/aula?host={}",
        socket_dir.display()
    );
    if let Ok(mut connection) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await {
        let _ = sqlx::query("SELECT pg_switch_wal()")
            .execute(&mut connection)
            .await;
        let _ = sqlx::query("CREATE TABLE after_the_switch ()")
            .execute(&mut connection)
            .await;
    }
    // Full for longer than two restarts and the service's stop would take.
    let full = Instant::now();
    let mut answers: std::collections::BTreeMap<u16, u32> = Default::default();
    while full.elapsed() < Duration::from_secs(15) {
        let status = ready(&client, &base).await;
        *answers.entry(status).or_default() += 1;
        assert!(
            !service.task.is_finished(),
            "the service gave up on a full disk: {:?}",
            (&mut service.task).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    service.wait_ready(Duration::from_secs(60)).await;
    eprintln!(
        "full disk under aula serve: /ready answers while full (status: count) {answers:?}; ready {:.2} s after space was freed",
        freed.elapsed().as_secs_f64()
    );
    service.request_stop();
    let result = tokio::time::timeout(Duration::from_secs(60), service.task)
        .await
        .expect("serve stops")
        .unwrap();
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&data_dir)
        .status();
    let _ = std::fs::remove_dir_all(&data_dir);
    result.expect("a clean stop");
    assert!(
        answers.keys().any(|status| *status != 200),
        "/ready said the database was missing: {answers:?}"
    );
}
