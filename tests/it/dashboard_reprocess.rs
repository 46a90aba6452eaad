//! Issue #19 in the dashboard, in real headless Chromium against the whole service: a
//! failed enrollment (its e-mail could not be sent) is reprocessed from the drawer once
//! mail works again, its row and drawer say "resolved by copy", the "failed, not
//! resolved" filter leaves it out and the header counts one unresolved failure less.
//!
//! Chromium is required: without `/usr/bin/chromium` (or `AULA_CHROMIUM`) the test
//! fails, it never passes silently.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::dashboard::{signed_in_browser, stage, Stage, LIST_READY, LIST_SETTLED};

const PASSWORD: &str = "dashboard password 2";
const ENROLLMENT: &str = "EnrollmentRequested";

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_enrollment_reprocessed_from_the_drawer_shows_as_resolved() {
    support::alone_in_own_process!(
        a_failed_enrollment_reprocessed_from_the_drawer_shows_as_resolved
    );
    // The SMTP server rejects every e-mail for now: each fails at once.
    let Stage {
        shots,
        db,
        service,
        smtp,
    } = stage("dashboard-reprocess-screenshots").await;
    let base = service.base.clone();
    aula_api::create_admin(&db.pool, "admin@aula.test", PASSWORD)
        .await
        .unwrap();

    // A new institution: its demo data requests enrollments, whose e-mails fail.
    aula_bench::seed::create_institution(&db.pool, "Escola Reprocesso")
        .await
        .unwrap();
    let failed_sql = format!(
        "SELECT count(*) FROM admin_events WHERE event_type = '{ENROLLMENT}' AND status = 'failed'"
    );
    let within = Duration::from_secs(90);
    let failed = support::eventually(within, Duration::from_millis(200), || async {
        let failed = db.scalar(&failed_sql).await;
        let open = db
            .scalar("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')")
            .await;
        (failed > 0 && open == 0).then_some(failed).ok_or(format!(
            "no failed enrollment ({failed} failed, {open} tasks open)"
        ))
    })
    .await;

    // The header counts every failed event (the other e-mails failed too).
    let all_failed = db
        .scalar("SELECT count(*) FROM admin_events WHERE status = 'failed'")
        .await;
    let url = format!("{base}/admin?types={ENROLLMENT}&status=unresolved");
    let browser = signed_in_browser(&url, (1280, 900), "admin@aula.test", PASSWORD, &shots).await;
    let rows = "document.querySelectorAll('#list-body tr[data-event-id]').length";
    browser
        .wait_for(
            &format!("{LIST_READY} && {rows} === {failed}"),
            "the failed, unresolved enrollments",
            &shots,
        )
        .await;
    browser
        .wait_for(
            &format!(
                "document.getElementById('unresolved-failures').textContent === '{all_failed}'"
            ),
            "the header's unresolved failures",
            &shots,
        )
        .await;

    // Mail works again: reprocess the first one from its drawer.
    smtp.reject.store(false, Ordering::SeqCst);
    let original = browser
        .eval("document.querySelector('#list-body tr[data-event-id]').dataset.eventId")
        .await;
    let original = original.as_str().unwrap().to_owned();
    browser
        .click_then_wait(
            &format!("#list-body tr[data-event-id='{original}'] td.open button"),
            "document.getElementById('drawer').dataset.state === 'ready'
              && document.getElementById('drawer-reprocessing').textContent.includes('never reprocessed')",
            "the drawer of the failed enrollment",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            "#drawer-reprocess",
            "document.getElementById('drawer-copy-outcome') !== null
              && document.getElementById('drawer-copy-outcome').dataset.resolved === 'true'
              && document.getElementById('drawer-copy-outcome').textContent === 'resolved by copy'",
            "the drawer to say the copy resolved it",
            &shots,
        )
        .await;
    assert!(
        smtp.received.load(Ordering::SeqCst) >= 1,
        "the copy's e-mail reached the SMTP server"
    );
    browser
        .screenshot(&shots.join("01-resolved-by-copy.png"))
        .await;
    browser.press("Escape").await;

    // The list of unresolved failures no longer holds it; "failed" still does, saying
    // it was resolved by its copy; the header counts one unresolved failure less.
    browser.eval("location.reload(), true").await;
    browser
        .wait_for(
            &format!(
                "{LIST_SETTLED} && document.querySelector(\"#list-body tr[data-event-id='{original}']\") === null"
            ),
            "the unresolved list without it",
            &shots,
        )
        .await;
    browser
        .wait_for(
            &format!(
                "document.getElementById('unresolved-failures').textContent === '{} (1 resolved by copy)'",
                all_failed - 1
            ),
            "the header's count",
            &shots,
        )
        .await;
    browser
        .navigate_then_wait(
            &format!("{base}/admin?types={ENROLLMENT}&status=failed"),
            &format!(
                "{LIST_READY} && document.querySelector(\"#list-body tr[data-event-id='{original}']\") !== null
                  && document.querySelector(\"#list-body tr[data-event-id='{original}']\").textContent.includes('resolved by copy')"
            ),
            "the failed list showing it resolved by copy",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("02-failed-list.png")).await;
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}
