//! GraphiQL (`GET /graphql`) from files embedded in the binary (`api/assets/graphiql/`,
//! pinned npm builds of GraphiQL 3.9 and React 18, see its README): nothing is loaded
//! from another origin, so it works offline. Before, async-graphql's page loaded React
//! and GraphiQL from a public CDN, unpinned and without integrity.
//!
//! **Boundary:** like the dashboard, files only; the page talks to `/graphql` and
//! `/graphql/ws` like any client.

use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::static_files::{file, CSS, HTML, JS};

const INDEX_HTML: &str = include_str!("../assets/graphiql/index.html");
const PAGE_CSS: &str = include_str!("../assets/graphiql/page.css");
const START_JS: &str = include_str!("../assets/graphiql/start.js");
const GRAPHIQL_JS: &[u8] = include_bytes!("../assets/graphiql/graphiql.min.js");
const GRAPHIQL_CSS: &[u8] = include_bytes!("../assets/graphiql/graphiql.min.css");
const REACT_JS: &[u8] = include_bytes!("../assets/graphiql/react.production.min.js");
const REACT_DOM_JS: &[u8] = include_bytes!("../assets/graphiql/react-dom.production.min.js");

/// Same origin only, as the dashboard's (`dashboard.rs`), with what GraphiQL needs
/// beyond it and nothing more:
/// - `style-src-elem 'unsafe-inline'`: its dialogs (Radix UI's scroll lock,
///   `react-remove-scroll`) insert a `<style>` element whose text varies, so no hash
///   can allow it. Styles cannot run code, and with `default-src 'none'` and `'self'`
///   images and fonts they cannot load anything from elsewhere either; `style`
///   attributes stay refused (`style-src 'self'`: GraphiQL sets styles through the
///   DOM, which the policy allows). A browser without `style-src-elem` falls back to
///   `style-src 'self'`: the dialog's scroll lock is then refused, and nothing else;
/// - `font-src data:` and `img-src data:`: the stylesheet inlines its fonts and icons.
///
/// Scripts stay `'self'` only: no inline script (the bootstrap is `start.js`), no eval.
/// `tests/graphiql.rs` records every violation of this policy while it uses the page.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    style-src-elem 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// GraphiQL's routes (`GET /graphql` itself is routed with the API's POST in `http.rs`).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/graphiql/page.css",
            get(|| asset(CSS, PAGE_CSS.as_bytes())),
        )
        .route("/graphiql/start.js", get(|| asset(JS, START_JS.as_bytes())))
        .route("/graphiql/graphiql.min.js", get(|| asset(JS, GRAPHIQL_JS)))
        .route(
            "/graphiql/graphiql.min.css",
            get(|| asset(CSS, GRAPHIQL_CSS)),
        )
        .route(
            "/graphiql/react.production.min.js",
            get(|| asset(JS, REACT_JS)),
        )
        .route(
            "/graphiql/react-dom.production.min.js",
            get(|| asset(JS, REACT_DOM_JS)),
        )
}

async fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    file(content_type, POLICY, body)
}

/// `GET /graphql`: the page.
pub(crate) async fn page() -> Response {
    asset(HTML, INDEX_HTML.as_bytes()).await
}
