//! Trusted sources: where the owner logged in from recently is not subject to the
//! account-wide ceiling, so a crowd of strangers cannot keep the owner out from there.

use super::*;
use UserError::*;

/// Failures from `sources` distinct strangers' addresses, from minute 1, each the first
/// of its source, then the one that reaches the ceiling: the whole account is locked
/// out until minute 16.
fn crowd_locks_the_account() -> Vec<UserEvent> {
    let mut events: Vec<UserEvent> = (1..=49u32)
        .map(|n| {
            let from = source(&format!("192.0.2.{n}"));
            failed_from(from, t(1), 1)
        })
        .collect();
    let last = source("192.0.2.250");
    events.extend([failed_from(last, t(1), 1), locked_out(None, t(16))]);
    events
}

/// The owner's second address, where they logged in from last week.
fn office() -> LoginSource {
    source("203.0.113.10")
}

fn logged_in_from(from: LoginSource, at: DateTime<Utc>) -> UserEvent {
    UserEvent::LoginSucceeded {
        at,
        source: Some(from),
    }
}

/// The fault: 50 failures from a crowd of addresses locked the whole account, the
/// owner's usual addresses too, so ten addresses could keep an administrator out.
#[test]
fn a_crowd_does_not_lock_the_owner_out_of_a_recent_address() {
    let given = active_then(
        [logged_in_from(office(), t(-7 * 24 * 60)), logged_in(t(-60))]
            .into_iter()
            .chain(crowd_locks_the_account()),
    );
    check(given.clone(), login(true, t(2)), Ok(vec![logged_in(t(2))]));
    check(
        given.clone(),
        login_from(Some(office()), true, t(2)),
        Ok(vec![logged_in_from(office(), t(2))]),
    );
    // A new address of the owner's is refused, as any stranger's is.
    check(
        given.clone(),
        login_from(Some(source("198.51.100.99")), true, t(2)),
        Err(LockedOut { until: t(16) }),
    );
    check(
        given,
        login_from(Some(source("192.0.2.1")), true, t(2)),
        Err(LockedOut { until: t(16) }),
    );
}

/// The owner getting in from a trusted address does not lift the lockout for the
/// others: the crowd waits it out.
#[test]
fn the_owners_login_during_the_lockout_does_not_lift_it_for_the_others() {
    let given = active_then(
        [logged_in(t(-60))]
            .into_iter()
            .chain(crowd_locks_the_account())
            .chain([logged_in(t(2))]),
    );
    check(
        given.clone(),
        login_from(Some(source("192.0.2.1")), true, t(3)),
        Err(LockedOut { until: t(16) }),
    );
    check(
        given,
        login_from(Some(source("192.0.2.1")), true, t(16)),
        Ok(vec![logged_in_from(source("192.0.2.1"), t(16))]),
    );
}

/// A trusted address keeps its own threshold: five failures in a row lock it out,
/// during an account-wide lockout too (which does not give it fresh attempts).
#[test]
fn a_trusted_address_keeps_its_own_lockout() {
    let given = active_then(
        [logged_in(t(-60)), failed(t(0), 1), failed(t(0), 2)]
            .into_iter()
            .chain(crowd_locks_the_account())
            .chain([failed(t(2), 3), failed(t(2), 4)]),
    );
    check(
        given.clone(),
        login(false, t(3)),
        Ok(vec![failed(t(3), 5), locked_out(Some(home()), t(18))]),
    );
    let locked = given
        .into_iter()
        .chain([failed(t(3), 5), locked_out(Some(home()), t(18))])
        .collect();
    check(locked, login(true, t(17)), Err(LockedOut { until: t(18) }));
}

/// A failure from a trusted address that reaches both its own threshold and the
/// ceiling locks both: the account for the others, the address for itself.
#[test]
fn reaching_both_thresholds_at_once_locks_the_address_too() {
    let mut given = active_then([logged_in(t(-60))]);
    given.extend((1..=45u32).map(|n| failed_from(source(&format!("192.0.2.{n}")), t(1), 1)));
    given.extend((1..=4).map(|n| failed(t(1), n)));
    check(
        given,
        login(false, t(1)),
        Ok(vec![
            failed(t(1), 5),
            locked_out(None, t(16)),
            locked_out(Some(home()), t(16)),
        ]),
    );
}

/// Trust lasts `trusted_source_window` (30 days by default) after the last success from
/// the address.
#[test]
fn trust_ends_a_window_after_the_last_success() {
    let days = |n: i64| t(0) - Duration::days(n);
    let given = |last: DateTime<Utc>| {
        active_then(
            [logged_in(last)]
                .into_iter()
                .chain(crowd_locks_the_account()),
        )
    };
    check(
        given(days(29)),
        login(true, t(2)),
        Ok(vec![logged_in(t(2))]),
    );
    check(
        given(days(31)),
        login(true, t(2)),
        Err(LockedOut { until: t(16) }),
    );
    let services = UserServices {
        trusted_source_window: Duration::days(7),
        ..UserServices::default()
    };
    UserTest::with(services)
        .given(given(days(8)))
        .when(login(true, t(2)))
        .then_expect_error(LockedOut { until: t(16) });
}

/// The state keeps a handful of trusted addresses, the most recent ones.
#[test]
fn only_the_most_recent_trusted_addresses_are_kept() {
    let addresses: Vec<LoginSource> = (1..=20u8)
        .map(|n| source(&format!("198.51.100.{n}")))
        .collect();
    let mut events = active();
    events.extend(
        addresses
            .iter()
            .enumerate()
            .map(|(n, from)| logged_in_from(*from, t(-100 + n as i64))),
    );
    let kept = replay(events.clone()).trusted_login_sources();
    assert!((1..=8).contains(&kept), "{kept} addresses kept");
    let given: Vec<UserEvent> = events
        .into_iter()
        .chain(crowd_locks_the_account())
        .collect();
    // The most recent is trusted, the oldest forgotten.
    check(
        given.clone(),
        login_from(addresses.last().copied(), true, t(2)),
        Ok(vec![logged_in_from(addresses[19], t(2))]),
    );
    check(
        given,
        login_from(Some(addresses[0]), true, t(2)),
        Err(LockedOut { until: t(16) }),
    );
}

/// A password reset ends every count and lockout, and the trust earned with the old
/// password.
#[test]
fn a_password_reset_ends_the_trust() {
    let given = active_then([
        logged_in(t(-60)),
        reset_token("tok", t(60)),
        UserEvent::PasswordReset {
            token_hash: "tok".to_owned(),
            password_hash: "hash-2".to_owned(),
            at: t(-30),
        },
    ]);
    assert_eq!(replay(given.clone()).trusted_login_sources(), 0);
    let locked: Vec<UserEvent> = given.into_iter().chain(crowd_locks_the_account()).collect();
    check(locked, login(true, t(2)), Err(LockedOut { until: t(16) }));
}

fn replay(events: Vec<UserEvent>) -> User {
    use cqrs_es::Aggregate;
    let mut user = User::default();
    for event in events {
        user.apply(event);
    }
    user
}
