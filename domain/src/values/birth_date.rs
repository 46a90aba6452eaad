//! Birth dates.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{ValidationError, ValidationReason};

/// A birth date that, on the day it was parsed, was not in the future and not more than
/// [`BirthDate::MAX_AGE_YEARS`] whole years ago.
///
/// Serialized as an ISO date (`"2008-03-14"`) without re-checking: the rule depends on the
/// day of parsing, and a stored date must keep loading as the years pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BirthDate(NaiveDate);

impl BirthDate {
    pub const FIELD: &'static str = "birth_date";
    pub const MAX_AGE_YEARS: u32 = 120;

    /// Checks `date` against `today` (passed in: the domain has no clock).
    pub fn parse(date: NaiveDate, today: NaiveDate) -> Result<Self, ValidationError> {
        if date > today {
            return Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::InFuture,
            ));
        }
        match today.years_since(date) {
            Some(age) if age <= Self::MAX_AGE_YEARS => Ok(Self(date)),
            _ => Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::TooOld {
                    max_years: Self::MAX_AGE_YEARS,
                },
            )),
        }
    }

    /// Parses an ISO `YYYY-MM-DD` string, then applies [`BirthDate::parse`].
    pub fn parse_str(raw: &str, today: NaiveDate) -> Result<Self, ValidationError> {
        let date = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
            .map_err(|_| ValidationError::new(Self::FIELD, ValidationReason::InvalidFormat))?;
        Self::parse(date, today)
    }

    pub const fn date(&self) -> NaiveDate {
        self.0
    }

    /// Age in whole years on `on`; 0 if `on` is before the birth date (it never is for a
    /// date parsed against an earlier "today", but `apply` must not fail).
    pub fn age_on(&self, on: NaiveDate) -> u32 {
        on.years_since(self.0).unwrap_or(0)
    }
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
