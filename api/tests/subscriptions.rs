//! `/graphql/ws`: the `logPosition` subscription, admin only, token in connection_init.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &TestServer) -> Socket {
    let mut request = server
        .url("/graphql/ws")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

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

async fn subscribe(server: &TestServer, token: Option<&str>) -> (Socket, Option<Value>) {
    let mut socket = connect(server).await;
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
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { logPosition }" } }),
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
async fn non_admins_and_bad_tokens_are_refused() {
    let server = TestServer::start().await;
    let a = server.institution("Escola WS").await;

    let (_socket, answer) = subscribe(&server, Some(&a.manager.token)).await;
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
