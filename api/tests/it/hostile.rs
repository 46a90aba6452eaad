//! The front door against a hostile world (issue #16, findings 1–6): generated nested,
//! wide, huge and malformed documents over HTTP and WebSocket, slow clients, too many
//! connections, cross-site content types, NUL characters and impossible dates, and a
//! database that cannot be reached. The process must answer every request.

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_api::{AppState, ManualClock, ServerLimits};
use chrono::{TimeZone, Utc};
use common::ws::{self, Socket};
use common::*;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

mod budgets;
mod connections;
mod slow_reader;

/// One generated hostile document.
fn hostile_document(rng: &mut StdRng) -> String {
    let depth = rng.gen_range(40..4000);
    match rng.gen_range(0..11) {
        // An unclosed block string in front of deep nesting: the parser reads `""` and
        // parses on.
        10 => format!(
            "{{ health(x: [\"\"\" \" {}1{} ]) {{ status }} }}",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        0 => format!(
            "{{health(x:{}1{}){{status}}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        1 => format!(
            "{{health(x:{}1{})}}",
            "{a:".repeat(depth),
            "}".repeat(depth)
        ),
        2 => format!("{}{}", "{health ".repeat(depth), "}".repeat(depth)),
        3 => format!("{{health{}}}", "(".repeat(depth)),
        4 => {
            let n = rng.gen_range(50..3000);
            let aliases: String = (0..n).map(|i| format!("a{i}:__typename ")).collect();
            format!("{{{aliases}}}")
        }
        5 => "{ health { status } }".repeat(rng.gen_range(100..3000)),
        6 => {
            // Random punctuation soup: malformed, unbalanced.
            const ALPHABET: &[u8] = b"{}[]()\"\\:@$!.=|&# abc123\n";
            (0..rng.gen_range(1..20_000))
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        }
        7 => format!(
            "{{health(x:\"{}\\u0000\")}}",
            "[".repeat(rng.gen_range(0..100))
        ),
        8 => {
            let spreads = "...F ".repeat(rng.gen_range(10..400));
            let fields: String = (0..40).map(|i| format!("t{i}:__typename ")).collect();
            format!("{{{spreads}}} fragment F on Query {{{fields}}}")
        }
        _ => format!(
            "query Q($v: [[Int]] = {}1{}) {{ health {{ status }} }}",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_generated_hostile_document_is_answered() {
    let server = TestServer::start().await;
    let seed: u64 = std::env::var("AULA_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("seed {seed} (AULA_HOSTILE_SEED reproduces it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let documents: Vec<String> = (0..300).map(|_| hostile_document(&mut rng)).collect();
    let server = Arc::new(server);
    for batch in documents.chunks(16) {
        let answers = futures::future::join_all(batch.iter().map(|query| {
            let server = server.clone();
            let query = query.clone();
            async move {
                let response = server
                    .client
                    .post(server.url("/graphql"))
                    .json(&json!({ "query": query }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("no answer (seed {seed}): {e}"));
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (query, status, body)
            }
        }))
        .await;
        for (query, status, body) in answers {
            assert!(
                matches!(status, 200 | 400 | 413),
                "status {status} for a document of {} bytes (seed {seed})",
                query.len()
            );
            if let Some(errors) = body["errors"].as_array() {
                for error in errors {
                    let code = error["extensions"]["code"].as_str().unwrap_or_default();
                    assert_eq!(code, "VALIDATION", "{error} (seed {seed})");
                }
            } else {
                assert!(body["data"].is_object(), "{body} (seed {seed})");
            }
        }
    }
    // An unclosed block string does not hide nesting from the limits.
    let sneaky = format!(
        "{{ health(x: [\"\"\" \" {}1{} ]) {{ status }} }}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = server.gql(None, &sneaky, json!({})).await;
    assert_eq!(extension(&r, "reason"), "UNTERMINATED_STRING");
    // The deepest documents were refused before parsing, with the reason.
    let deep = format!(
        "{{health(x:{}1{}){{status}}}}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let r = server.gql(None, &deep, json!({})).await;
    assert_reason(&r, "VALIDATION", "TOO_DEEP");
    let health = health(&server).await;
    assert_eq!(health["status"], "ok");
    Arc::into_inner(server).unwrap().stop().await;
}

async fn socket(server: &TestServer) -> Socket {
    let mut socket = ws::connect(server, "graphql-transport-ws").await;
    ws::send(&mut socket, json!({"type": "connection_init"})).await;
    let ack = next_json(&mut socket).await.expect("connection_ack");
    assert_eq!(ack["type"], "connection_ack");
    socket
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")
        {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_documents_pass_the_same_limits_and_messages_are_bounded() {
    let server = TestServer::start_with(|c| c.body_limit_bytes = 8192).await;
    let mut ws = socket(&server).await;
    for (id, query) in [
        (
            "lists",
            format!(
                "{{health(x:{}1{}){{status}}}}",
                "[".repeat(2000),
                "]".repeat(2000)
            ),
        ),
        (
            "objects",
            format!("{{health(x:{}1{})}}", "{a:".repeat(1000), "}".repeat(1000)),
        ),
    ] {
        ws.send(Message::Text(
            json!({"id": id, "type": "subscribe", "payload": {"query": query}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        // The answer (an `error`, or a `next` carrying errors); a `complete` of an
        // earlier operation may come first.
        let answer = loop {
            let message = next_json(&mut ws).await.expect("an answer on the socket");
            if message["id"] == id && message["type"] != "complete" {
                break message;
            }
        };
        let text = answer.to_string();
        assert!(text.contains("TOO_DEEP"), "{text}");
    }
    // A message larger than a request body may be: the socket is closed, the
    // server lives on.
    let huge = json!({"id": "huge", "type": "subscribe",
        "payload": {"query": format!("{{ health {{ status }} }} # {}", "x".repeat(100_000))}});
    let _ = ws.send(Message::Text(huge.to_string().into())).await;
    while let Some(message) = next_json(&mut ws).await {
        assert_ne!(
            message["id"], "huge",
            "an oversized message was executed: {message}"
        );
    }
    let r = server.gql(None, "{ health { status } }", json!({})).await;
    assert_ok(&r);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typename_and_fragments_count_toward_the_limits() {
    let server = TestServer::start().await;
    let fields: String = (0..40).map(|i| format!("t{i}: __typename ")).collect();
    let spreads = "...F ".repeat(30);
    let r = server
        .gql(
            None,
            &format!("{{ {spreads} }} fragment F on Query {{ {fields} }}"),
            json!({}),
        )
        .await;
    assert_reason(&r, "VALIDATION", "TOO_COMPLEX");
    // A modest use still works.
    let r = server
        .gql(
            None,
            "{ a: __typename b: __typename health { status } }",
            json!({}),
        )
        .await;
    assert_ok(&r);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_json_posts_execute() {
    let server = TestServer::start().await;
    let body = json!({"query": "{ health { status } }"}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = server
            .client
            .post(server.url("/graphql"))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let r: Value = response.json().await.unwrap();
        assert_eq!(extension(&r, "reason"), "UNSUPPORTED_MEDIA_TYPE");
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        let response = server
            .client
            .post(server.url("/graphql"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{content_type}");
    }
    server.stop().await;
}

/// Every answer is what its content type says: `X-Content-Type-Options: nosniff` on the
/// API's JSON (whose errors quote the caller's text, markup included), the pages, their
/// scripts and a 404, so no browser guesses HTML or a script from them.
#[tokio::test(flavor = "multi_thread")]
async fn no_answer_is_sniffed_for_another_content_type() {
    let server = TestServer::start().await;
    let echoed = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(json!({"query": "{ x<img src=x onerror=alert(1)> }"}).to_string())
        .send()
        .await
        .unwrap();
    let mut answers = vec![("POST /graphql".to_owned(), echoed)];
    for path in [
        "/admin",
        "/admin/app.js",
        "/graphql",
        "/reset-password",
        "/health",
        "/nowhere",
    ] {
        answers.push((path.to_owned(), server.get(path).await));
    }
    for (what, answer) in answers {
        assert_eq!(
            answer
                .headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nul_characters_and_impossible_dates_are_validation_errors() {
    let (server, admin) = TestServer::with_admin().await;
    let events = "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { eventId } } }";
    let tasks = "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { id } } }";
    let cases = [
        (
            events,
            json!({"types": ["Student\u{0}Created"]}),
            "NUL_CHARACTER",
        ),
        (events, json!({"status": "\u{0}"}), "NUL_CHARACTER"),
        (tasks, json!({"kinds": ["a\u{0}"]}), "NUL_CHARACTER"),
        // Issue #23's searches: NUL refused, and too short to use the trigram index.
        (events, json!({"search": "ab\u{0}cd"}), "NUL_CHARACTER"),
        (tasks, json!({"search": "ab\u{0}cd"}), "NUL_CHARACTER"),
        (events, json!({"search": " ab "}), "TOO_SHORT"),
        (
            events,
            json!({"recordedFrom": "-5000-01-01T00:00:00Z"}),
            "OUT_OF_RANGE",
        ),
        (
            events,
            json!({"processedTo": "-4800-06-01T00:00:00Z"}),
            "OUT_OF_RANGE",
        ),
        (
            tasks,
            json!({"createdFrom": "-9999-01-01T00:00:00Z"}),
            "OUT_OF_RANGE",
        ),
        (
            tasks,
            json!({"finishedTo": "-4713-12-31T00:00:00Z"}),
            "OUT_OF_RANGE",
        ),
    ];
    for (query, filter, reason) in cases {
        let r = server
            .gql(Some(&admin.token), query, json!({ "f": filter }))
            .await;
        assert_code(&r, "VALIDATION");
        assert_eq!(extension(&r, "reason"), reason, "{filter}");
    }
    // A NUL inside the document's own strings, too.
    let r = server
        .gql(
            Some(&admin.token),
            r#"{ adminEvents(filter: {types: ["a\u0000"]}) { nodes { eventId } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(extension(&r, "reason"), "NUL_CHARACTER");
    // The oldest storable date still works.
    let r = server
        .gql(
            Some(&admin.token),
            events,
            json!({"f": {"recordedFrom": "-4712-01-02T00:00:00Z"}}),
        )
        .await;
    assert_ok(&r);
    server.stop().await;
}

/// A server whose database cannot be reached: connections to a closed port.
async fn server_without_database(
    clock: Arc<ManualClock>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(closed_port)
        .username("nobody")
        .database("nothing");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(options);
    let state = AppState::new(pool, test_config()).with_clock(clock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(aula_api::serve(listener, aula_api::router(state), async {
        let _ = stopped.await;
    }));
    (base, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_retryable_503() {
    // A token issued by a working server with the same secret and clock.
    let working = TestServer::start().await;
    let admin = working.admin().await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    let (base, stop) = server_without_database(clock).await;
    let client = reqwest::Client::new();
    let check = |response: reqwest::Response| async move {
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["retry-after"], "2");
        let body: Value = response.json().await.unwrap();
        assert_code(&body, "UNAVAILABLE");
        assert!(extension(&body, "retryAfterSeconds").as_u64().is_some());
        let text = body.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("connect"),
            "{text}"
        );
    };
    // Anonymous: a public mutation that reads the course.
    let anonymous = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": "mutation($i: ApplyToCourseInput!) { applyToCourse(input: $i) { id } }",
            "variables": {"i": {"courseId": uuid::Uuid::new_v4(), "name": "Ana Lima",
                "birthDate": "2001-02-03", "email": "ana@aula.test"}}}))
        .send()
        .await
        .unwrap();
    check(anonymous).await;
    // Signed in: the token check itself needs the database.
    let signed_in = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&admin.token)
        .json(&json!({"query": "{ health { status } }"}))
        .send()
        .await
        .unwrap();
    check(signed_in).await;
    // /ready answers within its bound.
    let started = Instant::now();
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _ = stop.send(());
    working.stop().await;
}
