//! The `User` aggregate: login accounts, from sign-up through confirmation, logins,
//! lockouts, password resets and deactivation. Users are never deleted.
//!
//! Secrets never reach the domain in clear: callers hash tokens and passwords and pass
//! the hashes in, and compare a submitted password themselves (`password_matches`), so
//! this module stays pure. Policy values (lockout thresholds and duration, trust window,
//! reset-token lifetime) come from [`UserServices`]. Lockouts are per account and
//! source, with an account-wide ceiling that spares the owner's recent sources
//! (`lockout.rs`).
//!
//! **Invariant:** a failed login is *recorded*, so `AttemptLogin` with a wrong password
//! returns `Ok(())` with `LoginFailed` (and maybe `UserLockedOut`) events; the caller must
//! inspect the returned events to tell the user the login failed. Only refusals that need
//! no record (unknown, pending, deactivated, already locked out) are `Err`.
//!
//! Email uniqueness across users cannot be decided by one aggregate; the caller derives
//! or looks up the `UserId` for an e-mail before sending commands.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::impl_aggregate;
use crate::errors::{impl_rejection, RejectionKind};
use crate::values::{Email, InstitutionId, InstitutionName, LoginSource, PersonName};

mod commands;
mod errors;
mod events;
mod lockout;

pub use commands::UserCommand;
pub use errors::UserError;
pub use events::{sample_events, EmailChangeLink, UserEvent, LOGIN_EVENTS_VERSION};

use lockout::Logins;

/// What a user may do. Admins operate the platform; managers, teachers and students
/// belong to one institution; an observer (support staff) reads what its scope allows
/// and changes nothing: one institution's, or the whole platform's when it has none.
///
/// Stored in `UserCreated` by variant name: a new variant is added at the end and old
/// events load unchanged (`domain/tests/user.rs`, `stored_roles_still_load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    Manager,
    Teacher,
    Student,
    Observer,
}

/// Policy values for the user aggregate. `Default` gives the product defaults; the
/// caller may build its own from configuration.
#[derive(Debug, Clone)]
pub struct UserServices {
    /// Consecutive failed logins from one source (an IPv4 address, an IPv6 /64) that
    /// lock that source out; other sources can still log in. Applies to trusted
    /// sources too. Setting: `AULA_LOGIN_MAX_FAILURES_PER_SOURCE`.
    pub max_failed_logins: u32,
    /// Consecutive failed logins from all sources together (none more than `lockout`
    /// after the one before, no success in between) that lock the whole account,
    /// except for its trusted sources (see `trusted_source_window`). Setting:
    /// `AULA_LOGIN_MAX_FAILURES_PER_ACCOUNT`.
    ///
    /// The trade-off: per-source lockouts alone leave a guesser with many addresses
    /// unbounded; this ceiling bounds it (fewer than this many guesses, then the
    /// account locks; as many again after each of the owner's successes). Such a
    /// crowd (with the defaults, 10 sources or more) then locks out every source but
    /// the trusted ones: the owner still logs in from where they did recently, not
    /// from a new address, until the lockout ends or a password reset.
    pub max_failed_logins_per_account: u32,
    /// How long a lockout lasts, and how long a failure counts towards one. Setting:
    /// `AULA_LOGIN_LOCKOUT_MINUTES`.
    pub lockout: Duration,
    /// How long after its last successful login a source stays trusted: not subject
    /// to the whole account's lockout (its own still applies). Only the most recent
    /// few sources are remembered. Setting: `AULA_LOGIN_TRUSTED_SOURCE_DAYS`.
    pub trusted_source_window: Duration,
    /// How long a reset-password token stays valid.
    pub reset_token_ttl: Duration,
    /// Reset e-mails an account receives at most within one reset-token lifetime:
    /// strangers can ask for resets of any address, so one mailbox must not be
    /// flooded.
    pub max_reset_requests: u32,
    /// Sign-up links a pending address receives at most while earlier ones are valid.
    pub max_sign_up_emails: u32,
    /// How long the link that confirms a new e-mail address stays valid.
    pub email_change_ttl: Duration,
}

impl Default for UserServices {
    fn default() -> Self {
        Self {
            max_failed_logins: 5,
            max_failed_logins_per_account: 50,
            lockout: Duration::minutes(15),
            trusted_source_window: Duration::days(30),
            reset_token_ttl: Duration::hours(1),
            max_reset_requests: 3,
            max_sign_up_emails: 3,
            email_change_ttl: Duration::hours(24),
        }
    }
}

/// Where the account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    /// No event yet.
    #[default]
    Unregistered,
    /// Signed up, waiting for confirmation.
    Pending,
    Active,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IssuedToken {
    hash: String,
    expires_at: DateTime<Utc>,
    used: bool,
}

impl IssuedToken {
    /// A token just sent: not used yet.
    fn sent(hash: String, expires_at: DateTime<Utc>) -> Self {
        Self {
            hash,
            expires_at,
            used: false,
        }
    }
}

/// Looks `hash` up among issued tokens (oldest first; the last one is current).
enum TokenLookup {
    Unknown,
    Used,
    Superseded,
    Expired,
    Valid,
}

fn lookup_token(tokens: &[IssuedToken], hash: &str, now: DateTime<Utc>) -> TokenLookup {
    let Some(position) = tokens.iter().rposition(|token| token.hash == hash) else {
        return TokenLookup::Unknown;
    };
    let token = &tokens[position];
    if token.used {
        TokenLookup::Used
    } else if position + 1 != tokens.len() {
        TokenLookup::Superseded
    } else if token.expires_at <= now {
        TokenLookup::Expired
    } else {
        TokenLookup::Valid
    }
}

/// How many of `tokens` are still valid at `now` (not yet expired, used or not): what
/// was sent within one token lifetime, which limits how many more are sent.
fn unexpired(tokens: &[IssuedToken], now: DateTime<Utc>) -> usize {
    tokens.iter().filter(|token| token.expires_at > now).count()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    status: UserStatus,
    email: Option<Email>,
    name: Option<PersonName>,
    role: Option<Role>,
    institution_id: Option<InstitutionId>,
    password_hash: Option<String>,
    signup_tokens: Vec<IssuedToken>,
    reset_tokens: Vec<IssuedToken>,
    logins: Logins,
    credential_version: u32,
    /// The last requested e-mail change not yet confirmed: address, token hash, expiry.
    pending_email: Option<(Email, String, DateTime<Utc>)>,
}

impl User {
    /// Whether the account has a password (it was activated).
    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// The new address of the pending e-mail change that `token_hash` confirms.
    pub fn pending_email_change(&self, token_hash: &str) -> Option<&Email> {
        self.pending_email
            .as_ref()
            .filter(|(_, hash, _)| hash == token_hash)
            .map(|(email, _, _)| email)
    }

    /// How many times the account's credentials were replaced (password resets).
    /// Access tokens carry the version they were issued under; a token of an older
    /// version no longer works.
    pub fn credential_version(&self) -> u32 {
        self.credential_version
    }
    pub fn status(&self) -> UserStatus {
        self.status
    }
    /// A sign-up nobody confirmed whose every link has expired at `now`: it cannot
    /// become an account any more, so the address it named may go to someone else.
    pub fn sign_up_lapsed(&self, now: DateTime<Utc>) -> bool {
        self.status == UserStatus::Pending && unexpired(&self.signup_tokens, now) == 0
    }
    /// Whether `token_hash` is one of this account's own sign-up links (used or not).
    pub fn issued_sign_up_token(&self, token_hash: &str) -> bool {
        self.signup_tokens
            .iter()
            .any(|token| token.hash == token_hash)
    }
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
    pub fn name(&self) -> Option<&PersonName> {
        self.name.as_ref()
    }
    pub fn role(&self) -> Option<Role> {
        self.role
    }
    pub fn institution_id(&self) -> Option<InstitutionId> {
        self.institution_id
    }
    /// The hash the caller verifies a submitted password against.
    pub fn password_hash(&self) -> Option<&str> {
        self.password_hash.as_deref()
    }
    /// Until when the whole account was locked out (ended or not).
    pub fn locked_until(&self) -> Option<DateTime<Utc>> {
        self.logins.account_locked_until()
    }
    /// Until when a login from `source` is refused at `now` (the account's lockout,
    /// unless `services` trust the source, or the source's own), if it is.
    pub fn locked_out_until(
        &self,
        source: Option<&LoginSource>,
        now: DateTime<Utc>,
        services: &UserServices,
    ) -> Option<DateTime<Utc>> {
        self.logins.locked_until(source, now, services)
    }
    /// How many login sources the account remembers (failures that still count, or a
    /// lockout): bounded, since a source is forgotten once neither matters.
    pub fn login_sources_remembered(&self) -> usize {
        self.logins.sources_remembered()
    }
    /// How many sources of successful logins the account remembers (the candidates
    /// for trust): bounded, only the most recent few are kept.
    pub fn trusted_login_sources(&self) -> usize {
        self.logins.trusted_remembered()
    }

    /// Refuses commands that need an existing, active account.
    fn ensure_active(&self) -> Result<(), UserError> {
        match self.status {
            UserStatus::Unregistered => Err(UserError::NotFound),
            UserStatus::Pending => Err(UserError::NotActive),
            UserStatus::Deactivated => Err(UserError::Deactivated),
            UserStatus::Active => Ok(()),
        }
    }

    fn sign_up(
        &self,
        email: Email,
        token_hash: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        services: &UserServices,
    ) -> Result<Option<UserEvent>, UserError> {
        match self.status {
            UserStatus::Unregistered => {}
            // Signing up again re-sends the link (the new token supersedes the old one),
            // but anyone can sign up with anyone's address: while
            // `max_sign_up_emails` links are still valid, nothing more is sent. The
            // caller's answer is the same either way.
            UserStatus::Pending if self.email.as_ref() == Some(&email) => {
                if unexpired(&self.signup_tokens, now) >= services.max_sign_up_emails as usize {
                    return Ok(None);
                }
            }
            UserStatus::Pending => return Err(UserError::SignUpEmailMismatch),
            // Not an error: see `RegisteredEmailSignUpAttempted`.
            UserStatus::Active | UserStatus::Deactivated => {
                return Ok(Some(UserEvent::RegisteredEmailSignUpAttempted { at: now }))
            }
        }
        if expires_at <= now {
            return Err(UserError::TokenExpiryNotInFuture);
        }
        Ok(Some(UserEvent::PendingUserRegisterCreated {
            email,
            token_hash,
            expires_at,
        }))
    }

    /// What [`UserCommand::ConfirmSignUp`] decides about `token_hash` at `now`, without
    /// the password: the API asks first, so that it runs the deliberately slow password
    /// hash only for a token that can succeed. Returns the e-mail being confirmed.
    pub fn check_sign_up_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Email, UserError> {
        let email = match (self.status, &self.email) {
            (UserStatus::Pending, Some(email)) => email.clone(),
            (UserStatus::Unregistered, _) | (UserStatus::Pending, None) => {
                return Err(UserError::NotFound)
            }
            (UserStatus::Active, _) => return Err(UserError::AlreadyConfirmed),
            (UserStatus::Deactivated, _) => return Err(UserError::Deactivated),
        };
        match lookup_token(&self.signup_tokens, token_hash, now) {
            TokenLookup::Valid => {}
            TokenLookup::Unknown => return Err(UserError::SignUpTokenUnknown),
            // Sign-up tokens are only "used" by confirming, which leaves Pending.
            TokenLookup::Used => return Err(UserError::AlreadyConfirmed),
            TokenLookup::Superseded => return Err(UserError::SignUpTokenSuperseded),
            TokenLookup::Expired => return Err(UserError::SignUpTokenExpired),
        }
        Ok(email)
    }

    fn confirm_sign_up(
        &self,
        token_hash: &str,
        name: PersonName,
        password_hash: String,
        institution_id: InstitutionId,
        now: DateTime<Utc>,
    ) -> Result<UserEvent, UserError> {
        let email = self.check_sign_up_token(token_hash, now)?;
        Ok(UserEvent::UserCreated {
            email,
            name,
            role: Role::Manager,
            institution_id: Some(institution_id),
            password_hash: Some(password_hash),
        })
    }

    fn create(
        &self,
        email: Email,
        name: PersonName,
        role: Role,
        institution_id: Option<InstitutionId>,
        password_hash: Option<String>,
    ) -> Result<UserEvent, UserError> {
        if self.status != UserStatus::Unregistered {
            return Err(UserError::AlreadyExists);
        }
        match (role, institution_id) {
            (Role::Admin, Some(_)) => return Err(UserError::AdminWithInstitution),
            (Role::Manager | Role::Teacher | Role::Student, None) => {
                return Err(UserError::InstitutionRequired)
            }
            // An observer without an institution watches the whole platform.
            _ => {}
        }
        Ok(UserEvent::UserCreated {
            email,
            name,
            role,
            institution_id,
            password_hash,
        })
    }

    fn attempt_login(
        &self,
        password_matches: bool,
        source: Option<LoginSource>,
        now: DateTime<Utc>,
        services: &UserServices,
    ) -> Result<Vec<UserEvent>, UserError> {
        self.ensure_active()?;
        if let Some(until) = self.logins.locked_until(source.as_ref(), now, services) {
            return Err(UserError::LockedOut { until });
        }
        if password_matches {
            return Ok(vec![UserEvent::LoginSucceeded { at: now, source }]);
        }
        Ok(self.logins.fail(source, now, services))
    }

    /// What [`UserCommand::ResetPassword`] decides about `token_hash` at `now`, without
    /// the new password (see [`User::check_sign_up_token`] for why).
    pub fn check_reset_token(&self, token_hash: &str, now: DateTime<Utc>) -> Result<(), UserError> {
        self.ensure_active()?;
        match lookup_token(&self.reset_tokens, token_hash, now) {
            TokenLookup::Valid => Ok(()),
            TokenLookup::Unknown => Err(UserError::ResetTokenUnknown),
            TokenLookup::Used => Err(UserError::ResetTokenAlreadyUsed),
            TokenLookup::Superseded => Err(UserError::ResetTokenSuperseded),
            TokenLookup::Expired => Err(UserError::ResetTokenExpired),
        }
    }

    fn reset_password(
        &self,
        token_hash: String,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> Result<UserEvent, UserError> {
        self.check_reset_token(&token_hash, now)?;
        Ok(UserEvent::PasswordReset {
            token_hash,
            password_hash,
            at: now,
        })
    }

    fn update(
        &self,
        name: Option<PersonName>,
        email: Option<Email>,
    ) -> Result<Option<UserEvent>, UserError> {
        self.ensure_active()?;
        // Only real changes are recorded; an update that changes nothing is a no-op so
        // that retried requests are harmless.
        let name = name.filter(|name| self.name.as_ref() != Some(name));
        let email = email.filter(|email| self.email.as_ref() != Some(email));
        if name.is_none() && email.is_none() {
            return Ok(None);
        }
        Ok(Some(UserEvent::UserUpdated { name, email }))
    }
}

impl_aggregate!(
    User,
    type: "user",
    command: UserCommand,
    event: UserEvent,
    error: UserError,
    services: UserServices, passed to decide,
);

impl User {
    fn decide(
        &self,
        command: UserCommand,
        services: &UserServices,
    ) -> Result<Vec<UserEvent>, UserError> {
        let events = match command {
            UserCommand::SignUp {
                email,
                confirmation_token_hash,
                expires_at,
                now,
            } => self
                .sign_up(email, confirmation_token_hash, expires_at, now, services)?
                .into_iter()
                .collect(),
            UserCommand::ConfirmSignUp {
                token_hash,
                name,
                password_hash,
                institution_id,
                institution_name,
                now,
            } => vec![
                self.confirm_sign_up(&token_hash, name, password_hash, institution_id, now)?,
                UserEvent::SignUpConfirmed {
                    institution_id,
                    institution_name,
                },
            ],
            UserCommand::CreateUser {
                email,
                name,
                role,
                institution_id,
                password_hash,
            } => vec![self.create(email, name, role, institution_id, password_hash)?],
            UserCommand::AttemptLogin {
                password_matches,
                source,
                now,
            } => self.attempt_login(password_matches, source, now, services)?,
            UserCommand::RequestPasswordReset { token_hash, now } => {
                self.ensure_active()?;
                // Tokens still valid were issued within one lifetime of now.
                if unexpired(&self.reset_tokens, now) >= services.max_reset_requests as usize {
                    return Err(UserError::TooManyResetRequests);
                }
                vec![UserEvent::ResetPasswordTokenCreated {
                    token_hash,
                    expires_at: now + services.reset_token_ttl,
                }]
            }
            UserCommand::ResetPassword {
                token_hash,
                new_password_hash,
                now,
            } => vec![self.reset_password(token_hash, new_password_hash, now)?],
            UserCommand::UpdateUser { name, email } => {
                self.update(name, email)?.into_iter().collect()
            }
            UserCommand::RequestEmailChange {
                new_email,
                token_hash,
                now,
                by_owner,
            } => {
                self.ensure_active()?;
                let link_to = if by_owner || self.password_hash.is_none() || self.email.is_none() {
                    EmailChangeLink::NewAddress
                } else {
                    EmailChangeLink::CurrentAddress
                };
                if self.email.as_ref() == Some(&new_email) {
                    vec![]
                } else {
                    vec![UserEvent::EmailChangeRequested {
                        previous_email: self.email.clone(),
                        new_email,
                        token_hash,
                        expires_at: now + services.email_change_ttl,
                        link_to,
                    }]
                }
            }
            UserCommand::ConfirmEmailChange { token_hash, now } => {
                self.ensure_active()?;
                let Some((new_email, hash, expires_at)) = &self.pending_email else {
                    return Err(UserError::EmailChangeTokenUnknown);
                };
                if *hash != token_hash {
                    return Err(UserError::EmailChangeTokenUnknown);
                }
                if *expires_at <= now {
                    return Err(UserError::EmailChangeTokenExpired);
                }
                vec![UserEvent::UserUpdated {
                    name: None,
                    email: Some(new_email.clone()),
                }]
            }
            UserCommand::DeactivateUser { reason } => match self.status {
                UserStatus::Unregistered => return Err(UserError::NotFound),
                UserStatus::Deactivated => return Err(UserError::AlreadyDeactivated),
                UserStatus::Pending | UserStatus::Active => {
                    vec![UserEvent::UserDeactivated { reason }]
                }
            },
        };
        Ok(events)
    }

    fn evolve(&mut self, event: UserEvent) {
        match event {
            UserEvent::PendingUserRegisterCreated {
                email,
                token_hash,
                expires_at,
            } => {
                self.status = UserStatus::Pending;
                self.email = Some(email);
                self.signup_tokens
                    .push(IssuedToken::sent(token_hash, expires_at));
            }
            UserEvent::UserCreated {
                email,
                name,
                role,
                institution_id,
                password_hash,
            } => {
                self.status = UserStatus::Active;
                self.email = Some(email);
                self.name = Some(name);
                self.role = Some(role);
                self.institution_id = institution_id;
                self.password_hash = password_hash;
                // Confirmation consumes the current sign-up token.
                if let Some(token) = self.signup_tokens.last_mut() {
                    token.used = true;
                }
            }
            UserEvent::LoginSucceeded { at, source } => {
                self.logins.record_success(at, source.as_ref())
            }
            UserEvent::LoginFailed {
                at,
                consecutive_failures,
                source,
                counts_until,
            } => self
                .logins
                .record_failure(at, consecutive_failures, source, counts_until),
            UserEvent::UserLockedOut { until, source } => self.logins.record_lockout(until, source),
            UserEvent::ResetPasswordTokenCreated {
                token_hash,
                expires_at,
            } => self
                .reset_tokens
                .push(IssuedToken::sent(token_hash, expires_at)),
            UserEvent::PasswordReset {
                token_hash,
                password_hash,
                ..
            } => {
                self.password_hash = Some(password_hash);
                // The owner proved access to the mailbox: every count and lockout
                // ends, the owner's own source's included, and so does the trust
                // earned with the old password (the new one has not logged in yet).
                self.logins = Logins::default();
                self.credential_version += 1;
                if let Some(token) = self
                    .reset_tokens
                    .iter_mut()
                    .rev()
                    .find(|token| token.hash == token_hash)
                {
                    token.used = true;
                }
            }
            UserEvent::UserUpdated { name, email } => {
                if let Some(name) = name {
                    self.name = Some(name);
                }
                if let Some(email) = email {
                    self.email = Some(email);
                    // The address changed (confirmed, or recorded before e-mail
                    // changes needed confirming): no older request stands.
                    self.pending_email = None;
                }
            }
            UserEvent::EmailChangeRequested {
                new_email,
                token_hash,
                expires_at,
                ..
            } => self.pending_email = Some((new_email, token_hash, expires_at)),
            UserEvent::UserDeactivated { .. } => self.status = UserStatus::Deactivated,
            UserEvent::RegisteredEmailSignUpAttempted { .. }
            | UserEvent::SignUpConfirmed { .. } => {}
        }
    }
}
