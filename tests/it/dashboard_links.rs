//! Hand-edited and shared addresses of the dashboard in headless Chromium against the
//! whole service: every URL parameter the page reads is checked before it reaches a
//! GraphQL variable. An institution given by name is resolved to its id; one that
//! names no institution, or a search too short, is said beside its field and no list
//! loads; any other value the page cannot use (a date that is not one, an unknown tab,
//! sort, status, range or event id) is left out of the address and said in
//! `#url-hints`. The API's parser's words ("Failed to parse …") never show. And no page
//! of ours (dashboard, account pages, GraphiQL) logs an error, not even a missing icon.
//! Screenshots go to `target/dashboard-links-screenshots/`.

use crate::support;

use std::time::Duration;

use support::cdp::Browser;
use support::dashboard::{escola_norte, sign_in, stage, Stage, LIST_READY, LIST_SETTLED};
use support::sign_up;

const PASSWORD: &str = "dashboard password 1";

/// What the API's parser says about a value of the wrong shape: never on the page.
const NO_PARSER_TEXT: &str =
    "!/Failed to parse|occurred while parsing/.test(document.body.innerText)";

/// The `#url-hints` box shows, and says each of `texts`.
fn hints_say(texts: &[&str]) -> String {
    let texts = serde_json::to_string(texts).unwrap();
    format!(
        "!document.getElementById('url-hints').hidden
          && {texts}.every(t => document.getElementById('url-hints').textContent.includes(t))"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_edited_addresses_give_hints_not_parser_errors_in_chromium() {
    support::alone_in_own_process!(hand_edited_addresses_give_hints_not_parser_errors_in_chromium);
    let Stage {
        shots, db, service, ..
    } = stage("dashboard-links-screenshots").await;
    let base = service.base.clone();
    let client = reqwest::Client::new();
    let admin_email = "admin@aula.test";
    aula_api::create_admin(&db.pool, admin_email, PASSWORD)
        .await
        .unwrap();
    // An institution to find by name: its manager's sign-up, confirmed.
    let institution = escola_norte(&client, &base, &db.pool, PASSWORD).await;
    sign_up(&client, &base, "applicant@escola.test").await;
    support::poll_db(
        &db.pool,
        &format!(
            "SELECT least(count(*), 1) FROM admin_events WHERE institution_id = '{institution}' AND status <> 'pending'"
        ),
        1,
        "a processed event of the institution",
    )
    .await;

    let browser = Browser::start().await;
    browser.viewport(1280, 900, false).await;
    support::dashboard::open_login(&browser, &format!("{base}/admin"), &shots).await;
    sign_in(&browser, admin_email, PASSWORD).await;
    browser
        .wait_for(
            &format!("!document.getElementById('app-view').hidden && {LIST_READY}"),
            "the events list after login",
            &shots,
        )
        .await;

    // A name in the address is resolved to the institution's id, as in the field.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?institution=Escola"),
            &format!(
                "{LIST_READY} && {NO_PARSER_TEXT}
                  && location.search === '?institution={institution}'
                  && document.getElementById('f-institution').value === '{institution}'
                  && document.getElementById('f-institution-error').hidden
                  && document.getElementById('url-hints').hidden
                  && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.institution === '{institution}')"
            ),
            "the institution named in the address, resolved",
            &shots,
        )
        .await;
    // So is the short id the table shows.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?tab=tasks&institution={}", &institution[..8]),
            &format!(
                "{LIST_SETTLED} && {NO_PARSER_TEXT}
                  && location.search === '?tab=tasks&institution={institution}'"
            ),
            "the short id in the address, resolved",
            &shots,
        )
        .await;

    // What names no institution is said beside the field; no list, Next disabled.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?institution=Nowhere%20School"),
            &format!(
                "document.getElementById('list').dataset.state === 'refused' && {NO_PARSER_TEXT}
                  && !document.getElementById('f-institution-error').hidden
                  && document.getElementById('f-institution-error').textContent.includes('no institution')
                  && document.getElementById('f-institution').value === 'Nowhere School'
                  && document.getElementById('f-institution').getAttribute('aria-invalid') === 'true'
                  && document.getElementById('list-body').innerText.includes('marked beside their fields')
                  && document.getElementById('next-page').disabled
                  && document.getElementById('notice').hidden"
            ),
            "the hint of an institution that is not one",
            &shots,
        )
        .await;
    browser
        .screenshot(&shots.join("01-no-institution.png"))
        .await;
    // A refresh does not send it either, and a bulk reprocess is not offered over it.
    browser
        .click_then_wait(
            "#refresh-list",
            &format!(
                "document.getElementById('list').dataset.state === 'refused' && {NO_PARSER_TEXT}"
            ),
            "the refused list, refreshed",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            "#bulk-preview",
            &format!(
                "document.getElementById('bulk-panel').dataset.state === 'refused' && {NO_PARSER_TEXT}
                  && !document.getElementById('bulk-confirm')"
            ),
            "no bulk reprocess over a refused filter",
            &shots,
        )
        .await;

    // A date that is not one is left out, said, and the rest of the view applies.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?createdFrom=garbage&status=failed"),
            &format!(
                "{LIST_SETTLED} && {NO_PARSER_TEXT} && {}
                  && location.search === '?status=failed'
                  && document.getElementById('f-status').value === 'failed'
                  && document.getElementById('f-created-from').value === ''",
                hints_say(&["createdFrom “garbage”", "not a date and time"])
            ),
            "the hint of a date that is not one",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("02-not-a-date.png")).await;

    // Every other parameter the page reads, garbage at once: each is said, none sent.
    let garbage = "tab=nope&sort=NOPE&dir=sideways&status=zzz&createdTo=2026-13-45T99:99\
        &processedFrom=yesterday&processedTo=1e9&durationOp=ABOUT&durationMs=abc&failed=maybe\
        &priority=1.5&range=forever&event=not-an-id";
    browser
        .navigate_then_wait(
            &format!("{base}/admin?{garbage}"),
            &format!(
                "{LIST_READY} && {NO_PARSER_TEXT} && {}
                  && location.search === ''
                  && document.getElementById('tab-events').getAttribute('aria-selected') === 'true'
                  && document.getElementById('drawer').hidden
                  && document.getElementById('notice').hidden",
                hints_say(&[
                    "tab “nope”",
                    "sort “NOPE”",
                    "dir “sideways”",
                    "status “zzz”",
                    "createdTo “2026-13-45T99:99”",
                    "processedFrom “yesterday”",
                    "processedTo “1e9”",
                    "durationOp “ABOUT”",
                    "durationMs “abc”",
                    "failed “maybe”",
                    "priority “1.5”",
                    "range “forever”",
                    "event “not-an-id”",
                ])
            ),
            "the hints of every garbage parameter",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("03-garbage.png")).await;
    // A sort of the other list is not one of this list's; a task status stays (the
    // address keeps the status across tabs).
    browser
        .navigate_then_wait(
            &format!("{base}/admin?tab=tasks&sort=POSITION&status=dead"),
            &format!(
                "{LIST_SETTLED} && {NO_PARSER_TEXT} && {}
                  && location.search === '?tab=tasks&status=dead'",
                hints_say(&["sort “POSITION”", "not a column of this list"])
            ),
            "the hint of the other list's sort",
            &shots,
        )
        .await;
    // A search too short is said beside its field, as the form says it.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?q=ab"),
            &format!(
                "document.getElementById('list').dataset.state === 'refused' && {NO_PARSER_TEXT}
                  && document.getElementById('f-search-error').textContent.includes('at least 3 characters')
                  && document.getElementById('next-page').disabled"
            ),
            "the hint of a search too short",
            &shots,
        )
        .await;
    // Clearing the filters loads the list again, without a hint.
    browser
        .click_then_wait(
            "#clear-filters",
            &format!(
                "{LIST_READY} && location.search === ''
                  && document.getElementById('f-search-error').hidden
                  && document.getElementById('url-hints').hidden"
            ),
            "the cleared filters",
            &shots,
        )
        .await;

    // The account pages and GraphiQL: a damaged link says so, and no icon is missing.
    browser
        .navigate_then_wait(
            &format!("{base}/confirm-email?token=abc&user=not-a-user"),
            &format!(
                "document.body.innerText.includes('This link is damaged') && {NO_PARSER_TEXT}"
            ),
            "the damaged e-mail link",
            &shots,
        )
        .await;
    browser
        .navigate_then_wait(
            &format!("{base}/"),
            "document.body.innerText.includes('Admin dashboard')",
            "the landing page",
            &shots,
        )
        .await;
    browser
        .navigate_then_wait(
            &format!("{base}/graphql"),
            "Boolean(document.querySelector('.graphiql-container'))",
            "GraphiQL",
            &shots,
        )
        .await;
    // A failed request would be logged by then (the icon is asked for with the page).
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser.assert_clean_console();
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}
