//! The service's graceful stop (issue #16, finding 7): on a stop signal, readiness turns
//! off first while requests are still served for the drain period, then the listener
//! closes.

mod support;

use std::time::{Duration, Instant};

use aula_eventlog::testing::TestDatabase;
use serde_json::{json, Value};
use support::service::Service;

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
