//! Support of the root integration tests: a Chrome DevTools Protocol client
//! ([`cdp`]) and a loopback SMTP acceptor ([`smtp`]).
#![allow(dead_code)]

pub mod cdp;
pub mod service;
pub mod smtp;

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
