//! The read-model queries and the people lists, with each person's own reads.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn read_model_queries_answer_from_the_projections() {
    let w = world().await;
    let s = &w.server;
    let manager = w.a.manager.token.as_str();
    let as_manager = |query: &'static str, vars: Value| s.gql(Some(manager), query, vars);

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
    let r = as_manager(CAPACITIES, json!({ "s": sort, "f": 1 })).await;
    let page = data(&r, "courseCapacities");
    assert_eq!(page["nodes"][0]["courseId"], w.course.to_string());
    assert_eq!(page["nodes"][0]["enrolled"], 2);
    let cursor = page["nextCursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let r = as_manager(CAPACITIES, json!({ "s": sort, "f": 1, "a": cursor })).await;
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
    assert_eq!(nodes_of(&r, "courseCapacities").len(), 2);
    let r = s
        .gql(Some(&w.admin.token), CAPACITIES, json!({ "f": 10 }))
        .await;
    assert_eq!(nodes_of(&r, "courseCapacities").len(), 3);
    // A page size over the maximum is refused.
    let r = as_manager(CAPACITIES, json!({ "f": 101 })).await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "first");

    // ageMetrics: ages 26 and 19 in the course, campus and institution.
    for (scope, id) in [
        ("COURSE", w.course),
        ("CAMPUS", w.campus),
        ("INSTITUTION", w.a.id),
    ] {
        let r = as_manager(AGES, json!({ "s": scope, "ids": [id] })).await;
        let nodes = nodes_of(&r, "ageMetrics");
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
    assert_eq!(only_node(&r, "ageMetrics")["scopeId"], w.a.id.to_string());

    // courseEnrollments, by name descending.
    let r = as_manager(
        ENROLLMENTS,
        json!({ "c": w.course, "x": false, "s": { "field": "NAME", "direction": "DESC" } }),
    )
    .await;
    let nodes = nodes_of(&r, "courseEnrollments");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["applicationId"], w.younger.to_string());
    assert_eq!(nodes[0]["ageYears"], 19);
    assert_eq!(nodes[1]["applicationId"], w.older.to_string());
    assert_eq!(nodes[1]["enrolledOn"], "2026-03-02");

    // Cancelling the youngest: gone from the list unless asked, and from the metrics.
    let r = as_manager(
        "mutation($c: UUID!, $a: UUID!) { cancelEnrollment(input: { courseId: $c, applicationId: $a }, waitForProjections: true) { projectionsCaughtUp } }",
        json!({ "c": w.course, "a": w.younger }),
    )
    .await;
    assert_eq!(data(&r, "cancelEnrollment")["projectionsCaughtUp"], true);
    let r = as_manager(ENROLLMENTS, json!({ "c": w.course, "x": false })).await;
    assert_eq!(nodes_of(&r, "courseEnrollments").len(), 1);
    let r = as_manager(ENROLLMENTS, json!({ "c": w.course, "x": true })).await;
    let nodes = nodes_of(&r, "courseEnrollments");
    assert_eq!(nodes.len(), 2);
    let cancelled: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["status"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["applicationId"], w.younger.to_string());
    let r = as_manager(AGES, json!({ "s": "COURSE", "ids": [w.course] })).await;
    let node = &data(&r, "ageMetrics")["nodes"][0];
    assert_eq!(
        (&node["students"], &node["minAge"], &node["maxAge"]),
        (&json!(1), &json!(26), &json!(26))
    );

    // auditLog: a manager sees only its institution, newest first, in pages.
    let r = as_manager(AUDIT, json!({ "n": 2 })).await;
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
    let r = as_manager(AUDIT, json!({ "n": 100, "a": page["nextCursor"] })).await;
    let rest = nodes_of(&r, "auditLog");
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
    assert_eq!(nodes_of(&r, "auditLog").len(), 2);

    // adminEvents: by type and institution, sorted, paginated.
    let opened = course_opened(&w, w.a.id).await;
    assert_eq!(opened.len(), 2);
    assert!(opened
        .iter()
        .all(|e| e["institutionId"] == w.a.id.to_string()));
    let r = as_manager(
        EVENTS,
        json!({ "f": { "types": ["CourseOpened", "CampusCreated"] }, "s": { "field": "EVENT_TYPE", "direction": "ASC" }, "n": 1 }),
    )
    .await;
    let page = data(&r, "adminEvents").clone();
    assert_eq!(page["nodes"][0]["eventType"], "CampusCreated");
    let mut seen = vec![page["nodes"][0]["eventId"].clone()];
    let mut cursor = page["nextCursor"].clone();
    while !cursor.is_null() {
        let r = as_manager(
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
    assert_eq!(
        only_node(&r, "adminEvents")["institutionId"],
        w.b.id.to_string()
    );
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
    assert!(nodes_of(&r, "adminEvents").len() >= 3);
    let r = as_manager(EVENTS, json!({ "n": 1, "a": "not a cursor" })).await;
    assert_code(&r, "VALIDATION");

    // adminEvent: one event, no copies yet.
    let r = as_manager(EVENT, json!({ "e": opened[0]["eventId"] })).await;
    let event = data(&r, "adminEvent");
    assert_eq!(event["eventType"], "CourseOpened");
    assert_eq!(event["copyCount"], 0);
    assert_eq!(event["copies"], json!([]));
    let r = as_manager(EVENT, json!({ "e": Uuid::new_v4() })).await;
    assert_code(&r, "NOT_FOUND");

    // projectionStatus: every projection, caught up, no error.
    let r = s.query(&w.admin.token, STATUS).await;
    let rows = data(&r, "projectionStatus").as_array().unwrap().clone();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, aula_projections::NAMES);
    assert!(rows
        .iter()
        .all(|r| r["position"].as_i64().unwrap() > 0 && r["lastError"].is_null()));
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
    let (_, course) = server.campus_with_course(m).await;

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
        .record_exam_note(&teacher.token, course, ana, "Midterm", 7.5)
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
    let page1 = server.query(m, list).await;
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
    let teachers = server.query(m, "{ teachers { nodes { id } } }").await;
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
    for (token, query) in [
        (&student.token, "{ myCourses { courseId } }"),
        (&student.token, "{ students { nodes { id } } }"),
        (&teacher.token, "{ myGrades { id } }"),
    ] {
        assert_code(&server.query(token, query).await, "FORBIDDEN");
    }
    server.stop().await;
}
