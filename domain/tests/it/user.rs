//! Given/when/then tests of the `User` aggregate: every command and every rejection.

use aula_domain::user::{
    EmailChangeLink, Role, User, UserCommand, UserError, UserEvent, UserServices,
};
use aula_domain::values::{Email, InstitutionId, InstitutionName, LoginSource, PersonName};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

mod accounts;
mod login;
mod reset;
mod sign_up;
mod trusted;

type UserTest = TestFramework<User>;

fn framework() -> UserTest {
    UserTest::with(UserServices::default())
}

/// One given/when/then case with the default services: the events `when` records on
/// top of `given`, or its rejection.
fn check(given: Vec<UserEvent>, when: UserCommand, then: Result<Vec<UserEvent>, UserError>) {
    let result = framework().given(given).when(when);
    match then {
        Ok(events) => result.then_expect_events(events),
        Err(error) => result.then_expect_error(error),
    }
}

/// Minutes after a fixed origin, so tests read as a timeline.
fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 3, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn email() -> Email {
    Email::parse("ada@example.org").unwrap()
}

fn name() -> PersonName {
    PersonName::parse("Ada Lovelace").unwrap()
}

fn institution_id() -> InstitutionId {
    InstitutionId::from_uuid(Uuid::from_u128(2))
}

fn pending(token: &str, expires_at: DateTime<Utc>) -> UserEvent {
    UserEvent::PendingUserRegisterCreated {
        email: email(),
        token_hash: token.to_owned(),
        expires_at,
    }
}

fn created(role: Role) -> UserEvent {
    UserEvent::UserCreated {
        email: email(),
        name: name(),
        role,
        institution_id: (role != Role::Admin).then(institution_id),
        password_hash: Some("hash-1".to_owned()),
    }
}

fn active() -> Vec<UserEvent> {
    vec![created(Role::Teacher)]
}

/// An active user to whom `events` happened since.
fn active_then(events: impl IntoIterator<Item = UserEvent>) -> Vec<UserEvent> {
    active().into_iter().chain(events).collect()
}

fn deactivated() -> UserEvent {
    UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    }
}

fn sign_up(token: &str, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> UserCommand {
    UserCommand::SignUp {
        email: email(),
        confirmation_token_hash: token.to_owned(),
        expires_at,
        now,
    }
}

fn confirm(token: &str, now: DateTime<Utc>) -> UserCommand {
    UserCommand::ConfirmSignUp {
        token_hash: token.to_owned(),
        name: name(),
        password_hash: "hash-1".to_owned(),
        institution_id: institution_id(),
        institution_name: InstitutionName::parse("Escola Aurora").unwrap(),
        now,
    }
}

/// A client address reduced to its login source.
fn source(address: &str) -> LoginSource {
    LoginSource::from_ip(address.parse().unwrap())
}

/// Where the account's owner logs in from.
fn home() -> LoginSource {
    source("198.51.100.7")
}

/// A login from [`home`].
fn login(password_matches: bool, now: DateTime<Utc>) -> UserCommand {
    login_from(Some(home()), password_matches, now)
}

fn login_from(
    source: Option<LoginSource>,
    password_matches: bool,
    now: DateTime<Utc>,
) -> UserCommand {
    UserCommand::AttemptLogin {
        password_matches,
        source,
        now,
    }
}

fn logged_in(at: DateTime<Utc>) -> UserEvent {
    UserEvent::LoginSucceeded {
        at,
        source: Some(home()),
    }
}

/// A failure from [`home`], counting for the default 15 minutes.
fn failed(at: DateTime<Utc>, consecutive_failures: u32) -> UserEvent {
    failed_from(home(), at, consecutive_failures)
}

fn failed_from(source: LoginSource, at: DateTime<Utc>, consecutive_failures: u32) -> UserEvent {
    UserEvent::LoginFailed {
        at,
        consecutive_failures,
        source: Some(source),
        counts_until: Some(at + Duration::minutes(15)),
    }
}

fn locked_out(source: Option<LoginSource>, until: DateTime<Utc>) -> UserEvent {
    UserEvent::UserLockedOut { until, source }
}

fn reset_token(token: &str, expires_at: DateTime<Utc>) -> UserEvent {
    UserEvent::ResetPasswordTokenCreated {
        token_hash: token.to_owned(),
        expires_at,
    }
}

fn reset(token: &str, now: DateTime<Utc>) -> UserCommand {
    UserCommand::ResetPassword {
        token_hash: token.to_owned(),
        new_password_hash: "hash-2".to_owned(),
        now,
    }
}

fn create_user(role: Role, institution_id: Option<InstitutionId>) -> UserCommand {
    UserCommand::CreateUser {
        email: email(),
        name: name(),
        role,
        institution_id,
        password_hash: None,
    }
}
