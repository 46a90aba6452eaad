//! Given/when/then tests of the `User` aggregate: every command and every rejection.

use aula_domain::errors::{Rejection, RejectionKind};
use aula_domain::user::{
    EmailChangeLink, Role, User, UserCommand, UserError, UserEvent, UserServices,
};
use aula_domain::values::{Email, InstitutionId, InstitutionName, PersonName};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use uuid::Uuid;

type UserTest = TestFramework<User>;

fn framework() -> UserTest {
    UserTest::with(UserServices::default())
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

fn login(password_matches: bool, now: DateTime<Utc>) -> UserCommand {
    UserCommand::AttemptLogin {
        password_matches,
        now,
    }
}

fn failed(at: DateTime<Utc>, consecutive_failures: u32) -> UserEvent {
    UserEvent::LoginFailed {
        at,
        consecutive_failures,
    }
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

// --- SignUp ---

#[test]
fn sign_up_creates_a_pending_registration() {
    framework()
        .given_no_previous_events()
        .when(sign_up("tok-1", t(60), t(0)))
        .then_expect_events(vec![pending("tok-1", t(60))]);
}

#[test]
fn signing_up_again_while_pending_reissues_the_token() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(sign_up("tok-2", t(90), t(30)))
        .then_expect_events(vec![pending("tok-2", t(90))]);
}

#[test]
fn sign_up_of_a_registered_user_is_recorded_and_changes_nothing() {
    framework()
        .given(active())
        .when(sign_up("tok-1", t(60), t(0)))
        .then_expect_events(vec![UserEvent::RegisteredEmailSignUpAttempted { at: t(0) }]);
    let mut deactivated = active();
    deactivated.push(UserEvent::UserDeactivated {
        reason: "left".into(),
    });
    framework()
        .given(deactivated)
        .when(sign_up("tok-1", t(60), t(0)))
        .then_expect_events(vec![UserEvent::RegisteredEmailSignUpAttempted { at: t(0) }]);
}

#[test]
fn sign_up_with_another_email_while_pending_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(UserCommand::SignUp {
            email: Email::parse("other@example.org").unwrap(),
            confirmation_token_hash: "tok-2".to_owned(),
            expires_at: t(60),
            now: t(0),
        })
        .then_expect_error(UserError::SignUpEmailMismatch);
}

#[test]
fn sign_up_with_a_token_already_expired_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(sign_up("tok-1", t(0), t(0)))
        .then_expect_error(UserError::TokenExpiryNotInFuture);
}

// --- ConfirmSignUp ---

#[test]
fn confirming_creates_the_institution_manager() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(confirm("tok-1", t(10)))
        .then_expect_events(vec![
            created(Role::Manager),
            UserEvent::SignUpConfirmed {
                institution_id: institution_id(),
                institution_name: InstitutionName::parse("Escola Aurora").unwrap(),
            },
        ]);
}

#[test]
fn confirming_without_a_sign_up_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(confirm("tok-1", t(10)))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn confirming_twice_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60)), created(Role::Manager)])
        .when(confirm("tok-1", t(10)))
        .then_expect_error(UserError::AlreadyConfirmed);
}

#[test]
fn confirming_a_deactivated_registration_is_rejected() {
    framework()
        .given(vec![
            pending("tok-1", t(60)),
            UserEvent::UserDeactivated {
                reason: "spam".to_owned(),
            },
        ])
        .when(confirm("tok-1", t(10)))
        .then_expect_error(UserError::Deactivated);
}

#[test]
fn confirming_with_an_unknown_token_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(confirm("tok-x", t(10)))
        .then_expect_error(UserError::SignUpTokenUnknown);
}

#[test]
fn confirming_with_an_expired_token_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(confirm("tok-1", t(60)))
        .then_expect_error(UserError::SignUpTokenExpired);
}

#[test]
fn confirming_with_a_superseded_token_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60)), pending("tok-2", t(90))])
        .when(confirm("tok-1", t(10)))
        .then_expect_error(UserError::SignUpTokenSuperseded);
}

// --- CreateUser ---

fn create_user(role: Role, institution_id: Option<InstitutionId>) -> UserCommand {
    UserCommand::CreateUser {
        email: email(),
        name: name(),
        role,
        institution_id,
        password_hash: None,
    }
}

#[test]
fn create_user_records_a_teacher_without_password() {
    framework()
        .given_no_previous_events()
        .when(create_user(Role::Teacher, Some(institution_id())))
        .then_expect_events(vec![UserEvent::UserCreated {
            email: email(),
            name: name(),
            role: Role::Teacher,
            institution_id: Some(institution_id()),
            password_hash: None,
        }]);
}

#[test]
fn create_user_bootstraps_an_admin_without_institution() {
    framework()
        .given_no_previous_events()
        .when(create_user(Role::Admin, None))
        .then_expect_events(vec![UserEvent::UserCreated {
            email: email(),
            name: name(),
            role: Role::Admin,
            institution_id: None,
            password_hash: None,
        }]);
}

#[test]
fn create_user_twice_is_rejected() {
    framework()
        .given(active())
        .when(create_user(Role::Teacher, Some(institution_id())))
        .then_expect_error(UserError::AlreadyExists);
}

#[test]
fn an_admin_with_an_institution_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(create_user(Role::Admin, Some(institution_id())))
        .then_expect_error(UserError::AdminWithInstitution);
}

#[test]
fn other_roles_need_an_institution() {
    for role in [Role::Manager, Role::Teacher, Role::Student] {
        framework()
            .given_no_previous_events()
            .when(create_user(role, None))
            .then_expect_error(UserError::InstitutionRequired);
    }
}

#[test]
fn an_observer_is_scoped_to_one_institution_or_the_platform() {
    for institution in [Some(institution_id()), None] {
        framework()
            .given_no_previous_events()
            .when(create_user(Role::Observer, institution))
            .then_expect_events(vec![UserEvent::UserCreated {
                email: email(),
                name: name(),
                role: Role::Observer,
                institution_id: institution,
                password_hash: None,
            }]);
    }
}

/// `Role` is stored by variant name in `UserCreated`: adding `Observer` must leave the
/// stored payloads of every earlier role loading as they were, with no upcaster.
#[test]
fn stored_roles_still_load() {
    for (stored, role) in [
        ("Admin", Role::Admin),
        ("Manager", Role::Manager),
        ("Teacher", Role::Teacher),
        ("Student", Role::Student),
        ("Observer", Role::Observer),
    ] {
        let payload = serde_json::json!({
            "type": "UserCreated",
            "email": "ada@example.org",
            "name": "Ada Lovelace",
            "role": stored,
            "institution_id": null,
            "password_hash": null,
        });
        let event: UserEvent = serde_json::from_value(payload).unwrap();
        let UserEvent::UserCreated { role: loaded, .. } = event else {
            panic!("not a UserCreated: {event:?}");
        };
        assert_eq!(loaded, role);
        assert_eq!(serde_json::to_value(role).unwrap(), stored);
    }
}

// --- AttemptLogin ---

#[test]
fn a_matching_password_logs_in() {
    framework()
        .given(active())
        .when(login(true, t(0)))
        .then_expect_events(vec![UserEvent::LoginSucceeded { at: t(0) }]);
}

#[test]
fn a_wrong_password_is_recorded_not_rejected() {
    framework()
        .given(active())
        .when(login(false, t(0)))
        .then_expect_events(vec![failed(t(0), 1)]);
}

#[test]
fn the_fifth_consecutive_failure_locks_the_account_for_15_minutes() {
    let mut given = active();
    given.extend((1..=4).map(|n| failed(t(n), n as u32)));
    framework()
        .given(given)
        .when(login(false, t(5)))
        .then_expect_events(vec![
            failed(t(5), 5),
            UserEvent::UserLockedOut { until: t(20) },
        ]);
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut given = active();
    given.extend((1..=4).map(|n| failed(t(n), n as u32)));
    given.push(UserEvent::LoginSucceeded { at: t(5) });
    framework()
        .given(given)
        .when(login(false, t(6)))
        .then_expect_events(vec![failed(t(6), 1)]);
}

#[test]
fn lockout_policy_comes_from_the_services() {
    let services = UserServices {
        max_failed_logins: 2,
        lockout: Duration::minutes(1),
        ..UserServices::default()
    };
    let mut given = active();
    given.push(failed(t(1), 1));
    UserTest::with(services)
        .given(given)
        .when(login(false, t(2)))
        .then_expect_events(vec![
            failed(t(2), 2),
            UserEvent::UserLockedOut { until: t(3) },
        ]);
}

#[test]
fn login_while_locked_out_is_rejected_even_with_the_right_password() {
    let mut given = active();
    given.push(UserEvent::UserLockedOut { until: t(15) });
    framework()
        .given(given)
        .when(login(true, t(14)))
        .then_expect_error(UserError::LockedOut { until: t(15) });
}

#[test]
fn after_the_lockout_the_user_gets_fresh_attempts() {
    let mut given = active();
    given.push(failed(t(0), 5));
    given.push(UserEvent::UserLockedOut { until: t(15) });
    framework()
        .given(given)
        .when(login(false, t(15)))
        .then_expect_events(vec![failed(t(15), 1)]);
}

#[test]
fn login_of_an_unknown_user_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(login(true, t(0)))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn login_of_a_pending_user_is_not_active() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(login(true, t(0)))
        .then_expect_error(UserError::NotActive);
}

#[test]
fn login_of_a_deactivated_user_is_rejected() {
    let mut given = active();
    given.push(UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    });
    framework()
        .given(given)
        .when(login(true, t(0)))
        .then_expect_error(UserError::Deactivated);
}

// --- RequestPasswordReset ---

#[test]
fn requesting_a_reset_issues_a_token_valid_for_one_hour() {
    framework()
        .given(active())
        .when(UserCommand::RequestPasswordReset {
            token_hash: "reset-1".to_owned(),
            now: t(0),
        })
        .then_expect_events(vec![reset_token("reset-1", t(60))]);
}

#[test]
fn requesting_a_reset_for_an_unknown_user_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(UserCommand::RequestPasswordReset {
            token_hash: "reset-1".to_owned(),
            now: t(0),
        })
        .then_expect_error(UserError::NotFound);
}

#[test]
fn requesting_a_reset_for_a_deactivated_user_is_rejected() {
    let mut given = active();
    given.push(UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    });
    framework()
        .given(given)
        .when(UserCommand::RequestPasswordReset {
            token_hash: "reset-1".to_owned(),
            now: t(0),
        })
        .then_expect_error(UserError::Deactivated);
}

#[test]
fn requesting_a_reset_for_a_pending_user_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(UserCommand::RequestPasswordReset {
            token_hash: "reset-1".to_owned(),
            now: t(0),
        })
        .then_expect_error(UserError::NotActive);
}

// --- ResetPassword ---

#[test]
fn resetting_with_the_current_token_replaces_the_password() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    framework()
        .given(given)
        .when(reset("reset-1", t(30)))
        .then_expect_events(vec![UserEvent::PasswordReset {
            token_hash: "reset-1".to_owned(),
            password_hash: "hash-2".to_owned(),
            at: t(30),
        }]);
}

#[test]
fn resetting_clears_a_lockout() {
    let mut given = active();
    given.push(failed(t(0), 5));
    given.push(UserEvent::UserLockedOut { until: t(15) });
    given.push(reset_token("reset-1", t(60)));
    given.push(UserEvent::PasswordReset {
        token_hash: "reset-1".to_owned(),
        password_hash: "hash-2".to_owned(),
        at: t(5),
    });
    framework()
        .given(given)
        .when(login(true, t(6)))
        .then_expect_events(vec![UserEvent::LoginSucceeded { at: t(6) }]);
}

#[test]
fn resetting_with_an_expired_token_is_rejected() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    framework()
        .given(given)
        .when(reset("reset-1", t(61)))
        .then_expect_error(UserError::ResetTokenExpired);
}

#[test]
fn resetting_with_a_used_token_is_rejected() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    given.push(UserEvent::PasswordReset {
        token_hash: "reset-1".to_owned(),
        password_hash: "hash-2".to_owned(),
        at: t(5),
    });
    framework()
        .given(given)
        .when(reset("reset-1", t(6)))
        .then_expect_error(UserError::ResetTokenAlreadyUsed);
}

#[test]
fn resetting_with_a_superseded_token_is_rejected() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    given.push(reset_token("reset-2", t(70)));
    framework()
        .given(given)
        .when(reset("reset-1", t(20)))
        .then_expect_error(UserError::ResetTokenSuperseded);
}

#[test]
fn resetting_with_an_unknown_token_is_rejected() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    framework()
        .given(given)
        .when(reset("reset-x", t(20)))
        .then_expect_error(UserError::ResetTokenUnknown);
}

#[test]
fn resetting_for_an_unknown_user_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(reset("reset-1", t(20)))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn resetting_for_a_deactivated_user_is_rejected() {
    let mut given = active();
    given.push(reset_token("reset-1", t(60)));
    given.push(UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    });
    framework()
        .given(given)
        .when(reset("reset-1", t(20)))
        .then_expect_error(UserError::Deactivated);
}

// --- UpdateUser ---

#[test]
fn updating_records_only_changed_fields() {
    let new_email = Email::parse("ada.l@example.org").unwrap();
    framework()
        .given(active())
        .when(UserCommand::UpdateUser {
            name: Some(name()),
            email: Some(new_email.clone()),
        })
        .then_expect_events(vec![UserEvent::UserUpdated {
            name: None,
            email: Some(new_email),
        }]);
}

#[test]
fn an_update_that_changes_nothing_records_nothing() {
    framework()
        .given(active())
        .when(UserCommand::UpdateUser {
            name: Some(name()),
            email: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn updating_an_unknown_user_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(UserCommand::UpdateUser {
            name: Some(name()),
            email: None,
        })
        .then_expect_error(UserError::NotFound);
}

#[test]
fn updating_a_deactivated_user_is_rejected() {
    let mut given = active();
    given.push(UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    });
    framework()
        .given(given)
        .when(UserCommand::UpdateUser {
            name: Some(PersonName::parse("Ada King").unwrap()),
            email: None,
        })
        .then_expect_error(UserError::Deactivated);
}

#[test]
fn updating_a_pending_registration_is_rejected() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(UserCommand::UpdateUser {
            name: Some(name()),
            email: None,
        })
        .then_expect_error(UserError::NotActive);
}

// --- DeactivateUser ---

#[test]
fn deactivating_records_the_reason() {
    framework()
        .given(active())
        .when(UserCommand::DeactivateUser {
            reason: "left".to_owned(),
        })
        .then_expect_events(vec![UserEvent::UserDeactivated {
            reason: "left".to_owned(),
        }]);
}

#[test]
fn a_pending_registration_can_be_deactivated() {
    framework()
        .given(vec![pending("tok-1", t(60))])
        .when(UserCommand::DeactivateUser {
            reason: "spam".to_owned(),
        })
        .then_expect_events(vec![UserEvent::UserDeactivated {
            reason: "spam".to_owned(),
        }]);
}

#[test]
fn deactivating_twice_is_rejected() {
    let mut given = active();
    given.push(UserEvent::UserDeactivated {
        reason: "left".to_owned(),
    });
    framework()
        .given(given)
        .when(UserCommand::DeactivateUser {
            reason: "again".to_owned(),
        })
        .then_expect_error(UserError::AlreadyDeactivated);
}

#[test]
fn deactivating_an_unknown_user_is_not_found() {
    framework()
        .given_no_previous_events()
        .when(UserCommand::DeactivateUser {
            reason: "left".to_owned(),
        })
        .then_expect_error(UserError::NotFound);
}

// --- error mapping ---

#[test]
fn errors_have_stable_codes_and_kinds() {
    let cases = [
        (
            UserError::NotFound,
            "USER_NOT_FOUND",
            RejectionKind::NotFound,
        ),
        (
            UserError::LockedOut { until: t(15) },
            "USER_LOCKED_OUT",
            RejectionKind::Forbidden,
        ),
        (
            UserError::ResetTokenExpired,
            "RESET_TOKEN_EXPIRED",
            RejectionKind::Unauthenticated,
        ),
        (
            UserError::AlreadyConfirmed,
            "SIGN_UP_ALREADY_CONFIRMED",
            RejectionKind::Conflict,
        ),
        (
            UserError::InstitutionRequired,
            "INSTITUTION_REQUIRED",
            RejectionKind::Validation,
        ),
    ];
    for (error, code, kind) in cases {
        assert_eq!(error.code(), code);
        assert_eq!(error.kind(), kind);
        // The trait gives the API one generic path.
        let rejection: &dyn Rejection = &error;
        assert_eq!(rejection.code(), code);
        assert_eq!(rejection.kind(), kind);
    }
}

#[test]
fn state_exposes_the_password_hash_for_login_checks() {
    use cqrs_es::Aggregate;
    let mut user = User::default();
    user.apply(created(Role::Teacher));
    assert_eq!(user.password_hash(), Some("hash-1"));
    assert_eq!(user.role(), Some(Role::Teacher));
    let snapshot = serde_json::to_value(&user).unwrap();
    assert_eq!(serde_json::from_value::<User>(snapshot).unwrap(), user);
}

#[test]
fn reset_requests_per_account_are_limited_within_a_token_lifetime() {
    let services = UserServices {
        max_reset_requests: 2,
        ..UserServices::default()
    };
    let mut given = active();
    given.push(UserEvent::ResetPasswordTokenCreated {
        token_hash: "sha256:one".into(),
        expires_at: t(1) + Duration::hours(1),
    });
    given.push(UserEvent::ResetPasswordTokenCreated {
        token_hash: "sha256:two".into(),
        expires_at: t(2) + Duration::hours(1),
    });
    UserTest::with(services.clone())
        .given(given.clone())
        .when(UserCommand::RequestPasswordReset {
            token_hash: "sha256:three".into(),
            now: t(3),
        })
        .then_expect_error(UserError::TooManyResetRequests);
    // Once the earlier tokens expired, a new one is issued.
    let later = t(1) + Duration::hours(2);
    UserTest::with(services)
        .given(given)
        .when(UserCommand::RequestPasswordReset {
            token_hash: "sha256:three".into(),
            now: later,
        })
        .then_expect_events(vec![UserEvent::ResetPasswordTokenCreated {
            token_hash: "sha256:three".into(),
            expires_at: later + Duration::hours(1),
        }]);
}

#[test]
fn an_email_change_applies_only_when_confirmed_with_its_token() {
    let new_email = Email::parse("new@aula.test").unwrap();
    let current = active().iter().find_map(|event| match event {
        UserEvent::UserCreated { email, .. } => Some(email.clone()),
        _ => None,
    });
    let requested = UserEvent::EmailChangeRequested {
        previous_email: current.clone(),
        new_email: new_email.clone(),
        token_hash: "sha256:change".into(),
        expires_at: t(10) + Duration::hours(24),
        link_to: EmailChangeLink::NewAddress,
    };
    let request = |by_owner: bool| UserCommand::RequestEmailChange {
        new_email: new_email.clone(),
        token_hash: "sha256:change".into(),
        now: t(10),
        by_owner,
    };
    framework()
        .given(active())
        .when(request(true))
        .then_expect_events(vec![requested.clone()]);
    // Someone else asking for an active account: the owner confirms, at its address.
    framework()
        .given(active())
        .when(request(false))
        .then_expect_events(vec![UserEvent::EmailChangeRequested {
            previous_email: current.clone(),
            new_email: new_email.clone(),
            token_hash: "sha256:change".into(),
            expires_at: t(10) + Duration::hours(24),
            link_to: EmailChangeLink::CurrentAddress,
        }]);
    let mut given = active();
    given.push(requested.clone());
    framework()
        .given(given.clone())
        .when(UserCommand::ConfirmEmailChange {
            token_hash: "sha256:other".into(),
            now: t(11),
        })
        .then_expect_error(UserError::EmailChangeTokenUnknown);
    framework()
        .given(given.clone())
        .when(UserCommand::ConfirmEmailChange {
            token_hash: "sha256:change".into(),
            now: t(10) + Duration::hours(25),
        })
        .then_expect_error(UserError::EmailChangeTokenExpired);
    framework()
        .given(given.clone())
        .when(UserCommand::ConfirmEmailChange {
            token_hash: "sha256:change".into(),
            now: t(11),
        })
        .then_expect_events(vec![UserEvent::UserUpdated {
            name: None,
            email: Some(new_email.clone()),
        }]);
    // Used once: a second confirmation finds nothing pending.
    given.push(UserEvent::UserUpdated {
        name: None,
        email: Some(new_email),
    });
    framework()
        .given(given)
        .when(UserCommand::ConfirmEmailChange {
            token_hash: "sha256:change".into(),
            now: t(12),
        })
        .then_expect_error(UserError::EmailChangeTokenUnknown);
}

#[test]
fn sign_up_links_to_one_pending_address_are_limited() {
    let email = Email::parse("pending@aula.test").unwrap();
    let pending = |hash: &str, minutes: i64| UserEvent::PendingUserRegisterCreated {
        email: email.clone(),
        token_hash: hash.into(),
        expires_at: t(minutes) + Duration::hours(24),
    };
    let given = vec![pending("one", 1), pending("two", 2), pending("three", 3)];
    let again = |now: DateTime<Utc>| UserCommand::SignUp {
        email: email.clone(),
        confirmation_token_hash: "four".into(),
        expires_at: now + Duration::hours(24),
        now,
    };
    // Three valid links: a fourth sign-up sends nothing (and is not an error).
    framework()
        .given(given.clone())
        .when(again(t(4)))
        .then_expect_events(vec![]);
    // Once they expired, a new link is sent.
    let later = t(4) + Duration::hours(25);
    framework()
        .given(given)
        .when(again(later))
        .then_expect_events(vec![UserEvent::PendingUserRegisterCreated {
            email: email.clone(),
            token_hash: "four".into(),
            expires_at: later + Duration::hours(24),
        }]);
}
