//! Password resets: tokens, their lifetime and limits.

use super::*;

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
