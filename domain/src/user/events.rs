//! What happened to a [`super::User`]: its events (the stored contract) and their samples.

use super::*;
use crate::event_types::impl_domain_event;

/// Version of `LoginSucceeded`, `LoginFailed` and `UserLockedOut`. 1.0 had no login
/// source: a failure counted against the account and a lockout locked all of it. The
/// upcasters (`crate::upcasters`) give 1.0 payloads `source: null` (and `LoginFailed`
/// `counts_until: null`), which means exactly that.
pub const LOGIN_EVENTS_VERSION: &str = "2.0";

/// Events of the `user` aggregate. Stored as internally tagged JSON:
/// `{"type": "UserCreated", ...fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    PendingUserRegisterCreated {
        email: Email,
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    UserCreated {
        email: Email,
        name: PersonName,
        role: Role,
        institution_id: Option<InstitutionId>,
        password_hash: Option<String>,
    },
    /// Version 2.0 added `source` (see [`LOGIN_EVENTS_VERSION`]).
    LoginSucceeded {
        at: DateTime<Utc>,
        /// Where the login came from; `None`: unknown (all logins before 2.0).
        source: Option<LoginSource>,
    },
    /// Version 2.0 added `source` and `counts_until`.
    LoginFailed {
        at: DateTime<Utc>,
        /// Failures in a row from `source` (from the account, before 2.0), this one
        /// included.
        consecutive_failures: u32,
        /// Where the login came from; `None`: unknown (all failures before 2.0), counted
        /// as the account's.
        source: Option<LoginSource>,
        /// Until when this failure counts against its source and towards the account's
        /// ceiling; `None` (before 2.0): until a success or a lockout.
        counts_until: Option<DateTime<Utc>>,
    },
    /// Version 2.0 added `source`: only that source is locked out. `None` locks the
    /// whole account: the ceiling of failures from all sources was reached, the source
    /// was unknown, or the event was recorded before 2.0.
    UserLockedOut {
        until: DateTime<Utc>,
        source: Option<LoginSource>,
    },
    ResetPasswordTokenCreated {
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    /// Carries the new hash (the aggregate is where login checks read it from) and the
    /// token it consumed (so the token cannot be used twice).
    PasswordReset {
        token_hash: String,
        password_hash: String,
        at: DateTime<Utc>,
    },
    /// Only the changed fields are `Some`.
    UserUpdated {
        name: Option<PersonName>,
        email: Option<Email>,
    },
    UserDeactivated {
        reason: String,
    },
    /// Someone signed up with the e-mail of an account that is already registered
    /// (active or deactivated). Nothing changes; it is recorded so that the owner is
    /// told (by e-mail, if the account is active) and so that the caller's answer is
    /// the same as for a new sign-up: whether an e-mail has an account is not told.
    RegisteredEmailSignUpAttempted {
        at: DateTime<Utc>,
    },
    /// Recorded with the manager's `UserCreated` by a confirmed sign-up: the
    /// institution the new manager registered. Creating it is a second command on
    /// another aggregate; this event is what lets the processor finish that if the
    /// caller stopped in between (the `institution.create` task).
    SignUpConfirmed {
        institution_id: InstitutionId,
        institution_name: InstitutionName,
    },
    /// A change of the account's e-mail to `new_email` was asked for: the link to
    /// confirm it goes to the new address, a notice to the current one. Nothing
    /// changes until it is confirmed (then `UserUpdated` records the new address).
    EmailChangeRequested {
        /// The address the account had when the change was asked for: it is told.
        previous_email: Option<Email>,
        new_email: Email,
        token_hash: String,
        expires_at: DateTime<Utc>,
        /// Where the confirmation link goes (see [`EmailChangeLink`]).
        link_to: EmailChangeLink,
    },
}

/// Who must confirm an e-mail change by following the link.
///
/// The owner asking, or an account never activated (no password yet: its address may
/// simply be wrong): the new address, which proves it can receive mail. Someone else
/// asking for an active account: the current address, so the owner consents; otherwise
/// a manager could move a teacher's account to an address of its own, reset the
/// password there and take the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailChangeLink {
    NewAddress,
    CurrentAddress,
}

impl_domain_event!(UserEvent {
    PendingUserRegisterCreated => PENDING_USER_REGISTER_CREATED,
    UserCreated => USER_CREATED,
    LoginSucceeded => LOGIN_SUCCEEDED @ LOGIN_EVENTS_VERSION,
    LoginFailed => LOGIN_FAILED @ LOGIN_EVENTS_VERSION,
    UserLockedOut => USER_LOCKED_OUT @ LOGIN_EVENTS_VERSION,
    ResetPasswordTokenCreated => RESET_PASSWORD_TOKEN_CREATED,
    PasswordReset => PASSWORD_RESET,
    UserUpdated => USER_UPDATED,
    UserDeactivated => USER_DEACTIVATED,
    RegisteredEmailSignUpAttempted => REGISTERED_EMAIL_SIGN_UP_ATTEMPTED,
    SignUpConfirmed => SIGN_UP_CONFIRMED,
    EmailChangeRequested => EMAIL_CHANGE_REQUESTED,
});

/// One instance of every [`UserEvent`] variant, for the event catalog and round-trip
/// tests. Keep in step with the enum: a test parses the enum and fails on a gap.
pub fn sample_events() -> Vec<UserEvent> {
    use crate::samples::*;
    vec![
        UserEvent::EmailChangeRequested {
            previous_email: Some(email()),
            new_email: email(),
            token_hash: "sha256:email-change".to_owned(),
            expires_at: instant(),
            link_to: EmailChangeLink::CurrentAddress,
        },
        UserEvent::PendingUserRegisterCreated {
            email: email(),
            token_hash: "sha256:confirm".to_owned(),
            expires_at: instant(),
        },
        UserEvent::UserCreated {
            email: email(),
            name: person_name(),
            role: Role::Manager,
            institution_id: Some(institution_id()),
            password_hash: Some("$argon2id$v=19$...".to_owned()),
        },
        UserEvent::LoginSucceeded {
            at: instant(),
            source: Some(login_source()),
        },
        UserEvent::LoginFailed {
            at: instant(),
            consecutive_failures: 2,
            source: Some(login_source()),
            counts_until: Some(instant() + Duration::minutes(15)),
        },
        UserEvent::UserLockedOut {
            until: instant() + Duration::minutes(15),
            source: Some(login_source()),
        },
        UserEvent::ResetPasswordTokenCreated {
            token_hash: "sha256:reset".to_owned(),
            expires_at: instant(),
        },
        UserEvent::PasswordReset {
            token_hash: "sha256:reset".to_owned(),
            password_hash: "$argon2id$v=19$...".to_owned(),
            at: instant(),
        },
        UserEvent::UserUpdated {
            name: Some(person_name()),
            email: None,
        },
        UserEvent::UserDeactivated {
            reason: "left the institution".to_owned(),
        },
        UserEvent::RegisteredEmailSignUpAttempted { at: instant() },
        UserEvent::SignUpConfirmed {
            institution_id: institution_id(),
            institution_name: InstitutionName::parse("Escola Aurora").unwrap(),
        },
    ]
}
