//! One trace across the asynchronous hop, and structured logs that carry their ids.
//!
//! The whole service runs in this process (API, projections, reactions, workers with
//! the file outbox) with the telemetry set up by `aula::telemetry` and an in-memory
//! span exporter: a sign-up through HTTP must give one trace holding the request, the
//! command and its append, the projections' handling, the e-mail task's attempts and
//! the e-mail send, each under the step that caused it; and the JSON log lines of the
//! request and of the task carry the request id, respectively the task's ids.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aula::cli::LogFormat;
use aula::telemetry::Telemetry;
use aula_eventlog::shutdown;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Wakeups;
use aula_processor::handlers::Registry;
use aula_processor::{FileMailer, MailConfig, ProcessorConfig};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::{json, Value};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use uuid::Uuid;

/// The log lines written so far.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

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

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("timed out")
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut http_stop = stop.clone();
    let http = tokio::spawn(aula_api::serve(
        listener,
        aula_api::router(state),
        async move { http_stop.wait().await },
    ));

    let request_id = format!("telemetry-{}", Uuid::new_v4().simple());
    let email = format!("traced-{}@aula.test", Uuid::new_v4().simple());
    let response: Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .header("x-request-id", &request_id)
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
            if trace.iter().any(|s| s.name == "email.send") {
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
    let root = one("graphql", &|_| true);
    assert_eq!(
        root.parent_span_id,
        SpanId::INVALID,
        "the request starts the trace"
    );
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
    assert!(descends(command, root, &by_id), "command under the request");
    assert!(
        descends(append, command, &by_id),
        "append under the command"
    );
    assert!(
        descends(projection, command, &by_id),
        "projection update under the command"
    );
    assert!(
        descends(reaction, command, &by_id),
        "reaction under the command"
    );
    assert!(
        descends(task, command, &by_id),
        "task attempt under the command"
    );
    assert!(
        descends(send, task, &by_id),
        "e-mail under its task attempt"
    );
    assert_eq!(attribute(send, "transport").as_deref(), Some("file"));
    assert!(
        aula_processor::metrics::EMAILS
            .get(["file", "sent"])
            .is_some_and(|c| c.get() >= 1),
        "the e-mail was counted"
    );

    // Structured logs: the request's lines carry its id, the task's lines its ids.
    let lines = installed.logs.lines();
    let request_line = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "graphql operation finished"
                && l["fields"]["operation"] == "signUp"
                && l["span"]["request_id"] == request_id.as_str()
        })
        .unwrap_or_else(|| panic!("no log line of the request carries its id: {lines:?}"));
    assert_eq!(request_line["fields"]["outcome"], "ok");
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

    trigger.trigger();
    within(http).await.unwrap().unwrap();
    within(workers).await.unwrap().unwrap();
    within(reactions.task).await.unwrap();
    for (_, handle) in projections {
        within(handle.task).await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&outbox);
}
