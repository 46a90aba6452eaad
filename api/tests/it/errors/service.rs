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
