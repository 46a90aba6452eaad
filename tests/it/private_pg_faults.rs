//! Finding 14, end to end: `aula serve` on its private PostgreSQL. The postmaster is
//! SIGKILLed: the service comes back by itself. Then it is killed so that it cannot
//! come back (its configuration is gone): `serve` stops and returns an error, which
//! makes the binary exit non-zero.

use crate::support;
use std::time::{Duration, Instant};

use aula::cli::{GlobalArgs, LogFormat, ServeArgs};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let http_port = free_port();
    let base = format!("http://127.0.0.1:{http_port}");
    let data_dir = std::env::temp_dir().join(format!("aula-pgf-{}", uuid::Uuid::new_v4().simple()));
    let pgdata = data_dir.join("postgres").join("pgdata");
    let global = GlobalArgs {
        database_url: None,
        data_dir: data_dir.clone(),
        log_format: LogFormat::Text,
    };
    let args = ServeArgs {
        http_addr: ([127, 0, 0, 1], http_port).into(),
        token_secret: Some("private postgres fault test secret, 32+ bytes".into()),
        ..ServeArgs::default()
    };
    let service = tokio::spawn(async move {
        aula::serve::serve(&global, &args, std::future::pending::<()>()).await
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = |client: reqwest::Client| {
        let url = format!("{base}/ready");
        async move {
            match client.get(url).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready(client.clone()).await != 200 {
        assert!(
            !service.is_finished(),
            "the service stopped: {:?}",
            service.await
        );
        assert!(Instant::now() < deadline, "not ready within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Killed: back by itself. Count what /ready answered meanwhile.
    let first = postmaster_pid(&pgdata);
    // SAFETY: kill(2) on the postmaster the service started.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut answers: std::collections::BTreeMap<u16, u32> = Default::default();
    let mut seen_down = false;
    loop {
        let status = ready(client.clone()).await;
        *answers.entry(status).or_default() += 1;
        seen_down |= status != 200;
        if seen_down && status == 200 {
            break;
        }
        if !seen_down && killed.elapsed() > Duration::from_secs(2) {
            // Restarted before /ready ever noticed.
            break;
        }
        assert!(
            !service.is_finished(),
            "the service stopped: {:?}",
            service.await
        );
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not back within 60 s: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery = killed.elapsed();
    let second = postmaster_pid(&pgdata);
    assert_ne!(first, second, "a new postmaster runs");
    assert_eq!(ready(client.clone()).await, 200);
    eprintln!(
        "postmaster SIGKILL under aula serve: /ready 200 again after {:.2} s; /ready answers meanwhile (status: count) {answers:?}",
        recovery.as_secs_f64()
    );

    // 2. Killed for good: the service gives up after its restarts and returns an error.
    std::fs::remove_file(pgdata.join("postgresql.conf")).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(second, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(120), service)
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
