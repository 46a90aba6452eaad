//! Logging in: failures recorded, lockout and its policy.

use super::*;

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
