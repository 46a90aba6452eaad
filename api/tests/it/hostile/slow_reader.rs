//! A WebSocket client that asks and never reads.
//!
//! A socket's operations run inside its loop, which used to stop polling them while a
//! send waited for the client (up to the 60 s idle timeout): every operation then
//! holding a pooled connection, or waiting for one, kept it. One socket sending 100
//! operations and reading none took the whole pool: every other request of the process
//! waited the pool's 10 s and answered `503 UNAVAILABLE`, for 30 s (probe, session 19,
//! debug binary), again for as long as the client kept doing it.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// An answer of ~85 KB (the schema's types with their descriptions) that needs the
/// database first (the socket's session is checked before each operation).
const BIG_ANSWER: &str =
    "{ __schema { types { name description fields { name description args { name description } } } } }";

/// A signed-in `graphql-transport-ws` socket whose client reads almost nothing: a
/// 4 KiB receive buffer, and it is read no more after the acknowledgement.
async fn reading_nothing(
    server: &TestServer,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let address = server.base.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(address).await.unwrap();
    let request = server.socket_request();
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap();
    assert!(
        matches!(&ack, Some(Ok(Message::Text(text))) if text.contains("connection_ack")),
        "{ack:?}"
    );
    socket
}

/// The server keeps serving everyone else, and drops the socket once more than its
/// unsent-message limit waits for it. Before: `{ me }` from another client waited the
/// pool's 10 s and answered `UNAVAILABLE`.
#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_never_reads_cannot_hold_the_database_pool() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let mut socket = reading_nothing(&server, &admin.token).await;
    for n in 0..100 {
        let ask =
            json!({ "id": n.to_string(), "type": "subscribe", "payload": { "query": BIG_ANSWER } });
        socket
            .send(Message::Text(ask.to_string().into()))
            .await
            .unwrap();
    }
    // Let the operations start and the server's sends back up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let me = server.query(&admin.token, "{ me { email } }").await;
        assert_ok(&me);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "another client waited {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The socket was dropped: reading now, it ends before the 100 answers.
    let mut answers = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(&message, Message::Text(text) if text.contains("\"next\"")) {
                answers += 1;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the socket is still open after {answers} answers"
    );
    assert!(
        answers < 100,
        "all {answers} answers were kept for a client that did not read"
    );
    server.stop().await;
}

/// The limit counts what waits behind the message being written: a client that reads
/// gets an answer larger than the limit, and the messages after it, and its socket stays
/// open. (The first version of the limit counted the message being written too, and
/// dropped such a client as soon as the answer's `complete` followed it.)
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_larger_than_the_limit_reaches_a_client_that_reads() {
    let server = TestServer::start_with(|c| c.socket_unsent_limit_bytes = 4096).await;
    let admin = server.admin().await;
    let mut socket = crate::common::ws::connect(&server, "graphql-transport-ws").await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", admin.token) } });
    socket
        .send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    for round in 0..3 {
        let id = format!("big-{round}");
        let ask = json!({ "id": id, "type": "subscribe", "payload": { "query": BIG_ANSWER } });
        socket
            .send(Message::Text(ask.to_string().into()))
            .await
            .unwrap();
        let (mut answer, mut completed) = (0, false);
        while !completed {
            let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("a message within 10 s")
                .expect("the socket is open")
                .expect("the socket is open");
            let Message::Text(text) = message else {
                continue;
            };
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            if message["id"] == id.as_str() {
                match message["type"].as_str() {
                    Some("next") => answer = text.len(),
                    Some("complete") => completed = true,
                    other => panic!("{other:?}: {message}"),
                }
            }
        }
        assert!(answer > 4096 * 10, "the answer was {answer} bytes");
    }
    server.stop().await;
}
