//! The pages e-mails link to (`/confirm-sign-up`, `/reset-password`, `/confirm-email`)
//! and the landing page (`/`): one static page and script embedded in the binary
//! (`api/assets/account/`), which read the token from the link and call the public
//! GraphQL mutations. Before them, a person could finish neither flow without writing
//! a client (the links answered 404).
//!
//! **Boundary:** like the dashboard, files only; same-origin content security policy,
//! and the token never leaves the page except to `/graphql`.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/account/index.html");
const ACCOUNT_JS: &str = include_str!("../assets/account/account.js");
const ACCOUNT_CSS: &str = include_str!("../assets/account/account.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/confirm-sign-up", get(index))
        .route("/reset-password", get(index))
        .route("/confirm-email", get(index))
        .route("/account/account.js", get(script))
        .route("/account/account.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The one-time token is in the page's address: never send it on as a referrer.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", ACCOUNT_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", ACCOUNT_CSS)
}
