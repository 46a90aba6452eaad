//! The processor's spans, with the OpenTelemetry semantic conventions when spans are
//! exported (see `aula_eventlog::trace`): a task attempt is a CONSUMER span (it
//! processes a message the reactions sent), a child of the trace that issued the task
//! and linked to it (a reprocessed copy's task also links to its original's trace); an SMTP conversation is a CLIENT span; a failed attempt has status
//! `ERROR` and an `exception` event. Without an exporter the spans are the plain ones
//! the log lines need, nothing more.

use aula_eventlog::trace::{self, TraceContext};

use crate::handlers::TaskError;
use crate::queue::TaskRow;

/// An optional id in a log field: the id, or `-`.
struct OptionalId(Option<uuid::Uuid>);

impl std::fmt::Display for OptionalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(id) => id.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A `task` span with the ids every attempt's log lines carry, then `$extra` fields.
macro_rules! task_span {
    ($task:expr $(, $($extra:tt)+)?) => {
        tracing::info_span!(
            "task",
            task_id = $task.id,
            kind = %$task.kind,
            attempt = $task.attempt,
            event_id = %OptionalId($task.event_id),
            correlation_id = %OptionalId($task.correlation_id),
            $($($extra)+)?
        )
    };
}

/// The `task` span of one attempt; its log lines carry the task's ids. All fields at
/// creation: recording them later costs the JSON formatter a re-parse.
pub fn task_attempt(task: &TaskRow) -> tracing::Span {
    if !trace::enabled() {
        return task_span!(task);
    }
    let span = task_span!(
        task,
        otel.kind = "consumer",
        "messaging.system" = trace::MESSAGING_SYSTEM,
        "messaging.destination.name" = "tasks",
        "messaging.operation.type" = "process",
        "messaging.operation.name" = "process",
        "messaging.message.id" = task.id,
        "messaging.consumer.group.name" = %task.kind,
    );
    // The context the reaction copied from the event into the payload.
    if let Some(context) = TraceContext::from_json(&task.payload) {
        context.adopt_and_link(&span);
    }
    // A reprocessed copy's task: its own trace, linked to the original's.
    let original = task
        .payload
        .get(aula_eventlog::metadata::ORIGINAL_TRACEPARENT)
        .and_then(serde_json::Value::as_str);
    if let Some(traceparent) = original {
        TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: None,
        }
        .link(&span);
    }
    span
}

/// Marks a failed attempt's span (status `ERROR`, an `exception` event).
pub fn record_outcome(span: &tracing::Span, result: &Result<(), TaskError>) {
    if let Err(error) = result {
        let error_type = if error.is_permanent() {
            "TaskError::Permanent"
        } else {
            "TaskError::Retry"
        };
        trace::record_error(span, error_type, &error.chain());
    }
}

/// The CLIENT span of one SMTP conversation (`server.address`, `server.port`,
/// `network.protocol.name`); `Span::none()` when spans are not exported.
pub fn smtp(server: &SmtpServer) -> tracing::Span {
    if !trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "smtp",
        otel.kind = "client",
        "server.address" = %server.host,
        "server.port" = server.port,
        "network.protocol.name" = "smtp",
        "network.transport" = "tcp",
    )
}

/// Where an SMTP URL points: host and port (the scheme's default when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
}

impl SmtpServer {
    /// From `smtp://host:port`, `smtps://user:password@host`, ... (the credentials are
    /// dropped). `None` for what is not such a URL.
    pub fn from_url(url: &str) -> Option<SmtpServer> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let tls_wrapped = scheme.eq_ignore_ascii_case("smtps");
        let starttls = url.contains("tls=required") || url.contains("tls=opportunistic");
        let port = match port {
            Some(port) => port.parse().ok()?,
            None if tls_wrapped => 465,
            None if starttls => 587,
            None => 25,
        };
        (!host.is_empty()).then(|| SmtpServer {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_name_their_server_without_credentials() {
        let server = |url| SmtpServer::from_url(url).map(|s| (s.host, s.port));
        assert_eq!(
            server("smtp://127.0.0.1:1025"),
            Some(("127.0.0.1".into(), 1025))
        );
        assert_eq!(
            server("smtps://user:p@ss@mail.example.org"),
            Some(("mail.example.org".into(), 465))
        );
        assert_eq!(
            server("smtp://mail.example.org?tls=required"),
            Some(("mail.example.org".into(), 587))
        );
        assert_eq!(server("smtp://[::1]:2525"), Some(("::1".into(), 2525)));
        assert_eq!(server("not a url"), None);
    }
}
