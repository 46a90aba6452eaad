//! The dashboard's second part (issue #23) in headless Chromium against the whole
//! service: charts drawn from the rollups, the list following the log live (and
//! pausing), search over payloads, the institution filter's short ids, dark mode, the
//! observer's read-only view and a manager's own header.
//!
//! Like `tests/dashboard.rs`: e-mails go to a loopback SMTP server that rejects them, so
//! the sign-up e-mails fail (the charts get failures to draw); tokens are read from
//! `pending_tokens`. Screenshots go to `target/dashboard-insights-screenshots/`.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::cdp::click;
use support::dashboard::{
    escola_norte, filter_institution, raw_token, sign_in, sign_out, signed_in_browser, stage,
    Stage, LIST_READY, MANAGER_EMAIL,
};
use support::{graphql, graphql_as, login, poll_db, sign_up};

const PASSWORD: &str = "dashboard password 1";

#[tokio::test(flavor = "multi_thread")]
async fn charts_live_lists_search_observers_and_dark_mode_in_chromium() {
    support::alone_in_own_process!(charts_live_lists_search_observers_and_dark_mode_in_chromium);
    let Stage {
        shots, db, service, ..
    } = stage("dashboard-insights-screenshots").await;
    let base = service.base.clone();
    let client = reqwest::Client::new();

    let admin_email = "admin@aula.test";
    let admin = support::admin_logged_in(&client, &base, &db.pool, admin_email, PASSWORD).await;
    // A manager and its institution (the sign-up e-mail fails; its token is stashed).
    let institution = escola_norte(&client, &base, &db.pool, PASSWORD).await;
    for i in 0..3 {
        sign_up(&client, &base, &format!("applicant{i}@escola.test")).await;
    }
    poll_db(
        &db.pool,
        "SELECT count(*) FROM admin_events WHERE event_type = 'PendingUserRegisterCreated' AND status = 'failed'",
        4,
        "four failed sign-up events",
    )
    .await;
    // A platform-wide observer, made by the admin, with a password of its own.
    let observer_email = "olga@support.test";
    let created = graphql_as(
        &client,
        &base,
        Some(&admin),
        "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id institutionId } }",
        json!({ "input": { "name": "Olga Observer", "email": observer_email } }),
    )
    .await;
    let observer_id = created["data"]["createObserver"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createObserver failed: {created}"))
        .to_owned();
    assert!(created["data"]["createObserver"]["institutionId"].is_null());
    let requested = graphql(
        &client,
        &base,
        "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }",
        json!({ "e": observer_email }),
    )
    .await;
    assert!(requested["errors"].is_null(), "{requested}");
    let reset_token = raw_token(
        &db.pool,
        &format!("e.aggregate_id = '{observer_id}' AND e.event_type = 'ResetPasswordTokenCreated'"),
    )
    .await;
    let reset = graphql(
        &client,
        &base,
        "mutation($input: ResetPasswordInput!) { resetPassword(input: $input) { id } }",
        json!({ "input": { "email": observer_email, "token": reset_token, "newPassword": PASSWORD } }),
    )
    .await;
    assert!(reset["errors"].is_null(), "{reset}");

    let url = format!("{base}/admin");
    let browser = signed_in_browser(&url, (1280, 1000), admin_email, PASSWORD, &shots).await;
    browser
        .wait_for(
            &format!("!document.getElementById('app-view').hidden && {LIST_READY}"),
            "the events list",
            &shots,
        )
        .await;

    // Charts: drawn from the rollups, with the failures the sign-up e-mails left.
    browser
        .wait_for(
            "document.getElementById('charts').dataset.state === 'ready'
              && [...document.querySelectorAll('#chart-events g[data-total]')].some(g => Number(g.dataset.total) > 0)
              && document.querySelectorAll('#chart-events rect.bad').length > 0
              && document.querySelectorAll('#chart-tasks rect.bad').length > 0
              && document.querySelectorAll('#chart-events g[data-total]').length === 60",
            "the charts of the last hour with failures",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("01-charts.png")).await;
    // The range lives in the URL, like the filters.
    browser
        .eval("(() => { const s = document.getElementById('chart-range'); s.value = 'LAST_24_HOURS'; s.dispatchEvent(new Event('change')); return true; })()")
        .await;
    browser
        .wait_for(
            "location.search.includes('range=LAST_24_HOURS')
              && document.querySelectorAll('#chart-events g[data-total]').length === 24
              && [...document.querySelectorAll('#chart-events g[data-total]')].some(g => Number(g.dataset.total) > 0)",
            "the hourly charts and the range in the URL",
            &shots,
        )
        .await;

    // Live list: new events appear at the top of the open page without a reload; the
    // rows already shown stay the same elements (place, focus and scroll are kept).
    browser
        .eval("(() => { const r = document.querySelector('#list-body tr[data-event-id]'); r.dataset.mark = 'kept'; r.querySelector('button').focus(); window.scrollTo(0, 120); return true; })()")
        .await;
    sign_up(&client, &base, "live@escola.test").await;
    browser
        .wait_for(
            "document.querySelector('#list-body tr.fresh') !== null
              && document.querySelector('#list-body tr[data-mark=\"kept\"]') !== null
              && document.activeElement.closest('tr[data-mark=\"kept\"]') !== null
              && document.getElementById('live-state').textContent.includes('new')",
            "a new event in the live list, the focused row kept",
            &shots,
        )
        .await;
    // Statuses change in place: the new sign-up's e-mail fails and its row says so.
    browser
        .wait_for(
            "[...document.querySelectorAll('#list-body tr.fresh')].some(r => r.dataset.type === 'PendingUserRegisterCreated' && r.dataset.status === 'failed')",
            "the new event's status changing in place",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("02-live.png")).await;
    // Paused, the list stays as it is; resumed, it catches up.
    browser.eval(&click("#live-toggle")).await;
    let rows_before = browser
        .eval("document.querySelectorAll('#list-body tr[data-event-id]').length")
        .await;
    let marked = browser
        .eval("(document.querySelectorAll('#list-body tr').forEach(r => r.classList.remove('fresh')), true)")
        .await;
    assert_eq!(marked, json!(true));
    sign_up(&client, &base, "paused@escola.test").await;
    poll_db(
        &db.pool,
        "SELECT count(*) FROM admin_events a JOIN events e USING (event_id) WHERE e.payload->>'email' = 'paused@escola.test'",
        1,
        "the paused sign-up's row",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let paused = browser
        .eval("[document.getElementById('live-toggle').getAttribute('aria-pressed'), document.querySelector('#list-body tr.fresh') === null]")
        .await;
    assert_eq!(paused, json!(["true", true]), "a paused list does not move");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#list-body tr[data-event-id]').length")
            .await,
        rows_before
    );
    browser
        .click_then_wait(
            "#live-toggle",
            "document.querySelector('#list-body tr.fresh') !== null && document.getElementById('live-toggle').getAttribute('aria-pressed') === 'false'",
            "the resumed list catching up",
            &shots,
        )
        .await;

    // Search over payloads: one sign-up by its e-mail address.
    browser
        .eval("(() => { document.getElementById('f-search').value = 'applicant1@escola'; document.getElementById('apply-filters').click(); return true; })()")
        .await;
    browser
        .wait_for(
            &format!("{LIST_READY} && location.search.includes('q=applicant1') && document.querySelectorAll('#list-body tr[data-event-id]').length === 1
              && document.querySelector('#list-body tr[data-event-id]').dataset.type === 'PendingUserRegisterCreated'"),
            "the one event whose payload holds the e-mail",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("03-search.png")).await;
    browser
        .click_then_wait(
            "#clear-filters",
            &format!("{LIST_READY} && location.search === '?range=LAST_24_HOURS'"),
            "the cleared search",
            &shots,
        )
        .await;

    // The institution filter takes the 8 characters the table shows.
    let short = &institution[..8];
    filter_institution(&browser, short).await;
    browser
        .wait_for(
            &format!("{LIST_READY} && location.search.includes('institution={institution}')
              && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.institution === '{institution}')
              && document.getElementById('f-institution-error').hidden"),
            "the list of the institution named by its short id",
            &shots,
        )
        .await;
    // An id that names nothing: said beside the field, and no paging on.
    filter_institution(&browser, "ffffffff").await;
    browser
        .wait_for(
            "!document.getElementById('f-institution-error').hidden
              && document.getElementById('f-institution-error').textContent.includes('ffffffff')
              && document.getElementById('next-page').disabled",
            "the short id's error beside the field",
            &shots,
        )
        .await;
    browser.eval(&click("#clear-filters")).await;

    // Dark mode: follows the system until the toggle chooses.
    let before = browser
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    for scheme in ["dark", "light"] {
        browser
            .send(
                "Emulation.setEmulatedMedia",
                json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
            )
            .await;
        browser
            .wait_for(
                &format!("document.documentElement.dataset.theme === '{scheme}'"),
                &format!("the system's {scheme} setting followed"),
                &shots,
            )
            .await;
    }
    browser
        .click_then_wait(
            "#theme-toggle",
            "document.documentElement.dataset.theme === 'dark'
              && document.getElementById('theme-toggle').getAttribute('aria-pressed') === 'true'
              && localStorage.getItem('aula.admin.theme') === 'dark'",
            "dark mode from the toggle",
            &shots,
        )
        .await;
    let after = browser
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    assert_ne!(before, after, "the page's colours change in dark mode");
    browser.screenshot(&shots.join("04-dark.png")).await;
    browser.eval(&click("#theme-toggle")).await;

    // The observer: sees everything, can change nothing.
    sign_out(&browser, &base, &shots).await;
    sign_in(&browser, observer_email, PASSWORD).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('app-view').hidden && {LIST_READY}
              && document.body.classList.contains('read-only')
              && document.querySelectorAll('#list-body tr[data-event-id]').length >= 5
              && !document.getElementById('summary').hidden
              && !document.getElementById('tab-projections').hidden
              && document.getElementById('bulk-bar').offsetParent === null"
            ),
            "the observer's read-only events list",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            "#list-body tr[data-status='failed'] td.open button",
            "document.getElementById('drawer').dataset.state === 'ready'
              && document.getElementById('drawer-reprocess').offsetParent === null
              && document.querySelectorAll('#drawer-body [data-retry]').length > 0
              && [...document.querySelectorAll('#drawer-body [data-retry]')].every(b => b.offsetParent === null)",
            "the observer's drawer without reprocess or retry",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("05-observer.png")).await;
    browser.eval(&click("#drawer-close")).await;
    browser
        .click_then_wait(
            "#tab-projections",
            "document.querySelectorAll('#projections-body tr[data-projection]').length >= 5
              && [...document.querySelectorAll('[data-rebuild]')].every(b => b.offsetParent === null)",
            "the observer's projections without rebuild buttons",
            &shots,
        )
        .await;
    // The API agrees: the observer's token reprocesses nothing.
    let observer = login(&client, &base, observer_email, PASSWORD).await;
    let event: String = sqlx::query_scalar(
        "SELECT event_id::text FROM admin_events WHERE status = 'failed' LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let refused = graphql_as(
        &client,
        &base,
        Some(&observer),
        "mutation($e: UUID!) { reprocessEvent(eventId: $e) { eventId } }",
        json!({ "e": event }),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );

    // A manager's header covers its institution.
    sign_out(&browser, &base, &shots).await;
    sign_in(&browser, MANAGER_EMAIL, PASSWORD).await;
    browser
        .wait_for(
            "!document.getElementById('app-view').hidden && !document.getElementById('summary').hidden
              && /events\\/h/.test(document.getElementById('rate').textContent)
              && /succeeded/.test(document.getElementById('event-counts').textContent)
              && document.getElementById('charts').dataset.state === 'ready'",
            "the manager's own header and charts",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("06-manager.png")).await;

    browser.assert_no_page_errors();
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}
