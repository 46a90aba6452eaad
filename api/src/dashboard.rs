//! The admin dashboard page (`GET /admin`): static assets embedded in the binary
//! (`api/assets/admin/`), plain HTML, CSS and JavaScript with no build step. The page
//! talks only to the public GraphQL API (`/graphql`, `/graphql/ws`), so whatever it can
//! do, an API client can do; authorization is the API's.
//!
//! **Boundary:** no data is served here, only the files; the content security policy
//! keeps the page from loading or calling anything outside this origin.

use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::static_files::{file, CSS, HTML, JS};

const INDEX_HTML: &str = include_str!("../assets/admin/index.html");
const APP_JS: &str = include_str!("../assets/admin/app.js");
/// The dashboard's state in its address: read, checked, written back.
const URL_JS: &str = include_str!("../assets/admin/url.js");
const DRAWER_JS: &str = include_str!("../assets/admin/drawer.js");
const OPERATIONS_JS: &str = include_str!("../assets/admin/operations.js");
const MAIN_JS: &str = include_str!("../assets/admin/main.js");
const APP_CSS: &str = include_str!("../assets/admin/app.css");
/// Charts, live lists, dark mode and the observers' view (issue #23).
const INSIGHTS_JS: &str = include_str!("../assets/admin/insights.js");
const INSIGHTS_CSS: &str = include_str!("../assets/admin/insights.css");

/// Same origin only: scripts, styles, images, and the API over HTTP and WebSocket.
const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let index = || asset(HTML, INDEX_HTML);
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/app.js", get(|| asset(JS, APP_JS)))
        .route("/admin/url.js", get(|| asset(JS, URL_JS)))
        .route("/admin/drawer.js", get(|| asset(JS, DRAWER_JS)))
        .route("/admin/operations.js", get(|| asset(JS, OPERATIONS_JS)))
        .route("/admin/main.js", get(|| asset(JS, MAIN_JS)))
        .route("/admin/app.css", get(|| asset(CSS, APP_CSS)))
        .route("/admin/insights.js", get(|| asset(JS, INSIGHTS_JS)))
        .route("/admin/insights.css", get(|| asset(CSS, INSIGHTS_CSS)))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    file(content_type, POLICY, body)
}
