//! Why a [`super::User`] refuses a command.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("a user with this id already exists")]
    AlreadyExists,
    #[error("the sign-up was started with another e-mail address")]
    SignUpEmailMismatch,
    #[error("the token expiry must be after now")]
    TokenExpiryNotInFuture,
    #[error("the sign-up is already confirmed")]
    AlreadyConfirmed,
    #[error("the sign-up token is unknown")]
    SignUpTokenUnknown,
    #[error("the sign-up token has expired")]
    SignUpTokenExpired,
    #[error("the sign-up token was replaced by a newer one")]
    SignUpTokenSuperseded,
    #[error("an admin does not belong to an institution")]
    AdminWithInstitution,
    #[error("this role requires an institution")]
    InstitutionRequired,
    #[error("the account is not active yet")]
    NotActive,
    #[error("the account is deactivated")]
    Deactivated,
    #[error("the account is locked out until {until}")]
    LockedOut { until: DateTime<Utc> },
    #[error("the reset-password token is unknown")]
    ResetTokenUnknown,
    #[error("the reset-password token has expired")]
    ResetTokenExpired,
    #[error("the reset-password token was already used")]
    ResetTokenAlreadyUsed,
    #[error("the reset-password token was replaced by a newer one")]
    ResetTokenSuperseded,
    #[error("the user is already deactivated")]
    AlreadyDeactivated,
    #[error("too many password resets were requested for this account; try again later")]
    TooManyResetRequests,
    #[error("the e-mail change token is unknown")]
    EmailChangeTokenUnknown,
    #[error("the e-mail change token has expired")]
    EmailChangeTokenExpired,
}

impl UserError {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "USER_NOT_FOUND",
            Self::AlreadyExists => "USER_ALREADY_EXISTS",
            Self::SignUpEmailMismatch => "SIGN_UP_EMAIL_MISMATCH",
            Self::TokenExpiryNotInFuture => "TOKEN_EXPIRY_NOT_IN_FUTURE",
            Self::AlreadyConfirmed => "SIGN_UP_ALREADY_CONFIRMED",
            Self::SignUpTokenUnknown => "SIGN_UP_TOKEN_UNKNOWN",
            Self::SignUpTokenExpired => "SIGN_UP_TOKEN_EXPIRED",
            Self::SignUpTokenSuperseded => "SIGN_UP_TOKEN_SUPERSEDED",
            Self::AdminWithInstitution => "ADMIN_WITH_INSTITUTION",
            Self::InstitutionRequired => "INSTITUTION_REQUIRED",
            Self::NotActive => "USER_NOT_ACTIVE",
            Self::Deactivated => "USER_DEACTIVATED",
            Self::LockedOut { .. } => "USER_LOCKED_OUT",
            Self::ResetTokenUnknown => "RESET_TOKEN_UNKNOWN",
            Self::ResetTokenExpired => "RESET_TOKEN_EXPIRED",
            Self::ResetTokenAlreadyUsed => "RESET_TOKEN_ALREADY_USED",
            Self::ResetTokenSuperseded => "RESET_TOKEN_SUPERSEDED",
            Self::AlreadyDeactivated => "USER_ALREADY_DEACTIVATED",
            Self::TooManyResetRequests => "TOO_MANY_RESET_REQUESTS",
            Self::EmailChangeTokenUnknown => "EMAIL_CHANGE_TOKEN_UNKNOWN",
            Self::EmailChangeTokenExpired => "EMAIL_CHANGE_TOKEN_EXPIRED",
        }
    }

    pub const fn kind(&self) -> RejectionKind {
        match self {
            Self::NotFound => RejectionKind::NotFound,
            Self::AlreadyExists
            | Self::SignUpEmailMismatch
            | Self::AlreadyConfirmed
            | Self::AlreadyDeactivated
            | Self::TooManyResetRequests => RejectionKind::Conflict,
            Self::TokenExpiryNotInFuture
            | Self::AdminWithInstitution
            | Self::InstitutionRequired => RejectionKind::Validation,
            Self::NotActive | Self::Deactivated | Self::LockedOut { .. } => {
                RejectionKind::Forbidden
            }
            // Tokens are single-purpose credentials: a bad one means "not authenticated
            // for this action"; the code tells the client which case it is.
            Self::SignUpTokenUnknown
            | Self::SignUpTokenExpired
            | Self::SignUpTokenSuperseded
            | Self::ResetTokenUnknown
            | Self::ResetTokenExpired
            | Self::ResetTokenAlreadyUsed
            | Self::ResetTokenSuperseded
            | Self::EmailChangeTokenUnknown
            | Self::EmailChangeTokenExpired => RejectionKind::Unauthenticated,
        }
    }
}

impl_rejection!(UserError);
