//! The admin operations: reprocessing, retrying a task, rebuilding a projection,
//! and who may call them.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn reprocessing_an_event_creates_a_copy_listed_under_its_original() {
    let w = world().await;
    let s = &w.server;
    let opened = course_opened(&w, w.a.id).await;
    let original = opened[0]["eventId"].as_str().unwrap().to_owned();

    // The admin and the manager of A may reprocess A's event.
    let mut copies = Vec::new();
    for token in [&w.admin.token, &w.a.manager.token] {
        let r = s
            .gql(Some(token), REPROCESS, json!({ "e": original }))
            .await;
        let copy = data(&r, "reprocessEvent");
        assert_eq!(copy["originalEventId"], original);
        assert_eq!(copy["projectionsCaughtUp"], true);
        assert_ne!(copy["eventId"], original);
        copies.push(copy["eventId"].clone());
    }

    let r = s
        .gql(Some(&w.a.manager.token), EVENT, json!({ "e": original }))
        .await;
    let event = data(&r, "adminEvent");
    assert_eq!(event["copyCount"], 2);
    let listed: Vec<Value> = event["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["reprocessedFrom"], original);
            assert_eq!(c["eventType"], "CourseOpened");
            assert_eq!(c["aggregateType"], "reprocessed");
            c["eventId"].clone()
        })
        .collect();
    assert_eq!(listed, copies);

    // Domain read models skip copies: still two courses in A, the same seats.
    let r = s
        .gql(Some(&w.a.manager.token), CAPACITIES, json!({ "f": 10 }))
        .await;
    assert_eq!(nodes_of(&r, "courseCapacities").len(), 2);

    // Not for another institution's manager, nor for a teacher; unknown: NOT_FOUND.
    let r = s
        .gql(
            Some(&w.b.manager.token),
            REPROCESS,
            json!({ "e": original }),
        )
        .await;
    assert_reason(&r, "FORBIDDEN", "OTHER_INSTITUTION");
    let r = s
        .gql(Some(&w.teacher.token), REPROCESS, json!({ "e": original }))
        .await;
    assert_reason(&r, "FORBIDDEN", "ROLE_NOT_ALLOWED");
    let r = s
        .gql(
            Some(&w.admin.token),
            REPROCESS,
            json!({ "e": Uuid::new_v4() }),
        )
        .await;
    assert_reason(&r, "NOT_FOUND", "EVENT_NOT_FOUND");
}

async fn insert_task(w: &World, institution: Uuid, status: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO tasks (kind, status, idempotency_key, institution_id)
         VALUES ('noop', $1, $2, $3) RETURNING id",
    )
    .bind(status)
    .bind(Uuid::new_v4().to_string())
    .bind(institution)
    .fetch_one(&w.server.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_task_creates_a_linked_task_for_allowed_callers() {
    let w = world().await;
    let s = &w.server;
    let failed = insert_task(&w, w.a.id, "failed").await;

    for token in [&w.admin.token, &w.a.manager.token] {
        let r = s.gql(Some(token), RETRY, json!({ "t": failed })).await;
        let retry = data(&r, "retryTask");
        assert_eq!(retry["retriedTaskId"], failed);
        let new_id = retry["taskId"].as_i64().unwrap();
        let (origin, status): (Option<i64>, String) =
            sqlx::query_as("SELECT origin_task_id, status FROM tasks WHERE id = $1")
                .bind(new_id)
                .fetch_one(&s.db.pool)
                .await
                .unwrap();
        assert_eq!((origin, status.as_str()), (Some(failed), "pending"));
    }

    let r = s
        .gql(Some(&w.b.manager.token), RETRY, json!({ "t": failed }))
        .await;
    assert_reason(&r, "FORBIDDEN", "OTHER_INSTITUTION");
    let r = s
        .gql(Some(&w.student.token), RETRY, json!({ "t": failed }))
        .await;
    assert_code(&r, "FORBIDDEN");
    let r = s.gql(None, RETRY, json!({ "t": failed })).await;
    assert_code(&r, "UNAUTHENTICATED");
    let running = insert_task(&w, w.a.id, "running").await;
    let r = s
        .gql(Some(&w.admin.token), RETRY, json!({ "t": running }))
        .await;
    assert_reason(&r, "CONFLICT", "TASK_NOT_FINISHED");
    let r = s
        .gql(Some(&w.admin.token), RETRY, json!({ "t": 999_999_999 }))
        .await;
    assert_code(&r, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_projection_runs_in_the_background_and_reports_progress() {
    let w = world().await;
    let s = &w.server;
    let before = s
        .gql(Some(&w.admin.token), CAPACITY, json!({ "c": w.course }))
        .await;
    // What the admin asks of the `course_capacity` rebuild (start it, its progress).
    let rebuild = |operation| {
        s.gql(
            Some(&w.admin.token),
            operation,
            json!({ "n": "course_capacity" }),
        )
    };
    let r = rebuild(REBUILD).await;
    assert_eq!(data(&r, "rebuildProjection")["name"], "course_capacity");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let progress = loop {
        let r = rebuild(PROGRESS).await;
        let rows = data(&r, "rebuildProgress").as_array().unwrap().clone();
        if let Some(row) = rows.first().filter(|row| row["state"] == "done") {
            break row.clone();
        }
        assert!(
            rows.first().is_none_or(|row| row["state"] != "failed"),
            "rebuild failed: {r}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "rebuild did not finish: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(progress["eventsDone"].as_i64().unwrap() > 0);
    assert_eq!(progress["remaining"], 0);
    let after = s
        .gql(Some(&w.admin.token), CAPACITY, json!({ "c": w.course }))
        .await;
    assert_eq!(after, before);

    let r = s
        .gql(
            Some(&w.admin.token),
            REBUILD,
            json!({ "n": "no_such_projection" }),
        )
        .await;
    assert_reason(&r, "VALIDATION", "UNKNOWN_PROJECTION");
}

/// Every new operation: the roles it refuses, and another institution's ids.
#[tokio::test(flavor = "multi_thread")]
async fn read_models_and_admin_operations_are_authorized() {
    let w = world().await;
    let s = &w.server;
    let event = course_opened(&w, w.a.id).await[0]["eventId"].clone();
    let task = insert_task(&w, w.a.id, "failed").await;
    let forbidden = |r: &Value, reason: &str| assert_reason(r, "FORBIDDEN", reason);

    let a_reads: Vec<(&str, Value)> = vec![
        (CAPACITY, json!({ "c": w.course })),
        (CAPACITIES, json!({ "i": w.a.id, "f": 10 })),
        (CAPACITIES, json!({ "p": w.campus, "f": 10 })),
        (AGES, json!({ "s": "COURSE", "ids": [w.course] })),
        (AGES, json!({ "s": "CAMPUS", "ids": [w.campus] })),
        (AGES, json!({ "s": "INSTITUTION", "ids": [w.a.id] })),
        (ENROLLMENTS, json!({ "c": w.course, "x": true })),
    ];
    for (query, vars) in &a_reads {
        // Anonymous: UNAUTHENTICATED; a student: FORBIDDEN by role.
        assert_code(&s.gql(None, query, vars.clone()).await, "UNAUTHENTICATED");
        forbidden(
            &s.gql(Some(&w.student.token), query, vars.clone()).await,
            "ROLE_NOT_ALLOWED",
        );
        // B's manager on A's ids: FORBIDDEN; the admin: allowed.
        forbidden(
            &s.gql(Some(&w.b.manager.token), query, vars.clone()).await,
            "OTHER_INSTITUTION",
        );
        assert_ok(&s.gql(Some(&w.admin.token), query, vars.clone()).await);
    }
    // A's teacher on B's course and campus.
    for (query, vars) in [
        (CAPACITY, json!({ "c": w.b_course })),
        (ENROLLMENTS, json!({ "c": w.b_course, "x": false })),
        (AGES, json!({ "s": "CAMPUS", "ids": [w.b_campus] })),
        (CAPACITIES, json!({ "p": w.b_campus, "f": 10 })),
    ] {
        forbidden(
            &s.gql(Some(&w.teacher.token), query, vars).await,
            "OTHER_INSTITUTION",
        );
    }

    // Staff only: auditLog, adminEvents, adminEvent; and the admin mutations: students
    // and teachers never, B's manager not on A's.
    let staff_reads: Vec<(&str, Value)> = vec![
        (AUDIT, json!({ "f": { "institutionId": w.a.id }, "n": 10 })),
        (EVENTS, json!({ "f": { "institutionId": w.a.id }, "n": 10 })),
        (EVENT, json!({ "e": event })),
    ];
    let admin_mutations: Vec<(&str, Value)> = vec![
        (REPROCESS, json!({ "e": event })),
        (RETRY, json!({ "t": task })),
    ];
    for (query, vars) in staff_reads.iter().chain(&admin_mutations) {
        assert_code(&s.gql(None, query, vars.clone()).await, "UNAUTHENTICATED");
        for token in [&w.student.token, &w.teacher.token] {
            forbidden(
                &s.gql(Some(token), query, vars.clone()).await,
                "ROLE_NOT_ALLOWED",
            );
        }
        forbidden(
            &s.gql(Some(&w.b.manager.token), query, vars.clone()).await,
            "OTHER_INSTITUTION",
        );
    }
    for (query, vars) in &staff_reads {
        assert_ok(&s.gql(Some(&w.a.manager.token), query, vars.clone()).await);
        assert_ok(&s.gql(Some(&w.admin.token), query, vars.clone()).await);
    }

    // Admin only: projectionStatus, rebuildProgress, rebuildProjection.
    let admin_only: Vec<(&str, Value)> = vec![
        (STATUS, json!({})),
        (PROGRESS, json!({})),
        (REBUILD, json!({ "n": "audit_log" })),
    ];
    for (query, vars) in &admin_only {
        assert_code(&s.gql(None, query, vars.clone()).await, "UNAUTHENTICATED");
        for token in [&w.student.token, &w.teacher.token, &w.a.manager.token] {
            forbidden(
                &s.gql(Some(token), query, vars.clone()).await,
                "ROLE_NOT_ALLOWED",
            );
        }
    }
    assert_ok(&s.query(&w.admin.token, STATUS).await);
    assert_ok(&s.query(&w.admin.token, PROGRESS).await);
}
