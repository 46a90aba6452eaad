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

pub async fn run(settings: &Settings, events: i64, rounds: u32) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    println!("aula bench log: writing {events} events...");
    let last = db.write_enrollment_requests(events, None).await?;
    let mut ratios = Vec::new();
    // Interleaved, each round a subscription of its own from the start of the log, then
    // the peer: a round takes a second or two, and the machine's load moves both sides
    // by a third between rounds (BENCHMARKS.md), so the figure is the median ratio.
    for round in 1..=rounds {
        let seconds = deliver_to_noop(&db, &format!("bench-noop-{round}"), last).await?;
        let aula_rate = events as f64 / seconds;
        let ceiling = SubscriptionOptions {
            batch_size: BATCH,
            ..SubscriptionOptions::new("ceiling")
        }
        .batch_ceiling();
        println!(
            "round {round}: delivered {events} events to a no-op subscription in {seconds:.2} s: {aula_rate:.0} events/s (batches of {BATCH}, growing to {} while full, each read by a binary COPY of the guarded query, checkpoint committed per batch)",
            ceiling
        );
        let (copy_seconds, bytes) = copy_out_log(&db.pool).await?;
        let copy_rate = events as f64 / copy_seconds;
        let ratio = aula_rate / copy_rate;
        println!(
            "round {round}: peer, COPY of the same commit-ordered read to this client (binary, {:.0} MB): {copy_seconds:.2} s, {copy_rate:.0} events/s; Aula / COPY = {ratio:.2}",
            bytes as f64 / 1e6,
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "Aula / COPY over {rounds} rounds: median {:.2} (sorted: {})",
        ratios[ratios.len() / 2],
        listed.join(", ")
    );
    db.drop_database().await
}

const BATCH: i64 = 5000;

/// Seconds for a new subscription `name` to read the log up to `last`.
async fn deliver_to_noop(db: &BenchDatabase, name: &str, last: i64) -> anyhow::Result<f64> {
    let (stop, shutdown) = aula_eventlog::shutdown::channel();
    let mut options = SubscriptionOptions::new(name);
    options.batch_size = BATCH;
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
    Ok(elapsed.as_secs_f64())
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
