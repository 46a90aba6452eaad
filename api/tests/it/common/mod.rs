//! Test support: the real server on 127.0.0.1:0 over a fresh database, a GraphQL
//! client, and fixtures built through the public API only.
#![allow(dead_code)]

// Shared with the root package's tests (the same need, one implementation).
#[path = "../../../../tests/it/support/isolation.rs"]
mod isolation;
#[path = "../../../../tests/it/support/logs.rs"]
pub mod logs;

pub mod operation_report;
pub mod ws;

pub use isolation::in_own_process;
pub use operation_report::record_calls;

use std::sync::Arc;
use std::time::Duration;

use aula_api::{
    ApiConfig, AppState, ManualClock, PasswordHashing, RateLimitConfig, RecordingTokenSink, Secret,
    TokenKind,
};
use aula_eventlog::testing::TestDatabase;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub tokens: Arc<RecordingTokenSink>,
    pub db: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn test_config() -> ApiConfig {
    let mut config = ApiConfig::new(Secret::new(b"test secret of at least 32 bytes!!".to_vec()));
    config.rate_limit = RateLimitConfig {
        burst: 10_000,
        per_minute: 10_000,
    };
    config.password_hashing = PasswordHashing {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with an admin signed in.
    pub async fn with_admin() -> (Self, Actor) {
        let server = Self::start().await;
        let admin = server.admin().await;
        (server, admin)
    }

    /// A server with one institution (see [`TestServer::institution`]).
    pub async fn with_institution(name: &str) -> (Self, Institution) {
        let server = Self::start().await;
        let institution = server.institution(name).await;
        (server, institution)
    }

    pub async fn start_with(configure: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::start_custom(configure, |state| state).await
    }

    /// Also lets the test adjust the state (readiness probe, user policy).
    pub async fn start_custom(
        configure: impl FnOnce(&mut ApiConfig),
        adjust: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        let mut config = test_config();
        configure(&mut config);
        let server_limits = config.server.clone();
        let db = TestDatabase::new().await;
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        ));
        let tokens = Arc::new(RecordingTokenSink::default());
        let state = AppState::new(db.pool.clone(), config)
            .with_clock(clock.clone())
            .with_token_sink(tokens.clone());
        let state = adjust(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(aula_api::serve_with(
            listener,
            aula_api::router(state),
            server_limits,
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            clock,
            tokens,
            db,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not shut down")
                .unwrap()
                .unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The upgrade request of a graphql-transport-ws socket to `/graphql/ws`, for a
    /// client that opens its own TCP stream (`tokio_tungstenite::client_async`).
    pub fn socket_request(&self) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self
            .url("/graphql/ws")
            .replace("http://", "ws://")
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        request
    }

    /// `GET path`, anonymously.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_from(&self.client, token, query, variables).await
    }

    /// [`TestServer::gql`] from `client` (one bound to an address of its own, say).
    pub async fn gql_from(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Value {
        let mut request = client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let body = response.json().await.unwrap();
        record_calls();
        body
    }

    /// Runs an operation without variables as the holder of `token`.
    pub async fn query(&self, token: &str, query: &str) -> Value {
        self.gql(Some(token), query, json!({})).await
    }

    /// Signs `email` up, as anyone may.
    pub async fn sign_up(&self, email: &str) -> Value {
        self.command(None, "signUp", json!({ "email": email }))
            .await
    }

    /// `count` (a `count(*)` of rows naming `$1` = `email`) once it reaches 1, or where
    /// it stood after 5 s: for effects that land after the answer.
    pub async fn count_once_one(&self, count: &str, email: &str) -> i64 {
        let mut found = 0_i64;
        for _ in 0..100 {
            found = sqlx::query_scalar(count)
                .bind(email)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if found == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        found
    }

    /// Confirms the sign-up of `email` with `token` (the password is [`PASSWORD`]),
    /// selecting `userId institutionId logPosition`.
    pub async fn confirm_sign_up(
        &self,
        email: &str,
        token: &str,
        name: &str,
        institution_name: &str,
    ) -> Value {
        self.gql(
            None,
            "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId institutionId logPosition } }",
            json!({ "input": {
                "email": email, "token": token, "name": name,
                "password": PASSWORD, "institutionName": institution_name,
            }}),
        )
        .await
    }

    /// Runs a mutation `name(input: $input)` selecting `id logPosition`.
    pub async fn command(&self, token: Option<&str>, name: &str, input: Value) -> Value {
        let input_type = input_type(name);
        // `signUp` names no account; every other command returns `CommandResult`.
        let selection = if name == "signUp" {
            "accepted logPosition"
        } else {
            "id logPosition"
        };
        let query = format!(
            "mutation($input: {input_type}!) {{ {name}(input: $input) {{ {selection} }} }}"
        );
        self.gql(token, &query, json!({ "input": input })).await
    }

    /// `recordExamNote` by `token`: `student`'s `note` in `exam` of `course`.
    pub async fn record_exam_note(
        &self,
        token: &str,
        course: Uuid,
        student: Uuid,
        exam: &str,
        note: f64,
    ) -> Value {
        let input =
            json!({ "courseId": course, "studentId": student, "examName": exam, "note": note });
        self.command(Some(token), "recordExamNote", input).await
    }

    /// `cancelEnrollment` by `token`: `application`'s seat in `course`.
    pub async fn cancel_enrollment(&self, token: &str, course: Uuid, application: Uuid) -> Value {
        let input = json!({ "courseId": course, "applicationId": application });
        self.command(Some(token), "cancelEnrollment", input).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.login_from(&self.client, email, password).await
    }

    /// [`TestServer::login`] from `client` (one bound to an address of its own, say).
    pub async fn login_from(&self, client: &reqwest::Client, email: &str, password: &str) -> Value {
        self.gql_from(
            client,
            None,
            "mutation($input: LoginInput!) { login(input: $input) { accessToken expiresAt userId role institutionId logPosition } }",
            json!({ "input": { "email": email, "password": password } }),
        )
        .await
    }

    pub async fn token_for(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        response["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("login of {email} failed: {response}"))
            .to_owned()
    }

    pub async fn admin(&self) -> Actor {
        let email = format!("admin-{}@aula.test", Uuid::new_v4().simple());
        let id = aula_api::create_admin(&self.db.pool, &email, PASSWORD)
            .await
            .unwrap();
        let token = self.token_for(&email, PASSWORD).await;
        Actor { id, email, token }
    }

    /// Signs up, confirms and logs in a manager of a new institution.
    pub async fn institution(&self, name: &str) -> Institution {
        let email = format!("manager-{}@aula.test", Uuid::new_v4().simple());
        let signed_up = self.sign_up(&email).await;
        assert!(signed_up["errors"].is_null(), "{signed_up}");
        let token = self
            .tokens
            .last(TokenKind::SignUpConfirmation, &email)
            .expect("a confirmation token was issued");
        let confirmed = self
            .confirm_sign_up(&email, &token, "Maria Manager", name)
            .await;
        let data = &confirmed["data"]["confirmSignUp"];
        let manager_id: Uuid = data["userId"].as_str().expect("confirmed").parse().unwrap();
        let id: Uuid = data["institutionId"].as_str().unwrap().parse().unwrap();
        let access = self.token_for(&email, PASSWORD).await;
        Institution {
            id,
            manager: Actor {
                id: manager_id,
                email,
                token: access,
            },
        }
    }

    /// Asks a password reset for `email` (it must be taken) and returns the token the
    /// e-mail carries.
    pub async fn reset_token(&self, email: &str) -> String {
        let requested = self
            .gql(None, REQUEST_PASSWORD_RESET, json!({ "e": email }))
            .await;
        assert_eq!(requested["data"]["requestPasswordReset"]["accepted"], true);
        self.tokens
            .last(TokenKind::PasswordReset, email)
            .expect("a reset token was issued")
    }

    /// Sets the password of a password-less account through the reset flow, logs in.
    pub async fn activate(&self, id: Uuid, email: &str) -> Actor {
        let token = self.reset_token(email).await;
        let reset = self
            .command(
                None,
                "resetPassword",
                json!({ "email": email, "token": token, "newPassword": PASSWORD }),
            )
            .await;
        assert!(reset["errors"].is_null(), "{reset}");
        Actor {
            id,
            email: email.to_owned(),
            token: self.token_for(email, PASSWORD).await,
        }
    }

    pub async fn campus(&self, token: &str, institution: Option<Uuid>) -> Uuid {
        let r = self
            .command(
                Some(token),
                "createCampus",
                json!({ "institutionId": institution, "name": format!("Campus {}", Uuid::new_v4().simple()), "city": "Porto" }),
            )
            .await;
        id(&r, "createCampus")
    }

    pub async fn course(&self, token: &str, institution: Option<Uuid>, campus: Uuid) -> Uuid {
        let r = self
            .command(
                Some(token),
                "offerCourse",
                json!({ "institutionId": institution, "campusId": campus, "name": format!("Course {}", Uuid::new_v4().simple()), "capacity": 30 }),
            )
            .await;
        id(&r, "offerCourse")
    }

    /// A campus of the holder of `token`'s institution with one course: `(campus, course)`.
    pub async fn campus_with_course(&self, token: &str) -> (Uuid, Uuid) {
        let campus = self.campus(token, None).await;
        (campus, self.course(token, None, campus).await)
    }

    pub async fn student(&self, token: &str, institution: Option<Uuid>) -> (Uuid, String) {
        let details = json!({ "name": "Sam Student", "birthDate": "2004-05-06" });
        self.person(token, "createStudent", "student", institution, details)
            .await
    }

    /// Runs `mutation` (`createStudent`, `createTeacher`) as `token` for a new person of
    /// `institution` with a fresh `<prefix>-…@aula.test` e-mail and `details`; returns
    /// its id and e-mail.
    async fn person(
        &self,
        token: &str,
        mutation: &str,
        prefix: &str,
        institution: Option<Uuid>,
        mut details: Value,
    ) -> (Uuid, String) {
        let email = format!("{prefix}-{}@aula.test", Uuid::new_v4().simple());
        details["institutionId"] = json!(institution);
        details["email"] = json!(email);
        let r = self.command(Some(token), mutation, details).await;
        (id(&r, mutation), email)
    }

    /// Creates (as `token`: a manager, for its institution, or an admin, for
    /// `institution` or the whole platform) and signs in an observer.
    pub async fn observer(&self, token: &str, institution: Option<Uuid>) -> Actor {
        let email = format!("observer-{}@aula.test", Uuid::new_v4().simple());
        let r = self
            .gql(
                Some(token),
                "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
                json!({ "input": { "institutionId": institution, "name": "Olga Observer", "email": email } }),
            )
            .await;
        let id = r["data"]["createObserver"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("createObserver failed: {r}"));
        self.activate(id, &email).await
    }

    pub async fn teacher(&self, token: &str, institution: Option<Uuid>) -> (Uuid, String) {
        let details = json!({ "name": "Tina Teacher" });
        self.person(token, "createTeacher", "teacher", institution, details)
            .await
    }

    pub async fn application(&self, course: Uuid) -> Uuid {
        let r = self
            .command(
                None,
                "applyToCourse",
                json!({ "courseId": course, "name": "Alex Applicant", "birthDate": "2003-01-02", "email": format!("applicant-{}@aula.test", Uuid::new_v4().simple()) }),
            )
            .await;
        id(&r, "applyToCourse")
    }

    /// What the processor's admissions do with a new application: decide it (alone in
    /// its batch). Panics if the course refuses.
    pub async fn enroll(&self, course: Uuid, application: Uuid) {
        use aula_domain::application::Application;
        use aula_domain::course::{ApplicationToDecide, Course, CourseCommand};
        let applications = aula_eventlog::CommandBus::<Application>::with_upcasters(
            self.db.pool.clone(),
            Default::default(),
            aula_domain::upcasters(),
        );
        let (loaded, _) = applications.load(&application.to_string()).await.unwrap();
        let submitted = loaded
            .submitted()
            .unwrap_or_else(|| panic!("application {application} was submitted"))
            .clone();
        let bus = aula_eventlog::CommandBus::<Course>::with_upcasters(
            self.db.pool.clone(),
            Default::default(),
            aula_domain::upcasters(),
        );
        bus.execute(
            &course.to_string(),
            CourseCommand::DecideApplications {
                applications: vec![ApplicationToDecide {
                    application_id: aula_domain::values::ApplicationId::from_uuid(application),
                    name: submitted.name,
                    email: submitted.email,
                    birth_date: submitted.birth_date,
                }],
                today: self.clock_today(),
            },
            &aula_eventlog::EventMetadata::new(aula_eventlog::Actor::System, None),
        )
        .await
        .unwrap();
    }

    /// Applies to `course` with `email` (a student's, say) and enrolls the application.
    pub async fn enroll_email(&self, course: Uuid, email: &str) -> Uuid {
        let r = self
            .command(
                None,
                "applyToCourse",
                json!({ "courseId": course, "name": "Sam Student", "birthDate": "2004-05-06", "email": email }),
            )
            .await;
        let application = id(&r, "applyToCourse");
        self.enroll(course, application).await;
        application
    }

    fn clock_today(&self) -> chrono::NaiveDate {
        use aula_api::Clock;
        self.clock.now().date_naive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Calls made without `gql` (raw requests, WebSockets) are counted too.
        record_calls();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Actor {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Institution {
    pub id: Uuid,
    pub manager: Actor,
}

/// Asks a password reset for the e-mail `$e`.
pub const REQUEST_PASSWORD_RESET: &str =
    "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }";

pub fn input_type(mutation: &str) -> String {
    let mut chars = mutation.chars();
    let first = chars.next().unwrap().to_ascii_uppercase();
    format!("{first}{}Input", chars.as_str())
}

/// The `id` a successful command returned.
pub fn id(response: &Value, field: &str) -> Uuid {
    response["data"][field]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{field} failed: {response}"))
        .parse()
        .unwrap()
}

/// The code of the first error, if any.
pub fn code(response: &Value) -> Option<String> {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

pub fn extension<'a>(response: &'a Value, key: &str) -> &'a Value {
    &response["errors"][0]["extensions"][key]
}

#[track_caller]
pub fn assert_code(response: &Value, expected: &str) {
    assert_eq!(
        code(response).as_deref(),
        Some(expected),
        "expected {expected}, got {response}"
    );
}

/// Asserts the first error's `code` and its `reason` extension.
#[track_caller]
pub fn assert_reason(response: &Value, code: &str, reason: &str) {
    assert_code(response, code);
    assert_eq!(extension(response, "reason"), reason, "{response}");
}

#[track_caller]
pub fn assert_ok(response: &Value) {
    assert!(
        response["errors"].is_null(),
        "expected success, got {response}"
    );
}

/// Every projection running against the server's database, until the trigger fires.
pub struct RunningProjections {
    trigger: aula_eventlog::shutdown::ShutdownTrigger,
}

impl RunningProjections {
    pub async fn start(server: &TestServer) -> Self {
        let (trigger, shutdown) = aula_eventlog::shutdown::channel();
        let wakeups = aula_eventlog::Wakeups::listen(&server.db.pool, shutdown.clone())
            .await
            .expect("LISTEN for wake-ups");
        // The handles stop with the shutdown signal.
        drop(aula_projections::spawn_all(
            server.db.connect.clone(),
            wakeups,
            shutdown,
        ));
        RunningProjections { trigger }
    }
}

impl Drop for RunningProjections {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// A server whose read-your-writes waits on every projection, with them running.
pub async fn server_with_projections() -> (TestServer, RunningProjections) {
    let server = TestServer::start_with(|config| {
        config.projections = aula_projections::NAMES
            .iter()
            .map(|n| n.to_string())
            .collect();
    })
    .await;
    let projections = RunningProjections::start(&server).await;
    (server, projections)
}

/// Inserts a pending task of `kind` for `institution` as the reactions do (the API's
/// tests run no processor, so nothing else claims it), its key `<prefix>:<uuid>`;
/// returns its id.
pub async fn insert_waiting_task(
    server: &TestServer,
    kind: &str,
    prefix: &str,
    institution: Uuid,
) -> i64 {
    let mut task =
        aula_processor::NewTask::new(kind, format!("{prefix}:{}", Uuid::new_v4()), json!({}));
    task.institution_id = Some(institution);
    let mut conn = server.db.pool.acquire().await.unwrap();
    aula_processor::queue::insert_tasks(&mut conn, &[task])
        .await
        .unwrap();
    sqlx::query_scalar("SELECT max(id) FROM tasks")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// The body of `GET /health`.
pub async fn health(server: &TestServer) -> Value {
    server.get("/health").await.json().await.unwrap()
}
