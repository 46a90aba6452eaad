//! The service's graceful stop (issue #16, finding 7): on a stop signal, readiness turns
//! off first while requests are still served for the drain period, then the listener
//! closes.

mod support;

use std::time::{Duration, Instant};

use aula::cli::{GlobalArgs, LogFormat, ServeArgs};
use aula_eventlog::testing::TestDatabase;
use serde_json::{json, Value};
use support::{database_url, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_turns_readiness_off_then_drains_then_closes() {
    let db = TestDatabase::new().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data_dir =
        std::env::temp_dir().join(format!("aula-lifecycle-{}", uuid::Uuid::new_v4().simple()));
    let global = GlobalArgs {
        database_url: Some(database_url(&db)),
        data_dir: data_dir.clone(),
        log_format: LogFormat::Text,
    };
    let args = ServeArgs {
        http_addr: ([127, 0, 0, 1], port).into(),
        token_secret: Some("lifecycle test secret, at least 32 bytes long".into()),
        drain_seconds: 5,
        ..ServeArgs::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        aula::serve::serve(&global, &args, async {
            let _ = stopped.await;
        })
        .await
    });
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{base}/ready")).send().await;
        if matches!(&ready, Ok(r) if r.status().is_success()) {
            break;
        }
        assert!(!service.is_finished(), "the service stopped while starting");
        assert!(Instant::now() < deadline, "not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    stop.send(()).unwrap();
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
    tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("the service stops after the drain")
        .unwrap()
        .unwrap();
    assert!(stop_requested.elapsed() >= Duration::from_secs(5));
    assert!(client.get(format!("{base}/health")).send().await.is_err());
    let _ = std::fs::remove_dir_all(data_dir);
}
