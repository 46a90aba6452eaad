//! The read-model queries and the admin operations, over HTTP against the real server
//! with every projection running: data comes from real mutations, queries wait for the
//! projections through `waitForProjections: true`.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// Applies to a course with a given birth date; returns the application id.
async fn apply(server: &TestServer, course: Uuid, name: &str, birth_date: &str) -> Uuid {
    let r = server
        .command(
            None,
            "applyToCourse",
            json!({ "courseId": course, "name": name, "birthDate": birth_date,
                    "email": format!("applicant-{}@aula.test", Uuid::new_v4().simple()) }),
        )
        .await;
    id(&r, "applyToCourse")
}

/// A staff mutation that waits until every projection caught up with everything before.
async fn settle(server: &TestServer, manager: &str, course: Uuid, capacity: i32) {
    let r = server
        .gql(
            Some(manager),
            "mutation($c: UUID!, $n: Int!) { changeCourseCapacity(input: { courseId: $c, capacity: $n }, waitForProjections: true) { projectionsCaughtUp } }",
            json!({ "c": course, "n": capacity }),
        )
        .await;
    assert_eq!(
        r["data"]["changeCourseCapacity"]["projectionsCaughtUp"], true,
        "{r}"
    );
}

fn data<'a>(r: &'a Value, field: &str) -> &'a Value {
    assert_ok(r);
    &r["data"][field]
}

struct World {
    server: TestServer,
    _projections: RunningProjections,
    admin: Actor,
    a: Institution,
    b: Institution,
    teacher: Actor,
    student: Actor,
    course: Uuid,
    other_course: Uuid,
    campus: Uuid,
    b_course: Uuid,
    b_campus: Uuid,
    /// Applications enrolled in `course`: born 2000-01-01 (26 on 2026-03-02) and
    /// 2006-06-01 (19).
    older: Uuid,
    younger: Uuid,
}

async fn world() -> World {
    let (server, projections) = server_with_projections().await;
    let admin = server.admin().await;
    let a = server.institution("Escola Norte").await;
    let b = server.institution("Escola Sul").await;
    let manager = a.manager.token.clone();
    let campus = server.campus(&manager, None).await;
    let course = server.course(&manager, None, campus).await;
    let other_course = server.course(&manager, None, campus).await;
    let b_campus = server.campus(&b.manager.token, None).await;
    let b_course = server.course(&b.manager.token, None, b_campus).await;
    let (teacher_id, teacher_email) = server.teacher(&manager, None).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    let (student_id, student_email) = server.student(&manager, None).await;
    let student = server.activate(student_id, &student_email).await;
    let older = apply(&server, course, "Olga Older", "2000-01-01").await;
    let younger = apply(&server, course, "Yuri Younger", "2006-06-01").await;
    server.enroll(course, older).await;
    server.enroll(course, younger).await;
    let b_application = apply(&server, b_course, "Bea Other", "2001-02-03").await;
    server.enroll(b_course, b_application).await;
    settle(&server, &b.manager.token, b_course, 30).await;
    settle(&server, &manager, course, 40).await;
    World {
        server,
        _projections: projections,
        admin,
        a,
        b,
        teacher,
        student,
        course,
        other_course,
        campus,
        b_course,
        b_campus,
        older,
        younger,
    }
}

const CAPACITY: &str = "query($c: UUID!) { courseCapacity(courseId: $c) { courseId institutionId campusId capacity enrolled seatsLeft pending declined } }";
const CAPACITIES: &str = "query($i: UUID, $p: UUID, $s: CourseCapacitySort, $f: Int!, $a: String) { courseCapacities(institutionId: $i, campusId: $p, sort: $s, first: $f, after: $a) { nodes { courseId enrolled } nextCursor } }";
const AGES: &str = "query($s: AgeScope!, $ids: [UUID!]) { ageMetrics(scope: $s, ids: $ids) { nodes { scope scopeId students minAge maxAge averageAge } nextCursor } }";
const ENROLLMENTS: &str = "query($c: UUID!, $x: Boolean!, $s: EnrollmentSort) { courseEnrollments(courseId: $c, includeCancelled: $x, sort: $s) { nodes { applicationId name ageYears enrolledOn status cancelledOn } nextCursor } }";
const AUDIT: &str = "query($f: AuditLogFilter, $n: Int!, $a: String) { auditLog(filter: $f, first: $n, after: $a) { nodes { eventId logPosition actor actorUserId institutionId eventType } nextCursor } }";
const EVENTS: &str = "query($f: AdminEventFilter, $s: AdminEventSort, $n: Int!, $a: String) { adminEvents(filter: $f, sort: $s, first: $n, after: $a) { nodes { eventId logPosition eventType institutionId status copyCount } nextCursor } }";
const EVENT: &str = "query($e: UUID!) { adminEvent(eventId: $e) { eventId eventType institutionId copyCount copies { eventId reprocessedFrom eventType aggregateType } } }";
const STATUS: &str = "{ projectionStatus { name position lagEvents lastError } }";
const PROGRESS: &str = "query($n: String) { rebuildProgress(name: $n) { name state position eventsDone remaining error } }";
const REPROCESS: &str = "mutation($e: UUID!) { reprocessEvent(eventId: $e, waitForProjections: true) { eventId originalEventId logPosition projectionsCaughtUp } }";
const RETRY: &str = "mutation($t: Int!) { retryTask(taskId: $t) { taskId retriedTaskId } }";
const REBUILD: &str = "mutation($n: String!) { rebuildProjection(name: $n) { name requestedAt } }";

/// The `CourseOpened` event of a course, from the admin view.
async fn course_opened(w: &World, institution: Uuid) -> Vec<Value> {
    let r = w
        .server
        .gql(
            Some(&w.admin.token),
            EVENTS,
            json!({ "f": { "types": ["CourseOpened"], "institutionId": institution }, "s": { "field": "POSITION", "direction": "ASC" }, "n": 100 }),
        )
        .await;
    data(&r, "adminEvents")["nodes"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn read_model_queries_answer_from_the_projections() {
    let w = world().await;
    let s = &w.server;
    let manager = w.a.manager.token.as_str();

    // courseCapacity: manager, teacher and admin.
    for token in [manager, w.teacher.token.as_str(), w.admin.token.as_str()] {
        let r = s.gql(Some(token), CAPACITY, json!({ "c": w.course })).await;
        let c = data(&r, "courseCapacity");
        assert_eq!(c["courseId"], w.course.to_string());
        assert_eq!(c["institutionId"], w.a.id.to_string());
        assert_eq!(c["campusId"], w.campus.to_string());
        assert_eq!(
            (&c["capacity"], &c["enrolled"], &c["seatsLeft"]),
            (&json!(40), &json!(2), &json!(38))
        );
    }

    // courseCapacities: the manager's own institution, paginated one by one, sorted by
    // enrolled descending.
    let sort = json!({ "field": "ENROLLED", "direction": "DESC" });
    let r = s
        .gql(Some(manager), CAPACITIES, json!({ "s": sort, "f": 1 }))
        .await;
    let page = data(&r, "courseCapacities");
    assert_eq!(page["nodes"][0]["courseId"], w.course.to_string());
    assert_eq!(page["nodes"][0]["enrolled"], 2);
    let cursor = page["nextCursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let r = s
        .gql(
            Some(manager),
            CAPACITIES,
            json!({ "s": sort, "f": 1, "a": cursor }),
        )
        .await;
    let page = data(&r, "courseCapacities");
    assert_eq!(page["nodes"][0]["courseId"], w.other_course.to_string());
    assert_eq!(page["nodes"][0]["enrolled"], 0);
    assert!(page["nextCursor"].is_null());
    // By campus, as the teacher; an admin without an institution sees both.
    let r = s
        .gql(
            Some(&w.teacher.token),
            CAPACITIES,
            json!({ "p": w.campus, "f": 10 }),
        )
        .await;
    assert_eq!(
        data(&r, "courseCapacities")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = s
        .gql(Some(&w.admin.token), CAPACITIES, json!({ "f": 10 }))
        .await;
    assert_eq!(
        data(&r, "courseCapacities")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // A page size over the maximum is refused.
    let r = s.gql(Some(manager), CAPACITIES, json!({ "f": 101 })).await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "first");

    // ageMetrics: ages 26 and 19 in the course, campus and institution.
    for (scope, id) in [
        ("COURSE", w.course),
        ("CAMPUS", w.campus),
        ("INSTITUTION", w.a.id),
    ] {
        let r = s
            .gql(Some(manager), AGES, json!({ "s": scope, "ids": [id] }))
            .await;
        let nodes = data(&r, "ageMetrics")["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), 1, "{scope}: {r}");
        assert_eq!(nodes[0]["scopeId"], id.to_string());
        assert_eq!(
            (
                &nodes[0]["students"],
                &nodes[0]["minAge"],
                &nodes[0]["maxAge"]
            ),
            (&json!(2), &json!(19), &json!(26)),
            "{scope}"
        );
        assert_eq!(nodes[0]["averageAge"], 22.5);
    }
    // Without ids: the caller's institution only.
    let r = s
        .gql(Some(&w.teacher.token), AGES, json!({ "s": "INSTITUTION" }))
        .await;
    let nodes = data(&r, "ageMetrics")["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["scopeId"], w.a.id.to_string());

    // courseEnrollments, by name descending.
    let r = s
        .gql(
            Some(manager),
            ENROLLMENTS,
            json!({ "c": w.course, "x": false, "s": { "field": "NAME", "direction": "DESC" } }),
        )
        .await;
    let nodes = data(&r, "courseEnrollments")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["applicationId"], w.younger.to_string());
    assert_eq!(nodes[0]["ageYears"], 19);
    assert_eq!(nodes[1]["applicationId"], w.older.to_string());
    assert_eq!(nodes[1]["enrolledOn"], "2026-03-02");

    // Cancelling the youngest: gone from the list unless asked, and from the metrics.
    let r = s
        .gql(
            Some(manager),
            "mutation($c: UUID!, $a: UUID!) { cancelEnrollment(input: { courseId: $c, applicationId: $a }, waitForProjections: true) { projectionsCaughtUp } }",
            json!({ "c": w.course, "a": w.younger }),
        )
        .await;
    assert_eq!(data(&r, "cancelEnrollment")["projectionsCaughtUp"], true);
    let r = s
        .gql(
            Some(manager),
            ENROLLMENTS,
            json!({ "c": w.course, "x": false }),
        )
        .await;
    assert_eq!(
        data(&r, "courseEnrollments")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = s
        .gql(
            Some(manager),
            ENROLLMENTS,
            json!({ "c": w.course, "x": true }),
        )
        .await;
    let nodes = data(&r, "courseEnrollments")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nodes.len(), 2);
    let cancelled: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["status"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["applicationId"], w.younger.to_string());
    let r = s
        .gql(
            Some(manager),
            AGES,
            json!({ "s": "COURSE", "ids": [w.course] }),
        )
        .await;
    let node = &data(&r, "ageMetrics")["nodes"][0];
    assert_eq!(
        (&node["students"], &node["minAge"], &node["maxAge"]),
        (&json!(1), &json!(26), &json!(26))
    );

    // auditLog: a manager sees only its institution, newest first, in pages.
    let r = s.gql(Some(manager), AUDIT, json!({ "n": 2 })).await;
    let page = data(&r, "auditLog").clone();
    let first: Vec<i64> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["logPosition"].as_i64().unwrap())
        .collect();
    assert_eq!(first.len(), 2);
    assert!(first[0] > first[1]);
    assert_eq!(page["nodes"][0]["eventType"], "EnrollmentCancelled");
    assert_eq!(page["nodes"][0]["actorUserId"], w.a.manager.id.to_string());
    let r = s
        .gql(
            Some(manager),
            AUDIT,
            json!({ "n": 100, "a": page["nextCursor"] }),
        )
        .await;
    let rest = data(&r, "auditLog")["nodes"].as_array().unwrap().clone();
    assert!(!rest.is_empty());
    assert!(rest
        .iter()
        .all(|n| n["logPosition"].as_i64().unwrap() < first[1]
            && n["institutionId"] == w.a.id.to_string()));
    // Filtered by actor and type.
    let r = s
        .gql(
            Some(&w.admin.token),
            AUDIT,
            json!({ "f": { "types": ["CourseOpened"], "actorUserId": w.a.manager.id }, "n": 10 }),
        )
        .await;
    assert_eq!(data(&r, "auditLog")["nodes"].as_array().unwrap().len(), 2);

    // adminEvents: by type and institution, sorted, paginated.
    let opened = course_opened(&w, w.a.id).await;
    assert_eq!(opened.len(), 2);
    assert!(opened
        .iter()
        .all(|e| e["institutionId"] == w.a.id.to_string()));
    let r = s
        .gql(
            Some(manager),
            EVENTS,
            json!({ "f": { "types": ["CourseOpened", "CampusCreated"] }, "s": { "field": "EVENT_TYPE", "direction": "ASC" }, "n": 1 }),
        )
        .await;
    let page = data(&r, "adminEvents").clone();
    assert_eq!(page["nodes"][0]["eventType"], "CampusCreated");
    let mut seen = vec![page["nodes"][0]["eventId"].clone()];
    let mut cursor = page["nextCursor"].clone();
    while !cursor.is_null() {
        let r = s
            .gql(
                Some(manager),
                EVENTS,
                json!({ "f": { "types": ["CourseOpened", "CampusCreated"] }, "s": { "field": "EVENT_TYPE", "direction": "ASC" }, "n": 1, "a": cursor }),
            )
            .await;
        let page = data(&r, "adminEvents").clone();
        seen.push(page["nodes"][0]["eventId"].clone());
        assert_eq!(page["nodes"][0]["eventType"], "CourseOpened");
        cursor = page["nextCursor"].clone();
    }
    assert_eq!(seen.len(), 3, "one campus and two courses of A: {seen:?}");
    // A manager is held to its own institution even without naming it.
    let r = s
        .gql(
            Some(&w.b.manager.token),
            EVENTS,
            json!({ "f": { "types": ["CourseOpened"] }, "n": 10 }),
        )
        .await;
    let nodes = data(&r, "adminEvents")["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["institutionId"], w.b.id.to_string());
    // Status and duration filters (the processor is not running: all pending).
    let r = s
        .gql(
            Some(&w.admin.token),
            EVENTS,
            json!({ "f": { "status": "pending", "duration": { "op": "GT", "ms": 0 }, "hasFailedTasks": false }, "n": 10 }),
        )
        .await;
    assert_eq!(data(&r, "adminEvents")["nodes"], json!([]));
    let r = s
        .gql(
            Some(&w.admin.token),
            EVENTS,
            json!({ "f": { "status": "pending", "institutionId": w.a.id }, "n": 100 }),
        )
        .await;
    assert!(data(&r, "adminEvents")["nodes"].as_array().unwrap().len() >= 3);
    let r = s
        .gql(
            Some(manager),
            EVENTS,
            json!({ "n": 1, "a": "not a cursor" }),
        )
        .await;
    assert_code(&r, "VALIDATION");

    // adminEvent: one event, no copies yet.
    let r = s
        .gql(Some(manager), EVENT, json!({ "e": opened[0]["eventId"] }))
        .await;
    let event = data(&r, "adminEvent");
    assert_eq!(event["eventType"], "CourseOpened");
    assert_eq!(event["copyCount"], 0);
    assert_eq!(event["copies"], json!([]));
    let r = s
        .gql(Some(manager), EVENT, json!({ "e": Uuid::new_v4() }))
        .await;
    assert_code(&r, "NOT_FOUND");

    // projectionStatus: every projection, caught up, no error.
    let r = s.gql(Some(&w.admin.token), STATUS, json!({})).await;
    let rows = data(&r, "projectionStatus").as_array().unwrap().clone();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, aula_projections::NAMES);
    assert!(rows
        .iter()
        .all(|r| r["position"].as_i64().unwrap() > 0 && r["lastError"].is_null()));
}

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
    assert_eq!(
        data(&r, "courseCapacities")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Not for another institution's manager, nor for a teacher; unknown: NOT_FOUND.
    let r = s
        .gql(
            Some(&w.b.manager.token),
            REPROCESS,
            json!({ "e": original }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");
    assert_eq!(extension(&r, "reason"), "OTHER_INSTITUTION");
    let r = s
        .gql(Some(&w.teacher.token), REPROCESS, json!({ "e": original }))
        .await;
    assert_code(&r, "FORBIDDEN");
    assert_eq!(extension(&r, "reason"), "ROLE_NOT_ALLOWED");
    let r = s
        .gql(
            Some(&w.admin.token),
            REPROCESS,
            json!({ "e": Uuid::new_v4() }),
        )
        .await;
    assert_code(&r, "NOT_FOUND");
    assert_eq!(extension(&r, "reason"), "EVENT_NOT_FOUND");
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
    assert_code(&r, "FORBIDDEN");
    assert_eq!(extension(&r, "reason"), "OTHER_INSTITUTION");
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
    assert_code(&r, "CONFLICT");
    assert_eq!(extension(&r, "reason"), "TASK_NOT_FINISHED");
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
    let r = s
        .gql(
            Some(&w.admin.token),
            REBUILD,
            json!({ "n": "course_capacity" }),
        )
        .await;
    assert_eq!(data(&r, "rebuildProjection")["name"], "course_capacity");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let progress = loop {
        let r = s
            .gql(
                Some(&w.admin.token),
                PROGRESS,
                json!({ "n": "course_capacity" }),
            )
            .await;
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
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "reason"), "UNKNOWN_PROJECTION");
}

/// Every new operation: the roles it refuses, and another institution's ids.
#[tokio::test(flavor = "multi_thread")]
async fn read_models_and_admin_operations_are_authorized() {
    let w = world().await;
    let s = &w.server;
    let event = course_opened(&w, w.a.id).await[0]["eventId"].clone();
    let task = insert_task(&w, w.a.id, "failed").await;
    let forbidden = |r: &Value, reason: &str| {
        assert_code(r, "FORBIDDEN");
        assert_eq!(extension(r, "reason"), reason, "{r}");
    };

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

    // Staff only: auditLog, adminEvents, adminEvent.
    let staff_reads: Vec<(&str, Value)> = vec![
        (AUDIT, json!({ "f": { "institutionId": w.a.id }, "n": 10 })),
        (EVENTS, json!({ "f": { "institutionId": w.a.id }, "n": 10 })),
        (EVENT, json!({ "e": event })),
    ];
    for (query, vars) in &staff_reads {
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
    assert_ok(&s.gql(Some(&w.admin.token), STATUS, json!({})).await);
    assert_ok(&s.gql(Some(&w.admin.token), PROGRESS, json!({})).await);

    // Admin mutations: students and teachers never; B's manager not on A's.
    for (query, vars) in [
        (REPROCESS, json!({ "e": event })),
        (RETRY, json!({ "t": task })),
    ] {
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
}

/// The people lists of managers and admins (filter, sort, keyset pages, isolation) and
/// each person's own reads: a student's grades, enrollments and applications; a
/// teacher's courses and the students it grades.
#[tokio::test(flavor = "multi_thread")]
async fn people_lists_and_self_service_reads() {
    let (server, _projections) = server_with_projections().await;
    let admin = server.admin().await;
    let a = server.institution("Escola Lista").await;
    let b = server.institution("Escola Outra").await;
    let m = a.manager.token.as_str();
    let campus = server.campus(m, None).await;
    let course = server.course(m, None, campus).await;

    let mut students = Vec::new();
    for name in ["Carla Dias", "Ana Brito", "Bruno Costa"] {
        let email = format!(
            "{}-{}@aula.test",
            name.split(' ').next().unwrap().to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let r = server
            .command(
                Some(m),
                "createStudent",
                json!({ "name": name, "email": email, "birthDate": "2005-02-03" }),
            )
            .await;
        students.push((id(&r, "createStudent"), email));
    }
    let (teacher_id, teacher_email) = server.teacher(m, None).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    let (other_student, _) = server.student(b.manager.token.as_str(), None).await;

    // Ana applies and is enrolled; she gets a grade from the teacher.
    let (ana, ana_email) = students[1].clone();
    let student = server.activate(ana, &ana_email).await;
    let application = server.enroll_email(course, &ana_email).await;
    let recorded = server
        .command(
            Some(teacher.token.as_str()),
            "recordExamNote",
            json!({ "courseId": course, "studentId": ana, "examName": "Midterm", "note": 7.5 }),
        )
        .await;
    let grade = id(&recorded, "recordExamNote");
    let changed = server
        .gql(
            Some(teacher.token.as_str()),
            "mutation($i: ChangeExamNoteInput!) { changeExamNote(input: $i, waitForProjections: true) { id projectionsCaughtUp } }",
            json!({ "i": { "examGradeId": grade, "note": 8.25 } }),
        )
        .await;
    assert_ok(&changed);
    assert_eq!(
        changed["data"]["changeExamNote"]["projectionsCaughtUp"],
        true
    );

    // The manager's list: its own students, by name, in pages of two.
    let list = "query($f: PersonFilter, $s: PersonSort, $after: String) {
        students(filter: $f, sort: $s, first: 2, after: $after) { nodes { id name email active } nextCursor } }";
    let page1 = server.gql(Some(m), list, json!({})).await;
    assert_ok(&page1);
    let names = |page: &Value| -> Vec<String> {
        page["data"]["students"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page1), ["Ana Brito", "Bruno Costa"]);
    let cursor = page1["data"]["students"]["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let page2 = server.gql(Some(m), list, json!({ "after": cursor })).await;
    assert_eq!(names(&page2), ["Carla Dias"]);
    assert!(page2["data"]["students"]["nextCursor"].is_null());
    // Descending, and a search in names and e-mails (case ignored).
    let desc = server
        .gql(
            Some(m),
            list,
            json!({ "s": { "field": "NAME", "direction": "DESC" } }),
        )
        .await;
    assert_eq!(names(&desc), ["Carla Dias", "Bruno Costa"]);
    let search = server
        .gql(Some(m), list, json!({ "f": { "search": "BRITO" } }))
        .await;
    assert_eq!(names(&search), ["Ana Brito"]);
    // A deactivated student drops out of the active filter.
    let r = server
        .command(
            Some(m),
            "deactivateUser",
            json!({ "userId": students[0].0, "reason": "left" }),
        )
        .await;
    assert_ok(&r);
    let projected = server
        .gql(
            Some(m),
            "query($p: BigInt!) { projectionsReached(logPosition: $p) }",
            json!({ "p": r["data"]["deactivateUser"]["logPosition"] }),
        )
        .await;
    assert_eq!(projected["data"]["projectionsReached"], true);
    let active = server
        .gql(Some(m), list, json!({ "f": { "active": true } }))
        .await;
    assert_eq!(names(&active), ["Ana Brito", "Bruno Costa"]);
    // Teachers list the same way; the other institution's people never show.
    let teachers = server
        .gql(Some(m), "{ teachers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        teachers["data"]["teachers"]["nodes"][0]["id"],
        json!(teacher_id)
    );
    let everyone = server
        .gql(
            Some(admin.token.as_str()),
            "{ students(first: 100) { nodes { id } } }",
            json!({}),
        )
        .await;
    let ids: Vec<&Value> = everyone["data"]["students"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert!(
        ids.contains(&&json!(other_student)),
        "the admin sees every institution"
    );
    let isolated = server
        .gql(
            Some(m),
            "query($f: PersonFilter) { students(filter: $f) { nodes { id } } }",
            json!({ "f": { "institutionId": b.id } }),
        )
        .await;
    assert_code(&isolated, "FORBIDDEN");
    let bad_cursor = server
        .gql(Some(m), list, json!({ "after": "nonsense" }))
        .await;
    assert_code(&bad_cursor, "VALIDATION");

    // The student's own reads.
    let mine = server
        .gql(
            Some(student.token.as_str()),
            "{ myGrades { id courseName examName note changedAt }
               myEnrollments { courseId applicationId status }
               myApplications { id courseId status } }",
            json!({}),
        )
        .await;
    assert_ok(&mine);
    let grades = &mine["data"]["myGrades"];
    assert_eq!(grades.as_array().unwrap().len(), 1);
    assert_eq!(grades[0]["id"], json!(grade));
    assert_eq!(grades[0]["note"], "8.25");
    assert!(grades[0]["changedAt"].is_string());
    assert_eq!(
        mine["data"]["myEnrollments"][0]["applicationId"],
        json!(application)
    );
    assert_eq!(mine["data"]["myEnrollments"][0]["status"], "enrolled");
    assert_eq!(mine["data"]["myApplications"][0]["id"], json!(application));
    assert_eq!(mine["data"]["myApplications"][0]["status"], "enrolled");

    // The teacher's: the course it grades in, and who it graded there.
    let taught = server
        .gql(
            Some(teacher.token.as_str()),
            "query($c: UUID!) { myCourses { courseId students grades } myStudents(courseId: $c) { id name } }",
            json!({ "c": course }),
        )
        .await;
    assert_ok(&taught);
    assert_eq!(taught["data"]["myCourses"][0]["courseId"], json!(course));
    assert_eq!(taught["data"]["myCourses"][0]["students"], 1);
    assert_eq!(taught["data"]["myStudents"][0]["id"], json!(ana));

    // Each read is for its own role.
    let refused = server
        .gql(
            Some(student.token.as_str()),
            "{ myCourses { courseId } }",
            json!({}),
        )
        .await;
    assert_code(&refused, "FORBIDDEN");
    let refused = server
        .gql(
            Some(student.token.as_str()),
            "{ students { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_code(&refused, "FORBIDDEN");
    let refused = server
        .gql(
            Some(teacher.token.as_str()),
            "{ myGrades { id } }",
            json!({}),
        )
        .await;
    assert_code(&refused, "FORBIDDEN");
    server.stop().await;
}

/// Each command mutation returns its own payload with the object a client shows next:
/// read-model objects are current with `waitForProjections: true`, aggregate ones always.
#[tokio::test(flavor = "multi_thread")]
async fn command_payloads_carry_the_changed_object() {
    let (server, _projections) = server_with_projections().await;
    let a = server.institution("Escola Payload").await;
    let m = Some(a.manager.token.as_str());
    let run = |mutation: &'static str,
               input: &'static str,
               selection: &'static str,
               vars: Value| {
        let server = &server;
        async move {
            let r = server
                .gql(
                    m,
                    &format!("mutation($i: {input}!) {{ {mutation}(input: $i, waitForProjections: true) {{ id logPosition {selection} }} }}"),
                    json!({ "i": vars }),
                )
                .await;
            assert_ok(&r);
            r["data"][mutation].clone()
        }
    };
    let campus = run(
        "createCampus",
        "CreateCampusInput",
        "campus { name city }",
        json!({ "name": "Sul", "city": "Faro" }),
    )
    .await;
    assert_eq!(campus["campus"], json!({ "name": "Sul", "city": "Faro" }));
    let campus_id = campus["id"].clone();
    let course = run(
        "offerCourse",
        "OfferCourseInput",
        "course { name capacity seatsLeft }",
        json!({ "campusId": campus_id, "name": "Física", "capacity": 2 }),
    )
    .await;
    assert_eq!(
        course["course"],
        json!({ "name": "Física", "capacity": 2, "seatsLeft": 2 })
    );
    let course_id = course["id"].clone();
    let resized = run(
        "changeCourseCapacity",
        "ChangeCourseCapacityInput",
        "course { capacity }",
        json!({ "courseId": course_id, "capacity": 3 }),
    )
    .await;
    assert_eq!(resized["course"]["capacity"], 3);
    let student = run(
        "createStudent",
        "CreateStudentInput",
        "student { name email active }",
        json!({ "name": "Rui Mota", "email": "rui.payload@aula.test", "birthDate": "2004-04-04" }),
    )
    .await;
    assert_eq!(student["student"]["name"], "Rui Mota");
    assert_eq!(student["student"]["active"], true);
    let teacher = run(
        "createTeacher",
        "CreateTeacherInput",
        "teacher { name }",
        json!({ "name": "Eva Luz", "email": "eva.payload@aula.test" }),
    )
    .await;
    assert_eq!(teacher["teacher"]["name"], "Eva Luz");

    let applied = server
        .gql(
            None,
            "mutation($i: ApplyToCourseInput!) { applyToCourse(input: $i, waitForProjections: true) { id application { status courseName } } }",
            json!({ "i": { "courseId": course_id, "name": "Rui Mota", "email": "rui.payload@aula.test", "birthDate": "2004-04-04" } }),
        )
        .await;
    assert_ok(&applied);
    assert_eq!(
        applied["data"]["applyToCourse"]["application"]["status"],
        "pending"
    );
    assert_eq!(
        applied["data"]["applyToCourse"]["application"]["courseName"],
        "Física"
    );
    let application: Uuid =
        serde_json::from_value(applied["data"]["applyToCourse"]["id"].clone()).unwrap();
    let course_uuid: Uuid = serde_json::from_value(course_id.clone()).unwrap();
    server.enroll(course_uuid, application).await;

    let grade = run("recordExamNote", "RecordExamNoteInput", "grade { examName note }", json!({ "courseId": course_id, "studentId": student["id"], "examName": "Final", "note": 9, "teacherId": teacher["id"] })).await;
    assert_eq!(
        grade["grade"],
        json!({ "examName": "Final", "note": "9.00" })
    );
    let changed = run(
        "changeExamNote",
        "ChangeExamNoteInput",
        "grade { note changedAt }",
        json!({ "examGradeId": grade["id"], "note": 9.5, "teacherId": teacher["id"] }),
    )
    .await;
    assert_eq!(changed["grade"]["note"], "9.50");
    let cancelled = run(
        "cancelEnrollment",
        "CancelEnrollmentInput",
        "enrollment { status cancelledOn }",
        json!({ "courseId": course_id, "applicationId": application }),
    )
    .await;
    assert_eq!(cancelled["enrollment"]["status"], "cancelled");
    let renamed = run(
        "updateUser",
        "UpdateUserInput",
        "user { name role }",
        json!({ "name": "Gestora Nova" }),
    )
    .await;
    assert_eq!(
        renamed["user"],
        json!({ "name": "Gestora Nova", "role": "MANAGER" })
    );
    server.stop().await;
}

/// Every operation on a webhook endpoint, made through the API, is in `auditLog` with
/// its actor and institution, in order; no record holds a secret, a key or the URL's
/// path and query.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_endpoint_operations_are_in_the_audit_log() {
    let (server, _projections) = server_with_projections().await;
    let a = server.institution("Escola Gancho").await;
    let manager = a.manager.token.clone();
    let gql = |query: &'static str, variables: Value| {
        let (server, manager) = (&server, manager.clone());
        async move {
            let r = server.gql(Some(&manager), query, variables).await;
            assert_ok(&r);
            r
        }
    };
    // A public address that is never contacted (nothing delivers in this test).
    let url = "https://93.184.216.34/hooks/secret-path-token?key=query-token";
    let created = gql(
        "mutation($u: String!) { createWebhookEndpoint(input: { url: $u, signatureScheme: v1a }) { secret endpoint { id signatureScheme publicKey } } }",
        json!({ "u": url }),
    )
    .await;
    let created = &created["data"]["createWebhookEndpoint"];
    assert!(
        created["secret"].is_null(),
        "a v1a secret key is never shown: {created}"
    );
    assert_eq!(created["endpoint"]["signatureScheme"], "v1a");
    let public_key = created["endpoint"]["publicKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(public_key.starts_with("whpk_"), "{public_key}");
    let endpoint: Uuid = created["endpoint"]["id"].as_str().unwrap().parse().unwrap();

    gql(
        "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { description: \"ERP\", enabled: false }) { id } }",
        json!({ "id": endpoint }),
    )
    .await;
    gql(
        "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { enabled: true }) { id } }",
        json!({ "id": endpoint }),
    )
    .await;
    let rotated = gql(
        "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id, previousSecretValidForMinutes: 60, signatureScheme: v1) { secret endpoint { signatureScheme publicKey } } }",
        json!({ "id": endpoint }),
    )
    .await;
    let rotated = &rotated["data"]["rotateWebhookEndpointSecret"];
    let secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{rotated}");
    assert!(rotated["endpoint"]["publicKey"].is_null(), "{rotated}");
    // A message to resend (nothing fans out here: written as the fan-out would).
    let message = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_messages (id, endpoint_id, event_id, event_type, institution_id,
                                       event_recorded_at, body, status, attempts)
         VALUES ($1, $2, $3, 'CampusCreated', $4, now(), '{}', 'failed', 8)",
    )
    .bind(message)
    .bind(endpoint)
    .bind(Uuid::new_v4())
    .bind(a.id)
    .execute(&server.db.pool)
    .await
    .unwrap();
    gql(
        "mutation($m: String!) { resendWebhookMessage(messageId: $m) { id } }",
        json!({ "m": message.to_string() }),
    )
    .await;
    let recovery = gql(
        "mutation($id: UUID!) { recoverWebhookEndpoint(endpointId: $id, since: \"2026-01-01T00:00:00Z\") { id } }",
        json!({ "id": endpoint }),
    )
    .await;
    let recovery = recovery["data"]["recoverWebhookEndpoint"]["id"].clone();
    gql(
        "mutation($r: UUID!) { cancelWebhookRecovery(id: $r) { id } }",
        json!({ "r": recovery }),
    )
    .await;
    gql(
        "mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }",
        json!({ "id": endpoint }),
    )
    .await;

    let expected = [
        "WebhookEndpointCreated",
        "WebhookEndpointUpdated",
        "WebhookEndpointDisabled",
        "WebhookEndpointEnabled",
        "WebhookEndpointSecretRotated",
        "WebhookMessageResent",
        "WebhookRecoveryStarted",
        "WebhookRecoveryCancelled",
        "WebhookEndpointDeleted",
    ];
    let query = "query($f: AuditLogFilter) { auditLog(filter: $f, first: 50, direction: ASC) { nodes { eventType actor actorUserId institutionId aggregateType aggregateId sequence requestId } } }";
    let filter = json!({ "f": { "aggregateType": "webhook_endpoint", "aggregateId": endpoint.to_string() } });
    let mut nodes = Vec::new();
    for _ in 0..200 {
        let r = gql(query, filter.clone()).await;
        nodes = r["data"]["auditLog"]["nodes"].as_array().unwrap().clone();
        if nodes.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let types: Vec<&str> = nodes
        .iter()
        .map(|n| n["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, expected, "{nodes:?}");
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["actor"], format!("user:{}", a.manager.id), "{node}");
        assert_eq!(node["actorUserId"], a.manager.id.to_string(), "{node}");
        assert_eq!(node["institutionId"], a.id.to_string(), "{node}");
        assert_eq!(node["sequence"], json!(i + 1), "{node}");
        assert!(node["requestId"].is_string(), "{node}");
    }
    // A manager of another institution sees none of them.
    let b = server.institution("Escola Outra").await;
    let r = server
        .gql(
            Some(&b.manager.token),
            query,
            json!({ "f": { "aggregateType": "webhook_endpoint", "institutionId": b.id } }),
        )
        .await;
    assert_eq!(r["data"]["auditLog"]["nodes"], json!([]), "{r}");
    // No record holds a secret, a key or more of the URL than its origin.
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_type = 'webhook_endpoint' AND aggregate_id = $1",
    )
    .bind(endpoint.to_string())
    .fetch_all(&server.db.pool)
    .await
    .unwrap();
    let keys: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT unnest(ARRAY[secret, previous_secret]) FROM webhook_endpoints WHERE id = $1",
    )
    .bind(endpoint)
    .fetch_all(&server.db.pool)
    .await
    .unwrap();
    let encoded: Vec<String> = keys
        .iter()
        .map(|k| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k))
        .collect();
    for payload in &payloads {
        for forbidden in [
            "secret-path-token",
            "query-token",
            "whsec_",
            "whsk_",
            "whpk_",
            secret.trim_start_matches("whsec_"),
            public_key.trim_start_matches("whpk_"),
        ]
        .into_iter()
        .chain(encoded.iter().map(String::as_str))
        {
            assert!(!payload.contains(forbidden), "{forbidden} in {payload}");
        }
    }
    assert!(
        payloads[0].contains("https://93.184.216.34"),
        "{}",
        payloads[0]
    );
    // Every other read model passes over these events without failing.
    let admin = server.admin().await;
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let r = server
            .gql(
                Some(&admin.token),
                "{ projectionStatus { name lagEvents lastError } }",
                json!({}),
            )
            .await;
        assert_ok(&r);
        statuses = r["data"]["projectionStatus"].as_array().unwrap().clone();
        if statuses.iter().all(|p| p["lagEvents"] == json!(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(statuses.len() >= 6, "{statuses:?}");
    for status in &statuses {
        assert_eq!(status["lagEvents"], json!(0), "{status}");
        assert!(status["lastError"].is_null(), "{status}");
    }
}
