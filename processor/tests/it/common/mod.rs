//! Shared test support: a fresh database, a recording mailer, fast settings, and a
//! running processor (reactions + workers) that a test can stop.
#![allow(dead_code)]

pub mod webhook_receiver;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aula_eventlog::shutdown::{self, ShutdownTrigger};
use aula_eventlog::subscription::SubscriptionHandle;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{SubscriptionOptions, Wakeups};
use aula_processor::admissions::{spawn_admissions_with, ADMISSIONS_SUBSCRIPTION};
use aula_processor::handlers::Registry;
use aula_processor::mail::{EmailMessage, MailError, Mailer};
use aula_processor::reactions::spawn_reactions_with;
use aula_processor::{MailConfig, ProcessorConfig, REACTIONS_SUBSCRIPTION};

/// Keeps every e-mail it is asked to send.
#[derive(Default, Clone)]
pub struct RecordingMailer(pub Arc<Mutex<Vec<EmailMessage>>>);

impl RecordingMailer {
    pub fn sent(&self) -> Vec<EmailMessage> {
        self.0.lock().unwrap().clone()
    }

    pub fn to(&self, address: &str) -> Vec<EmailMessage> {
        self.sent()
            .into_iter()
            .filter(|m| m.to == address)
            .collect()
    }
}

#[async_trait::async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, message: &EmailMessage) -> Result<(), MailError> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }

    fn transport(&self) -> &'static str {
        "recording"
    }
}

pub fn fast_config(name: &str) -> ProcessorConfig {
    ProcessorConfig {
        worker_name: name.into(),
        concurrency: 8,
        claim_batch: 32,
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        rescue_interval: Duration::from_millis(200),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(10),
        record_attempts: true,
    }
}

pub fn mail_config() -> MailConfig {
    MailConfig {
        public_base_url: "https://aula.test".into(),
        ..MailConfig::default()
    }
}

/// Reactions and workers running against a test database.
pub struct Running {
    pub trigger: ShutdownTrigger,
    pub reactions: Option<SubscriptionHandle>,
    /// Runs with the reactions: decides the applications in commit order.
    pub admissions: Option<SubscriptionHandle>,
    pub workers: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

impl Running {
    pub async fn stop(self) {
        self.trigger.trigger();
        if let Some(reactions) = self.reactions {
            within(reactions.task).await.unwrap();
        }
        if let Some(admissions) = self.admissions {
            within(admissions.task).await.unwrap();
        }
        within(self.workers).await.unwrap().unwrap();
    }
}

pub async fn start(
    db: &TestDatabase,
    registry: Registry,
    config: ProcessorConfig,
    with_reactions: bool,
) -> Running {
    let (trigger, shutdown) = shutdown::channel();
    let reactions = with_reactions.then(|| {
        let mut options = SubscriptionOptions::new(REACTIONS_SUBSCRIPTION);
        options.poll_interval = Duration::from_millis(100);
        options.standby_interval = Duration::from_millis(50);
        options.max_backoff = Duration::from_millis(200);
        spawn_reactions_with(
            db.connect.clone(),
            options,
            Wakeups::polling_only(),
            shutdown.clone(),
        )
    });
    let admissions = with_reactions.then(|| {
        let mut options = SubscriptionOptions::new(ADMISSIONS_SUBSCRIPTION);
        options.poll_interval = Duration::from_millis(100);
        options.standby_interval = Duration::from_millis(50);
        options.max_backoff = Duration::from_millis(200);
        spawn_admissions_with(
            db.pool.clone(),
            db.connect.clone(),
            options,
            Wakeups::polling_only(),
            shutdown.clone(),
        )
    });
    let workers = tokio::spawn(aula_processor::run_workers(
        db.pool.clone(),
        config,
        registry,
        shutdown,
    ));
    Running {
        trigger,
        reactions,
        admissions,
        workers,
    }
}

/// The standard registry with a recording mailer, plus the processor running.
pub async fn start_standard(db: &TestDatabase) -> (Running, RecordingMailer) {
    let mailer = RecordingMailer::default();
    let registry = Registry::standard(Arc::new(mailer.clone()), mail_config());
    (
        start(db, registry, fast_config("test-worker"), true).await,
        mailer,
    )
}

/// Bounds a wait so a broken implementation fails instead of hanging.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("timed out after 120 s")
}

/// Polls `check` until it returns `Some`, for up to 120 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn scalar_i64(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until no task is pending or running and at least `min_tasks` exist.
pub async fn wait_idle(pool: &sqlx::PgPool, min_tasks: i64) {
    eventually("the task queue to drain", || async {
        let (total, open): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'running')) FROM tasks",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (total >= min_tasks && open == 0).then_some(())
    })
    .await
}

/// A minimal SMTP server on loopback that keeps every message it accepted (the DATA
/// of each transaction), for tests that count deliveries over a real conversation.
#[derive(Clone, Default)]
pub struct SmtpSink {
    pub port: u16,
    pub delivered: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
        let store = delivered.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                        return;
                    }
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                            "DATA" => {
                                if write.write_all(b"354 go on\r\n").await.is_err() {
                                    return;
                                }
                                let mut data = String::new();
                                while let Ok(Some(line)) = lines.next_line().await {
                                    if line == "." {
                                        break;
                                    }
                                    data.push_str(&line);
                                    data.push('\n');
                                }
                                store.lock().unwrap().push(data);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"502 not implemented\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SmtpSink { port, delivered }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages delivered to `address`.
    pub fn to(&self, address: &str) -> Vec<String> {
        let header = format!("To: {address}");
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter(|data| data.lines().any(|l| l == header))
            .cloned()
            .collect()
    }
}
