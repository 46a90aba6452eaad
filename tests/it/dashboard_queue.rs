//! The dashboard's queue controls (issue #19) in headless Chromium against the whole
//! service: a sign-up e-mail that cannot be sent is `retrying` (filter, header count,
//! next run), its kind is paused from the Tasks tab (a new task of it is parked, never
//! run), a parked task is cancelled from the drawer after an inline confirmation, the
//! other's priority changed, the kind resumed, and a task stuck running force-released.
//! Every control leaves its row in `queueControlLog`.
//!
//! Chromium is required: without `/usr/bin/chromium` (or `AULA_CHROMIUM`) the test
//! fails, it never passes silently.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use serde_json::json;
use support::dashboard::{signed_in_browser, LIST_READY};
use support::service::Service;
use support::{free_port, graphql_as, login, poll_db};

const PASSWORD: &str = "dashboard password 1";
const KIND: &str = "email.signup_confirmation";

fn screenshots() -> PathBuf {
    support::screenshot_dir("dashboard-queue-screenshots")
}

/// The id of the sign-up task of `email`.
async fn task_of(pool: &sqlx::PgPool, email: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT t.id FROM tasks t JOIN events e ON e.event_id = t.event_id
         WHERE t.kind = $1 AND e.payload->>'email' = $2",
    )
    .bind(KIND)
    .bind(email)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Column `column` of task `id`, as the database has it now.
async fn task_column<T>(pool: &sqlx::PgPool, column: &str, id: i64) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(&format!("SELECT {column} FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_retrying_tasks_and_cancels_releases_reprioritizes_and_pauses() {
    support::alone_in_own_process!(
        the_dashboard_shows_retrying_tasks_and_cancels_releases_reprioritizes_and_pauses
    );
    let shots = screenshots();
    support::cdp::require_chromium();

    let db = TestDatabase::new().await;
    // Nothing listens on the SMTP port (a relay outage): each e-mail's attempt fails, is
    // not counted, and waits ten minutes for its retry, so it stays `retrying` for the
    // whole test.
    support::mail_to_port(free_port(), 600_000, 600_000);
    let service = Service::start(&db, |args| args.token_ttl_minutes = 60).await;
    let base = service.base.clone();
    let client = reqwest::Client::new();
    let admin_email = "queue-admin@aula.test";
    aula_api::create_admin(&db.pool, admin_email, PASSWORD)
        .await
        .unwrap();
    // Signs `email` up, waits until `expected` sign-up tasks match `condition`, and
    // returns the id of the new one.
    let sign_up_until = |email: &'static str, condition: &'static str, expected: i64| {
        let (client, base, pool) = (&client, &base, &db.pool);
        async move {
            support::sign_up(client, base, email).await;
            let sql = format!("SELECT count(*) FROM tasks WHERE kind = '{KIND}' AND {condition}");
            let what = format!("{expected} sign-up e-mail(s) with {condition}");
            poll_db(pool, &sql, expected, &what).await;
            task_of(pool, email).await
        }
    };
    // The first e-mail waits for its retry.
    let first_waits = "status = 'pending' AND last_error IS NOT NULL";
    let first = sign_up_until("first@escola.test", first_waits, 1).await;

    let url = format!("{base}/admin?tab=tasks&status=retrying");
    let browser = signed_in_browser(&url, (1280, 900), admin_email, PASSWORD, &shots).await;

    // Retrying: filtered, with its next run ten minutes ahead, and counted in the header.
    browser
        .wait_for(
            &format!("{LIST_READY} && document.querySelectorAll('#list-body tr[data-task-id]').length === 1
              && document.querySelector('#list-body tr[data-task-id=\"{first}\"]').dataset.status === 'retrying'
              && document.getElementById('task-counts').textContent.includes('1 retrying')"),
            "the retrying task, filtered and counted",
            &shots,
        )
        .await;
    let next_run = browser
        .eval("document.querySelector('#list-body tr[data-task-id]').cells[9].textContent")
        .await;
    assert_ne!(next_run, json!("–"), "the next run time is shown");
    browser.screenshot(&shots.join("01-retrying.png")).await;

    // Pause the kind from the panel: the retrying task is held.
    browser
        .wait_for(
            &format!("document.getElementById('paused-panel').dataset.state === 'ready'
              && [...document.getElementById('pause-kind').options].some(o => o.value === '{KIND}')"),
            "the pause form",
            &shots,
        )
        .await;
    browser
        .eval(&format!(
            "(() => {{ document.getElementById('pause-kind').value = '{KIND}'; return true; }})()"
        ))
        .await;
    browser
        .click_then_wait(
            "#pause-submit",
            &format!(
                "(() => {{ const li = document.querySelector('[data-paused-kind=\"{KIND}\"]');
              return li && li.textContent.includes('1 waiting')
                && document.activeElement === li.querySelector('[data-resume]'); }})()"
            ),
            "the paused kind with one task waiting, its Resume button focused",
            &shots,
        )
        .await;
    // A task of the paused kind issued now is parked by the workers, never run.
    // Both e-mails parked.
    let second = sign_up_until("second@escola.test", "status = 'paused'", 2).await;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM task_attempts WHERE task_id = $1")
        .bind(second)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "a task of a paused kind was run");

    // The paused filter; open the second task's drawer and cancel it after confirming.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?tab=tasks&status=paused"),
            &format!("{LIST_READY} && document.querySelectorAll('#list-body tr[data-task-id]').length === 2
              && document.querySelector('[data-paused-kind=\"{KIND}\"]').textContent.includes('2 waiting')"),
            "both paused tasks and the panel's count",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("02-paused.png")).await;
    browser
        .click_then_wait(
            &format!("#list-body tr[data-task-id='{second}'] td.open button"),
            &format!(
                "document.getElementById('drawer').dataset.state === 'ready'
              && document.querySelector('#drawer-body [data-cancel=\"{second}\"]')"
            ),
            "the drawer with the Cancel button",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            &format!("#drawer-body [data-cancel='{second}']"),
            "document.activeElement && document.activeElement.dataset.confirm === 'cancel'",
            "the inline confirmation, focused",
            &shots,
        )
        .await;
    let status: String = task_column(&db.pool, "status", second).await;
    assert_eq!(status, "paused", "nothing happens before the confirmation");
    browser.screenshot(&shots.join("03-confirm.png")).await;
    browser
        .click_then_wait(
            "[data-confirm='cancel']",
            &format!("document.querySelector('#drawer-body .task[data-task-id=\"{second}\"]').dataset.status === 'cancelled'
              && document.getElementById('drawer-action-status').textContent.includes('cancelled')"),
            "the cancelled task in the drawer",
            &shots,
        )
        .await;
    browser.press("Escape").await;

    // The first task: a new priority from its drawer.
    browser
        .navigate_then_wait(
            &format!("{base}/admin?tab=tasks&status=paused"),
            &format!("{LIST_READY} && document.querySelectorAll('#list-body tr[data-task-id]').length === 1"),
            "the one paused task left",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            &format!("#list-body tr[data-task-id='{first}'] td.open button"),
            &format!("document.getElementById('drawer').dataset.state === 'ready' && document.getElementById('priority-{first}')"),
            "the priority field",
            &shots,
        )
        .await;
    browser.fill(&format!("priority-{first}"), "3").await;
    browser
        .click_then_wait(
            &format!("[data-set-priority='{first}']"),
            "document.getElementById('drawer-action-status').textContent.includes('→ 3')",
            "the priority change",
            &shots,
        )
        .await;
    let priority: i16 = task_column(&db.pool, "priority", first).await;
    assert_eq!(priority, 3);
    browser.press("Escape").await;

    // Resume: the task is retrying again, still waiting for its run time.
    browser
        .click_then_wait(
            &format!("[data-resume='{KIND}']"),
            "document.getElementById('paused-list').textContent.includes('No task kind is paused')",
            "the resumed kind",
            &shots,
        )
        .await;
    poll_db(
        &db.pool,
        &format!("SELECT count(*) FROM tasks WHERE id = {first} AND status = 'pending' AND last_error IS NOT NULL"),
        1,
        "the resumed task retrying again",
    )
    .await;

    // A worker stuck on it (its lease an hour ahead): force-release it from the drawer.
    sqlx::query(
        "UPDATE tasks SET status = 'running', attempt = attempt + 1, claimed_at = now(),
             lease_until = now() + interval '1 hour', worker = 'stuck-worker' WHERE id = $1",
    )
    .bind(first)
    .execute(&db.pool)
    .await
    .unwrap();
    browser
        .navigate_then_wait(
            &format!("{base}/admin?tab=tasks&status=running"),
            &format!(
                "{LIST_READY} && document.querySelector('#list-body tr[data-task-id=\"{first}\"]')"
            ),
            "the stuck task",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            &format!("#list-body tr[data-task-id='{first}'] td.open button"),
            &format!("document.querySelector('#drawer-body [data-release=\"{first}\"]')"),
            "the Force release button",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            &format!("#drawer-body [data-release='{first}']"),
            "document.activeElement && document.activeElement.dataset.confirm === 'release'",
            "the release confirmation, focused",
            &shots,
        )
        .await;
    browser
        .click_then_wait(
            "[data-confirm='release']",
            "document.getElementById('drawer-action-status').textContent.includes('is retrying now')",
            "the released task",
            &shots,
        )
        .await;
    browser.screenshot(&shots.join("04-released.png")).await;

    // Reprocess the first sign-up with priority 2 from the same drawer: the copy's task
    // is queued at 2, not at its kind's 10.
    let original: uuid::Uuid = task_column(&db.pool, "event_id", first).await;
    browser.fill("drawer-priority", "2").await;
    browser
        .click_then_wait(
            "#drawer-reprocess-priority",
            "document.getElementById('drawer-action-status').textContent.includes('at priority 2')",
            "the reprocessed copy",
            &shots,
        )
        .await;
    poll_db(
        &db.pool,
        &format!(
            "SELECT count(*) FROM tasks t JOIN events e ON e.event_id = t.event_id
             WHERE e.metadata->>'reprocessed_from' = '{original}' AND t.priority = 2"
        ),
        1,
        "the copy's task at priority 2",
    )
    .await;

    // The audit trail of everything above, newest first.
    let token = login(&client, &base, admin_email, PASSWORD).await;
    let r = graphql_as(
        &client,
        &base,
        Some(&token),
        "{ queueControlLog(first: 10) { action taskId kind } }",
        json!({}),
    )
    .await;
    let actions: Vec<&str> = r["data"]["queueControlLog"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["force_release", "resume", "set_priority", "cancel", "pause"]
    );

    browser.assert_no_page_errors();
    drop(browser);
    service.stop(Duration::from_secs(60)).await;
}
