//! One trace across the asynchronous hop, and the OpenTelemetry semantic conventions
//! of the spans that make it.
//!
//! The W3C trace context (`traceparent`, `tracestate`) of the span that appended a
//! command's events (the `events.append` PRODUCER span) is stored in their metadata
//! ([`crate::metadata::TRACEPARENT`]); whoever handles those events later (projections,
//! reactions, the tasks they issue) opens a CONSUMER span that is a child of that
//! context and links to it, so one trace shows request → command → append →
//! projection update → task → e-mail. The context is written and read by the
//! OpenTelemetry SDK's standard [`TraceContextPropagator`], for HTTP headers and stored
//! metadata alike; the stored form is the W3C header value, a contract like the rest of
//! the metadata.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer (installed by the binary only
//! when an exporter is configured) gives them trace and span ids, and reads the kind,
//! name and status from the special `otel.*` fields. Without it, [`enabled`] is false
//! and every function here returns at once: no context is stored, no attribute is
//! computed and no extra span is created.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::log::RecordedEvent;
use crate::metadata::{TRACEPARENT, TRACESTATE};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called by whoever installs the OpenTelemetry layer.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether spans are exported (an OpenTelemetry layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `messaging.system` of the event log (semantic conventions: a system of our own).
pub const MESSAGING_SYSTEM: &str = "aula";
/// `messaging.destination.name`: the log is one destination, the `events` table.
pub const EVENTS_DESTINATION: &str = "events";

/// A W3C trace context, as stored in metadata and task payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context of `span`, when spans are exported and it has a valid one.
    pub fn of(span: &tracing::Span) -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        Self::of_context(&span.context())
    }

    /// The W3C form of an OpenTelemetry context, as the standard propagator writes it.
    fn of_context(context: &opentelemetry::Context) -> Option<TraceContext> {
        let mut carrier: HashMap<String, String> = HashMap::new();
        TraceContextPropagator::new().inject_context(context, &mut carrier);
        Some(TraceContext {
            traceparent: carrier.remove(TRACEPARENT)?,
            tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }

    /// The context of the current span.
    pub fn current() -> Option<TraceContext> {
        if !enabled() {
            return None;
        }
        Self::of(&tracing::Span::current())
    }

    /// The context stored in an event's metadata or a task's payload (same keys).
    pub fn from_json(object: &Value) -> Option<TraceContext> {
        let traceparent = object.get(TRACEPARENT)?.as_str()?;
        Some(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: object
                .get(TRACESTATE)
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The OpenTelemetry span context it names (`None` if malformed), as the standard
    /// propagator reads it.
    pub fn span_context(&self) -> Option<SpanContext> {
        let mut carrier: HashMap<String, String> = HashMap::new();
        carrier.insert(TRACEPARENT.into(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            carrier.insert(TRACESTATE.into(), state.clone());
        }
        let context = TraceContextPropagator::new()
            .extract_with_context(&opentelemetry::Context::new(), &carrier);
        let sc = context.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// [`Self::span_context`] when spans are exported (`None` when they are not: there is
    /// nothing to parent or link then).
    fn exported_span_context(&self) -> Option<SpanContext> {
        if !enabled() {
            return None;
        }
        self.span_context()
    }

    /// Makes this context the parent of `span`, which must not have been entered yet.
    /// Returns whether it took.
    pub fn adopt(&self, span: &tracing::Span) -> bool {
        let Some(sc) = self.exported_span_context() else {
            return false;
        };
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
            .is_ok()
    }

    /// Makes this context the parent of `span` (not entered yet) and adds a link to it:
    /// the messaging conventions' "process" span of a message whose creation context
    /// this is. Returns whether it took.
    pub fn adopt_and_link(&self, span: &tracing::Span) -> bool {
        let Some(sc) = self.exported_span_context() else {
            return false;
        };
        span.add_link(sc.clone());
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
            .is_ok()
    }

    /// Adds a link to this context to `span` (not entered yet), leaving its parent
    /// alone: a reprocessed copy's task points at its original's trace. Returns whether
    /// it took.
    pub fn link(&self, span: &tracing::Span) -> bool {
        let Some(sc) = self.exported_span_context() else {
            return false;
        };
        span.add_link(sc);
        true
    }

    /// Adds `traceparent` (and `tracestate`) to a metadata map or task payload.
    pub fn insert_into(&self, map: &mut std::collections::HashMap<String, String>) {
        map.insert(TRACEPARENT.into(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            map.insert(TRACESTATE.into(), state.clone());
        }
    }
}

/// Sets an OpenTelemetry attribute on `span` when spans are exported (no `tracing`
/// field, so log lines do not carry it).
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// Marks `span` as failed, the way the semantic conventions say: status `ERROR` with
/// `message` as its description, the attribute `error.type`, and an `exception` event
/// (`exception.type`, `exception.message`). Nothing when spans are not exported.
pub fn record_error(span: &tracing::Span, error_type: &str, message: &str) {
    if !enabled() {
        return;
    }
    span.set_status(Status::error(message.to_owned()));
    span.set_attribute("error.type", error_type.to_owned());
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", error_type.to_owned()),
            KeyValue::new("exception.message", message.to_owned()),
        ],
    );
}

/// [`record_error`] for a failed database operation: `error.type` is the SQLSTATE
/// when the server answered, else the kind of failure.
pub fn record_database_error(span: &tracing::Span, error: &sqlx::Error) {
    if !enabled() {
        return;
    }
    let error_type = match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
    .unwrap_or_else(|| {
        match error {
            sqlx::Error::PoolTimedOut => "pool_timeout",
            sqlx::Error::Io(_) => "io",
            sqlx::Error::Tls(_) => "tls",
            _ => "sqlx::Error",
        }
        .to_owned()
    });
    record_error(span, &error_type, &error.to_string());
}

/// The PRODUCER span of an append: `events` messages sent to the log. Its context is
/// what the events' metadata carries. A plain `events.append` span when spans are not
/// exported.
pub fn producer_span(events: usize) -> tracing::Span {
    if !enabled() {
        return tracing::info_span!("events.append", events);
    }
    tracing::info_span!(
        "events.append",
        events,
        otel.kind = "producer",
        "messaging.system" = MESSAGING_SYSTEM,
        "messaging.destination.name" = EVENTS_DESTINATION,
        "messaging.operation.type" = "send",
        "messaging.operation.name" = "send",
        "messaging.batch.message_count" = events,
    )
}

/// A CLIENT span of one named database operation (`INSERT` into `events`, ...), with
/// the database conventions' attributes; `Span::none()` when spans are not exported.
pub fn database_span(operation: &'static str, collection: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let name = format!("{operation} {collection}");
    tracing::info_span!(
        "db",
        otel.kind = "client",
        otel.name = %name,
        "db.system.name" = "postgresql",
        "db.operation.name" = operation,
        "db.collection.name" = collection,
    )
}

/// One CONSUMER span per event of a subscription's batch, each a child of the trace
/// context stored with its event and linked to it: the "projection update" (or
/// "reaction") step of that event's trace. They last as long as the caller holds them
/// (the batch). Empty when spans are not exported.
pub fn subscription_spans(subscription: &str, events: &[RecordedEvent]) -> Vec<tracing::Span> {
    if !enabled() {
        return Vec::new();
    }
    events
        .iter()
        .filter_map(|event| {
            let context = TraceContext::from_json(&event.metadata)?;
            let span = tracing::info_span!(
                "subscription.handle",
                subscription,
                event_type = %event.event_type,
                event_id = %event.event_id,
                global_position = event.global_position(),
                otel.kind = "consumer",
                "messaging.system" = MESSAGING_SYSTEM,
                "messaging.destination.name" = EVENTS_DESTINATION,
                "messaging.operation.type" = "process",
                "messaging.operation.name" = "process",
                "messaging.consumer.group.name" = subscription,
                "messaging.message.id" = %event.event_id,
            );
            context.adopt_and_link(&span).then_some(span)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_propagator_reads_traceparent_and_rejects_malformed_values() {
        let ok = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        let sc = ok.span_context().expect("valid");
        assert_eq!(
            format!("{:032x}", sc.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", sc.span_id()), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let context = TraceContext {
                traceparent: bad.into(),
                tracestate: None,
            };
            assert!(context.span_context().is_none(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn context_round_trips_through_json() {
        let json = serde_json::json!({
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "actor": "system",
        });
        let context = TraceContext::from_json(&json).unwrap();
        assert_eq!(context.tracestate, None);
        let mut map = std::collections::HashMap::new();
        context.insert_into(&mut map);
        assert_eq!(map[TRACEPARENT], context.traceparent);
        assert!(TraceContext::from_json(&serde_json::json!({})).is_none());
    }

    #[test]
    fn the_stored_form_is_unchanged_by_a_round_trip_through_the_propagator() {
        for (traceparent, tracestate) in [
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some("congo=t61rcWkgMzE"),
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                None,
            ),
        ] {
            let stored = TraceContext {
                traceparent: traceparent.into(),
                tracestate: tracestate.map(str::to_owned),
            };
            let sc = stored.span_context().expect("valid");
            let context = opentelemetry::Context::new().with_remote_span_context(sc);
            assert_eq!(TraceContext::of_context(&context), Some(stored));
        }
    }
}
