//! One trace across the asynchronous hop: the W3C trace context (`traceparent`,
//! `tracestate`) of the span that ran a command is stored in its events' metadata
//! ([`crate::metadata::TRACEPARENT`]); whoever handles those events later (projections,
//! reactions, the tasks they issue) makes its span a child of that context, so one
//! trace shows request → command → append → projection update → task → e-mail.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer (installed by the binary only
//! when an exporter is configured) gives them trace and span ids. Without it,
//! [`enabled`] is false and every function here returns at once: no context is
//! stored and no extra span is created.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
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
        let context = span.context();
        let otel = context.span();
        let sc = otel.span_context();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        Some(TraceContext {
            traceparent: format!(
                "00-{:032x}-{:016x}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            ),
            tracestate: (!state.is_empty()).then_some(state),
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

    /// The OpenTelemetry span context it names (`None` if malformed).
    pub fn span_context(&self) -> Option<SpanContext> {
        let mut parts = self.traceparent.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2
            || version == "ff"
            || trace_id.len() != 32
            || span_id.len() != 16
            || flags.len() != 2
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = self
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
        sc.is_valid().then_some(sc)
    }

    /// Makes this context the parent of `span`, which must not have been entered yet.
    /// Returns whether it took.
    pub fn adopt(&self, span: &tracing::Span) -> bool {
        if !enabled() {
            return false;
        }
        let Some(sc) = self.span_context() else {
            return false;
        };
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
            .is_ok()
    }

    /// Adds `traceparent` (and `tracestate`) to a metadata map or task payload.
    pub fn insert_into(&self, map: &mut std::collections::HashMap<String, String>) {
        map.insert(TRACEPARENT.into(), self.traceparent.clone());
        if let Some(state) = &self.tracestate {
            map.insert(TRACESTATE.into(), state.clone());
        }
    }
}

/// One span per event of a subscription's batch, each a child of the trace context
/// stored with its event: the "projection update" (or "reaction") step of that
/// event's trace. They last as long as the caller holds them (the batch). Empty when
/// spans are not exported.
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
            );
            context.adopt(&span).then_some(span)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_and_rejects_malformed_values() {
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
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
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
}
