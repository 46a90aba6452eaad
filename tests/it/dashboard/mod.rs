//! The admin dashboard (`GET /admin`) in real headless Chromium against the whole
//! service as `aula serve` runs it (API, projections, processor reactions and workers),
//! driven over the Chrome DevTools Protocol.
//!
//! E-mails go to a loopback SMTP server that rejects them at first (a permanent `550`),
//! so the sign-up e-mails fail; the test then lets the server accept them and
//! reprocesses from the page. Screenshots of each state are saved under
//! `target/dashboard-screenshots/` (printed at the start).
//!
//! Chromium is required: without `/usr/bin/chromium` (or `AULA_CHROMIUM`) the test
//! fails, it never passes silently.

mod accounts;
mod events;
mod navigation;
mod operations;
mod tasks;

use crate::support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use serde_json::json;
use support::cdp::Browser;
use support::dashboard::{open_login, stage, Stage, LIST_READY, LIST_SETTLED};

const PASSWORD: &str = "dashboard password 1";
const SIGN_UP: &str = "PendingUserRegisterCreated";
const SIGN_UP_EMAIL: &str = "email.signup_confirmation";
/// The manager who signs up halfway (its dead sign-up e-mail is retried later).
const MANAGER_EMAIL: &str = "manager@escola.test";

use support::{graphql_as, poll_db};

/// What every step of the scenario works with: the service's database and address, an
/// HTTP client, the signed-in browser, where screenshots go, and the first admin.
#[derive(Clone, Copy)]
struct Scene<'a> {
    db: &'a TestDatabase,
    base: &'a str,
    client: &'a reqwest::Client,
    browser: &'a Browser,
    shots: &'a Path,
    admin_email: &'a str,
    admin_id: uuid::Uuid,
}

/// One scenario, in the order a person would go: the steps share the page's state
/// (filters, the reprocessed event, the SMTP acceptor), so each room below is a step.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_filters_sorts_reprocesses_and_follows_a_bulk_job_in_chromium() {
    support::alone_in_own_process!(
        the_dashboard_filters_sorts_reprocesses_and_follows_a_bulk_job_in_chromium
    );
    // The SMTP server rejects every e-mail for now: each fails at once, `failed`.
    let Stage {
        shots,
        db,
        service,
        smtp,
    } = stage("dashboard-screenshots").await;
    let base = service.base.clone();
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/admin")).send().await.unwrap();
    assert!(page.status().is_success());
    assert!(page
        .headers()
        .get("content-security-policy")
        .is_some_and(|v| v.to_str().unwrap().contains("default-src 'none'")));

    let admin_email = "admin@aula.test";
    let admin_id = aula_api::create_admin(&db.pool, admin_email, PASSWORD)
        .await
        .unwrap();
    for i in 0..3 {
        support::sign_up(&client, &base, &format!("applicant{i}@escola.test")).await;
    }
    poll_db(
        &db.pool,
        &format!("SELECT count(*) FROM admin_events WHERE event_type = '{SIGN_UP}' AND status = 'failed'"),
        3,
        "three failed sign-up events",
    )
    .await;
    let (task_status, last_error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM tasks WHERE kind = $1 ORDER BY id LIMIT 1")
            .bind(SIGN_UP_EMAIL)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        matches!(task_status.as_str(), "dead" | "failed"),
        "{task_status}"
    );

    let browser = Browser::start().await;
    browser.viewport(1280, 900, false).await;

    // Log in, typing like a user.
    open_login(&browser, &format!("{base}/admin"), &shots).await;
    sign_in(&browser, admin_email).await;
    browser
        .wait_for(
            &format!("!document.getElementById('app-view').hidden && {LIST_READY} && document.querySelectorAll('#list-body tr[data-event-id]').length >= 4"),
            "the events list after login",
            &shots,
        )
        .await;
    browser
        .wait_for(
            "/events\\/h/.test(document.getElementById('rate').textContent) && /failed/.test(document.getElementById('event-counts').textContent)",
            "the header summary",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("01-events.png")).await;
    let scene = Scene {
        db: &db,
        base: &base,
        client: &client,
        browser: &browser,
        shots: &shots,
        admin_email,
        admin_id,
    };
    events::filter_and_sort(scene).await;
    let opener = tasks::open_a_failed_task(scene, &task_status, &last_error).await;
    tasks::reprocess_from_the_drawer(scene, &smtp, &opener).await;
    events::bulk_reprocess(scene).await;
    navigation::urls_restore_the_view(scene).await;
    operations::projections_and_webhooks(scene).await;
    navigation::a_phone_sized_screen(scene).await;
    accounts::a_manager_sees_its_institution(scene, &smtp).await;
    events::cursor_pages(scene).await;
    tasks::retry_a_dead_task(scene, &smtp).await;
    accounts::the_page_signs_out_when_its_session_ends(scene).await;

    browser.assert_no_page_errors();
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}

/// Types the credentials into the login form, as a person would, and submits it.
async fn sign_in(browser: &Browser, email: &str) {
    support::dashboard::sign_in(browser, email, PASSWORD).await;
}

/// Filters the events list to the failed sign-ups (from the filter form, as a person).
async fn filter_failed_sign_ups(browser: &Browser) {
    support::dashboard::filter_one_of(browser, "f-types", SIGN_UP, "failed").await;
}

/// Opens the Tasks tab and waits for its list.
async fn open_tasks_tab(browser: &Browser, shots: &Path) {
    browser
        .click_then_wait(
            "#tab-tasks",
            &format!("location.search.includes('tab=tasks') && {LIST_SETTLED}"),
            "the tasks tab",
            shots,
        )
        .await;
}

async fn location_has(browser: &Browser, text: &str) -> bool {
    browser
        .eval(&format!(
            "location.search.includes({})",
            serde_json::to_string(text).unwrap()
        ))
        .await
        == json!(true)
}
