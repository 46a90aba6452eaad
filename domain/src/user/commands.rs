//! What a [`super::User`] is asked to do.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Actor: anonymous visitor. Starts (or restarts) a self-service registration.
    SignUp {
        email: Email,
        confirmation_token_hash: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// Actor: the visitor following the e-mailed link. Creates the institution manager.
    /// `institution_name` is not stored here: the caller uses the same input to create
    /// the institution with `institution_id` right after this succeeds.
    ConfirmSignUp {
        token_hash: String,
        name: PersonName,
        password_hash: String,
        institution_id: InstitutionId,
        institution_name: InstitutionName,
        now: DateTime<Utc>,
    },
    /// Actor: bootstrap (the first admin), a manager (teacher and student accounts) or
    /// the demo-data seeding task.
    CreateUser {
        email: Email,
        name: PersonName,
        role: Role,
        institution_id: Option<InstitutionId>,
        /// `None` for accounts whose owner sets a password through the reset flow.
        password_hash: Option<String>,
    },
    /// Actor: anyone at the login form. The caller verified the password against the
    /// stored hash; see the module docs for how a failure is reported. Failures and
    /// lockouts are counted per `source`; `None` (unknown) counts as the whole
    /// account, as every login did before sources.
    AttemptLogin {
        password_matches: bool,
        source: Option<LoginSource>,
        now: DateTime<Utc>,
    },
    /// Actor: anyone at the "forgot password" form. The token expires
    /// [`UserServices::reset_token_ttl`] after `now`.
    RequestPasswordReset {
        token_hash: String,
        now: DateTime<Utc>,
    },
    /// Actor: the user following the reset link.
    ResetPassword {
        token_hash: String,
        new_password_hash: String,
        now: DateTime<Utc>,
    },
    /// Actor: the user or a manager/admin. `None` fields are left as they are.
    UpdateUser {
        name: Option<PersonName>,
        email: Option<Email>,
    },
    /// Actor: a manager or admin. Users are never deleted.
    DeactivateUser { reason: String },
    /// Actor: the user, or a manager/admin on its account. The address changes only
    /// when the link sent to the new address is followed ([`UserCommand::ConfirmEmailChange`]);
    /// the current address is told. A newer request supersedes an older one.
    RequestEmailChange {
        new_email: Email,
        token_hash: String,
        now: DateTime<Utc>,
        /// The account's owner asks (not a manager or admin on its behalf).
        by_owner: bool,
    },
    /// Actor: whoever holds the token e-mailed to the new address.
    ConfirmEmailChange {
        token_hash: String,
        now: DateTime<Utc>,
    },
}
