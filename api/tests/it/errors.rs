//! Every error code, the identity cases (expired token, lockout, expired reset token),
//! limits, rate limiting, read-your-writes, health and readiness.

use crate::common;

use std::time::Duration;

use aula_api::TokenKind;
use chrono::Duration as Span;
use common::*;
use serde_json::{json, Value};

mod held_log;
mod identity;
mod lockout;
mod service;

async fn post_raw(server: &TestServer, body: &'static str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_code_is_reported() {
    let (server, a) = TestServer::with_institution("Escola A").await;
    let manager = a.manager.token.as_str();

    // VALIDATION, with the input field and the reason.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "name": "  ", "city": "Braga" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "name");
    assert_eq!(extension(&r, "reason"), "EMPTY");
    let r = server
        .command(
            None,
            "signUp",
            json!({ "email": "x".repeat(300) + "@aula.test" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "email");
    assert_eq!(extension(&r, "reason"), "TOO_LONG");

    // NOT_FOUND.
    let r = server
        .command(
            Some(manager),
            "changeCourseCapacity",
            json!({ "courseId": uuid::Uuid::new_v4(), "capacity": 10 }),
        )
        .await;
    assert_reason(&r, "NOT_FOUND", "COURSE_NOT_FOUND");

    // CONFLICT.
    let campus = server.campus(manager, None).await;
    let name = json!({ "campusId": campus, "name": "Physics", "capacity": 2 });
    assert_ok(
        &server
            .command(Some(manager), "offerCourse", name.clone())
            .await,
    );
    let r = server.command(Some(manager), "offerCourse", name).await;
    assert_reason(&r, "CONFLICT", "DUPLICATE_COURSE_NAME");

    // UNAUTHENTICATED: no token on a protected operation, a forged token anywhere.
    let r = server
        .command(None, "createCampus", json!({ "name": "X", "city": "Y" }))
        .await;
    assert_code(&r, "UNAUTHENTICATED");
    let forged = format!("{}x", &manager[..manager.len() - 1]);
    let r = server.query(&forged, "{ health { status } }").await;
    assert_code(&r, "UNAUTHENTICATED");
    let r = server.query("not-a-token", "{ me { id } }").await;
    assert_code(&r, "UNAUTHENTICATED");

    // FORBIDDEN: a manager may not create what only exists for another institution.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "institutionId": uuid::Uuid::new_v4(), "name": "X", "city": "Y" }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");

    // UNAVAILABLE: the database goes away; the client gets a generic, retryable
    // answer (503, Retry-After) and the request id, never the internal text.
    server.db.pool.close().await;
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("x-request-id", "req-42")
        .bearer_auth(manager)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let r: Value = response.json().await.unwrap();
    assert_code(&r, "UNAVAILABLE");
    assert_eq!(
        r["errors"][0]["message"],
        "the service is temporarily unavailable; retry shortly"
    );
    assert_eq!(extension(&r, "requestId"), "req-42");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_clear_errors_not_500() {
    let server = TestServer::start_with(|c| {
        c.body_limit_bytes = 4096;
        c.max_query_depth = 3;
    })
    .await;
    let (status, r) = post_raw(&server, "{\"query\": ").await;
    assert_eq!(status, 400);
    assert_reason(&r, "VALIDATION", "MALFORMED_JSON");

    let (status, r) = post_raw(&server, "[1, 2]").await;
    assert_eq!(status, 400);
    assert_eq!(extension(&r, "reason"), "INVALID_REQUEST");

    let huge = format!(
        "{{\"query\": \"{{ health {{ status }} }}\", \"x\": \"{}\"}}",
        "a".repeat(10_000)
    );
    let response = server
        .client
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let r: Value = response.json().await.unwrap();
    assert_eq!(extension(&r, "reason"), "TOO_LARGE");

    // Unknown field, wrong type, syntax error, too deep: VALIDATION.
    for query in [
        "{ nope }",
        "{ campuses(first: \"ten\") { id } }",
        "{ health { ",
        "{ health { status } } # ok",
    ] {
        let r = server.gql(None, query, json!({})).await;
        if query.ends_with("# ok") {
            assert_ok(&r);
        } else {
            assert_code(&r, "VALIDATION");
        }
    }
    let r = server.command(None, "signUp", json!({ "email": 42 })).await;
    assert_code(&r, "VALIDATION");
    let r = server
        .gql(
            None,
            "{ __schema { types { fields { type { ofType { name } } } } } }",
            json!({}),
        )
        .await;
    assert_code(&r, "VALIDATION");
    server.stop().await;
}

/// A body that is JSON but not a GraphQL request is refused in plain, stable words
/// that name the fields a request has, never a Rust type ("expected struct Request",
/// "invalid type: map, expected a string" for a batch).
#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_of_the_wrong_shape_are_refused_in_plain_words() {
    let server = TestServer::start().await;
    let shape = "the request body must be a JSON object with a `query` string, and \
         optionally `variables` (an object), `operationName` (a string) and `extensions` \
         (an object)";
    let batch = "batch requests are not supported: send one operation per request, as a \
         JSON object with a `query` string";
    let cases: [(&'static str, &str); 8] = [
        ("\"hello\"", shape),
        ("42", shape),
        ("null", shape),
        ("[{\"query\": \"{ health { status } }\"}]", batch),
        (
            "{\"query\": 42}",
            "`query` must be a string holding the GraphQL document",
        ),
        (
            "{\"query\": \"{ health { status } }\", \"variables\": [1]}",
            "`variables` must be a JSON object or null",
        ),
        (
            "{\"query\": \"{ health { status } }\", \"operationName\": 5}",
            "`operationName` must be a string or null",
        ),
        (
            "{\"query\": \"{ health { status } }\", \"extensions\": \"x\"}",
            "`extensions` must be a JSON object or null",
        ),
    ];
    for (body, message) in cases {
        let (status, r) = post_raw(&server, body).await;
        assert_eq!(status, 400, "{body}: {r}");
        assert_reason(&r, "VALIDATION", "INVALID_REQUEST");
        assert_eq!(extension(&r, "field"), "body", "{body}");
        assert_eq!(r["errors"][0]["message"], message, "{body}");
        let text = r.to_string();
        for leak in ["struct", "invalid type", "Request"] {
            assert!(!text.contains(leak), "{body}: {text}");
        }
    }
    // A well-formed request still runs.
    let (status, r) = post_raw(&server, "{\"query\": \"{ health { status } }\"}").await;
    assert_eq!(status, 200);
    assert_ok(&r);
    server.stop().await;
}

/// What an applicant sees when the application cannot be accepted at once: a closed
/// or unknown course, a key reused for other input, and a timeout that says whether
/// the application was recorded (here it was not: the log is locked).
#[tokio::test(flavor = "multi_thread")]
async fn an_application_is_answered_plainly_even_when_it_times_out() {
    let server = TestServer::start_with(|config| {
        config.request_timeout = Duration::from_secs(6);
    })
    .await;
    let a = server.institution("Escola Prazo").await;
    let manager = a.manager.token.as_str();
    let (_, course) = server.campus_with_course(manager).await;
    let apply = |email: &str, key: Option<&str>| json!({ "courseId": course, "name": "Tim Out", "birthDate": "2004-01-02", "email": email, "idempotencyKey": key });

    let unknown = server
        .command(
            None,
            "applyToCourse",
            json!({ "courseId": uuid::Uuid::new_v4(), "name": "Tim Out", "birthDate": "2004-01-02", "email": "t@o.pt" }),
        )
        .await;
    assert_code(&unknown, "NOT_FOUND");
    let bad_key = server
        .command(None, "applyToCourse", apply("t@o.pt", Some("")))
        .await;
    assert_code(&bad_key, "VALIDATION");
    assert_eq!(extension(&bad_key, "field"), "idempotencyKey");

    // The events table is locked against writes: the application cannot be recorded.
    let mut lock = server.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let late = server
        .command(None, "applyToCourse", apply("late@o.pt", Some("late-1")))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(5_800),
        "answered before the request timeout (at 80 % of it)"
    );
    assert_code(&late, "TIMEOUT");
    assert_eq!(extension(&late, "recorded"), false, "{late}");
    let message = late["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("not recorded"), "{message}");
    assert!(!message.contains("attempts"), "{message}");
    lock.rollback().await.unwrap();

    // Sending it again is safe: one application, the id the timeout named.
    let again = server
        .command(None, "applyToCourse", apply("late@o.pt", Some("late-1")))
        .await;
    assert_eq!(
        id(&again, "applyToCourse").to_string(),
        extension(&late, "id").as_str().unwrap()
    );
    let other = server
        .command(None, "applyToCourse", apply("other@o.pt", Some("late-1")))
        .await;
    assert_reason(&other, "CONFLICT", "IDEMPOTENCY_KEY_REUSED");

    // A closed course takes no more applications.
    use aula_domain::course::{Course, CourseCommand};
    aula_eventlog::CommandBus::<Course>::with_upcasters(
        server.db.pool.clone(),
        Default::default(),
        aula_domain::upcasters(),
    )
    .execute(
        &course.to_string(),
        CourseCommand::CloseCourse,
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await
    .unwrap();
    let closed = server
        .command(None, "applyToCourse", apply("closed@o.pt", None))
        .await;
    assert_reason(&closed, "CONFLICT", "COURSE_CLOSED");
    server.stop().await;
}

/// A form with several mistakes is answered with all of them at once
/// (`extensions.fields`), and `field`/`reason` still name the first.
#[tokio::test(flavor = "multi_thread")]
async fn every_refused_input_field_is_reported_at_once() {
    let (server, a) = TestServer::with_institution("Escola Campos").await;
    let manager = a.manager.token.as_str();

    let r = server
        .command(
            Some(manager),
            "createStudent",
            json!({ "name": " ", "email": "not-an-email", "birthDate": "31-31-2000" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "name");
    let fields: Vec<&str> = extension(&r, "fields")
        .as_array()
        .expect("fields is a list")
        .iter()
        .map(|p| p["field"].as_str().expect("each names its field"))
        .collect();
    assert_eq!(fields, ["name", "email", "birthDate"]);
    for problem in extension(&r, "fields").as_array().unwrap() {
        assert!(problem["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(problem["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let message = r["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("3 inputs are invalid"), "{message}");

    // One mistake: the same shape, a one-element list.
    let r = server
        .command(
            Some(manager),
            "createCampus",
            json!({ "name": "Norte", "city": "" }),
        )
        .await;
    assert_code(&r, "VALIDATION");
    assert_eq!(extension(&r, "field"), "city");
    assert_eq!(extension(&r, "fields").as_array().map(Vec::len), Some(1));
}

/// Statuses are enums and filters name real event types and task kinds: a typo is a
/// VALIDATION error, never a silently empty list.
#[tokio::test(flavor = "multi_thread")]
async fn filters_refuse_unknown_statuses_types_and_kinds() {
    let (server, admin) = TestServer::with_admin().await;
    let token = Some(admin.token.as_str());

    let r = server
        .gql(
            token,
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { status } } }",
            json!({ "f": { "status": "faild" } }),
        )
        .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("faild")),
        "{r}"
    );
    assert!(r["data"].is_null(), "{r}");

    for (query, filter, field, reason) in [
        (
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { status } } }",
            json!({ "types": ["StudentEnroled"] }),
            "types",
            "UNKNOWN_EVENT_TYPE",
        ),
        (
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { status } } }",
            json!({ "kinds": ["email.welcom"] }),
            "kinds",
            "UNKNOWN_TASK_KIND",
        ),
    ] {
        let r = server.gql(token, query, json!({ "f": filter })).await;
        assert_reason(&r, "VALIDATION", reason);
        assert_eq!(extension(&r, "field"), field);
    }

    // The real names pass, and statuses come back as the enum's values.
    let r = server
        .gql(
            token,
            "query($f: AdminEventFilter, $t: AdminTaskFilter) {
               adminEvents(filter: $f) { nodes { status } }
               adminTasks(filter: $t) { nodes { status } } }",
            json!({ "f": { "types": ["InstitutionCreated"], "status": "succeeded" },
                    "t": { "kinds": ["email.welcome"], "status": "pending" } }),
        )
        .await;
    assert_ok(&r);

    // 64-bit values travel as BigInt: a string is accepted where a number is.
    let r = server
        .gql(
            token,
            "query($p: BigInt!) { projectionsReached(logPosition: $p) }",
            json!({ "p": "1" }),
        )
        .await;
    assert_ok(&r);
}
