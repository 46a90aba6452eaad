//! A reprocessed copy's tasks start a trace of their own (the reprocess request's),
//! linked to the original's with an OpenTelemetry span link, instead of joining a
//! request that ended long ago (issue #19). Spans go to an in-memory exporter through
//! the telemetry `aula serve` sets up.

use crate::support;
use std::time::Duration;

use aula::cli::LogFormat;
use aula::telemetry::Telemetry;
use aula_eventlog::metadata::TRACEPARENT;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::trace::TraceContext;
use aula_eventlog::{shutdown, Actor, Wakeups};
use aula_processor::handlers::{Noop, Registry};
use aula_processor::{kinds, ProcessorConfig};
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracing::Instrument;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use uuid::Uuid;

/// The finished `task` span of the task `event_id` issued, once there is one.
async fn task_span(spans: &InMemorySpanExporter, event_id: Uuid) -> SpanData {
    let what = format!("task span for {event_id}");
    support::finished_span(spans, support::PATIENCE, &what, |s| {
        s.name == "task"
            && s.attributes.iter().any(|kv| {
                kv.key.as_str() == "event_id" && kv.value.to_string() == event_id.to_string()
            })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copys_tasks_start_a_new_trace_linked_to_the_originals() {
    support::alone_in_own_process!(a_copys_tasks_start_a_new_trace_linked_to_the_originals);
    let spans = InMemorySpanExporter::default();
    let telemetry = Telemetry::for_tests(
        LogFormat::Json,
        "info",
        BoxMakeWriter::new(std::io::sink),
        spans.clone(),
    );
    assert!(telemetry.exporting());
    let db = TestDatabase::new().await;
    let (trigger, stop) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, stop.clone()).await.unwrap();
    let reactions = aula_processor::spawn_reactions(db.connect.clone(), wakeups, stop.clone());
    let mut registry = Registry::new();
    registry.register(kinds::LINK_TEACHER_NOTIFICATIONS, Noop);
    let workers = tokio::spawn(aula_processor::run_workers(
        db.pool.clone(),
        ProcessorConfig {
            worker_name: "telemetry-reprocess".into(),
            poll_interval: Duration::from_millis(50),
            ..ProcessorConfig::default()
        },
        registry,
        stop.clone(),
    ));

    // The original, appended under a request's span (its context in the metadata, as
    // the command bus writes it).
    let original_request = tracing::info_span!("original request");
    let original_context = TraceContext::of(&original_request).expect("spans are exported");
    let original: Uuid = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('teacher', gen_random_uuid()::text, 1, 'TeacherCreated', '1.0', '{}', $1)
         RETURNING event_id",
    )
    .bind(serde_json::json!({ TRACEPARENT: original_context.traceparent }))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    drop(original_request);
    let original_sc = original_context.span_context().unwrap();
    let first = task_span(&spans, original).await;
    assert_eq!(first.span_context.trace_id(), original_sc.trace_id());

    // Reprocessed under another request's span.
    let reprocess_request = tracing::info_span!("reprocess request");
    let reprocess_trace: TraceId = TraceContext::of(&reprocess_request)
        .unwrap()
        .span_context()
        .unwrap()
        .trace_id();
    let copy = aula_processor::reprocess::reprocess_event_for(
        &db.pool,
        original,
        Actor::System,
        Some("reprocess-request-id"),
        None,
    )
    .instrument(reprocess_request)
    .await
    .unwrap();
    let again = task_span(&spans, copy.event_id).await;
    assert_eq!(
        again.span_context.trace_id(),
        reprocess_trace,
        "the copy's task is in the reprocess request's trace"
    );
    assert_ne!(again.span_context.trace_id(), original_sc.trace_id());
    assert!(
        again.links.iter().any(
            |link| link.span_context.trace_id() == original_sc.trace_id()
                && link.span_context.span_id() == original_sc.span_id()
        ),
        "the copy's task links to the original's trace: {:?}",
        again.links
    );

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(60), workers)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), reactions.task)
        .await
        .unwrap()
        .unwrap();
    db.drop_database().await;
}
