//! The two reads of a batch of the log, the prepared SELECT and the subscription's
//! binary COPY: the same events to the byte, and the same commit-order guard.

use aula_eventlog::log::{self, LogPosition, RecordedEvent};
use aula_eventlog::testing::TestDatabase;
use sqlx::PgConnection;

use super::log_reader::{append_events, insert_event, setup};

/// Both reads of a batch, `read_batch` (a prepared SELECT) and `read_batch_copy` (the
/// subscription's binary COPY), from `after`, on one connection; asserts they agree.
async fn both_reads(conn: &mut PgConnection, after: LogPosition, limit: i64) -> Vec<RecordedEvent> {
    let selected = log::read_batch(conn, after, limit).await.unwrap();
    let copied = log::read_batch_copy(conn, after, limit).await.unwrap();
    assert_eq!(copied, selected, "after {after:?}, limit {limit}");
    for (copy, select) in copied.iter().zip(&selected) {
        // `StoredJson` equality also accepts equal documents spaced differently:
        // the copy must hand on the very text.
        assert_eq!(copy.payload.as_str(), select.payload.as_str());
        assert_eq!(copy.metadata.as_str(), select.metadata.as_str());
    }
    copied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_read_decodes_every_column_exactly_as_the_select_read() {
    let db = setup().await;
    let big = "ü€😀 ".repeat(300_000); // 3 MB of multi-byte text in one payload
    let rows: Vec<(&str, String, i64, &str, &str, String, String)> = vec![
        ("course", "c-1".into(), 1, "Opened", "1.0", "{}".into(), "{}".into()),
        (
            "Kurs 🎓",
            "aggregat-Ärger-日本".into(),
            i64::MAX / 2,
            "Geöffnet✓",
            "2.0-β",
            r#"{"name": "Zoë\u0000?", "nested": {"list": [1, 2.5, -3e300, true, null]}, "quote": "\"\\"}"#.into(),
            r#"{"actor": "public",   "spaces":  "kept as stored"}"#.into(),
        ),
        ("course", "c-2".into(), 0, "Big", "1.0", serde_json::json!({ "text": big }).to_string(), "[]".into()),
        ("", "".into(), 2, "", "", "\"a bare string\"".into(), "null".into()),
        ("course", "c-3".into(), 3, "Number", "1.0", "12345678901234567890123456789".into(), "{}".into()),
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    for (aggregate_type, aggregate_id, sequence, event_type, version, payload, metadata) in &rows {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, now() - random() * interval '30 years')",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .bind(event_type)
        .bind(version)
        .bind(payload)
        .bind(metadata)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    // The tests share one PostgreSQL server, and the commit-order guard holds back rows
    // behind any transaction that began before them, in any database (another test here
    // holds one open on purpose): wait for such a transaction to end. Once readable, the
    // rows stay readable, so every read below sees them all.
    readable_rows(&db, LogPosition::START, rows.len()).await;
    let all = both_reads(&mut conn, LogPosition::START, 100).await;
    assert_eq!(all.len(), rows.len());
    for (event, (aggregate_type, aggregate_id, sequence, event_type, version, payload, metadata)) in
        all.iter().zip(&rows)
    {
        assert_eq!(event.aggregate_type, *aggregate_type);
        assert_eq!(&event.aggregate_id, aggregate_id);
        assert_eq!(event.sequence, *sequence);
        assert_eq!(event.event_type, *event_type);
        assert_eq!(event.event_version, *version);
        assert_eq!(event.payload.as_str(), payload);
        assert_eq!(event.metadata.as_str(), metadata);
    }
    assert_eq!(all[2].payload["text"].as_str(), Some(big.as_str()));
    // Every page, from every position, agrees too (limits of 1 and 2 split the rows).
    for limit in [1, 2] {
        let mut after = LogPosition::START;
        let mut paged = Vec::new();
        loop {
            let page = both_reads(&mut conn, after, limit).await;
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(page);
        }
        assert_eq!(paged, all, "limit {limit}");
    }
    // The connection is in step after the copies: its next statement reads its own reply.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    drop(conn);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_read_holds_back_rows_behind_a_running_transaction_like_the_select() {
    let db = setup().await;
    append_events(&db.pool, "before", 1, 3).await;
    // Another test's transaction (any database of the shared server) may hold these rows
    // back too: start only once they are readable, so that `slow` alone holds back what
    // follows.
    readable_rows(&db, LogPosition::START, 3).await;
    // An older transaction still running holds back everything written after it, even
    // rows that committed first with later positions (see the module docs).
    // `slow` takes its transaction id first and writes its row last: the larger position
    // with the smaller tx id.
    let mut slow = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *slow)
        .await
        .unwrap();
    append_events(&db.pool, "fast", 1, 2).await;
    insert_event(&mut slow, "slow", 1).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let readable = both_reads(&mut conn, LogPosition::START, 100).await;
    let ids: Vec<&str> = readable.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["before"; 3]);
    let checkpoint = readable.last().unwrap().position;
    assert!(both_reads(&mut conn, checkpoint, 100).await.is_empty());

    slow.commit().await.unwrap();
    // Another test's transaction may still hold the fast rows back for a moment.
    readable_rows(&db, checkpoint, 3).await;
    let rest = both_reads(&mut conn, checkpoint, 100).await;
    let ids: Vec<&str> = rest.iter().map(|e| e.aggregate_id.as_str()).collect();
    // Commit order: the slow transaction's row first (older tx id), though its position
    // is the largest.
    assert_eq!(ids, ["slow", "fast", "fast"]);
    assert!(rest[0].global_position() > rest[2].global_position());
    assert!(rest.windows(2).all(|w| w[0].position < w[1].position));
    drop(conn);
    db.drop_database().await;
}

/// Waits (at most 60 s) until the log's read after `after` returns `count` rows: rows
/// behind another test's open transaction are held back until it ends (see the module
/// docs).
async fn readable_rows(db: &TestDatabase, after: LogPosition, count: usize) {
    let mut conn = db.pool.acquire().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log::read_batch(&mut conn, after, 100).await.unwrap().len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "the rows stayed held back for 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
