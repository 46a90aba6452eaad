//! `GET /metrics` in Prometheus text format, and the GraphQL operation metrics.
//!
//! An operation is a root field of the schema (`signUp`, `courseCapacity`, ...), not the
//! client's `operationName`, which anyone can choose: label values stay bounded. Fields
//! the schema does not have are counted as `(unknown)`, requests refused before the
//! schema saw them (unreadable body, bad token) as `(none)`. The outcome is `ok` or the
//! `extensions.code` of the first error under that field (an error without a path
//! counts for every field of the request).
//!
//! Counters and histograms are recorded as they happen (atomics, see
//! `aula_eventlog::metrics`); projection positions, queue depth and the pool are read
//! when the endpoint is scraped, with cheap queries. Nothing here carries a secret:
//! no tokens, addresses, e-mails or request bodies.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, NextParseQuery, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{Request, Response, ServerError, ServerResult, Value, Variables};
use aula_eventlog::metrics::{Counter, Family, Histogram, Text, LATENCY_BUCKETS};
use futures::stream::BoxStream;
use futures::StreamExt as _;

use crate::error;
use crate::state::AppState;

/// Requests refused before the schema saw them.
pub const NO_OPERATION: &str = "(none)";
/// A root field the schema does not have (the request failed validation).
pub const UNKNOWN_OPERATION: &str = "(unknown)";
/// The outcome of an operation that completed without error.
pub const OK: &str = "ok";

pub static GRAPHQL_OPERATIONS: Family<2, Counter> = Family::new(
    "aula_graphql_operations_total",
    "GraphQL operations (root fields) executed, by operation and outcome (ok or the error code).",
    ["operation", "outcome"],
    (),
);

pub static GRAPHQL_DURATION: Family<1, Histogram> = Family::new(
    "aula_graphql_operation_duration_seconds",
    "Duration of GraphQL requests, by operation (root field).",
    ["operation"],
    LATENCY_BUCKETS,
);

/// One root field of the schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaOperation {
    /// `query`, `mutation` or `subscription`.
    pub kind: &'static str,
    pub name: String,
}

/// Every root field of the schema, queries first, each kind in schema order.
pub fn schema_operations() -> &'static [SchemaOperation] {
    static OPERATIONS: OnceLock<Vec<SchemaOperation>> = OnceLock::new();
    OPERATIONS.get_or_init(|| operations_of(&crate::schema_sdl()))
}

fn operations_of(sdl: &str) -> Vec<SchemaOperation> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    // The SDL comes from our own schema: it always parses.
    let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
        return Vec::new();
    };
    let mut roots = vec![
        ("query", "QueryRoot".to_owned()),
        ("mutation", "MutationRoot".to_owned()),
        ("subscription", "SubscriptionRoot".to_owned()),
    ];
    for definition in &document.definitions {
        if let TypeSystemDefinition::Schema(schema) = definition {
            let schema = &schema.node;
            for (kind, name) in [
                ("query", &schema.query),
                ("mutation", &schema.mutation),
                ("subscription", &schema.subscription),
            ] {
                if let (Some(name), Some(root)) = (name, roots.iter_mut().find(|r| r.0 == kind)) {
                    root.1 = name.node.to_string();
                }
            }
        }
    }
    let mut operations = Vec::new();
    for (kind, root) in &roots {
        for definition in &document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            if ty.node.name.node.as_str() != root {
                continue;
            }
            if let TypeKind::Object(object) = &ty.node.kind {
                operations.extend(object.fields.iter().map(|field| SchemaOperation {
                    kind,
                    name: field.node.name.node.to_string(),
                }));
            }
        }
    }
    operations
}

fn known_operation(name: &str) -> bool {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES
        .get_or_init(|| schema_operations().iter().map(|o| o.name.clone()).collect())
        .contains(name)
        || name.starts_with("__")
}

/// Every `(operation, outcome, count)` recorded by this process.
pub fn graphql_calls() -> Vec<(String, String, u64)> {
    GRAPHQL_OPERATIONS
        .children()
        .map(|(labels, counter)| (labels[0].to_string(), labels[1].to_string(), counter.get()))
        .collect()
}

/// Counts a request refused before any operation was known (body, JSON, token,
/// syntax). Not timed: the histogram is per operation.
pub(crate) fn record_refused(code: &str) {
    GRAPHQL_OPERATIONS.with([NO_OPERATION, code]).inc();
}

/// The async-graphql extension that records every operation: one instance per request.
#[derive(Default)]
pub(crate) struct OperationRecorder {
    request: Arc<RequestOperations>,
}

/// One request's state: which operation it names, then its root fields.
#[derive(Default)]
struct RequestOperations {
    operation_name: OnceLock<Option<String>>,
    /// `(response key, operation label)` of each root field.
    fields: OnceLock<Vec<(String, String)>>,
}

impl RequestOperations {
    fn record(&self, response: Option<&Response>, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        let fields = match self.fields.get() {
            Some(fields) if !fields.is_empty() => fields.as_slice(),
            // The query did not parse.
            _ => &[],
        };
        if fields.is_empty() {
            let code = response
                .and_then(|r| r.errors.first())
                .map(error_code)
                .unwrap_or(error::VALIDATION);
            record_refused(code);
            return;
        }
        for (key, operation) in fields {
            let outcome = match response {
                // Dropped before it finished: the request timed out.
                None => error::TIMEOUT,
                Some(response) => response
                    .errors
                    .iter()
                    .find(|e| match e.path.first() {
                        None => true,
                        Some(async_graphql::PathSegment::Field(first)) => first == key,
                        Some(_) => false,
                    })
                    .map(error_code)
                    .unwrap_or(OK),
            };
            GRAPHQL_OPERATIONS.with([operation, outcome]).inc();
            GRAPHQL_DURATION.with([operation]).observe(seconds);
            tracing::debug!(
                operation = operation.as_str(),
                outcome,
                duration_ms = seconds * 1000.0,
                "graphql operation finished"
            );
        }
    }
}

/// An error's `extensions.code`; errors async-graphql raised itself have none and
/// leave as VALIDATION (see `http::normalize`).
fn error_code(error: &ServerError) -> &str {
    match error.extensions.as_ref().and_then(|e| e.get("code")) {
        Some(Value::String(code)) => code.as_str(),
        _ => error::VALIDATION,
    }
}

/// Records on drop, so a request cancelled by the timeout is counted too.
struct Pending<'a> {
    recorder: &'a RequestOperations,
    started: Instant,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.recorder.record(None, self.started);
        }
    }
}

#[async_trait::async_trait]
impl Extension for OperationRecorder {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut pending = Pending {
            recorder: &self.request,
            started: Instant::now(),
            done: false,
        };
        let response = next.run(ctx).await;
        pending.done = true;
        self.request.record(Some(&response), pending.started);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // Counted once, when the first response (or error) arrives: the query is
        // parsed while the stream is polled, after this hook ran.
        let started = Instant::now();
        let mut first = true;
        let recorder = self.request.clone();
        next.run(ctx, stream)
            .inspect(move |response| {
                if std::mem::take(&mut first) {
                    recorder.record(Some(response), started);
                }
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let _ = self
            .request
            .operation_name
            .set(request.operation_name.clone());
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let name = self.request.operation_name.get().cloned().flatten();
        let fields = root_fields(&document, name.as_deref());
        if !fields.is_empty() {
            let names: Vec<&str> = fields.iter().map(|(_, op)| op.as_str()).collect();
            tracing::Span::current().record("operation", names.join(",").as_str());
        }
        let _ = self.request.fields.set(fields);
        Ok(document)
    }
}

/// The root fields the request's operation selects, as `(response key, label)`.
fn root_fields(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Vec<(String, String)> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        _ => None,
    };
    let Some(operation) = operation else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    collect_fields(document, &operation.node.selection_set.node, &mut fields, 0);
    fields
}

fn collect_fields(
    document: &ExecutableDocument,
    selection_set: &SelectionSet,
    out: &mut Vec<(String, String)>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    for selection in &selection_set.items {
        match &selection.node {
            Selection::Field(field) => {
                let field = &field.node;
                let name = field.name.node.as_str();
                if name == "__typename" {
                    continue;
                }
                let key = field.response_key().node.to_string();
                let label = if known_operation(name) {
                    name.to_owned()
                } else {
                    UNKNOWN_OPERATION.to_owned()
                };
                if !out.iter().any(|(k, _)| *k == key) {
                    out.push((key, label));
                }
            }
            Selection::InlineFragment(fragment) => {
                collect_fields(document, &fragment.node.selection_set.node, out, depth + 1)
            }
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) {
                    collect_fields(document, &fragment.node.selection_set.node, out, depth + 1);
                }
            }
        }
    }
}

/// The whole `/metrics` page.
/// Notes in `sources` whether the scrape-time reading of `source` (`what`, in the log)
/// worked, logging why not, and hands on what it read.
/// How long a scrape waits for each database reading. The readings run at once, so a
/// scrape answers within about this long even when every pooled connection is busy
/// (acquiring one waits up to 10 s, four readings in a row 40 s): Prometheus gives up
/// after 10 s by default, and a scrape that fails says nothing, whereas one that
/// answers names the exhausted pool (`aula_db_pool_connections`) and the readings
/// that failed (`aula_metrics_source_up`).
const SOURCE_BUDGET: Duration = Duration::from_secs(2);

/// One database reading, bounded by [`SOURCE_BUDGET`].
async fn bounded<T, E: std::fmt::Display>(
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(SOURCE_BUDGET, read).await {
        Ok(read) => read.map_err(|error| error.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s (every pooled connection busy?)",
            SOURCE_BUDGET.as_secs()
        )),
    }
}

fn scraped<'s, T, E: std::fmt::Display>(
    sources: &mut Vec<(&'s str, bool)>,
    source: &'s str,
    what: &str,
    read: Result<T, E>,
) -> Option<T> {
    sources.push((source, read.is_ok()));
    read.map_err(|error| tracing::warn!(%error, "metrics: reading {what} failed"))
        .ok()
}

/// Where one reader of the log (a projection, a subscription) stands.
struct ReaderLag<'a> {
    name: &'a str,
    position: i64,
    lag_events: i64,
    lag_seconds: f64,
}

impl<'a> ReaderLag<'a> {
    fn new(name: &'a str, position: i64, lag_events: i64, lag_seconds: f64) -> Self {
        ReaderLag {
            name,
            position,
            lag_events,
            lag_seconds,
        }
    }
}

/// The gauges `<prefix>_position`, `<prefix>_lag_events` and `<prefix>_lag_seconds`
/// (with `help`, in that order), one sample per reader labelled `<label>="<name>"`.
fn reader_gauges<'a>(
    out: &mut Text,
    (prefix, label): (&str, &str),
    help: [&str; 3],
    readers: impl Iterator<Item = ReaderLag<'a>>,
) {
    let readers: Vec<ReaderLag<'a>> = readers.collect();
    let gauge = |value: fn(&ReaderLag<'_>) -> f64| {
        readers
            .iter()
            .map(|r| (vec![(label, r.name)], value(r)))
            .collect::<Vec<_>>()
    };
    out.gauge(
        &format!("{prefix}_position"),
        help[0],
        &gauge(|r| r.position as f64),
    );
    out.gauge(
        &format!("{prefix}_lag_events"),
        help[1],
        &gauge(|r| r.lag_events as f64),
    );
    out.gauge(
        &format!("{prefix}_lag_seconds"),
        help[2],
        &gauge(|r| r.lag_seconds),
    );
}

pub(crate) async fn render(state: &AppState) -> String {
    let mut out = Text::new();
    GRAPHQL_OPERATIONS.encode(&mut out);
    GRAPHQL_DURATION.encode(&mut out);
    aula_eventlog::metrics::encode(&mut out);
    aula_processor::metrics::encode(&mut out);
    crate::process_metrics::encode(&mut out);

    let mut sources: Vec<(&str, bool)> = Vec::new();
    let (projections, depth, lags, blocker) = tokio::join!(
        bounded(aula_projections::status::status(&state.pool)),
        bounded(aula_processor::metrics::queue_depth(&state.pool)),
        bounded(aula_eventlog::health::subscription_lags(&state.pool)),
        bounded(aula_eventlog::health::oldest_blocker(&state.pool)),
    );
    if let Some(projections) = scraped(
        &mut sources,
        "projections",
        "the projections' status",
        projections,
    ) {
        reader_gauges(
            &mut out,
            ("aula_projection", "projection"),
            [
                "Global position of the last event each projection handled.",
                "Committed events each projection has not handled yet.",
                "How long the oldest event each projection has not handled has waited.",
            ],
            projections
                .iter()
                .map(|p| ReaderLag::new(&p.name, p.position, p.lag_events, p.lag_seconds)),
        );
    }
    if let Some(depth) = scraped(&mut sources, "task_queue", "the task queue's depth", depth) {
        aula_processor::metrics::encode_queue(&depth, &mut out);
    }
    // Every subscription, the processor's reactions included, and what holds the log
    // back (see aula_eventlog::health).
    if let Some(lags) = scraped(
        &mut sources,
        "subscriptions",
        "the subscriptions' lag",
        lags,
    ) {
        reader_gauges(
            &mut out,
            ("aula_subscription", "subscription"),
            [
                "Global position of the last event each subscription (projections, processor.reactions) handled.",
                "Committed events each subscription has not handled yet (counted up to 100,000).",
                "How long the oldest event each subscription has not handled has waited.",
            ],
            lags.iter()
                .map(|l| ReaderLag::new(&l.name, l.position, l.lag_events, l.lag_seconds)),
        );
    }
    if let Some(blocker) = scraped(&mut sources, "log_blocker", "pg_stat_activity", blocker) {
        out.gauge(
            "aula_log_oldest_transaction_age_seconds",
            "Age of the oldest open transaction holding back the log readers (it has a transaction id; any client, any database of the cluster); 0 when none.",
            &[(Vec::new(), blocker.map_or(0.0, |b| b.age_seconds))],
        );
    }
    if let Some(health) = state.log_health() {
        out.gauge(
            "aula_log_degraded",
            "1 while a transaction has held the log back longer than AULA_LOG_STALL_THRESHOLD_SECONDS (projections and processor stalled), else 0.",
            &[(Vec::new(), if health.degraded { 1.0 } else { 0.0 })],
        );
    }
    let pool = &state.pool;
    let size = pool.size() as f64;
    let idle = pool.num_idle() as f64;
    out.gauge(
        "aula_db_pool_connections",
        "Connections of the API's database pool, by state (idle, in_use).",
        &[
            (vec![("state", "idle")], idle),
            (vec![("state", "in_use")], (size - idle).max(0.0)),
        ],
    );
    out.gauge(
        "aula_db_pool_max_connections",
        "The most connections the API's database pool opens.",
        &[(Vec::new(), pool.options().get_max_connections() as f64)],
    );
    out.gauge(
        "aula_metrics_source_up",
        "Whether the scrape-time reading of each source succeeded (1) or failed (0).",
        &sources
            .iter()
            .map(|(source, up)| (vec![("source", *source)], if *up { 1.0 } else { 0.0 }))
            .collect::<Vec<_>>(),
    );
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_lists_its_operations() {
        let operations = schema_operations();
        for (kind, name) in [
            ("mutation", "signUp"),
            ("mutation", "login"),
            ("query", "me"),
            ("subscription", "bulkReprocessProgress"),
        ] {
            assert!(
                operations.iter().any(|o| o.kind == kind && o.name == name),
                "{kind} {name} missing from {operations:?}"
            );
        }
    }

    #[test]
    fn root_fields_follow_aliases_fragments_and_the_chosen_operation() {
        let document = async_graphql::parser::parse_query(
            "query A { x: me { id } ...F } query B { health { status } } fragment F on QueryRoot { nope }",
        )
        .unwrap();
        assert_eq!(
            root_fields(&document, Some("A")),
            [
                ("x".to_owned(), "me".to_owned()),
                ("nope".to_owned(), UNKNOWN_OPERATION.to_owned())
            ]
        );
        assert_eq!(
            root_fields(&document, Some("B")),
            [("health".to_owned(), "health".to_owned())]
        );
        assert!(root_fields(&document, None).is_empty());
    }
}
