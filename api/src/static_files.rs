//! How the embedded pages (`dashboard.rs`, `pages.rs`, `graphiql.rs`) answer a file:
//! its content type, the page's content security policy, and `no-cache`; and
//! `nosniff` on every answer of the router.
//!
//! **Boundary:** files only, each served with the policy of the page it belongs to.

use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

pub(crate) const HTML: &str = "text/html; charset=utf-8";
pub(crate) const JS: &str = "text/javascript; charset=utf-8";
pub(crate) const CSS: &str = "text/css; charset=utf-8";

/// `body` as `content_type` under `policy`.
pub(crate) fn file(
    content_type: &'static str,
    policy: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = body.into().into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    // The files change with the binary only; revalidate so an upgrade shows at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Every answer of the router (pages, scripts, the API's JSON, errors) is what its
/// content type says: no browser guesses HTML from JSON that quotes a caller's markup.
pub(crate) async fn no_sniff(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
