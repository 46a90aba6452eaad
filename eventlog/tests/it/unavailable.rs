//! `is_unavailable` against the real server: the errors that mean "not now".

use aula_eventlog::db::is_unavailable;

use super::log_reader::setup;

/// A statement that gave up waiting for a lock another session holds (our sessions'
/// `lock_timeout`, 55P03) can succeed once that session ends: `UNAVAILABLE` (503,
/// retry) for a client and a retry for a task, not `INTERNAL`. An operator's
/// `LOCK TABLE` held too long produced `INTERNAL` before.
#[tokio::test]
async fn a_lock_timeout_is_unavailable() {
    let db = setup().await;
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE seen IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut waiter = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '100ms'")
        .execute(&mut *waiter)
        .await
        .unwrap();
    let error = sqlx::query("SELECT count(*) FROM seen")
        .execute(&mut *waiter)
        .await
        .unwrap_err();
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("55P03"), "{error}");
    assert!(is_unavailable(&error), "{error}");
    drop(waiter);
    holder.rollback().await.unwrap();

    // A statement that is simply wrong stays a bug, not "not now".
    let error = sqlx::query("SELECT no_such_column FROM seen")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(!is_unavailable(&error), "{error}");
}
