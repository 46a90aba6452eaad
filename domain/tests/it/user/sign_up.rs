//! Sign-up and its confirmation, and e-mail changes confirmed with their token.

use super::*;
use UserError::*;

#[test]
fn sign_up_creates_a_pending_registration() {
    check(
        vec![],
        sign_up("tok-1", t(60), t(0)),
        Ok(vec![pending("tok-1", t(60))]),
    );
}

#[test]
fn signing_up_again_while_pending_reissues_the_token() {
    let reissued = pending("tok-2", t(90));
    check(
        vec![pending("tok-1", t(60))],
        sign_up("tok-2", t(90), t(30)),
        Ok(vec![reissued]),
    );
}

#[test]
fn sign_up_of_a_registered_user_is_recorded_and_changes_nothing() {
    let attempted = UserEvent::RegisteredEmailSignUpAttempted { at: t(0) };
    for given in [active(), active_then([deactivated()])] {
        check(
            given,
            sign_up("tok-1", t(60), t(0)),
            Ok(vec![attempted.clone()]),
        );
    }
}

#[test]
fn sign_up_with_another_email_while_pending_is_rejected() {
    let other = UserCommand::SignUp {
        email: Email::parse("other@example.org").unwrap(),
        confirmation_token_hash: "tok-2".to_owned(),
        expires_at: t(60),
        now: t(0),
    };
    check(
        vec![pending("tok-1", t(60))],
        other,
        Err(SignUpEmailMismatch),
    );
}

#[test]
fn sign_up_with_a_token_already_expired_is_rejected() {
    check(
        vec![],
        sign_up("tok-1", t(0), t(0)),
        Err(TokenExpiryNotInFuture),
    );
}

#[test]
fn confirming_creates_the_institution_manager() {
    let confirmed = vec![
        created(Role::Manager),
        UserEvent::SignUpConfirmed {
            institution_id: institution_id(),
            institution_name: InstitutionName::parse("Escola Aurora").unwrap(),
        },
    ];
    check(
        vec![pending("tok-1", t(60))],
        confirm("tok-1", t(10)),
        Ok(confirmed),
    );
}

#[test]
fn confirming_without_a_sign_up_is_not_found() {
    check(vec![], confirm("tok-1", t(10)), Err(NotFound));
}

#[test]
fn confirming_twice_is_rejected() {
    let given = vec![pending("tok-1", t(60)), created(Role::Manager)];
    check(given, confirm("tok-1", t(10)), Err(AlreadyConfirmed));
}

#[test]
fn confirming_a_deactivated_registration_is_rejected() {
    let spam = UserEvent::UserDeactivated {
        reason: "spam".to_owned(),
    };
    check(
        vec![pending("tok-1", t(60)), spam],
        confirm("tok-1", t(10)),
        Err(Deactivated),
    );
}

#[test]
fn confirming_with_an_unknown_expired_or_superseded_token_is_rejected() {
    let first = || pending("tok-1", t(60));
    let cases = [
        (vec![first()], "tok-x", t(10), SignUpTokenUnknown),
        (vec![first()], "tok-1", t(60), SignUpTokenExpired),
        (
            vec![first(), pending("tok-2", t(90))],
            "tok-1",
            t(10),
            SignUpTokenSuperseded,
        ),
    ];
    for (given, token, at, error) in cases {
        check(given, confirm(token, at), Err(error));
    }
}

#[test]
fn an_email_change_applies_only_when_confirmed_with_its_token() {
    let new_email = Email::parse("new@aula.test").unwrap();
    let current = active().iter().find_map(|event| match event {
        UserEvent::UserCreated { email, .. } => Some(email.clone()),
        _ => None,
    });
    let requested_to = |link_to| UserEvent::EmailChangeRequested {
        previous_email: current.clone(),
        new_email: new_email.clone(),
        token_hash: "sha256:change".into(),
        expires_at: t(10) + Duration::hours(24),
        link_to,
    };
    let requested = requested_to(EmailChangeLink::NewAddress);
    let request = |by_owner: bool| UserCommand::RequestEmailChange {
        new_email: new_email.clone(),
        token_hash: "sha256:change".into(),
        now: t(10),
        by_owner,
    };
    check(active(), request(true), Ok(vec![requested.clone()]));
    // Someone else asking for an active account: the owner confirms, at its address.
    let to_current = requested_to(EmailChangeLink::CurrentAddress);
    check(active(), request(false), Ok(vec![to_current]));
    let confirm_change = |token: &str, now: DateTime<Utc>| UserCommand::ConfirmEmailChange {
        token_hash: token.into(),
        now,
    };
    let mut given = active_then([requested.clone()]);
    let other = confirm_change("sha256:other", t(11));
    check(given.clone(), other, Err(EmailChangeTokenUnknown));
    let late = confirm_change("sha256:change", t(10) + Duration::hours(25));
    check(given.clone(), late, Err(EmailChangeTokenExpired));
    let changed = UserEvent::UserUpdated {
        name: None,
        email: Some(new_email),
    };
    let confirmed = confirm_change("sha256:change", t(11));
    check(given.clone(), confirmed, Ok(vec![changed.clone()]));
    // Used once: a second confirmation finds nothing pending.
    given.push(changed);
    let again = confirm_change("sha256:change", t(12));
    check(given, again, Err(EmailChangeTokenUnknown));
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

#[test]
fn a_sign_up_lapses_once_its_last_link_expires_and_never_once_confirmed() {
    use cqrs_es::Aggregate;
    let mut user = User::default();
    assert!(
        !user.sign_up_lapsed(t(0)),
        "no sign-up at all is not a lapsed one"
    );
    user.apply(pending("tok-1", t(60)));
    user.apply(pending("tok-2", t(90)));
    assert!(
        !user.sign_up_lapsed(t(60)),
        "the second link is still valid"
    );
    assert!(user.sign_up_lapsed(t(90)));
    // Confirmed (what `confirming_twice_is_rejected` starts from).
    user.apply(created(Role::Manager));
    assert!(
        !user.sign_up_lapsed(t(1000)),
        "a confirmed sign-up holds its address"
    );
}
