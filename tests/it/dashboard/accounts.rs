//! Who is signed in: a manager's view of its institution, a session that ends.

use super::*;

/// A manager sees its institution only; back as the admin, the whole picture.
pub(super) async fn a_manager_sees_its_institution(scene: Scene<'_>, smtp: &support::smtp::Smtp) {
    let Scene {
        db,
        base,
        client,
        browser,
        shots,
        admin_email,
        ..
    } = scene;
    // A manager: same page, its institution only, no admin-only parts. Its sign-up
    // e-mail is refused so the one-time token stays where the test can read it.
    browser.press("Escape").await;
    smtp.refuse.store(true, Ordering::SeqCst);
    let manager_email = MANAGER_EMAIL;
    support::sign_up(client, base, manager_email).await;
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
    let institution = support::confirm_sign_up(
        client,
        base,
        manager_email,
        &raw_token,
        PASSWORD,
        "Escola Norte",
    )
    .await;
    browser.viewport(1280, 900, false).await;
    support::dashboard::sign_out(browser, base, shots).await;
    sign_in(browser, manager_email).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('app-view').hidden && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length > 0"
            ),
            "the manager's events",
            shots,
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
    browser
        .click_then_wait(
            "#logout",
            "!document.getElementById('login-view').hidden",
            "the login form (admin)",
            shots,
        )
        .await;
    sign_in(browser, admin_email).await;
    browser
        .wait_for(
            &format!(
                "!document.getElementById('app-view').hidden && {LIST_READY}
              && document.querySelectorAll('#list-body tr[data-event-id]').length === 25
              && !document.getElementById('next-page').disabled
              && /events\\/h/.test(document.getElementById('rate').textContent)"
            ),
            "the admin's full list",
            shots,
        )
        .await;
    browser.eval("window.scrollTo(0, 0), true").await;
    browser.screenshot(&shots.join("11-overview.png")).await;
}

/// The page signs out by itself when another admin deactivates this one.
pub(super) async fn the_page_signs_out_when_its_session_ends(scene: Scene<'_>) {
    let Scene { client, base, .. } = scene;
    // The session ends while the page is open (another admin deactivates this one): the
    // page signs out by itself instead of polling and reconnecting with a refused token.
    let pool = &scene.db.pool;
    let other_token =
        support::admin_logged_in(client, base, pool, "admin2@aula.test", PASSWORD).await;
    let deactivated = graphql_as(
        client,
        base,
        Some(&other_token),
        "mutation($input: DeactivateUserInput!) { deactivateUser(input: $input) { id } }",
        json!({ "input": { "userId": scene.admin_id, "reason": "left" } }),
    )
    .await;
    assert!(deactivated["errors"].is_null(), "{deactivated}");
    scene
        .browser
        .wait_for(
            "!document.getElementById('login-view').hidden
              && document.getElementById('app-view').hidden
              && document.getElementById('notice').textContent.includes('Your session ended')",
            "the page to sign out when its session ended",
            scene.shots,
        )
        .await;
}
