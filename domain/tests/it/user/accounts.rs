//! Accounts: created, updated, deactivated; stored roles, error codes and state.

use super::*;

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
