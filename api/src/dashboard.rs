//! The admin dashboard page (`GET /admin`): static assets embedded in the binary
//! (`api/assets/admin/`), plain HTML, CSS and JavaScript with no build step. The page
//! talks only to the public GraphQL API (`/graphql`, `/graphql/ws`), so whatever it can
//! do, an API client can do; authorization is the API's.
//!
//! **Boundary:** no data is served here, only the files; the content security policy
//! keeps the page from loading or calling anything outside this origin.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../assets/admin/index.html");
const APP_JS: &str = include_str!("../assets/admin/app.js");
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
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/app.js", get(app_js))
        .route("/admin/app.css", get(app_css))
        .route("/admin/insights.js", get(insights_js))
        .route("/admin/insights.css", get(insights_css))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    // The assets change with the binary only; revalidate so an upgrade shows at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn insights_js() -> Response {
    asset("text/javascript; charset=utf-8", INSIGHTS_JS)
}

async fn insights_css() -> Response {
    asset("text/css; charset=utf-8", INSIGHTS_CSS)
}
