//! The address bar and the screen: views restored from the URL, refused filters, a
//! phone-sized screen.

use super::*;

/// The URL restores the view; filters the page or the API refuse say so.
pub(super) async fn urls_restore_the_view(scene: Scene<'_>) {
    let Scene { browser, shots, .. } = scene;
    // The URL restores the view after a reload, and the back button after a tab change.
    browser.send("Page.reload", json!({})).await;
    let restored = format!(
        "{LIST_READY} && document.getElementById('f-status').value === 'failed'
          && [...document.getElementById('f-types').selectedOptions].map(o => o.value).join() === '{SIGN_UP}'
          && document.getElementById('tab-events').getAttribute('aria-selected') === 'true'
          && [...document.querySelectorAll('#list-body tr[data-event-id]')].every(r => r.dataset.type === '{SIGN_UP}')"
    );
    browser
        .wait_for(&restored, "the filters restored after reload", shots)
        .await;
    open_tasks_tab(browser, shots).await;
    browser.eval("history.back(), true").await;
    browser
        .wait_for(&restored, "the filters restored by the back button", shots)
        .await;

    // A filter the page cannot resolve (issue #23: the institution filter takes a full
    // id, the short id the table shows or a name) is refused beside its field, and the
    // list cannot be paged on.
    support::dashboard::filter_institution(browser, "not-a-uuid").await;
    browser
        .wait_for(
            "!document.getElementById('f-institution-error').hidden
              && document.getElementById('f-institution-error').textContent.includes('no institution')
              && document.getElementById('f-institution').getAttribute('aria-invalid') === 'true'
              && document.getElementById('next-page').disabled",
            "the institution filter's error beside the field",
            shots,
        )
        .await;
    // One the API refuses (a hand-edited address naming an event type that is not one)
    // says what happened: the API's message and code, in the list and on top; Next
    // stays disabled. (An institution that is not one is the page's to say, beside its
    // field: `dashboard_links.rs`.)
    browser
        .eval("(history.pushState(null, '', '/admin?types=NoSuchType'), dispatchEvent(new PopStateEvent('popstate')), true)")
        .await;
    browser
        .wait_for(
            "document.getElementById('list').dataset.state === 'error'
              && document.getElementById('list-body').innerText.includes('VALIDATION')
              && !document.getElementById('notice').hidden
              && document.getElementById('notice').textContent.includes('VALIDATION')
              && document.getElementById('next-page').disabled",
            "the error state of a bad filter",
            shots,
        )
        .await;
    browser
        .click_then_wait(
            "#clear-filters",
            &format!("{LIST_READY} && document.getElementById('notice').hidden && location.search === ''"),
            "the cleared filters",
            shots,
        )
        .await;
}

/// The page on a phone-sized screen.
pub(super) async fn a_phone_sized_screen(scene: Scene<'_>) {
    let Scene { browser, shots, .. } = scene;
    // A phone-sized screen.
    browser.viewport(390, 844, true).await;
    browser
        .click_then_wait(
            "#tab-events",
            &format!("{LIST_READY} && document.querySelectorAll('#list-body tr[data-event-id]').length > 0"),
            "the events on a phone",
            shots,
        )
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
        .click_then_wait(
            "#list-body tr[data-event-id] td.open button",
            "document.getElementById('drawer').dataset.state === 'ready'",
            "the drawer on a phone",
            shots,
        )
        .await;
    browser.screenshot(&shots.join("09-phone-drawer.png")).await;
}
