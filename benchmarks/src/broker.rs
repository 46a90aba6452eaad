//! `aula bench broker`: events/s published to NATS JetStream from a log of N events, then
//! commit → consumer latency of single commands (p50/p99). Uses `AULA_NATS_URL`, or a
//! private `nats-server` from PATH on a temporary directory.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use aula_broker::local_server::LocalNats;
use aula_broker::BrokerConfig;
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::values::{CampusId, Capacity, CourseName, InstitutionId};
use aula_eventlog::subscription::SubscriptionState;
use aula_eventlog::{Actor, CommandBus, EventMetadata, Wakeups};
use futures::StreamExt;
use uuid::Uuid;

use crate::{BenchDatabase, Settings};

pub async fn run(settings: &Settings, events: i64, latency_events: usize) -> anyhow::Result<()> {
    let mut local = None;
    let url = match std::env::var("AULA_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            let server = tokio::task::spawn_blocking(LocalNats::start).await??;
            let url = server.url();
            println!(
                "aula bench broker: a private nats-server on {url} (JetStream on {})",
                server.dir.display()
            );
            local = Some(server);
            url
        }
    };
    let db = BenchDatabase::create(settings).await?;
    println!("aula bench broker: writing {events} events...");
    let written = Instant::now();
    // As `aula bench log`'s, with an institution in the metadata.
    let last = db
        .write_enrollment_requests(events, Some("5f1f8a86-7a38-4a55-9d4c-3bb2b3c2f001"))
        .await?;
    println!("written in {:.1} s", written.elapsed().as_secs_f64());

    // A stream of its own per run, so a shared broker is not polluted by old runs.
    let run_id = Uuid::new_v4().simple().to_string();
    let config = BrokerConfig {
        url: Some(url.clone()),
        stream: format!("AULA_BENCH_{}", &run_id[..12]),
        subject_prefix: format!("bench.{}", &run_id[..12]),
        ..BrokerConfig::from_env().map_err(|e| anyhow::anyhow!(e))?
    };
    let (stop, shutdown) = aula_eventlog::shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, shutdown.clone()).await?;
    let started = Instant::now();
    let handle = aula_broker::start(config.clone(), db.connect.clone(), wakeups, shutdown)
        .await
        .context("starting the publisher")?;
    let mut state = handle.state.clone();
    state
        .wait_for(|s| matches!(s, SubscriptionState::Active { position } if position.global_position == last))
        .await?;
    let elapsed = started.elapsed();
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(usize::try_from(config.batch_size).unwrap_or(2000).max(1))
        .build(client);
    let mut stream = js.get_stream(&config.stream).await?;
    let stored = stream.info().await?.state.messages;
    println!(
        "published {events} events in {:.2} s: {:.0} events/s (batches of {}, each acknowledged before its checkpoint); the stream holds {stored} messages",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        config.batch_size
    );
    anyhow::ensure!(
        stored as i64 == events,
        "the stream holds {stored} messages, not {events}"
    );
    let aula_rate = events as f64 / elapsed.as_secs_f64();
    let peer_rate = raw_jetstream_peer(&db, &js, &config).await?;
    println!(
        "peer, same run: raw JetStream publishing of the same {events} bodies (prebuilt; same subjects, Nats-Msg-Id, batches of {} each acknowledged before the next): {peer_rate:.0} messages/s; Aula / peer = {:.2}",
        config.batch_size,
        aula_rate / peer_rate
    );

    // Latency: one command at a time, its event awaited at a JetStream consumer.
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let bus = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let metadata = EventMetadata::new(Actor::System, None);
    let mut latencies = Vec::with_capacity(latency_events);
    for i in 0..latency_events {
        let id = Uuid::new_v4().to_string();
        let committed = bus
            .execute(
                &id,
                CourseCommand::OpenCourse {
                    institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
                    campus_id: CampusId::from_uuid(Uuid::new_v4()),
                    name: CourseName::parse(&format!("Latency {i}"))?,
                    capacity: Capacity::new(30)?,
                },
                &metadata,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let at = Instant::now();
        let expected = committed.appended[0].event_id.to_string();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .context("no message within 30 s")?
                .context("the consumer ended")??;
            let body: serde_json::Value = serde_json::from_slice(&message.payload)?;
            if body["id"] == expected.as_str() {
                break;
            }
        }
        latencies.push(at.elapsed());
    }
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    if !latencies.is_empty() {
        println!(
            "commit → consumer over {} single commands, one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            percentile(0.50),
            percentile(0.99),
            percentile(1.0)
        );
    }
    stop.trigger();
    handle.task.await?;
    let _ = js.delete_stream(&config.stream).await;
    drop(local);
    db.drop_database().await
}

/// The peer of the publisher, measured in the same run on the same server: the same
/// messages (bodies built beforehand, outside the timing), published straight to a
/// stream of the same configuration in batches of the same size, every message of a
/// batch in flight and the batch's acknowledgements awaited before the next, with no
/// log read, no public form and no checkpoint. What JetStream on this machine allows;
/// Aula's figure over it is the ratio that matters.
async fn raw_jetstream_peer(
    db: &BenchDatabase,
    js: &jetstream::Context,
    config: &BrokerConfig,
) -> anyhow::Result<f64> {
    let mut conn = db.pool.acquire().await?;
    let mut messages = Vec::new();
    let mut after = aula_eventlog::LogPosition::START;
    loop {
        let batch = aula_eventlog::log::read_batch(&mut conn, after, 10_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            messages.push((
                aula_broker::publisher::subject(&format!("{}peer", config.subject_prefix), event),
                event.event_id.to_string(),
                bytes::Bytes::from(aula_processor::public_form::public_form_bytes(event)),
            ));
        }
    }
    drop(conn);
    let peer = BrokerConfig {
        stream: format!("{}_PEER", config.stream),
        subject_prefix: format!("{}peer", config.subject_prefix),
        ..config.clone()
    };
    aula_broker::stream::ensure_stream(js, &peer).await?;
    let started = Instant::now();
    for chunk in messages.chunks(usize::try_from(config.batch_size)?.max(1)) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, id, body) in chunk {
            let message = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(id);
            acks.push(js.send_publish(subject.clone(), message).await?);
        }
        for ack in acks {
            ack.await?;
        }
    }
    let elapsed = started.elapsed();
    let stored = js
        .get_stream(&peer.stream)
        .await?
        .info()
        .await?
        .state
        .messages;
    anyhow::ensure!(
        stored as usize == messages.len(),
        "the peer stream holds {stored} messages, not {}",
        messages.len()
    );
    let _ = js.delete_stream(&peer.stream).await;
    Ok(messages.len() as f64 / elapsed.as_secs_f64())
}
