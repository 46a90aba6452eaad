//! Logs and traces, set up in one place.
//!
//! - Logs: `tracing`'s fmt layer on stderr, human-readable or JSON (`AULA_LOG_FORMAT`),
//!   levels from `RUST_LOG`. Log lines carry the fields of their spans: `request_id`
//!   inside a GraphQL request, `task_id`, `kind`, `attempt`, `event_id` and
//!   `correlation_id` inside a task attempt (JSON: in `span` and `spans`); JSON lines
//!   also carry the `trace_id` and `span_id` of their span when spans are exported.
//!   Text has colours only when stderr is a terminal.
//! - Traces: only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer
//!   exports the spans over OTLP/HTTP (protobuf) as service `aula`, in batches from a
//!   thread of its own. Unset, no OpenTelemetry layer or exporter exists at all, and
//!   `aula_eventlog::trace::enabled()` stays false, so no trace context is computed or
//!   stored. [`Telemetry::shutdown`] flushes what is still buffered.
//!
//! The OTLP exporter reads the standard variables itself
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,aula_eventlog::local_pg=info";

/// The service name spans are exported under.
pub const SERVICE_NAME: &str = "aula";

/// The installed telemetry; [`Telemetry::shutdown`] (or dropping it) flushes spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs as `format` says; spans to the OTLP collector when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A second call in one process keeps the
    /// first set-up (tests that call `run` twice).
    pub fn init(format: LogFormat) -> Telemetry {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let provider = match endpoint {
            None => None,
            Some(endpoint) => match otlp_provider() {
                Ok(provider) => Some(provider),
                Err(error) => {
                    // Logging is not up yet: say it on stderr and run without traces.
                    eprintln!(
                        "aula: OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: the OTLP exporter could not be set up ({error}); spans are not exported"
                    );
                    None
                }
            },
        };
        let endpoint_note = provider.is_some();
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
        // Colours only for a person at a terminal, never into a file or a collector.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let telemetry = install(
            format,
            filter,
            BoxMakeWriter::new(std::io::stderr),
            ansi,
            provider,
        );
        if endpoint_note && telemetry.provider.is_some() {
            tracing::info!(
                service = SERVICE_NAME,
                "exporting spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT)"
            );
        }
        telemetry
    }

    /// For tests: logs as `format` says, filtered by `filter` (`RUST_LOG` syntax), to
    /// `writer`; every span to `exporter`, synchronously as each span ends (an
    /// in-memory exporter).
    pub fn for_tests<E: SpanExporter + 'static>(
        format: LogFormat,
        filter: &str,
        writer: BoxMakeWriter,
        exporter: E,
    ) -> Telemetry {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource())
            .build();
        install(
            format,
            EnvFilter::new(filter),
            writer,
            false,
            Some(provider),
        )
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered and stops the exporter. Blocking: call it
    /// outside the async runtime.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            aula_eventlog::trace::set_enabled(false);
            if let Err(error) = provider.shutdown() {
                eprintln!("aula: flushing spans failed: {error}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn resource() -> Resource {
    Resource::builder().with_service_name(SERVICE_NAME).build()
}

fn otlp_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

fn install(
    format: LogFormat,
    filter: EnvFilter,
    writer: BoxMakeWriter,
    ansi: bool,
    provider: Option<SdkTracerProvider>,
) -> Telemetry {
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .map_event_format(WithTraceIds)
                    .with_writer(writer),
            ),
        ),
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(SERVICE_NAME)));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // Someone set up logging before us: keep it, export nothing of ours.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Telemetry { provider: None };
    }
    aula_eventlog::trace::set_enabled(provider.is_some());
    Telemetry { provider }
}

/// The JSON event format with the OpenTelemetry `trace_id` and `span_id` of the span
/// the line was written in, as the first keys of the object, when spans are exported
/// and that span has a valid context (a log collector then links the line to its
/// trace). Without an exporter it is the plain JSON format.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = if aula_eventlog::trace::enabled() {
            ctx.parent_span().and_then(|span| trace_ids(&span.id()))
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The trace and span ids (hex) of a span, when the OpenTelemetry layer gave it a
/// valid context.
fn trace_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    let context = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(id, dispatch)
    })?;
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
