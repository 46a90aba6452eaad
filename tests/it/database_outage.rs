//! PostgreSQL stops and refuses connections under a running `aula serve`: requests that
//! need the database are answered `UNAVAILABLE` at once (not after the pool's 10 s
//! acquire timeout), `/health` keeps answering, and once the server is back requests
//! succeed again without restarting the service.

use std::time::{Duration, Instant};

use aula::cli::{GlobalArgs, LogFormat, ServeArgs};
use aula_eventlog::local_pg::{LocalPgOptions, LocalPostgres};
use serde_json::{json, Value};

use crate::support;
use support::service::Service;

/// A cluster that listens on TCP at `host`:5432 (a loopback address of its own, so no
/// other test's server takes the port), which is what refuses connections once stopped.
fn tcp_cluster(dir: &std::path::Path, host: &str) -> LocalPgOptions {
    let mut options = LocalPgOptions::new(dir);
    options.ephemeral = true;
    options
        .settings
        .push(("listen_addresses".into(), host.into()));
    options
}

async fn start(options: &LocalPgOptions) -> LocalPostgres {
    let options = options.clone();
    tokio::task::spawn_blocking(move || LocalPostgres::start(&options))
        .await
        .unwrap()
        .expect("the private PostgreSQL starts")
}

/// `signUp` from an address of its own (public mutations are limited per address): the
/// answer's HTTP status, body, and how long it took.
async fn sign_up(base: &str, i: usize) -> (u16, Value, Duration) {
    let client = support::applicant_client(61, i, Duration::from_secs(30));
    let started = Instant::now();
    let response = client
        .post(format!("{base}/graphql"))
        .json(&json!({
            "query": "mutation($e: String!) { signUp(input: { email: $e }) { accepted } }",
            "variables": { "e": format!("outage-{i}@aula.test") },
        }))
        .send()
        .await
        .expect("the service answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// The same mutation over `/graphql/ws` (graphql-transport-ws): the first message
/// answering it, and how long it took.
async fn sign_up_over_websocket(base: &str, i: usize) -> (Value, Duration) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut request = format!("{}/graphql/ws", base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let text = |message: Value| Message::Text(message.to_string().into());
    socket
        .send(text(json!({ "type": "connection_init" })))
        .await
        .unwrap();
    let started = Instant::now();
    socket
        .send(text(json!({
            "id": "1",
            "type": "subscribe",
            "payload": {
                "query": "mutation($e: String!) { signUp(input: { email: $e }) { accepted } }",
                "variables": { "e": format!("socket-{i}@aula.test") },
            },
        })))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the socket answers within 30 s")
            .expect("the socket stays open")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["id"] == "1" {
            return (message, started.elapsed());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_fail_fast_while_postgres_refuses_connections_and_recover_after() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let id = uuid::Uuid::new_v4();
    let host = format!(
        "127.{}.{}.1",
        100 + id.as_bytes()[0] % 100,
        id.as_bytes()[1]
    );
    let dir = std::env::temp_dir().join(format!("aula-outage-{}", id.simple()));
    let cluster = tcp_cluster(&dir, &host);
    let postgres = start(&cluster).await;

    let port = support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let global = GlobalArgs {
        database_url: Some(format!("postgresql://aula@{host}:5432/aula")),
        data_dir: dir.join("service"),
        log_format: LogFormat::Text,
    };
    let args = ServeArgs {
        http_addr: ([127, 0, 0, 1], port).into(),
        token_secret: Some("database outage test secret, 32+ bytes".into()),
        drain_seconds: 0,
        ..ServeArgs::default()
    };
    let mut service = Service::serve(global, args, Duration::from_secs(60)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (status, body, _) = sign_up(&base, 0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["signUp"]["accepted"], true, "{body}");

    // Stopped: connections are refused from now on. Let the pool's connections age
    // past the check it makes of a connection idle for a second.
    assert!(postgres.stop(), "the server was ours and stopped");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut took = Vec::new();
    for i in 1..=4 {
        let (status, body, elapsed) = sign_up(&base, i).await;
        took.push(elapsed);
        assert_eq!(status, 503, "{body}");
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{body}");
        assert!(error["extensions"]["retryAfterSeconds"].is_u64(), "{body}");
        assert_eq!(
            error["message"], "the service is temporarily unavailable; retry shortly",
            "no internal text reaches the client: {body}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "answered after {elapsed:?} while the database refuses connections: {body}"
        );
        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
    }
    eprintln!("signUp while PostgreSQL refuses connections answered 503 in {took:?}");
    // Over the WebSocket too.
    let (message, elapsed) = sign_up_over_websocket(&base, 5).await;
    let code = match message["type"].as_str() {
        Some("next") => &message["payload"]["errors"][0]["extensions"]["code"],
        _ => &message["payload"][0]["extensions"]["code"],
    };
    assert_eq!(code, "UNAVAILABLE", "{message}");
    assert!(
        elapsed < Duration::from_secs(2),
        "answered over the socket after {elapsed:?}: {message}"
    );
    eprintln!("over the WebSocket: UNAVAILABLE in {elapsed:?}");

    // Back: the same service serves again, by itself.
    let postgres = start(&cluster).await;
    let back = Instant::now();
    let mut i = 10;
    loop {
        let (status, body, _) = sign_up(&base, i).await;
        if status == 200 && body["data"]["signUp"]["accepted"] == true {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "not serving 20 s after the database came back: {status} {body}"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "signUp succeeded again {:?} after the database came back",
        back.elapsed()
    );
    assert!(!service.task.is_finished(), "the service kept running");
    service.request_stop();
    let _ = tokio::time::timeout(Duration::from_secs(30), service.task).await;
    postgres.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
