//! The rules of `/graphql/ws` that async-graphql's protocol loop does not keep itself.
//!
//! [`async_graphql::http::WebSocket`] speaks the protocols but bends
//! [graphql-transport-ws](https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md)
//! in ways its options cannot change: a `subscribe` before `connection_init` closed
//! the socket with `1011`, a refused `connection_init` with `1002`, a second
//! `subscribe` with an id still running silently replaced the first, and a socket took
//! any number of subscriptions. These rules sit between the client and that loop: they
//! read each client message first, and what they refuse never reaches it.
//!
//! On `graphql-transport-ws`, as the protocol says:
//! - `subscribe` before `connection_init`: closed `4401 Unauthorized`;
//! - a refused `connection_init` (bad, expired or revoked token): closed
//!   `4403 Forbidden` (the database unreachable meanwhile: `1011`, retry);
//! - `subscribe` with the id of an operation still running: closed
//!   `4409 Subscriber for <id> already exists`;
//! - a message that is not one of the protocol's (not a JSON object, an unknown
//!   `type`, a `subscribe` without an id or a query, a `complete` without an id):
//!   closed `4400 Invalid message received` (async-graphql closed with `1002`, which
//!   the protocol's clients do not expect);
//! - a second `connection_init`: closed `4429 Too many initialisation requests`.
//!
//! On both protocols, a socket runs at most [`MAX_OPERATIONS_PER_SOCKET`] operations at
//! once: one more is answered with an `error` message for its id (`VALIDATION`,
//! `TOO_MANY_SUBSCRIPTIONS`), and the socket and its other operations go on.

use std::collections::HashSet;
use std::sync::Mutex;

use async_graphql::http::WebSocketProtocols;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Operations one socket runs at once, at most (each costs a stream and its polling).
pub(crate) const MAX_OPERATIONS_PER_SOCKET: usize = 100;

/// What the rules want sent in place of what they refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A text message to the client; the socket goes on.
    Send(String),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

#[derive(Debug, Default)]
struct State {
    /// `connection_init` arrived (async-graphql holds later messages until it is
    /// answered, and closes the socket if it is refused).
    initialised: bool,
    /// Ids of the operations running: subscribed, neither completed by the server nor
    /// stopped by the client.
    running: HashSet<String>,
    /// A close was decided: nothing more reaches async-graphql.
    closed: bool,
    /// Someone signed in on it (`connection_init` with an accepted token).
    signed_in: bool,
}

/// Whether `message` is one a graphql-transport-ws client may send, in its shape: an
/// object with a known `type`, and for `subscribe` a string id and a payload with a
/// string query, for `complete` a string id.
fn is_transport_ws_message(message: &Value) -> bool {
    let has_id = message["id"].as_str().is_some();
    match message["type"].as_str() {
        Some("connection_init" | "ping" | "pong") => true,
        Some("subscribe") => has_id && message["payload"]["query"].is_string(),
        Some("complete") => has_id,
        _ => false,
    }
}

/// The rules of one socket.
#[derive(Debug)]
pub(crate) struct SocketRules {
    protocol: WebSocketProtocols,
    state: Mutex<State>,
    verdicts: mpsc::UnboundedSender<Verdict>,
}

impl SocketRules {
    /// The rules, and where their verdicts arrive (the socket's loop sends them).
    pub(crate) fn new(protocol: WebSocketProtocols) -> (Self, mpsc::UnboundedReceiver<Verdict>) {
        let (verdicts, receiver) = mpsc::unbounded_channel();
        let rules = Self {
            protocol,
            state: Mutex::default(),
            verdicts,
        };
        (rules, receiver)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, state: &mut State, code: u16, reason: String) {
        state.closed = true;
        let _ = self.verdicts.send(Verdict::Close(code, reason));
    }

    /// Whether a client message may reach async-graphql. On the legacy protocol a
    /// message that is not JSON, or not an object, passes: async-graphql refuses it in
    /// its own way.
    pub(crate) fn admit(&self, message: &[u8]) -> bool {
        let mut state = self.state();
        if state.closed {
            return false;
        }
        let transport_ws = self.protocol == WebSocketProtocols::GraphQLWS;
        let message = serde_json::from_slice::<Value>(message).ok();
        if transport_ws && !message.as_ref().is_some_and(is_transport_ws_message) {
            self.close(&mut state, 4400, "Invalid message received".into());
            return false;
        }
        let Some(message) = message else {
            return true;
        };
        let id = message["id"].as_str().map(str::to_owned);
        match (message["type"].as_str(), id) {
            (Some("connection_init"), _) if state.initialised && transport_ws => {
                self.close(&mut state, 4429, "Too many initialisation requests".into());
                false
            }
            (Some("connection_init"), _) => {
                state.initialised = true;
                true
            }
            (Some("subscribe" | "start"), _) if !state.initialised && transport_ws => {
                self.close(&mut state, 4401, "Unauthorized".into());
                false
            }
            (Some("subscribe" | "start"), Some(id)) => {
                if state.running.contains(&id) {
                    if transport_ws {
                        let reason = format!("Subscriber for {id} already exists");
                        self.close(&mut state, 4409, reason);
                        return false;
                    }
                    // The legacy protocol says nothing: the new one replaces the old
                    // one, as async-graphql does.
                    return true;
                }
                if state.running.len() >= MAX_OPERATIONS_PER_SOCKET {
                    let _ = self.verdicts.send(Verdict::Send(self.too_many(&id)));
                    return false;
                }
                state.running.insert(id);
                true
            }
            (Some("complete" | "stop"), Some(id)) => {
                state.running.remove(&id);
                true
            }
            _ => true,
        }
    }

    /// `connection_init` was accepted with a token.
    pub(crate) fn signed_in(&self) {
        self.state().signed_in = true;
    }

    /// Whether `connection_init` arrived (it may still be being checked).
    pub(crate) fn initialised(&self) -> bool {
        self.state().initialised
    }

    /// Whether the socket is worth nothing to anyone now: nobody signed in on it and no
    /// operation runs. A full house may close such a socket to make room.
    pub(crate) fn anonymous_and_idle(&self) -> bool {
        let state = self.state();
        !state.signed_in && state.running.is_empty()
    }

    /// Notes a server message on its way out: a `complete` ends its operation.
    pub(crate) fn sent(&self, message: &str) {
        // Only `complete` matters; most messages (`next`) are not parsed at all.
        if !message.contains("\"complete\"") {
            return;
        }
        if let Ok(message) = serde_json::from_str::<Value>(message) {
            if let (Some("complete"), Some(id)) = (message["type"].as_str(), message["id"].as_str())
            {
                self.state().running.remove(id);
            }
        }
    }

    /// `connection_init` was refused with `error` (a GraphQL error with our `code`):
    /// `4403 Forbidden` for a token that is not accepted, `1011` when the token could
    /// not be checked (the database unreachable: retry later).
    pub(crate) fn refuse_init(&self, error: &async_graphql::Error) {
        if self.protocol != WebSocketProtocols::GraphQLWS {
            return;
        }
        let code = error
            .extensions
            .as_ref()
            .and_then(|extensions| extensions.get("code"))
            .and_then(|code| match code {
                async_graphql::Value::String(code) => Some(code.clone()),
                _ => None,
            });
        let mut state = self.state();
        match code.as_deref() {
            Some(crate::error::UNAUTHENTICATED | crate::error::FORBIDDEN) => {
                self.close(&mut state, 4403, "Forbidden".into())
            }
            _ => self.close(
                &mut state,
                1011,
                "the access token could not be checked".into(),
            ),
        }
    }

    /// The protocol's `error` message for an operation refused because the socket
    /// runs too many.
    fn too_many(&self, id: &str) -> String {
        let message = format!(
            "a socket runs at most {MAX_OPERATIONS_PER_SOCKET} operations at once; \
             complete one first or open another socket"
        );
        let reason = "TOO_MANY_SUBSCRIPTIONS";
        // The shape of every VALIDATION error (see `error.rs`).
        let error = json!({
            "message": message,
            "extensions": {
                "code": crate::error::VALIDATION,
                "field": "id",
                "reason": reason,
                "fields": [{ "field": "id", "reason": reason, "message": message }],
            },
        });
        let payload = match self.protocol {
            WebSocketProtocols::GraphQLWS => json!([error]),
            WebSocketProtocols::SubscriptionsTransportWS => error,
        };
        json!({ "id": id, "type": "error", "payload": payload }).to_string()
    }
}
