//! The admin dashboard (`GET /admin`) in real headless Chromium against the whole
//! service as `aula serve` runs it (API, projections, processor reactions and workers),
//! driven over the Chrome DevTools Protocol.
//!
//! E-mails go to a loopback SMTP port where nothing listens at first, so the sign-up
//! e-mails fail until their retries run out; the test then starts an SMTP acceptor on
//! that port and reprocesses from the page. Screenshots of each state are saved under
//! `target/dashboard-screenshots/` (printed at the start).
//!
//! Chromium is required: without `/usr/bin/chromium` (or `AULA_CHROMIUM`) the test
//! fails, it never passes silently.

use crate::support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use serde_json::{json, Value};
use support::cdp::{click, Browser};
use support::free_port;
use support::service::Service;

const PASSWORD: &str = "dashboard password 1";
const SIGN_UP: &str = "PendingUserRegisterCreated";
const SIGN_UP_EMAIL: &str = "email.signup_confirmation";

/// A free loopback port (bound, read, released).
fn screenshots() -> PathBuf {
    support::screenshot_dir("dashboard-screenshots")
}

use support::poll_db;

async fn graphql(client: &reqwest::Client, base: &str, query: &str, variables: Value) -> Value {
    client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const LIST_READY: &str = "document.getElementById('list').dataset.state === 'ready' && !document.getElementById('list-body').hasAttribute('aria-busy')";
/// Loaded, with rows or with the empty state.
const LIST_SETTLED: &str = "['ready', 'empty'].includes(document.getElementById('list').dataset.state) && !document.getElementById('list-body').hasAttribute('aria-busy')";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_filters_sorts_reprocesses_and_follows_a_bulk_job_in_chromium() {
    if support::in_own_process(
        module_path!(),
        "the_dashboard_filters_sorts_reprocesses_and_follows_a_bulk_job_in_chromium",
    )
    .await
    {
        return;
    }
    let shots = screenshots();
    println!("dashboard screenshots: {}", shots.display());
    // Fail first, before anything slow, when there is no browser.
    support::cdp::require_chromium();

    let db = TestDatabase::new().await;
    let smtp_port = free_port();
    // Nothing listens on the SMTP port yet: every e-mail fails, quickly retried to `dead`.
    support::mail_to_port_with_quick_retries(smtp_port, 60);
    let service = Service::start(&db, |args| args.token_ttl_minutes = 60).await;
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
        let signed_up = graphql(
            &client,
            &base,
            "mutation($input: SignUpInput!) { signUp(input: $input) { accepted } }",
            json!({ "input": { "email": format!("applicant{i}@escola.test") } }),
        )
        .await;
        assert!(signed_up["errors"].is_null(), "{signed_up}");
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
    browser.navigate(&format!("{base}/admin")).await;

    // Log in, typing like a user.
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden",
            "the login form",
            &shots,
        )
        .await;
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

    // Filter by type and status: the URL carries them.
    browser
        .eval(&format!(
            "(() => {{ for (const o of document.getElementById('f-types').options) o.selected = o.value === '{SIGN_UP}';
               document.getElementById('f-status').value = 'failed';
               document.getElementById('apply-filters').click(); return true; }})()"
        ))
        .await;
    browser
        .wait_for(
            &format!("location.search.includes('types={SIGN_UP}') && location.search.includes('status=failed') && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length === 3
              && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.type === '{SIGN_UP}' && r.dataset.status === 'failed')"),
            "the filtered events",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("02-filtered.png")).await;

    // Sort by duration, descending then ascending.
    let durations = "[...document.querySelectorAll('#list-body tr[data-event-id]')].map(r => Number(r.children[5].textContent.replace(/[^0-9]/g, '')))";
    browser
        .eval(&click("th button[data-sort='DURATION']"))
        .await;
    browser
        .wait_for(
            &format!("location.search.includes('sort=DURATION') && !location.search.includes('dir=ASC') && {LIST_READY}
              && document.querySelector('th[aria-sort]').textContent.startsWith('Duration')
              && document.querySelector('th[aria-sort]').getAttribute('aria-sort') === 'descending'"),
            "the duration sort (descending)",
            &shots,
        )
        .await;
    let descending = browser.eval(durations).await;
    let descending: Vec<i64> = serde_json::from_value(descending).unwrap();
    assert_eq!(descending.len(), 3);
    assert!(
        descending.windows(2).all(|w| w[0] >= w[1]),
        "{descending:?}"
    );
    browser
        .eval(&click("th button[data-sort='DURATION']"))
        .await;
    browser
        .wait_for(
            &format!(
                "location.search.includes('dir=ASC') && {LIST_READY}
              && document.querySelector('th[aria-sort]').getAttribute('aria-sort') === 'ascending'"
            ),
            "the duration sort (ascending)",
            &shots,
        )
        .await;
    let ascending: Vec<i64> = serde_json::from_value(browser.eval(durations).await).unwrap();
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]), "{ascending:?}");

    // The tasks table: the failed e-mail tasks, and the drawer of one with its error.
    browser.eval(&click("#tab-tasks")).await;
    browser
        .wait_for(
            &format!("location.search.includes('tab=tasks') && {LIST_SETTLED}"),
            "the tasks tab",
            &shots,
        )
        .await;
    browser
        .eval(&format!(
            "(() => {{ for (const o of document.getElementById('f-kinds').options) o.selected = o.value === '{SIGN_UP_EMAIL}';
               document.getElementById('f-status').value = '{task_status}';
               document.getElementById('apply-filters').click(); return true; }})()"
        ))
        .await;
    browser
        .wait_for(
            &format!("location.search.includes('kinds=') && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-task-id]').length === 3
              && [...document.querySelectorAll('#list-body tr[data-task-id]')].every(r => r.dataset.status === '{task_status}' && r.dataset.kind === '{SIGN_UP_EMAIL}')"),
            "the failed e-mail tasks",
            &shots,
        )
        .await;
    let task_id = browser
        .eval("document.querySelector('#list-body tr[data-task-id]').dataset.taskId")
        .await;
    let task_id = task_id.as_str().unwrap().to_owned();
    let opener = format!("#list-body tr[data-task-id='{task_id}'] td.open button");
    let history_before = browser.eval("history.length").await;
    browser.eval(&click(&opener)).await;
    browser
        .wait_for(
            &format!("!document.getElementById('drawer').hidden && document.getElementById('drawer').dataset.state === 'ready'
              && document.getElementById('drawer').contains(document.activeElement)
              && location.search.includes('event=')
              && document.querySelector('#drawer-body .task[data-status={task_status}]') !== null
              && document.getElementById('drawer-body').innerText.includes({error})",
              error = serde_json::to_string(&last_error).unwrap()),
            "the drawer with the task's error",
            &shots,
        )
        .await;
    // The error, every attempt, the metadata and the payload are shown.
    let drawer = browser
        .eval("document.getElementById('drawer-body').innerText")
        .await;
    let drawer = drawer.as_str().unwrap();
    assert!(
        drawer.contains(&last_error),
        "the drawer shows the error:\n{drawer}"
    );
    assert!(
        drawer.contains("Payload") && drawer.contains("applicant"),
        "{drawer}"
    );
    assert!(
        drawer.contains("Actor") && drawer.contains("public"),
        "{drawer}"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = $1")
        .bind(task_id.parse::<i64>().unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let shown = browser
        .eval(&format!("document.querySelectorAll('#drawer-body .task[data-task-id=\"{task_id}\"] tbody tr').length"))
        .await;
    assert_eq!(shown, json!(attempts), "every attempt is listed");
    browser.screenshot(&shots.join("03-drawer-error.png")).await;

    // Escape closes the drawer and gives the focus back to the row that opened it.
    browser.press("Escape").await;
    browser
        .wait_for(
            &format!(
                "document.getElementById('drawer').hidden && !location.search.includes('event=')
              && document.activeElement === document.querySelector(\"{opener}\")"
            ),
            "Escape to close the drawer and restore the focus",
            &shots,
        )
        .await;
    // Closing went back over the drawer's history entry instead of adding one, so the
    // back button does not reopen the drawer: one entry more than before opening it.
    assert_eq!(
        browser.eval("history.length").await,
        json!(history_before.as_i64().unwrap() + 1),
        "opening and closing the drawer adds one history entry, not two"
    );

    // Mail works again; reprocess the event from the drawer and watch its copy succeed.
    let smtp = support::smtp::accept_on(smtp_port).await;
    browser.eval(&click(&opener)).await;
    browser
        .wait_for(
            "document.getElementById('drawer').dataset.state === 'ready'",
            "the drawer again",
            &shots,
        )
        .await;
    browser.eval(&click("#drawer-reprocess")).await;
    browser
        .wait_for(
            "document.querySelector('#lineage li[data-copy-id][data-status=\"succeeded\"]') !== null",
            "the reprocessed copy to succeed",
            &shots,
        )
        .await;
    assert!(
        smtp.received.load(Ordering::SeqCst) >= 1,
        "the copy's e-mail reached the SMTP server"
    );
    browser
        .eval("document.getElementById('lineage').scrollIntoView({ block: 'center' }), true")
        .await;
    browser.screenshot(&shots.join("04-reprocessed.png")).await;
    browser.press("Escape").await;
    browser
        .wait_for(
            "document.getElementById('drawer').hidden",
            "the drawer to close",
            &shots,
        )
        .await;

    // Bulk reprocess of the filtered events: preview, confirm, progress to 100 %.
    browser.eval(&click("#tab-events")).await;
    browser
        .wait_for(
            &format!("!location.search.includes('tab=') && {LIST_SETTLED}"),
            "the events tab",
            &shots,
        )
        .await;
    browser
        .eval(&format!(
            "(() => {{ for (const o of document.getElementById('f-types').options) o.selected = o.value === '{SIGN_UP}';
               document.getElementById('f-status').value = 'failed';
               document.getElementById('apply-filters').click(); return true; }})()"
        ))
        .await;
    browser
        .wait_for(
            &format!("location.search.includes('status=failed') && {LIST_READY} && document.querySelectorAll('#list-body tr[data-event-id]').length === 3"),
            "the failed sign-ups again",
            &shots,
        )
        .await;
    browser.eval(&click("#bulk-preview")).await;
    browser
        .wait_for(
            "document.getElementById('bulk-panel').dataset.state === 'ready'",
            "the bulk preview",
            &shots,
        )
        .await;
    let preview = browser
        .eval("document.getElementById('bulk-panel').innerText")
        .await;
    let preview = preview.as_str().unwrap();
    // The one reprocessed from the drawer above is resolved by its copy: left out.
    assert_eq!(
        browser
            .eval("document.getElementById('bulk-count').textContent")
            .await,
        json!("2"),
        "{preview}"
    );
    assert!(
        preview.contains("1 matching event was already reprocessed with success")
            && preview.contains("cannot send the sign-up confirmation link again"),
        "{preview}"
    );
    assert!(
        preview.contains(SIGN_UP)
            && preview.contains("failed")
            && preview.contains("What will happen"),
        "{preview}"
    );
    browser.screenshot(&shots.join("05-bulk-preview.png")).await;
    browser.eval(&click("#bulk-confirm")).await;
    browser
        .wait_for(
            "document.getElementById('job-panel').dataset.status === 'done' && document.getElementById('job-panel').dataset.percent === '100'",
            "the bulk job to reach 100 %",
            &shots,
        )
        .await;
    assert!(
        location_has(&browser, "status=failed").await,
        "the same filtered view"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('job-panel').dataset.via")
            .await,
        json!("subscription"),
        "the progress came over the GraphQL subscription"
    );
    browser.screenshot(&shots.join("06-bulk-done.png")).await;

    // The URL restores the view after a reload, and the back button after a tab change.
    browser.send("Page.reload", json!({})).await;
    let restored = format!(
        "{LIST_READY} && document.getElementById('f-status').value === 'failed'
          && [...document.getElementById('f-types').selectedOptions].map(o => o.value).join() === '{SIGN_UP}'
          && document.getElementById('tab-events').getAttribute('aria-selected') === 'true'
          && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.type === '{SIGN_UP}')"
    );
    browser
        .wait_for(&restored, "the filters restored after reload", &shots)
        .await;
    browser.eval(&click("#tab-tasks")).await;
    browser
        .wait_for(
            &format!("location.search.includes('tab=tasks') && {LIST_SETTLED}"),
            "the tasks tab",
            &shots,
        )
        .await;
    browser.eval("history.back(), true").await;
    browser
        .wait_for(&restored, "the filters restored by the back button", &shots)
        .await;

    // A filter the page cannot resolve (issue #23: the institution filter takes a full
    // id, the short id the table shows or a name) is refused beside its field, and the
    // list cannot be paged on.
    browser
        .eval("(() => { document.getElementById('f-institution').value = 'not-a-uuid'; document.getElementById('apply-filters').click(); return true; })()")
        .await;
    browser
        .wait_for(
            "!document.getElementById('f-institution-error').hidden
              && document.getElementById('f-institution-error').textContent.includes('no institution')
              && document.getElementById('f-institution').getAttribute('aria-invalid') === 'true'
              && document.getElementById('next-page').disabled",
            "the institution filter's error beside the field",
            &shots,
        )
        .await;
    // One the API refuses (a hand-edited address) says what happened: the API's message
    // and code, in the list and on top; Next stays disabled.
    browser
        .eval("(history.pushState(null, '', '/admin?institution=not-a-uuid'), dispatchEvent(new PopStateEvent('popstate')), true)")
        .await;
    browser
        .wait_for(
            "document.getElementById('list').dataset.state === 'error'
              && document.getElementById('list-body').innerText.includes('VALIDATION')
              && !document.getElementById('notice').hidden
              && document.getElementById('notice').textContent.includes('VALIDATION')
              && document.getElementById('next-page').disabled",
            "the error state of a bad filter",
            &shots,
        )
        .await;
    browser.eval(&click("#clear-filters")).await;
    browser
        .wait_for(&format!("{LIST_READY} && document.getElementById('notice').hidden && location.search === ''"), "the cleared filters", &shots)
        .await;

    // Projections: status, and a rebuild followed to the end.
    browser.eval(&click("#tab-projections")).await;
    browser
        .wait_for(
            "!document.getElementById('projections-panel').hidden && document.querySelectorAll('#projections-body tr[data-projection]').length >= 5",
            "the projections",
            &shots,
        )
        .await;
    browser
        .eval(&click("[data-rebuild='course_capacity']"))
        .await;
    browser
        .wait_for(
            "document.querySelector(\"[data-projection='course_capacity'] [data-rebuild-state='done']\") !== null",
            "the rebuild to finish",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("07-projections.png")).await;

    // Webhooks: an endpoint with its health, and the (empty) message log.
    let (endpoint, _) = aula_processor::webhooks::endpoints::create(
        &db.pool,
        &aula_processor::webhooks::WebhookConfig::default(),
        aula_processor::webhooks::NewEndpoint {
            institution_id: None,
            url: "https://93.184.216.34/aula-hooks".into(),
            event_types: Some(vec!["EmailChangeRequested".into()]),
            description: "dashboard test".into(),
            created_by: "system".into(),
            created_by_user: None,
            signature_scheme: aula_processor::webhooks::SignatureScheme::V1,
        },
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await
    .unwrap();
    browser.eval(&click("#tab-webhooks")).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('webhooks-panel').hidden \
                 && document.querySelector(\"#webhook-endpoints-body tr[data-endpoint='{}'] .signing\")?.textContent === 'v1' \
                 && document.getElementById('webhook-messages-body').textContent.includes('No message matches')",
                endpoint.id
            ),
            "the webhooks tab",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("07b-webhooks.png")).await;

    // A phone-sized screen.
    browser.viewport(390, 844, true).await;
    browser.eval(&click("#tab-events")).await;
    browser
        .wait_for(&format!("{LIST_READY} && document.querySelectorAll('#list-body tr[data-event-id]').length > 0"), "the events on a phone", &shots)
        .await;
    let overflow = browser
        .eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(
        overflow,
        json!(true),
        "the page fits a phone's width (the table scrolls inside its box)"
    );
    browser.screenshot(&shots.join("08-phone.png")).await;
    browser
        .eval(&click("#list-body tr[data-event-id] td.open button"))
        .await;
    browser
        .wait_for(
            "document.getElementById('drawer').dataset.state === 'ready'",
            "the drawer on a phone",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("09-phone-drawer.png")).await;

    // A manager: same page, its institution only, no admin-only parts. Its sign-up
    // e-mail is refused so the one-time token stays where the test can read it.
    browser.press("Escape").await;
    smtp.refuse.store(true, Ordering::SeqCst);
    let manager_email = "manager@escola.test";
    let signed_up = graphql(
        &client,
        &base,
        "mutation($input: SignUpInput!) { signUp(input: $input) { accepted } }",
        json!({ "input": { "email": manager_email } }),
    )
    .await;
    assert!(signed_up["errors"].is_null(), "{signed_up}");
    poll_db(
        &db.pool,
        &format!(
            "SELECT count(*) FROM admin_events a JOIN events e USING (event_id)
             WHERE e.payload->>'email' = '{manager_email}' AND a.status = 'failed'"
        ),
        1,
        "the manager's refused sign-up e-mail",
    )
    .await;
    let raw_token: String = sqlx::query_scalar(
        "SELECT p.raw_token FROM pending_tokens p JOIN events e ON e.payload->>'token_hash' = p.token_hash
         WHERE e.payload->>'email' = $1",
    )
    .bind(manager_email)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let confirmed = graphql(
        &client,
        &base,
        "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { institutionId } }",
        json!({ "input": { "email": manager_email, "token": raw_token, "name": "Maria Manager",
                           "password": PASSWORD, "institutionName": "Escola Norte" } }),
    )
    .await;
    let institution = confirmed["data"]["confirmSignUp"]["institutionId"]
        .as_str()
        .unwrap_or_else(|| panic!("confirmSignUp failed: {confirmed}"))
        .to_owned();
    browser.viewport(1280, 900, false).await;
    browser.eval(&click("#logout")).await;
    browser.navigate(&format!("{base}/admin")).await;
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden",
            "the login form again",
            &shots,
        )
        .await;
    sign_in(&browser, manager_email).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('app-view').hidden && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length > 0"
            ),
            "the manager's events",
            &shots,
        )
        .await;
    let scoped = browser
        .eval(&format!(
            "[...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.institution === '{institution}')
             && document.getElementById('tab-projections').hidden && !document.getElementById('summary').hidden
             && document.getElementById('field-institution').hidden"
        ))
        .await;
    assert_eq!(
        scoped,
        json!(true),
        "a manager sees its institution only (its own header) and no admin-only parts"
    );
    browser.screenshot(&shots.join("10-manager.png")).await;

    // Back as the admin: the whole picture (the overview in docs/dashboard.png).
    browser.eval(&click("#logout")).await;
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden",
            "the login form (admin)",
            &shots,
        )
        .await;
    sign_in(&browser, admin_email).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('app-view').hidden && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length === 25
              && !document.getElementById('next-page').disabled
              && /events\\/h/.test(document.getElementById('rate').textContent)"
            ),
            "the admin's full list",
            &shots,
        )
        .await;
    browser.eval("window.scrollTo(0, 0), true").await;
    browser.screenshot(&shots.join("11-overview.png")).await;
    // Cursor pages: the second page continues where the first stopped.
    let first_page = browser
        .eval("[...document.querySelectorAll('#list-body tr[data-event-id]')].map(r => Number(r.children[0].textContent))")
        .await;
    browser.eval(&click("#next-page")).await;
    browser
        .wait_for(
            &format!(
                "{LIST_READY} && document.getElementById('page-info').textContent === 'Page 2'"
            ),
            "page 2",
            &shots,
        )
        .await;
    let second_page = browser
        .eval("[...document.querySelectorAll('#list-body tr[data-event-id]')].map(r => Number(r.children[0].textContent))")
        .await;
    let (first_page, second_page): (Vec<i64>, Vec<i64>) = (
        serde_json::from_value(first_page).unwrap(),
        serde_json::from_value(second_page).unwrap(),
    );
    assert!(!second_page.is_empty());
    assert!(
        first_page.windows(2).all(|w| w[0] > w[1]) && first_page.last() > second_page.first(),
        "newest first across pages: {first_page:?} then {second_page:?}"
    );
    browser.eval(&click("#prev-page")).await;
    browser
        .wait_for(
            &format!(
                "{LIST_READY} && document.getElementById('page-info').textContent === 'Page 1'"
            ),
            "page 1 again",
            &shots,
        )
        .await;

    // A link to one event opens its drawer; retrying its dead task (mail works again)
    // adds a task that succeeds, and the dead one keeps its history.
    smtp.refuse.store(false, Ordering::SeqCst);
    let manager_sign_up: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND payload->>'email' = $2",
    )
    .bind(SIGN_UP)
    .bind(manager_email)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    browser
        .navigate(&format!("{base}/admin?event={manager_sign_up}"))
        .await;
    browser
        .wait_for(
            "document.getElementById('drawer').dataset.state === 'ready'
              && document.querySelector('#drawer-body .task[data-status=dead] [data-retry]') !== null",
            "the drawer from a link",
            &shots,
        )
        .await;
    browser
        .eval(&click("#drawer-body .task[data-status=dead] [data-retry]"))
        .await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#drawer-body .task[data-status=succeeded]')].some(t => t.textContent.includes('retry of #'))
              && document.querySelector('#drawer-body .task[data-status=dead]') !== null",
            "the retried task to succeed",
            &shots,
        )
        .await;
    browser
        .eval("document.querySelector('#drawer-body .task[data-status=succeeded]').scrollIntoView({ block: 'center' }), true")
        .await;
    browser.screenshot(&shots.join("12-retried.png")).await;

    // The session ends while the page is open (another admin deactivates this one): the
    // page signs out by itself instead of polling and reconnecting with a refused token.
    let other_admin = "admin2@aula.test";
    aula_api::create_admin(&db.pool, other_admin, PASSWORD)
        .await
        .unwrap();
    let login = graphql(
        &client,
        &base,
        "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
        json!({ "input": { "email": other_admin, "password": PASSWORD } }),
    )
    .await;
    let other_token = login["data"]["login"]["accessToken"].as_str().unwrap();
    let deactivated: Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(other_token)
        .json(&json!({
            "query": "mutation($input: DeactivateUserInput!) { deactivateUser(input: $input) { id } }",
            "variables": { "input": { "userId": admin_id, "reason": "left" } },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(deactivated["errors"].is_null(), "{deactivated}");
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden
              && document.getElementById('app-view').hidden
              && document.getElementById('notice').textContent.includes('Your session ended')",
            "the page to sign out when its session ended",
            &shots,
        )
        .await;

    let errors = browser.page_errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "the page reported errors: {errors:?}");
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}

/// Types the credentials into the login form, as a person would, and submits it.
async fn sign_in(browser: &Browser, email: &str) {
    browser.eval("(() => { const e = document.getElementById('login-email'); e.value = ''; e.focus(); return true; })()").await;
    browser.type_text(email).await;
    browser
        .eval("document.getElementById('login-password').focus()")
        .await;
    browser.type_text(PASSWORD).await;
    browser.eval(&click("#login-submit")).await;
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
