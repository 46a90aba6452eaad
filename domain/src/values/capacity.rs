//! Course capacities.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ValidationError, ValidationReason};

/// How many students a course can hold: 1..=10 000. Serialized as a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Capacity(u32);

impl Capacity {
    pub const FIELD: &'static str = "capacity";
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 10_000;

    pub fn new(seats: u32) -> Result<Self, ValidationError> {
        if (Self::MIN..=Self::MAX).contains(&seats) {
            Ok(Self(seats))
        } else {
            Err(ValidationError::new(Self::FIELD, Self::out_of_range()))
        }
    }

    /// Accepts any integer type the API may hand over (GraphQL `Int` is `i32`).
    pub fn from_i64(seats: i64) -> Result<Self, ValidationError> {
        u32::try_from(seats)
            .map_err(|_| ValidationError::new(Self::FIELD, Self::out_of_range()))
            .and_then(Self::new)
    }

    const fn out_of_range() -> ValidationReason {
        ValidationReason::OutOfRange {
            min: Self::MIN as i64,
            max: Self::MAX as i64,
        }
    }

    pub const fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Capacity {
    type Error = ValidationError;

    fn try_from(seats: u32) -> Result<Self, Self::Error> {
        Self::new(seats)
    }
}

impl From<Capacity> for u32 {
    fn from(value: Capacity) -> Self {
        value.0
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
