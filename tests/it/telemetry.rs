//! One trace across the asynchronous hop, spans that follow the OpenTelemetry semantic
//! conventions, and structured logs that carry their ids.
//!
//! The whole service runs in this process (API, projections, reactions, workers with
//! the file outbox) with the telemetry set up by `aula::telemetry` and an in-memory
//! span exporter: a sign-up through HTTP must give one trace, continuing the caller's
//! `traceparent`, holding the request (a SERVER span with the HTTP attributes), the
//! command and its append (PRODUCER, with the INSERT as a database CLIENT span), the
//! projections' and reactions' handling and the e-mail task's attempts (CONSUMERs,
//! children of and linked to the append), and the e-mail send, each under the step
//! that caused it; the JSON log lines of the request and of the task carry the
//! request id, respectively the task's ids, and the trace and span ids of their span.
//! A failed task attempt and a failed SMTP conversation are error spans with an
//! `exception` event.

use crate::support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aula::cli::LogFormat;
use aula::telemetry::Telemetry;
use aula_eventlog::shutdown;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Wakeups;
use aula_processor::handlers::Registry;
use aula_processor::{FileMailer, MailConfig, ProcessorConfig};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::{json, Value};
use support::logs::Logs;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use uuid::Uuid;

struct Installed {
    spans: InMemorySpanExporter,
    logs: Logs,
    _telemetry: Telemetry,
}

/// The process's telemetry: JSON logs into memory, spans into memory.
fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let logs = Logs::default();
        let writer = logs.clone();
        let telemetry = Telemetry::for_tests(
            LogFormat::Json,
            "info,aula_api::metrics=debug,aula_processor::worker=debug",
            BoxMakeWriter::new(move || writer.clone()),
            spans.clone(),
        );
        assert!(telemetry.exporting(), "the test's subscriber was installed");
        Installed {
            spans,
            logs,
            _telemetry: telemetry,
        }
    })
}

/// Hands the API's one-time tokens to the e-mail tasks, as `aula serve` does.
struct StashTokens(sqlx::PgPool);

#[async_trait::async_trait]
impl aula_api::TokenSink for StashTokens {
    async fn issued(&self, token: &aula_api::IssuedToken) -> Result<(), aula_api::BoxError> {
        let hash = aula_api::token_hash(&token.token);
        let keep_until = chrono::Utc::now() + chrono::Duration::days(1);
        aula_processor::stash_token(&self.0, &hash, &token.token, keep_until).await?;
        Ok(())
    }
}

/// Serves the API of `state` on a free loopback port until `stop`; returns its address
/// and the server's task.
async fn serve_on_loopback(
    state: aula_api::AppState,
    mut stop: shutdown::Shutdown,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = aula_api::serve(listener, aula_api::router(state), async move {
        stop.wait().await
    });
    (addr, tokio::spawn(server))
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("timed out")
}

/// Whether `span` has a link to `target`.
fn links_to(span: &SpanData, target: &SpanData) -> bool {
    span.links
        .iter()
        .any(|link| link.span_context.span_id() == target.span_context.span_id())
}

/// The attributes of `span`'s event called `name`.
fn event_attributes(span: &SpanData, name: &str) -> Option<HashMap<String, String>> {
    span.events.iter().find(|e| e.name == name).map(|event| {
        event
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    })
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Whether `span` is `ancestor` or below it (following parent ids within the trace).
fn descends(span: &SpanData, ancestor: &SpanData, by_id: &HashMap<SpanId, &SpanData>) -> bool {
    let mut current = span;
    for _ in 0..64 {
        if current.span_context.span_id() == ancestor.span_context.span_id() {
            return true;
        }
        match by_id.get(&current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_up_is_one_trace_from_request_to_email_and_its_logs_carry_ids() {
    support::alone_in_own_process!(
        a_sign_up_is_one_trace_from_request_to_email_and_its_logs_carry_ids
    );
    let installed = installed();
    let db = TestDatabase::new().await;
    let (trigger, stop) = shutdown::channel();
    let wakeups = Wakeups::listen(&db.pool, stop.clone()).await.unwrap();
    let projections =
        aula_projections::spawn_all(db.connect.clone(), wakeups.clone(), stop.clone());
    let reactions = aula_processor::spawn_reactions(db.connect.clone(), wakeups, stop.clone());
    let outbox = std::env::temp_dir().join(format!("aula-telemetry-outbox-{}", Uuid::new_v4()));
    let mail = MailConfig {
        outbox_dir: outbox.clone(),
        ..MailConfig::default()
    };
    let workers = tokio::spawn(aula_processor::run_workers(
        db.pool.clone(),
        ProcessorConfig {
            worker_name: "telemetry-test".into(),
            poll_interval: Duration::from_millis(50),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..ProcessorConfig::default()
        },
        Registry::standard(Arc::new(FileMailer::new(&outbox, mail.from.clone())), mail),
        stop.clone(),
    ));
    let config = aula_api::ApiConfig::new(aula_api::Secret::new(
        b"telemetry test secret of 32 bytes or more".to_vec(),
    ));
    let state = aula_api::AppState::new(db.pool.clone(), config)
        .with_token_sink(Arc::new(StashTokens(db.pool.clone())));
    let (addr, http) = serve_on_loopback(state, stop.clone()).await;

    let request_id = format!("telemetry-{}", Uuid::new_v4().simple());
    let email = format!("traced-{}@aula.test", Uuid::new_v4().simple());
    // The caller's trace, which the request continues (W3C `traceparent`).
    let caller_trace = Uuid::new_v4().simple().to_string();
    let caller_span = &Uuid::new_v4().simple().to_string()[..16];
    let response: Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("x-request-id", &request_id)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .header("user-agent", "aula-telemetry-test/1.0")
        .json(&json!({
            "query": "mutation($input: SignUpInput!) { signUp(input: $input) { accepted logPosition } }",
            "variables": { "input": { "email": email } },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(response["errors"].is_null(), "{response}");

    // The request's root span, then everything in its trace once the e-mail went out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (trace_id, spans) = loop {
        let all = installed.spans.get_finished_spans().unwrap();
        let root = all.iter().find(|s| {
            s.name == "graphql"
                && attribute(s, "request_id").as_deref() == Some(request_id.as_str())
        });
        if let Some(root) = root {
            let trace_id: TraceId = root.span_context.trace_id();
            let trace: Vec<SpanData> = all
                .iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .cloned()
                .collect();
            // The task span ends after the send it contains: wait for both.
            let task_done = trace.iter().any(|s| {
                s.name == "task"
                    && attribute(s, "kind").as_deref() == Some("email.signup_confirmation")
            });
            if task_done && trace.iter().any(|s| s.name == "email.send") {
                break (trace_id, trace);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no e-mail span in the request's trace; spans so far: {:?}",
            all.iter()
                .map(|s| (s.name.to_string(), s.span_context.trace_id()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let one = |name: &str, pred: &dyn Fn(&SpanData) -> bool| -> &SpanData {
        spans
            .iter()
            .find(|s| s.name == name && pred(s))
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span in trace {trace_id}: {:?}",
                    spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>()
                )
            })
    };
    // HTTP: one SERVER span, continuing the caller's trace, with the semantic
    // conventions' attributes; the `graphql` span below it.
    assert_eq!(
        trace_id.to_string(),
        caller_trace,
        "the caller's trace goes on"
    );
    let server = one("POST /graphql", &|s| s.span_kind == SpanKind::Server);
    assert_eq!(server.parent_span_id.to_string(), caller_span);
    assert!(server.parent_span_is_remote);
    let port = addr.port().to_string();
    for (key, value) in [
        ("http.request.method", "POST"),
        ("url.path", "/graphql"),
        ("url.scheme", "http"),
        ("http.route", "/graphql"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("client.address", "127.0.0.1"),
        ("user_agent.original", "aula-telemetry-test/1.0"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(
            attribute(server, key).as_deref(),
            Some(value),
            "{key} of the server span"
        );
    }
    assert_eq!(server.status, Status::Unset, "a 200 is no error");
    let root = one("graphql", &|_| true);
    assert_eq!(root.parent_span_id, server.span_context.span_id());
    assert_eq!(root.span_kind, SpanKind::Internal);
    assert_eq!(attribute(root, "operation").as_deref(), Some("signUp"));
    let command = one("command", &|s| {
        attribute(s, "aggregate").as_deref() == Some("user")
    });
    let append = one("events.append", &|_| true);
    let projection = one("subscription.handle", &|s| {
        attribute(s, "subscription")
            .is_some_and(|name| aula_projections::NAMES.contains(&name.as_str()))
            && attribute(s, "event_type").as_deref() == Some("PendingUserRegisterCreated")
    });
    let reaction = one("subscription.handle", &|s| {
        attribute(s, "subscription").as_deref() == Some(aula_processor::REACTIONS_SUBSCRIPTION)
    });
    let task = one("task", &|s| {
        attribute(s, "kind").as_deref() == Some("email.signup_confirmation")
    });
    let send = one("email.send", &|_| true);
    let insert = one("INSERT events", &|s| {
        s.parent_span_id == append.span_context.span_id()
    });
    for (child, parent, what) in [
        (command, root, "command under the request"),
        (append, command, "append under the command"),
        (projection, command, "projection update under the command"),
        (reaction, command, "reaction under the command"),
        (task, command, "task attempt under the command"),
        (send, task, "e-mail under its task attempt"),
    ] {
        assert!(descends(child, parent, &by_id), "{what}");
    }
    assert_eq!(attribute(send, "transport").as_deref(), Some("file"));

    // Messaging across the log: the append is a PRODUCER, its INSERT a database
    // CLIENT; every step that handles its events is a CONSUMER, child of the append
    // (whose context the events carry) and linked to it.
    assert_eq!(append.span_kind, SpanKind::Producer);
    assert_eq!(insert.span_kind, SpanKind::Client);
    for (span, key, value) in [
        (append, "messaging.system", "aula"),
        (append, "messaging.destination.name", "events"),
        (append, "messaging.operation.type", "send"),
        (insert, "db.system.name", "postgresql"),
        (insert, "db.operation.name", "INSERT"),
        (insert, "db.collection.name", "events"),
    ] {
        let what = format!("{} {key}", span.name);
        assert_eq!(attribute(span, key).as_deref(), Some(value), "{what}");
    }
    for consumer in [projection, reaction, task] {
        assert_eq!(consumer.span_kind, SpanKind::Consumer, "{}", consumer.name);
        assert_eq!(
            consumer.parent_span_id,
            append.span_context.span_id(),
            "{} is a child of the append",
            consumer.name
        );
        assert!(
            links_to(consumer, append),
            "{} links to the append",
            consumer.name
        );
        assert_eq!(
            attribute(consumer, "messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(
            attribute(consumer, "messaging.system").as_deref(),
            Some("aula")
        );
    }
    assert_eq!(task.status, Status::Unset, "the e-mail task succeeded");
    assert!(
        aula_processor::metrics::EMAILS
            .get(["file", "sent"])
            .is_some_and(|c| c.get() >= 1),
        "the e-mail was counted"
    );

    // Structured logs: the request's lines carry its id, the task's lines its ids.
    let lines = installed.logs.json_lines();
    let request_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "graphql operation finished"
                && l["fields"]["operation"] == "signUp"
                && l["span"]["request_id"] == request_id.as_str()
        })
        .unwrap_or_else(|| panic!("no log line of the request carries its id: {lines:?}"));
    assert_eq!(request_line["fields"]["outcome"], "ok");
    assert_eq!(request_line["trace_id"], trace_id.to_string());
    assert_eq!(
        request_line["span_id"],
        root.span_context.span_id().to_string(),
        "the line carries the ids of the `graphql` span it was written in"
    );
    assert!(request_line["spans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "graphql" && s["request_id"] == request_id.as_str()));
    let task_id: i64 = attribute(task, "task_id")
        .expect("the task span has its id")
        .parse()
        .unwrap();
    let task_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "task attempt finished" && l["span"]["task_id"] == task_id
        })
        .unwrap_or_else(|| panic!("no log line of task {task_id}: {lines:?}"));
    assert_eq!(task_line["trace_id"], trace_id.to_string());
    assert_eq!(
        task_line["span_id"],
        task.span_context.span_id().to_string()
    );
    for key in ["task_id", "kind", "attempt", "event_id", "correlation_id"] {
        assert!(
            !task_line["span"][key].is_null(),
            "task log line lacks {key}: {task_line}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.to_string().contains(&email)),
        "the e-mail address was logged"
    );

    // A failed attempt: its span has status ERROR and an `exception` event.
    let kind = format!("telemetry.unknown.{}", Uuid::new_v4().simple());
    let mut conn = db.pool.acquire().await.unwrap();
    aula_processor::queue::insert_tasks(
        &mut conn,
        &[aula_processor::NewTask::new(
            &kind,
            format!("{kind}:1"),
            json!({}),
        )],
    )
    .await
    .unwrap();
    drop(conn);
    let failed = support::finished_span(
        &installed.spans,
        support::PATIENCE,
        "span of the failed task",
        |s| s.name == "task" && attribute(s, "kind").as_deref() == Some(kind.as_str()),
    )
    .await;
    assert_eq!(failed.span_kind, SpanKind::Consumer);
    match &failed.status {
        Status::Error { description } => {
            assert!(description.contains("no handler"), "{description}")
        }
        other => panic!("the failed attempt's status is {other:?}"),
    }
    assert_eq!(
        attribute(&failed, "error.type").as_deref(),
        Some("TaskError::Permanent")
    );
    let exception = event_attributes(&failed, "exception").expect("an exception event");
    assert!(exception["exception.message"].contains("no handler"));
    assert_eq!(exception["exception.type"], "TaskError::Permanent");

    // A 5xx answer is the server's failure: its SERVER span is an error (a 4xx is not).
    // `/ready` answers 503 while the readiness probe says no.
    let unready = aula_api::AppState::new(
        db.pool.clone(),
        aula_api::ApiConfig::new(aula_api::Secret::new(
            b"telemetry test secret of 32 bytes or more".to_vec(),
        )),
    )
    .with_readiness(Arc::new(|| false));
    let (unready_addr, unready_http) = serve_on_loopback(unready, stop.clone()).await;
    let answer = reqwest::get(format!("http://{unready_addr}/ready"))
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let unready_port = unready_addr.port().to_string();
    let half_a_minute = Duration::from_secs(30);
    let refused = support::finished_span(
        &installed.spans,
        half_a_minute,
        "server span of the 503",
        |s| {
            s.span_kind == SpanKind::Server
                && attribute(s, "server.port").as_deref() == Some(unready_port.as_str())
        },
    )
    .await;
    assert_eq!(
        attribute(&refused, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert!(
        matches!(refused.status, Status::Error { .. }),
        "a 503's server span is an error: {:?}",
        refused.status
    );

    trigger.trigger();
    within(unready_http).await.unwrap().unwrap();
    within(http).await.unwrap().unwrap();
    within(workers).await.unwrap().unwrap();
    within(reactions.task).await.unwrap();
    for (_, handle) in projections {
        within(handle.task).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&outbox);
}

/// An SMTP conversation is a CLIENT span naming the server; one the server refuses is
/// an error span with an `exception` event.
#[tokio::test(flavor = "multi_thread")]
async fn smtp_sends_are_client_spans_and_a_refused_one_is_an_error() {
    support::alone_in_own_process!(smtp_sends_are_client_spans_and_a_refused_one_is_an_error);
    let installed = installed();
    let port = support::free_port();
    let smtp = support::smtp::accept_on(port).await;
    // One mailer per send: lettre keeps a connection open, and the acceptor refuses
    // new connections only.
    let mailer = || {
        aula_processor::SmtpMailer::from_url(
            &format!("smtp://127.0.0.1:{port}"),
            "Aula <no-reply@aula.test>",
        )
        .unwrap()
    };
    let message = |key: &str| aula_processor::mail::EmailMessage {
        to: "someone@aula.test".into(),
        subject: "telemetry".into(),
        text: "hello".into(),
        html: "<p>hello</p>".into(),
        idempotency_key: key.into(),
    };
    let send = |key: String| {
        let parent = tracing::info_span!("telemetry_smtp_test", key = %key);
        let message = message(&key);
        let mailer = mailer();
        async move {
            use tracing::Instrument as _;
            aula_processor::mail::send(&mailer, &message)
                .instrument(parent)
                .await
        }
    };
    let sent_key = format!("sent-{}", Uuid::new_v4().simple());
    within(send(sent_key.clone())).await.unwrap();
    smtp.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused_key = format!("refused-{}", Uuid::new_v4().simple());
    assert!(within(send(refused_key.clone())).await.is_err());

    let spans = installed.spans.get_finished_spans().unwrap();
    let smtp_span_of = |key: &str| -> SpanData {
        let parent = spans
            .iter()
            .find(|s| {
                s.name == "telemetry_smtp_test" && attribute(s, "key").as_deref() == Some(key)
            })
            .unwrap_or_else(|| panic!("no test span {key}"));
        let email = spans
            .iter()
            .find(|s| s.name == "email.send" && s.parent_span_id == parent.span_context.span_id())
            .expect("an email.send span");
        spans
            .iter()
            .find(|s| s.name == "smtp" && s.parent_span_id == email.span_context.span_id())
            .expect("an smtp span under email.send")
            .clone()
    };
    let sent = smtp_span_of(&sent_key);
    assert_eq!(sent.span_kind, SpanKind::Client);
    assert_eq!(
        attribute(&sent, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(attribute(&sent, "server.port"), Some(port.to_string()));
    assert_eq!(
        attribute(&sent, "network.protocol.name").as_deref(),
        Some("smtp")
    );
    assert_eq!(sent.status, Status::Unset);
    let refused = smtp_span_of(&refused_key);
    assert!(
        matches!(refused.status, Status::Error { .. }),
        "{:?}",
        refused.status
    );
    let exception = event_attributes(&refused, "exception").expect("an exception event");
    assert_eq!(exception["exception.type"], "smtp_transient");
    assert!(!exception["exception.message"].is_empty());
}
