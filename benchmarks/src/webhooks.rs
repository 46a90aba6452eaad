//! `aula bench webhooks`: messages per second to a fast local receiver, and event
//! commit → request received. A measurement, not a test: nothing here asserts a target.
//!
//! The receiver is a minimal HTTP/1.1 server in this process (reads the request, notes
//! its `webhook-id` and the time, answers 204): what is measured is Aula's side. One
//! platform-wide endpoint on loopback (allowed for the run), the reactions and the
//! workers running here with production settings otherwise (attempts recorded).
//! Throughput: N events inserted in one statement, timed from its commit until the
//! receiver has every message. Latency: events appended one at a time, each from its
//! commit (`recorded_at`, the database clock) until its request arrived (the same
//! machine's clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aula_domain::event_types;
use aula_eventlog::shutdown;
use aula_eventlog::{SubscriptionOptions, Wakeups};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use aula_processor::config::ProcessorConfig;
use aula_processor::handlers::Registry;
use aula_processor::reactions::{spawn_reactions_with, REACTIONS_SUBSCRIPTION};
use aula_processor::webhooks::endpoints::{self, NewEndpoint};
use aula_processor::webhooks::WebhookConfig;

use crate::stats::{load_average, Percentiles};
use crate::{BenchDatabase, Settings};

#[derive(Debug, Clone)]
pub struct BenchWebhooksReport {
    pub messages: usize,
    pub drain: Duration,
    pub messages_per_second: f64,
    pub latency_samples: usize,
    /// Event commit → request received, milliseconds.
    pub commit_to_received: Percentiles,
    pub concurrency: usize,
}

type Received = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

/// Starts the receiver; returns its port and what it received (by `webhook-id`).
async fn receiver() -> std::io::Result<(u16, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received: Received = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(2048);
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = find(&buffer, b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                    };
                    let length: usize = header("content-length:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let at = Utc::now();
                    if let Some(id) = header("webhook-id:") {
                        sink.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id, at);
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    Ok((port, received))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs the benchmark on a migrated, empty database.
pub async fn bench_webhooks(
    pool: &PgPool,
    connect: PgConnectOptions,
    messages: usize,
    latency_samples: usize,
    concurrency: usize,
) -> Result<BenchWebhooksReport, Box<dyn std::error::Error + Send + Sync>> {
    let (port, received) = receiver().await?;
    let config = WebhookConfig {
        insecure_hosts: vec!["127.0.0.1".into()],
        allowed_networks: vec!["127.0.0.0/8".parse()?],
        ..WebhookConfig::default()
    };
    endpoints::create(
        pool,
        &config,
        NewEndpoint {
            event_types: Some(vec![event_types::CAMPUS_CREATED.into()]),
            ..NewEndpoint::by_system(
                format!("http://127.0.0.1:{port}/hook"),
                "aula bench webhooks",
            )
        },
        &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
    )
    .await?;
    let (trigger, shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(pool, shutdown.clone()).await?;
    let mut options = SubscriptionOptions::new(REACTIONS_SUBSCRIPTION);
    options.batch_size = 500;
    let reactions = spawn_reactions_with(connect, options, wakeups, shutdown.clone());
    let mut registry = Registry::new();
    registry.with_webhooks(config, None);
    let workers = tokio::spawn(aula_processor::worker::run_workers(
        pool.clone(),
        ProcessorConfig {
            worker_name: "bench-webhooks".into(),
            concurrency,
            claim_batch: concurrency as i64,
            ..ProcessorConfig::default()
        },
        registry,
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Throughput.
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'institution', gen_random_uuid()::text, 1, 'CampusCreated', '1.0',
                jsonb_build_object('type', 'CampusCreated', 'campus_id', gen_random_uuid(),
                                   'name', 'Campus ' || i, 'city', 'Recife')::json, '{}'
         FROM generate_series(1, $1) AS i";
    sqlx::query(insert)
        .bind(messages as i64)
        .execute(pool)
        .await?;
    aula_eventlog::store::notify_now(pool).await?;
    let started = Instant::now();
    while received.lock().unwrap_or_else(|p| p.into_inner()).len() < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the receiver did not get every message within 10 minutes".into());
        }
    }
    let drain = started.elapsed();

    // Latency, one event at a time.
    let mut samples = Vec::with_capacity(latency_samples);
    for _ in 0..latency_samples {
        let (event_id, recorded_at): (uuid::Uuid, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('institution', gen_random_uuid()::text, 1, 'CampusCreated', '1.0',
                     '{\"type\": \"CampusCreated\", \"name\": \"Latency\", \"city\": \"Recife\"}', '{}')
             RETURNING event_id, recorded_at",
        )
        .fetch_one(pool)
        .await?;
        aula_eventlog::store::notify_now(pool).await?;
        let waited = Instant::now();
        let id = loop {
            let message: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT id FROM webhook_messages WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_optional(pool)
                    .await?;
            if let Some(id) = message {
                break aula_processor::webhooks::message_header_id(id);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
            if waited.elapsed() > Duration::from_secs(60) {
                return Err("no message for the event within a minute".into());
            }
        };
        let at = loop {
            if let Some(at) = received.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                break *at;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
            if waited.elapsed() > Duration::from_secs(60) {
                return Err("the request did not arrive within a minute".into());
            }
        };
        samples.push((at - recorded_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    trigger.trigger();
    let _ = reactions.task.await;
    let _ = workers.await;
    Ok(BenchWebhooksReport {
        messages,
        drain,
        messages_per_second: messages as f64 / drain.as_secs_f64(),
        latency_samples,
        commit_to_received: Percentiles::of(samples),
        concurrency,
    })
}
/// `aula bench webhooks`: see the module.
pub async fn run(
    settings: &Settings,
    messages: usize,
    samples: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let db = BenchDatabase::create(settings).await?;
    let load_before = load_average();
    let report = bench_webhooks(
        &db.pool,
        db.connect.clone(),
        messages,
        samples,
        concurrency.max(1),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "aula bench webhooks: {} messages to a local receiver, {} deliveries at once",
        report.messages, report.concurrency
    );
    println!(
        "  throughput: {:.0} messages/s ({:.2} s from the events' commit to the last request)",
        report.messages_per_second,
        report.drain.as_secs_f64()
    );
    println!(
        "  event commit -> request received (ms, {} sequential events): {}",
        report.latency_samples, report.commit_to_received
    );
    println!(
        "  load average before: {load_before}, after: {}",
        load_average()
    );
    db.drop_database().await
}
