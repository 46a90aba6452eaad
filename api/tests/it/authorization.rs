//! The authorization matrix (every role and anonymous against every operation, as in
//! docs/api.md) and institution isolation.

use crate::common;

use aula_api::TokenKind;
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    Student,
    Teacher,
    Manager,
    Admin,
    /// An observer of institution A (read-only support staff).
    Observer,
    /// An observer of the whole platform.
    PlatformObserver,
}

const ROLES: [Role; 7] = [
    Role::Anonymous,
    Role::Student,
    Role::Teacher,
    Role::Manager,
    Role::Admin,
    Role::Observer,
    Role::PlatformObserver,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Forbidden,
    Unauthenticated,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    SignUp,
    ConfirmSignUp,
    Login,
    RequestPasswordReset,
    ResetPassword,
    ApplyToCourse,
    CreateCampus,
    OfferCourse,
    ChangeCourseCapacity,
    CreateStudent,
    CreateTeacher,
    CancelEnrollment,
    RecordExamNote,
    ChangeExamNote,
    UpdateOwnUser,
    UpdateOtherUser,
    DeactivateUser,
    Me,
    Campuses,
    Students,
    Teachers,
    MyGrades,
    MyEnrollments,
    MyApplications,
    MyCourses,
    MyStudents,
    CreateWebhookEndpoint,
    RotateWebhookEndpointSecret,
    WebhookEndpoints,
    WebhookMessages,
    // The dashboard's reads (issue #23: observers may read them) and the operator
    // actions (observers may not).
    AdminEvents,
    SearchEvents,
    AdminTasks,
    SearchTaskErrors,
    EventTasks,
    AuditLog,
    ProcessingSummary,
    ProcessingSeries,
    ProjectionStatus,
    ReprocessEvent,
    RetryTask,
    BulkReprocessPreview,
    RebuildProjection,
    CreateObserver,
    InstitutionSuggestions,
    // Queue controls (issue #19).
    CancelTask,
    ForceReleaseTask,
    SetTaskPriority,
    PauseTaskKind,
    ResumeTaskKind,
    PausedTaskKinds,
    QueueControlLog,
    ReprocessEventWithPriority,
}

const OPS: [Op; 53] = [
    Op::SignUp,
    Op::ConfirmSignUp,
    Op::Login,
    Op::RequestPasswordReset,
    Op::ResetPassword,
    Op::ApplyToCourse,
    Op::CreateCampus,
    Op::OfferCourse,
    Op::ChangeCourseCapacity,
    Op::CreateStudent,
    Op::CreateTeacher,
    Op::CancelEnrollment,
    Op::RecordExamNote,
    Op::ChangeExamNote,
    Op::UpdateOwnUser,
    Op::UpdateOtherUser,
    Op::DeactivateUser,
    Op::Me,
    Op::Campuses,
    Op::Students,
    Op::Teachers,
    Op::MyGrades,
    Op::MyEnrollments,
    Op::MyApplications,
    Op::MyCourses,
    Op::MyStudents,
    Op::CreateWebhookEndpoint,
    Op::RotateWebhookEndpointSecret,
    Op::WebhookEndpoints,
    Op::WebhookMessages,
    Op::AdminEvents,
    Op::SearchEvents,
    Op::AdminTasks,
    Op::SearchTaskErrors,
    Op::EventTasks,
    Op::AuditLog,
    Op::ProcessingSummary,
    Op::ProcessingSeries,
    Op::ProjectionStatus,
    Op::ReprocessEvent,
    Op::RetryTask,
    Op::BulkReprocessPreview,
    Op::RebuildProjection,
    Op::CreateObserver,
    Op::InstitutionSuggestions,
    Op::CancelTask,
    Op::ForceReleaseTask,
    Op::SetTaskPriority,
    Op::PauseTaskKind,
    Op::ResumeTaskKind,
    Op::PausedTaskKinds,
    Op::QueueControlLog,
    Op::ReprocessEventWithPriority,
];

/// Operations whose allowed callers get past authorization and then a refusal of
/// another kind (an unknown task, an unknown projection): the matrix's subject is
/// the authorization, so that code counts as allowed.
fn passes_then(op: Op) -> Option<&'static str> {
    match op {
        Op::RetryTask => Some("NOT_FOUND"),
        Op::RebuildProjection => Some("VALIDATION"),
        _ => None,
    }
}

/// The documented matrix (docs/api.md, "Authorization").
fn expected(op: Op, role: Role) -> Expect {
    use Expect::*;
    use Role::*;
    let public = matches!(
        op,
        Op::SignUp
            | Op::ConfirmSignUp
            | Op::Login
            | Op::RequestPasswordReset
            | Op::ResetPassword
            | Op::ApplyToCourse
    );
    if public {
        return Allowed;
    }
    if role == Anonymous {
        return Unauthenticated;
    }
    match op {
        Op::UpdateOwnUser | Op::Me => Allowed,
        // Self-service reads: one's own, for one's own role only.
        Op::MyGrades | Op::MyEnrollments | Op::MyApplications => match role {
            Student => Allowed,
            _ => Forbidden,
        },
        Op::MyCourses | Op::MyStudents => match role {
            Teacher => Allowed,
            _ => Forbidden,
        },
        Op::RecordExamNote | Op::ChangeExamNote => match role {
            Teacher | Manager | Admin => Allowed,
            _ => Forbidden,
        },
        Op::Campuses => match role {
            Student => Forbidden,
            _ => Allowed,
        },
        // Reads of the staff screens: staff and observers.
        Op::Students
        | Op::Teachers
        | Op::WebhookEndpoints
        | Op::WebhookMessages
        | Op::AdminEvents
        | Op::SearchEvents
        | Op::AdminTasks
        | Op::EventTasks
        | Op::AuditLog
        | Op::ProcessingSummary
        | Op::ProcessingSeries
        | Op::PausedTaskKinds
        | Op::QueueControlLog => match role {
            Manager | Admin | Observer | PlatformObserver => Allowed,
            _ => Forbidden,
        },
        // Error texts and the platform's own state: the platform's operators.
        Op::SearchTaskErrors | Op::ProjectionStatus | Op::InstitutionSuggestions => match role {
            Admin | PlatformObserver => Allowed,
            _ => Forbidden,
        },
        // A kind serves every institution: only admins pause and resume one.
        Op::RebuildProjection | Op::PauseTaskKind | Op::ResumeTaskKind => match role {
            Admin => Allowed,
            _ => Forbidden,
        },
        // Everything else changes state: staff only, never an observer.
        _ => match role {
            Manager | Admin => Allowed,
            _ => Forbidden,
        },
    }
}

struct World {
    admin: Actor,
    a: Institution,
    teacher: Actor,
    student: Actor,
    course: Uuid,
    campus: Uuid,
    /// A password-reset target nobody else uses.
    resettable: Actor,
    /// A user of A that "update another user" targets.
    bystander: Uuid,
    observer: Actor,
    platform_observer: Actor,
    /// An event of A (a campus created).
    event: Uuid,
}

async fn world(server: &TestServer) -> World {
    let admin = server.admin().await;
    let a = server.institution("Escola Matriz").await;
    let m = a.manager.token.as_str();
    let campus = server.campus(m, None).await;
    let course = server.course(m, None, campus).await;
    let (teacher_id, teacher_email) = server.teacher(m, None).await;
    let teacher = server.activate(teacher_id, &teacher_email).await;
    let (student_id, student_email) = server.student(m, None).await;
    let student = server.activate(student_id, &student_email).await;
    // Notes are recorded only for students enrolled in the course.
    server.enroll_email(course, &student_email).await;
    let (resettable_id, resettable_email) = server.student(m, None).await;
    let resettable = server.activate(resettable_id, &resettable_email).await;
    let (bystander, _) = server.student(m, None).await;
    let observer = server.observer(m, None).await;
    let platform_observer = server.observer(&admin.token, None).await;
    let event: Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = 'CampusCreated'
         AND metadata->>'institution_id' = $1 LIMIT 1",
    )
    .bind(a.id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    World {
        observer,
        platform_observer,
        event,
        admin,
        a,
        teacher,
        student,
        course,
        campus,
        resettable,
        bystander,
    }
}

/// A public address, so no resolution is needed and the SSRF check lets it through.
const WEBHOOK_URL: &str = "https://93.184.216.34/hooks/aula";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}@aula.test", Uuid::new_v4().simple())
}

async fn run(server: &TestServer, w: &World, op: Op, role: Role) -> Value {
    let token = match role {
        Role::Anonymous => None,
        Role::Student => Some(w.student.token.as_str()),
        Role::Teacher => Some(w.teacher.token.as_str()),
        Role::Manager => Some(w.a.manager.token.as_str()),
        Role::Admin => Some(w.admin.token.as_str()),
        Role::Observer => Some(w.observer.token.as_str()),
        Role::PlatformObserver => Some(w.platform_observer.token.as_str()),
    };
    // Admins name the institution; everyone else acts on their own.
    let institution = (role == Role::Admin).then_some(w.a.id);
    let m = w.a.manager.token.as_str();
    match op {
        Op::SignUp => {
            server
                .command(token, "signUp", json!({ "email": unique("new") }))
                .await
        }
        Op::ConfirmSignUp => {
            let email = unique("confirm");
            assert_ok(&server.command(None, "signUp", json!({ "email": email })).await);
            let secret = server
                .tokens
                .last(TokenKind::SignUpConfirmation, &email)
                .unwrap();
            server
                .gql(
                    token,
                    "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId } }",
                    json!({ "input": { "email": email, "token": secret, "name": "N",
                        "password": PASSWORD, "institutionName": "Nova" } }),
                )
                .await
        }
        Op::Login => server.login(&w.resettable.email, PASSWORD).await,
        Op::RequestPasswordReset => {
            server
                .gql(
                    token,
                    "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }",
                    json!({ "e": w.resettable.email }),
                )
                .await
        }
        Op::ResetPassword => {
            server
                .gql(
                    None,
                    "mutation($e: String!) { requestPasswordReset(input: { email: $e }) { accepted } }",
                    json!({ "e": w.resettable.email }),
                )
                .await;
            let secret = server
                .tokens
                .last(TokenKind::PasswordReset, &w.resettable.email)
                .unwrap();
            server
                .command(
                    token,
                    "resetPassword",
                    json!({ "email": w.resettable.email, "token": secret, "newPassword": PASSWORD }),
                )
                .await
        }
        Op::ApplyToCourse => {
            server
                .command(
                    token,
                    "applyToCourse",
                    json!({ "courseId": w.course, "name": "Ana", "birthDate": "2005-02-03", "email": unique("apply") }),
                )
                .await
        }
        Op::CreateCampus => {
            server
                .command(
                    token,
                    "createCampus",
                    json!({ "institutionId": institution, "name": format!("C {}", Uuid::new_v4()), "city": "Faro" }),
                )
                .await
        }
        Op::OfferCourse => {
            server
                .command(
                    token,
                    "offerCourse",
                    json!({ "institutionId": institution, "campusId": w.campus, "name": format!("K {}", Uuid::new_v4()), "capacity": 5 }),
                )
                .await
        }
        Op::ChangeCourseCapacity => {
            server
                .command(
                    token,
                    "changeCourseCapacity",
                    json!({ "courseId": w.course, "capacity": 31 }),
                )
                .await
        }
        Op::CreateStudent => {
            server
                .command(
                    token,
                    "createStudent",
                    json!({ "institutionId": institution, "name": "S", "email": unique("s"), "birthDate": "2001-01-01" }),
                )
                .await
        }
        Op::CreateTeacher => {
            server
                .command(
                    token,
                    "createTeacher",
                    json!({ "institutionId": institution, "name": "T", "email": unique("t") }),
                )
                .await
        }
        Op::CancelEnrollment => {
            let application = server.application(w.course).await;
            server.enroll(w.course, application).await;
            server
                .command(
                    token,
                    "cancelEnrollment",
                    json!({ "courseId": w.course, "applicationId": application }),
                )
                .await
        }
        Op::RecordExamNote => {
            server
                .command(
                    token,
                    "recordExamNote",
                    json!({ "courseId": w.course, "studentId": w.student.id, "examName": format!("E {}", Uuid::new_v4()), "note": 5.5, "teacherId": w.teacher.id }),
                )
                .await
        }
        Op::ChangeExamNote => {
            let recorded = server
                .command(
                    Some(m),
                    "recordExamNote",
                    json!({ "courseId": w.course, "studentId": w.student.id, "examName": format!("X {}", Uuid::new_v4()), "note": 4, "teacherId": w.teacher.id }),
                )
                .await;
            let grade = id(&recorded, "recordExamNote");
            server
                .command(
                    token,
                    "changeExamNote",
                    json!({ "examGradeId": grade, "note": 6, "teacherId": w.teacher.id }),
                )
                .await
        }
        Op::UpdateOwnUser => {
            server
                .command(token, "updateUser", json!({ "name": format!("Name {}", Uuid::new_v4().simple()) }))
                .await
        }
        Op::UpdateOtherUser => {
            server
                .command(
                    token,
                    "updateUser",
                    json!({ "userId": w.bystander, "name": format!("Other {}", Uuid::new_v4().simple()) }),
                )
                .await
        }
        Op::DeactivateUser => {
            let (target, _) = server.student(m, None).await;
            server
                .command(
                    token,
                    "deactivateUser",
                    json!({ "userId": target, "reason": "matrix" }),
                )
                .await
        }
        Op::Me => server.gql(token, "{ me { id } }", json!({})).await,
        Op::Students | Op::Teachers => {
            let field = if matches!(op, Op::Students) {
                "students"
            } else {
                "teachers"
            };
            server
                .gql(
                    token,
                    &format!("query($f: PersonFilter) {{ {field}(filter: $f) {{ nodes {{ id }} }} }}"),
                    json!({ "f": { "institutionId": w.a.id } }),
                )
                .await
        }
        Op::MyGrades => server.gql(token, "{ myGrades { id } }", json!({})).await,
        Op::MyEnrollments => {
            server
                .gql(token, "{ myEnrollments { courseId } }", json!({}))
                .await
        }
        Op::MyApplications => server.gql(token, "{ myApplications { id } }", json!({})).await,
        Op::MyCourses => server.gql(token, "{ myCourses { courseId } }", json!({})).await,
        Op::MyStudents => {
            server
                .gql(
                    token,
                    "query($c: UUID!) { myStudents(courseId: $c) { id } }",
                    json!({ "c": w.course }),
                )
                .await
        }
        Op::CreateWebhookEndpoint => {
            server
                .gql(
                    token,
                    "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret endpoint { id } } }",
                    json!({ "input": { "url": WEBHOOK_URL, "institutionId": institution, "eventTypes": ["CampusCreated"] } }),
                )
                .await
        }
        Op::RotateWebhookEndpointSecret => {
            let created = server
                .gql(
                    Some(m),
                    "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id } } }",
                    json!({ "input": { "url": WEBHOOK_URL } }),
                )
                .await;
            let endpoint = created["data"]["createWebhookEndpoint"]["endpoint"]["id"].clone();
            assert!(endpoint.is_string(), "{created}");
            server
                .gql(
                    token,
                    "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id, previousSecretValidForMinutes: 60) { secret } }",
                    json!({ "id": endpoint }),
                )
                .await
        }
        Op::WebhookEndpoints => {
            server
                .gql(
                    token,
                    "query($i: UUID) { webhookEndpoints(institutionId: $i) { id url } }",
                    json!({ "i": institution }),
                )
                .await
        }
        Op::WebhookMessages => {
            server
                .gql(
                    token,
                    "{ webhookMessages(first: 5) { nodes { id } nextCursor } }",
                    json!({}),
                )
                .await
        }
        Op::AdminEvents | Op::SearchEvents => {
            let filter = if matches!(op, Op::SearchEvents) {
                json!({ "institutionId": w.a.id, "search": "Campus" })
            } else {
                json!({ "institutionId": w.a.id })
            };
            server
                .gql(
                    token,
                    "query($f: AdminEventFilter) { adminEvents(filter: $f, first: 5) { nodes { eventId } } }",
                    json!({ "f": filter }),
                )
                .await
        }
        Op::AdminTasks | Op::SearchTaskErrors => {
            let filter = if matches!(op, Op::SearchTaskErrors) {
                json!({ "institutionId": w.a.id, "search": "refused" })
            } else {
                json!({ "institutionId": w.a.id })
            };
            server
                .gql(
                    token,
                    "query($f: AdminTaskFilter) { adminTasks(filter: $f, first: 5) { nodes { id } } }",
                    json!({ "f": filter }),
                )
                .await
        }
        Op::EventTasks => {
            server
                .gql(
                    token,
                    "query($e: UUID!) { eventTasks(eventId: $e) { nodes { id } } }",
                    json!({ "e": w.event }),
                )
                .await
        }
        Op::AuditLog => {
            server
                .gql(
                    token,
                    "query($f: AuditLogFilter) { auditLog(filter: $f, first: 5) { nodes { eventId } } }",
                    json!({ "f": { "institutionId": w.a.id } }),
                )
                .await
        }
        Op::ProcessingSummary => {
            server
                .gql(token, "{ processingSummary { ratePerHourToday institutionId } }", json!({}))
                .await
        }
        Op::ProcessingSeries => {
            server
                .gql(
                    token,
                    "query($i: UUID) { processingSeries(range: LAST_HOUR, institutionId: $i) { width points { at } } }",
                    json!({ "i": w.a.id }),
                )
                .await
        }
        Op::ProjectionStatus => {
            server
                .gql(token, "{ projectionStatus { name } }", json!({}))
                .await
        }
        Op::ReprocessEvent => {
            server
                .gql(
                    token,
                    "mutation($e: UUID!) { reprocessEvent(eventId: $e) { eventId } }",
                    json!({ "e": w.event }),
                )
                .await
        }
        Op::RetryTask => {
            server
                .gql(
                    token,
                    "mutation { retryTask(taskId: \"999999999\") { taskId } }",
                    json!({}),
                )
                .await
        }
        Op::BulkReprocessPreview => {
            server
                .gql(
                    token,
                    "query($f: AdminEventFilter) { bulkReprocessPreview(filter: $f) { count } }",
                    json!({ "f": { "institutionId": w.a.id } }),
                )
                .await
        }
        Op::RebuildProjection => {
            server
                .gql(
                    token,
                    "mutation { rebuildProjection(name: \"no_such_projection\") { name } }",
                    json!({}),
                )
                .await
        }
        Op::CreateObserver => {
            server
                .gql(
                    token,
                    "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
                    json!({ "input": { "institutionId": w.a.id, "name": "Olga Observer", "email": unique("o") } }),
                )
                .await
        }
        Op::InstitutionSuggestions => {
            let short = &w.a.id.to_string()[..8];
            // What it finds is `tests/dashboard_insights.rs`'s (the short-id filter).
            server
                .gql(
                    token,
                    "query($t: String!) { institutionSuggestions(text: $t) { id name } }",
                    json!({ "t": short }),
                )
                .await
        }
        Op::Campuses => {
            server
                .gql(
                    token,
                    "query($i: UUID) { campuses(institutionId: $i) { id } }",
                    json!({ "i": w.a.id }),
                )
                .await
        }
        Op::CancelTask => {
            let task = waiting_task(server, w.a.id).await;
            server
                .gql(
                    token,
                    "mutation($t: BigInt!) { cancelTask(taskId: $t) { status } }",
                    json!({ "t": task.to_string() }),
                )
                .await
        }
        Op::ForceReleaseTask => {
            let task = waiting_task(server, w.a.id).await;
            sqlx::query(
                "UPDATE tasks SET status = 'running', attempt = 1, claimed_at = now(),
                     lease_until = now() + interval '1 hour', worker = 'matrix' WHERE id = $1",
            )
            .bind(task)
            .execute(&server.db.pool)
            .await
            .unwrap();
            server
                .gql(
                    token,
                    "mutation($t: BigInt!) { forceReleaseTask(taskId: $t) { status } }",
                    json!({ "t": task.to_string() }),
                )
                .await
        }
        Op::SetTaskPriority => {
            let task = waiting_task(server, w.a.id).await;
            server
                .gql(
                    token,
                    "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 5) { priority } }",
                    json!({ "t": task.to_string() }),
                )
                .await
        }
        Op::PauseTaskKind | Op::ResumeTaskKind => {
            let field = if matches!(op, Op::PauseTaskKind) {
                "pauseTaskKind"
            } else {
                "resumeTaskKind"
            };
            server
                .gql(
                    token,
                    &format!("mutation {{ {field}(kind: \"demo.seed\") {{ kind changed }} }}"),
                    json!({}),
                )
                .await
        }
        Op::PausedTaskKinds => {
            server
                .gql(token, "{ pausedTaskKinds { kind waiting } }", json!({}))
                .await
        }
        Op::QueueControlLog => {
            server
                .gql(token, "{ queueControlLog(first: 5) { action detail } }", json!({}))
                .await
        }
        Op::ReprocessEventWithPriority => {
            let event: Uuid = sqlx::query_scalar(
                "SELECT event_id FROM events WHERE metadata->>'institution_id' = $1
                 ORDER BY global_position LIMIT 1",
            )
            .bind(w.a.id.to_string())
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
            server
                .gql(
                    token,
                    "mutation($e: UUID!) { reprocessEvent(eventId: $e, priority: 3) { eventId } }",
                    json!({ "e": event }),
                )
                .await
        }
    }
}

/// A pending task of `institution` (the API's tests run no processor, so nothing
/// else claims it).
async fn waiting_task(server: &TestServer, institution: Uuid) -> i64 {
    let mut task = aula_processor::NewTask::new(
        aula_processor::kinds::NOOP,
        format!("matrix:{}", Uuid::new_v4()),
        json!({}),
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn every_role_against_every_operation() {
    // Every role asks for resets of one account: more than the per-account limit.
    let server = TestServer::start_custom(
        |_| {},
        |state| {
            state.with_user_services(aula_domain::user::UserServices {
                max_reset_requests: 100,
                ..Default::default()
            })
        },
    )
    .await;
    let w = world(&server).await;
    let mut failures = Vec::new();
    for op in OPS {
        for role in ROLES {
            let response = run(&server, &w, op, role).await;
            let outcome = match code(&response).as_deref() {
                None => Expect::Allowed,
                Some(other) if passes_then(op) == Some(other) => Expect::Allowed,
                Some("FORBIDDEN") => Expect::Forbidden,
                Some("UNAUTHENTICATED") => Expect::Unauthenticated,
                Some(_) => {
                    failures.push(format!("{op:?} as {role:?}: {response}"));
                    continue;
                }
            };
            if outcome != expected(op, role) {
                failures.push(format!(
                    "{op:?} as {role:?}: expected {:?}, got {response}",
                    expected(op, role)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_of_institution_b_cannot_touch_institution_a() {
    let server = TestServer::start().await;
    let w = world(&server).await;
    let b = server.institution("Escola Rival").await;
    let bm = b.manager.token.as_str();
    let (b_teacher_id, b_teacher_email) = server.teacher(bm, None).await;
    let b_teacher = server.activate(b_teacher_id, &b_teacher_email).await;
    let recorded = server
        .command(
            Some(&w.teacher.token),
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": "Quiz", "note": 7 }),
        )
        .await;
    let a_grade = id(&recorded, "recordExamNote");
    let application = server.application(w.course).await;
    server.enroll(w.course, application).await;

    let attempts: Vec<(&str, &str, Value)> = vec![
        (
            bm,
            "createCampus",
            json!({ "institutionId": w.a.id, "name": "Intruder", "city": "X" }),
        ),
        (
            bm,
            "offerCourse",
            json!({ "institutionId": w.a.id, "campusId": w.campus, "name": "Intruder", "capacity": 3 }),
        ),
        (
            bm,
            "changeCourseCapacity",
            json!({ "courseId": w.course, "capacity": 1 }),
        ),
        (
            bm,
            "createStudent",
            json!({ "institutionId": w.a.id, "name": "I", "email": unique("i"), "birthDate": "2000-01-01" }),
        ),
        (
            bm,
            "createTeacher",
            json!({ "institutionId": w.a.id, "name": "I", "email": unique("i") }),
        ),
        (
            bm,
            "cancelEnrollment",
            json!({ "courseId": w.course, "applicationId": application }),
        ),
        (
            bm,
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": "Hack", "note": 10, "teacherId": b_teacher.id }),
        ),
        (
            &b_teacher.token,
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": "Hack", "note": 10 }),
        ),
        (
            &b_teacher.token,
            "changeExamNote",
            json!({ "examGradeId": a_grade, "note": 10 }),
        ),
        (
            bm,
            "changeExamNote",
            json!({ "examGradeId": a_grade, "note": 10, "teacherId": b_teacher.id }),
        ),
        (
            bm,
            "updateUser",
            json!({ "userId": w.student.id, "name": "Hacked" }),
        ),
        (
            bm,
            "updateUser",
            json!({ "userId": w.admin.id, "name": "Hacked" }),
        ),
        (
            bm,
            "deactivateUser",
            json!({ "userId": w.a.manager.id, "reason": "hostile" }),
        ),
        (
            bm,
            "deactivateUser",
            json!({ "userId": w.admin.id, "reason": "hostile" }),
        ),
    ];
    for (token, mutation, input) in attempts {
        let r = server.command(Some(token), mutation, input.clone()).await;
        assert_eq!(
            code(&r).as_deref(),
            Some("FORBIDDEN"),
            "{mutation} {input}: {r}"
        );
    }
    // Webhooks: B's manager can neither see nor change A's endpoints.
    let created = server
        .gql(
            Some(w.a.manager.token.as_str()),
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { endpoint { id institutionId } } }",
            json!({ "input": { "url": WEBHOOK_URL } }),
        )
        .await;
    let a_endpoint = created["data"]["createWebhookEndpoint"]["endpoint"]["id"].clone();
    assert_eq!(
        created["data"]["createWebhookEndpoint"]["endpoint"]["institutionId"],
        json!(w.a.id)
    );
    for (query, variables) in [
        (
            "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id) { secret } }",
            json!({ "id": a_endpoint }),
        ),
        (
            "mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) }",
            json!({ "id": a_endpoint }),
        ),
        (
            "mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: { enabled: false }) { id } }",
            json!({ "id": a_endpoint }),
        ),
        (
            "query($i: UUID) { webhookEndpoints(institutionId: $i) { id } }",
            json!({ "i": w.a.id }),
        ),
        (
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
            json!({ "input": { "url": WEBHOOK_URL, "institutionId": w.a.id } }),
        ),
    ] {
        let r = server.gql(Some(bm), query, variables.clone()).await;
        assert_code(&r, "FORBIDDEN");
    }
    let listed = server
        .gql(Some(bm), "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(listed["data"]["webhookEndpoints"], json!([]), "{listed}");
    // Queue controls: B's manager cannot touch A's tasks, nor read their audit rows.
    let a_task = waiting_task(&server, w.a.id).await;
    for mutation in [
        "mutation($t: BigInt!) { cancelTask(taskId: $t) { status } }",
        "mutation($t: BigInt!) { forceReleaseTask(taskId: $t) { status } }",
        "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 1) { priority } }",
    ] {
        let r = server
            .gql(Some(bm), mutation, json!({ "t": a_task.to_string() }))
            .await;
        assert_code(&r, "FORBIDDEN");
    }
    let r = server
        .gql(
            Some(&w.a.manager.token),
            "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 1) { priority } }",
            json!({ "t": a_task.to_string() }),
        )
        .await;
    assert_eq!(r["data"]["setTaskPriority"]["priority"], json!(1), "{r}");
    let r = server
        .gql(Some(bm), "{ queueControlLog { taskId } }", json!({}))
        .await;
    assert_eq!(r["data"]["queueControlLog"], json!([]), "{r}");
    // B's teacher recording for A's student on B's own course: still forbidden.
    let b_campus = server.campus(bm, None).await;
    let b_course = server.course(bm, None, b_campus).await;
    let r = server
        .command(
            Some(&b_teacher.token),
            "recordExamNote",
            json!({ "courseId": b_course, "studentId": w.student.id, "examName": "Hack", "note": 10 }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");
    // B's manager using A's campus id inside B's own institution finds nothing.
    let r = server
        .command(
            Some(bm),
            "offerCourse",
            json!({ "campusId": w.campus, "name": "Sneaky", "capacity": 3 }),
        )
        .await;
    assert_code(&r, "NOT_FOUND");
    // B's manager offering A's course (its id is public) on B's own campus: refused, and
    // the course does not become B's, so A's age statistics stay A's.
    let r = server
        .command(
            Some(bm),
            "offerCourse",
            json!({ "courseId": w.course, "campusId": b_campus, "name": "Sneaky", "capacity": 3 }),
        )
        .await;
    assert_code(&r, "CONFLICT");
    let offered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'CourseOffered'",
    )
    .bind(b.id.to_string())
    .fetch_one(&server.db.pool)
    .await
    .unwrap();
    assert_eq!(offered, 1, "only B's own course was offered in B");
    let r = server
        .gql(
            Some(bm),
            "query($ids: [UUID!]) { ageMetrics(scope: COURSE, ids: $ids) { nodes { scopeId } } }",
            json!({ "ids": [w.course] }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");
    let r = server
        .gql(
            Some(bm),
            "query($i: UUID) { campuses(institutionId: $i) { id } }",
            json!({ "i": w.a.id }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");

    // Nothing of A changed: still one campus, the grade and the names as they were.
    let r = server
        .gql(Some(&w.a.manager.token), "{ campuses { id } }", json!({}))
        .await;
    assert_eq!(r["data"]["campuses"].as_array().unwrap().len(), 1);
    let me = server
        .gql(Some(&w.student.token), "{ me { name } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"]["name"], "Sam Student");
    assert_ok(&server.login(&w.a.manager.email, PASSWORD).await);
    // A's own manager can still act on the enrollment B could not cancel.
    let r = server
        .command(
            Some(&w.a.manager.token),
            "cancelEnrollment",
            json!({ "courseId": w.course, "applicationId": application }),
        )
        .await;
    assert_ok(&r);
    server.stop().await;
}

/// Issue #23: an institution's observer reads its institution only, like its manager,
/// and a search cannot reach what its reads withhold (task error texts).
#[tokio::test(flavor = "multi_thread")]
async fn an_observer_of_institution_a_reads_a_only() {
    let server = TestServer::start().await;
    let a = server.institution("Escola Observada").await;
    let b = server.institution("Escola Vizinha").await;
    let observer = server.observer(&a.manager.token, None).await;
    let o = Some(observer.token.as_str());
    for (query, variables) in [
        (
            "query($f: AdminEventFilter) { adminEvents(filter: $f) { nodes { eventId } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        (
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { id } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        (
            "query($i: UUID) { processingSeries(range: LAST_HOUR, institutionId: $i) { width } }",
            json!({ "i": b.id }),
        ),
        (
            "query($f: AdminTaskFilter) { adminTasks(filter: $f) { nodes { id } } }",
            json!({ "f": { "search": "smtp" } }),
        ),
        (
            "query($f: PersonFilter) { students(filter: $f) { nodes { id } } }",
            json!({ "f": { "institutionId": b.id } }),
        ),
        ("{ projectionStatus { name } }", json!({})),
        (
            "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
            json!({ "input": { "name": "Another Observer", "email": unique("o2") } }),
        ),
    ] {
        let r = server.gql(o, query, variables.clone()).await;
        assert_code(&r, "FORBIDDEN");
    }
    // Its own institution: every event listed is A's, and its series is A's.
    let listed = server
        .gql(
            o,
            "{ adminEvents(first: 50) { nodes { institutionId } } }",
            json!({}),
        )
        .await;
    assert_ok(&listed);
    let nodes = listed["data"]["adminEvents"]["nodes"].as_array().unwrap();
    assert!(
        nodes.iter().all(|n| n["institutionId"] == json!(a.id)),
        "{listed}"
    );
    let series = server
        .gql(
            o,
            "{ processingSeries(range: LAST_24_HOURS) { institutionId width points { at } } }",
            json!({}),
        )
        .await;
    assert_ok(&series);
    assert_eq!(
        series["data"]["processingSeries"]["institutionId"],
        json!(a.id)
    );
    assert_eq!(series["data"]["processingSeries"]["width"], "HOUR");
    assert_eq!(
        series["data"]["processingSeries"]["points"]
            .as_array()
            .unwrap()
            .len(),
        24
    );
    // A manager cannot make a platform-wide observer, nor one of another institution.
    let r = server
        .gql(
            Some(&a.manager.token),
            "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
            json!({ "input": { "name": "Sneaky Observer", "email": unique("o3"), "institutionId": b.id } }),
        )
        .await;
    assert_code(&r, "FORBIDDEN");
    server.stop().await;
}
