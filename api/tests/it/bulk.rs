//! Bulk reprocessing over HTTP: preview → confirm → progress until done, the confirm
//! token's binding (and single use), and institution isolation.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common;
use common::{assert_code, assert_ok, assert_reason, server_with_projections};

const PREVIEW: &str = "query($f: AdminEventFilter) { bulkReprocessPreview(filter: $f) { count byType { type count } byStatus { status count } upToPosition upToTransaction confirmToken } }";
const CONFIRM: &str = "mutation($t: String!) { bulkReprocessConfirm(confirmToken: $t) { id status total done failed requestedBy institutionId } }";
const JOB: &str =
    "query($id: UUID!) { bulkReprocessJob(id: $id) { id status total done failed skipped } }";
const CANCEL: &str = "mutation($id: UUID!) { bulkReprocessCancel(id: $id) { id status } }";

fn data<'a>(response: &'a Value, field: &str) -> &'a Value {
    assert_ok(response);
    &response["data"][field]
}

/// The reprocessed copies of an institution's events.
const COPIES: &str = "SELECT count(*) FROM events WHERE aggregate_type = 'reprocessed'
    AND metadata->>'institution_id' = $1";

async fn count(pool: &sqlx::PgPool, sql: &str, institution: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(institution.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_reprocessing_previews_confirms_and_copies_only_what_it_previewed() {
    let (server, _projections) = server_with_projections().await;
    let pool = &server.db.pool;
    let admin = server.admin().await;
    let a = server.institution("Alpha").await;
    let b = server.institution("Beta").await;
    for _ in 0..3 {
        server.campus(&a.manager.token, None).await;
    }
    server.campus(&b.manager.token, None).await;

    let originals_sql = "SELECT count(*) FROM events
         WHERE metadata->>'institution_id' = $1 AND aggregate_type <> 'reprocessed'";
    let expected = count(pool, originals_sql, a.id).await;
    assert!(expected >= 4, "only {expected} events of institution a");
    let filter = json!({ "institutionId": a.id });

    // The manager of a: the preview is forced to its own institution, once the admin
    // list has caught up with the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    let preview = loop {
        let r = server
            .gql(Some(&a.manager.token), PREVIEW, json!({ "f": null }))
            .await;
        let preview = data(&r, "bulkReprocessPreview").clone();
        if preview["count"] == expected {
            break preview;
        }
        assert!(
            Instant::now() < deadline,
            "preview never reached {expected}: {preview}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_type: i64 = preview["byType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["count"].as_i64().unwrap())
        .sum();
    assert_eq!(by_type, expected);
    assert!(preview["byType"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["type"] == "CampusCreated"));
    let token = preview["confirmToken"].as_str().unwrap().to_owned();

    // The manager of b may neither preview a's events, nor confirm a's token.
    let r = server
        .gql(Some(&b.manager.token), PREVIEW, json!({ "f": filter }))
        .await;
    assert_code(&r, "FORBIDDEN");
    let r = server
        .gql(Some(&b.manager.token), CONFIRM, json!({ "t": token }))
        .await;
    assert_code(&r, "FORBIDDEN");

    // A tampered token (another position, re-encoded payload, or a flipped signature)
    // is rejected.
    let (payload, signature) = token.split_once('.').unwrap();
    let mut flipped = signature.to_owned().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let tampered_signature = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
    let other_payload = format!("{}A.{signature}", payload);
    for bad in [tampered_signature, other_payload, "garbage".to_owned()] {
        let r = server
            .gql(Some(&a.manager.token), CONFIRM, json!({ "t": bad }))
            .await;
        assert_code(&r, "UNAUTHENTICATED");
    }

    // An event appended after the preview is not included.
    server.campus(&a.manager.token, None).await;
    assert_eq!(count(pool, originals_sql, a.id).await, expected + 1);

    let r = server
        .gql(Some(&a.manager.token), CONFIRM, json!({ "t": token }))
        .await;
    let job = data(&r, "bulkReprocessConfirm").clone();
    assert_eq!(job["total"], expected);
    assert_eq!(job["requestedBy"], format!("user:{}", a.manager.id));
    assert_eq!(job["institutionId"], a.id.to_string());
    let id = job["id"].as_str().unwrap().to_owned();

    // The token is single-use: confirming it again starts nothing.
    let r = server
        .gql(Some(&a.manager.token), CONFIRM, json!({ "t": token }))
        .await;
    assert_reason(&r, "CONFLICT", "CONFIRM_TOKEN_USED");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_reprocess_jobs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);

    // b's manager cannot see or cancel it.
    for query in [JOB, CANCEL] {
        let r = server
            .gql(Some(&b.manager.token), query, json!({ "id": id }))
            .await;
        assert_code(&r, "FORBIDDEN");
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let r = server
            .gql(Some(&admin.token), JOB, json!({ "id": id }))
            .await;
        let job = data(&r, "bulkReprocessJob").clone();
        if job["status"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished["status"], "done");
    assert_eq!(finished["done"], expected);
    assert_eq!(finished["failed"], 0);
    assert_eq!(finished["skipped"], 0);

    let copies = count(pool, COPIES, a.id).await;
    assert_eq!(copies, expected);
    let uncopied_late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.metadata->>'institution_id' = $1
           AND e.aggregate_type <> 'reprocessed'
           AND (e.tx_id::text::bigint, e.global_position) > ($3, $2)
           AND EXISTS (SELECT 1 FROM events c WHERE c.metadata->>'reprocessed_from' = e.event_id::text)",
    )
    .bind(a.id.to_string())
    .bind(preview["upToPosition"].as_i64().unwrap())
    .bind(preview["upToTransaction"].as_i64().unwrap())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(uncopied_late, 0, "an event after the preview was copied");
    let b_copies = count(pool, COPIES, b.id).await;
    assert_eq!(b_copies, 0);

    // Cancelling a finished job changes nothing; an unknown job is NOT_FOUND.
    let r = server
        .gql(Some(&a.manager.token), CANCEL, json!({ "id": id }))
        .await;
    assert_eq!(data(&r, "bulkReprocessCancel")["status"], "done");
    let r = server
        .gql(Some(&admin.token), JOB, json!({ "id": Uuid::new_v4() }))
        .await;
    assert_code(&r, "NOT_FOUND");
}
