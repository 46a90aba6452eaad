//! Accounts: created, updated, deactivated; stored roles, error codes and state.

use super::*;
use UserError::*;

/// The `UserCreated` of `create_user(role, institution_id)`.
fn user_created(role: Role, institution_id: Option<InstitutionId>) -> UserEvent {
    UserEvent::UserCreated {
        email: email(),
        name: name(),
        role,
        institution_id,
        password_hash: None,
    }
}

#[test]
fn create_user_records_a_teacher_without_password() {
    let teacher = user_created(Role::Teacher, Some(institution_id()));
    check(
        vec![],
        create_user(Role::Teacher, Some(institution_id())),
        Ok(vec![teacher]),
    );
}

#[test]
fn create_user_bootstraps_an_admin_without_institution() {
    let admin = user_created(Role::Admin, None);
    check(vec![], create_user(Role::Admin, None), Ok(vec![admin]));
}

#[test]
fn create_user_twice_is_rejected() {
    let again = create_user(Role::Teacher, Some(institution_id()));
    check(active(), again, Err(AlreadyExists));
}

#[test]
fn an_admin_with_an_institution_is_rejected() {
    let admin = create_user(Role::Admin, Some(institution_id()));
    check(vec![], admin, Err(AdminWithInstitution));
}

#[test]
fn other_roles_need_an_institution() {
    for role in [Role::Manager, Role::Teacher, Role::Student] {
        check(vec![], create_user(role, None), Err(InstitutionRequired));
    }
}

#[test]
fn an_observer_is_scoped_to_one_institution_or_the_platform() {
    for institution in [Some(institution_id()), None] {
        let observer = user_created(Role::Observer, institution);
        check(
            vec![],
            create_user(Role::Observer, institution),
            Ok(vec![observer]),
        );
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

fn update(name: Option<PersonName>, email: Option<Email>) -> UserCommand {
    UserCommand::UpdateUser { name, email }
}

fn deactivate(reason: &str) -> UserCommand {
    UserCommand::DeactivateUser {
        reason: reason.to_owned(),
    }
}

#[test]
fn updating_records_only_changed_fields() {
    let new_email = Email::parse("ada.l@example.org").unwrap();
    let changed = UserEvent::UserUpdated {
        name: None,
        email: Some(new_email.clone()),
    };
    check(
        active(),
        update(Some(name()), Some(new_email)),
        Ok(vec![changed]),
    );
}

#[test]
fn an_update_that_changes_nothing_records_nothing() {
    check(active(), update(Some(name()), None), Ok(vec![]));
}

#[test]
fn updating_an_unknown_user_is_not_found() {
    check(vec![], update(Some(name()), None), Err(NotFound));
}

#[test]
fn updating_a_deactivated_user_is_rejected() {
    let renamed = update(Some(PersonName::parse("Ada King").unwrap()), None);
    check(active_then([deactivated()]), renamed, Err(Deactivated));
}

#[test]
fn updating_a_pending_registration_is_rejected() {
    let given = vec![pending("tok-1", t(60))];
    check(given, update(Some(name()), None), Err(NotActive));
}

#[test]
fn deactivating_records_the_reason() {
    check(active(), deactivate("left"), Ok(vec![deactivated()]));
}

#[test]
fn a_pending_registration_can_be_deactivated() {
    let spam = UserEvent::UserDeactivated {
        reason: "spam".to_owned(),
    };
    check(
        vec![pending("tok-1", t(60))],
        deactivate("spam"),
        Ok(vec![spam]),
    );
}

#[test]
fn deactivating_twice_is_rejected() {
    check(
        active_then([deactivated()]),
        deactivate("again"),
        Err(AlreadyDeactivated),
    );
}

#[test]
fn deactivating_an_unknown_user_is_not_found() {
    check(vec![], deactivate("left"), Err(NotFound));
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
