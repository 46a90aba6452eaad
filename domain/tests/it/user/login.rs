//! Logging in: failures recorded, lockout and its policy.

use super::*;
use UserError::*;

/// An active user who failed to log in at minutes 1 to `failures`.
fn active_after_failures(failures: i64) -> Vec<UserEvent> {
    active_then((1..=failures).map(|n| failed(t(n), n as u32)))
}

#[test]
fn a_matching_password_logs_in() {
    let logged_in = UserEvent::LoginSucceeded { at: t(0) };
    check(active(), login(true, t(0)), Ok(vec![logged_in]));
}

#[test]
fn a_wrong_password_is_recorded_not_rejected() {
    check(active(), login(false, t(0)), Ok(vec![failed(t(0), 1)]));
}

#[test]
fn the_fifth_consecutive_failure_locks_the_account_for_15_minutes() {
    let locked = vec![failed(t(5), 5), UserEvent::UserLockedOut { until: t(20) }];
    check(active_after_failures(4), login(false, t(5)), Ok(locked));
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut given = active_after_failures(4);
    given.push(UserEvent::LoginSucceeded { at: t(5) });
    check(given, login(false, t(6)), Ok(vec![failed(t(6), 1)]));
}

#[test]
fn lockout_policy_comes_from_the_services() {
    let services = UserServices {
        max_failed_logins: 2,
        lockout: Duration::minutes(1),
        ..UserServices::default()
    };
    UserTest::with(services)
        .given(active_after_failures(1))
        .when(login(false, t(2)))
        .then_expect_events(vec![
            failed(t(2), 2),
            UserEvent::UserLockedOut { until: t(3) },
        ]);
}

#[test]
fn login_while_locked_out_is_rejected_even_with_the_right_password() {
    let given = active_then([UserEvent::UserLockedOut { until: t(15) }]);
    check(given, login(true, t(14)), Err(LockedOut { until: t(15) }));
}

#[test]
fn after_the_lockout_the_user_gets_fresh_attempts() {
    let given = active_then([failed(t(0), 5), UserEvent::UserLockedOut { until: t(15) }]);
    check(given, login(false, t(15)), Ok(vec![failed(t(15), 1)]));
}

#[test]
fn login_of_an_unknown_user_is_not_found() {
    check(vec![], login(true, t(0)), Err(NotFound));
}

#[test]
fn login_of_a_pending_user_is_not_active() {
    check(
        vec![pending("tok-1", t(60))],
        login(true, t(0)),
        Err(NotActive),
    );
}

#[test]
fn login_of_a_deactivated_user_is_rejected() {
    check(
        active_then([deactivated()]),
        login(true, t(0)),
        Err(Deactivated),
    );
}
