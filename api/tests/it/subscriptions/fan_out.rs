//! Many subscriptions cost the database what one costs.
//!
//! Every `logPosition` subscription used to poll the log head on its own, and every
//! signed-in subscription to check its account on its own: one manager account (anyone
//! can sign up and get one) with 200 sockets of 100 subscriptions each from one address
//! asked for 40,000 queries a second, starved the shared pool and made an ordinary
//! query wait 2–5 s (probe of session 19, debug binary). These tests count the
//! database's transactions while 1,000 subscriptions of one account stream.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use super::{initialised, log_position, receive_until};
use crate::common::ws::{send, Socket};
use crate::common::*;

const SOCKETS: usize = 10;
const PER_SOCKET: usize = 100;

/// Room in the account's read budget for every subscription here: these tests measure
/// what subscriptions cost once started, past the budget that now bounds how fast one
/// account starts them (`hostile/budgets.rs`).
fn budget_for_all(config: &mut aula_api::ApiConfig) {
    config.account_read_limit.burst = (SOCKETS * PER_SOCKET) as u32;
}

/// `SOCKETS` sockets of `PER_SOCKET` subscriptions `subscription(id)` each, every one
/// of which has sent its first message.
async fn streaming(
    server: &TestServer,
    token: &str,
    subscription: fn(&str) -> Value,
) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let mut socket = initialised(server, token).await;
        for n in 0..PER_SOCKET {
            send(&mut socket, subscription(&n.to_string())).await;
        }
        sockets.push(socket);
    }
    for socket in &mut sockets {
        let mut first = std::collections::HashSet::new();
        while first.len() < PER_SOCKET {
            let message =
                receive_until(socket, "the subscriptions stream", |m| m["type"] == "next").await;
            first.insert(message["id"].as_str().unwrap().to_owned());
        }
    }
    sockets
}

/// Transactions the test database has run (as far as its statistics say: a busy
/// backend reports at most once a second).
async fn transactions(connection: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

/// Transactions the database runs in `window` while the sockets stay open.
async fn transactions_in(server: &TestServer, window: Duration) -> i64 {
    let options = (*server.db.pool.connect_options()).clone();
    let mut connection = PgConnection::connect_with(&options).await.unwrap();
    // Let counts from before the window reach the statistics.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = transactions(&mut connection).await;
    tokio::time::sleep(window).await;
    // Let counts from inside the window reach them.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = transactions(&mut connection).await;
    connection.close().await.unwrap();
    after - before
}

/// 1,000 `logPosition` subscriptions polling every 10 ms make one poll every 10 ms,
/// not 1,000: about 200 transactions in 2 s. Before: every subscription polled on its
/// own (thousands of transactions, as many as the pool could run).
#[tokio::test(flavor = "multi_thread")]
async fn log_position_subscriptions_share_one_poll() {
    let server = TestServer::start_with(|c| {
        budget_for_all(c);
        c.subscription_poll_interval = Duration::from_millis(10);
    })
    .await;
    let admin = server.admin().await;
    let started = Instant::now();
    let sockets = streaming(&server, &admin.token, log_position).await;
    let setup = started.elapsed();
    let window = Duration::from_secs(2);
    let ran = transactions_in(&server, window).await;
    println!(
        "{} logPosition subscriptions streaming after {setup:?}; {ran} transactions in {window:?}",
        SOCKETS * PER_SOCKET
    );
    assert!(ran < 1_000, "{ran} transactions in {window:?}");
    // They still follow the log.
    let signed_up = server.sign_up("fan-out@aula.test").await;
    let position = signed_up["data"]["signUp"]["logPosition"].as_i64().unwrap();
    for mut socket in sockets {
        receive_until(&mut socket, "the stream goes on", |m| {
            m["payload"]["data"]["logPosition"].as_i64() >= Some(position)
        })
        .await;
    }
    server.stop().await;
}

/// 1,000 subscriptions of one account checking it every 10 ms (deactivated? password
/// changed?) make one check every 10 ms, and a password reset still ends each of them.
/// Before: each checked on its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_accounts_subscriptions_share_one_session_check() {
    let server = TestServer::start_with(|c| {
        budget_for_all(c);
        // The log is polled rarely here: only the session checks count.
        c.subscription_poll_interval = Duration::from_secs(60);
        c.socket_recheck_interval = Duration::from_millis(10);
    })
    .await;
    let a = server.institution("Escola Partilhada").await;
    let mut sockets = streaming(&server, &a.manager.token, log_position).await;
    let window = Duration::from_secs(2);
    let ran = transactions_in(&server, window).await;
    println!(
        "{} subscriptions of one account: {ran} transactions in {window:?}",
        SOCKETS * PER_SOCKET
    );
    assert!(ran < 1_000, "{ran} transactions in {window:?}");
    // A new password ends the tokens issued before it, on every running subscription.
    let token = server.reset_token(&a.manager.email).await;
    let reset = server
        .command(
            None,
            "resetPassword",
            json!({ "email": a.manager.email, "token": token, "newPassword": "another long password" }),
        )
        .await;
    assert_ok(&reset);
    for socket in &mut sockets {
        let mut ended = std::collections::HashSet::new();
        while ended.len() < PER_SOCKET {
            let message = receive_until(socket, "the socket stays open", |m| {
                m["type"] == "next" && m["payload"]["errors"].is_array()
            })
            .await;
            assert!(message.to_string().contains("TOKEN_REVOKED"), "{message}");
            ended.insert(message["id"].as_str().unwrap().to_owned());
        }
    }
    server.stop().await;
}
