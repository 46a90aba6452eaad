//! The log published to NATS JetStream: every event once, in commit order, through
//! broker outages and a SIGKILLed publisher; a stream that forgets duplicates too
//! soon is refused.

use super::*;

/// Events the publisher has not acknowledged yet (the whole log before it first ran).
async fn broker_lag(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e
         WHERE (e.tx_id, e.global_position) > COALESCE(
           (SELECT (c.tx_id, c.global_position) FROM subscription_checkpoints c WHERE c.name = 'broker.nats'),
           ('0'::xid8, 0::bigint))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_published(pool: &PgPool, publisher: &mut Process) {
    let every = Duration::from_millis(50);
    support::eventually(support::PATIENCE, every, || {
        let log = publisher.log.display().to_string();
        assert!(publisher.alive(), "the publisher ended; see {log}");
        async move {
            let lag = broker_lag(pool).await;
            (lag == 0)
                .then_some(())
                .ok_or(format!("{lag} events not published; see {log}"))
        }
    })
    .await;
}

/// The log in commit order: (event id, aggregate type, event type).
async fn log_in_commit_order(pool: &PgPool) -> Vec<(Uuid, String, String)> {
    sqlx::query_as(
        "SELECT event_id, aggregate_type, event_type FROM events ORDER BY tx_id, global_position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// One message as a consumer reads it.
struct Received {
    subject: String,
    message_id: String,
    /// The message it was published to follow (`Nats-Expected-Last-Msg-Id`).
    follows: Option<String>,
    body: Value,
}

/// Every message of the stream, read from its start by a fresh consumer.
async fn read_stream(url: &str) -> Vec<Received> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream("AULA_EVENTS").await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the stream's messages arrive")
            .expect("the consumer goes on")
            .unwrap();
        received.push(Received {
            subject: message.subject.to_string(),
            message_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
            follows: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Expected-Last-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            body: serde_json::from_slice(&message.payload).unwrap(),
        });
    }
    received
}

/// The stream holds the log exactly: each event once, in commit order, in public form.
async fn assert_stream_is_the_log(url: &str, pool: &PgPool, phase: &str) {
    let log = log_in_commit_order(pool).await;
    let received = read_stream(url).await;
    let ids: Vec<String> = received.iter().map(|r| r.message_id.clone()).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "{phase}: a message was stored twice"
    );
    let expected: Vec<String> = log.iter().map(|(id, _, _)| id.to_string()).collect();
    assert_eq!(
        ids.len(),
        expected.len(),
        "{phase}: the stream holds {} messages, the log {} events",
        ids.len(),
        expected.len()
    );
    assert!(
        ids == expected,
        "{phase}: the stream is not the log in commit order"
    );
    // Each message was published to follow the one before it (the stream refuses one
    // that does not), so no retry after an outage can store it out of turn.
    let follows: Vec<Option<&str>> = received.iter().map(|r| r.follows.as_deref()).collect();
    let previous: Vec<Option<&str>> = std::iter::once(None)
        .chain(ids.iter().map(|id| Some(id.as_str())))
        .take(ids.len())
        .collect();
    assert_eq!(
        follows, previous,
        "{phase}: a message names another predecessor"
    );
    for (message, (id, aggregate, event_type)) in received.iter().zip(&log) {
        assert_eq!(
            message.subject,
            format!("aula.events.{aggregate}.{event_type}")
        );
        assert_eq!(message.body["id"], json!(id.to_string()));
        assert_eq!(message.body["type"], json!(event_type));
        assert!(message.body["timestamp"].is_string() && message.body["data"].is_object());
        assert!(
            message.body["data"].get("type").is_none(),
            "{}",
            message.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_reaches_nats_once_in_commit_order_through_outages_and_crashes() {
    let _heavy = support::one_heavy_test_at_a_time().await;
    let db = TestDatabase::new().await;
    let dir = test_dir("broker");
    let mut nats = LocalNats::start().expect("nats-server (apt-get install nats-server)");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = |nats: &LocalNats| {
        vec![
            ("DATABASE_URL", database_url(&db)),
            ("AULA_NATS_URL", nats.url()),
            ("AULA_NATS_BATCH", "200".to_owned()),
            ("AULA_NATS_ACK_TIMEOUT_MS", "1000".to_owned()),
            ("AULA_NATS_RETRY_MAX_MS", "300".to_owned()),
            ("AULA_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ]
    };
    // The publisher beside an API, to see /ready and /metrics during the outage.
    let mut publisher = Process::spawn(
        "publisher-1",
        &dir,
        &["serve", "--only", "api,broker"],
        &env(&nats),
    );
    wait_ready(&base, &mut publisher).await;

    // A workload: every event once, in commit order.
    open_courses(db.pool.clone(), 1500).await;
    wait_published(&db.pool, &mut publisher).await;
    assert_stream_is_the_log(&nats.url(), &db.pool, "after a workload").await;

    // The broker killed mid-stream and restarted: the rest of the service stays ready,
    // the lag shows, and once back every event is there once.
    let writes = tokio::spawn(open_courses(db.pool.clone(), 1500));
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert!(
        ready.status().is_success(),
        "/ready stays green while the broker is down"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lag_line = metrics
        .lines()
        .find(|l| l.starts_with("aula_subscription_lag_events{subscription=\"broker.nats\"}"))
        .unwrap_or_else(|| panic!("the broker's lag is in /metrics:\n{metrics}"));
    assert!(
        metrics.contains("aula_subscription_lag_seconds{subscription=\"broker.nats\"}"),
        "the age of the oldest unpublished event is in /metrics"
    );
    println!("during the outage: {lag_line}");
    let status = Command::new(env!("CARGO_BIN_EXE_aula"))
        .args(["projections", "status"])
        .env("DATABASE_URL", database_url(&db))
        .env("AULA_DATA_DIR", dir.join("status"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("broker.nats"),
        "`aula projections status` lists the broker:\n{status}"
    );
    nats.restart().unwrap();
    writes.await.unwrap();
    wait_published(&db.pool, &mut publisher).await;
    assert_stream_is_the_log(&nats.url(), &db.pool, "after a broker outage").await;

    // The publisher SIGKILLed mid-stream and started again (alone this time).
    let writes = tokio::spawn(open_courses(db.pool.clone(), 1500));
    tokio::time::sleep(Duration::from_millis(400)).await;
    publisher.sigkill();
    let lag_at_kill = broker_lag(&db.pool).await;
    let mut env2 = env(&nats);
    env2.retain(|(k, _)| *k != "AULA_HTTP_ADDR");
    let mut publisher = Process::spawn("publisher-2", &dir, &["serve", "--only", "broker"], &env2);
    writes.await.unwrap();
    wait_published(&db.pool, &mut publisher).await;
    println!("publisher killed with {lag_at_kill} events unpublished");
    assert_stream_is_the_log(&nats.url(), &db.pool, "after the publisher was killed").await;

    // A reprocessed copy is a new message naming its original.
    let original: Uuid =
        sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let copy = aula_processor::reprocess_event(&db.pool, original, Actor::System)
        .await
        .unwrap();
    wait_published(&db.pool, &mut publisher).await;
    let received = read_stream(&nats.url()).await;
    let last = received.last().unwrap();
    assert_eq!(last.message_id, copy.event_id.to_string());
    assert_eq!(last.subject, "aula.events.reprocessed.CourseOpened");
    assert_eq!(last.body["reprocessed_from"], json!(original.to_string()));
    assert_stream_is_the_log(&nats.url(), &db.pool, "after a reprocessed copy").await;

    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_forgets_duplicates_before_the_retry_horizon_is_refused_at_start() {
    let _heavy = support::one_heavy_test_at_a_time().await;
    let db = TestDatabase::new().await;
    let dir = test_dir("window");
    let nats = LocalNats::start().expect("nats-server (apt-get install nats-server)");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: "AULA_EVENTS".into(),
        subjects: vec!["aula.events.>".into()],
        duplicate_window: Duration::from_secs(60),
        ..Default::default()
    })
    .await
    .unwrap();
    let env = [
        ("DATABASE_URL", database_url(&db)),
        ("AULA_NATS_URL", nats.url()),
        ("AULA_NATS_RETRY_HORIZON_SECONDS", "600".to_owned()),
    ];
    let mut publisher = Process::spawn("publisher", &dir, &["serve", "--only", "broker"], &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = publisher.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the publisher started; see {}",
            publisher.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&publisher.log).unwrap();
    assert!(
        log.contains("keeps duplicates for 60 s, less than the publisher's retry horizon of 600 s"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
