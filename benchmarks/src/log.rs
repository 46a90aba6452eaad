//! `aula bench log`: events per second delivered from the log to a no-op subscription,
//! beside its peer, a binary `COPY` of the same commit-ordered read.

use std::time::Instant;

use aula_eventlog::subscription::{self, SubscriptionState};
use aula_eventlog::{Consumer, SubscriptionOptions, Wakeups};
use sqlx::PgPool;

use crate::{BenchDatabase, Settings};

struct NoOp;

/// The default [`Consumer`]: handles and delivers nothing.
impl Consumer for NoOp {}

pub async fn run(settings: &Settings, events: i64) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    println!("aula bench log: writing {events} events...");
    let last = db.write_enrollment_requests(events, None).await?;

    let (stop, shutdown) = aula_eventlog::shutdown::channel();
    let mut options = SubscriptionOptions::new("bench-noop");
    options.batch_size = 5000;
    let started = Instant::now();
    let handle = subscription::spawn(
        db.connect.clone(),
        options,
        NoOp,
        Wakeups::polling_only(),
        shutdown,
    );
    let mut state = handle.state.clone();
    state
        .wait_for(|s| matches!(s, SubscriptionState::Active { position } if position.global_position == last))
        .await?;
    let elapsed = started.elapsed();
    stop.trigger();
    handle.task.await?;
    let aula_rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "delivered {events} events to a no-op subscription in {:.2} s: {aula_rate:.0} events/s (batches of 5000, each read by a binary COPY of the guarded query, checkpoint committed per batch)",
        elapsed.as_secs_f64(),
    );
    let (copy_seconds, bytes) = copy_out_log(&db.pool).await?;
    let copy_rate = events as f64 / copy_seconds;
    println!(
        "peer: COPY of the same commit-ordered read to this client (binary, {:.0} MB): {copy_seconds:.2} s, {copy_rate:.0} events/s; Aula / COPY = {:.2}",
        bytes as f64 / 1e6,
        aula_rate / copy_rate
    );
    db.drop_database().await
}

/// The log read's peer (issue #20): the subscription's own query, every column it
/// reads, in its commit order, streamed to this client by `COPY ... TO STDOUT` in
/// binary, so no row is decoded. What a reader of the log cannot beat on this server.
async fn copy_out_log(pool: &PgPool) -> anyhow::Result<(f64, u64)> {
    use futures::StreamExt;
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw(
            "COPY (SELECT tx_id::text::bigint AS tx, global_position, event_id, aggregate_type,
                          aggregate_id, sequence, event_type, event_version, payload, metadata,
                          recorded_at
                   FROM events
                   WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
                   ORDER BY events.tx_id, events.global_position)
             TO STDOUT (FORMAT binary)",
        )
        .await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len() as u64;
    }
    Ok((started.elapsed().as_secs_f64(), bytes))
}
