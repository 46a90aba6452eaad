//! GraphiQL offline (issue #24): `GET /graphql` in headless Chromium loads only files
//! of this origin (embedded in the binary) under a same-origin content security
//! policy, runs a query over HTTP and a subscription over `/graphql/ws`, and shows the
//! results. Before, the page loaded React and GraphiQL from a public CDN.

use crate::support;

use std::path::Path;

use aula_api::{ApiConfig, AppState, Secret};
use aula_eventlog::testing::TestDatabase;
use serde_json::json;
use support::cdp::{click, Browser};

/// Records every content-security-policy violation of the page, from before its first
/// script runs.
const WATCH_VIOLATIONS: &str = "window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));";

/// The CodeMirror of the first visible element matching `selector`.
fn editor(selector: &str) -> String {
    format!(
        "[...document.querySelectorAll({})].find((n) => n.offsetParent !== null).CodeMirror",
        serde_json::to_string(selector).unwrap()
    )
}

/// Types `query` into the editor and runs it, waits until the response shows `shows`
/// (`what` names it) and saves a screenshot `shot`. GraphiQL parses the editor's text
/// after a short delay (a run before that sees the previous document), hence the pause.
async fn run(browser: &Browser, query: &str, shows: &str, what: &str, shots: &Path, shot: &str) {
    browser
        .eval(&format!(
            "(() => {{ {}.setValue({}); return true; }})()",
            editor(".graphiql-query-editor .CodeMirror"),
            serde_json::to_string(query).unwrap()
        ))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    browser.eval(&click(".graphiql-execute-button")).await;
    let response_shows = format!(
        "{}.getValue().includes({})",
        editor(".graphiql-response .CodeMirror"),
        serde_json::to_string(shows).unwrap()
    );
    browser.wait_for(&response_shows, what, shots).await;
    browser.screenshot(&shots.join(shot)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graphiql_runs_offline_from_embedded_assets() {
    support::cdp::require_chromium();
    let db = TestDatabase::new().await;
    let mut config = ApiConfig::new(Secret::new(
        b"graphiql test secret, 32 bytes at least".to_vec(),
    ));
    config.subscription_poll_interval = std::time::Duration::from_millis(50);
    let state = AppState::new(db.pool.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aula_api::serve(
        listener,
        aula_api::router(state),
        async move {
            let _ = stopped.await;
        },
    ));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/graphiql-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // The page and every asset carry the policy; scripts from this origin only.
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(policy.contains("connect-src 'self';"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("//cdn") && !html.contains("https://"),
        "{html}"
    );

    // An admin's token, for the subscription.
    let (admin, password) = ("graphiql.admin@aula.test", "graphiql password 1");
    let token = support::admin_logged_in(&client, &base, &db.pool, admin, password).await;

    let browser = Browser::start().await;
    browser
        .send(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": WATCH_VIOLATIONS }),
        )
        .await;
    browser.navigate(&format!("{base}/graphql")).await;
    browser
        .wait_for(
            &format!(
                "{} && document.querySelector('.graphiql-execute-button')",
                editor(".graphiql-query-editor .CodeMirror")
            ),
            "the GraphiQL editor",
            &shots,
        )
        .await;

    // A query over HTTP.
    run(
        &browser,
        "{ health { status } }",
        "\"status\": \"ok\"",
        "the query's result",
        &shots,
        "01-query.png",
    )
    .await;

    // A subscription over /graphql/ws, the token in the Headers tab.
    let headers = json!({ "Authorization": format!("Bearer {token}") }).to_string();
    browser
        .eval(&format!(
            "(() => {{ {}.setValue({}); return true; }})()",
            editor(".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"),
            serde_json::to_string(&headers).unwrap()
        ))
        .await;
    run(
        &browser,
        "subscription { logPosition }",
        "\"logPosition\":",
        "the subscription's first event",
        &shots,
        "02-subscription.png",
    )
    .await;

    // A dialog (Radix UI) opens too (Escape closes it), then the documentation.
    for (button, shown, what, shot) in [
        (
            "button[aria-label=\"Open settings dialog\"]",
            "document.querySelector('[role=dialog]')",
            "the settings dialog",
            "03-settings.png",
        ),
        (
            "button[aria-label=\"Show Documentation Explorer\"]",
            "document.querySelector('.graphiql-doc-explorer') && document.body.innerText.includes('QueryRoot')",
            "the documentation explorer",
            "04-docs.png",
        ),
    ] {
        browser.click_then_wait(button, shown, what, &shots).await;
        browser.screenshot(&shots.join(shot)).await;
        browser.press("Escape").await;
    }

    // Nothing left the origin, and the policy refused nothing the page needed.
    let outside = browser
        .eval(
            "performance.getEntriesByType('resource').map((e) => e.name)
               .filter((name) => !name.startsWith(location.origin + '/'))",
        )
        .await;
    assert_eq!(outside, json!([]), "requests to other origins");
    let loaded = browser
        .eval("performance.getEntriesByType('resource').length")
        .await;
    assert!(loaded.as_u64().unwrap() >= 6, "assets loaded: {loaded}");
    let violations = browser.eval("window.__violations").await;
    assert_eq!(violations, json!([]), "content-security-policy violations");
    let errors = browser.page_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "page errors: {errors:?}");

    drop(browser);
    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
}
