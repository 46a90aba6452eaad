//! The pages e-mails link to, as a person uses them (issue #24, finding 6): the whole
//! service with its file outbox; the link is read from the `.eml` the processor wrote
//! and opened in headless Chromium, the form filled in and sent; then the API accepts
//! the new credentials. Before, both links answered 404.

use crate::support;

use std::path::Path;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use serde_json::json;
use support::cdp::Browser;
use support::graphql as gql;
use support::service::Service;

fn set(selector: &str, value: &str) -> String {
    format!(
        "(() => {{ const n = document.querySelector({}); n.value = {}; return true; }})()",
        serde_json::to_string(selector).unwrap(),
        serde_json::to_string(value).unwrap()
    )
}

/// The link to `path` in the newest `.eml` of `outbox` that holds one, decoded from
/// quoted-printable, moved onto `base` (the e-mails name the configured public URL).
async fn link_in_outbox(outbox: &Path, path: &str, base: &str) -> String {
    let every = Duration::from_millis(200);
    support::eventually(support::PATIENCE, every, || async {
        let mut found = None;
        if let Ok(entries) = std::fs::read_dir(outbox) {
            for entry in entries.flatten() {
                let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let text = raw
                    .replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=");
                if let Some(start) = text.find(path) {
                    let end = text[start..]
                        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                        .map_or(text.len(), |n| start + n);
                    found = Some(format!("{base}{}", &text[start..end]));
                }
            }
        }
        found.ok_or_else(|| format!("no e-mail with {path} in {}", outbox.display()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_finishes_sign_up_and_password_reset_from_the_emailed_links() {
    support::cdp::require_chromium();
    let db = TestDatabase::new().await;
    let service = Service::start(&db, |_| {}).await;
    let base = service.base.clone();
    let outbox = service.data_dir.join("outbox");
    let client = reqwest::Client::new();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/account-pages-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // The landing page names the dashboard and the first step.
    let browser = Browser::start().await;
    browser.navigate(&format!("{base}/")).await;
    browser
        .wait_for(
            "document.body.innerText.includes('aula admin create') && document.querySelector('a[href=\"/admin\"]')",
            "the landing page",
            &shots,
        )
        .await;

    // Sign up through the API, then finish from the e-mailed link.
    let email = "new.manager@aula.test";
    support::sign_up(&client, &base, email).await;
    let link = link_in_outbox(&outbox, "/confirm-sign-up?", &base).await;
    browser.navigate(&link).await;
    browser
        .wait_for(
            "document.querySelector('#form')",
            "the sign-up form",
            &shots,
        )
        .await;
    for (selector, value) in [
        ("#email", email),
        ("#name", "Marta Gestora"),
        ("#password", "first password 1"),
        ("#institutionName", "Escola das Páginas"),
    ] {
        browser.eval(&set(selector, value)).await;
    }
    browser
        .click_then_wait(
            "#submit",
            "document.querySelector('#done')",
            "the sign-up done",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("01-signed-up.png")).await;
    // Signing in with the new password works.
    support::login(&client, &base, email, "first password 1").await;

    // Forgot the password: the reset link, then the new password works.
    let r = gql(
        &client,
        &base,
        "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }",
        json!({ "e": email }),
    )
    .await;
    assert_eq!(r["data"]["requestPasswordReset"]["accepted"], true, "{r}");
    let link = link_in_outbox(&outbox, "/reset-password?", &base).await;
    browser.navigate(&link).await;
    browser
        .wait_for("document.querySelector('#form')", "the reset form", &shots)
        .await;
    browser.eval(&set("#email", email)).await;
    browser
        .eval(&set("#newPassword", "second password 2"))
        .await;
    browser
        .click_then_wait(
            "#submit",
            "document.querySelector('#done')",
            "the reset done",
            &shots,
        )
        .await;
    support::login(&client, &base, email, "second password 2").await;
    // The link worked once: sending the form again is refused, in plain words.
    browser.navigate(&link).await;
    browser
        .wait_for(
            "document.querySelector('#form')",
            "the reset form again",
            &shots,
        )
        .await;
    browser.eval(&set("#email", email)).await;
    browser.eval(&set("#newPassword", "third password 3")).await;
    browser
        .click_then_wait(
            "#submit",
            "document.querySelector('#status.error') && document.querySelector('#status').innerText.includes('RESET_TOKEN')",
            "the refusal of a used link",
            &shots,
        )
        .await;

    service.stop(Duration::from_secs(30)).await;
}
