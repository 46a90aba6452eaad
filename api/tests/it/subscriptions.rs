//! `/graphql/ws`: the `logPosition` subscription, admin only, token in connection_init.

use crate::common;

mod fan_out;
mod finishing;

use std::time::Duration;

use common::ws::{connect, send, Socket};
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The next JSON message, or None when the server closed the connection.
async fn receive(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// The first message that `wanted` accepts, skipping the others; `expect` says what a
/// closed socket means to the caller.
async fn receive_until(
    socket: &mut Socket,
    expect: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let message = receive(socket).await.expect(expect);
        if wanted(&message) {
            return message;
        }
    }
}

async fn subscribe(server: &TestServer, token: Option<&str>) -> (Socket, Option<Value>) {
    subscribe_to(
        server,
        token,
        json!({ "query": "subscription { logPosition }" }),
    )
    .await
}

async fn subscribe_to(
    server: &TestServer,
    token: Option<&str>,
    subscription: Value,
) -> (Socket, Option<Value>) {
    let mut socket = connect(server, "graphql-transport-ws").await;
    let payload = match token {
        Some(token) => json!({ "authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = receive(&mut socket).await;
    if ack.as_ref().map(|m| m["type"].clone()) != Some(json!("connection_ack")) {
        return (socket, ack);
    }
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": subscription }),
    )
    .await;
    let first = receive(&mut socket).await;
    (socket, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_follow_the_log_position() {
    let server = TestServer::start_with(|c| {
        c.subscription_poll_interval = Duration::from_millis(20);
    })
    .await;
    let admin = server.admin().await;
    let (mut socket, first) = subscribe(&server, Some(&admin.token)).await;
    let first = first.expect("a first position");
    assert_eq!(first["type"], "next", "{first}");
    let start = first["payload"]["data"]["logPosition"].as_i64().unwrap();

    let signed_up = server
        .gql(
            None,
            "mutation { signUp(input: { email: \"watch@aula.test\" }) { logPosition } }",
            json!({}),
        )
        .await;
    let position = signed_up["data"]["signUp"]["logPosition"].as_i64().unwrap();
    assert!(position > start);
    loop {
        let message = receive(&mut socket).await.expect("the stream goes on");
        let seen = message["payload"]["data"]["logPosition"].as_i64().unwrap();
        if seen >= position {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_staff_and_bad_tokens_are_refused() {
    let (server, a) = TestServer::with_institution("Escola WS").await;

    // Staff and observers follow the log (issue #23: a manager's dashboard is live too);
    // a teacher does not.
    let (_socket, answer) = subscribe(&server, Some(&a.manager.token)).await;
    let answer = answer.expect("an answer");
    assert!(
        answer["payload"]["data"]["logPosition"].is_i64(),
        "{answer}"
    );
    let (teacher_id, teacher_email) = server.teacher(&a.manager.token, None).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    let (_socket, answer) = subscribe(&server, Some(&teacher.token)).await;
    let answer = answer.expect("an answer");
    assert!(answer.to_string().contains("FORBIDDEN"), "{answer}");

    let (_socket, answer) = subscribe(&server, None).await;
    let answer = answer.expect("an answer");
    assert!(answer.to_string().contains("UNAUTHENTICATED"), "{answer}");

    // A forged token: the connection is not acknowledged.
    let (_socket, answer) = subscribe(&server, Some("forged.token")).await;
    assert!(
        answer.as_ref().map(|m| m["type"].clone()) != Some(json!("connection_ack")),
        "{answer:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_reprocessing_progress_streams_until_the_job_ends() {
    let (server, _projections) = server_with_projections().await;
    let admin = server.admin().await;
    let a = server.institution("Gamma").await;
    for _ in 0..3 {
        server.campus(&a.manager.token, None).await;
    }
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE metadata->>'institution_id' = $1")
            .bind(a.id.to_string())
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
    let preview_query =
        "query($f: AdminEventFilter) { bulkReprocessPreview(filter: $f) { count confirmToken } }";
    let filter = json!({ "f": { "institutionId": a.id } });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let token = loop {
        let r = server
            .gql(Some(&admin.token), preview_query, filter.clone())
            .await;
        let preview = &r["data"]["bulkReprocessPreview"];
        if preview["count"] == expected {
            break preview["confirmToken"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "preview never caught up: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = server
        .gql(
            Some(&admin.token),
            "mutation($t: String!) { bulkReprocessConfirm(confirmToken: $t) { id } }",
            json!({ "t": token }),
        )
        .await;
    let job = r["data"]["bulkReprocessConfirm"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone else's manager may not watch it.
    let b = server.institution("Delta").await;
    let query = json!({
        "query": "subscription($id: UUID!) { bulkReprocessProgress(id: $id) { status total done failed } }",
        "variables": { "id": job },
    });
    let (_socket, refused) = subscribe_to(&server, Some(&b.manager.token), query.clone()).await;
    let refused = refused.expect("an answer");
    assert_eq!(refused["payload"]["data"], Value::Null, "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );

    let (mut socket, first) = subscribe_to(&server, Some(&admin.token), query).await;
    let mut message = first.expect("a first progress report");
    loop {
        assert_eq!(message["type"], "next", "{message}");
        let progress = &message["payload"]["data"]["bulkReprocessProgress"];
        if progress["status"] != "running" {
            assert_eq!(progress["status"], "done", "{progress}");
            assert_eq!(progress["done"], expected, "{progress}");
            assert_eq!(progress["failed"], 0, "{progress}");
            break;
        }
        message = receive(&mut socket)
            .await
            .expect("the stream goes on until the job ends");
    }
    let complete = receive(&mut socket)
        .await
        .expect("the server completes the stream");
    assert_eq!(complete["type"], "complete", "{complete}");
    server.stop().await;
}

/// A socket authenticates once, at `connection_init`, but its token and account are
/// checked again for every operation sent over it: a teacher deactivated meanwhile is
/// refused on the same connection, as over HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn operations_on_a_socket_stop_when_the_account_is_deactivated() {
    let (server, a) = TestServer::with_institution("Escola Sessões").await;
    let (teacher_id, email) = server.teacher(&a.manager.token, None).await;
    let teacher = server.activate(teacher_id, &email).await;
    let me = json!({ "query": "{ me { email } }" });

    let (mut socket, first) = subscribe_to(&server, Some(&teacher.token), me.clone()).await;
    let first = first.expect("an answer");
    assert_eq!(first["payload"]["data"]["me"]["email"], email, "{first}");

    let deactivated = server
        .command(
            Some(&a.manager.token),
            "deactivateUser",
            json!({ "userId": teacher_id, "reason": "left the school" }),
        )
        .await;
    assert_ok(&deactivated);
    send(
        &mut socket,
        json!({ "id": "2", "type": "subscribe", "payload": me }),
    )
    .await;
    let answer = receive_until(&mut socket, "an answer", |m| m["id"] == "2").await;
    let text = answer.to_string();
    assert!(text.contains("UNAUTHENTICATED"), "{text}");
    assert!(text.contains("ACCOUNT_DEACTIVATED"), "{text}");
    assert!(!text.contains(&email), "{text}");
    server.stop().await;
}

/// A subscription ends with an error when its token expires, instead of streaming on
/// with the claims of its `connection_init`.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_ends_when_its_token_expires() {
    let server = TestServer::start_with(|c| {
        c.subscription_poll_interval = Duration::from_millis(20);
        c.socket_recheck_interval = Duration::from_millis(50);
    })
    .await;
    let admin = server.admin().await;
    let (mut socket, first) = subscribe(&server, Some(&admin.token)).await;
    assert_eq!(first.expect("a first position")["type"], "next");
    let ttl = chrono::Duration::from_std(test_config().token_ttl).unwrap();
    server.clock.advance(ttl + chrono::Duration::seconds(1));
    let end = receive_until(&mut socket, "the stream goes on", |m| {
        m["type"] != "next" || m["payload"]["errors"].is_array()
    })
    .await;
    let text = end.to_string();
    assert!(text.contains("TOKEN_EXPIRED"), "{text}");
    server.stop().await;
}

/// The close frame the server ends the socket with (messages before it are skipped).
async fn close_frame(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no close within 10 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a close frame")
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// An acknowledged graphql-transport-ws socket signed in with `token`.
async fn initialised(server: &TestServer, token: &str) -> Socket {
    let mut socket = connect(server, "graphql-transport-ws").await;
    let payload = json!({ "authorization": format!("Bearer {token}") });
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = receive(&mut socket).await.expect("an answer");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

fn log_position(id: &str) -> Value {
    json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { logPosition }" } })
}

/// An account has at most `max_sockets_per_account` signed-in sockets open: one more
/// `connection_init` closes `4403`, another account is not affected, and a closed socket
/// makes room. Before: no bound, so one (free) account could hold every connection slot
/// with sockets a full house may not close.
#[tokio::test(flavor = "multi_thread")]
async fn an_account_has_a_bounded_number_of_sockets() {
    let server = TestServer::start_with(|c| c.max_sockets_per_account = 3).await;
    let admin = server.admin().await;
    let other = server.admin().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(initialised(&server, &admin.token).await);
    }
    let mut one_more = connect(&server, "graphql-transport-ws").await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", admin.token) } });
    send(&mut one_more, init.clone()).await;
    assert_eq!(close_frame(&mut one_more).await, (4403, "Forbidden".into()));
    let _others = initialised(&server, &other.token).await;
    // One closed: room for one more (once the server has seen it close).
    open.pop().unwrap().close(None).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let mut again = connect(&server, "graphql-transport-ws").await;
        send(&mut again, init.clone()).await;
        if receive(&mut again)
            .await
            .is_some_and(|m| m["type"] == "connection_ack")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// graphql-transport-ws: a socket that sends no `connection_init` in time is closed
/// `4408 Connection initialisation timeout`. Before: it stayed open for as long as its
/// client answered the server's pings (every WebSocket library does by itself).
#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_never_initialises_is_closed_4408() {
    let server = TestServer::start_with(|c| {
        c.socket_init_timeout = Duration::from_millis(300);
    })
    .await;
    let mut socket = connect(&server, "graphql-transport-ws").await;
    assert_eq!(
        close_frame(&mut socket).await,
        (4408, "Connection initialisation timeout".into())
    );
    // In time, the same socket is served.
    let admin = server.admin().await;
    let mut socket = initialised(&server, &admin.token).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&mut socket, log_position("1")).await;
    let first = receive(&mut socket).await.expect("still open");
    assert_eq!(first["type"], "next", "{first}");
    server.stop().await;
}

/// graphql-transport-ws, as its PROTOCOL.md says: `subscribe` before `connection_init`
/// closes `4401 Unauthorized`; a `connection_init` whose token is refused closes
/// `4403 Forbidden`.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_close_with_the_protocols_codes_before_and_at_init() {
    let server = TestServer::start().await;
    let mut socket = connect(&server, "graphql-transport-ws").await;
    send(&mut socket, log_position("1")).await;
    assert_eq!(
        close_frame(&mut socket).await,
        (4401, "Unauthorized".into())
    );

    for token in ["forged.token", "Bearer not-even-a-jwt"] {
        let mut socket = connect(&server, "graphql-transport-ws").await;
        send(
            &mut socket,
            json!({ "type": "connection_init", "payload": { "authorization": token } }),
        )
        .await;
        assert_eq!(close_frame(&mut socket).await, (4403, "Forbidden".into()));
    }
    server.stop().await;
}

/// graphql-transport-ws: a message that is not one of the protocol's closes the socket
/// `4400` (async-graphql closed with `1002`), before `connection_init` and after it; a
/// second `connection_init` closes it `4429`.
#[tokio::test(flavor = "multi_thread")]
async fn sockets_close_4400_on_messages_outside_the_protocol() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let invalid = [
        Message::Text("{".into()),
        Message::Text("[]".into()),
        Message::Text("\"connection_init\"".into()),
        Message::Text(
            json!({ "type": "start", "id": "1", "payload": { "query": "{ me { id } }" } })
                .to_string()
                .into(),
        ),
        Message::Text(json!({ "payload": {} }).to_string().into()),
        Message::Text(
            json!({ "type": "subscribe", "payload": { "query": "{ me { id } }" } })
                .to_string()
                .into(),
        ),
        Message::Text(
            json!({ "type": "subscribe", "id": "1", "payload": "{ me { id } }" })
                .to_string()
                .into(),
        ),
        Message::Text(json!({ "type": "complete" }).to_string().into()),
    ];
    for message in invalid {
        for after_init in [false, true] {
            let mut socket = if after_init {
                initialised(&server, &admin.token).await
            } else {
                connect(&server, "graphql-transport-ws").await
            };
            socket.send(message.clone()).await.unwrap();
            assert_eq!(
                close_frame(&mut socket).await,
                (4400, "Invalid message received".into()),
                "{message:?} (after connection_init: {after_init})"
            );
        }
    }
    let mut socket = initialised(&server, &admin.token).await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(
        close_frame(&mut socket).await,
        (4429, "Too many initialisation requests".into())
    );
    server.stop().await;
}

/// A `subscribe` with the id of an operation still running closes the socket
/// `4409 Subscriber for <id> already exists` (it used to replace the first silently);
/// once an operation completed, its id may be used again.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_operations_id_cannot_be_subscribed_again() {
    let server = TestServer::start().await;
    let admin = server.admin().await;

    let mut socket = initialised(&server, &admin.token).await;
    send(&mut socket, log_position("a")).await;
    assert_eq!(
        receive(&mut socket).await.expect("a position")["type"],
        "next"
    );
    // Completed by the client: the id is free again.
    send(&mut socket, json!({ "id": "a", "type": "complete" })).await;
    send(&mut socket, log_position("a")).await;
    let again = receive_until(&mut socket, "the socket stays open", |m| {
        m["type"] == "next"
    })
    .await;
    assert_eq!(again["id"], "a");
    // A query completes by itself (the server's `complete`): its id is free too.
    let me = json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ me { id } }" } });
    send(&mut socket, me.clone()).await;
    receive_until(&mut socket, "the socket stays open", |m| {
        m["id"] == "q" && m["type"] == "complete"
    })
    .await;
    send(&mut socket, me).await;
    receive_until(&mut socket, "the socket stays open", |m| {
        m["id"] == "q" && m["type"] == "next"
    })
    .await;
    // "a" still runs.
    send(&mut socket, log_position("a")).await;
    assert_eq!(
        close_frame(&mut socket).await,
        (4409, "Subscriber for a already exists".into())
    );
    server.stop().await;
}

/// A socket runs at most 100 operations at once: one more is answered with an `error`
/// for its id (`TOO_MANY_SUBSCRIPTIONS`), the others go on, and once one completes
/// there is room again.
#[tokio::test(flavor = "multi_thread")]
async fn a_socket_runs_at_most_100_operations() {
    let server = TestServer::start_with(|c| {
        // Slow polls: 100 subscriptions, a few messages.
        c.subscription_poll_interval = Duration::from_secs(5);
    })
    .await;
    let admin = server.admin().await;
    let mut socket = initialised(&server, &admin.token).await;
    for n in 0..100 {
        send(&mut socket, log_position(&n.to_string())).await;
    }
    send(&mut socket, log_position("one-too-many")).await;
    let refused = receive_until(&mut socket, "the socket stays open", |m| {
        m["id"] == "one-too-many"
    })
    .await;
    assert_eq!(refused["type"], "error", "{refused}");
    let error = &refused["payload"][0];
    assert_eq!(error["extensions"]["code"], "VALIDATION", "{refused}");
    assert_eq!(error["extensions"]["reason"], "TOO_MANY_SUBSCRIPTIONS");
    // One completed: room for one more.
    send(&mut socket, json!({ "id": "7", "type": "complete" })).await;
    send(&mut socket, log_position("one-more")).await;
    let accepted = receive_until(&mut socket, "the socket stays open", |m| {
        m["id"] == "one-more"
    })
    .await;
    assert_eq!(accepted["type"], "next", "{accepted}");
    server.stop().await;
}

/// Over the socket as over HTTP, every error has a code: async-graphql's own
/// (unknown field, syntax, wrong variable type) are `VALIDATION` on `query`. They
/// used to reach socket clients with no `extensions` at all.
#[tokio::test(flavor = "multi_thread")]
async fn socket_errors_carry_the_codes_http_errors_carry() {
    let (server, admin) = TestServer::with_admin().await;
    for query in [
        "subscription { nope }",
        "subscription { logPosition",
        "query { nope }",
    ] {
        let (_socket, answer) =
            subscribe_to(&server, Some(&admin.token), json!({ "query": query })).await;
        let answer = answer.expect("an answer");
        let errors = answer["payload"]["errors"]
            .as_array()
            .or_else(|| answer["payload"].as_array())
            .unwrap_or_else(|| panic!("{query}: no errors in {answer}"));
        assert!(!errors.is_empty(), "{query}: {answer}");
        for error in errors {
            assert_eq!(
                error["extensions"]["code"], "VALIDATION",
                "{query}: {answer}"
            );
            assert_eq!(error["extensions"]["field"], "query", "{query}: {answer}");
        }
    }
    server.stop().await;
}
