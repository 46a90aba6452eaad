//! Password resets: tokens, their lifetime and limits.

use super::*;
use UserError::*;

fn request_reset(token: &str, now: DateTime<Utc>) -> UserCommand {
    UserCommand::RequestPasswordReset {
        token_hash: token.to_owned(),
        now,
    }
}

#[test]
fn requesting_a_reset_issues_a_token_valid_for_one_hour() {
    let issued = reset_token("reset-1", t(60));
    check(active(), request_reset("reset-1", t(0)), Ok(vec![issued]));
}

#[test]
fn requesting_a_reset_for_an_unknown_user_is_not_found() {
    check(vec![], request_reset("reset-1", t(0)), Err(NotFound));
}

#[test]
fn requesting_a_reset_for_a_deactivated_user_is_rejected() {
    let given = active_then([deactivated()]);
    check(given, request_reset("reset-1", t(0)), Err(Deactivated));
}

#[test]
fn requesting_a_reset_for_a_pending_user_is_rejected() {
    let given = vec![pending("tok-1", t(60))];
    check(given, request_reset("reset-1", t(0)), Err(NotActive));
}

#[test]
fn resetting_with_the_current_token_replaces_the_password() {
    let given = active_then([reset_token("reset-1", t(60))]);
    let replaced = password_reset("reset-1", t(30));
    check(given, reset("reset-1", t(30)), Ok(vec![replaced]));
}

#[test]
fn resetting_clears_a_lockout() {
    let given = active_then([
        failed(t(0), 5),
        locked_out(Some(home()), t(15)),
        locked_out(None, t(15)),
        reset_token("reset-1", t(60)),
        password_reset("reset-1", t(5)),
    ]);
    check(given, login(true, t(6)), Ok(vec![logged_in(t(6))]));
}

/// An expired, used, superseded or never issued token resets nothing.
#[test]
fn resetting_with_a_token_that_is_not_the_valid_one_is_rejected() {
    let issued = || reset_token("reset-1", t(60));
    for (given, token, now, error) in [
        (vec![issued()], "reset-1", t(61), ResetTokenExpired),
        (
            vec![issued(), password_reset("reset-1", t(5))],
            "reset-1",
            t(6),
            ResetTokenAlreadyUsed,
        ),
        (
            vec![issued(), reset_token("reset-2", t(70))],
            "reset-1",
            t(20),
            ResetTokenSuperseded,
        ),
        (vec![issued()], "reset-x", t(20), ResetTokenUnknown),
    ] {
        check(active_then(given), reset(token, now), Err(error));
    }
}

#[test]
fn resetting_for_an_unknown_user_is_not_found() {
    check(vec![], reset("reset-1", t(20)), Err(NotFound));
}

#[test]
fn resetting_for_a_deactivated_user_is_rejected() {
    let given = active_then([reset_token("reset-1", t(60)), deactivated()]);
    check(given, reset("reset-1", t(20)), Err(Deactivated));
}

#[test]
fn reset_requests_per_account_are_limited_within_a_token_lifetime() {
    let services = UserServices {
        max_reset_requests: 2,
        ..UserServices::default()
    };
    let given = active_then([
        reset_token("sha256:one", t(1) + Duration::hours(1)),
        reset_token("sha256:two", t(2) + Duration::hours(1)),
    ]);
    UserTest::with(services.clone())
        .given(given.clone())
        .when(request_reset("sha256:three", t(3)))
        .then_expect_error(TooManyResetRequests);
    // Once the earlier tokens expired, a new one is issued.
    let later = t(1) + Duration::hours(2);
    UserTest::with(services)
        .given(given)
        .when(request_reset("sha256:three", later))
        .then_expect_events(vec![reset_token(
            "sha256:three",
            later + Duration::hours(1),
        )]);
}

/// The `PasswordReset` of `reset(token, at)`.
fn password_reset(token: &str, at: DateTime<Utc>) -> UserEvent {
    UserEvent::PasswordReset {
        token_hash: token.to_owned(),
        password_hash: "hash-2".to_owned(),
        at,
    }
}
