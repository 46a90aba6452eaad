//! Reprocessed copies in the read models, and the audit log.

use super::*;

/// A reprocessed copy, as the processor will append it: same data, metadata naming the original.
async fn append_copy_of(pool: &sqlx::PgPool, event_type: &str) -> (Uuid, i64) {
    let (original, aggregate_id, payload, metadata): (
        Uuid,
        String,
        serde_json::Value,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT event_id, aggregate_id, payload, metadata FROM events WHERE event_type = $1
             ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap();
    let mut metadata = metadata;
    metadata["reprocessed_from"] = serde_json::Value::String(original.to_string());
    let copy: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'course', $1, max(sequence) + 1, $2, '1.0', $3, $4 FROM events WHERE aggregate_id = $1
         RETURNING global_position",
    )
    .bind(&aggregate_id)
    .bind(event_type)
    .bind(&payload)
    .bind(&metadata)
    .fetch_one(pool)
    .await
    .unwrap();
    (original, copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocessed_copies_are_skipped_by_domain_models_and_linked_in_the_admin_view() {
    let (db, s) = scenario_projected(NAMES).await;
    let before = snapshot(&db.pool).await;
    let (original, copy_position) = append_copy_of(&db.pool, "StudentEnrolled").await;
    catch_up(&db, NAMES).await;
    let after = snapshot(&db.pool).await;
    for ((table, rows_before), (_, rows_after)) in before.iter().zip(&after) {
        match table.as_str() {
            "audit_log" | "admin_events" | "admin_event_search" => {
                assert_eq!(rows_after.len(), rows_before.len() + 1, "{table}")
            }
            _ => assert_eq!(rows_after, rows_before, "{table} must skip the copy"),
        }
    }
    let original_row = admin_events::admin_event(&db.pool, original)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original_row.copies, 1);
    let copies = admin_events::event_copies(&db.pool, original)
        .await
        .unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].global_position, copy_position);
    assert_eq!(copies[0].reprocessed_from, Some(original));
    // The original names its latest copy (from the events alone: a rebuild agrees).
    assert_eq!(original_row.latest_copy_id, Some(copies[0].event_id));
    assert_eq!(copies[0].latest_copy_id, None);
    assert_eq!(
        course_capacity(&db.pool, s.c1)
            .await
            .unwrap()
            .unwrap()
            .enrolled,
        2
    );
}

/// The processor locks `admin_events` rows in log order (a claim of an original's and its
/// copy's tasks locks the original, then the copy). The projection, writing a copy whose
/// row the processor created first, must not hold the copy's row while it waits for the
/// original's: that wait would be a deadlock. Here a transaction holds the original, the
/// projection writes the copy, and the holder must then get the copy's row at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_copy_locks_its_original_first() {
    let (db, _) = scenario_projected(&["admin_events"]).await;
    let (original, copy_position) = append_copy_of(&db.pool, "StudentEnrolled").await;
    // The processor's reactions saw the copy first and created its row.
    let copy: Uuid = sqlx::query_scalar(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type,
                                   aggregate_id, sequence, recorded_at, tx_id)
         SELECT event_id, global_position, event_type, aggregate_type, aggregate_id, sequence,
                recorded_at, tx_id::text::bigint
         FROM events WHERE global_position = $1
         RETURNING event_id",
    )
    .bind(copy_position)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM admin_events WHERE event_id = $1 FOR UPDATE")
        .bind(original)
        .execute(&mut *holder)
        .await
        .unwrap();
    let running = start(&db, &["admin_events"]);
    // Until the projection waits for the original's row.
    wait_for_a_lock_wait(&db.pool, "%", "the projection").await;
    // Shorter than `deadlock_timeout` (1 s): a wait here is the projection holding the
    // copy's row, not the deadlock detector's doing.
    sqlx::query("SET LOCAL lock_timeout = '500ms'")
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM admin_events WHERE event_id = $1 FOR UPDATE")
        .bind(copy)
        .execute(&mut *holder)
        .await
        .expect("the copy's row is free while the projection waits for the original's");
    holder.commit().await.unwrap();
    wait_caught_up(&db.pool, &["admin_events"]).await;
    running.stop().await;
    let original_row = admin_events::admin_event(&db.pool, original)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(original_row.copies, 1);
    let status = status(&db.pool).await.unwrap();
    let projection = status.iter().find(|s| s.name == "admin_events").unwrap();
    assert_eq!(projection.last_error, None, "{projection:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_says_who_did_what_and_when() {
    let db = TestDatabase::new().await;
    let user = Uuid::new_v4();
    let institution = Uuid::new_v4();
    let world = World::new(&db.pool, Actor::User(user), institution);
    let course = Uuid::new_v4();
    world
        .open(course, institution, Uuid::new_v4(), "Álgebra", 2)
        .await;
    world.apply(course, 21).await;
    let system = World::new(&db.pool, Actor::System, institution);
    system.apply(course, 22).await;
    catch_up(&db, &["audit_log"]).await;

    let by_user = audit_log(
        &db.pool,
        &AuditQuery {
            actor_user_id: Some(user),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(by_user.entries.len(), 3); // opened, requested, enrolled
    assert!(
        by_user
            .entries
            .windows(2)
            .all(|w| w[0].global_position > w[1].global_position),
        "newest first"
    );
    let first = by_user.entries.last().unwrap();
    assert_eq!(first.event_type, "CourseOpened");
    assert_eq!(
        first.actor.as_deref(),
        Some(format!("user:{user}").as_str())
    );
    assert_eq!(first.institution_id, Some(institution));
    assert_eq!(first.correlation_id, Some(world.metadata.correlation_id));
    assert_eq!(first.causation.as_deref(), Some("request"));
    assert_eq!(first.aggregate_id, course.to_string());

    // Pages of 2, oldest first, cover everything once.
    let mut query = AuditQuery {
        institution_id: Some(institution),
        ascending: true,
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = audit_log(&db.pool, &query).await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.global_position));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let enrolled = audit_log(
        &db.pool,
        &AuditQuery {
            event_types: vec!["StudentEnrolled".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(enrolled.entries.len(), 2);
}
