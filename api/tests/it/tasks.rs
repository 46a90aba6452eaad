//! `adminTasks` (the dashboard's task list), `adminEventDetail` and `dashboardFacets`
//! over HTTP against the real server: who may ask, the manager's institution scope,
//! every sort in both directions, and keyset pages that cover the list exactly once.

use crate::common;

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{assert_code, assert_ok, insert_waiting_task, TestServer};
use serde_json::{json, Value};
use uuid::Uuid;

mod queue_controls;

const LIST: &str = "query($filter: AdminTaskFilter, $sort: AdminTaskSort, $first: Int!, $after: String) {
    adminTasks(filter: $filter, sort: $sort, first: $first, after: $after) {
        nodes { id kind status attempt maxAttempts institutionId createdAt finishedAt durationMs lastError eventId }
        nextCursor } }";

struct Seed {
    kind: &'static str,
    status: &'static str,
    institution: Option<Uuid>,
    duration_ms: Option<i64>,
    attempt: i32,
}

/// Inserts tasks as the processor leaves them (created, claimed, finished).
async fn seed(server: &TestServer, tasks: &[Seed]) -> Vec<i64> {
    let base: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
    let mut ids = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let created = base + Duration::seconds(i as i64 * 7 % 11);
        let started = created + Duration::milliseconds(5);
        let finished = task
            .duration_ms
            .map(|ms| started + Duration::milliseconds(ms));
        let error = matches!(task.status, "failed" | "dead").then_some("send: connect: refused");
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO tasks (kind, status, idempotency_key, institution_id, created_at, started_at,
                 finished_at, attempt, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(task.kind)
        .bind(task.status)
        .bind(format!("seed-{i}-{}", Uuid::new_v4()))
        .bind(task.institution)
        .bind(created)
        .bind((task.status != "pending").then_some(started))
        .bind(finished)
        .bind(task.attempt)
        .bind(error)
        .fetch_one(&server.db.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

fn ids(response: &Value) -> Vec<i64> {
    response["data"]["adminTasks"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no page: {response}"))
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

/// Every page of a sort, `first` at a time.
async fn walk(
    server: &TestServer,
    token: &str,
    sort: Value,
    filter: Value,
    first: i64,
) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let page = server
            .gql(
                Some(token),
                LIST,
                json!({ "filter": filter, "sort": sort, "first": first, "after": after }),
            )
            .await;
        assert_ok(&page);
        let list = &page["data"]["adminTasks"];
        all.extend(list["nodes"].as_array().unwrap().iter().cloned());
        match list["nextCursor"].as_str() {
            Some(cursor) => after = Some(cursor.to_owned()),
            None => return all,
        }
    }
    panic!("more than 100 pages");
}

/// Every task of the list `filter` selects (default order, pages of 100).
async fn walk_filtered(server: &TestServer, token: &str, filter: Value) -> Vec<Value> {
    walk(server, token, Value::Null, filter, 100).await
}

/// The whole unfiltered list in `sort` order, in pages of `first`.
async fn walk_sorted(server: &TestServer, token: &str, sort: Value, first: i64) -> Vec<Value> {
    walk(server, token, sort, Value::Null, first).await
}

/// A server with an admin and the [`mixed`] tasks of two institutions that have no
/// staff (only the admin lists them): the seeds, and their task ids.
async fn mixed_list() -> (TestServer, common::Actor, Vec<Seed>, Vec<i64>) {
    let (server, admin) = TestServer::with_admin().await;
    let seeds = mixed(Uuid::new_v4(), Uuid::new_v4());
    let ids = seed(&server, &seeds).await;
    (server, admin, seeds, ids)
}

fn mixed(a: Uuid, b: Uuid) -> Vec<Seed> {
    let kinds = ["email.welcome", "enrollment.decide", "notification.grade"];
    let statuses = [
        "succeeded",
        "dead",
        "pending",
        "failed",
        "succeeded",
        "running",
    ];
    (0..14)
        .map(|i| Seed {
            kind: kinds[i % 3],
            status: statuses[i % 6],
            institution: match i % 3 {
                0 => Some(a),
                1 => Some(b),
                _ => None,
            },
            duration_ms: match statuses[i % 6] {
                "pending" | "running" => None,
                // Ties on purpose: the id breaks them.
                _ => Some([40, 5, 40, 900, 12][i % 5]),
            },
            attempt: (i % 4) as i32,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_see_every_task_managers_only_their_institution_others_are_refused() {
    let (server, admin) = TestServer::with_admin().await;
    let a = server.institution("Escola A").await;
    let b = server.institution("Escola B").await;
    let seeded = seed(&server, &mixed(a.id, b.id)).await;

    let all = walk_filtered(&server, &admin.token, Value::Null).await;
    assert_eq!(all.len(), seeded.len());

    let own = walk_filtered(&server, &a.manager.token, Value::Null).await;
    assert!(!own.is_empty());
    assert!(own
        .iter()
        .all(|t| t["institutionId"] == json!(a.id.to_string())));
    let expected = mixed(a.id, b.id)
        .iter()
        .filter(|s| s.institution == Some(a.id))
        .count();
    assert_eq!(own.len(), expected);
    // The error text of failed tasks is the admins': the manager learns only that there
    // was one.
    let failed = |list: &[Value]| -> Vec<Value> {
        list.iter()
            .filter(|t| t["status"] == "failed" || t["status"] == "dead")
            .map(|t| t["lastError"].clone())
            .collect()
    };
    assert!(!failed(&own).is_empty());
    assert!(failed(&own)
        .iter()
        .all(|e| e.as_str() == Some(aula_api::graphql::WITHHELD_ERROR)));
    assert!(failed(&all)
        .iter()
        .all(|e| e.as_str() == Some("send: connect: refused")));

    // Naming another institution does not widen a manager's view.
    let other = server
        .gql(
            Some(&a.manager.token),
            LIST,
            json!({ "filter": { "institutionId": b.id }, "first": 10 }),
        )
        .await;
    assert_code(&other, "FORBIDDEN");

    // An admin may narrow to one institution.
    let only_b = walk_filtered(&server, &admin.token, json!({ "institutionId": b.id })).await;
    assert!(only_b
        .iter()
        .all(|t| t["institutionId"] == json!(b.id.to_string())));

    let (teacher_id, teacher_email) = server.teacher(&a.manager.token, None).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    let (student_id, student_email) = server.student(&a.manager.token, None).await;
    let student = server.activate(student_id, &student_email).await;
    for token in [&teacher.token, &student.token] {
        let refused = server.gql(Some(token), LIST, json!({ "first": 10 })).await;
        assert_code(&refused, "FORBIDDEN");
        let facets = server
            .query(token, "{ dashboardFacets { eventTypes taskKinds } }")
            .await;
        assert_code(&facets, "FORBIDDEN");
    }
    let anonymous = server.gql(None, LIST, json!({ "first": 10 })).await;
    assert_code(&anonymous, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sort_pages_through_the_whole_list_in_order_both_ways() {
    let (server, admin, _, seeded) = mixed_list().await;
    let expected: HashSet<i64> = seeded.iter().copied().collect();

    for field in [
        "ID",
        "KIND",
        "STATUS",
        "CREATED_AT",
        "FINISHED_AT",
        "DURATION",
        "INSTITUTION",
        "ATTEMPTS",
    ] {
        for direction in ["ASC", "DESC"] {
            let sort = json!({ "field": field, "direction": direction });
            let listed = walk_sorted(&server, &admin.token, sort.clone(), 3).await;
            let listed_ids: Vec<i64> = listed.iter().map(|t| t["id"].as_i64().unwrap()).collect();
            let unique: HashSet<i64> = listed_ids.iter().copied().collect();
            assert_eq!(unique, expected, "{field} {direction}: every task once");
            assert_eq!(
                listed_ids.len(),
                expected.len(),
                "{field} {direction}: no repeats"
            );
            // One page with everything gives the same order as the walk.
            let whole = server
                .gql(
                    Some(&admin.token),
                    LIST,
                    json!({ "sort": sort, "first": 100 }),
                )
                .await;
            assert_eq!(
                ids(&whole),
                listed_ids,
                "{field} {direction}: pages keep the order"
            );
        }
    }

    // Duration order, ties by id; unfinished tasks (no duration) sort as the smallest.
    let by_duration = walk_sorted(
        &server,
        &admin.token,
        json!({ "field": "DURATION", "direction": "DESC" }),
        4,
    )
    .await;
    let keys: Vec<(i64, i64)> = by_duration
        .iter()
        .map(|t| {
            (
                t["durationMs"].as_i64().unwrap_or(-1),
                t["id"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(keys, sorted);
    assert_eq!(keys[0].0, 900);

    let by_kind = walk_sorted(
        &server,
        &admin.token,
        json!({ "field": "KIND", "direction": "ASC" }),
        5,
    )
    .await;
    let kinds: Vec<&str> = by_kind
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    let mut sorted_kinds = kinds.clone();
    sorted_kinds.sort();
    assert_eq!(kinds, sorted_kinds);

    // A cursor of another sort, or garbage, is a VALIDATION error, not an INTERNAL one.
    let first_page = server
        .gql(
            Some(&admin.token),
            LIST,
            json!({ "sort": { "field": "KIND" }, "first": 2 }),
        )
        .await;
    let kind_cursor = first_page["data"]["adminTasks"]["nextCursor"]
        .as_str()
        .unwrap();
    for bad in [kind_cursor, "nonsense", "12:not-a-number"] {
        let refused = server
            .gql(
                Some(&admin.token),
                LIST,
                json!({ "sort": { "field": "DURATION" }, "first": 2, "after": bad }),
            )
            .await;
        assert_code(&refused, "VALIDATION");
    }
    // Looks like a time, is not one: PostgreSQL refuses the cast, still VALIDATION.
    let refused = server
        .gql(
            Some(&admin.token),
            LIST,
            json!({ "sort": { "field": "CREATED_AT" }, "first": 2, "after": "12:2026-13-45 00:00:00+00" }),
        )
        .await;
    assert_code(&refused, "VALIDATION");
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_combine_kinds_status_duration_and_time_ranges() {
    let (server, admin, seeds, _) = mixed_list().await;
    let count = |f: &dyn Fn(&Seed) -> bool| seeds.iter().filter(|s| f(s)).count();

    let filter = json!({ "kinds": ["email.welcome", "notification.grade"], "status": "succeeded" });
    let listed = walk_filtered(&server, &admin.token, filter).await;
    assert_eq!(
        listed.len(),
        count(&|s| s.kind != "enrollment.decide" && s.status == "succeeded")
    );

    // Each status alone (finished ones and the unfinished ones are listed apart).
    for status in ["succeeded", "failed", "dead", "pending", "running"] {
        let listed = walk_filtered(&server, &admin.token, json!({ "status": status })).await;
        assert_eq!(listed.len(), count(&|s| s.status == status), "{status}");
        assert!(listed.iter().all(|t| t["status"] == status), "{status}");
    }

    // A status that is none of `TaskStatus`'s is refused, not an empty list.
    let refused = server
        .gql(
            Some(&admin.token),
            LIST,
            json!({ "filter": { "status": "archived" }, "first": 10 }),
        )
        .await;
    assert!(refused["data"].is_null(), "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TaskStatus")),
        "{refused}"
    );

    for (op, ms, expected) in [
        ("GT", 40, count(&|s| s.duration_ms.is_some_and(|d| d > 40))),
        ("LT", 40, count(&|s| s.duration_ms.is_some_and(|d| d < 40))),
        ("EQ", 40, count(&|s| s.duration_ms == Some(40))),
    ] {
        let listed = walk_filtered(
            &server,
            &admin.token,
            json!({ "duration": { "op": op, "ms": ms } }),
        )
        .await;
        assert_eq!(listed.len(), expected, "duration {op} {ms}");
    }

    let all = walk_filtered(&server, &admin.token, Value::Null).await;
    let created: Vec<DateTime<Utc>> = all
        .iter()
        .map(|t| t["createdAt"].as_str().unwrap().parse().unwrap())
        .collect();
    let middle = created.iter().min().unwrap().to_owned() + Duration::seconds(5);
    let early = walk_filtered(&server, &admin.token, json!({ "createdTo": middle })).await;
    assert_eq!(early.len(), created.iter().filter(|c| **c < middle).count());
    assert!(!early.is_empty() && early.len() < all.len());
    let finished = walk_filtered(
        &server,
        &admin.token,
        json!({ "finishedFrom": "2000-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(finished.len(), count(&|s| s.duration_ms.is_some()));

    let facets = server
        .query(&admin.token, "{ dashboardFacets { eventTypes taskKinds } }")
        .await;
    assert_ok(&facets);
    assert_eq!(
        facets["data"]["dashboardFacets"]["taskKinds"],
        json!(["email.welcome", "enrollment.decide", "notification.grade"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn event_detail_shows_payload_and_metadata_to_staff_of_its_institution() {
    let (server, admin) = TestServer::with_admin().await;
    let a = server.institution("Escola A").await;
    let b = server.institution("Escola B").await;
    let campus = server.campus(&a.manager.token, None).await;
    let (event_id,): (Uuid,) = sqlx::query_as(
        "SELECT event_id FROM events WHERE event_type = 'CampusCreated' AND metadata->>'institution_id' = $1",
    )
    .bind(a.id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    let query = "query($id: UUID!) { adminEventDetail(eventId: $id) {
        eventType payload metadata actor correlationId causationId requestId } }";
    for token in [&admin.token, &a.manager.token] {
        let detail = server
            .gql(Some(token), query, json!({ "id": event_id }))
            .await;
        assert_ok(&detail);
        let d = &detail["data"]["adminEventDetail"];
        assert_eq!(d["eventType"], "CampusCreated");
        let payload: Value = serde_json::from_str(d["payload"].as_str().unwrap()).unwrap();
        assert!(
            payload.to_string().contains(&campus.to_string()),
            "{payload}"
        );
        assert_eq!(d["actor"], json!(format!("user:{}", a.manager.id)));
        assert!(d["requestId"].is_string());
    }
    let refused = server
        .gql(Some(&b.manager.token), query, json!({ "id": event_id }))
        .await;
    assert_code(&refused, "FORBIDDEN");
    let unknown = server
        .gql(Some(&admin.token), query, json!({ "id": Uuid::new_v4() }))
        .await;
    assert_code(&unknown, "NOT_FOUND");

    // Password and token hashes stay in the log: the detail shows that they are there.
    let (event_id, payload): (Uuid, String) = sqlx::query_as(
        "SELECT event_id, payload::text FROM events
         WHERE aggregate_id = $1 AND payload::text LIKE '%password_hash%' LIMIT 1",
    )
    .bind(a.manager.id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    let stored: Value = serde_json::from_str(&payload).unwrap();
    let hash = stored.to_string();
    assert!(hash.contains("$argon2"), "{hash}");
    let detail = server
        .gql(Some(&admin.token), query, json!({ "id": event_id }))
        .await;
    assert_ok(&detail);
    let shown = detail["data"]["adminEventDetail"]["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!shown.contains("$argon2"), "{shown}");
    assert!(
        shown.contains("\"password_hash\":\"[redacted]\""),
        "{shown}"
    );
}
