//! The tasks: the drawer of a failed one, reprocessing its event, retrying a dead task.

use super::*;

/// The failed e-mail tasks in the tasks tab, and the drawer of one: its error, its
/// attempts, its history entry. Returns the selector of the button that opened it.
pub(super) async fn open_a_failed_task(
    scene: Scene<'_>,
    task_status: &str,
    last_error: &str,
) -> String {
    let Scene {
        db, browser, shots, ..
    } = scene;
    // The tasks table: the failed e-mail tasks, and the drawer of one with its error.
    open_tasks_tab(browser, shots).await;
    support::dashboard::filter_one_of(browser, "f-kinds", SIGN_UP_EMAIL, task_status).await;
    browser
        .wait_for(
            &format!("location.search.includes('kinds=') && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-task-id]').length === 3
              && [...document.querySelectorAll('#list-body tr[data-task-id]')].every(r => r.dataset.status === '{task_status}' && r.dataset.kind === '{SIGN_UP_EMAIL}')"),
            "the failed e-mail tasks",
            shots,
        )
        .await;
    let task_id = browser
        .eval("document.querySelector('#list-body tr[data-task-id]').dataset.taskId")
        .await;
    let task_id = task_id.as_str().unwrap().to_owned();
    let opener = format!("#list-body tr[data-task-id='{task_id}'] td.open button");
    let history_before = browser.eval("history.length").await;
    browser
        .click_then_wait(
            &opener,
            &format!("!document.getElementById('drawer').hidden && document.getElementById('drawer').dataset.state === 'ready'
              && document.getElementById('drawer').contains(document.activeElement)
              && location.search.includes('event=')
              && document.querySelector('#drawer-body .task[data-status={task_status}]') !== null
              && document.getElementById('drawer-body').innerText.includes({error})",
              error = serde_json::to_string(&last_error).unwrap()),
            "the drawer with the task's error",
            shots,
        )
        .await;
    // The error, every attempt, the metadata and the payload are shown.
    let drawer = browser.text_of("drawer-body").await;
    assert!(
        drawer.contains(last_error),
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
            shots,
        )
        .await;
    // Closing went back over the drawer's history entry instead of adding one, so the
    // back button does not reopen the drawer: one entry more than before opening it.
    assert_eq!(
        browser.eval("history.length").await,
        json!(history_before.as_i64().unwrap() + 1),
        "opening and closing the drawer adds one history entry, not two"
    );
    opener
}

/// With mail working again, the event reprocessed from the drawer and its copy
/// succeeding (later steps refuse and accept again).
pub(super) async fn reprocess_from_the_drawer(
    scene: Scene<'_>,
    smtp: &support::smtp::Smtp,
    opener: &str,
) {
    let Scene { browser, shots, .. } = scene;
    // Mail works again; reprocess the event from the drawer and watch its copy succeed.
    smtp.reject.store(false, Ordering::SeqCst);
    browser
        .click_then_wait(
            opener,
            "document.getElementById('drawer').dataset.state === 'ready'",
            "the drawer again",
            shots,
        )
        .await;
    browser
        .click_then_wait(
            "#drawer-reprocess",
            "document.querySelector('#lineage li[data-copy-id][data-status=\"succeeded\"]') !== null",
            "the reprocessed copy to succeed",
            shots,
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
            shots,
        )
        .await;
}

/// A link to one event opens its drawer; retrying its dead task adds one that
/// succeeds, and the dead one keeps its history.
pub(super) async fn retry_a_dead_task(scene: Scene<'_>, smtp: &support::smtp::Smtp) {
    let Scene {
        db,
        base,
        browser,
        shots,
        ..
    } = scene;
    // A link to one event opens its drawer; retrying its dead task (mail works again)
    // adds a task that succeeds, and the dead one keeps its history.
    smtp.refuse.store(false, Ordering::SeqCst);
    let manager_sign_up: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND payload->>'email' = $2",
    )
    .bind(SIGN_UP)
    .bind(MANAGER_EMAIL)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    browser
        .navigate_then_wait(
            &format!("{base}/admin?event={manager_sign_up}"),
            "document.getElementById('drawer').dataset.state === 'ready'
              && document.querySelector('#drawer-body .task[data-status=dead] [data-retry]') !== null",
            "the drawer from a link",
            shots,
        )
        .await;
    browser
        .click_then_wait(
            "#drawer-body .task[data-status=dead] [data-retry]",
            "[...document.querySelectorAll('#drawer-body .task[data-status=succeeded]')].some(t => t.textContent.includes('retry of #'))
              && document.querySelector('#drawer-body .task[data-status=dead]') !== null",
            "the retried task to succeed",
            shots,
        )
        .await;
    browser
        .eval("document.querySelector('#drawer-body .task[data-status=succeeded]').scrollIntoView({ block: 'center' }), true")
        .await;
    browser.screenshot(&shots.join("12-retried.png")).await;
}
