//! Why a value was refused: [`ValidationError`] with the field and the rule broken.

use crate::errors::{Rejection, RejectionKind};

/// Why a value was refused, with the field it belongs to, so the API can report a
/// field-level error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The input field the value came from (e.g. `"email"`). See [`ValidationError::for_field`].
    pub field: &'static str,
    pub reason: ValidationReason,
}

impl ValidationError {
    pub const fn new(field: &'static str, reason: ValidationReason) -> Self {
        Self { field, reason }
    }

    /// The same error reported against another field, for callers whose input names differ
    /// from the value's default (e.g. `applicant_email`).
    #[must_use]
    pub const fn for_field(self, field: &'static str) -> Self {
        Self { field, ..self }
    }

    /// Stable machine code of the reason, e.g. `"TOO_LONG"`.
    pub const fn code(&self) -> &'static str {
        self.reason.code()
    }

    pub const fn kind(&self) -> RejectionKind {
        RejectionKind::Validation
    }
}

/// The rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidationReason {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("must not contain invisible formatting characters")]
    InvisibleCharacters,
    #[error("must contain a visible letter or digit")]
    NoVisibleLetter,
    #[error("must contain only letters, digits, marks, spaces and common punctuation")]
    DisallowedCharacters,
    #[error("must not mix scripts within a word in a way that can imitate another word")]
    MixedScripts,
    #[error("has an invalid format")]
    InvalidFormat,
    #[error("must not be in the future")]
    InFuture,
    #[error("must not be more than {max_years} years ago")]
    TooOld { max_years: u32 },
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("must have at most {max} decimal places")]
    TooManyDecimals { max: u32 },
}

impl ValidationReason {
    /// Stable machine code, part of the API contract.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Empty => "EMPTY",
            Self::TooLong { .. } => "TOO_LONG",
            Self::ControlCharacters => "CONTROL_CHARACTERS",
            Self::InvisibleCharacters => "INVISIBLE_CHARACTERS",
            Self::NoVisibleLetter => "NO_VISIBLE_LETTER",
            Self::DisallowedCharacters => "DISALLOWED_CHARACTERS",
            Self::MixedScripts => "MIXED_SCRIPTS",
            Self::InvalidFormat => "INVALID_FORMAT",
            Self::InFuture => "IN_FUTURE",
            Self::TooOld { .. } => "TOO_OLD",
            Self::OutOfRange { .. } => "OUT_OF_RANGE",
            Self::TooManyDecimals { .. } => "TOO_MANY_DECIMALS",
        }
    }
}

impl Rejection for ValidationError {
    fn code(&self) -> &'static str {
        ValidationError::code(self)
    }
    fn kind(&self) -> RejectionKind {
        RejectionKind::Validation
    }
}
