//! Shared test support: a fresh database, a recording mailer, fast settings, a running
//! processor (reactions + workers) that a test can stop, and command buses to record
//! the events it reacts to.
#![allow(dead_code)]

pub mod webhook_receiver;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use aula_domain::application::{application_id_for, Application, ApplicationCommand};
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::user::UserCommand;
use aula_domain::values::{
    ApplicationId, CampusId, CampusName, Capacity, CityName, CourseId, CourseName, Email,
    InstitutionId, InstitutionName, PersonName, UserId,
};
use aula_eventlog::shutdown::{self, ShutdownTrigger};
use aula_eventlog::subscription::SubscriptionHandle;
use aula_eventlog::testing::{fast_subscription, TestDatabase};
use aula_eventlog::{Actor, CommandBus, EventMetadata, Wakeups};
use aula_processor::admissions::{spawn_admissions_with, ADMISSIONS_SUBSCRIPTION};
use aula_processor::handlers::Registry;
use aula_processor::mail::{EmailMessage, MailError, Mailer};
use aula_processor::reactions::spawn_reactions_with;
use aula_processor::{MailConfig, ProcessorConfig, REACTIONS_SUBSCRIPTION};

/// A command bus for aggregate `A` on `pool`, reading old events through the domain's
/// upcasters as the services do.
pub fn bus<A>(pool: &sqlx::PgPool, services: A::Services) -> CommandBus<A>
where
    A: cqrs_es::Aggregate + Clone + 'static,
    A::Command: Clone,
{
    CommandBus::with_upcasters(pool.clone(), services, aula_domain::upcasters())
}

/// The metadata of a command the system sends, in `institution` if any.
pub fn meta(institution: Option<uuid::Uuid>) -> EventMetadata {
    EventMetadata::new(Actor::System, institution)
}

pub fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// A birth date, valid today.
pub fn born_on(year: i32, month: u32, day: u32) -> aula_domain::values::BirthDate {
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day).unwrap();
    aula_domain::values::BirthDate::parse(date, today()).unwrap()
}

/// The id of the first event of type `event_type` in stream `aggregate_id`.
pub async fn event_id_of(pool: &sqlx::PgPool, event_type: &str, aggregate_id: &str) -> uuid::Uuid {
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND aggregate_id = $2 ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// `SignUp` of `email` with a link whose token hashes to `token_hash`.
pub fn sign_up(
    email: &str,
    token_hash: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> UserCommand {
    UserCommand::SignUp {
        email: Email::parse(email).unwrap(),
        confirmation_token_hash: token_hash.into(),
        expires_at,
        now,
    }
}

/// `ConfirmSignUp` of founder Flora, creating her institution "Escola Fénix".
pub fn confirm_founder(
    token_hash: &str,
    institution: InstitutionId,
    now: DateTime<Utc>,
) -> UserCommand {
    UserCommand::ConfirmSignUp {
        token_hash: token_hash.into(),
        name: PersonName::parse("Flora").unwrap(),
        password_hash: "x".into(),
        institution_id: institution,
        institution_name: InstitutionName::parse("Escola Fénix").unwrap(),
        now,
    }
}

/// Submits the application of "Applicant", born on 5 May 2005, with `email` to
/// `course`; returns its id.
pub async fn submit_application(
    pool: &sqlx::PgPool,
    course: CourseId,
    institution: InstitutionId,
    email: &str,
) -> ApplicationId {
    let email = Email::parse(email).unwrap();
    let id = application_id_for(course, &email);
    bus::<Application>(pool, Default::default())
        .execute(
            &id.to_string(),
            ApplicationCommand::SubmitApplication {
                course_id: course,
                institution_id: institution,
                name: PersonName::parse("Applicant").unwrap(),
                birth_date: born_on(2005, 5, 5),
                email,
                requested_at: Utc::now(),
                idempotency_key: None,
            },
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
    id
}

/// An institution ("Escola Teste") with one campus and one course.
pub struct School {
    pub institution: InstitutionId,
    pub campus: CampusId,
    pub course: CourseId,
}

impl School {
    /// Creates the institution; its campus and course have ids but do not exist yet
    /// (see [`School::open_course`]).
    pub async fn create(pool: &sqlx::PgPool) -> School {
        let school = School {
            institution: InstitutionId::from_uuid(uuid::Uuid::new_v4()),
            campus: CampusId::from_uuid(uuid::Uuid::new_v4()),
            course: CourseId::from_uuid(uuid::Uuid::new_v4()),
        };
        school
            .institution_command(
                pool,
                InstitutionCommand::CreateInstitution {
                    name: InstitutionName::parse("Escola Teste").unwrap(),
                    manager_user_id: UserId::from_uuid(uuid::Uuid::new_v4()),
                },
            )
            .await;
        school
    }

    /// Creates the campus `campus` and offers and opens the course `course` there, with
    /// `capacity` seats.
    pub async fn open_course(
        &self,
        pool: &sqlx::PgPool,
        campus: &str,
        course: &str,
        capacity: u32,
    ) {
        let name = CourseName::parse(course).unwrap();
        let capacity = Capacity::new(capacity).unwrap();
        self.institution_command(
            pool,
            InstitutionCommand::CreateCampus {
                campus_id: self.campus,
                name: CampusName::parse(campus).unwrap(),
                city: CityName::parse("Recife").unwrap(),
            },
        )
        .await;
        self.institution_command(
            pool,
            InstitutionCommand::OfferCourse {
                course_id: self.course,
                campus_id: self.campus,
                name: name.clone(),
                capacity,
            },
        )
        .await;
        self.course_command(
            pool,
            CourseCommand::OpenCourse {
                institution_id: self.institution,
                campus_id: self.campus,
                name,
                capacity,
            },
        )
        .await;
    }

    /// Requests enrollment (the older, in-stream way to apply) for "Applicant", born on
    /// 5 May 2005, with `email`; returns the application's id.
    pub async fn request_enrollment(&self, pool: &sqlx::PgPool, email: &str) -> ApplicationId {
        let application_id = ApplicationId::from_uuid(uuid::Uuid::new_v4());
        self.course_command(
            pool,
            CourseCommand::RequestEnrollment {
                application_id,
                name: PersonName::parse("Applicant").unwrap(),
                birth_date: born_on(2005, 5, 5),
                email: Email::parse(email).unwrap(),
                requested_at: Utc::now(),
            },
        )
        .await;
        application_id
    }

    /// The metadata of the system's commands in this institution.
    pub fn meta(&self) -> EventMetadata {
        meta(Some(self.institution.as_uuid()))
    }

    pub async fn institution_command(&self, pool: &sqlx::PgPool, command: InstitutionCommand) {
        bus::<Institution>(pool, InstitutionServices)
            .execute(&self.institution.to_string(), command, &self.meta())
            .await
            .unwrap();
    }

    pub async fn course_command(&self, pool: &sqlx::PgPool, command: CourseCommand) {
        bus::<Course>(pool, CourseServices)
            .execute(&self.course.to_string(), command, &self.meta())
            .await
            .unwrap();
    }
}

/// A school whose course "Física I" (on campus "Centro") has `capacity` seats.
///
/// `demo.seed` is paused first: the institution's demo data would race the commands
/// below (its first campus is also "Centro", so the test's could be refused as a
/// duplicate) and add e-mails and decisions that the tests count. A test that wants
/// demo data resumes the kind.
pub async fn school(pool: &sqlx::PgPool, capacity: u32) -> School {
    aula_processor::controls::pause_kind(pool, aula_processor::kinds::DEMO_SEED, &Actor::System)
        .await
        .unwrap();
    let school = School::create(pool).await;
    school
        .open_course(pool, "Centro", "Física I", capacity)
        .await;
    school
}

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
    ProcessorConfig::quick(name)
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
        let options = fast_subscription(REACTIONS_SUBSCRIPTION);
        spawn_reactions_with(
            db.connect.clone(),
            options,
            Wakeups::polling_only(),
            shutdown.clone(),
        )
    });
    let admissions = with_reactions.then(|| {
        let options = fast_subscription(ADMISSIONS_SUBSCRIPTION);
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

/// A new database with the standard processor running on it.
pub async fn standard_on_new_database() -> (TestDatabase, Running, RecordingMailer) {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    (db, running, mailer)
}

/// A bulk job of `filter` up to `up_to`, recorded by the system and not yet run, with
/// batches of two: its id, its runner's name and the options to run it with.
pub async fn job_in_batches_of_two(
    pool: &sqlx::PgPool,
    filter: &aula_processor::bulk::BulkFilter,
    up_to: aula_eventlog::LogPosition,
) -> (uuid::Uuid, String, aula_processor::bulk::BulkOptions) {
    use aula_processor::bulk::{self, BulkOptions};
    let owner = bulk::runner_name();
    let options = BulkOptions {
        batch_size: 2,
        ..BulkOptions::default()
    };
    let id = bulk::create_job(
        pool,
        filter,
        up_to,
        Actor::System,
        None,
        &owner,
        options.lease,
    )
    .await
    .unwrap();
    (id, owner, options)
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

/// The single number `sql` reads is `expected`.
pub async fn assert_scalar(pool: &sqlx::PgPool, sql: &str, expected: i64) {
    assert_eq!(scalar_i64(pool, sql).await, expected, "{sql}");
}

/// Waits until the count `sql` reads passes `done`; `what` names the wait if it times
/// out.
pub async fn until_count(pool: &sqlx::PgPool, sql: &str, what: &str, done: impl Fn(i64) -> bool) {
    eventually(what, || async {
        done(scalar_i64(pool, sql).await).then_some(())
    })
    .await;
}

/// Waits until a statement of this test's database whose text is like `statement`
/// (`%` for any) waits for a lock; `what` names the wait if it times out.
pub async fn until_waiting_on_a_lock(pool: &sqlx::PgPool, statement: &str, what: &str) {
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND datname = current_database()
           AND query LIKE '{}'",
        statement.replace('\'', "''")
    );
    until_count(pool, &waiting, what, |n| n > 0).await;
}

/// Every one of `total` tasks succeeded, and `effects`, the table their handler adds a
/// row to per run, holds `total` rows: each task ran exactly once.
pub async fn assert_each_task_succeeded_once(pool: &sqlx::PgPool, effects: &str, total: i64) {
    let succeeded = "SELECT count(*) FROM tasks WHERE status = 'succeeded'";
    assert_eq!(scalar_i64(pool, succeeded).await, total);
    let effects = scalar_i64(pool, &format!("SELECT count(*) FROM {effects}")).await;
    assert_eq!(effects, total, "every effect exactly once");
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

/// An endpoint registered by the system for every event, at a loopback address nothing
/// answers on (`http://127.0.0.1:9/`): its signer, and its id to point elsewhere.
pub async fn loopback_endpoint(
    pool: &sqlx::PgPool,
    description: &str,
) -> (
    aula_processor::webhooks::Endpoint,
    aula_processor::webhooks::Signer,
) {
    use aula_processor::webhooks::{endpoints, NewEndpoint, WebhookConfig};

    let loopback = WebhookConfig {
        insecure_hosts: vec!["127.0.0.1".into()],
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..WebhookConfig::default()
    };
    endpoints::create(
        pool,
        &loopback,
        NewEndpoint::by_system("http://127.0.0.1:9/", description),
        &EventMetadata::new(Actor::System, None),
    )
    .await
    .unwrap()
}

/// A minimal SMTP server on loopback that speaks just enough SMTP (EHLO, MAIL, RCPT,
/// DATA, QUIT, RSET, NOOP) and keeps every message it accepted, for tests that look at
/// deliveries over a real conversation. A slow one ([`SmtpSink::start_slow`]) takes its
/// time to accept each message, like a relay under load.
#[derive(Clone, Default)]
pub struct SmtpSink {
    pub port: u16,
    pub delivered: Arc<Mutex<Vec<Delivered>>>,
    /// Messages being accepted right now (from their DATA to the reply), and the most
    /// at once so far.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// One accepted message: the commands of its connection up to its DATA, and the DATA.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub commands: Vec<String>,
    pub data: String,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_on(0).await
    }

    /// [`SmtpSink::start`] on `port` (0: any free one), e.g. where a relay was down.
    pub async fn start_on(port: u16) -> SmtpSink {
        Self::listen(port, Duration::ZERO).await
    }

    /// [`SmtpSink::start`] that waits `delay` before it accepts each message (its reply
    /// to the end of the DATA).
    pub async fn start_slow(delay: Duration) -> SmtpSink {
        Self::listen(0, delay).await
    }

    async fn listen(port: u16, delay: Duration) -> SmtpSink {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            ..SmtpSink::default()
        };
        let shared = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let store = &shared.delivered;
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                        return;
                    }
                    let mut commands = Vec::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_ascii_uppercase();
                        commands.push(line.clone());
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
                                let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
                                tokio::time::sleep(delay).await;
                                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                                let commands = commands.clone();
                                store.lock().unwrap().push(Delivered { commands, data });
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
        sink
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
            .filter(|message| message.data.lines().any(|l| l == header))
            .map(|message| message.data.clone())
            .collect()
    }
}
