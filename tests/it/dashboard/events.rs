//! The events list: filters, sorts, a bulk reprocess of what is filtered, cursor pages.

use super::*;

/// Filtering by type and status, then sorting by duration both ways.
pub(super) async fn filter_and_sort(scene: Scene<'_>) {
    let Scene { browser, shots, .. } = scene;
    // Filter by type and status: the URL carries them.
    filter_failed_sign_ups(browser).await;
    browser
        .wait_for(
            &format!("location.search.includes('types={SIGN_UP}') && location.search.includes('status=failed') && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length === 3
              && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.type === '{SIGN_UP}' && r.dataset.status === 'failed')"),
            "the filtered events",
            shots,
        )
        .await;
    browser.screenshot(&shots.join("02-filtered.png")).await;

    // Sort by duration, descending then ascending.
    let durations = "[...document.querySelectorAll('#list-body tr[data-event-id]')].map(r => Number(r.children[5].textContent.replace(/[^0-9]/g, '')))";
    browser
        .click_then_wait(
            "th button[data-sort='DURATION']",
            &format!("location.search.includes('sort=DURATION') && !location.search.includes('dir=ASC') && {LIST_READY}
              && document.querySelector('th[aria-sort]').textContent.startsWith('Duration')
              && document.querySelector('th[aria-sort]').getAttribute('aria-sort') === 'descending'"),
            "the duration sort (descending)",
            shots,
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
        .click_then_wait(
            "th button[data-sort='DURATION']",
            &format!(
                "location.search.includes('dir=ASC') && {LIST_READY}
              && document.querySelector('th[aria-sort]').getAttribute('aria-sort') === 'ascending'"
            ),
            "the duration sort (ascending)",
            shots,
        )
        .await;
    let ascending: Vec<i64> = serde_json::from_value(browser.eval(durations).await).unwrap();
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]), "{ascending:?}");
}

/// A bulk reprocess of the filtered events: preview, confirm, progress to 100 %.
pub(super) async fn bulk_reprocess(scene: Scene<'_>) {
    let Scene { browser, shots, .. } = scene;
    // Bulk reprocess of the filtered events: preview, confirm, progress to 100 %.
    browser
        .click_then_wait(
            "#tab-events",
            &format!("!location.search.includes('tab=') && {LIST_SETTLED}"),
            "the events tab",
            shots,
        )
        .await;
    filter_failed_sign_ups(browser).await;
    browser
        .wait_for(
            &format!("location.search.includes('status=failed') && {LIST_READY} && document.querySelectorAll('#list-body tr[data-event-id]').length === 3"),
            "the failed sign-ups again",
            shots,
        )
        .await;
    browser
        .click_then_wait(
            "#bulk-preview",
            "document.getElementById('bulk-panel').dataset.state === 'ready'",
            "the bulk preview",
            shots,
        )
        .await;
    let preview = browser.text_of("bulk-panel").await;
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
    browser
        .click_then_wait(
            "#bulk-confirm",
            "document.getElementById('job-panel').dataset.status === 'done' && document.getElementById('job-panel').dataset.percent === '100'",
            "the bulk job to reach 100 %",
            shots,
        )
        .await;
    assert!(
        location_has(browser, "status=failed").await,
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
}

/// Cursor pages: the second page continues where the first stopped.
pub(super) async fn cursor_pages(scene: Scene<'_>) {
    let Scene { browser, shots, .. } = scene;
    // Cursor pages: the second page continues where the first stopped.
    let first_page = browser
        .eval("[...document.querySelectorAll('#list-body tr[data-event-id]')].map(r => Number(r.children[0].textContent))")
        .await;
    browser
        .click_then_wait(
            "#next-page",
            &format!(
                "{LIST_READY} && document.getElementById('page-info').textContent === 'Page 2'"
            ),
            "page 2",
            shots,
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
    browser
        .click_then_wait(
            "#prev-page",
            &format!(
                "{LIST_READY} && document.getElementById('page-info').textContent === 'Page 1'"
            ),
            "page 1 again",
            shots,
        )
        .await;
}
