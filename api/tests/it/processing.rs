//! The signed-in user's notifications and the processor's admin views, end to end: real
//! mutations -> events -> the processor's reactions issue tasks -> its workers run them
//! (notifications, e-mails into a temporary directory) -> the API reads the results.

use crate::common;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::shutdown::{self, ShutdownTrigger};
use aula_eventlog::subscription::SubscriptionHandle;
use aula_eventlog::{SubscriptionOptions, Wakeups};
use aula_processor::archive::ArchiveConfig;
use aula_processor::handlers::notify::{create_broadcast, Audience};
use aula_processor::handlers::Registry;
use aula_processor::reactions::spawn_reactions_with;
use aula_processor::{FileMailer, MailConfig, ProcessorConfig, REACTIONS_SUBSCRIPTION};
use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

/// The processor (reactions + workers) running against the server's database.
struct Processor {
    trigger: ShutdownTrigger,
    reactions: SubscriptionHandle,
    workers: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
    outbox: PathBuf,
}

impl Processor {
    fn start(server: &TestServer) -> Self {
        let (trigger, shutdown) = shutdown::channel();
        let mut options = SubscriptionOptions::new(REACTIONS_SUBSCRIPTION);
        options.poll_interval = Duration::from_millis(100);
        options.standby_interval = Duration::from_millis(50);
        options.max_backoff = Duration::from_millis(200);
        let reactions = spawn_reactions_with(
            server.db.connect.clone(),
            options,
            Wakeups::polling_only(),
            shutdown.clone(),
        );
        let outbox = std::env::temp_dir().join(format!("aula-api-outbox-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&outbox).unwrap();
        let mail = MailConfig {
            outbox_dir: outbox.clone(),
            public_base_url: "https://aula.test".into(),
            ..MailConfig::default()
        };
        let mailer = FileMailer::new(outbox.clone(), mail.from.clone());
        let config = ProcessorConfig {
            concurrency: 4,
            claim_batch: 16,
            ..ProcessorConfig::quick("api-test-worker")
        };
        let workers = tokio::spawn(aula_processor::run_workers(
            server.db.pool.clone(),
            config,
            Registry::standard(Arc::new(mailer), mail),
            shutdown,
        ));
        Processor {
            trigger,
            reactions,
            workers,
            outbox,
        }
    }

    async fn stop(self) {
        self.trigger.trigger();
        within(self.reactions.task).await.unwrap();
        within(self.workers).await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&self.outbox);
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("timed out")
}

/// Polls `check` until it returns `Some`, for at most a minute.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MY_NOTIFICATIONS: &str =
    "query($unread: Boolean! = false, $first: Int! = 20, $after: String) {
    myNotifications(unreadOnly: $unread, first: $first, after: $after) {
        nodes { id audience title body data institutionId eventId createdAt linkedAt readAt read }
        nextCursor
    } }";

const MARK_READ: &str =
    "mutation($id: Int!) { markNotificationRead(notificationId: $id) { id read readAt } }";

const EVENT_TASKS: &str = "query($e: UUID!, $first: Int! = 20, $after: String) {
    eventTasks(eventId: $e, first: $first, after: $after) {
        nodes { id kind status priority attempt maxAttempts runAt createdAt startedAt finishedAt
                lastError originTaskId archived archivedAt
                attempts { attempt worker startedAt finishedAt durationMs outcome error } }
        nextCursor
    } }";

const SUMMARY: &str = "{ processingSummary { ratePerHourToday
    statusCounts { kind status count } projections { name lagEvents lagSeconds lastError } } }";

/// `markNotificationRead` of notification `id`, as `token` (`None`: anonymous).
async fn mark_read(server: &TestServer, token: Option<&str>, id: i64) -> Value {
    server.gql(token, MARK_READ, json!({ "id": id })).await
}

/// One answer of `myNotifications` as `token`, with `variables` (filter and page).
async fn notification_page(server: &TestServer, token: &str, variables: Value) -> Value {
    server.gql(Some(token), MY_NOTIFICATIONS, variables).await
}

async fn notifications(server: &TestServer, token: &str, unread_only: bool) -> Vec<Value> {
    let r = notification_page(server, token, json!({ "unread": unread_only })).await;
    assert_ok(&r);
    r["data"]["myNotifications"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn event_id_of(server: &TestServer, event_type: &str, aggregate_id: Uuid) -> Uuid {
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND aggregate_id = $2 ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .bind(aggregate_id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap()
}

fn count_of(summary: &Value, kind: &str, status: &str) -> i64 {
    summary["statusCounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind && c["status"] == status)
        .unwrap_or_else(|| panic!("no {kind}/{status} in {summary}"))["count"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_grade_reaches_only_its_student_who_marks_it_read() {
    let server = TestServer::start().await;
    // The processor's rollups are stamped with the real time: "today" must be today.
    server.clock.set(Utc::now());
    let processor = Processor::start(&server);
    let admin = server.admin().await;
    let a = server.institution("Escola Norte").await;
    let b = server.institution("Escola Sul").await;
    let manager = a.manager.token.as_str();
    let (_, course) = server.campus_with_course(manager).await;
    let (student_id, student_email) = server.student(manager, None).await;
    let (other_id, other_email) = server.student(manager, None).await;
    let (teacher_id, teacher_email) = server.teacher(manager, None).await;
    let student = server.activate(student_id, &student_email).await;
    let other = server.activate(other_id, &other_email).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    server.enroll_email(course, &student_email).await;

    let recorded = server
        .record_exam_note(&teacher.token, course, student.id, "Midterm", 8.5)
        .await;
    let grade = id(&recorded, "recordExamNote");
    let event = event_id_of(&server, "ExamGradeNoteAdded", grade).await;

    // The student sees the "new grade" notification once the processor ran.
    let nodes = eventually("the grade notification", || async {
        let nodes = notifications(&server, &student.token, false).await;
        (!nodes.is_empty()).then_some(nodes)
    })
    .await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let notification = &nodes[0];
    assert!(
        notification["title"]
            .as_str()
            .unwrap()
            .starts_with("New grade in"),
        "{notification}"
    );
    assert_eq!(notification["body"], "Midterm: 8.50");
    assert_eq!(notification["audience"], "student");
    assert_eq!(notification["eventId"], event.to_string());
    assert_eq!(notification["institutionId"], a.id.to_string());
    assert_eq!(notification["read"], false);
    assert!(notification["readAt"].is_null());
    let data: Value = serde_json::from_str(notification["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["exam_name"], "Midterm");
    let notification_id = notification["id"].as_i64().unwrap();

    // Nobody else sees it or may mark it read.
    assert!(notifications(&server, &other.token, false).await.is_empty());
    assert!(notifications(&server, &teacher.token, false)
        .await
        .is_empty());
    let foreign = mark_read(&server, Some(&other.token), notification_id).await;
    assert_reason(&foreign, "FORBIDDEN", "NOT_RECIPIENT");
    let unknown = mark_read(&server, Some(&student.token), i64::MAX).await;
    assert_code(&unknown, "NOT_FOUND");
    assert_code(
        &mark_read(&server, None, notification_id).await,
        "UNAUTHENTICATED",
    );
    assert_code(
        &server.gql(None, MY_NOTIFICATIONS, json!({})).await,
        "UNAUTHENTICATED",
    );

    // The student marks it read: unreadOnly no longer lists it; marking again keeps it.
    let marked = mark_read(&server, Some(&student.token), notification_id).await;
    assert_ok(&marked);
    let marked = &marked["data"]["markNotificationRead"];
    assert_eq!(marked["read"], true);
    assert!(marked["readAt"].is_string());
    let again = mark_read(&server, Some(&student.token), notification_id).await;
    assert_eq!(
        again["data"]["markNotificationRead"]["readAt"],
        marked["readAt"]
    );
    assert!(notifications(&server, &student.token, true)
        .await
        .is_empty());
    let all = notifications(&server, &student.token, false).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["read"], true);

    // Broadcasts of the institution are listed through their recipients, newest first,
    // and read state stays per user; another institution's are not shown.
    let pool = &server.db.pool;
    let broadcast = create_broadcast(
        pool,
        "test-broadcast-a",
        a.id,
        Audience::AllStudents,
        "Welcome",
        "Classes start on Monday",
        &[student.id, other.id],
    )
    .await
    .unwrap();
    create_broadcast(
        pool,
        "test-broadcast-b",
        b.id,
        Audience::AllStudents,
        "Elsewhere",
        "Not for institution A",
        &[student.id],
    )
    .await
    .unwrap();
    let unread = notifications(&server, &student.token, true).await;
    assert_eq!(unread.len(), 1, "{unread:?}");
    assert_eq!(unread[0]["id"], broadcast);
    assert_eq!(unread[0]["audience"], "all_students");
    let page = notification_page(&server, &student.token, json!({ "first": 1 })).await;
    assert_eq!(
        page["data"]["myNotifications"]["nodes"][0]["id"], broadcast,
        "{page}"
    );
    let cursor = page["data"]["myNotifications"]["nextCursor"].clone();
    assert!(cursor.is_string(), "{page}");
    let page = notification_page(
        &server,
        &student.token,
        json!({ "first": 1, "after": cursor }),
    )
    .await;
    assert_eq!(
        page["data"]["myNotifications"]["nodes"][0]["id"],
        notification_id
    );
    assert!(page["data"]["myNotifications"]["nextCursor"].is_null());
    assert_code(
        &notification_page(&server, &student.token, json!({ "first": 0 })).await,
        "VALIDATION",
    );
    assert_code(
        &notification_page(&server, &student.token, json!({ "after": "x" })).await,
        "VALIDATION",
    );
    assert_ok(&mark_read(&server, Some(&other.token), broadcast).await);
    assert_eq!(notifications(&server, &other.token, true).await.len(), 0);
    assert_eq!(notifications(&server, &student.token, true).await.len(), 1);

    // eventTasks: the grade event's task, as the real reaction issued and ran it.
    let tasks = eventually("the grade task to succeed", || async {
        let r = server
            .gql(Some(&admin.token), EVENT_TASKS, json!({ "e": event }))
            .await;
        assert_ok(&r);
        let nodes = r["data"]["eventTasks"]["nodes"].as_array().unwrap().clone();
        nodes
            .iter()
            .all(|t| t["status"] == "succeeded")
            .then_some(nodes)
    })
    .await;
    let task = tasks
        .iter()
        .find(|t| t["kind"] == "notification.grade")
        .unwrap_or_else(|| panic!("no grade task in {tasks:?}"));
    assert_eq!(task["attempt"], 1);
    assert!(task["maxAttempts"].as_i64().unwrap() >= 1);
    assert!(task["priority"].is_i64());
    assert!(task["finishedAt"].is_string());
    assert!(task["originTaskId"].is_null());
    assert_eq!(task["archived"], false);
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{task}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["outcome"], "succeeded");
    assert_eq!(attempts[0]["worker"], "api-test-worker");
    assert!(attempts[0]["durationMs"].as_f64().unwrap() >= 0.0);
    assert!(attempts[0]["error"].is_null());

    // Who may read it: the admin and the event's own manager only.
    let own = server
        .gql(Some(manager), EVENT_TASKS, json!({ "e": event }))
        .await;
    assert_ok(&own);
    assert_eq!(
        own["data"]["eventTasks"]["nodes"].as_array().unwrap().len(),
        tasks.len()
    );
    for token in [&b.manager.token, &teacher.token, &student.token] {
        let r = server
            .gql(Some(token), EVENT_TASKS, json!({ "e": event }))
            .await;
        assert_code(&r, "FORBIDDEN");
    }
    assert_code(
        &server.gql(None, EVENT_TASKS, json!({ "e": event })).await,
        "UNAUTHENTICATED",
    );
    assert_code(
        &server
            .gql(
                Some(&admin.token),
                EVENT_TASKS,
                json!({ "e": Uuid::new_v4() }),
            )
            .await,
        "NOT_FOUND",
    );
    assert_code(
        &server
            .gql(
                Some(&admin.token),
                EVENT_TASKS,
                json!({ "e": event, "first": 1000 }),
            )
            .await,
        "VALIDATION",
    );

    // Once the nightly archive moved it, it is still listed, with its attempts.
    let archived = aula_processor::archive_once(
        pool,
        Utc::now() + chrono::Duration::days(2),
        &ArchiveConfig::default(),
    )
    .await
    .unwrap();
    assert!(archived.tasks_moved >= 1, "{archived:?}");
    let r = server
        .gql(Some(&admin.token), EVENT_TASKS, json!({ "e": event }))
        .await;
    assert_ok(&r);
    let task = r["data"]["eventTasks"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "notification.grade")
        .unwrap()
        .clone();
    assert_eq!(task["archived"], true, "{task}");
    assert!(task["archivedAt"].is_string());
    assert_eq!(task["attempts"][0]["outcome"], "succeeded");

    // processingSummary: the platform's for the admin.
    let summary = eventually("the grade event to count as processed", || async {
        let r = server.query(&admin.token, SUMMARY).await;
        assert_ok(&r);
        let summary = r["data"]["processingSummary"].clone();
        (summary["ratePerHourToday"].as_f64().unwrap() > 0.0).then_some(summary)
    })
    .await;
    assert!(count_of(&summary, "task", "succeeded") >= tasks.len() as i64);
    assert!(count_of(&summary, "event", "succeeded") >= 1);
    count_of(&summary, "task", "dead");
    let names: Vec<&str> = summary["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, aula_projections::NAMES.to_vec());
    // A manager's header covers its institution (issue #23): what finished there today.
    let own = server.query(manager, SUMMARY).await;
    assert_ok(&own);
    assert!(
        count_of(&own["data"]["processingSummary"], "event", "succeeded") >= 1,
        "{own}"
    );
    assert!(
        own["data"]["processingSummary"]["ratePerHourToday"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    for token in [&teacher.token, &student.token] {
        assert_code(&server.query(token, SUMMARY).await, "FORBIDDEN");
    }
    assert_code(
        &server.gql(None, SUMMARY, json!({})).await,
        "UNAUTHENTICATED",
    );

    processor.stop().await;
    server.stop().await;
}
