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

/// What one operation sends with the role's token: a document and its variables, a
/// command and its input, or (logging in needs no token) the answer itself.
enum Call {
    Gql(String, Value),
    Command(&'static str, Value),
    Answered(Value),
}

/// A list filter of institution A, searching for `search` when given.
fn a_filter(w: &World, search: Option<&str>) -> Value {
    let mut filter = json!({ "institutionId": w.a.id });
    if let Some(text) = search {
        filter["search"] = json!(text);
    }
    filter
}

fn gql(query: impl Into<String>, variables: Value) -> Call {
    Call::Gql(query.into(), variables)
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
    let call = match op {
        Op::SignUp => Call::Command("signUp", json!({ "email": unique("new") })),
        Op::ConfirmSignUp => {
            let email = unique("confirm");
            assert_ok(&server.sign_up(&email).await);
            let secret = server
                .tokens
                .last(TokenKind::SignUpConfirmation, &email)
                .unwrap();
            gql(
                "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId } }",
                json!({ "input": { "email": email, "token": secret, "name": "N",
                        "password": PASSWORD, "institutionName": "Nova" } }),
            )
        }
        Op::Login => Call::Answered(server.login(&w.resettable.email, PASSWORD).await),
        Op::RequestPasswordReset => gql(REQUEST_PASSWORD_RESET, json!({ "e": w.resettable.email })),
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
            Call::Command(
                "resetPassword",
                json!({ "email": w.resettable.email, "token": secret, "newPassword": PASSWORD }),
            )
        }
        Op::ApplyToCourse => Call::Command(
            "applyToCourse",
            json!({ "courseId": w.course, "name": "Ana", "birthDate": "2005-02-03", "email": unique("apply") }),
        ),
        Op::CreateCampus => Call::Command(
            "createCampus",
            json!({ "institutionId": institution, "name": format!("C {}", Uuid::new_v4()), "city": "Faro" }),
        ),
        Op::OfferCourse => Call::Command(
            "offerCourse",
            json!({ "institutionId": institution, "campusId": w.campus, "name": format!("K {}", Uuid::new_v4()), "capacity": 5 }),
        ),
        Op::ChangeCourseCapacity => Call::Command(
            "changeCourseCapacity",
            json!({ "courseId": w.course, "capacity": 31 }),
        ),
        Op::CreateStudent => Call::Command(
            "createStudent",
            json!({ "institutionId": institution, "name": "S", "email": unique("s"), "birthDate": "2001-01-01" }),
        ),
        Op::CreateTeacher => Call::Command(
            "createTeacher",
            json!({ "institutionId": institution, "name": "T", "email": unique("t") }),
        ),
        Op::CancelEnrollment => {
            let application = server.application(w.course).await;
            server.enroll(w.course, application).await;
            Call::Command(
                "cancelEnrollment",
                json!({ "courseId": w.course, "applicationId": application }),
            )
        }
        Op::RecordExamNote => Call::Command(
            "recordExamNote",
            json!({ "courseId": w.course, "studentId": w.student.id, "examName": format!("E {}", Uuid::new_v4()), "note": 5.5, "teacherId": w.teacher.id }),
        ),
        Op::ChangeExamNote => {
            let recorded = server
                .command(
                    Some(m),
                    "recordExamNote",
                    json!({ "courseId": w.course, "studentId": w.student.id, "examName": format!("X {}", Uuid::new_v4()), "note": 4, "teacherId": w.teacher.id }),
                )
                .await;
            let grade = id(&recorded, "recordExamNote");
            Call::Command(
                "changeExamNote",
                json!({ "examGradeId": grade, "note": 6, "teacherId": w.teacher.id }),
            )
        }
        Op::UpdateOwnUser => Call::Command(
            "updateUser",
            json!({ "name": format!("Name {}", Uuid::new_v4().simple()) }),
        ),
        Op::UpdateOtherUser => Call::Command(
            "updateUser",
            json!({ "userId": w.bystander, "name": format!("Other {}", Uuid::new_v4().simple()) }),
        ),
        Op::DeactivateUser => {
            let (target, _) = server.student(m, None).await;
            Call::Command(
                "deactivateUser",
                json!({ "userId": target, "reason": "matrix" }),
            )
        }
        Op::Me => gql("{ me { id } }", json!({})),
        Op::Students | Op::Teachers => {
            let field = if matches!(op, Op::Students) {
                "students"
            } else {
                "teachers"
            };
            gql(
                format!("query($f: PersonFilter) {{ {field}(filter: $f) {{ nodes {{ id }} }} }}"),
                json!({ "f": a_filter(w, None) }),
            )
        }
        Op::MyGrades => gql("{ myGrades { id } }", json!({})),
        Op::MyEnrollments => gql("{ myEnrollments { courseId } }", json!({})),
        Op::MyApplications => gql("{ myApplications { id } }", json!({})),
        Op::MyCourses => gql("{ myCourses { courseId } }", json!({})),
        Op::MyStudents => gql(
            "query($c: UUID!) { myStudents(courseId: $c) { id } }",
            json!({ "c": w.course }),
        ),
        Op::CreateWebhookEndpoint => gql(
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret endpoint { id } } }",
            json!({ "input": { "url": WEBHOOK_URL, "institutionId": institution, "eventTypes": ["CampusCreated"] } }),
        ),
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
            gql(
                "mutation($id: UUID!) { rotateWebhookEndpointSecret(id: $id, previousSecretValidForMinutes: 60) { secret } }",
                json!({ "id": endpoint }),
            )
        }
        Op::WebhookEndpoints => gql(
            "query($i: UUID) { webhookEndpoints(institutionId: $i) { id url } }",
            json!({ "i": institution }),
        ),
        Op::WebhookMessages => gql(
            "{ webhookMessages(first: 5) { nodes { id } nextCursor } }",
            json!({}),
        ),
        Op::AdminEvents | Op::SearchEvents => gql(
            "query($f: AdminEventFilter) { adminEvents(filter: $f, first: 5) { nodes { eventId } } }",
            json!({ "f": a_filter(w, matches!(op, Op::SearchEvents).then_some("Campus")) }),
        ),
        Op::AdminTasks | Op::SearchTaskErrors => gql(
            "query($f: AdminTaskFilter) { adminTasks(filter: $f, first: 5) { nodes { id } } }",
            json!({ "f": a_filter(w, matches!(op, Op::SearchTaskErrors).then_some("refused")) }),
        ),
        Op::EventTasks => gql(
            "query($e: UUID!) { eventTasks(eventId: $e) { nodes { id } } }",
            json!({ "e": w.event }),
        ),
        Op::AuditLog => gql(
            "query($f: AuditLogFilter) { auditLog(filter: $f, first: 5) { nodes { eventId } } }",
            json!({ "f": a_filter(w, None) }),
        ),
        Op::ProcessingSummary => gql(
            "{ processingSummary { ratePerHourToday institutionId } }",
            json!({}),
        ),
        Op::ProcessingSeries => gql(
            "query($i: UUID) { processingSeries(range: LAST_HOUR, institutionId: $i) { width points { at } } }",
            json!({ "i": w.a.id }),
        ),
        Op::ProjectionStatus => gql("{ projectionStatus { name } }", json!({})),
        Op::ReprocessEvent => gql(
            "mutation($e: UUID!) { reprocessEvent(eventId: $e) { eventId } }",
            json!({ "e": w.event }),
        ),
        Op::RetryTask => gql("mutation { retryTask(taskId: \"999999999\") { taskId } }", json!({})),
        Op::BulkReprocessPreview => gql(
            "query($f: AdminEventFilter) { bulkReprocessPreview(filter: $f) { count } }",
            json!({ "f": a_filter(w, None) }),
        ),
        Op::RebuildProjection => gql(
            "mutation { rebuildProjection(name: \"no_such_projection\") { name } }",
            json!({}),
        ),
        Op::CreateObserver => gql(
            "mutation($input: CreateObserverInput!) { createObserver(input: $input) { id } }",
            json!({ "input": { "institutionId": w.a.id, "name": "Olga Observer", "email": unique("o") } }),
        ),
        Op::InstitutionSuggestions => {
            let short = &w.a.id.to_string()[..8];
            // What it finds is `tests/dashboard_insights.rs`'s (the short-id filter).
            gql(
                "query($t: String!) { institutionSuggestions(text: $t) { id name } }",
                json!({ "t": short }),
            )
        }
        Op::Campuses => gql(
            "query($i: UUID) { campuses(institutionId: $i) { id } }",
            json!({ "i": w.a.id }),
        ),
        Op::CancelTask => {
            let task = waiting_task(server, w.a.id).await;
            gql(
                "mutation($t: BigInt!) { cancelTask(taskId: $t) { status } }",
                json!({ "t": task.to_string() }),
            )
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
            gql(
                "mutation($t: BigInt!) { forceReleaseTask(taskId: $t) { status } }",
                json!({ "t": task.to_string() }),
            )
        }
        Op::SetTaskPriority => {
            let task = waiting_task(server, w.a.id).await;
            gql(
                "mutation($t: BigInt!) { setTaskPriority(taskId: $t, priority: 5) { priority } }",
                json!({ "t": task.to_string() }),
            )
        }
        Op::PauseTaskKind | Op::ResumeTaskKind => {
            let field = if matches!(op, Op::PauseTaskKind) {
                "pauseTaskKind"
            } else {
                "resumeTaskKind"
            };
            gql(
                format!("mutation {{ {field}(kind: \"demo.seed\") {{ kind changed }} }}"),
                json!({}),
            )
        }
        Op::PausedTaskKinds => gql("{ pausedTaskKinds { kind waiting } }", json!({})),
        Op::QueueControlLog => gql("{ queueControlLog(first: 5) { action detail } }", json!({})),
        Op::ReprocessEventWithPriority => {
            let event: Uuid = sqlx::query_scalar(
                "SELECT event_id FROM events WHERE metadata->>'institution_id' = $1
                 ORDER BY global_position LIMIT 1",
            )
            .bind(w.a.id.to_string())
            .fetch_one(&server.db.pool)
            .await
            .unwrap();
            gql(
                "mutation($e: UUID!) { reprocessEvent(eventId: $e, priority: 3) { eventId } }",
                json!({ "e": event }),
            )
        }
    };
    match call {
        Call::Gql(query, variables) => server.gql(token, &query, variables).await,
        Call::Command(name, input) => server.command(token, name, input).await,
        Call::Answered(answer) => answer,
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
