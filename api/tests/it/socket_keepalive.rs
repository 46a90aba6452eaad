//! `/graphql/ws` keep-alive (issue #24): the server pings on both protocols, an idle
//! socket that answers stays open past the idle timeout, and one that never answers is
//! closed with `3008`. Intervals are shortened: ping every 100 ms, idle timeout 600 ms.

use crate::common;

use std::time::Duration;

use common::ws::{connect, send, Socket};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const PING: Duration = Duration::from_millis(100);
const IDLE_TIMEOUT: Duration = Duration::from_millis(600);

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.socket_ping_interval = PING;
        c.socket_idle_timeout = IDLE_TIMEOUT;
    })
    .await
}

/// What arrived on a socket while it was read for a while.
#[derive(Default, Debug)]
struct Seen {
    texts: Vec<Value>,
    ping_frames: usize,
    close: Option<u16>,
}

/// Reads for `duration` (tungstenite answers ping frames while it reads), answering
/// `{"type":"ping"}` with `{"type":"pong"}` as graphql-ws clients do when `answer`.
async fn read_for(socket: &mut Socket, duration: Duration, answer: bool) -> Seen {
    let mut seen = Seen::default();
    let end = Instant::now() + duration;
    loop {
        let message = match tokio::time::timeout_at(end, socket.next()).await {
            Err(_) => return seen,
            Ok(message) => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if answer && value["type"] == "ping" {
                    send(socket, json!({ "type": "pong" })).await;
                }
                seen.texts.push(value);
            }
            Some(Ok(Message::Ping(_))) => seen.ping_frames += 1,
            Some(Ok(Message::Close(frame))) => {
                seen.close = Some(frame.map_or(1005, |f| f.code.into()));
                return seen;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => {
                seen.close.get_or_insert(1006);
                return seen;
            }
        }
    }
}

fn count(seen: &Seen, kind: &str) -> usize {
    seen.texts.iter().filter(|m| m["type"] == kind).count()
}

/// Connects with `protocol` and sends `connection_init`.
async fn open(server: &TestServer, protocol: &str) -> Socket {
    let mut socket = connect(server, protocol).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    socket
}

/// Asks `{ health { status } }` with the protocol's `start` message and asserts the
/// `result` message answers `ok`: the socket is still usable.
async fn assert_health_answers(socket: &mut Socket, start: &str, result: &str, answer: bool) {
    send(
        socket,
        json!({ "id": "1", "type": start, "payload": { "query": "{ health { status } }" } }),
    )
    .await;
    let seen = read_for(socket, Duration::from_millis(500), answer).await;
    let message = seen
        .texts
        .iter()
        .find(|m| m["type"] == result)
        .unwrap_or_else(|| panic!("no result: {seen:?}"));
    assert_eq!(
        message["payload"]["data"]["health"]["status"], "ok",
        "{message}"
    );
}

/// A socket of `protocol` left idle for three idle timeouts (its pings answered if
/// `answer`): still open, acknowledged once. Returns what it saw, to be asserted further.
async fn idle_for_three_timeouts(protocol: &str, answer: bool) -> (TestServer, Socket, Seen) {
    let server = server().await;
    let mut socket = open(&server, protocol).await;
    let seen = read_for(&mut socket, IDLE_TIMEOUT * 3, answer).await;
    assert_eq!(seen.close, None, "{seen:?}");
    assert_eq!(count(&seen, "connection_ack"), 1, "{seen:?}");
    (server, socket, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_transport_ws_is_pinged_and_stays_open_while_idle() {
    let (server, mut socket, seen) = idle_for_three_timeouts("graphql-transport-ws", true).await;
    assert!(count(&seen, "ping") >= 5, "protocol pings: {seen:?}");
    assert!(seen.ping_frames >= 5, "ping frames: {seen:?}");

    // Still usable after three idle timeouts.
    assert_health_answers(&mut socket, "subscribe", "next", true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_graphql_ws_gets_keep_alives_and_stays_open_while_idle() {
    // A legacy client never answers `ka`: its WebSocket pongs keep it alive.
    let (server, mut socket, seen) = idle_for_three_timeouts("graphql-ws", false).await;
    assert!(count(&seen, "ka") >= 5, "keep-alives: {seen:?}");

    assert_health_answers(&mut socket, "start", "data", false).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_never_answers_is_closed_with_3008() {
    let server = server().await;
    let mut socket = open(&server, "graphql-transport-ws").await;
    // Not reading: no pong frame or message goes back.
    tokio::time::sleep(IDLE_TIMEOUT + 4 * PING).await;
    let seen = read_for(&mut socket, Duration::from_secs(2), false).await;
    assert!(seen.ping_frames >= 1, "{seen:?}");
    assert_eq!(seen.close, Some(3008), "{seen:?}");
    server.stop().await;
}
