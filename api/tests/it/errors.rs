//! Every error code, the identity cases (expired token, lockout, expired reset token),
//! limits, rate limiting, read-your-writes, health and readiness.

use crate::common;

use std::time::Duration;

use aula_api::TokenKind;
use chrono::Duration as Span;
use common::*;
use serde_json::{json, Value};

async fn post_raw(server: &TestServer, body: &'static str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_code_is_reported() {
    let server = TestServer::start().await;
    let a = server.institution("Escola A").await;
    let manager = a.manager.token.as_str();

    // VALIDATION, with the input field and the reason.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "name": "  ", "city": "Braga" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "name");
    assert_eq!(extension(&r, "reason"), "EMPTY");
    let r = server
        .command(
            None,
            "signUp",
            json!({ "email": "x".repeat(300) + "@aula.test" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "email");
    assert_eq!(extension(&r, "reason"), "TOO_LONG");

    // NOT_FOUND.
    let r = server
        .command(
            Some(manager),
            "changeCourseCapacity",
            json!({ "courseId": uuid::Uuid::new_v4(), "capacity": 10 }),
        )
        .await;
    assert_code(&r, "NOT_FOUND");
    assert_eq!(extension(&r, "reason"), "COURSE_NOT_FOUND");

    // CONFLICT.
    let campus = server.campus(manager, None).await;
    let name = json!({ "campusId": campus, "name": "Physics", "capacity": 2 });
    assert_ok(
        &server
            .command(Some(manager), "offerCourse", name.clone())
            .await,
    );
    let r = server.command(Some(manager), "offerCourse", name).await;
    assert_code(&r, "CONFLICT");
    assert_eq!(extension(&r, "reason"), "DUPLICATE_COURSE_NAME");

    // UNAUTHENTICATED: no token on a protected operation, a forged token anywhere.
    let r = server
        .command(None, "createCampus", json!({ "name": "X", "city": "Y" }))
        .await;
    assert_code(&r, "UNAUTHENTICATED");
    let forged = format!("{}x", &manager[..manager.len() - 1]);
    let r = server
        .gql(Some(&forged), "{ health { status } }", json!({}))
        .await;
    assert_code(&r, "UNAUTHENTICATED");
    let r = server
        .gql(Some("not-a-token"), "{ me { id } }", json!({}))
        .await;
    assert_code(&r, "UNAUTHENTICATED");

    // FORBIDDEN: a manager may not create what only exists for another institution.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "institutionId": uuid::Uuid::new_v4(), "name": "X", "city": "Y" }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");

    // UNAVAILABLE: the database goes away; the client gets a generic, retryable
    // answer (503, Retry-After) and the request id, never the internal text.
    server.db.pool.close().await;
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("x-request-id", "req-42")
        .bearer_auth(manager)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let r: Value = response.json().await.unwrap();
    assert_code(&r, "UNAVAILABLE");
    assert_eq!(
        r["errors"][0]["message"],
        "the service is temporarily unavailable; retry shortly"
    );
    assert_eq!(extension(&r, "requestId"), "req-42");
    server.stop().await;
}

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
    let r = server
        .command(None, "signUp", json!({ "email": "late@aula.test" }))
        .await;
    assert_code(&r, "RATE_LIMITED");
    let retry = extension(&r, "retryAfterSeconds").as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{r}");
    // Queries are not limited.
    assert_ok(&server.gql(None, "{ health { status } }", json!({})).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_access_token_is_unauthenticated() {
    let server = TestServer::start().await;
    let a = server.institution("Escola B").await;
    let ok = server
        .gql(Some(&a.manager.token), "{ me { id } }", json!({}))
        .await;
    assert_ok(&ok);
    server.clock.advance(Span::minutes(16));
    let r = server
        .gql(Some(&a.manager.token), "{ me { id } }", json!({}))
        .await;
    assert_code(&r, "UNAUTHENTICATED");
    assert_eq!(extension(&r, "reason"), "TOKEN_EXPIRED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_failed_logins_lock_the_account() {
    let server = TestServer::start().await;
    let a = server.institution("Escola C").await;
    // Four failures, the fifth that locks the account and a sixth during the lockout
    // all answer as a wrong password (as an unknown e-mail does): failing on purpose
    // cannot tell which e-mails have accounts.
    for attempt in 1..=6 {
        let r = server.login(&a.manager.email, "wrong password").await;
        assert_code(&r, "UNAUTHENTICATED");
        assert_eq!(
            extension(&r, "reason"),
            "INVALID_CREDENTIALS",
            "attempt {attempt}"
        );
    }
    // The right password is refused while locked out, and told why...
    let locked = server.login(&a.manager.email, PASSWORD).await;
    assert_code(&locked, "FORBIDDEN");
    assert_eq!(extension(&locked, "reason"), "USER_LOCKED_OUT");
    // ...and accepted once the lockout is over.
    server.clock.advance(Span::minutes(16));
    assert_ok(&server.login(&a.manager.email, PASSWORD).await);
    // An unknown e-mail looks like a wrong password.
    let r = server.login("nobody@aula.test", PASSWORD).await;
    assert_eq!(extension(&r, "reason"), "INVALID_CREDENTIALS");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_tokens_expire_and_are_single_use_and_requests_reveal_nothing() {
    let server = TestServer::start().await;
    let a = server.institution("Escola D").await;
    let request =
        "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }";

    // Unknown e-mail: same answer, no token issued.
    let before = server.tokens.count();
    let unknown = server
        .gql(None, request, json!({ "e": "ghost@aula.test" }))
        .await;
    assert_eq!(unknown["data"]["requestPasswordReset"]["accepted"], true);
    assert_eq!(server.tokens.count(), before);

    // Expired token.
    let r = server
        .gql(None, request, json!({ "e": a.manager.email }))
        .await;
    assert_eq!(r["data"]["requestPasswordReset"]["accepted"], true);
    let token = server
        .tokens
        .last(TokenKind::PasswordReset, &a.manager.email)
        .unwrap();
    server.clock.advance(Span::hours(2));
    let reset =
        json!({ "email": a.manager.email, "token": token, "newPassword": "a new password" });
    let r = server.command(None, "resetPassword", reset.clone()).await;
    assert_code(&r, "UNAUTHENTICATED");
    assert_eq!(extension(&r, "reason"), "RESET_TOKEN_EXPIRED");

    // A fresh token works once.
    server
        .gql(None, request, json!({ "e": a.manager.email }))
        .await;
    let token = server
        .tokens
        .last(TokenKind::PasswordReset, &a.manager.email)
        .unwrap();
    let reset =
        json!({ "email": a.manager.email, "token": token, "newPassword": "a new password" });
    assert_ok(&server.command(None, "resetPassword", reset.clone()).await);
    let r = server.command(None, "resetPassword", reset).await;
    assert_eq!(extension(&r, "reason"), "RESET_TOKEN_ALREADY_USED");
    assert_ok(&server.login(&a.manager.email, "a new password").await);
    assert_code(
        &server.login(&a.manager.email, PASSWORD).await,
        "UNAUTHENTICATED",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_confirmation_rules() {
    let server = TestServer::start().await;
    let email = "owner@aula.test";
    assert_ok(
        &server
            .command(None, "signUp", json!({ "email": email }))
            .await,
    );
    let token = server
        .tokens
        .last(TokenKind::SignUpConfirmation, email)
        .unwrap();
    let confirm = |token: &str| {
        json!({ "input": { "email": email, "token": token, "name": "Olga Owner",
                "password": PASSWORD, "institutionName": "Escola E" } })
    };
    let query = "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId institutionId } }";
    let r = server.gql(None, query, confirm("wrong-token")).await;
    assert_code(&r, "UNAUTHENTICATED");
    assert_eq!(extension(&r, "reason"), "SIGN_UP_TOKEN_UNKNOWN");
    let short = json!({ "input": { "email": email, "token": token, "name": "Olga",
                "password": "short", "institutionName": "Escola E" } });
    let r = server.gql(None, query, short).await;
    assert_eq!(extension(&r, "field"), "password");
    assert_ok(&server.gql(None, query, confirm(&token)).await);
    let r = server.gql(None, query, confirm(&token)).await;
    assert_code(&r, "CONFLICT");
    // Signing up again with a registered e-mail answers as a sign-up does (whether an
    // e-mail has an account is not told); the owner is told by e-mail instead.
    let r = server
        .command(None, "signUp", json!({ "email": email }))
        .await;
    assert_ok(&r);
    let fresh = server
        .command(None, "signUp", json!({ "email": "someone-new@aula.test" }))
        .await;
    assert_ok(&fresh);
    // The same answer but for the log position (a number either way).
    let shape = |r: &serde_json::Value| {
        let mut answer = r["data"]["signUp"].clone();
        answer["logPosition"] = json!(answer["logPosition"].is_i64());
        answer
    };
    assert_eq!(shape(&r), shape(&fresh));
    assert_eq!(shape(&r), json!({ "accepted": true, "logPosition": true }));
    let recorded: String =
        sqlx::query_scalar("SELECT event_type FROM events WHERE global_position = $1")
            .bind(r["data"]["signUp"]["logPosition"].as_i64().unwrap())
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
    assert_eq!(recorded, "RegisteredEmailSignUpAttempted");
    // The account is unchanged: its password still works.
    assert_ok(&server.login(email, PASSWORD).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_clear_errors_not_500() {
    let server = TestServer::start_with(|c| {
        c.body_limit_bytes = 4096;
        c.max_query_depth = 3;
    })
    .await;
    let (status, r) = post_raw(&server, "{\"query\": ").await;
    assert_eq!(status, 400);
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "reason"), "MALFORMED_JSON");

    let (status, r) = post_raw(&server, "[1, 2]").await;
    assert_eq!(status, 400);
    assert_eq!(extension(&r, "reason"), "INVALID_REQUEST");

    let huge = format!(
        "{{\"query\": \"{{ health {{ status }} }}\", \"x\": \"{}\"}}",
        "a".repeat(10_000)
    );
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let r: Value = response.json().await.unwrap();
    assert_eq!(extension(&r, "reason"), "TOO_LARGE");

    // Unknown field, wrong type, syntax error, too deep: VALIDATION.
    for query in [
        "{ nope }",
        "{ campuses(first: \"ten\") { id } }",
        "{ health { ",
        "{ health { status } } # ok",
    ] {
        let r = server.gql(None, query, json!({})).await;
        if query.ends_with("# ok") {
            assert_ok(&r);
        } else {
            assert_code(&r, "VALIDATION");
        }
    }
    let r = server.command(None, "signUp", json!({ "email": 42 })).await;
    assert_code(&r, "VALIDATION");
    let r = server
        .gql(
            None,
            "{ __schema { types { fields { type { ofType { name } } } } } }",
            json!({}),
        )
        .await;
    assert_code(&r, "VALIDATION");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_is_capped() {
    let server = TestServer::start_with(|c| c.max_page_size = 5).await;
    let a = server.institution("Escola F").await;
    let r = server
        .gql(
            Some(&a.manager.token),
            "{ campuses(first: 6) { id } }",
            json!({}),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "first");
    assert_ok(
        &server
            .gql(
                Some(&a.manager.token),
                "{ campuses(first: 5) { id } }",
                json!({}),
            )
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
    let health: Value = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let graphiql = server
        .client
        .get(server.url("/graphql"))
        .send()
        .await
        .unwrap();
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
    let ready = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap();
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
    let ready = server
        .client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["subscriptions"], false);
    assert_eq!(body["migrations"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_are_created_once_per_email_and_never_publicly() {
    let server = TestServer::start().await;
    let id = aula_api::create_admin(&server.db.pool, "root@aula.test", PASSWORD)
        .await
        .unwrap();
    let again = aula_api::create_admin(&server.db.pool, "ROOT@aula.test", PASSWORD).await;
    assert!(
        matches!(again, Err(aula_api::CreateAdminError::EmailTaken(_))),
        "{again:?}"
    );
    let login = server.login("root@aula.test", PASSWORD).await;
    assert_eq!(login["data"]["login"]["role"], "ADMIN");
    assert_eq!(login["data"]["login"]["userId"], id.to_string());
    // No mutation creates an admin or picks a role.
    let sdl = aula_api::schema_sdl();
    assert!(!sdl.contains("createAdmin") && !sdl.contains("createUser"));
    for block in sdl.split("\n}").filter(|b| b.contains("input ")) {
        assert!(!block.contains("role:"), "an input takes a role: {block}");
    }
    server.stop().await;
}

/// A sink that cannot keep tokens, and that notes whether the token's hash was already
/// in the log when it was handed the token.
struct UnavailableSink {
    pool: sqlx::PgPool,
    hash_already_logged: std::sync::Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl aula_api::TokenSink for UnavailableSink {
    async fn issued(&self, token: &aula_api::IssuedToken) -> Result<(), aula_api::BoxError> {
        let logged: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE payload::text LIKE '%' || $1 || '%')",
        )
        .bind(aula_api::token_hash(&token.token))
        .fetch_one(&self.pool)
        .await?;
        self.hash_already_logged.lock().unwrap().push(logged);
        Err("the token store is unavailable".into())
    }
}

/// The raw one-time token is kept before its hash is recorded: when it cannot be kept,
/// the sign-up fails as an internal error and nothing is recorded, so no e-mail task
/// can ever wait for a token that was lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_cannot_be_kept_fails_the_sign_up_before_anything_is_recorded() {
    let sink: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<UnavailableSink>>> =
        Default::default();
    let keep = sink.clone();
    let server = TestServer::start_custom(
        |_| {},
        move |state| {
            let unavailable = std::sync::Arc::new(UnavailableSink {
                pool: state.pool().clone(),
                hash_already_logged: Default::default(),
            });
            let _ = keep.set(unavailable.clone());
            state.with_token_sink(unavailable)
        },
    )
    .await;
    let r = server
        .command(None, "signUp", json!({ "email": "lost@aula.test" }))
        .await;
    assert_code(&r, "INTERNAL");
    assert!(!r.to_string().contains("unavailable"), "{r}");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
    let seen = sink
        .get()
        .unwrap()
        .hash_already_logged
        .lock()
        .unwrap()
        .clone();
    assert_eq!(seen, vec![false]);
    server.stop().await;
}

/// The password is hashed (Argon2, slow on purpose) only for a token that can succeed,
/// so anonymous requests with made-up tokens cost no hash. Here hashing cannot work at
/// all (zero lanes): a wrong token still gets its own answer, not an internal error.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_sign_up_token_is_refused_before_the_password_is_hashed() {
    let server = TestServer::start_with(|c| c.password_hashing.parallelism = 0).await;
    let email = "early@aula.test";
    assert_ok(
        &server
            .command(None, "signUp", json!({ "email": email }))
            .await,
    );
    let r = server
        .gql(
            None,
            "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId } }",
            json!({ "input": {
                "email": email, "token": "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc",
                "name": "Eve Early", "password": PASSWORD, "institutionName": "Escola E",
            }}),
        )
        .await;
    assert_eq!(extension(&r, "reason"), "SIGN_UP_TOKEN_UNKNOWN", "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_reset_ends_every_earlier_token() {
    let server = TestServer::start().await;
    let a = server.institution("Escola R").await;
    let old_token = a.manager.token.clone();
    let me = "{ me { id } }";
    assert_ok(&server.gql(Some(&old_token), me, json!({})).await);
    server
        .gql(
            None,
            "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }",
            json!({ "e": a.manager.email }),
        )
        .await;
    let token = server
        .tokens
        .last(TokenKind::PasswordReset, &a.manager.email)
        .unwrap();
    let reset =
        json!({ "email": a.manager.email, "token": token, "newPassword": "a new password" });
    assert_ok(&server.command(None, "resetPassword", reset).await);
    // The token issued before the reset no longer works...
    let r = server.gql(Some(&old_token), me, json!({})).await;
    assert_code(&r, "UNAUTHENTICATED");
    assert_eq!(extension(&r, "reason"), "TOKEN_REVOKED");
    // ...while one issued after it does.
    let fresh = server.token_for(&a.manager.email, "a new password").await;
    assert_ok(&server.gql(Some(&fresh), me, json!({})).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_requests_take_the_same_time_and_are_limited_per_recipient() {
    let server = TestServer::start().await;
    let a = server.institution("Escola T").await;
    let request =
        "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }";
    let timed = |email: String| {
        let server = &server;
        async move {
            let started = std::time::Instant::now();
            let r = server.gql(None, request, json!({ "e": email })).await;
            assert_eq!(r["data"]["requestPasswordReset"]["accepted"], true);
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        known.push(timed(a.manager.email.clone()).await);
        unknown.push(timed(format!("ghost-{i}@aula.test")).await);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[4], unknown[4]);
    let floor = Duration::from_millis(150);
    assert!(known >= floor && unknown >= floor, "{known:?} {unknown:?}");
    let difference = known.abs_diff(unknown);
    assert!(
        difference < Duration::from_millis(40),
        "medians {known:?} (known) and {unknown:?} (unknown) differ by {difference:?}"
    );
    // Nine requests for one address, three tokens recorded (and so three e-mails):
    // one mailbox is not flooded.
    let issued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE aggregate_type = 'user' AND event_type = 'ResetPasswordTokenCreated'",
    )
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(issued, 3);
    server.stop().await;
}

/// What an applicant sees when the application cannot be accepted at once: a closed
/// or unknown course, a key reused for other input, and a timeout that says whether
/// the application was recorded (here it was not: the log is locked).
#[tokio::test(flavor = "multi_thread")]
async fn an_application_is_answered_plainly_even_when_it_times_out() {
    let server = TestServer::start_with(|config| {
        config.request_timeout = Duration::from_secs(6);
    })
    .await;
    let a = server.institution("Escola Prazo").await;
    let manager = a.manager.token.as_str();
    let campus = server.campus(manager, None).await;
    let course = server.course(manager, None, campus).await;
    let apply = |email: &str, key: Option<&str>| json!({ "courseId": course, "name": "Tim Out", "birthDate": "2004-01-02", "email": email, "idempotencyKey": key });

    let unknown = server
        .command(
            None,
            "applyToCourse",
            json!({ "courseId": uuid::Uuid::new_v4(), "name": "Tim Out", "birthDate": "2004-01-02", "email": "t@o.pt" }),
        )
        .await;
    assert_code(&unknown, "NOT_FOUND");
    let bad_key = server
        .command(None, "applyToCourse", apply("t@o.pt", Some("")))
        .await;
    assert_code(&bad_key, "VALIDATION");
    assert_eq!(extension(&bad_key, "field"), "idempotencyKey");

    // The events table is locked against writes: the application cannot be recorded.
    let mut lock = server.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let late = server
        .command(None, "applyToCourse", apply("late@o.pt", Some("late-1")))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(5_800),
        "answered before the request timeout (at 80 % of it)"
    );
    assert_code(&late, "TIMEOUT");
    assert_eq!(extension(&late, "recorded"), false, "{late}");
    let message = late["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("not recorded"), "{message}");
    assert!(!message.contains("attempts"), "{message}");
    lock.rollback().await.unwrap();

    // Sending it again is safe: one application, the id the timeout named.
    let again = server
        .command(None, "applyToCourse", apply("late@o.pt", Some("late-1")))
        .await;
    assert_eq!(
        id(&again, "applyToCourse").to_string(),
        extension(&late, "id").as_str().unwrap()
    );
    let other = server
        .command(None, "applyToCourse", apply("other@o.pt", Some("late-1")))
        .await;
    assert_code(&other, "CONFLICT");
    assert_eq!(extension(&other, "reason"), "IDEMPOTENCY_KEY_REUSED");

    // A closed course takes no more applications.
    use aula_domain::course::{Course, CourseCommand};
    aula_eventlog::CommandBus::<Course>::with_upcasters(
        server.db.pool.clone(),
        Default::default(),
        aula_domain::upcasters(),
    )
    .execute(
        &course.to_string(),
        CourseCommand::CloseCourse,
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await
    .unwrap();
    let closed = server
        .command(None, "applyToCourse", apply("closed@o.pt", None))
        .await;
    assert_code(&closed, "CONFLICT");
    assert_eq!(extension(&closed, "reason"), "COURSE_CLOSED");
    server.stop().await;
}

/// A form with several mistakes is answered with all of them at once
/// (`extensions.fields`), and `field`/`reason` still name the first.
#[tokio::test(flavor = "multi_thread")]
async fn every_refused_input_field_is_reported_at_once() {
    let server = TestServer::start().await;
    let a = server.institution("Escola Campos").await;
    let manager = a.manager.token.as_str();

    let r = server
        .command(
            Some(manager),
            "createStudent",
            json!({ "name": " ", "email": "not-an-email", "birthDate": "31-31-2000" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "name");
    let fields: Vec<&str> = extension(&r, "fields")
        .as_array()
        .expect("fields is a list")
        .iter()
        .map(|p| p["field"].as_str().expect("each names its field"))
        .collect();
    assert_eq!(fields, ["name", "email", "birthDate"]);
    for problem in extension(&r, "fields").as_array().unwrap() {
        assert!(problem["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(problem["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("3 inputs are invalid"), "{message}");

    // One mistake: the same shape, a one-element list.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "name": "Norte", "city": "" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "city");
    assert_eq!(extension(&r, "fields").as_array().map(Vec::len), Some(1));
}

/// Statuses are enums and filters name real event types and task kinds: a typo is a
/// VALIDATION error, never a silently empty list.
#[tokio::test(flavor = "multi_thread")]
async fn filters_refuse_unknown_statuses_types_and_kinds() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let token = Some(admin.token.as_str());

    let r = server
        .gql(
            token,
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { status } } }",
            json!({ "f": { "status": "faild" } }),
        )
        .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("faild")),
        "{r}"
    );
    assert!(r["data"].is_null(), "{r}");

    let r = server
        .gql(
            token,
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { status } } }",
            json!({ "f": { "types": ["StudentEnroled"] } }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "types");
    assert_eq!(extension(&r, "reason"), "UNKNOWN_EVENT_TYPE");

    let r = server
        .gql(
            token,
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { status } } }",
            json!({ "f": { "kinds": ["email.welcom"] } }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "kinds");
    assert_eq!(extension(&r, "reason"), "UNKNOWN_TASK_KIND");

    // The real names pass, and statuses come back as the enum's values.
    let r = server
        .gql(
            token,
            "query($f: AdminEventFilter, $t: AdminTaskFilter) {
               adminEvents(filter: $f) { nodes { status } }
               adminTasks(filter: $t) { nodes { status } } }",
            json!({ "f": { "types": ["InstitutionCreated"], "status": "succeeded" },
                    "t": { "kinds": ["email.welcome"], "status": "pending" } }),
        )
        .await;
    assert_ok(&r);

    // 64-bit values travel as BigInt: a string is accepted where a number is.
    let r = server
        .gql(
            token,
            "query($p: BigInt!) { projectionsReached(logPosition: $p) }",
            json!({ "p": "1" }),
        )
        .await;
    assert_ok(&r);
}
