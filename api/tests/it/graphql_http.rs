//! The GraphQL-over-HTTP conformance audit of the `graphql-http` npm package (issue
//! #24), run by `api/tests/graphql_http_audit.mjs` against the real server: every MUST
//! and every SHOULD audit passes. Needs `node` and the package pinned in
//! `.ci/package.json`, installed by `.ci/run` (`npm ci --prefix .ci`); without them the
//! test fails, it never skips.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::Value;

const INSTALL: &str = "install Node.js 20+ and run `npm ci --prefix .ci` at the repository root \
     (as .ci/run does)";

#[tokio::test(flavor = "multi_thread")]
async fn every_must_and_should_audit_of_graphql_http_passes() {
    let server = TestServer::start().await;
    let url = server.url("/graphql");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql_http_audit.mjs");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("`node` did not run ({e}): {INSTALL}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the audit script failed ({}): {stderr}{stdout}\n{INSTALL}",
        output.status
    );
    let results: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the audit printed no JSON ({e}): {stdout}{stderr}"));
    assert!(results.len() > 40, "too few audits ran: {stdout}");
    let failed: Vec<&Value> = results
        .iter()
        .filter(|r| {
            let name = r["name"].as_str().unwrap_or("");
            (name.starts_with("MUST") || name.starts_with("SHOULD")) && r["status"] != "ok"
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} audits failed:\n{}",
        failed.len(),
        results.len(),
        serde_json::to_string_pretty(&failed).unwrap()
    );
    server.stop().await;
}

/// What the audit does not pin down: `application/json` answers stay as they were, an
/// operation that executed is 200 with its `data` whatever its errors, and a refused
/// content type stays 415.
#[tokio::test(flavor = "multi_thread")]
async fn the_response_media_type_follows_accept() {
    const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
    let server = TestServer::start().await;
    let post = |accept: &'static str, query: &'static str| {
        server
            .client
            .post(server.url("/graphql"))
            .header("accept", accept)
            .json(&serde_json::json!({ "query": query }))
            .send()
    };
    async fn read(response: reqwest::Response) -> (u16, String, Value) {
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, content_type, response.json().await.unwrap())
    }

    // A validation error: JSON as before, 400 without data when asked for the new type.
    let (status, content_type, body) =
        read(post("application/json", "{ nope }").await.unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert!(
        body.get("data").is_some() && body["errors"].is_array(),
        "{body}"
    );
    let accept = "application/graphql-response+json, application/json;q=0.9";
    let (status, content_type, body) = read(post(accept, "{ nope }").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(content_type.starts_with(GRAPHQL_RESPONSE), "{content_type}");
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "VALIDATION",
        "{body}"
    );

    // Preferring JSON by quality keeps JSON.
    let accept = "application/graphql-response+json;q=0.5, application/json";
    let (status, content_type, _) = read(post(accept, "{ nope }").await.unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));

    // Executed with a field error (anonymous `me`): 200 and the data entry.
    let (status, _, body) = read(post(GRAPHQL_RESPONSE, "{ me { id } }").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("data").is_some(), "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // A form POST is still refused, whatever it accepts.
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("accept", GRAPHQL_RESPONSE)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=%7B__typename%7D")
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.get("data").is_none(), "{body}");
    server.stop().await;
}
