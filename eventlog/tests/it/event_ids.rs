//! New events get time-ordered ids (migration 0051): version 7 UUIDs whose first 48 bits
//! are the Unix time in milliseconds, so the indexes keyed by event id take their
//! inserts on their rightmost pages.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::log_reader::{append_events, setup};

fn millis(id: &Uuid) -> u64 {
    let bytes = id.as_bytes();
    bytes[..6].iter().fold(0, |n, b| (n << 8) | u64::from(*b))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn new_events_get_version_7_ids_that_grow_with_their_position() {
    let db = setup().await;
    let before = now_millis();
    append_events(&db.pool, "first", 1, 50).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    append_events(&db.pool, "second", 1, 50).await;
    let after = now_millis();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 100);
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        // The database's clock is this machine's.
        assert!(
            (before..=after).contains(&millis(id)),
            "{id}: not between {before} and {after}"
        );
    }
    for pair in ids.windows(2) {
        assert!(
            millis(&pair[0]) <= millis(&pair[1]),
            "{pair:?} out of time order"
        );
    }
    // The second batch was appended at least 5 ms after the first.
    assert!(millis(&ids[50]) > millis(&ids[49]));
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}
