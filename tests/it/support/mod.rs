//! Support of the root integration tests: a Chrome DevTools Protocol client
//! ([`cdp`]) and a loopback SMTP acceptor ([`smtp`]).
#![allow(dead_code)]

pub mod cdp;
pub mod isolation;
pub mod service;
pub mod smtp;

pub use isolation::{in_own_process, one_heavy_test_at_a_time};

use aula_eventlog::testing::TestDatabase;

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
    client
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (up to 60 s) until `sql` counts `expected`; `what` names it in the failure.
pub async fn poll_db(pool: &sqlx::PgPool, sql: &str, expected: i64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if count == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 60 s waiting for {what}: {count} instead of {expected} ({sql})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// E-mails to `smtp://127.0.0.1:<smtp_port>`, failed ones retried quickly (20 ms doubling
/// up to `retry_max_ms`), workers polling every 100 ms: read by the service at start-up,
/// so only in a test that runs in its own process ([`in_own_process`]).
pub fn mail_to_port_with_quick_retries(smtp_port: u16, retry_max_ms: u64) {
    std::env::set_var("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"));
    std::env::set_var("AULA_RETRY_BASE_MS", "20");
    std::env::set_var("AULA_RETRY_MAX_MS", retry_max_ms.to_string());
    std::env::set_var("AULA_WORKER_POLL_MS", "100");
}
