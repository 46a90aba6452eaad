//! The authorization matrix (every role and anonymous against every operation, as in
//! docs/api.md) and institution isolation.

use crate::common;

use aula_api::TokenKind;
use common::*;
use serde_json::{json, Value};
use uuid::Uuid;

mod isolation;
mod matrix;

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
    let (campus, course) = server.campus_with_course(m).await;
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

/// A pending task of `institution` (the API's tests run no processor, so nothing
/// else claims it).
async fn waiting_task(server: &TestServer, institution: Uuid) -> i64 {
    insert_waiting_task(server, aula_processor::kinds::NOOP, "matrix", institution).await
}
