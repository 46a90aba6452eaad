//! The authorization matrix: every role and anonymous against every operation, as
//! documented in docs/api.md.

use super::*;

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
                    REQUEST_PASSWORD_RESET,
                    json!({ "e": w.resettable.email }),
                )
                .await
        }
        Op::ResetPassword => {
            server
                .gql(
                    None,
                    REQUEST_PASSWORD_RESET,
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
