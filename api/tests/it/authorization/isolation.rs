//! Institution isolation: a user of one institution, and an observer, against
//! another institution's data.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_user_of_institution_b_cannot_touch_institution_a() {
    let server = TestServer::start().await;
    let w = world(&server).await;
    let b = server.institution("Escola Rival").await;
    let bm = b.manager.token.as_str();
    let (b_teacher_id, b_teacher_email) = server.teacher(bm, None).await;
    let b_teacher = server.activate(b_teacher_id, &b_teacher_email).await;
    let recorded = server
        .record_exam_note(&w.teacher.token, w.course, w.student.id, "Quiz", 7.0)
        .await;
    let a_grade = id(&recorded, "recordExamNote");
    let application = server.application(w.course).await;
    server.enroll(w.course, application).await;

    let attempts: Vec<(&str, &str, Value)> = vec![
        (
            bm,
            "createCampus",
            json!({ "institutionId": w.a.id, "name": "Intruder", "city": "X" }),
        ),
        (
            bm,
            "offerCourse",
            json!({ "institutionId": w.a.id, "campusId": w.campus, "name": "Intruder", "capacity": 3 }),
        ),
        (
            bm,
            "changeCourseCapacity",
            json!({ "courseId": w.course, "capacity": 1 }),
        ),
        (
            bm,
            "createStudent",
            json!({ "institutionId": w.a.id, "name": "I", "email": unique("i"), "birthDate": "2000-01-01" }),
        ),
        (
            bm,
            "createTeacher",
            json!({ "institutionId": w.a.id, "name": "I", "email": unique("i") }),
        ),
        (
            bm,
            "cancelEnrollment",
            json!({ "courseId": w.course, "applicationId": application }),
        ),
        (
            bm,
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": "Hack", "note": 10, "teacherId": b_teacher.id }),
        ),
        (
            &b_teacher.token,
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": "Hack", "note": 10 }),
        ),
        (
            &b_teacher.token,
            "changeExamNote",
            json!({ "examGradeId": a_grade, "note": 10 }),
        ),
        (
            bm,
            "changeExamNote",
            json!({ "examGradeId": a_grade, "note": 10, "teacherId": b_teacher.id }),
        ),
        (
            bm,
            "updateUser",
            json!({ "userId": w.student.id, "name": "Hacked" }),
        ),
        (
            bm,
            "updateUser",
            json!({ "userId": w.admin.id, "name": "Hacked" }),
        ),
        (
            bm,
            "deactivateUser",
            json!({ "userId": w.a.manager.id, "reason": "hostile" }),
        ),
        (
            bm,
            "deactivateUser",
            json!({ "userId": w.admin.id, "reason": "hostile" }),
        ),
    ];
    for (token, mutation, input) in attempts {
        let r = server.command(Some(token), mutation, input.clone()).await;
        assert_eq!(
            code(&r).as_deref(),
            Some("FORBIDDEN"),
            "{mutation} {input}: {r}"
        );
    }
    // Webhooks: B's manager can neither see nor change A's endpoints.
    let created = server
        .gql(
            Some(w.a.manager.token.as_str()),
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id institutionId } } }",
            json!({ "input": { "url": WEBHOOK_URL } }),
        )
        .await;
    let a_endpoint = created["data"]["createWebhookEndpoint"]["endpoint"]["id"].clone();
    assert_eq!(
        created["data"]["createWebhookEndpoint"]["endpoint"]["institutionId"],
        json!(w.a.id)
    );
    for (query, variables) in [
        (
            "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id) { secret } }",
            json!({ "id": a_endpoint }),
        ),
        (
            "mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }",
            json!({ "id": a_endpoint }),
        ),
        (
            "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { enabled: false }) { id } }",
            json!({ "id": a_endpoint }),
        ),
        (
            "query($i: UUID) { webhookEndpoints(institutionId: $i) { id } }",
            json!({ "i": w.a.id }),
        ),
        (
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
            json!({ "input": { "url": WEBHOOK_URL, "institutionId": w.a.id } }),
        ),
    ] {
        let r = server.gql(Some(bm), query, variables.clone()).await;
        assert_code(&r, "FORBIDDEN");
    }
    let listed = server.query(bm, "{ webhookEndpoints { id } }").await;
    assert_eq!(listed["data"]["webhookEndpoints"], json!([]), "{listed}");
    // Queue controls: B's manager cannot touch A's tasks, nor read their audit rows.
    let a_task = waiting_task(&server, w.a.id).await;
    for mutation in [
        "mutation($t: BigInt!) { cancelTask(taskId: $t) { status } }",
        "mutation($t: BigInt!) { forceReleaseTask(taskId: $t) { status } }",
        "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 1) { priority } }",
    ] {
        let r = server
            .gql(Some(bm), mutation, json!({ "t": a_task.to_string() }))
            .await;
        assert_code(&r, "FORBIDDEN");
    }
    let r = server
        .gql(
            Some(&w.a.manager.token),
            "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 1) { priority } }",
            json!({ "t": a_task.to_string() }),
        )
        .await;
    assert_eq!(r["data"]["setTaskPriority"]["priority"], json!(1), "{r}");
    let r = server.query(bm, "{ queueControlLog { taskId } }").await;
    assert_eq!(r["data"]["queueControlLog"], json!([]), "{r}");
    // B's teacher recording for A's student on B's own course: still forbidden.
    let b_campus = server.campus(bm, None).await;
    let b_course = server.course(bm, None, b_campus).await;
    let r = server
        .record_exam_note(&b_teacher.token, b_course, w.student.id, "Hack", 10.0)
        .await;
    assert_code(&r, "FORBIDDEN");
    for (input, expected) in [
        // B's manager using A's campus id inside B's own institution finds nothing.
        (
            json!({ "campusId": w.campus, "name": "Sneaky", "capacity": 3 }),
            "NOT_FOUND",
        ),
        // B's manager offering A's course (its id is public) on B's own campus: refused,
        // and the course does not become B's, so A's age statistics stay A's.
        (
            json!({ "courseId": w.course, "campusId": b_campus, "name": "Sneaky", "capacity": 3 }),
            "CONFLICT",
        ),
    ] {
        let r = server.command(Some(bm), "offerCourse", input).await;
        assert_code(&r, expected);
    }
    let offered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'CourseOffered'",
    )
    .bind(b.id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(offered, 1, "only B's own course was offered in B");
    for (query, variables) in [
        (
            "query($ids: [UUID!]) { ageMetrics(scope: COURSE, ids: $ids) { nodes { scopeId } } }",
            json!({ "ids": [w.course] }),
        ),
        (
            "query($i: UUID) { campuses(institutionId: $i) { id } }",
            json!({ "i": w.a.id }),
        ),
    ] {
        let r = server.gql(Some(bm), query, variables).await;
        assert_code(&r, "FORBIDDEN");
    }

    // Nothing of A changed: still one campus, the grade and the names as they were.
    let r = server
        .query(&w.a.manager.token, "{ campuses { id } }")
        .await;
    assert_eq!(r["data"]["campuses"].as_array().unwrap().len(), 1);
    let me = server.query(&w.student.token, "{ me { name } }").await;
    assert_eq!(me["data"]["me"]["name"], "Sam Student");
    assert_ok(&server.login(&w.a.manager.email, PASSWORD).await);
    // A's own manager can still act on the enrollment B could not cancel.
    let r = server
        .cancel_enrollment(&w.a.manager.token, w.course, application)
        .await;
    assert_ok(&r);
    server.stop().await;
}

/// Issue #23: an institution's observer reads its institution only, like its manager,
/// and a search cannot reach what its reads withhold (task error texts).
#[tokio::test(flavor = "multi_thread")]
async fn an_observer_of_institution_a_reads_a_only() {
    let (server, a) = TestServer::with_institution("Escola Observada").await;
    let b = server.institution("Escola Vizinha").await;
    let observer = server.observer(&a.manager.token, None).await;
    let o = Some(observer.token.as_str());
    for (query, variables) in [
        (
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { eventId } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        (
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { id } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        (
            "query($i: UUID) { processingSeries(range: LAST_HOUR, institutionId: $i) { width } }",
            json!({ "i": b.id }),
        ),
        (
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { id } } }",
            json!({ "f": { "search": "smtp" } }),
        ),
        (
            "query($f: PersonFilter) { students(filter: $f) { nodes { id } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        ("{ projectionStatus { name } }", json!({})),
        (
            "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
            json!({ "input": { "name": "Another Observer", "email": unique("o2") } }),
        ),
    ] {
        let r = server.gql(o, query, variables.clone()).await;
        assert_code(&r, "FORBIDDEN");
    }
    // Its own institution: every event listed is A's, and its series is A's.
    let listed = server
        .query(
            &observer.token,
            "{ adminEvents(first: 50) { nodes { institutionId } } }",
        )
        .await;
    assert_ok(&listed);
    let nodes = listed["data"]["adminEvents"]["nodes"].as_array().unwrap();
    assert!(
        nodes.iter().all(|n| n["institutionId"] == json!(a.id)),
        "{listed}"
    );
    let series = server
        .query(
            &observer.token,
            "{ processingSeries(range: LAST_24_HOURS) { institutionId width points { at } } }",
        )
        .await;
    assert_ok(&series);
    assert_eq!(
        series["data"]["processingSeries"]["institutionId"],
        json!(a.id)
    );
    assert_eq!(series["data"]["processingSeries"]["width"], "HOUR");
    assert_eq!(
        series["data"]["processingSeries"]["points"]
            .as_array()
            .unwrap()
            .len(),
        24
    );
    // A manager cannot make a platform-wide observer, nor one of another institution.
    let r = server
        .gql(
            Some(&a.manager.token),
            "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
            json!({ "input": { "name": "Sneaky Observer", "email": unique("o3"), "institutionId": b.id } }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");
    server.stop().await;
}
