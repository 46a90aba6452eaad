//! A crowd of applicants while someone holds the log locked: more applications waiting
//! than the pool has connections. Each is still answered before the request timeout
//! with the application's id and whether it was recorded, never with a bare `TIMEOUT`.

use super::*;

use std::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn a_crowd_applying_against_a_locked_log_is_told_each_application_id_in_time() {
    let timeout = Duration::from_secs(6);
    let server = TestServer::start_with(|config| config.request_timeout = timeout).await;
    let a = server.institution("Escola Fechada").await;
    let (_, course) = server.campus_with_course(&a.manager.token).await;
    let apply = move |n: usize| json!({ "courseId": course, "name": "Ana Fila", "birthDate": "2004-01-02", "email": format!("fila{n}@o.pt"), "idempotencyKey": format!("fila-{n}") });

    // Someone holds the log locked against writes (an operator's `LOCK TABLE`).
    let mut lock = server.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // More applicants than the pool (20) has connections: the appends given up on at
    // 80 % of the timeout keep theirs until the lock goes.
    let crowd = 30;
    let answers = futures::future::join_all((0..crowd).map(|n| {
        let server = &server;
        async move {
            let started = Instant::now();
            let answer = server.command(None, "applyToCourse", apply(n)).await;
            (started.elapsed(), answer)
        }
    }))
    .await;
    lock.rollback().await.unwrap();

    let mut named = Vec::new();
    for (elapsed, answer) in &answers {
        assert_code(answer, "TIMEOUT");
        assert!(
            elapsed < &timeout,
            "answered after the request timeout: {elapsed:?} {answer}"
        );
        assert!(extension(answer, "recorded").is_boolean(), "{answer}");
        named.push(
            extension(answer, "id")
                .as_str()
                .expect("the application's id")
                .to_owned(),
        );
    }
    // Sending each again is safe: the same application, recorded once.
    for (n, id) in named.iter().enumerate() {
        let again = server.command(None, "applyToCourse", apply(n)).await;
        assert_eq!(
            &common::id(&again, "applyToCourse").to_string(),
            id,
            "{again}"
        );
    }
    let stored = server
        .db
        .scalar("SELECT count(*) FROM events WHERE aggregate_type = 'application'")
        .await;
    assert_eq!(stored, crowd as i64);
    server.stop().await;
}
