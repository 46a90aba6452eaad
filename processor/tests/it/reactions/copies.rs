//! Reprocessed copies: fresh tasks for a copy, acting on the original's subject,
//! and one-time links that cannot be sent again; the registered task kinds.

use super::*;

/// The aggregate id, payload and metadata stored for event `event_id`.
async fn stored(pool: &PgPool, event_id: Uuid) -> (String, serde_json::Value, serde_json::Value) {
    sqlx::query_as(
        "SELECT aggregate_id, payload::jsonb, metadata::jsonb FROM events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reprocessing_emits_a_copy_that_issues_fresh_tasks_and_leaves_the_original() {
    let (db, running, mailer) = standard_on_new_database().await;
    let institution = Uuid::new_v4();
    let (student, original) =
        create_student(&db.pool, institution, "Caio", "caio@example.org", 2001).await;
    wait_task_succeeded(&db.pool, original, "email.welcome").await;
    let before = stored(&db.pool, original).await;

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

    let after = stored(&db.pool, original).await;
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
    assert_scalar(
        &db.pool,
        &format!("SELECT count(*) FROM events WHERE aggregate_id = '{student}'"),
        1,
    )
    .await;
    // Each event issued each kind exactly once.
    assert_scalar(&db.pool, "SELECT count(*) FROM (SELECT event_id, kind FROM tasks GROUP BY 1, 2 HAVING count(*) > 1) d", 0).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_of_enrollment_and_institution_events_act_on_their_originals_subject() {
    let (db, running, mailer) = standard_on_new_database().await;
    let school = school(&db.pool, 1).await;
    let courses = bus::<Course>(&db.pool, CourseServices);
    school
        .request_enrollment(&db.pool, "copy@example.org")
        .await;
    eventually("the scheduled and the enrolled e-mails", || async {
        (mailer.to("copy@example.org").len() == 2).then_some(())
    })
    .await;
    let course = school.course.to_string();
    let requested = event_id_of(&db.pool, "EnrollmentRequested", &course).await;
    let enrolled = event_id_of(&db.pool, "StudentEnrolled", &course).await;
    // A new institution of its own, seeded with demo data (paused by `school`).
    aula_processor::controls::resume_kind(
        &db.pool,
        aula_processor::kinds::DEMO_SEED,
        &Actor::System,
    )
    .await
    .unwrap();
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
    let (db, running, mailer) = standard_on_new_database().await;
    let user = Uuid::new_v4().to_string();
    let expires_at = Utc::now() + Duration::hours(1);
    aula_processor::stash_token(&db.pool, "copy-hash", "copy-raw", expires_at)
        .await
        .unwrap();
    bus::<User>(&db.pool, UserServices::default())
        .execute(
            &user,
            sign_up("once@example.org", "copy-hash", expires_at, Utc::now()),
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
    let (attempts, error) =
        wait_task_status(&db.pool, copy, "email.signup_confirmation", "dead").await;
    let error = error.expect("a dead task keeps its error");
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
