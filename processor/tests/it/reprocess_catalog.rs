//! Reprocessing every event type of the catalog (issue #19): an original of each type
//! runs its tasks, is reprocessed, and its copy's tasks run; each copy must end as
//! [`OUTCOMES`] says. The table names every event type of the catalog, so a new event
//! type fails this test until someone decides (and documents, `docs/reprocessing.md`)
//! what reprocessing it does.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use aula_domain::course::CourseCommand;
use aula_domain::exam_grade::{ExamGrade, ExamGradeCommand, ExamGradeServices};
use aula_domain::user::{User, UserCommand, UserServices};
use aula_domain::values::*;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use chrono::{Duration, Utc};
use common::*;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// What the tasks of a reprocessed copy of an event type end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The event issues no task: the copy is `succeeded` as soon as the processor sees it.
    NoTasks,
    /// Every task of the copy succeeds (the handlers are idempotent: a decision already
    /// taken, an institution or demo data already there are success).
    Succeeded,
    /// Deliberate: the copy's task of `kind` ends at once (first attempt, status `dead`:
    /// its outcome can never change) with an error containing `reason`; its other
    /// tasks succeed. The copy's event is then `failed`.
    FailsAtOnce {
        kind: &'static str,
        reason: &'static str,
    },
}

/// A copy of an event whose e-mail carries a one-time link: the original's e-mail
/// already sent the raw token, which is kept only until then, so the copy's `kind`
/// task fails at once and tells to ask for a new link.
const fn one_time_link(kind: &'static str) -> Outcome {
    Outcome::FailsAtOnce {
        kind,
        reason: "ask for a new link",
    }
}

/// One entry per event type of the catalog (`docs/reprocessing.md` has the same table).
const OUTCOMES: &[(&str, Outcome)] = &[
    // user
    (
        "PendingUserRegisterCreated",
        one_time_link("email.signup_confirmation"),
    ),
    ("UserCreated", Outcome::NoTasks),
    ("LoginSucceeded", Outcome::NoTasks),
    ("LoginFailed", Outcome::NoTasks),
    ("UserLockedOut", Outcome::NoTasks),
    (
        "ResetPasswordTokenCreated",
        one_time_link("email.password_reset"),
    ),
    ("PasswordReset", Outcome::NoTasks),
    ("UserUpdated", Outcome::NoTasks),
    ("UserDeactivated", Outcome::NoTasks),
    ("RegisteredEmailSignUpAttempted", Outcome::Succeeded),
    ("SignUpConfirmed", Outcome::Succeeded),
    (
        "EmailChangeRequested",
        one_time_link("email.email_change_confirmation"),
    ),
    // institution
    ("InstitutionCreated", Outcome::Succeeded),
    ("CampusCreated", Outcome::NoTasks),
    ("CourseOffered", Outcome::NoTasks),
    // people
    ("StudentCreated", Outcome::Succeeded),
    ("TeacherCreated", Outcome::Succeeded),
    // applications and the course's decisions
    ("ApplicationSubmitted", Outcome::Succeeded),
    ("CourseOpened", Outcome::NoTasks),
    ("EnrollmentRequested", Outcome::Succeeded),
    ("StudentEnrolled", Outcome::Succeeded),
    ("EnrollmentDeclined", Outcome::Succeeded),
    ("EnrollmentCancelled", Outcome::Succeeded),
    ("CapacityChanged", Outcome::NoTasks),
    ("CourseClosed", Outcome::NoTasks),
    // grades
    ("ExamGradeNoteAdded", Outcome::Succeeded),
    ("ExamGradeNoteChanged", Outcome::Succeeded),
    // webhook endpoints: audit records of operators' changes, never sent anywhere
    ("WebhookEndpointCreated", Outcome::NoTasks),
    ("WebhookEndpointUpdated", Outcome::NoTasks),
    ("WebhookEndpointEnabled", Outcome::NoTasks),
    ("WebhookEndpointDisabled", Outcome::NoTasks),
    ("WebhookEndpointSecretRotated", Outcome::NoTasks),
    ("WebhookEndpointDeleted", Outcome::NoTasks),
    ("WebhookMessageResent", Outcome::NoTasks),
    ("WebhookRecoveryStarted", Outcome::NoTasks),
    ("WebhookRecoveryCancelled", Outcome::NoTasks),
    // queue controls: audit records of operators' controls
    ("TaskCancelled", Outcome::NoTasks),
    ("TaskForceReleased", Outcome::NoTasks),
    ("TaskPriorityChanged", Outcome::NoTasks),
    ("TaskKindPaused", Outcome::NoTasks),
    ("TaskKindResumed", Outcome::NoTasks),
];

/// Real commands that produce an original of every event type that issues tasks: a
/// sign-up confirmed into an institution (whose demo data brings people, a course,
/// enrollment requests and grades), a password reset, an e-mail change, a sign-up with
/// a registered address, applications to a one-seat course (one seat, one decline, one
/// cancellation) and a changed grade.
async fn produce_originals(pool: &PgPool) {
    let users = bus::<User>(pool, UserServices::default());
    let now = Utc::now();
    let user = Uuid::new_v4().to_string();
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let address = "founder@example.org";
    aula_processor::stash_token(pool, "signup-hash", "signup-raw", now + Duration::hours(1))
        .await
        .unwrap();
    users
        .execute(
            &user,
            sign_up(address, "signup-hash", now + Duration::hours(1), now),
            &meta(None),
        )
        .await
        .unwrap();
    // The sign-up's e-mail takes the raw token; confirming needs only its hash.
    eventually("the sign-up e-mail", || async {
        (scalar_i64(pool, "SELECT count(*) FROM pending_tokens").await == 0).then_some(())
    })
    .await;
    users
        .execute(
            &user,
            confirm_founder("signup-hash", institution, now),
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
    aula_processor::stash_token(pool, "reset-hash", "reset-raw", now + Duration::hours(1))
        .await
        .unwrap();
    users
        .execute(
            &user,
            UserCommand::RequestPasswordReset {
                token_hash: "reset-hash".into(),
                now,
            },
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
    users
        .execute(
            &user,
            sign_up(address, "again-hash", now + Duration::hours(1), now),
            &meta(None),
        )
        .await
        .unwrap();
    aula_processor::stash_token(pool, "change-hash", "change-raw", now + Duration::hours(24))
        .await
        .unwrap();
    users
        .execute(
            &user,
            UserCommand::RequestEmailChange {
                new_email: Email::parse("flora@example.net").unwrap(),
                token_hash: "change-hash".into(),
                now,
                by_owner: true,
            },
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();

    // A one-seat course of an institution of its own: one applicant seated, one
    // declined, the seated one cancelled.
    let school = School::create(pool).await;
    // Its demo data first: seeding it while the commands below change it would race.
    eventually("the school's demo data", || async {
        let seeded: Option<String> = sqlx::query_scalar(
            "SELECT t.status FROM tasks t JOIN events e ON e.event_id = t.event_id
             WHERE e.aggregate_id = $1 AND t.kind = 'demo.seed'",
        )
        .bind(school.institution.to_string())
        .fetch_optional(pool)
        .await
        .unwrap();
        (seeded.as_deref() == Some("succeeded")).then_some(())
    })
    .await;
    school
        .open_course(pool, "Campus Teste", "Física Teste", 1)
        .await;
    let mut seated = None;
    for address in ["first@example.org", "second@example.org"] {
        let id = submit_application(pool, school.course, school.institution, address).await;
        seated.get_or_insert(id);
    }
    eventually("both applications decided", || async {
        let decided: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events
             WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined') AND aggregate_id = $1",
        )
        .bind(school.course.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
        (decided == 2).then_some(())
    })
    .await;
    school
        .course_command(
            pool,
            CourseCommand::CancelEnrollment {
                application_id: seated.unwrap(),
                at: Utc::now(),
            },
        )
        .await;

    // A grade of the demo data (seeded for the confirmed sign-up's institution), changed.
    let (grade, teacher): (String, String) = eventually("a demo grade", || async {
        sqlx::query_as(
            "SELECT aggregate_id, payload->>'teacher_id' FROM events
             WHERE event_type = 'ExamGradeNoteAdded' LIMIT 1",
        )
        .fetch_optional(pool)
        .await
        .unwrap()
    })
    .await;
    bus::<ExamGrade>(pool, ExamGradeServices)
        .execute(
            &grade,
            ExamGradeCommand::ChangeNote {
                note: GradeNote::parse("9").unwrap(),
                teacher_id: TeacherId::from_uuid(teacher.parse().unwrap()),
                at: Utc::now(),
            },
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
}

/// The first original (not a copy) of `event_type`, if any.
async fn original_of(pool: &PgPool, event_type: &str) -> Option<Uuid> {
    sqlx::query_scalar(
        "SELECT event_id FROM events
         WHERE event_type = $1 AND metadata->>'reprocessed_from' IS NULL
         ORDER BY global_position LIMIT 1",
    )
    .bind(event_type)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// `(kind, status, attempts, error, payload)` of the tasks of `event_id`.
async fn tasks_of(
    pool: &PgPool,
    event_id: Uuid,
) -> Vec<(String, String, i32, Option<String>, Value)> {
    sqlx::query_as(
        "SELECT kind, status, attempt, last_error, payload FROM tasks
         WHERE event_id = $1 ORDER BY kind",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn event_status(pool: &PgPool, event_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM admin_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_type_of_the_catalog_reprocesses_to_its_documented_outcome() {
    let catalog = aula_domain::catalog::catalog();
    let outcomes: BTreeMap<&str, Outcome> = OUTCOMES.iter().copied().collect();
    let catalog_types: BTreeSet<&str> = catalog.iter().map(|e| e.event_type.as_str()).collect();
    let listed: BTreeSet<&str> = outcomes.keys().copied().collect();
    assert_eq!(
        catalog_types, listed,
        "every event type of the catalog needs its reprocessing outcome in OUTCOMES \
         (and docs/reprocessing.md), and only those"
    );

    let db = TestDatabase::new().await;
    let (running, mailer) = start_standard(&db).await;
    produce_originals(&db.pool).await;

    let mut originals = BTreeMap::new();
    for description in &catalog {
        let event_type = description.event_type.as_str();
        let outcome = outcomes[event_type];
        let issues_tasks = !aula_processor::reactions::kinds_for(event_type).is_empty();
        // The previews warn exactly about the deliberate failures.
        assert_eq!(
            aula_processor::reprocess::one_time_link_note(event_type).is_some(),
            matches!(outcome, Outcome::FailsAtOnce { .. }),
            "{event_type}: the reprocess preview's note and the table disagree"
        );
        assert_eq!(
            issues_tasks,
            outcome != Outcome::NoTasks,
            "{event_type}: the table says {outcome:?}"
        );
        let original = match original_of(&db.pool, event_type).await {
            Some(id) => id,
            None => {
                // No command above produced one. Only events that issue no task may
                // stand in as their catalog sample: the others need a real subject.
                assert!(
                    !issues_tasks,
                    "{event_type} issues tasks: produce_originals must produce one"
                );
                sqlx::query_scalar(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                         event_version, payload, metadata)
                     VALUES ($1, $2, 1, $3, $4, $5, '{}') RETURNING event_id",
                )
                .bind(description.aggregate)
                .bind(Uuid::new_v4().to_string())
                .bind(event_type)
                .bind(&description.version)
                .bind(&description.example)
                .fetch_one(&db.pool)
                .await
                .unwrap()
            }
        };
        originals.insert(event_type.to_owned(), original);
    }
    // Every original's tasks ran to success first (the copy comes after the fact).
    for (event_type, original) in &originals {
        let original = *original;
        let status = eventually(
            &format!("{event_type}'s original to be processed"),
            || async {
                event_status(&db.pool, original)
                    .await
                    .filter(|status| status != "pending")
            },
        )
        .await;
        assert_eq!(
            status,
            "succeeded",
            "{event_type}: {:?}",
            tasks_of(&db.pool, original).await
        );
    }

    let mut copies = BTreeMap::new();
    for (event_type, original) in &originals {
        let copy = aula_processor::reprocess_event(&db.pool, *original, Actor::System)
            .await
            .unwrap();
        copies.insert(event_type.clone(), (*original, copy.event_id));
    }
    for (event_type, (original, copy)) in &copies {
        let (original, copy) = (*original, *copy);
        let outcome = outcomes[event_type.as_str()];
        let expected_status = match outcome {
            Outcome::FailsAtOnce { .. } => "failed",
            Outcome::NoTasks | Outcome::Succeeded => "succeeded",
        };
        eventually(
            &format!("{event_type}'s copy to end {expected_status}"),
            || async {
                let status = event_status(&db.pool, copy).await?;
                (status == expected_status).then_some(())
            },
        )
        .await;
        let tasks = tasks_of(&db.pool, copy).await;
        let expected_kinds = aula_processor::reactions::kinds_for(event_type);
        assert_eq!(tasks.len(), expected_kinds.len(), "{event_type}: {tasks:?}");
        let (subject_type, subject_id): (String, String) =
            sqlx::query_as("SELECT aggregate_type, aggregate_id FROM events WHERE event_id = $1")
                .bind(original)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        for (kind, status, attempts, error, payload) in &tasks {
            // Every handler acts on the original's subject, never the copy's stream.
            assert_eq!(payload["aggregate_type"], subject_type.as_str(), "{kind}");
            assert_eq!(payload["aggregate_id"], subject_id.as_str(), "{kind}");
            match outcome {
                Outcome::FailsAtOnce {
                    kind: failing,
                    reason,
                } if failing == kind => {
                    assert_eq!(status, "dead", "{event_type} {kind}");
                    assert_eq!(*attempts, 1, "{event_type} {kind}: no retries");
                    let error = error.as_deref().unwrap_or_default();
                    assert!(error.contains(reason), "{event_type} {kind}: {error}");
                }
                _ => assert_eq!(status, "succeeded", "{event_type} {kind}: {error:?}"),
            }
        }
    }
    // The copies' e-mails name the real course, never a placeholder.
    let placeholders: Vec<String> = mailer
        .sent()
        .into_iter()
        .map(|m| m.subject)
        .filter(|subject| subject.contains("your course"))
        .collect();
    assert!(placeholders.is_empty(), "{placeholders:?}");
    running.stop().await;
    db.drop_database().await;
}
