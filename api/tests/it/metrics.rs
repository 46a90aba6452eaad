//! `GET /metrics`: valid Prometheus text, and counters that move with the work done.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::shutdown;
use aula_processor::handlers::Registry;
use aula_processor::{FileMailer, MailConfig, NewTask, ProcessorConfig};
use common::*;
use serde_json::json;
use uuid::Uuid;

/// One sample: metric name (with suffix), labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A sample's labels other than `le`, in order.
type Labels = Vec<(String, String)>;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the text format line by line, failing on anything malformed: unknown line
/// shapes, bad names, bad escapes, samples of a metric without `# TYPE`, histogram
/// buckets that are not cumulative or whose `+Inf` bucket differs from `_count`.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(valid_name(name), "bad HELP line: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "bad TYPE line: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE given twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line: {line:?}"
        );
        let (name_end, has_labels) = match line.find(['{', ' ']) {
            Some(i) => (i, line.as_bytes()[i] == b'{'),
            None => panic!("no value: {line}"),
        };
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name: {line}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if has_labels {
            rest = &rest[1..];
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(valid_name(key), "bad label name in {line}");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {line}"),
                    }
                };
                labels.insert(key.to_owned(), value);
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let bucket_name = format!("{family}_bucket");
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let le = s.labels.get("le").expect("bucket without le");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            series.entry(key).or_default().push((bound, s.value));
        }
        for (key, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {key:?}: {buckets:?}"
            );
            let (last_bound, last) = *buckets.last().unwrap();
            assert_eq!(last_bound, f64::INFINITY, "{family} {key:?} lacks +Inf");
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>()
                            == key
                })
                .unwrap_or_else(|| panic!("{family} {key:?} lacks _count"));
            assert_eq!(count.value, last);
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(server: &TestServer) -> (String, Vec<Sample>) {
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_operations_events_and_tasks() {
    let server = TestServer::start().await;
    let (_, before) = scrape(&server).await;

    // A successful command, a rejected login, a malformed query, an unknown field.
    let email = format!("metrics-{}@aula.test", Uuid::new_v4().simple());
    assert_ok(&server.sign_up(&email).await);
    let login = server.login(&email, "wrong password at all").await;
    let login_code = code(&login).expect("the login is refused");
    assert_code(&server.gql(None, "query {", json!({})).await, "VALIDATION");
    assert_code(
        &server.gql(None, "{ noSuchField }", json!({})).await,
        "VALIDATION",
    );

    // A task through the real workers.
    let (trigger, stop) = shutdown::channel();
    let outbox = std::env::temp_dir().join(format!("aula-metrics-outbox-{}", Uuid::new_v4()));
    let mail = MailConfig {
        outbox_dir: outbox.clone(),
        ..MailConfig::default()
    };
    let workers = tokio::spawn(aula_processor::run_workers(
        server.db.pool.clone(),
        ProcessorConfig {
            worker_name: "metrics-test".into(),
            poll_interval: Duration::from_millis(50),
            ..ProcessorConfig::default()
        },
        Registry::standard(Arc::new(FileMailer::new(&outbox, mail.from.clone())), mail),
        stop,
    ));
    let mut conn = server.db.pool.acquire().await.unwrap();
    aula_processor::queue::insert_tasks(
        &mut conn,
        &[NewTask::new(
            aula_processor::kinds::NOOP,
            format!("metrics-{}", Uuid::new_v4()),
            json!({}),
        )],
    )
    .await
    .unwrap();
    drop(conn);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (text, after) = loop {
        let (text, samples) = scrape(&server).await;
        let tasks = |s: &[Sample]| {
            value(
                s,
                "aula_task_attempts_total",
                &[("kind", "noop"), ("outcome", "succeeded")],
            )
        };
        if tasks(&samples) > tasks(&before) {
            break (text, samples);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the noop task never ran:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    trigger.trigger();
    workers.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&outbox);

    let moved = |name: &str, labels: &[(&str, &str)]| {
        let (a, b) = (value(&before, name, labels), value(&after, name, labels));
        assert!(
            b > a,
            "{name} {labels:?} did not move ({a} -> {b}):\n{text}"
        );
    };
    moved(
        "aula_graphql_operations_total",
        &[("operation", "signUp"), ("outcome", "ok")],
    );
    moved(
        "aula_graphql_operations_total",
        &[("operation", "login"), ("outcome", login_code.as_str())],
    );
    moved(
        "aula_graphql_operations_total",
        &[("operation", "(none)"), ("outcome", "VALIDATION")],
    );
    moved(
        "aula_graphql_operations_total",
        &[("operation", "(unknown)"), ("outcome", "VALIDATION")],
    );
    moved(
        "aula_graphql_operation_duration_seconds_count",
        &[("operation", "signUp")],
    );
    moved(
        "aula_events_appended_total",
        &[("event_type", "PendingUserRegisterCreated")],
    );
    moved(
        "aula_task_attempt_duration_seconds_count",
        &[("kind", "noop")],
    );

    // Gauges read at scrape time.
    for projection in aula_projections::NAMES {
        assert!(
            after.iter().any(|s| s.name == "aula_projection_lag_events"
                && s.labels.get("projection").map(String::as_str) == Some(projection)),
            "no lag for {projection}:\n{text}"
        );
    }
    assert!(
        value(&after, "aula_tasks", &[("status", "succeeded")]) >= 1.0,
        "{text}"
    );
    assert!(
        value(&after, "aula_db_pool_max_connections", &[]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "aula_metrics_source_up", &[]),
        4.0,
        "every scrape-time source answered:\n{text}"
    );
    assert!(
        text.contains("# TYPE aula_log_oldest_transaction_age_seconds gauge")
            && text.contains("# TYPE aula_subscription_lag_events gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE aula_task_queue_depth gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE aula_task_oldest_pending_age_seconds gauge"),
        "{text}"
    );
    // No secret or personal data in the page.
    assert!(
        !text.contains(&email),
        "the e-mail address leaked into /metrics"
    );
    assert!(
        !text.contains("wrong password"),
        "a password leaked into /metrics"
    );
}

#[test]
fn the_parser_rejects_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\\\\\"} 3\n";
    let samples = parse(good);
    assert_eq!(samples[0].labels["x"], "q\"\n\\");
    for bad in [
        "a_total 1\n",                                    // no TYPE
        "# TYPE a_total counter\na_total{x=\"1} 1\n",     // unterminated
        "# TYPE a_total counter\na_total{x=\"\\q\"} 1\n", // bad escape
        "# TYPE a_total counter\na_total one\n",          // bad value
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}

/// The process metrics every Prometheus client library exports, read from `/proc`, and
/// the build's information.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_describe_the_process_and_the_build() {
    let server = TestServer::start().await;
    let (text, samples) = scrape(&server).await;
    let one = |name: &str| -> f64 {
        let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one sample of {name}");
        assert!(found[0].labels.is_empty(), "{name} has no labels");
        found[0].value
    };
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    assert!(one("process_cpu_seconds_total") > 0.0);
    let resident = one("process_resident_memory_bytes");
    assert!(resident > 1e6, "resident memory {resident}");
    assert!(one("process_virtual_memory_bytes") >= resident);
    let open = one("process_open_fds");
    let max = one("process_max_fds");
    assert!(open >= 3.0 && open < max, "{open} open of {max}");
    assert!(one("process_threads") >= 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = one("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 24.0 * 3600.0,
        "started at {started}, now {now}"
    );

    let build: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "aula_build_info")
        .collect();
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    let rustc = &build[0].labels["rustc"];
    assert!(
        rustc.split('.').count() >= 3 && rustc.starts_with("1."),
        "rustc {rustc}"
    );
}

/// With every pooled connection busy (a rush of slow requests, a table locked by an
/// operator), a scrape still answers within Prometheus's default 10 s scrape timeout,
/// naming the exhausted pool and the readings that could not be made. Before, it
/// waited for a connection for each of its four readings in turn (10 s each).
#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_answers_while_the_pool_is_exhausted() {
    let server = TestServer::start().await;
    let max = server.db.pool.options().get_max_connections() as usize;
    let mut held = Vec::with_capacity(max);
    for _ in 0..max {
        held.push(server.db.pool.acquire().await.unwrap());
    }
    let started = std::time::Instant::now();
    let (text, samples) = tokio::time::timeout(Duration::from_secs(8), scrape(&server))
        .await
        .expect("the scrape waited for a connection");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(
        value(&samples, "aula_db_pool_connections", &[("state", "in_use")]),
        max as f64,
        "{text}"
    );
    for source in ["projections", "task_queue", "subscriptions", "log_blocker"] {
        assert_eq!(
            value(&samples, "aula_metrics_source_up", &[("source", source)]),
            0.0,
            "{source}:\n{text}"
        );
    }
    drop(held);
    let (text, samples) = scrape(&server).await;
    assert_eq!(
        value(&samples, "aula_metrics_source_up", &[]),
        4.0,
        "every source answers again:\n{text}"
    );
}
