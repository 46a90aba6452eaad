//! The account e-mails: sign-up confirmation, password reset, e-mail change, and a
//! sign-up with an address already registered.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_sends_the_confirmation_link_with_the_stashed_token() {
    let (db, running, mailer) = standard_on_new_database().await;
    let user = Uuid::new_v4();
    let raw = "raw-token_ABC";
    let hash = "hash-of-raw-token";
    let expires_at = Utc::now() + Duration::hours(1);
    // The token is stashed only after the event: the task retries until it is there.
    bus::<User>(&db.pool, UserServices::default())
        .execute(
            &user.to_string(),
            sign_up("new@example.org", hash, expires_at, Utc::now()),
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "PendingUserRegisterCreated", &user.to_string()).await;
    until_count(
        &db.pool,
        "SELECT count(*) FROM task_attempts WHERE outcome = 'retry'",
        "a failed attempt while the token is missing",
        |failures| failures > 0,
    )
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
    assert_scalar(
        &db.pool,
        "SELECT count(*) FROM outbox_emails WHERE kind = 'email.signup_confirmation'",
        1,
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_that_was_never_stashed_fails_permanently() {
    let (db, running, mailer) = standard_on_new_database().await;
    let user = Uuid::new_v4();
    let users = bus::<User>(&db.pool, UserServices::default());
    let now = Utc::now();
    // Signed up a while ago with a token that expires almost at once.
    users
        .execute(
            &user.to_string(),
            sign_up(
                "late@example.org",
                "h",
                now + Duration::milliseconds(1),
                now - Duration::seconds(1),
            ),
            &meta(None),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "PendingUserRegisterCreated", &user.to_string()).await;
    let (_, error) = wait_task_status(&db.pool, event, "email.signup_confirmation", "failed").await;
    let error = error.expect("a failed task keeps its error");
    assert!(error.contains("expired"), "{error}");
    assert!(mailer.sent().is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn password_reset_emails_the_link_to_the_users_address() {
    let (db, running, mailer) = standard_on_new_database().await;
    let command = UserCommand::RequestPasswordReset {
        token_hash: "reset-hash".into(),
        now: Utc::now(),
    };
    let stash = ("reset-hash", "reset-raw", 1);
    let (_, event) = ada_asks(
        &db.pool,
        "teacher@example.org",
        stash,
        command,
        "ResetPasswordTokenCreated",
    )
    .await;
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
    let (db, running, mailer) = standard_on_new_database().await;
    let command = UserCommand::RequestEmailChange {
        new_email: Email::parse("new.address@example.net").unwrap(),
        token_hash: "change-hash".into(),
        now: Utc::now(),
        by_owner: true,
    };
    let stash = ("change-hash", "change-raw", 24);
    let (user, event) = ada_asks(
        &db.pool,
        "old@example.org",
        stash,
        command,
        "EmailChangeRequested",
    )
    .await;
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
    let (db, running, mailer) = standard_on_new_database().await;
    let users = bus::<User>(&db.pool, UserServices::default());
    let create = |address: &str| UserCommand::CreateUser {
        email: Email::parse(address).unwrap(),
        name: PersonName::parse("Olga").unwrap(),
        role: Role::Manager,
        institution_id: Some(InstitutionId::from_uuid(Uuid::new_v4())),
        password_hash: Some("x".into()),
    };
    let sign_up = |address: &str| {
        let now = Utc::now();
        let token_hash = format!("h-{}", Uuid::new_v4());
        common::sign_up(address, &token_hash, now + Duration::hours(1), now)
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

/// Teacher "Ada" with `email` and a password, as user `user`.
/// Teacher Ada, at `email`, asks for a one-time link with `command`, its token stashed
/// as the API does (`(hash, raw, hours)`); returns her id and the id of the event
/// `event_type` that records the request.
async fn ada_asks(
    pool: &PgPool,
    email: &str,
    (hash, raw, hours): (&str, &str, i64),
    command: UserCommand,
    event_type: &str,
) -> (String, Uuid) {
    let user = Uuid::new_v4().to_string();
    let users = bus::<User>(pool, UserServices::default());
    create_teacher_ada(&users, &user, email).await;
    stash_for_hours(pool, hash, raw, hours).await;
    users.execute(&user, command, &meta(None)).await.unwrap();
    let event = event_id_of(pool, event_type, &user).await;
    (user, event)
}

async fn create_teacher_ada(users: &CommandBus<User>, user: &str, email: &str) {
    users
        .execute(
            user,
            UserCommand::CreateUser {
                email: Email::parse(email).unwrap(),
                name: PersonName::parse("Ada").unwrap(),
                role: Role::Teacher,
                institution_id: Some(InstitutionId::from_uuid(Uuid::new_v4())),
                password_hash: Some("x".into()),
            },
            &meta(None),
        )
        .await
        .unwrap();
}

/// Keeps the raw one-time token `raw` of `hash` for `hours`, as the API does.
async fn stash_for_hours(pool: &PgPool, hash: &str, raw: &str, hours: i64) {
    aula_processor::stash_token(pool, hash, raw, Utc::now() + Duration::hours(hours))
        .await
        .unwrap();
}
