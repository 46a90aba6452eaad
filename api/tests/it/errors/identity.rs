//! Identity errors: expired access tokens, lockout, sign-up confirmation, one-time
//! tokens that expire, are single-use or cannot be kept, password resets, and admins.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn expired_access_token_is_unauthenticated() {
    let (server, a) = TestServer::with_institution("Escola B").await;
    let ok = server.query(&a.manager.token, "{ me { id } }").await;
    assert_ok(&ok);
    server.clock.advance(Span::minutes(16));
    let r = server.query(&a.manager.token, "{ me { id } }").await;
    assert_reason(&r, "UNAUTHENTICATED", "TOKEN_EXPIRED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_failed_logins_lock_out_their_address() {
    let (server, a) = TestServer::with_institution("Escola C").await;
    // Four failures, the fifth that locks the account out from this address (the only
    // one here; other addresses: `errors::lockout`) and a sixth during the lockout
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
    assert_reason(&locked, "FORBIDDEN", "USER_LOCKED_OUT");
    // ...and accepted once the lockout is over.
    server.clock.advance(Span::minutes(16));
    assert_ok(&server.login(&a.manager.email, PASSWORD).await);
    // An unknown e-mail looks like a wrong password.
    let r = server.login("nobody@aula.test", PASSWORD).await;
    assert_eq!(extension(&r, "reason"), "INVALID_CREDENTIALS");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deactivated_account_logs_in_as_an_unknown_email() {
    let (server, a) = TestServer::with_institution("Escola C2").await;
    let observer = server.observer(&a.manager.token, Some(a.id)).await;
    let deactivated = server
        .command(
            Some(&a.manager.token),
            "deactivateUser",
            json!({ "userId": observer.id, "reason": "left" }),
        )
        .await;
    assert_ok(&deactivated);
    // What a client can compare: the message and the extensions but the request id.
    let answer = |r: &Value| {
        let mut error = r["errors"][0].clone();
        if let Some(extensions) = error["extensions"].as_object_mut() {
            extensions.remove("requestId");
        }
        json!({ "data": r["data"], "error": error })
    };
    let unknown = answer(&server.login("nobody@aula.test", "wrong").await);
    assert_eq!(
        unknown["error"]["extensions"]["reason"],
        "INVALID_CREDENTIALS"
    );
    // A wrong password and the right one alike: the account is not told to exist.
    for password in ["wrong", PASSWORD] {
        let r = server.login(&observer.email, password).await;
        assert_reason(&r, "UNAUTHENTICATED", "INVALID_CREDENTIALS");
        assert_eq!(answer(&r), unknown, "password {password:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_tokens_expire_and_are_single_use_and_requests_reveal_nothing() {
    let (server, a) = TestServer::with_institution("Escola D").await;

    // Unknown e-mail: same answer, no token issued.
    let before = server.tokens.count();
    let unknown = server
        .gql(
            None,
            REQUEST_PASSWORD_RESET,
            json!({ "e": "ghost@aula.test" }),
        )
        .await;
    assert_eq!(unknown["data"]["requestPasswordReset"]["accepted"], true);
    assert_eq!(server.tokens.count(), before);

    // Expired token.
    let token = server.reset_token(&a.manager.email).await;
    server.clock.advance(Span::hours(2));
    let reset =
        json!({ "email": a.manager.email, "token": token, "newPassword": "a new password" });
    let r = server.command(None, "resetPassword", reset.clone()).await;
    assert_reason(&r, "UNAUTHENTICATED", "RESET_TOKEN_EXPIRED");

    // A fresh token works once.
    let token = server.reset_token(&a.manager.email).await;
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
    assert_ok(&server.sign_up(email).await);
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
    assert_reason(&r, "UNAUTHENTICATED", "SIGN_UP_TOKEN_UNKNOWN");
    let short = json!({ "input": { "email": email, "token": token, "name": "Olga",
                "password": "short", "institutionName": "Escola E" } });
    let r = server.gql(None, query, short).await;
    assert_eq!(extension(&r, "field"), "password");
    assert_ok(&server.gql(None, query, confirm(&token)).await);
    let r = server.gql(None, query, confirm(&token)).await;
    assert_code(&r, "CONFLICT");
    // Signing up again with a registered e-mail answers as a sign-up does (whether an
    // e-mail has an account is not told); the owner is told by e-mail instead.
    let r = server.sign_up(email).await;
    assert_ok(&r);
    let fresh = server.sign_up("someone-new@aula.test").await;
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
    let r = server.sign_up("lost@aula.test").await;
    assert_code(&r, "INTERNAL");
    assert!(!r.to_string().contains("unavailable"), "{r}");
    let events = events_in_log(&server).await;
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

/// A sink whose database connection broke (the postmaster was killed under load).
struct BrokenPipeSink;

#[async_trait::async_trait]
impl aula_api::TokenSink for BrokenPipeSink {
    async fn issued(&self, _token: &aula_api::IssuedToken) -> Result<(), aula_api::BoxError> {
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        Err(sqlx::Error::Io(broken).into())
    }
}

/// A token store that cannot reach its database is the database being unavailable,
/// not a bug: the public mutations that issue tokens answer the retryable 503
/// `UNAVAILABLE` (with `Retry-After`) as every other path does, and record nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_store_that_lost_its_database_is_a_retryable_503() {
    let server = TestServer::start_custom(
        |c| c.reset_request_floor = Duration::ZERO,
        |state| state.with_token_sink(std::sync::Arc::new(BrokenPipeSink)),
    )
    .await;
    // An account without a token: its reset request reaches the sink.
    aula_api::create_admin(&server.db.pool, "root@aula.test", PASSWORD)
        .await
        .unwrap();
    let calls = [
        (
            "mutation($e: String!) { signUp(input: { email: $e }) { accepted } }",
            "new@aula.test",
        ),
        (REQUEST_PASSWORD_RESET, "root@aula.test"),
    ];
    for (query, email) in calls {
        let events_before = events_in_log(&server).await;
        let response = server
            .client
            .post(server.url("/graphql"))
            .json(&json!({ "query": query, "variables": { "e": email } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{query}");
        assert_eq!(response.headers()["retry-after"], "2");
        let r: Value = response.json().await.unwrap();
        assert_code(&r, "UNAVAILABLE");
        assert!(!r.to_string().contains("pipe"), "{r}");
        let events_after = events_in_log(&server).await;
        assert_eq!(events_after, events_before, "{query}");
    }
    server.stop().await;
}

/// The password is hashed (Argon2, slow on purpose) only for a token that can succeed,
/// so anonymous requests with made-up tokens cost no hash. Here hashing cannot work at
/// all (zero lanes): a wrong token still gets its own answer, not an internal error.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_sign_up_token_is_refused_before_the_password_is_hashed() {
    let server = TestServer::start_with(|c| c.password_hashing.parallelism = 0).await;
    let email = "early@aula.test";
    assert_ok(&server.sign_up(email).await);
    let wrong = "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc";
    let r = server
        .confirm_sign_up(email, wrong, "Eve Early", "Escola E")
        .await;
    assert_eq!(extension(&r, "reason"), "SIGN_UP_TOKEN_UNKNOWN", "{r}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_reset_ends_every_earlier_token() {
    let (server, a) = TestServer::with_institution("Escola R").await;
    let old_token = a.manager.token.clone();
    let me = "{ me { id } }";
    assert_ok(&server.query(&old_token, me).await);
    let token = server.reset_token(&a.manager.email).await;
    let reset =
        json!({ "email": a.manager.email, "token": token, "newPassword": "a new password" });
    assert_ok(&server.command(None, "resetPassword", reset).await);
    // The token issued before the reset no longer works...
    let r = server.query(&old_token, me).await;
    assert_reason(&r, "UNAUTHENTICATED", "TOKEN_REVOKED");
    // ...while one issued after it does.
    let fresh = server.token_for(&a.manager.email, "a new password").await;
    assert_ok(&server.query(&fresh, me).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_requests_take_the_same_time_and_are_limited_per_recipient() {
    let (server, a) = TestServer::with_institution("Escola T").await;
    let timed = |email: String| {
        let server = &server;
        async move {
            let started = std::time::Instant::now();
            let r = server
                .gql(None, REQUEST_PASSWORD_RESET, json!({ "e": email }))
                .await;
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

/// How many events the log holds: what the tests above compare to show that a refused
/// or failed request recorded nothing.
async fn events_in_log(server: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&server.db.pool)
        .await
        .unwrap()
}
