//! End to end: command -> event -> reaction issues tasks -> worker runs them -> e-mail
//! or notification. One test per reaction, against a real PostgreSQL.

use crate::common;

use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::exam_grade::{ExamGrade, ExamGradeCommand, ExamGradeServices};
use aula_domain::institution::{Institution, InstitutionCommand, InstitutionServices};
use aula_domain::student::{Student, StudentCommand, StudentServices};
use aula_domain::teacher::{Teacher, TeacherCommand, TeacherServices};
use aula_domain::user::{Role, User, UserCommand, UserServices};
use aula_domain::values::*;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use aula_processor::handlers::notify::{create_broadcast, Audience};
use chrono::{Duration, NaiveDate, Utc};
use common::*;
use sqlx::PgPool;
use uuid::Uuid;

fn bus<A>(pool: &PgPool, services: A::Services) -> CommandBus<A>
where
    A: cqrs_es::Aggregate + Clone + 'static,
    A::Command: Clone,
{
    CommandBus::with_upcasters(pool.clone(), services, aula_domain::upcasters())
}

fn meta(institution: Option<Uuid>) -> EventMetadata {
    EventMetadata::new(Actor::System, institution)
}

async fn event_id_of(pool: &PgPool, event_type: &str, aggregate_id: &str) -> Uuid {
    sqlx::query_scalar(
        "SELECT event_id FROM events WHERE event_type = $1 AND aggregate_id = $2 ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .bind(aggregate_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn task_status(pool: &PgPool, event_id: Uuid, kind: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT status FROM tasks WHERE event_id = $1 AND kind = $2 AND origin_task_id IS NULL",
    )
    .bind(event_id)
    .bind(kind)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn wait_task_succeeded(pool: &PgPool, event_id: Uuid, kind: &str) {
    eventually(&format!("{kind} for {event_id} to succeed"), || async {
        (task_status(pool, event_id, kind).await.as_deref() == Some("succeeded")).then_some(())
    })
    .await
}

/// An institution with one campus and one course of `capacity` seats.
struct School {
    institution: InstitutionId,
    course: CourseId,
}

async fn school(pool: &PgPool, capacity: u32) -> School {
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let campus = CampusId::from_uuid(Uuid::new_v4());
    let course = CourseId::from_uuid(Uuid::new_v4());
    let m = meta(Some(institution.as_uuid()));
    let institutions = bus::<Institution>(pool, InstitutionServices);
    let id = institution.to_string();
    institutions
        .execute(
            &id,
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Escola Teste").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &m,
        )
        .await
        .unwrap();
    institutions
        .execute(
            &id,
            InstitutionCommand::CreateCampus {
                campus_id: campus,
                name: CampusName::parse("Centro").unwrap(),
                city: CityName::parse("Recife").unwrap(),
            },
            &m,
        )
        .await
        .unwrap();
    let name = CourseName::parse("Física I").unwrap();
    let capacity = Capacity::new(capacity).unwrap();
    institutions
        .execute(
            &id,
            InstitutionCommand::OfferCourse {
                course_id: course,
                campus_id: campus,
                name: name.clone(),
                capacity,
            },
            &m,
        )
        .await
        .unwrap();
    bus::<Course>(pool, CourseServices)
        .execute(
            &course.to_string(),
            CourseCommand::OpenCourse {
                institution_id: institution,
                campus_id: campus,
                name,
                capacity,
            },
            &m,
        )
        .await
        .unwrap();
    School {
        institution,
        course,
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_sends_the_confirmation_link_with_the_stashed_token() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let user = Uuid::new_v4();
    let raw = "raw-token_ABC";
    let hash = "hash-of-raw-token";
    let expires_at = Utc::now() + Duration::hours(1);
    // The token is stashed only after the event: the task retries until it is there.
    bus::<User>(&db.pool, UserServices::default())
        .execute(
            &user.to_string(),
            UserCommand::SignUp {
                email: Email::parse("new@example.org").unwrap(),
                confirmation_token_hash: hash.into(),
                expires_at,
                now: Utc::now(),
            },
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "PendingUserRegisterCreated", &user.to_string()).await;
    eventually("a failed attempt while the token is missing", || async {
        let failures = scalar_i64(
            &db.pool,
            "SELECT count(*) FROM task_attempts WHERE outcome = 'retry'",
        )
        .await;
        (failures > 0).then_some(())
    })
    .await;
    aula_processor::stash_token(&db.pool, hash, raw, expires_at)
        .await
        .unwrap();
    wait_task_succeeded(&db.pool, event, "email.signup_confirmation").await;

    let sent = mailer.to("new@example.org");
    assert_eq!(sent.len(), 1);
    let expected_link =
        format!("https://aula.test/confirm-sign-up?user={user}&token=raw-token_ABC");
    assert!(sent[0].text.contains(&expected_link), "{}", sent[0].text);
    assert!(
        sent[0].html.contains(&expected_link.replace('&', "&amp;")),
        "{}",
        sent[0].html
    );
    assert_eq!(
        scalar_i64(&db.pool, "SELECT count(*) FROM pending_tokens").await,
        0,
        "the raw token is deleted once sent"
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM outbox_emails WHERE kind = 'email.signup_confirmation'"
        )
        .await,
        1
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_that_was_never_stashed_fails_permanently() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let user = Uuid::new_v4();
    let users = bus::<User>(&db.pool, UserServices::default());
    let now = Utc::now();
    // Signed up a while ago with a token that expires almost at once.
    users
        .execute(
            &user.to_string(),
            UserCommand::SignUp {
                email: Email::parse("late@example.org").unwrap(),
                confirmation_token_hash: "h".into(),
                expires_at: now + Duration::milliseconds(1),
                now: now - Duration::seconds(1),
            },
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "PendingUserRegisterCreated", &user.to_string()).await;
    eventually("the task to fail", || async {
        (task_status(&db.pool, event, "email.signup_confirmation")
            .await
            .as_deref()
            == Some("failed"))
        .then_some(())
    })
    .await;
    let error: String = sqlx::query_scalar("SELECT last_error FROM tasks WHERE event_id = $1")
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(error.contains("expired"), "{error}");
    assert!(mailer.sent().is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn password_reset_emails_the_link_to_the_users_address() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let user = Uuid::new_v4().to_string();
    let users = bus::<User>(&db.pool, UserServices::default());
    users
        .execute(
            &user,
            UserCommand::CreateUser {
                email: Email::parse("teacher@example.org").unwrap(),
                name: PersonName::parse("Ada").unwrap(),
                role: Role::Teacher,
                institution_id: Some(InstitutionId::from_uuid(Uuid::new_v4())),
                password_hash: Some("x".into()),
            },
            &meta(None),
        )
        .await
        .unwrap();
    aula_processor::stash_token(
        &db.pool,
        "reset-hash",
        "reset-raw",
        Utc::now() + Duration::hours(1),
    )
    .await
    .unwrap();
    users
        .execute(
            &user,
            UserCommand::RequestPasswordReset {
                token_hash: "reset-hash".into(),
                now: Utc::now(),
            },
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "ResetPasswordTokenCreated", &user).await;
    wait_task_succeeded(&db.pool, event, "email.password_reset").await;
    let sent = mailer.to("teacher@example.org");
    assert_eq!(sent.len(), 1);
    assert!(sent[0]
        .text
        .contains("https://aula.test/reset-password?token=reset-raw"));
    assert_eq!(sent[0].subject, "Reset your Aula password");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_change_sends_the_link_to_the_new_address_and_a_notice_to_the_old() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let user = Uuid::new_v4().to_string();
    let users = bus::<User>(&db.pool, UserServices::default());
    users
        .execute(
            &user,
            UserCommand::CreateUser {
                email: Email::parse("old@example.org").unwrap(),
                name: PersonName::parse("Ada").unwrap(),
                role: Role::Teacher,
                institution_id: Some(InstitutionId::from_uuid(Uuid::new_v4())),
                password_hash: Some("x".into()),
            },
            &meta(None),
        )
        .await
        .unwrap();
    aula_processor::stash_token(
        &db.pool,
        "change-hash",
        "change-raw",
        Utc::now() + Duration::hours(24),
    )
    .await
    .unwrap();
    users
        .execute(
            &user,
            UserCommand::RequestEmailChange {
                new_email: Email::parse("new.address@example.net").unwrap(),
                token_hash: "change-hash".into(),
                now: Utc::now(),
                by_owner: true,
            },
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "EmailChangeRequested", &user).await;
    wait_task_succeeded(&db.pool, event, "email.email_change_confirmation").await;
    wait_task_succeeded(&db.pool, event, "email.email_change_notice").await;
    let link = mailer.to("new.address@example.net");
    assert_eq!(link.len(), 1);
    assert!(
        link[0].text.contains(&format!(
            "https://aula.test/confirm-email?user={user}&token=change-raw"
        )),
        "{}",
        link[0].text
    );
    let notice = mailer.to("old@example.org");
    assert_eq!(notice.len(), 1);
    assert!(
        notice[0].text.contains("n***@example.net"),
        "{}",
        notice[0].text
    );
    assert!(!notice[0].text.contains("change-raw"));
    running.stop().await;
}

/// The last `RegisteredEmailSignUpAttempted` of `user`, once its task has succeeded.
async fn registered_sign_up_handled(pool: &PgPool, user: &str) -> Uuid {
    let event: Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events
         WHERE event_type = 'RegisteredEmailSignUpAttempted' AND aggregate_id = $1
         ORDER BY global_position DESC LIMIT 1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap();
    wait_task_succeeded(pool, event, "email.already_registered").await;
    event
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_up_with_a_registered_email_tells_the_active_owner_once_an_hour_and_nobody_else() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let users = bus::<User>(&db.pool, UserServices::default());
    let create = |address: &str| UserCommand::CreateUser {
        email: Email::parse(address).unwrap(),
        name: PersonName::parse("Olga").unwrap(),
        role: Role::Manager,
        institution_id: Some(InstitutionId::from_uuid(Uuid::new_v4())),
        password_hash: Some("x".into()),
    };
    let sign_up = |address: &str| UserCommand::SignUp {
        email: Email::parse(address).unwrap(),
        confirmation_token_hash: format!("h-{}", Uuid::new_v4()),
        expires_at: Utc::now() + Duration::hours(1),
        now: Utc::now(),
    };

    let (owner, address) = (Uuid::new_v4().to_string(), "owner@example.org");
    users
        .execute(&owner, create(address), &meta(None))
        .await
        .unwrap();
    users
        .execute(&owner, sign_up(address), &meta(None))
        .await
        .unwrap();
    let first = registered_sign_up_handled(&db.pool, &owner).await;
    let sent = mailer.to(address);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].subject, "You already have an Aula account");
    assert!(
        sent[0].text.contains("https://aula.test/"),
        "{}",
        sent[0].text
    );
    assert!(!sent[0].text.contains("token="), "{}", sent[0].text);
    // Again within the hour: recorded, its task succeeds, no second e-mail.
    users
        .execute(&owner, sign_up(address), &meta(None))
        .await
        .unwrap();
    let second = registered_sign_up_handled(&db.pool, &owner).await;
    assert_ne!(first, second);
    assert_eq!(mailer.to(address).len(), 1);

    // A deactivated account's owner gets nothing.
    let (gone, gone_address) = (Uuid::new_v4().to_string(), "gone@example.org");
    users
        .execute(&gone, create(gone_address), &meta(None))
        .await
        .unwrap();
    users
        .execute(
            &gone,
            UserCommand::DeactivateUser {
                reason: "left".into(),
            },
            &meta(None),
        )
        .await
        .unwrap();
    users
        .execute(&gone, sign_up(gone_address), &meta(None))
        .await
        .unwrap();
    registered_sign_up_handled(&db.pool, &gone).await;
    assert!(mailer.to(gone_address).is_empty());
    running.stop().await;
}

/// The API confirms a sign-up with two commands (user, then institution). Here the
/// caller stops after the first, as a crashed API would: the institution is created
/// anyway, once, from the user's `SignUpConfirmed`.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_sign_up_gets_its_institution_even_if_the_caller_stopped_halfway() {
    let db = TestDatabase::new().await;
    let (running, _mailer) = start_standard(&db).await;
    let user = Uuid::new_v4();
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let users = bus::<User>(&db.pool, UserServices::default());
    let now = Utc::now();
    users
        .execute(
            &user.to_string(),
            UserCommand::SignUp {
                email: Email::parse("founder@example.org").unwrap(),
                confirmation_token_hash: "h".into(),
                expires_at: now + Duration::hours(1),
                now,
            },
            &meta(None),
        )
        .await
        .unwrap();
    users
        .execute(
            &user.to_string(),
            UserCommand::ConfirmSignUp {
                token_hash: "h".into(),
                name: PersonName::parse("Flora").unwrap(),
                password_hash: "x".into(),
                institution_id: institution,
                institution_name: InstitutionName::parse("Escola Fénix").unwrap(),
                now,
            },
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "SignUpConfirmed", &user.to_string()).await;
    wait_task_succeeded(&db.pool, event, "institution.create").await;

    let (institution_state, _) = bus::<Institution>(&db.pool, InstitutionServices)
        .load(&institution.to_string())
        .await
        .unwrap();
    assert_eq!(
        institution_state.name().map(|n| n.as_str()),
        Some("Escola Fénix")
    );
    assert_eq!(
        institution_state.manager_user_id(),
        Some(UserId::from_uuid(user))
    );
    // A second run (a retry, or a reprocessed copy) finds it there and succeeds.
    let again = aula_processor::reprocess_event(&db.pool, event, Actor::System)
        .await
        .unwrap();
    wait_task_succeeded(&db.pool, again.event_id, "institution.create").await;
    // Reprocessed with a priority: the copy's tasks run at it, not at their kind's.
    let urgent =
        aula_processor::reprocess_event_with_priority(&db.pool, event, Actor::System, Some(3))
            .await
            .unwrap();
    wait_task_succeeded(&db.pool, urgent.event_id, "institution.create").await;
    assert_eq!(
        scalar_i64(
            &db.pool,
            &format!(
                "SELECT priority::bigint FROM tasks WHERE event_id = '{}'",
                urgent.event_id
            )
        )
        .await,
        3
    );
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM events WHERE event_type = 'InstitutionCreated'"
        )
        .await,
        1
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn applications_are_scheduled_decided_and_answered_without_exceeding_capacity() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let school = school(&db.pool, 2).await;
    let courses = bus::<Course>(&db.pool, CourseServices);
    let applicants = [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
        "e@example.org",
    ];
    for email in applicants {
        courses
            .execute(
                &school.course.to_string(),
                CourseCommand::RequestEnrollment {
                    application_id: ApplicationId::from_uuid(Uuid::new_v4()),
                    name: PersonName::parse("Applicant").unwrap(),
                    birth_date: BirthDate::parse(
                        NaiveDate::from_ymd_opt(2005, 5, 5).unwrap(),
                        today(),
                    )
                    .unwrap(),
                    email: Email::parse(email).unwrap(),
                    requested_at: Utc::now(),
                },
                &meta(Some(school.institution.as_uuid())),
            )
            .await
            .unwrap();
    }
    eventually("two e-mails per applicant", || async {
        (applicants.iter().all(|a| mailer.to(a).len() == 2)).then_some(())
    })
    .await;
    let sent = mailer.sent();
    let count = |prefix: &str| {
        sent.iter()
            .filter(|m| m.subject.starts_with(prefix))
            .count()
    };
    assert_eq!(count("Your application to Física I was scheduled"), 5);
    assert_eq!(count("You are enrolled in Física I"), 2);
    assert_eq!(count("Your application to Física I was declined"), 3);
    assert!(sent
        .iter()
        .filter(|m| m.subject.contains("declined"))
        .all(|m| m.text.contains("the class is full")));
    let (course, _) = courses.load(&school.course.to_string()).await.unwrap();
    assert_eq!(course.enrolled_count(), 2);
    // The decisions name their cause: the EnrollmentRequested events.
    let caused: i64 = scalar_i64(&db.pool, "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined') AND metadata->>'causation_id' LIKE 'event:%'").await;
    assert_eq!(caused, 5);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submitted_applications_are_decided_in_commit_order_and_a_cancellation_is_emailed() {
    use aula_domain::application::{application_id_for, Application, ApplicationCommand};
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let school = school(&db.pool, 2).await;
    let applications = bus::<Application>(&db.pool, Default::default());
    let courses = bus::<Course>(&db.pool, CourseServices);
    let applicants = ["f@example.org", "g@example.org", "h@example.org"];
    let mut ids = Vec::new();
    for email in applicants {
        let email = Email::parse(email).unwrap();
        let id = application_id_for(school.course, &email);
        applications
            .execute(
                &id.to_string(),
                ApplicationCommand::SubmitApplication {
                    course_id: school.course,
                    institution_id: school.institution,
                    name: PersonName::parse("Applicant").unwrap(),
                    birth_date: BirthDate::parse(
                        NaiveDate::from_ymd_opt(2005, 5, 5).unwrap(),
                        today(),
                    )
                    .unwrap(),
                    email,
                    requested_at: Utc::now(),
                    idempotency_key: None,
                },
                &meta(Some(school.institution.as_uuid())),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    eventually("two e-mails per applicant", || async {
        (applicants.iter().all(|a| mailer.to(a).len() == 2)).then_some(())
    })
    .await;
    // Committed one after the other: the first two got the seats.
    for (email, seated) in applicants.iter().zip([true, true, false]) {
        let subjects: Vec<String> = mailer.to(email).into_iter().map(|m| m.subject).collect();
        assert!(subjects.contains(&"Your application to Física I was scheduled".to_owned()));
        let expected = if seated {
            "You are enrolled in Física I"
        } else {
            "Your application to Física I was declined"
        };
        assert!(
            subjects.contains(&expected.to_owned()),
            "{email}: {subjects:?}"
        );
    }
    // No enrollment.decide task: the admissions decided, naming the application as cause.
    assert_eq!(
        scalar_i64(
            &db.pool,
            "SELECT count(*) FROM tasks WHERE kind = 'enrollment.decide'"
        )
        .await,
        0
    );
    let caused: i64 = scalar_i64(&db.pool, "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined') AND metadata->>'causation_id' LIKE 'event:%'").await;
    assert_eq!(caused, 3);

    courses
        .execute(
            &school.course.to_string(),
            CourseCommand::CancelEnrollment {
                application_id: ids[0],
                at: Utc::now(),
            },
            &meta(Some(school.institution.as_uuid())),
        )
        .await
        .unwrap();
    eventually("the cancellation e-mail", || async {
        (mailer.to(applicants[0]).len() == 3).then_some(())
    })
    .await;
    let cancelled = mailer.to(applicants[0]).pop().unwrap();
    assert_eq!(
        cancelled.subject,
        "Your enrollment in Física I was cancelled"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_student_gets_a_welcome_email_and_the_broadcasts_for_all_students() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let institution = Uuid::new_v4();
    let broadcast = create_broadcast(
        &db.pool,
        "b1",
        institution,
        Audience::AllStudents,
        "Welcome week",
        "Monday 9h",
        &[],
    )
    .await
    .unwrap();
    let other = create_broadcast(
        &db.pool,
        "b2",
        Uuid::new_v4(),
        Audience::AllStudents,
        "Other school",
        "-",
        &[],
    )
    .await
    .unwrap();
    let teachers_only = create_broadcast(
        &db.pool,
        "b3",
        institution,
        Audience::AllTeachers,
        "Staff meeting",
        "-",
        &[],
    )
    .await
    .unwrap();
    let student = Uuid::new_v4();
    bus::<Student>(&db.pool, StudentServices)
        .execute(
            &student.to_string(),
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Bia Nunes").unwrap(),
                email: Email::parse("bia@example.org").unwrap(),
                birth_date: BirthDate::parse(NaiveDate::from_ymd_opt(2004, 1, 1).unwrap(), today())
                    .unwrap(),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "StudentCreated", &student.to_string()).await;
    wait_task_succeeded(&db.pool, event, "notification.link_student").await;
    wait_task_succeeded(&db.pool, event, "email.welcome").await;
    let linked: Vec<i64> = sqlx::query_scalar(
        "SELECT notification_id FROM notification_recipients WHERE recipient_id = $1",
    )
    .bind(student)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(linked, vec![broadcast]);
    assert!(!linked.contains(&other) && !linked.contains(&teachers_only));
    let welcome = mailer.to("bia@example.org");
    assert_eq!(welcome.len(), 1);
    assert_eq!(welcome[0].subject, "Welcome to Aula, Bia Nunes");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_teacher_is_linked_to_the_broadcasts_for_all_teachers() {
    let db = TestDatabase::new().await;
    let (running, _mailer) = start_standard(&db).await;
    let institution = Uuid::new_v4();
    let broadcast = create_broadcast(
        &db.pool,
        "t1",
        institution,
        Audience::AllTeachers,
        "Staff meeting",
        "Friday",
        &[],
    )
    .await
    .unwrap();
    create_broadcast(
        &db.pool,
        "s1",
        institution,
        Audience::AllStudents,
        "Students only",
        "-",
        &[],
    )
    .await
    .unwrap();
    let teacher = Uuid::new_v4();
    bus::<Teacher>(&db.pool, TeacherServices)
        .execute(
            &teacher.to_string(),
            TeacherCommand::CreateTeacher {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Paulo Freire").unwrap(),
                email: Email::parse("paulo@example.org").unwrap(),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "TeacherCreated", &teacher.to_string()).await;
    wait_task_succeeded(&db.pool, event, "notification.link_teacher").await;
    let linked: Vec<(i64, String)> = sqlx::query_as("SELECT notification_id, recipient_type FROM notification_recipients WHERE recipient_id = $1")
        .bind(teacher)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(linked, vec![(broadcast, "teacher".to_owned())]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grades_notify_the_student_once_per_event() {
    let db = TestDatabase::new().await;
    let (running, _mailer) = start_standard(&db).await;
    let school = school(&db.pool, 10).await;
    let student = StudentId::from_uuid(Uuid::new_v4());
    let grade = Uuid::new_v4().to_string();
    let grades = bus::<ExamGrade>(&db.pool, ExamGradeServices);
    let teacher = TeacherId::from_uuid(Uuid::new_v4());
    let m = meta(Some(school.institution.as_uuid()));
    grades
        .execute(
            &grade,
            ExamGradeCommand::RecordNote {
                institution_id: school.institution,
                course_id: school.course,
                student_id: student,
                teacher_id: teacher,
                exam_name: ExamName::parse("Midterm").unwrap(),
                note: GradeNote::parse("7.5").unwrap(),
                at: Utc::now(),
            },
            &m,
        )
        .await
        .unwrap();
    grades
        .execute(
            &grade,
            ExamGradeCommand::ChangeNote {
                note: GradeNote::parse("8").unwrap(),
                teacher_id: teacher,
                at: Utc::now(),
            },
            &m,
        )
        .await
        .unwrap();
    let added = event_id_of(&db.pool, "ExamGradeNoteAdded", &grade).await;
    let changed = event_id_of(&db.pool, "ExamGradeNoteChanged", &grade).await;
    wait_task_succeeded(&db.pool, added, "notification.grade").await;
    wait_task_succeeded(&db.pool, changed, "notification.grade").await;
    let notifications: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT n.title, n.body, r.recipient_id FROM notifications n
         LEFT JOIN notification_recipients r ON r.notification_id = n.id ORDER BY n.body",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        notifications,
        vec![
            (
                "New grade in Física I".to_owned(),
                "Midterm: 7.50".to_owned(),
                Some(student.as_uuid())
            ),
            (
                "Grade changed in Física I".to_owned(),
                "Midterm: 8.00".to_owned(),
                Some(student.as_uuid())
            ),
        ]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_institution_is_seeded_with_demo_data_through_real_commands() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let institution = Uuid::new_v4();
    bus::<Institution>(&db.pool, InstitutionServices)
        .execute(
            &institution.to_string(),
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Demo College").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "InstitutionCreated", &institution.to_string()).await;
    wait_task_succeeded(&db.pool, event, "demo.seed").await;
    let count = |event_type: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = $1 AND metadata->>'institution_id' = $2")
                .bind(event_type)
                .bind(institution.to_string())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("CampusCreated").await, 2);
    assert_eq!(count("CourseOpened").await, 3);
    assert_eq!(count("StudentCreated").await, 4);
    assert_eq!(count("TeacherCreated").await, 2);
    assert_eq!(count("EnrollmentRequested").await, 7);
    assert_eq!(count("ExamGradeNoteAdded").await, 4);
    // The seeded applications are decided by the processor: 3 seats for 5 applicants
    // in the first course, 2 of 2 in the second.
    eventually("the seeded applications to be decided", || async {
        let enrolled = count("StudentEnrolled").await;
        let declined = count("EnrollmentDeclined").await;
        (enrolled + declined == 7).then_some(())
    })
    .await;
    assert_eq!(count("StudentEnrolled").await, 5);
    assert_eq!(count("EnrollmentDeclined").await, 2);
    eventually("the declined e-mails", || async {
        (mailer
            .sent()
            .iter()
            .filter(|m| m.subject.contains("declined"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    // Seeding again (a retry, a reprocessed copy) changes nothing.
    aula_processor::handlers::demo::seed(&db.pool, institution, meta(Some(institution)))
        .await
        .unwrap();
    assert_eq!(count("StudentCreated").await, 4);
    assert_eq!(count("EnrollmentRequested").await, 7);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocessing_emits_a_copy_that_issues_fresh_tasks_and_leaves_the_original() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let student = Uuid::new_v4();
    let institution = Uuid::new_v4();
    bus::<Student>(&db.pool, StudentServices)
        .execute(
            &student.to_string(),
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Caio").unwrap(),
                email: Email::parse("caio@example.org").unwrap(),
                birth_date: BirthDate::parse(NaiveDate::from_ymd_opt(2001, 1, 1).unwrap(), today())
                    .unwrap(),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let original = event_id_of(&db.pool, "StudentCreated", &student.to_string()).await;
    wait_task_succeeded(&db.pool, original, "email.welcome").await;
    let before: (String, serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT aggregate_id, payload::jsonb, metadata::jsonb FROM events WHERE event_id = $1",
    )
    .bind(original)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let appended = || {
        aula_eventlog::metrics::EVENTS_APPENDED
            .with(["StudentCreated"])
            .get()
    };
    let appended_before = appended();
    let admin = Uuid::new_v4();
    let copy = aula_processor::reprocess_event(&db.pool, original, Actor::User(admin))
        .await
        .unwrap();
    assert_eq!(copy.original_event_id, original);
    // The copy is an appended event for the metrics too (other tests of this process
    // can only add to the counter, never take from it).
    assert!(
        appended() > appended_before,
        "aula_events_appended_total counts the copy"
    );
    wait_task_succeeded(&db.pool, copy.event_id, "email.welcome").await;
    wait_task_succeeded(&db.pool, copy.event_id, "notification.link_student").await;
    assert_eq!(
        mailer.to("caio@example.org").len(),
        2,
        "the copy's task sends its own e-mail"
    );

    let after: (String, serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT aggregate_id, payload::jsonb, metadata::jsonb FROM events WHERE event_id = $1",
    )
    .bind(original)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(before, after, "the original is untouched");
    let (aggregate_type, payload, metadata): (String, serde_json::Value, serde_json::Value) =
        sqlx::query_as("SELECT aggregate_type, payload::jsonb, metadata::jsonb FROM events WHERE event_id = $1")
            .bind(copy.event_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(aggregate_type, "reprocessed");
    assert_eq!(payload, before.1);
    assert_eq!(metadata["reprocessed_from"], original.to_string());
    assert_eq!(metadata["actor"], format!("user:{admin}"));
    // The student's own stream still holds one event.
    assert_eq!(
        scalar_i64(
            &db.pool,
            &format!("SELECT count(*) FROM events WHERE aggregate_id = '{student}'")
        )
        .await,
        1
    );
    // Each event issued each kind exactly once.
    assert_eq!(scalar_i64(&db.pool, "SELECT count(*) FROM (SELECT event_id, kind FROM tasks GROUP BY 1, 2 HAVING count(*) > 1) d").await, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_of_enrollment_and_institution_events_act_on_their_originals_subject() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let school = school(&db.pool, 1).await;
    let courses = bus::<Course>(&db.pool, CourseServices);
    courses
        .execute(
            &school.course.to_string(),
            CourseCommand::RequestEnrollment {
                application_id: ApplicationId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Applicant").unwrap(),
                birth_date: BirthDate::parse(NaiveDate::from_ymd_opt(2005, 5, 5).unwrap(), today())
                    .unwrap(),
                email: Email::parse("copy@example.org").unwrap(),
                requested_at: Utc::now(),
            },
            &meta(Some(school.institution.as_uuid())),
        )
        .await
        .unwrap();
    eventually("the scheduled and the enrolled e-mails", || async {
        (mailer.to("copy@example.org").len() == 2).then_some(())
    })
    .await;
    let course = school.course.to_string();
    let requested = event_id_of(&db.pool, "EnrollmentRequested", &course).await;
    let enrolled = event_id_of(&db.pool, "StudentEnrolled", &course).await;
    // A new institution of its own, seeded with demo data.
    let fresh = Uuid::new_v4().to_string();
    bus::<Institution>(&db.pool, InstitutionServices)
        .execute(
            &fresh,
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Escola Demo").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &meta(None),
        )
        .await
        .unwrap();
    let created = event_id_of(&db.pool, "InstitutionCreated", &fresh).await;
    wait_task_succeeded(&db.pool, created, "demo.seed").await;
    let mut copies = Vec::new();
    for original in [requested, enrolled, created] {
        copies.push(
            aula_processor::reprocess_event(&db.pool, original, Actor::System)
                .await
                .unwrap()
                .event_id,
        );
    }
    // Each copy's tasks succeed: the decision finds the course (already decided, so
    // nothing changes), the demo seed finds the institution.
    wait_task_succeeded(&db.pool, copies[0], "enrollment.decide").await;
    wait_task_succeeded(&db.pool, copies[0], "email.application_scheduled").await;
    wait_task_succeeded(&db.pool, copies[1], "email.enrolled").await;
    wait_task_succeeded(&db.pool, copies[2], "demo.seed").await;
    // The copies' e-mails name the real course.
    let sent = mailer.to("copy@example.org");
    assert_eq!(sent.len(), 4);
    assert!(
        sent.iter().all(|m| m.subject.contains("Física I")),
        "{:?}",
        sent.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    let (course, _) = courses.load(&course).await.unwrap();
    assert_eq!(course.enrolled_count(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_sent_one_time_link_ends_dead_at_once_with_a_plain_reason() {
    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    let user = Uuid::new_v4().to_string();
    let expires_at = Utc::now() + Duration::hours(1);
    aula_processor::stash_token(&db.pool, "copy-hash", "copy-raw", expires_at)
        .await
        .unwrap();
    bus::<User>(&db.pool, UserServices::default())
        .execute(
            &user,
            UserCommand::SignUp {
                email: Email::parse("once@example.org").unwrap(),
                confirmation_token_hash: "copy-hash".into(),
                expires_at,
                now: Utc::now(),
            },
            &meta(None),
        )
        .await
        .unwrap();
    let original = event_id_of(&db.pool, "PendingUserRegisterCreated", &user).await;
    wait_task_succeeded(&db.pool, original, "email.signup_confirmation").await;
    let copy = aula_processor::reprocess_event(&db.pool, original, Actor::System)
        .await
        .unwrap()
        .event_id;
    // `dead` at once: its outcome can never change (a manual retry could not help).
    eventually("the copy's task to end dead", || async {
        (task_status(&db.pool, copy, "email.signup_confirmation")
            .await
            .as_deref()
            == Some("dead"))
        .then_some(())
    })
    .await;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempt, last_error FROM tasks WHERE event_id = $1")
            .bind(copy)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "no retries of what can never succeed");
    assert!(error.contains("ask for a new link"), "{error}");
    assert_eq!(mailer.to("once@example.org").len(), 1);
    running.stop().await;
}

/// The kinds the API accepts in filters (`kinds::ALL`) are exactly the kinds the
/// standard registry runs: a new kind registered without being listed would be refused
/// by the task list's filter.
#[test]
fn every_registered_kind_is_listed_and_every_listed_kind_registered() {
    let registry = aula_processor::handlers::Registry::standard(
        std::sync::Arc::new(common::RecordingMailer::default()),
        common::mail_config(),
    );
    let mut listed: Vec<&str> = aula_processor::kinds::ALL.to_vec();
    listed.sort_unstable();
    assert_eq!(registry.kinds(), listed);
}
