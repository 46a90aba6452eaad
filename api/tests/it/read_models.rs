//! The read-model queries and the admin operations, over HTTP against the real server
//! with every projection running: data comes from real mutations, queries wait for the
//! projections through `waitForProjections: true`.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

mod admin;
mod payloads;
mod queries;

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

/// The `nodes` of the page a successful query returned as `field`.
fn nodes_of<'a>(r: &'a Value, field: &str) -> &'a Vec<Value> {
    data(r, field)["nodes"].as_array().unwrap()
}

/// The one node of `field`'s page, asserted to be alone.
fn only_node<'a>(r: &'a Value, field: &str) -> &'a Value {
    let nodes = nodes_of(r, field);
    assert_eq!(nodes.len(), 1, "{r}");
    &nodes[0]
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
    let (campus, course) = server.campus_with_course(&manager).await;
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
    nodes_of(&r, "adminEvents").clone()
}
