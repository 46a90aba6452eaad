//! What the dashboard's browser tests share (`dashboard/`, `dashboard_insights.rs`,
//! `dashboard_queue.rs`, `dashboard_reprocess.rs`): the list's loaded states, and
//! signing in and out of the page as a person would.

use std::path::{Path, PathBuf};

use aula_eventlog::testing::TestDatabase;

use super::cdp::{click, require_chromium, Browser};
use super::service::Service;

/// The list is loaded, with rows.
pub const LIST_READY: &str = "document.getElementById('list').dataset.state === 'ready' && !document.getElementById('list-body').hasAttribute('aria-busy')";
/// Loaded, with rows or with the empty state.
pub const LIST_SETTLED: &str = "['ready', 'empty'].includes(document.getElementById('list').dataset.state) && !document.getElementById('list-body').hasAttribute('aria-busy')";

/// What a dashboard test starts from.
pub struct Stage {
    /// Where its screenshots go (emptied, and printed).
    pub shots: PathBuf,
    pub db: TestDatabase,
    /// The whole service on `db`, its tokens valid for an hour.
    pub service: Service,
    /// The service's SMTP server, rejecting every e-mail (a permanent `550`) until the
    /// test sets its `reject` to false.
    pub smtp: super::smtp::Smtp,
}

/// Checks for Chromium first (before anything slow), then starts the whole service on a
/// fresh database, its e-mails going to an SMTP server that rejects them for now
/// ([`super::smtp::rejecting_on`]: they fail at once, `failed`; a relay nobody listens
/// on would be an outage, retried until it ends). Only in a test of its own process, as
/// the e-mail settings are ([`super::mail_to_port_with_quick_retries`]).
pub async fn stage(screenshots: &str) -> Stage {
    let shots = super::screenshot_dir(screenshots);
    println!("dashboard screenshots: {}", shots.display());
    require_chromium();
    let db = TestDatabase::new().await;
    let smtp_port = super::free_port();
    let smtp = super::smtp::rejecting_on(smtp_port).await;
    super::mail_to_port_with_quick_retries(smtp_port, 60);
    let service = Service::start(&db, |args| args.token_ttl_minutes = 60).await;
    Stage {
        shots,
        db,
        service,
        smtp,
    }
}

/// Opens the dashboard at `url` and waits for its login form.
pub async fn open_login(browser: &Browser, url: &str, shots: &Path) {
    browser.navigate(url).await;
    browser
        .wait_for(
            "!document.getElementById('login-view').hidden",
            "the login form",
            shots,
        )
        .await;
}

/// Types the credentials into the login form, as a person would, and submits it.
pub async fn sign_in(browser: &Browser, email: &str, password: &str) {
    browser.fill("login-email", email).await;
    browser
        .eval("document.getElementById('login-password').focus()")
        .await;
    browser.type_text(password).await;
    browser.eval(&click("#login-submit")).await;
}

/// A browser of `viewport` (width, height) at the login form of `url`, signed in as
/// `email` with `password`, as a person would.
pub async fn signed_in_browser(
    url: &str,
    (width, height): (u32, u32),
    email: &str,
    password: &str,
    shots: &Path,
) -> Browser {
    let browser = Browser::start().await;
    browser.viewport(width, height, false).await;
    open_login(&browser, url, shots).await;
    sign_in(&browser, email, password).await;
    browser
}

/// Signs out from the page and opens the login form at `{base}/admin` again.
pub async fn sign_out(browser: &Browser, base: &str, shots: &Path) {
    browser.eval(&click("#logout")).await;
    open_login(browser, &format!("{base}/admin"), shots).await;
}

/// Selects only `option` in the multi-select filter `select` (`f-types`, `f-kinds`) and
/// `status` in the status filter, then applies the filters, as a person would.
pub async fn filter_one_of(browser: &Browser, select: &str, option: &str, status: &str) {
    browser
        .eval(&format!(
            "(() => {{ for (const o of document.getElementById('{select}').options) o.selected = o.value === '{option}';
               document.getElementById('f-status').value = '{status}';
               document.getElementById('apply-filters').click(); return true; }})()"
        ))
        .await;
}

/// Puts `text` in the institution filter (an id, a short id or a name) and applies the
/// filters.
pub async fn filter_institution(browser: &Browser, text: &str) {
    browser
        .eval(&format!(
            "(() => {{ document.getElementById('f-institution').value = {}; document.getElementById('apply-filters').click(); return true; }})()",
            serde_json::to_string(text).unwrap()
        ))
        .await;
}

/// The raw one-time token of the latest event of `event_type` for `email`'s account.
pub async fn raw_token(pool: &sqlx::PgPool, sql_filter: &str) -> String {
    super::eventually(std::time::Duration::from_secs(30), super::POLL_EVERY, || async {
        let found: Option<String> = sqlx::query_scalar(&format!(
            "SELECT p.raw_token FROM pending_tokens p JOIN events e ON e.payload->>'token_hash' = p.token_hash
             WHERE {sql_filter} ORDER BY e.global_position DESC LIMIT 1"
        ))
        .fetch_optional(pool)
        .await
        .unwrap();
        found.ok_or_else(|| format!("no token for {sql_filter}"))
    })
    .await
}

/// The manager the browser tests make: Maria, of [`escola_norte`].
pub const MANAGER_EMAIL: &str = "maria@escola.test";

/// Escola Norte, made by [`MANAGER_EMAIL`]'s confirmed sign-up with `password` (see
/// [`manager_of_new_institution`]); returns its id.
pub async fn escola_norte(
    client: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    password: &str,
) -> String {
    manager_of_new_institution(client, base, pool, MANAGER_EMAIL, password, "Escola Norte").await
}

/// `email` signs up (its e-mail fails: the token is read where it is stashed) and
/// confirms as the manager of a new institution `institution_name`; returns its id.
pub async fn manager_of_new_institution(
    client: &reqwest::Client,
    base: &str,
    pool: &sqlx::PgPool,
    email: &str,
    password: &str,
    institution_name: &str,
) -> String {
    super::sign_up(client, base, email).await;
    let token = raw_token(pool, &format!("e.payload->>'email' = '{email}'")).await;
    super::confirm_sign_up(client, base, email, &token, password, institution_name).await
}
