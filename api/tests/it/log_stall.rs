//! Finding 15: a transaction held open by another client holds back every reader of
//! the log. It must be visible: its age and every subscription's lag (the processor's
//! included) in `/metrics`, `degraded` in `/ready`, and a warning naming the blocking
//! backend; and all of it must clear once the transaction ends.

use crate::common;

use std::time::{Duration, Instant};

use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::values::{InstitutionName, UserId};
use aula_eventlog::health::{spawn_monitor, MonitorOptions};
use aula_eventlog::shutdown::{self, Shutdown};
use aula_eventlog::{Actor, CommandBus, EventMetadata, Wakeups};
use common::logs::Logs;
use common::*;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

/// The value of an unlabelled sample, or of the one with `labels` exactly.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

async fn get(server: &TestServer, path: &str) -> String {
    server.get(path).await.text().await.unwrap()
}

async fn append_event(server: &TestServer) {
    CommandBus::<Institution>::new(server.db.pool.clone(), InstitutionServices)
        .execute(
            &Uuid::new_v4().to_string(),
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Escola Parada").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &EventMetadata::new(Actor::System, None),
        )
        .await
        .unwrap();
}

const REACTIONS: &str = "subscription=\"processor.reactions\"";
const AUDIT: &str = "subscription=\"audit_log\"";

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_held_open_elsewhere_is_measured_reported_and_recovered_from() {
    if common::in_own_process(
        module_path!(),
        "a_transaction_held_open_elsewhere_is_measured_reported_and_recovered_from",
    )
    .await
    {
        return;
    }
    let logs = Logs::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let threshold = Duration::from_secs(1);
    let server = TestServer::start_custom(
        |_| {},
        |state| {
            let health = spawn_monitor(
                state.pool().clone(),
                MonitorOptions {
                    threshold,
                    interval: Duration::from_millis(100),
                    repeat_warning: Duration::from_secs(60),
                },
                Shutdown::never(),
            );
            state.with_log_health(health)
        },
    )
    .await;
    let (trigger, stop) = shutdown::channel();
    let projections = aula_projections::spawn_all(
        server.db.connect.clone(),
        Wakeups::polling_only(),
        stop.clone(),
    );
    let reactions =
        aula_processor::spawn_reactions(server.db.connect.clone(), Wakeups::polling_only(), stop);

    // Everything flows: caught up, nothing held back.
    append_event(&server).await;
    let caught_up = |metrics: &str| {
        sample(metrics, "aula_subscription_lag_events", REACTIONS) == Some(0.0)
            && sample(metrics, "aula_subscription_lag_events", AUDIT) == Some(0.0)
    };
    let mut metrics = String::new();
    for _ in 0..600 {
        metrics = get(&server, "/metrics").await;
        if caught_up(&metrics) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up(&metrics), "{metrics}");
    assert_eq!(sample(&metrics, "aula_log_degraded", ""), Some(0.0));

    // Another client opens a transaction that takes a transaction id and stays open.
    let mut other = server
        .db
        .connect
        .clone()
        .application_name("stalled-report")
        .connect()
        .await
        .unwrap();
    let mut tx = other.begin().await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Written after it began: no reader can see it while it is open.
    append_event(&server).await;
    tokio::time::sleep(threshold + Duration::from_millis(500)).await;

    let metrics = get(&server, "/metrics").await;
    let age = sample(&metrics, "aula_log_oldest_transaction_age_seconds", "").unwrap();
    assert!(age >= threshold.as_secs_f64(), "age {age}: {metrics}");
    assert_eq!(
        sample(&metrics, "aula_subscription_lag_events", REACTIONS),
        Some(1.0),
        "the processor's lag is exported: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "aula_subscription_lag_events", AUDIT),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "aula_log_degraded", ""), Some(1.0));
    let ready: serde_json::Value = serde_json::from_str(&get(&server, "/ready").await).unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["log_held_back_seconds"].as_f64().unwrap() >= 1.0);
    let text = logs.text();
    let warning = text
        .lines()
        .find(|l| l.contains("holding back the event log"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{text}"));
    assert!(warning.contains(&format!("pid={pid}")), "{warning}");
    assert!(
        warning.contains("application_name=stalled-report"),
        "{warning}"
    );

    // Released: the readers catch up and the state clears.
    tx.rollback().await.unwrap();
    let released = Instant::now();
    let recovered =
        |metrics: &str| caught_up(metrics) && sample(metrics, "aula_log_degraded", "") == Some(0.0);
    let mut metrics = String::new();
    while released.elapsed() < Duration::from_secs(60) {
        metrics = get(&server, "/metrics").await;
        if recovered(&metrics) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered(&metrics), "{metrics}");
    let recovery = released.elapsed();
    let ready: serde_json::Value = serde_json::from_str(&get(&server, "/ready").await).unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(logs.text().contains("the event log is no longer held back"));
    eprintln!(
        "held transaction: age reported {age:.1} s; caught up {:.2} s after it ended",
        recovery.as_secs_f64()
    );

    other.close().await.unwrap();
    trigger.trigger();
    for (_, handle) in projections {
        let _ = handle.task.await;
    }
    let _ = reactions.task.await;
    server.stop().await;
}
