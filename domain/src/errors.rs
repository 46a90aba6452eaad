//! The shared vocabulary of business rejections: [`RejectionKind`] and the [`Rejection`]
//! trait every aggregate error enum implements.
//!
//! A rejection is not a failure: it is the aggregate declining a command for a business
//! reason, and nothing is recorded. The API maps each kind once, at the edge, to its error
//! code extension (`NOT_FOUND`, `CONFLICT`, `VALIDATION`, `FORBIDDEN`, `UNAUTHENTICATED`)
//! and passes the variant's stable [`Rejection::code`] along so clients can branch on it.

use std::fmt;

/// The category of a rejection, which decides how the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The thing the command is about does not exist (yet).
    NotFound,
    /// The command contradicts the current state (duplicate, already done, too late).
    Conflict,
    /// The command's data breaks a rule independent of state.
    Validation,
    /// The actor is known but may not do this (deactivated, locked out).
    Forbidden,
    /// A secret (token) presented with the command is not valid.
    Unauthenticated,
}

impl RejectionKind {
    /// The API error code extension for this kind.
    pub const fn api_code(&self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::Validation => "VALIDATION",
            Self::Forbidden => "FORBIDDEN",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_code())
    }
}

/// Implemented by every aggregate's error enum so the API can map them generically.
/// Each enum also has inherent `code()`/`kind()` methods, so callers need not import this.
pub trait Rejection: std::error::Error {
    /// Stable machine code of the variant, e.g. `"RESET_TOKEN_EXPIRED"`. Part of the API
    /// contract: never change one, add a new variant instead.
    fn code(&self) -> &'static str;
    fn kind(&self) -> RejectionKind;
}

/// Implements [`Rejection`] by delegating to the enum's inherent `code`/`kind`.
macro_rules! impl_rejection {
    ($error:ty) => {
        impl $crate::errors::Rejection for $error {
            fn code(&self) -> &'static str {
                <$error>::code(self)
            }
            fn kind(&self) -> $crate::errors::RejectionKind {
                <$error>::kind(self)
            }
        }
    };
}
pub(crate) use impl_rejection;
