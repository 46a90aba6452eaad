//! Scale-out (issue 22), with real processes, a real PostgreSQL and a real nats-server:
//!
//! 1. Events to NATS JetStream: a workload, then the broker killed and restarted
//!    mid-stream, then the publisher SIGKILLed mid-stream and started again; a consumer
//!    reads the stream and finds every event of the log exactly once, in commit order,
//!    in its public form; `/ready` stays green during the outage while the lag shows.
//!    A stream whose duplicate window is shorter than the retry horizon is refused.
//! 2. Several processes on one PostgreSQL: 2 API, 3 processor and 1 projections
//!    processes; thousands of applications through both APIs; one processor and one API
//!    SIGKILLed in the middle. Nothing is lost, nothing is done twice, nothing is stuck,
//!    and the standby's takeover time is measured.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use aula_broker::local_server::LocalNats;
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::values::{CampusId, Capacity, CourseName, InstitutionId};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use support::{database_url, free_port};
use uuid::Uuid;

const TOKEN_SECRET: &str = "scale-out test secret, at least 32 bytes long";

/// An `aula` process; SIGKILLed and reaped if the test ends early. Its output goes to
/// `log`, named in failures.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let data_dir = dir.join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_aula"));
        command
            .args(args)
            .env("AULA_DATA_DIR", &data_dir)
            .env("AULA_TOKEN_SECRET", TOKEN_SECRET)
            .env("AULA_DRAIN_SECONDS", "0")
            .env("RUST_LOG", "warn")
            .env_remove("SMTP_URL")
            .env_remove("AULA_NATS_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting the aula binary");
        Process { child, log }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aula-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wait_ready(base: &str, process: &mut Process) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/ready")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(
            process.alive(),
            "the process ended; see {}",
            process.log.display()
        );
        assert!(Instant::now() < deadline, "{base} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// 1. Events to NATS JetStream
// ---------------------------------------------------------------------------------

/// Opens `n` courses (one event each) from 8 concurrent writers, so transactions
/// interleave and commit order differs from position order here and there.
async fn open_courses(pool: PgPool, n: usize) {
    let bus = std::sync::Arc::new(CommandBus::<Course>::with_upcasters(
        pool,
        CourseServices,
        aula_domain::upcasters(),
    ));
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    futures::stream::iter(0..n)
        .map(|i| {
            let bus = bus.clone();
            async move {
                let id = Uuid::new_v4().to_string();
                let metadata = EventMetadata::new(Actor::System, Some(institution.as_uuid()));
                bus.execute(
                    &id,
                    CourseCommand::OpenCourse {
                        institution_id: institution,
                        campus_id: CampusId::from_uuid(Uuid::new_v4()),
                        name: CourseName::parse(&format!("Course {i}")).unwrap(),
                        capacity: Capacity::new(30).unwrap(),
                    },
                    &metadata,
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

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
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker_lag(pool).await > 0 {
        assert!(
            publisher.alive(),
            "the publisher ended; see {}",
            publisher.log.display()
        );
        assert!(
            Instant::now() < deadline,
            "not everything published within 60 s; see {}",
            publisher.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

// ---------------------------------------------------------------------------------
// 2. Several processes on one PostgreSQL
// ---------------------------------------------------------------------------------

const APPLICANTS: usize = 2_000;
const COURSES: usize = 4;
const SEATS: u32 = 40;
const APPLY: &str =
    "mutation($input: ApplyToCourseInput!) { applyToCourse(input: $input) { id logPosition } }";

/// Applicant `i`'s own loopback address (the public mutations are limited per address).
fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// The backend holding subscription `name`'s advisory lock (its active instance).
async fn lock_holder(pool: &PgPool, name: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('aula.subscription/' || $1, 0)",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Applies through `bases[i % 2]`, and through the other API when that one does not
/// answer (it may have been killed): the idempotency key makes the retry the same
/// application. Returns the acknowledged application id.
async fn apply(bases: [String; 2], course: Uuid, i: usize) -> Uuid {
    let client = reqwest::Client::builder()
        .local_address(address(i))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let body = json!({ "query": APPLY, "variables": { "input": {
        "courseId": course, "name": format!("Applicant {i}"), "birthDate": "2004-05-06",
        "email": format!("applicant{i}@scale.test"), "idempotencyKey": format!("key-{i}"),
    }}});
    let mut last = String::new();
    for attempt in 0..20 {
        let base = &bases[(i + attempt) % 2];
        match client
            .post(format!("{base}/graphql"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => match response.json::<Value>().await {
                Ok(answer) => match answer["data"]["applyToCourse"]["id"].as_str() {
                    Some(id) => return id.parse().unwrap(),
                    None => last = answer.to_string(),
                },
                Err(error) => last = error.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 + 1))).await;
    }
    panic!("applicant {i} never acknowledged: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn six_processes_on_one_database_lose_and_duplicate_nothing_when_two_are_killed() {
    let started = Instant::now();
    let db = TestDatabase::new().await;
    let dir = test_dir("scale");
    let outbox = dir.join("outbox");
    let common = vec![
        ("DATABASE_URL", database_url(&db)),
        ("AULA_MAIL_OUTBOX", outbox.display().to_string()),
        ("AULA_WORKER_CONCURRENCY", "8".to_owned()),
        ("AULA_WORKER_POLL_MS", "100".to_owned()),
        ("AULA_RETRY_BASE_MS", "20".to_owned()),
        ("AULA_RETRY_MAX_MS", "200".to_owned()),
        ("AULA_TASK_LEASE_MS", "2000".to_owned()),
        ("AULA_WORKER_RESCUE_MS", "200".to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut env = common.clone();
        env.extend(extra.iter().cloned());
        env
    };
    // The first processor alone, until it holds both processor subscriptions: the one
    // killed later is then the active instance, and the others its standbys.
    let subscriptions = ["processor.reactions", "processor.admissions"];
    let mut processors = vec![Process::spawn(
        "processor-1",
        &dir,
        &["serve", "--only", "processor"],
        &with(&[]),
    )];
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in subscriptions {
        while lock_holder(&db.pool, name).await.is_none() {
            assert!(processors[0].alive(), "see {}", processors[0].log.display());
            assert!(Instant::now() < deadline, "{name} never became active");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let active: Vec<i32> = {
        let mut pids = Vec::new();
        for name in subscriptions {
            pids.push(lock_holder(&db.pool, name).await.unwrap());
        }
        pids
    };
    for n in 2..=3 {
        processors.push(Process::spawn(
            &format!("processor-{n}"),
            &dir,
            &["serve", "--only", "processor"],
            &with(&[]),
        ));
    }
    let mut projections = Process::spawn(
        "projections",
        &dir,
        &["serve", "--only", "projections"],
        &with(&[]),
    );
    let ports = [free_port(), free_port()];
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let mut apis: Vec<Process> = (0..2)
        .map(|n| {
            Process::spawn(
                &format!("api-{}", n + 1),
                &dir,
                &["serve", "--only", "api"],
                &with(&[("AULA_HTTP_ADDR", format!("127.0.0.1:{}", ports[n]))]),
            )
        })
        .collect();
    for (n, base) in bases.iter().enumerate() {
        wait_ready(base, &mut apis[n]).await;
    }

    // The courses, opened as the API opens them after an offer.
    let bus = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let mut courses = Vec::new();
    for c in 0..COURSES {
        let course = Uuid::new_v4();
        bus.execute(
            &course.to_string(),
            CourseCommand::OpenCourse {
                institution_id: InstitutionId::from_uuid(Uuid::new_v4()),
                campus_id: CampusId::from_uuid(Uuid::new_v4()),
                name: CourseName::parse(&format!("Scale {c}")).unwrap(),
                capacity: Capacity::new(SEATS).unwrap(),
            },
            &EventMetadata::new(Actor::System, None),
        )
        .await
        .unwrap();
        courses.push(course);
    }
    println!("six processes up in {:?}", started.elapsed());

    // The workload, 200 applicants at a time, half through each API. Halfway, one
    // processor (the active one) and one API are SIGKILLed.
    let workload_started = Instant::now();
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let applications = {
        let (bases, courses, acknowledged) = (bases.clone(), courses.clone(), acknowledged.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..APPLICANTS)
                .map(|i| {
                    let (bases, course, acknowledged) =
                        (bases.clone(), courses[i % COURSES], acknowledged.clone());
                    async move {
                        let id = apply(bases, course, i).await;
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (i, course, id)
                    }
                })
                .buffer_unordered(200)
                .collect::<Vec<_>>()
                .await
        })
    };
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < APPLICANTS / 2 {
        assert!(!applications.is_finished());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    processors[0].sigkill();
    apis[0].sigkill();
    let killed = Instant::now();
    let mut takeover = BTreeMap::new();
    while takeover.len() < subscriptions.len() {
        for (name, old) in subscriptions.iter().zip(&active) {
            if takeover.contains_key(name) {
                continue;
            }
            if let Some(pid) = lock_holder(&db.pool, name).await {
                if pid != *old {
                    takeover.insert(*name, killed.elapsed());
                }
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no standby took over: {takeover:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("standby takeover after SIGKILL of the active processor: {takeover:?}");
    let applications = applications.await.unwrap();
    println!(
        "{APPLICANTS} applications acknowledged in {:?} through 2 APIs (one killed halfway)",
        workload_started.elapsed()
    );

    // Every acknowledged application's event is in the log once.
    let submitted: Vec<(String,)> =
        sqlx::query_as("SELECT aggregate_id FROM events WHERE event_type = 'ApplicationSubmitted'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut per_application: HashMap<String, usize> = HashMap::new();
    for (id,) in &submitted {
        *per_application.entry(id.clone()).or_default() += 1;
    }
    for (i, _, id) in &applications {
        assert_eq!(
            per_application.get(&id.to_string()),
            Some(&1),
            "applicant {i}'s application once in the log"
        );
    }
    assert_eq!(
        submitted.len(),
        APPLICANTS,
        "nothing but the acknowledged applications"
    );

    // Every application decided once; no course over capacity.
    let decided =
        "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined')";
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db.pool, decided).await < APPLICANTS as i64 {
        assert!(
            Instant::now() < deadline,
            "not every application decided within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decisions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type, payload->>'application_id' FROM events
         WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let distinct: BTreeSet<&String> = decisions.iter().map(|(_, _, a)| a).collect();
    assert_eq!(
        (decisions.len(), distinct.len()),
        (APPLICANTS, APPLICANTS),
        "each decided once"
    );
    for course in &courses {
        let enrolled = decisions
            .iter()
            .filter(|(c, t, _)| *c == course.to_string() && t == "StudentEnrolled")
            .count();
        assert_eq!(
            enrolled, SEATS as usize,
            "course {course}: every seat taken, none over capacity"
        );
    }

    // Every task done once: two e-mails per applicant (scheduled, then the decision),
    // each recorded once and written once (the outbox file is named by its key).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (tasks, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM tasks",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if tasks == 2 * APPLICANTS as i64 && done == tasks {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks stuck: {done} of {tasks} succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let per_task: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(o.*) FROM tasks t LEFT JOIN outbox_emails o ON o.idempotency_key = t.idempotency_key GROUP BY t.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        per_task.iter().all(|(n,)| *n == 1),
        "one recorded e-mail per task"
    );
    let files = std::fs::read_dir(&outbox)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "eml"))
        })
        .count();
    assert_eq!(files, 2 * APPLICANTS, "one e-mail per idempotency key");
    let killed_attempts: i64 = count(
        &db.pool,
        "SELECT count(*) FROM task_attempts WHERE outcome = 'lease_expired'",
    )
    .await;
    println!("{killed_attempts} attempts of the killed processor were rescued after their lease");

    // Read models equal a rebuild; nothing stuck anywhere.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lagging: i64 = count(
            &db.pool,
            "SELECT count(*) FROM subscription_checkpoints c WHERE c.last_error IS NOT NULL OR EXISTS (
               SELECT 1 FROM events e WHERE (e.tx_id, e.global_position) > (c.tx_id, c.global_position))",
        )
        .await;
        if lagging == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lagging} subscriptions lag or fail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = snapshot(&db.pool).await;
    aula_projections::rebuild_many(&db.pool, db.connect.clone(), aula_projections::NAMES)
        .await
        .unwrap();
    assert!(
        snapshot(&db.pool).await == live,
        "the read models equal a rebuild"
    );

    for process in processors
        .iter_mut()
        .skip(1)
        .chain(apis.iter_mut().skip(1))
        .chain([&mut projections])
    {
        assert!(
            process.alive(),
            "a survivor died; see {}",
            process.log.display()
        );
    }
    drop((processors, apis, projections));
    println!("whole run {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every read model's rows, as text, table by table.
async fn snapshot(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for name in aula_projections::NAMES {
        for table in aula_projections::tables(name).unwrap() {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY t::text"))
                    .fetch_all(pool)
                    .await
                    .unwrap();
            all.push((table.to_string(), rows));
        }
    }
    all
}
