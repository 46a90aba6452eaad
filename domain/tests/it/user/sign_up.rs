//! Sign-up and its confirmation, and e-mail changes confirmed with their token.

use super::*;

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
