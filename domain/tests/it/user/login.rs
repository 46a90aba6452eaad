//! Logging in: failures recorded, lockouts per account and source, the account-wide
//! ceiling, the policy, and a state that forgets what no longer matters.

use cqrs_es::Aggregate;

use super::*;
use UserError::*;

/// Where a stranger who knows the owner's e-mail tries from.
fn stranger() -> LoginSource {
    source("203.0.113.66")
}

/// An active user who failed to log in from `from` at minutes 1 to `failures`.
fn after_failures_from(from: LoginSource, failures: i64) -> Vec<UserEvent> {
    active_then((1..=failures).map(|n| failed_from(from, t(n), n as u32)))
}

/// The state after `events`, as the event store rebuilds it.
fn replayed(events: impl IntoIterator<Item = UserEvent>) -> User {
    let mut user = User::default();
    for event in events {
        user.apply(event);
    }
    user
}

#[test]
fn a_matching_password_logs_in_and_records_its_source() {
    check(active(), login(true, t(0)), Ok(vec![logged_in(t(0))]));
}

#[test]
fn a_wrong_password_is_recorded_not_rejected() {
    check(active(), login(false, t(0)), Ok(vec![failed(t(0), 1)]));
}

#[test]
fn the_fifth_consecutive_failure_from_a_source_locks_that_source_for_15_minutes() {
    let locked = vec![
        failed_from(stranger(), t(5), 5),
        locked_out(Some(stranger()), t(20)),
    ];
    check(
        after_failures_from(stranger(), 4),
        login_from(Some(stranger()), false, t(5)),
        Ok(locked),
    );
}

#[test]
fn a_locked_out_source_is_refused_even_with_the_right_password() {
    let given = active_then([locked_out(Some(stranger()), t(15))]);
    check(
        given,
        login_from(Some(stranger()), true, t(14)),
        Err(LockedOut { until: t(15) }),
    );
}

/// The fault this design fixes: five failures from anywhere used to lock the owner
/// out, so anyone who knew the e-mail could keep them out for ever.
#[test]
fn a_stranger_locked_out_does_not_lock_out_the_owner() {
    let mut given = after_failures_from(stranger(), 5);
    given.push(locked_out(Some(stranger()), t(20)));
    check(given.clone(), login(true, t(6)), Ok(vec![logged_in(t(6))]));
    // Nor does the owner's own wrong password count the stranger's failures.
    check(given, login(false, t(6)), Ok(vec![failed(t(6), 1)]));
}

#[test]
fn an_ipv6_client_is_one_source_across_its_64() {
    let first = source("2001:db8:7:1::1");
    let given = after_failures_from(first, 4);
    let same_64 = source("2001:db8:7:1:ffff::2");
    check(
        given,
        login_from(Some(same_64), false, t(6)),
        Ok(vec![
            failed_from(same_64, t(6), 5),
            locked_out(Some(same_64), t(21)),
        ]),
    );
}

#[test]
fn a_success_resets_its_own_sources_count() {
    let mut given = after_failures_from(home(), 4);
    given.push(logged_in(t(5)));
    check(given, login(false, t(6)), Ok(vec![failed(t(6), 1)]));
}

/// The owner logging in must not give a stranger fresh attempts.
#[test]
fn the_owners_success_resets_no_other_sources_count_or_lockout() {
    let mut given = after_failures_from(stranger(), 4);
    given.push(logged_in(t(5)));
    check(
        given,
        login_from(Some(stranger()), false, t(6)),
        Ok(vec![
            failed_from(stranger(), t(6), 5),
            locked_out(Some(stranger()), t(21)),
        ]),
    );
    let given = active_then([locked_out(Some(stranger()), t(15)), logged_in(t(5))]);
    check(
        given,
        login_from(Some(stranger()), true, t(6)),
        Err(LockedOut { until: t(15) }),
    );
}

#[test]
fn after_its_lockout_a_source_gets_fresh_attempts() {
    let given = active_then([
        failed_from(stranger(), t(0), 5),
        locked_out(Some(stranger()), t(15)),
    ]);
    check(
        given,
        login_from(Some(stranger()), false, t(15)),
        Ok(vec![failed_from(stranger(), t(15), 1)]),
    );
}

#[test]
fn a_failure_stops_counting_one_lockout_duration_later() {
    // Four failures at minutes 1..=4 count until minutes 16..=19.
    check(
        after_failures_from(home(), 4),
        login(false, t(19)),
        Ok(vec![failed(t(19), 1)]),
    );
    check(
        after_failures_from(home(), 4),
        login(false, t(18)),
        Ok(vec![failed(t(18), 5), locked_out(Some(home()), t(33))]),
    );
}

#[test]
fn lockout_policy_comes_from_the_services() {
    let services = UserServices {
        max_failed_logins: 2,
        lockout: Duration::minutes(1),
        ..UserServices::default()
    };
    UserTest::with(services)
        .given(active_then([failed_from(home(), t(2), 1)]))
        .when(login(false, t(2)))
        .then_expect_events(vec![
            UserEvent::LoginFailed {
                at: t(2),
                consecutive_failures: 2,
                source: Some(home()),
                counts_until: Some(t(3)),
            },
            locked_out(Some(home()), t(3)),
        ]);
}

/// Failures from `sources` distinct addresses, one a minute from minute 1, each the
/// first of its source.
fn crowd(sources: u32) -> Vec<UserEvent> {
    (1..=sources)
        .map(|n| {
            let from = source(&format!("192.0.2.{n}"));
            failed_from(from, t(0) + Duration::seconds(i64::from(n)), 1)
        })
        .collect()
}

#[test]
fn the_50th_failure_from_a_crowd_locks_the_whole_account() {
    let given = active_then(crowd(49));
    let last = source("192.0.2.250");
    check(
        given,
        login_from(Some(last), false, t(1)),
        Ok(vec![failed_from(last, t(1), 1), locked_out(None, t(16))]),
    );
    // ... against the owner too: the ceiling is what bounds a distributed guesser.
    let locked = active_then(
        crowd(49)
            .into_iter()
            .chain([failed_from(last, t(1), 1), locked_out(None, t(16))]),
    );
    check(locked, login(true, t(2)), Err(LockedOut { until: t(16) }));
}

#[test]
fn the_ceiling_counts_failures_since_the_last_success_within_the_window() {
    let services = UserServices {
        max_failed_logins_per_account: 3,
        ..UserServices::default()
    };
    let failure = |n: u8, at| failed_from(source(&format!("192.0.2.{n}")), at, 1);
    // Two failures, a success, two more: no lockout.
    UserTest::with(services.clone())
        .given(active_then([
            failure(1, t(1)),
            failure(2, t(2)),
            logged_in(t(3)),
        ]))
        .when(login_from(Some(source("192.0.2.3")), false, t(4)))
        .then_expect_events(vec![failure(3, t(4))]);
    // Two failures that no longer count (the last one's 15 minutes are over).
    UserTest::with(services.clone())
        .given(active_then([failure(1, t(1)), failure(2, t(2))]))
        .when(login_from(Some(source("192.0.2.3")), false, t(17)))
        .then_expect_events(vec![failure(3, t(17))]);
    // Three within the window: the account.
    UserTest::with(services)
        .given(active_then([failure(1, t(1)), failure(2, t(2))]))
        .when(login_from(Some(source("192.0.2.3")), false, t(16)))
        .then_expect_events(vec![failure(3, t(16)), locked_out(None, t(31))]);
}

#[test]
fn a_login_from_no_known_source_counts_as_the_account_as_before() {
    let unknown = |at, n| UserEvent::LoginFailed {
        at,
        consecutive_failures: n,
        source: None,
        counts_until: Some(at + Duration::minutes(15)),
    };
    let given = active_then((1..=4).map(|n| unknown(t(n), n as u32)));
    check(
        given.clone(),
        login_from(None, false, t(5)),
        Ok(vec![unknown(t(5), 5), locked_out(None, t(20))]),
    );
    let locked = given
        .into_iter()
        .chain([unknown(t(5), 5), locked_out(None, t(20))]);
    check(
        locked.collect(),
        login(true, t(6)),
        Err(LockedOut { until: t(20) }),
    );
}

#[test]
fn the_state_forgets_sources_whose_failures_and_lockouts_ended() {
    let mut events = active_then(crowd(40));
    events.extend([
        failed_from(stranger(), t(2), 5),
        locked_out(Some(stranger()), t(30)),
    ]);
    assert_eq!(replayed(events.clone()).login_sources_remembered(), 41);
    // Minute 20: the crowd's failures (minute 0) stopped counting at minute 15; the
    // stranger's lockout lasts until minute 30.
    events.push(logged_in(t(20)));
    let user = replayed(events.clone());
    assert_eq!(user.login_sources_remembered(), 1);
    assert_eq!(
        user.locked_out_until(Some(&stranger()), t(20), &UserServices::default()),
        Some(t(30))
    );
    // Minute 30: nothing left to remember.
    events.push(failed(t(30), 1));
    let user = replayed(events);
    assert_eq!(
        user.login_sources_remembered(),
        1,
        "only home's new failure"
    );
    assert_eq!(
        user.locked_out_until(Some(&stranger()), t(30), &UserServices::default()),
        None
    );
}

#[test]
fn a_lockout_of_the_whole_account_leaves_no_counts_behind() {
    let mut events = active_then(crowd(49));
    events.extend([failed_from(stranger(), t(1), 1), locked_out(None, t(16))]);
    let user = replayed(events);
    assert_eq!(user.login_sources_remembered(), 0);
    assert_eq!(user.locked_until(), Some(t(16)));
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
