//! Support of the root integration tests: a Chrome DevTools Protocol client
//! ([`cdp`]) and what the dashboard's pages share ([`dashboard`]), the whole service
//! ([`service`]), a loopback SMTP acceptor ([`smtp`]), and GraphQL over HTTP.
#![allow(dead_code)]

pub mod cdp;
pub mod dashboard;
pub mod isolation;
pub mod logs;
pub mod service;
pub mod smtp;

pub use isolation::{in_own_process, one_heavy_test_at_a_time};

/// Runs the calling test, `$test` (its function's name), alone in a child process of
/// this binary and returns from it in the parent ([`in_own_process`]); in the child it
/// does nothing and the test goes on.
macro_rules! alone_in_own_process {
    ($test:ident) => {
        if $crate::support::in_own_process(module_path!(), stringify!($test)).await {
            return;
        }
    };
}
pub(crate) use alone_in_own_process;

use aula_eventlog::testing::TestDatabase;

/// The public mutation an applicant sends; the answer carries the application's id
/// and log position.
pub const APPLY_TO_COURSE: &str =
    "mutation($input: ApplyToCourseInput!) { applyToCourse(input: $input) { id logPosition } }";

/// A client of applicant `i` of a rush, from an address of its own in
/// `127.<block>.0.0/16` (Linux routes all of 127.0.0.0/8 to `lo`): the public mutations
/// are limited per address, and that limit is not what a rush measures.
pub fn applicant_client(block: u8, i: usize, timeout: std::time::Duration) -> reqwest::Client {
    let address = std::net::Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250 + 1) as u8);
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(address))
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test database as a URL `aula serve` accepts.
pub fn database_url(db: &TestDatabase) -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        // Same server, this test's database.
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        return format!("{server}/{}{query}", db.name);
    }
    let options = &db.connect;
    let host = options
        .get_socket()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| options.get_host().to_owned());
    format!(
        "postgresql://{}@localhost/{}?host={}&port={}",
        options.get_username(),
        db.name,
        host,
        options.get_port()
    )
}

/// A fresh directory `target/<name>` for a browser test's screenshots (only this run's
/// pictures: no stale timeout shots from an earlier run).
pub fn screenshot_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Posts a GraphQL `query` with `variables` to the service at `base`, without a token;
/// returns the answer's JSON (data and errors alike).
pub async fn graphql(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    graphql_as(client, base, None, query, variables).await
}

/// [`graphql`] with the bearer `token`, when there is one.
pub async fn graphql_as(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    let mut request = client
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Creates the admin `email` with `password` and logs it in; its access token.
pub async fn admin_logged_in(
    client: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    email: &str,
    password: &str,
) -> String {
    aula_api::create_admin(pool, email, password).await.unwrap();
    login(client, base, email, password).await
}

/// Logs `email` in; its access token.
pub async fn login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let r = graphql(
        client,
        base,
        "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
        serde_json::json!({ "input": { "email": email, "password": password } }),
    )
    .await;
    r["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("login of {email} failed: {r}"))
        .to_owned()
}

/// Signs `email` up, and asserts the sign-up was taken.
pub async fn sign_up(client: &reqwest::Client, base: &str, email: &str) {
    let r = graphql(
        client,
        base,
        "mutation($input: SignUpInput!) { signUp(input: $input) { accepted } }",
        serde_json::json!({ "input": { "email": email } }),
    )
    .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(r["data"]["signUp"]["accepted"], true, "{r}");
}

/// Confirms `email`'s sign-up with its one-time `token`, naming the manager "Maria
/// Manager" and the institution `institution_name`; the new institution's id.
pub async fn confirm_sign_up(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    token: &str,
    password: &str,
    institution_name: &str,
) -> String {
    let confirmed = graphql(
        client,
        base,
        "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { institutionId } }",
        serde_json::json!({ "input": { "email": email, "token": token, "name": "Maria Manager",
                           "password": password, "institutionName": institution_name } }),
    )
    .await;
    confirmed["data"]["confirmSignUp"]["institutionId"]
        .as_str()
        .unwrap_or_else(|| panic!("confirmSignUp failed: {confirmed}"))
        .to_owned()
}

/// Asks `probe` every `every` until it answers `Ok`, and returns that answer. Once
/// `within` has passed, panics with the last `Err`: what was still missing.
pub async fn eventually<T, F, Fut>(
    within: std::time::Duration,
    every: std::time::Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(answer) => return answer,
            Err(missing) => assert!(
                std::time::Instant::now() < deadline,
                "timed out after {within:?}: {missing}"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// The first span `exporter` has finished that `matches`, once there is one (looking
/// every 50 ms for at most `within`); `what` names it in the failure.
pub async fn finished_span(
    exporter: &opentelemetry_sdk::trace::InMemorySpanExporter,
    within: std::time::Duration,
    what: &str,
    matches: impl Fn(&opentelemetry_sdk::trace::SpanData) -> bool,
) -> opentelemetry_sdk::trace::SpanData {
    let every = std::time::Duration::from_millis(50);
    eventually(within, every, || async {
        let finished = exporter.get_finished_spans().unwrap();
        finished
            .into_iter()
            .find(&matches)
            .ok_or_else(|| format!("no {what}"))
    })
    .await
}

/// Waits (up to 60 s) until `sql` counts `expected`; `what` names it in the failure.
pub async fn poll_db(pool: &sqlx::PgPool, sql: &str, expected: i64, what: &str) {
    eventually(PATIENCE, POLL_EVERY, || async {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if count == expected {
            return Ok(());
        }
        Err(format!(
            "waiting for {what}: {count} instead of {expected} ({sql})"
        ))
    })
    .await
}

/// How long most waits of these tests may take (60 s), and how often they look again.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// E-mails to `smtp://127.0.0.1:<smtp_port>`, failed ones retried quickly (20 ms doubling
/// up to `retry_max_ms`), workers polling every 100 ms: read by the service at start-up,
/// so only in a test that runs in its own process ([`in_own_process`]).
pub fn mail_to_port_with_quick_retries(smtp_port: u16, retry_max_ms: u64) {
    mail_to_port(smtp_port, 20, retry_max_ms);
}

/// E-mails to `smtp://127.0.0.1:<smtp_port>`, failed ones retried after `retry_base_ms`
/// doubling up to `retry_max_ms`, workers polling every 100 ms (read as
/// [`mail_to_port_with_quick_retries`]).
pub fn mail_to_port(smtp_port: u16, retry_base_ms: u64, retry_max_ms: u64) {
    std::env::set_var("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"));
    std::env::set_var("AULA_RETRY_BASE_MS", retry_base_ms.to_string());
    std::env::set_var("AULA_RETRY_MAX_MS", retry_max_ms.to_string());
    std::env::set_var("AULA_WORKER_POLL_MS", "100");
}
