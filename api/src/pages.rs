//! The pages e-mails link to (`/confirm-sign-up`, `/reset-password`, `/confirm-email`)
//! and the landing page (`/`): one static page and script embedded in the binary
//! (`api/assets/account/`), which read the token from the link and call the public
//! GraphQL mutations. Before them, a person could finish neither flow without writing
//! a client (the links answered 404).
//!
//! **Boundary:** like the dashboard, files only; same-origin content security policy,
//! and the token never leaves the page except to `/graphql`.

use axum::http::header::REFERRER_POLICY;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::static_files::{file, CSS, HTML, JS};

const INDEX_HTML: &str = include_str!("../assets/account/index.html");
const ACCOUNT_JS: &str = include_str!("../assets/account/account.js");
const ACCOUNT_CSS: &str = include_str!("../assets/account/account.css");

// `img-src data:`: the pages' icon is inline, so no `/favicon.ico` request answers 404.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = || asset(HTML, INDEX_HTML);
    let mut router = Router::new()
        .route("/account/account.js", get(|| asset(JS, ACCOUNT_JS)))
        .route("/account/account.css", get(|| asset(CSS, ACCOUNT_CSS)));
    for path in ["/", "/confirm-sign-up", "/reset-password", "/confirm-email"] {
        router = router.route(path, get(page));
    }
    router
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = file(content_type, POLICY, body);
    // The one-time token is in the page's address: never send it on as a referrer.
    response
        .headers_mut()
        .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
