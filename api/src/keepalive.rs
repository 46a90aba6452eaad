//! Keep-alive of `/graphql/ws`: the server pings, and closes a socket that stopped
//! answering.
//!
//! async-graphql's own loop only waits: a socket on which the client sent nothing for
//! 60 s was closed (`3008 timeout`), so every quiet subscription (the dashboard's, a
//! GraphiQL tab) dropped and reconnected each minute, and a legacy `graphql-ws` client
//! (which never pings) could not stay idle at all. Here, every
//! [`ApiConfig::socket_ping_interval`](crate::config::ApiConfig):
//!
//! - a protocol ping once the connection is acknowledged: `{"type":"ping"}` on
//!   `graphql-transport-ws` (clients answer `{"type":"pong"}`), `{"type":"ka"}` on the
//!   legacy `graphql-ws` (no answer expected);
//! - a WebSocket `Ping` frame, which every WebSocket implementation (browsers
//!   included) answers with a `Pong` frame by itself, whatever the protocol above.
//!
//! **A client that never answers:** anything received counts as a sign of life (a
//! message, a `pong`, a `Pong` frame). When nothing arrived for
//! [`ApiConfig::socket_idle_timeout`](crate::config::ApiConfig), the socket is closed
//! with `3008 timeout` (the code async-graphql used). A client whose sends stall as
//! long (a full TCP window: gone or not reading) is dropped without a close frame.
//!
//! **A socket nobody signs in on:** one that sent no `connection_init` within
//! [`ApiConfig::socket_init_timeout`](crate::config::ApiConfig) is closed `4408`; one
//! on which nobody is signed in and no operation runs tells its connection slot it may
//! be evicted ([`crate::server::SocketSlot`]), and is closed `1013` when a full house
//! gives its slot to a newcomer. Upgraded sockets used to keep their slot until they
//! closed, so a crowd of sockets that never said a word held the house.
//!
//! **A client that does not read:** messages are written by a task of their own, so
//! the socket's operations go on running while a send waits; what waits unsent is
//! bounded by [`ApiConfig::socket_unsent_limit_bytes`](crate::config::ApiConfig), past
//! which the socket is dropped. The loop used to await each send itself: while one
//! waited, no operation of the socket was polled, and each that held a pooled
//! connection (or waited for one) kept it: one socket sending 100 operations and
//! reading none took the process's whole pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{BoxStream, SplitSink};
use futures::{future, SinkExt as _, Stream, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::socket_rules::{SocketRules, Verdict};

/// The close code of a socket that stopped answering.
pub(crate) const TIMEOUT_CLOSE_CODE: u16 = 3008;

/// graphql-transport-ws: no `connection_init` in time.
const INIT_TIMEOUT_CLOSE_CODE: u16 = 4408;

/// How long a socket closed for silence waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How often to ping, and how long a silent socket stays open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// Bytes of messages that may wait unsent before the socket is dropped.
    pub unsent_limit: usize,
    /// How long a socket may stay without `connection_init`.
    pub init_timeout: Duration,
}

/// Why a message could not be queued for the client.
enum Undeliverable {
    /// More than the limit waits unsent: the client does not read.
    TooSlow,
    /// The writer stopped (a send failed or stalled past the idle timeout).
    Gone,
}

/// The messages on their way to the client, written by [`write`] in order.
struct Outbox {
    queue: mpsc::UnboundedSender<Message>,
    unsent: Arc<Mutex<Unsent>>,
    limit: usize,
}

/// The sizes of the messages queued and not yet written, oldest first.
#[derive(Default)]
struct Unsent {
    sizes: std::collections::VecDeque<usize>,
    total: usize,
}

/// The bytes a message puts on the wire, give or take its frame header.
fn size(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(frame) => 2 + frame.as_ref().map_or(0, |f| f.reason.len()),
    }
}

impl Outbox {
    /// Queues `message`, unless more than the limit would then wait behind the oldest
    /// unsent message (which may be of any size: one answer larger than the limit does
    /// not drop a client that reads it).
    fn push(&self, message: Message) -> Result<(), Undeliverable> {
        let size = size(&message);
        {
            let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(&oldest) = unsent.sizes.front() {
                if unsent.total - oldest + size > self.limit {
                    return Err(Undeliverable::TooSlow);
                }
            }
            unsent.sizes.push_back(size);
            unsent.total += size;
        }
        self.queue.send(message).map_err(|_| Undeliverable::Gone)
    }
}

/// Writes the queued messages, each within `send_within`; stops at the first that
/// fails or stalls, or after a close frame.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::UnboundedReceiver<Message>,
    unsent: Arc<Mutex<Unsent>>,
    send_within: Duration,
) {
    while let Some(message) = queue.recv().await {
        let close = matches!(message, Message::Close(_));
        match tokio::time::timeout(send_within, sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("dropping a socket whose sends stalled");
                return;
            }
        }
        {
            let mut unsent = unsent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(written) = unsent.sizes.pop_front() {
                unsent.total -= written;
            }
        }
        if close {
            return;
        }
    }
}

/// Serves one upgraded socket: `graphql` turns the client's text and binary messages
/// into the protocol's answers (async-graphql's [`async_graphql::http::WebSocket`]);
/// pings, the idle check and the [`SocketRules`] are added around it (`graphql` gets
/// the rules too, to report a refused `connection_init`).
pub(crate) async fn serve<G>(
    socket: WebSocket,
    protocol: WebSocketProtocols,
    keepalive: KeepAlive,
    slot: Option<crate::server::SocketSlot>,
    graphql: impl FnOnce(BoxStream<'static, Bytes>, Arc<SocketRules>) -> G,
) where
    G: Stream<Item = WsMessage> + Send,
{
    let (sink, stream) = socket.split();
    let last_seen = Arc::new(Mutex::new(Instant::now()));
    let (rules, mut verdicts) = SocketRules::new(protocol);
    let rules = Arc::new(rules);
    let input = {
        let last_seen = last_seen.clone();
        let rules = rules.clone();
        stream
            .take_while(|message| future::ready(message.is_ok()))
            .filter_map(move |message| {
                *last_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                future::ready(match message {
                    Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                        Some(message.into_data()).filter(|data| rules.admit(data))
                    }
                    _ => None,
                })
            })
            .boxed()
    };
    let answers = graphql(input, rules.clone());
    futures::pin_mut!(answers);
    let ping = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let mut ticker = tokio::time::interval_at(
        Instant::now() + keepalive.ping_interval,
        keepalive.ping_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acknowledged = false;
    // The writer gives up on a send that cannot finish within the idle timeout: the
    // client is gone or does not read.
    let (queue, queued) = mpsc::unbounded_channel();
    let unsent = Arc::new(Mutex::new(Unsent::default()));
    let outbox = Outbox {
        queue,
        unsent: unsent.clone(),
        limit: keepalive.unsent_limit,
    };
    let writer = tokio::spawn(write(sink, queued, unsent, keepalive.idle_timeout));
    let init_deadline = tokio::time::sleep(keepalive.init_timeout);
    tokio::pin!(init_deadline);
    loop {
        // A socket nobody signed in on, running nothing, may make room on a full house.
        if let Some(slot) = &slot {
            slot.evictable(rules.anonymous_and_idle());
        }
        let outgoing: Vec<Message> = tokio::select! {
            // A verdict first: it was decided before async-graphql could answer what
            // it replaces.
            biased;
            // Its slot went to a newcomer: close at once.
            () = async { match &slot { Some(slot) => slot.evicted().await, None => future::pending().await } } => {
                tracing::debug!("full house: closing a socket nobody signed in on");
                let close = Message::Close(Some(CloseFrame { code: 1013, reason: "Try Again Later".into() }));
                let _ = outbox.push(close);
                break;
            }
            () = &mut init_deadline, if !rules.initialised() => {
                let close = Message::Close(Some(CloseFrame {
                    code: INIT_TIMEOUT_CLOSE_CODE,
                    reason: "Connection initialisation timeout".into(),
                }));
                let _ = outbox.push(close);
                break;
            }
            Some(verdict) = verdicts.recv() => match verdict {
                Verdict::Send(text) => vec![Message::Text(text.into())],
                Verdict::Close(code, reason) => {
                    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                    if outbox.push(close).is_ok() {
                        let drain = async { while answers.next().await.is_some() {} };
                        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
                    }
                    break;
                }
            },
            answer = answers.next() => match answer {
                None => break,
                Some(WsMessage::Text(text)) => {
                    acknowledged = acknowledged || is_ack(&text);
                    rules.sent(&text);
                    vec![Message::Text(text.into())]
                }
                Some(WsMessage::Close(code, reason)) => {
                    // A refused `connection_init` is decided while async-graphql polls
                    // it, so its verdict and async-graphql's close come together: the
                    // verdict's code is the protocol's.
                    let (code, reason) = match verdicts.try_recv() {
                        Ok(Verdict::Close(code, reason)) => (code, reason),
                        _ => (code, reason),
                    };
                    vec![Message::Close(Some(CloseFrame { code, reason: reason.into() }))]
                }
            },
            _ = ticker.tick() => {
                let silent = last_seen.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                if silent >= keepalive.idle_timeout {
                    tracing::debug!(?silent, "closing a socket that stopped answering");
                    let close = Message::Close(Some(CloseFrame {
                        code: TIMEOUT_CLOSE_CODE,
                        reason: "timeout".into(),
                    }));
                    // The closing handshake: a client that is still there answers the
                    // close frame (and reads it before the connection goes away).
                    if outbox.push(close).is_ok() {
                        let drain = async { while answers.next().await.is_some() {} };
                        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
                    }
                    break;
                }
                let mut pings = Vec::with_capacity(2);
                if acknowledged {
                    pings.push(Message::Text(ping.into()));
                }
                pings.push(Message::Ping(Bytes::new()));
                pings
            }
        };
        for message in outgoing {
            match outbox.push(message) {
                Ok(()) => {}
                Err(Undeliverable::Gone) => return,
                Err(Undeliverable::TooSlow) => {
                    tracing::debug!(
                        limit = keepalive.unsent_limit,
                        "dropping a socket that does not read its messages"
                    );
                    writer.abort();
                    return;
                }
            }
        }
    }
    // What is queued (a close frame, the last answers) still goes out, each send
    // bounded by the idle timeout.
    drop(outbox);
    let _ = writer.await;
}

/// Whether an answer is the protocol's `connection_ack` (pings start after it).
fn is_ack(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|message| message["type"] == "connection_ack")
}
