//! Limits and the service's state: rate limiting, page sizes, read-your-writes,
//! health and readiness, request timeouts.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn public_mutations_are_rate_limited_per_address() {
    let server = TestServer::start_with(|c| {
        c.rate_limit.burst = 3;
        c.rate_limit.per_minute = 1;
    })
    .await;
    for _ in 0..3 {
        let r = server
            .gql(None, "mutation { requestPasswordReset(input: { email: \"nobody@aula.test\" }) { accepted } }", json!({}))
            .await;
        assert_ok(&r);
    }
    let r = server.sign_up("late@aula.test").await;
    assert_code(&r, "RATE_LIMITED");
    let retry = extension(&r, "retryAfterSeconds").as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{r}");
    // Queries are not limited.
    assert_ok(&server.gql(None, "{ health { status } }", json!({})).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_is_capped() {
    let server = TestServer::start_with(|c| c.max_page_size = 5).await;
    let a = server.institution("Escola F").await;
    let r = server
        .query(&a.manager.token, "{ campuses(first: 6) { id } }")
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "first");
    assert_ok(
        &server
            .query(&a.manager.token, "{ campuses(first: 5) { id } }")
            .await,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn read_your_writes_waits_for_the_configured_projections() {
    let server = TestServer::start_with(|c| {
        c.projections = vec!["test_projection".into()];
        c.read_your_writes_timeout = Duration::from_millis(300);
    })
    .await;
    sqlx::query("INSERT INTO subscription_checkpoints (name) VALUES ('test_projection')")
        .execute(&server.db.pool)
        .await
        .unwrap();
    let query = "mutation($e: String!) { signUp(input: { email: $e }, waitForProjections: true) { accepted logPosition projectionsCaughtUp } }";
    let r = server
        .gql(None, query, json!({ "e": "first@aula.test" }))
        .await;
    assert_eq!(r["data"]["signUp"]["projectionsCaughtUp"], false, "{r}");
    let position = r["data"]["signUp"]["logPosition"].as_i64().unwrap();

    // The projection catches up (as a subscription would, in commit order).
    sqlx::query(
        "UPDATE subscription_checkpoints SET (tx_id, global_position) =
           (SELECT tx_id, global_position FROM events WHERE global_position = $1)
         WHERE name = 'test_projection'",
    )
    .bind(position)
    .execute(&server.db.pool)
    .await
    .unwrap();
    let a = server.institution("Escola G").await;
    let r = server
        .gql(
            Some(&a.manager.token),
            "query($p: Int!) { projectionsReached(logPosition: $p) }",
            json!({ "p": position }),
        )
        .await;
    assert_eq!(r["data"]["projectionsReached"], true, "{r}");
    // Without the flag nothing waits and nothing is reported.
    let r = server
        .gql(
            None,
            "mutation { signUp(input: { email: \"second@aula.test\" }) { projectionsCaughtUp } }",
            json!({}),
        )
        .await;
    assert!(r["data"]["signUp"]["projectionsCaughtUp"].is_null());
    server.stop().await;
}

/// `projectionsReached` waits only for positions the log has: one past its head (no
/// event written there, so nothing a client wrote) or below its first is a VALIDATION
/// error, whether or not projections are configured. It used to answer `true`, telling
/// a client waiting for its write that a position nobody wrote was readable.
#[tokio::test(flavor = "multi_thread")]
async fn projections_reached_refuses_positions_the_log_does_not_have() {
    let server = TestServer::start().await;
    let a = server.institution("Escola Posição").await;
    let (head,): (i64,) = sqlx::query_as("SELECT max(global_position) FROM events")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    let reached = |p: Value| {
        let server = &server;
        let token = a.manager.token.clone();
        async move {
            server
                .gql(
                    Some(&token),
                    "query($p: BigInt!) { projectionsReached(logPosition: $p) }",
                    json!({ "p": p }),
                )
                .await
        }
    };
    let r = reached(json!(head)).await;
    assert_eq!(r["data"]["projectionsReached"], true, "{r}");
    for beyond in [
        json!(head + 1),
        json!(i64::MAX),
        json!(i64::MAX.to_string()),
    ] {
        let r = reached(beyond).await;
        assert_reason(&r, "VALIDATION", "POSITION_NOT_WRITTEN");
        assert_eq!(extension(&r, "field"), "logPosition", "{r}");
        let message = r["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(&format!("{head}")), "{message}");
    }
    for below in [0, -1, i64::MIN] {
        let r = reached(json!(below)).await;
        assert_reason(&r, "VALIDATION", "OUT_OF_RANGE");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ready_and_graphiql() {
    let server = TestServer::start().await;
    let health = health(&server).await;
    assert_eq!(health["status"], "ok");
    let ready = server.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 200);
    let graphiql = server.get("/graphql").await;
    assert!(graphiql
        .text()
        .await
        .unwrap()
        .to_lowercase()
        .contains("graphiql"));
    let r = server
        .gql(None, "{ health { status database } }", json!({}))
        .await;
    assert_eq!(r["data"]["health"]["database"], true);

    // Not ready without the database.
    server.db.pool.close().await;
    let ready = server.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], false);
    assert_eq!(body["database_detail"], "unreachable", "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_requests_time_out_with_a_request_id() {
    let server = TestServer::start_with(|c| {
        c.projections = vec!["never_catches_up".into()];
        c.read_your_writes_timeout = Duration::from_secs(5);
        c.request_timeout = Duration::from_millis(300);
    })
    .await;
    let a = server.institution("Escola Lenta").await;
    let r = server
        .gql(
            Some(&a.manager.token),
            "query($p: Int!) { projectionsReached(logPosition: $p) }",
            json!({ "p": 1 }),
        )
        .await;
    assert_code(&r, "TIMEOUT");
    assert!(extension(&r, "requestId").is_string(), "{r}");
    // An error raised outside the document has no location: GraphQL's locations
    // start at line 1, column 1, and `{"line": 0, "column": 0}` was sent.
    for error in r["errors"].as_array().unwrap() {
        for location in error["locations"].as_array().into_iter().flatten() {
            assert!(
                location["line"].as_u64() >= Some(1) && location["column"].as_u64() >= Some(1),
                "{r}"
            );
        }
    }
    server.stop().await;
}

/// Every pooled connection busy: not ready, but said so, not "no database" (the probe
/// of session 17 read `"database": false` as an outage).
#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_pool_is_told_apart_from_a_database_outage() {
    let server = TestServer::start().await;
    let max = server.db.pool.options().get_max_connections();
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(server.db.pool.acquire().await.unwrap());
    }
    let ready = server.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], false);
    assert_eq!(
        body["database_detail"], "no free connection within 1 s: the pool is busy",
        "{body}"
    );
    assert_eq!(body["pool"]["idle"], 0, "{body}");
    drop(held);
    let ready = server.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database_detail"], "answered", "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_while_subscriptions_are_down() {
    let server = TestServer::start_custom(
        |_| {},
        |state| state.with_readiness(std::sync::Arc::new(|| false)),
    )
    .await;
    let ready = server.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["subscriptions"], false);
    assert_eq!(body["migrations"], true);
    server.stop().await;
}

/// A login flood (unknown e-mails still cost a hash) does not take the service down:
/// hashes run a bounded number at a time, a bounded number of requests wait for one,
/// the rest are told at once to retry (503 `UNAVAILABLE`, `Retry-After`), and cheap
/// requests (a query that reads the database, `/ready`) stay fast meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_flood_is_bounded_and_cheap_requests_stay_fast() {
    let server = TestServer::start_with(|c| {
        // The production cost: each hash takes a core for a while.
        c.password_hashing = aula_api::PasswordHashing::default();
        c.password_lanes = aula_api::PasswordLanes {
            lanes: Some(1),
            max_waiting: 4,
            max_wait: Duration::from_secs(2),
        };
    })
    .await;
    let server = std::sync::Arc::new(server);
    let started = std::time::Instant::now();
    let logins: Vec<_> = (0..64)
        .map(|n| {
            let server = server.clone();
            tokio::spawn(async move {
                let response = server
                    .client
                    .post(server.url("/graphql"))
                    .json(&json!({
                        "query": "mutation($e: String!) { login(input: { email: $e, password: \"guess\" }) { accessToken } }",
                        "variables": { "e": format!("flood-{n}@aula.test") },
                    }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    // Meanwhile, while hashes queue.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cheap = std::time::Instant::now();
    let r = server
        .gql(None, "{ health { status database } }", json!({}))
        .await;
    assert_eq!(r["data"]["health"]["database"], true, "{r}");
    assert_eq!(server.get("/ready").await.status().as_u16(), 200);
    let cheap = cheap.elapsed();
    assert!(
        cheap < Duration::from_secs(2),
        "cheap requests took {cheap:?}"
    );

    let (mut refused, mut answered) = (0, 0);
    for login in logins {
        let (status, retry_after, body) = login.await.unwrap();
        match status {
            200 => {
                assert_reason(&body, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
                answered += 1;
            }
            503 => {
                assert_code(&body, "UNAVAILABLE");
                assert_eq!(retry_after.unwrap(), "2");
                assert!(!body.to_string().contains("hash"), "{body}");
                refused += 1;
            }
            other => panic!("login answered {other}: {body}"),
        }
    }
    // None waited without end: the queue and the wait are bounded.
    let flood = started.elapsed();
    assert!(flood < Duration::from_secs(20), "the flood took {flood:?}");
    assert!(answered >= 1, "no login was answered");
    assert!(refused >= 1, "no login was refused though 64 came at once");
    // Once the flood is over, logins are answered again.
    let after = server.login("after@aula.test", "guess").await;
    assert_reason(&after, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("a login task still holds the server"),
    }
}
