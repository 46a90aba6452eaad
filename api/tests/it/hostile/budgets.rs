//! Rate budgets whatever the transport: an operation sent over `/graphql/ws` (a query,
//! a mutation, a subscription started) takes a token from the same bucket as an HTTP
//! request of the same caller: anonymous ones from their address's, signed-in ones
//! from their account's, wherever the account connects from. Each client here is
//! bound to a loopback address of its own, so the budget is what is measured.

use super::connections::{addr, http_client_from, next_json, socket_from};
use super::*;

/// A graphql-transport-ws socket from `client`, acknowledged; signed in with `token`.
async fn socket_of(client: [u8; 4], server: &TestServer, token: Option<&str>) -> Socket {
    let mut socket = socket_from(client, server, addr(server))
        .await
        .expect("the socket opens");
    let payload = match token {
        Some(token) => json!({ "authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    ws::send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
    socket
}

/// Sends `query` as operation `id` and returns the payload of its first `next` (other
/// operations' messages and the server's pings are skipped).
async fn first_answer(socket: &mut Socket, id: &str, query: &str) -> Value {
    ws::send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
    loop {
        let message = next_json(socket).await;
        if message["id"] == id {
            assert_eq!(message["type"], "next", "{message}");
            return message["payload"].clone();
        }
    }
}

/// Waits for the `complete` of operation `id`.
async fn completed(socket: &mut Socket, id: &str) {
    loop {
        let message = next_json(socket).await;
        if message["id"] == id && message["type"] == "complete" {
            return;
        }
    }
}

/// The socket still answers: a refused operation did not close it.
async fn still_open(socket: &mut Socket) {
    ws::send(socket, json!({ "type": "ping" })).await;
    loop {
        if next_json(socket).await["type"] == "pong" {
            return;
        }
    }
}

#[track_caller]
fn assert_rate_limited(payload: &Value) {
    assert_code(payload, "RATE_LIMITED");
    let retry = extension(payload, "retryAfterSeconds").as_u64();
    assert!(retry.is_some_and(|s| s >= 1), "{payload}");
}

/// Anonymous operations over a socket take their tokens from the address's bucket that
/// HTTP queries use: queries and subscriptions started alike. Over the budget, an
/// operation is answered `next` with the HTTP error (`RATE_LIMITED`,
/// `retryAfterSeconds`) and `complete`; the socket stays open.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_socket_operations_share_their_address_budget_with_http() {
    let server = TestServer::start_with(|c| {
        c.anonymous_read_limit.burst = 4;
        c.anonymous_read_limit.per_minute = 1;
    })
    .await;
    let here = [127, 0, 7, 1];
    let http = http_client_from(here);
    for _ in 0..2 {
        let r = server
            .gql_from(&http, None, "{ health { status } }", json!({}))
            .await;
        assert_ok(&r);
    }
    let mut socket = socket_of(here, &server, None).await;
    let answer = first_answer(&mut socket, "1", "{ health { status } }").await;
    assert_eq!(answer["data"]["health"]["status"], "ok", "{answer}");
    // The fourth token: a subscription started (refused for want of a token, not of
    // tokens, but it was asked for).
    let answer = first_answer(&mut socket, "2", "subscription { logPosition }").await;
    assert_code(&answer, "UNAUTHENTICATED");
    // The address's budget is spent, over HTTP and the socket alike.
    let answer = first_answer(&mut socket, "3", "{ health { status } }").await;
    assert_rate_limited(&answer);
    completed(&mut socket, "3").await;
    let answer = first_answer(&mut socket, "4", "subscription { logPosition }").await;
    assert_rate_limited(&answer);
    completed(&mut socket, "4").await;
    still_open(&mut socket).await;
    let r = server
        .gql_from(&http, None, "{ health { status } }", json!({}))
        .await;
    assert_rate_limited(&r);
    // Another address has its own.
    let elsewhere = http_client_from([127, 0, 7, 2]);
    let r = server
        .gql_from(&elsewhere, None, "{ health { status } }", json!({}))
        .await;
    assert_ok(&r);
    server.stop().await;
}

/// A signed-in account's queries and subscriptions take tokens from one bucket of the
/// account, over HTTP and sockets, from whichever addresses: spreading them over
/// addresses or sockets does not multiply the budget. Other accounts keep theirs, a
/// subscription already running goes on, and writes keep their own budget.
#[tokio::test(flavor = "multi_thread")]
async fn signed_in_reads_are_limited_per_account_over_http_and_sockets() {
    let server = TestServer::start_with(|c| {
        c.account_read_limit.burst = 6;
        c.account_read_limit.per_minute = 1;
    })
    .await;
    let a = server.institution("Escola Orçamento").await;
    let b = server.institution("Escola Outra").await;
    let token = a.manager.token.as_str();
    // Six tokens, spent from three addresses over both transports.
    for client in [[127, 0, 8, 1], [127, 0, 8, 2]] {
        let r = server
            .gql_from(
                &http_client_from(client),
                Some(token),
                "{ me { id } }",
                json!({}),
            )
            .await;
        assert_ok(&r);
    }
    let mut socket = socket_of([127, 0, 8, 3], &server, Some(token)).await;
    let mut other_socket = socket_of([127, 0, 8, 4], &server, Some(token)).await;
    let answer = first_answer(&mut socket, "1", "{ me { id } }").await;
    assert_eq!(
        answer["data"]["me"]["id"],
        a.manager.id.to_string(),
        "{answer}"
    );
    let answer = first_answer(&mut socket, "2", "subscription { logPosition }").await;
    assert!(answer["data"]["logPosition"].is_number(), "{answer}");
    let answer = first_answer(&mut other_socket, "1", "{ me { id } }").await;
    assert_ok(&answer);
    let answer = first_answer(&mut other_socket, "2", "{ me { id } }").await;
    assert_ok(&answer);

    // The seventh, from any address or socket, is refused.
    let answer = first_answer(&mut other_socket, "3", "{ me { id } }").await;
    assert_rate_limited(&answer);
    completed(&mut other_socket, "3").await;
    let answer = first_answer(&mut socket, "3", "subscription { logPosition }").await;
    assert_rate_limited(&answer);
    completed(&mut socket, "3").await;
    let fresh = http_client_from([127, 0, 8, 5]);
    let response = fresh
        .post(server.url("/graphql"))
        .bearer_auth(token)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_rate_limited(&response.json().await.unwrap());
    still_open(&mut socket).await;
    still_open(&mut other_socket).await;

    // The subscription that started goes on: a change moves the log, and it says so.
    let r = server
        .command(
            Some(&b.manager.token),
            "createCampus",
            json!({ "name": "Campus Novo", "city": "Porto" }),
        )
        .await;
    assert_ok(&r);
    let moved = loop {
        let message = next_json(&mut socket).await;
        if message["id"] == "2" {
            break message;
        }
    };
    assert!(
        moved["payload"]["data"]["logPosition"].is_number(),
        "{moved}"
    );
    // Writes have their own budget; another account has its reads.
    let r = server
        .command(
            Some(token),
            "createCampus",
            json!({ "name": "Campus Limite", "city": "Braga" }),
        )
        .await;
    assert_ok(&r);
    let r = server
        .gql_from(
            &http_client_from([127, 0, 8, 1]),
            Some(&b.manager.token),
            "{ me { id } }",
            json!({}),
        )
        .await;
    assert_ok(&r);
    server.stop().await;
}

/// A socket whose token was revoked (the password was reset, as its owner does when the
/// token was stolen) is refused each operation `TOKEN_REVOKED`, without spending the
/// account's budget: the owner, signed in again, keeps all of it. Before, the token
/// was taken before the session check, so whoever held the old socket spent the
/// owner's reads (and writes) for ever, one refused operation at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_socket_does_not_spend_the_owners_budget() {
    let server = TestServer::start_with(|c| {
        c.account_read_limit.burst = 3;
        c.account_read_limit.per_minute = 1;
    })
    .await;
    let a = server.institution("Escola Revogada").await;
    let mut stolen = socket_of([127, 0, 9, 1], &server, Some(&a.manager.token)).await;
    let token = server.reset_token(&a.manager.email).await;
    let new_password = "another long password";
    let reset = json!({ "email": a.manager.email, "token": token, "newPassword": new_password });
    assert_ok(&server.command(None, "resetPassword", reset).await);
    for id in ["1", "2", "3", "4", "5"] {
        let answer = first_answer(&mut stolen, id, "{ me { id } }").await;
        assert_reason(&answer, "UNAUTHENTICATED", "TOKEN_REVOKED");
        completed(&mut stolen, id).await;
    }
    let fresh = server.token_for(&a.manager.email, new_password).await;
    let owner = http_client_from([127, 0, 9, 2]);
    for _ in 0..3 {
        let r = server
            .gql_from(&owner, Some(&fresh), "{ me { id } }", json!({}))
            .await;
        assert_ok(&r);
    }
    server.stop().await;
}

/// Each root field runs on its own (a command, a page), so each takes a token: one
/// operation of aliased fields used to run up to 100 mutations (or reads) for a single
/// token, multiplying every budget a hundredfold. A document of more root fields than
/// the burst takes the whole burst.
#[tokio::test(flavor = "multi_thread")]
async fn every_root_field_of_an_operation_takes_a_token() {
    let server = TestServer::start_with(|c| {
        c.account_write_limit.burst = 3;
        c.account_write_limit.per_minute = 1;
        c.anonymous_read_limit.burst = 3;
        c.anonymous_read_limit.per_minute = 1;
    })
    .await;
    let a = server.institution("Escola Alias").await;
    let http = http_client_from([127, 0, 10, 1]);
    let two_campuses = r#"mutation {
        a: createCampus(input: { name: "Campus A", city: "Porto" }) { id }
        b: createCampus(input: { name: "Campus B", city: "Porto" }) { id }
    }"#;
    let one_campus =
        r#"mutation { createCampus(input: { name: "Campus C", city: "Porto" }) { id } }"#;
    assert_ok(
        &server
            .gql_from(&http, Some(&a.manager.token), two_campuses, json!({}))
            .await,
    );
    assert_ok(
        &server
            .gql_from(&http, Some(&a.manager.token), one_campus, json!({}))
            .await,
    );
    let another = one_campus.replace("Campus C", "Campus D");
    let r = server
        .gql_from(&http, Some(&a.manager.token), &another, json!({}))
        .await;
    assert_rate_limited(&r);
    // Anonymous reads: two root fields, through a fragment, then one; `__typename`
    // costs nothing.
    let two = "query { ...Both __typename } fragment Both on QueryRoot { a: health { status } b: health { status } }";
    assert_ok(&server.gql_from(&http, None, two, json!({})).await);
    assert_ok(
        &server
            .gql_from(&http, None, "{ health { status } }", json!({}))
            .await,
    );
    let r = server
        .gql_from(&http, None, "{ health { status } }", json!({}))
        .await;
    assert_rate_limited(&r);
    // More fields than the burst: refused until the bucket is full, never for ever.
    let many = (0..5)
        .map(|i| format!("h{i}: health {{ status }}"))
        .collect::<Vec<_>>();
    let r = server
        .gql_from(
            &http_client_from([127, 0, 10, 2]),
            None,
            &format!("{{ {} }}", many.join(" ")),
            json!({}),
        )
        .await;
    assert_ok(&r);
    server.stop().await;
}
