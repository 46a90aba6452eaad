//! Exam grade notes.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ValidationError, ValidationReason};

/// An exam grade from 0.00 to 10.00 with at most two decimals.
///
/// Held as integer hundredths so comparisons and averages are exact. **Serialized as a
/// JSON string with exactly two decimals** (`"7.50"`): exact (no binary floating point in
/// the stored contract), readable in the admin payload view, and parsed back through
/// [`GradeNote::parse`], so an invalid stored note fails to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GradeNote(u16);

impl GradeNote {
    pub const FIELD: &'static str = "note";
    pub const MAX_HUNDREDTHS: u16 = 1_000;
    const MAX_DECIMALS: u32 = 2;

    fn out_of_range() -> ValidationError {
        ValidationError::new(
            Self::FIELD,
            ValidationReason::OutOfRange { min: 0, max: 10 },
        )
    }

    pub fn from_hundredths(hundredths: u16) -> Result<Self, ValidationError> {
        if hundredths <= Self::MAX_HUNDREDTHS {
            Ok(Self(hundredths))
        } else {
            Err(Self::out_of_range())
        }
    }

    /// Parses a decimal such as `"7"`, `"7.5"` or `"7.25"`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(Self::FIELD, ValidationReason::InvalidFormat);
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ValidationError::new(Self::FIELD, ValidationReason::Empty));
        }
        if let Some(rest) = raw.strip_prefix('-') {
            if rest.is_empty() || rest.starts_with(['-', '+']) {
                return Err(invalid());
            }
            // A well-formed negative number is out of range rather than malformed.
            return match Self::parse(rest) {
                Ok(note) if note.0 == 0 => Ok(note),
                Ok(_)
                | Err(ValidationError {
                    reason: ValidationReason::OutOfRange { .. },
                    ..
                }) => Err(Self::out_of_range()),
                Err(other) => Err(other),
            };
        }
        let (whole, fraction) = match raw.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (raw, ""),
        };
        let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(invalid());
        }
        if raw.contains('.') && fraction.is_empty() {
            return Err(invalid());
        }
        if fraction.len() > Self::MAX_DECIMALS as usize {
            return Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::TooManyDecimals {
                    max: Self::MAX_DECIMALS,
                },
            ));
        }
        // More than 2 digits of whole part is always out of range; checking the length
        // first keeps the parse below from overflowing on absurd input.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 2 {
            return Err(Self::out_of_range());
        }
        let whole: u16 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let fraction: u16 = format!("{fraction:0<2}").parse().map_err(|_| invalid())?;
        Self::from_hundredths(whole * 100 + fraction)
    }

    /// Accepts a float from the API (GraphQL `Float`), refusing values that are not
    /// within 1e-6 of a whole number of hundredths.
    pub fn from_f64(value: f64) -> Result<Self, ValidationError> {
        if !value.is_finite() {
            return Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::InvalidFormat,
            ));
        }
        let scaled = value * 100.0;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::TooManyDecimals {
                    max: Self::MAX_DECIMALS,
                },
            ));
        }
        if !(0.0..=f64::from(Self::MAX_HUNDREDTHS)).contains(&rounded) {
            return Err(Self::out_of_range());
        }
        // In 0..=1000 after the range check above, so the cast is exact.
        Self::from_hundredths(rounded as u16)
    }

    pub const fn hundredths(&self) -> u16 {
        self.0
    }

    pub fn as_f64(&self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl TryFrom<String> for GradeNote {
    type Error = ValidationError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<GradeNote> for String {
    fn from(value: GradeNote) -> Self {
        value.to_string()
    }
}

impl fmt::Display for GradeNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}
