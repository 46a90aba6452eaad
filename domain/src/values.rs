//! Validated values that cross the domain boundary: identifiers, names, e-mail addresses,
//! birth dates, capacities and grade notes.
//!
//! Parse, don't validate: every constructor returns `Result<T, ValidationError>`, and once a
//! value exists it is valid. Deserialization goes through the same parsers (`try_from`), so a
//! stored or submitted payload holding an invalid value fails to load instead of smuggling
//! it in. The one exception is [`BirthDate`]: its rules are relative to "today", which only
//! the caller knows, so it is checked when parsed and stored as a plain date.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;
use uuid::Uuid;

use crate::errors::RejectionKind;

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

// ---------------------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------------------

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Any UUID is valid; the domain never generates ids (that needs randomness or a
        /// clock), callers pass them in. Serialized as the plain UUID string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| ValidationError::new("id", ValidationReason::InvalidFormat))
            }
        }
    };
}

id_type!(
    /// Identifies a [`crate::user::User`] (a login account).
    UserId
);
id_type!(
    /// Identifies an [`crate::institution::Institution`].
    InstitutionId
);
id_type!(
    /// Identifies a campus inside an institution.
    CampusId
);
id_type!(
    /// Identifies a course; also the id of its [`crate::course::Course`] enrollment aggregate.
    CourseId
);
id_type!(
    /// Identifies a [`crate::student::Student`].
    StudentId
);
id_type!(
    /// Identifies a [`crate::teacher::Teacher`].
    TeacherId
);
id_type!(
    /// Identifies one application to a course: the stream of an
    /// [`crate::application::Application`] (derived from course and e-mail), or an older
    /// `RequestEnrollment` in the course's stream.
    ApplicationId
);
id_type!(
    /// Identifies an [`crate::exam_grade::ExamGrade`]: one per (exam, student).
    ExamGradeId
);

// ---------------------------------------------------------------------------------------
// Free-text names
// ---------------------------------------------------------------------------------------

/// Characters that show nothing (zero-width spaces and joiners, the soft hyphen, the
/// byte-order mark) or reorder what is shown (bidirectional embeddings, overrides and
/// isolates). In a name they only serve to make two names that look the same differ
/// (and so get past a uniqueness check), or to make one look like another.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}')
}

/// Shared rule for human-entered names: trimmed, runs of whitespace inside collapsed to
/// one space (so "Ana  Lima" and "Ana Lima" are one name), non-empty, at most `max`
/// characters (Unicode scalar values, not bytes), no control characters, no invisible
/// formatting characters ([`is_invisible`]).
fn parse_text(field: &'static str, max: usize, raw: &str) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    // Checked before collapsing: a tab or newline inside is a control character, not a
    // space.
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            ValidationReason::ControlCharacters,
        ));
    }
    if trimmed.chars().any(is_invisible) {
        return Err(ValidationError::new(
            field,
            ValidationReason::InvisibleCharacters,
        ));
    }
    let collapsed = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
    // One spelling per name: "é" typed as e + U+0301 and as U+00E9 are the same name.
    let normalized: String = collapsed.nfc().collect();
    let text = stored_text(field, max, &normalized)?;
    check_letters(field, &text)?;
    Ok(text)
}

/// Punctuation and symbols a name may hold beside letters, marks and digits: ASCII's,
/// Latin-1's (`º`, `ª`, `«`, `·`...) and the General Punctuation block's (typographic
/// quotes and dashes; its invisible characters are refused before this).
fn is_name_punctuation(c: char) -> bool {
    c.is_ascii_graphic()
        || ('\u{00A1}'..='\u{00BF}').contains(&c)
        || ('\u{2010}'..='\u{205E}').contains(&c)
}

/// Names against look-alikes, by Unicode's security rules (UTS #39, through the
/// `unicode-security` crate): every letter, mark and digit must be allowed in
/// identifiers (blank-looking letters such as U+3164 HANGUL FILLER are not; nor are
/// those of scripts in limited use), other characters must be common punctuation
/// (so a blank-looking symbol such as U+2800 BRAILLE PATTERN BLANK is refused), at
/// least one letter or digit must be there, and no word may mix scripts beyond
/// UTS #39's "moderately restrictive" level (Latin with Cyrillic or Greek inside
/// one word is how "аdmin" imitates "admin"; Latin with Han and kana is fine).
fn check_letters(field: &'static str, text: &str) -> Result<(), ValidationError> {
    use unicode_security::{
        GeneralSecurityProfile as _, RestrictionLevel, RestrictionLevelDetection as _,
    };
    let mut visible = false;
    for word in text.split(' ') {
        let mut letters = String::new();
        for c in word.chars() {
            if c.identifier_allowed() {
                if c.is_alphanumeric() {
                    visible = true;
                    letters.push(c);
                }
            } else if !is_name_punctuation(c) {
                return Err(ValidationError::new(
                    field,
                    ValidationReason::DisallowedCharacters,
                ));
            }
        }
        if !letters
            .as_str()
            .check_restriction_level(RestrictionLevel::ModeratelyRestrictive)
        {
            return Err(ValidationError::new(field, ValidationReason::MixedScripts));
        }
    }
    if !visible {
        return Err(ValidationError::new(
            field,
            ValidationReason::NoVisibleLetter,
        ));
    }
    Ok(())
}

/// The rule names were first recorded under (trimmed, non-empty, at most `max`
/// characters, no control characters): what deserializing a stored event checks, so
/// that a name recorded before [`parse_text`] became stricter still loads.
fn stored_text(field: &'static str, max: usize, raw: &str) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, ValidationReason::Empty));
    }
    if trimmed.chars().count() > max {
        return Err(ValidationError::new(
            field,
            ValidationReason::TooLong { max },
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            ValidationReason::ControlCharacters,
        ));
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:literal) => {
        $(#[$doc])*
        ///
        /// Trimmed, 1..=
        #[doc = stringify!($max)]
        /// characters, no control characters. Serialized as a plain string.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The field name reported in [`ValidationError`]s.
            pub const FIELD: &'static str = $field;
            pub const MAX_CHARS: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                parse_text(Self::FIELD, Self::MAX_CHARS, raw).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Deserialization (of stored events, among others): the rule the value was
        /// recorded under, so history always loads; new input goes through `parse`.
        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(raw: String) -> Result<Self, Self::Error> {
                stored_text(Self::FIELD, Self::MAX_CHARS, &raw).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// A person's full name (users, students, teachers, applicants).
    PersonName, field = "name", max = 200
);
text_type!(
    /// An institution's display name.
    InstitutionName, field = "institution_name", max = 200
);
text_type!(
    /// A campus name, unique (case-insensitively) within its institution.
    CampusName, field = "campus_name", max = 120
);
text_type!(
    /// The city a campus is in.
    CityName, field = "city", max = 120
);
text_type!(
    /// A course name, unique (case-insensitively) within its campus.
    CourseName, field = "course_name", max = 200
);
text_type!(
    /// The name of an exam (e.g. "Midterm"), shown in the student's grade notification.
    ExamName, field = "exam_name", max = 200
);

// ---------------------------------------------------------------------------------------
// Email
// ---------------------------------------------------------------------------------------

/// An e-mail address, trimmed and lower-cased so that equality means "same mailbox" for
/// our purposes (uniqueness checks, "already enrolled" detection).
///
/// The check is deliberately RFC-ish rather than RFC 5322: one `@`, a dot-atom local part
/// of at most 64 characters, a domain of dot-separated LDH labels with at least one dot,
/// 254 characters in total. Quoted local parts and IP-literal domains are refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub const FIELD: &'static str = "email";
    pub const MAX_CHARS: usize = 254;
    const MAX_LOCAL_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(Self::FIELD, ValidationReason::InvalidFormat);
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(ValidationError::new(Self::FIELD, ValidationReason::Empty));
        }
        if email.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                Self::FIELD,
                ValidationReason::TooLong {
                    max: Self::MAX_CHARS,
                },
            ));
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        if !is_valid_local_part(local) || !is_valid_domain(domain) {
            return Err(invalid());
        }
        if local.len() > Self::MAX_LOCAL_CHARS {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid_local_part(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || SPECIALS.contains(c))
}

fn is_valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl TryFrom<String> for Email {
    type Error = ValidationError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------
// Birth date
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Grade note
// ---------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn reason<T: fmt::Debug>(result: Result<T, ValidationError>) -> ValidationReason {
        result.expect_err("expected a validation error").reason
    }

    // --- ids ---

    #[test]
    fn id_parses_and_displays_round_trip() {
        let uuid = Uuid::from_u128(0x1234);
        let id: StudentId = uuid.to_string().parse().unwrap();
        assert_eq!(id, StudentId::from_uuid(uuid));
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(Uuid::from(id), uuid);
    }

    #[test]
    fn id_rejects_malformed_input() {
        let err = "not-a-uuid".parse::<CourseId>().unwrap_err();
        assert_eq!(
            err,
            ValidationError::new("id", ValidationReason::InvalidFormat)
        );
    }

    #[test]
    fn id_serializes_as_plain_uuid_string() {
        let id = UserId::from_uuid(Uuid::from_u128(1));
        assert_eq!(
            serde_json::to_value(id).unwrap(),
            serde_json::json!("00000000-0000-0000-0000-000000000001")
        );
    }

    // --- text names ---

    #[test]
    fn person_name_is_trimmed() {
        let name = PersonName::parse("  Ada Lovelace \n").unwrap();
        assert_eq!(name.as_str(), "Ada Lovelace");
    }

    #[test]
    fn person_name_accepts_200_unicode_chars() {
        let name = "é".repeat(200);
        assert_eq!(PersonName::parse(&name).unwrap().as_str(), name);
    }

    #[test]
    fn person_name_rejects_empty_and_blank() {
        assert_eq!(reason(PersonName::parse("")), ValidationReason::Empty);
        assert_eq!(reason(PersonName::parse("   \t")), ValidationReason::Empty);
    }

    #[test]
    fn person_name_rejects_too_long() {
        assert_eq!(
            reason(PersonName::parse(&"a".repeat(201))),
            ValidationReason::TooLong { max: 200 }
        );
    }

    #[test]
    fn person_name_rejects_control_characters() {
        let err = PersonName::parse("Ada\u{0}Lovelace").unwrap_err();
        assert_eq!(err.field, "name");
        assert_eq!(err.reason, ValidationReason::ControlCharacters);
    }

    #[test]
    fn names_that_only_look_alike_are_refused_or_made_one() {
        // Zero-width, soft hyphen, BOM and bidirectional overrides show nothing, or
        // reorder what is shown: "Mid\u{200B}term" looks like "Midterm".
        for spoof in [
            "Mid\u{200B}term",
            "Mid\u{00AD}term",
            "\u{FEFF}Midterm",
            "Midterm\u{202E}",
            "Mid\u{2066}term\u{2069}",
        ] {
            assert_eq!(
                reason(ExamName::parse(spoof)),
                ValidationReason::InvisibleCharacters,
                "{spoof:?}"
            );
        }
        assert_eq!(
            ValidationReason::InvisibleCharacters.code(),
            "INVISIBLE_CHARACTERS"
        );
        // Runs of spaces (and other non-control whitespace) inside are one space.
        assert_eq!(
            PersonName::parse("  Ana \u{00A0}  Lima ").unwrap(),
            PersonName::parse("Ana Lima").unwrap()
        );
        // A newline or tab is still a control character, not a space.
        assert_eq!(
            reason(PersonName::parse("Ana\nLima")),
            ValidationReason::ControlCharacters
        );
        // Names recorded before these rules still load from stored events.
        let stored: ExamName = serde_json::from_str(r#""Mid\u200bterm  exam""#).unwrap();
        assert_eq!(stored.as_str(), "Mid\u{200B}term  exam");
    }

    #[test]
    fn blank_looking_mixed_script_and_unnormalized_names() {
        // Made only of blank-looking characters.
        for blank in ["\u{3164}", "\u{2800}\u{2800}", "\u{3164} \u{3164}", "-- .."] {
            let refused = reason(PersonName::parse(blank));
            assert!(
                matches!(
                    refused,
                    ValidationReason::NoVisibleLetter | ValidationReason::DisallowedCharacters
                ),
                "{blank:?}: {refused:?}"
            );
        }
        assert_eq!(
            reason(PersonName::parse("Ana\u{2800}Lima")),
            ValidationReason::DisallowedCharacters
        );
        assert_eq!(
            reason(PersonName::parse("Ana \u{3164}")),
            ValidationReason::DisallowedCharacters
        );
        assert_eq!(
            reason(PersonName::parse("--")),
            ValidationReason::NoVisibleLetter
        );
        // Cyrillic "а" inside a Latin word imitates it.
        assert_eq!(
            reason(PersonName::parse("P\u{0430}ula Lima")),
            ValidationReason::MixedScripts
        );
        assert_eq!(
            reason(CourseName::parse("\u{0391}lgebra")),
            ValidationReason::MixedScripts
        );
        // Real names in one script each, punctuation, ordinals, words of several
        // scripts side by side.
        for fine in [
            "José da Silva",
            "O'Brien-Smith",
            "Анна Каренина",
            "Σοφία Papadopoulos",
            "山田 太郎",
            "Matemática 2º ano",
            "C++ & C#: Programação (noturno)",
            "Jean–Luc d’Arc",
            "Nguyễn Thị Minh Khai",
        ] {
            assert!(
                PersonName::parse(fine).is_ok() || CourseName::parse(fine).is_ok(),
                "{fine}"
            );
        }
        // NFC: composed and decomposed spellings are one name.
        assert_eq!(
            PersonName::parse("Jose\u{0301}").unwrap(),
            PersonName::parse("Jos\u{00E9}").unwrap()
        );
    }

    #[test]
    fn other_names_share_the_text_rules_with_their_own_field_and_limit() {
        assert_eq!(
            InstitutionName::parse(" Escola ").unwrap().as_str(),
            "Escola"
        );
        assert_eq!(CampusName::parse("Centro").unwrap().as_str(), "Centro");
        assert_eq!(CityName::parse("Recife").unwrap().as_str(), "Recife");
        assert_eq!(CourseName::parse("Física I").unwrap().as_str(), "Física I");
        assert_eq!(ExamName::parse("Midterm").unwrap().as_str(), "Midterm");

        assert_eq!(
            InstitutionName::parse("").unwrap_err().field,
            "institution_name"
        );
        assert_eq!(CampusName::parse("").unwrap_err().field, "campus_name");
        assert_eq!(CityName::parse("").unwrap_err().field, "city");
        assert_eq!(CourseName::parse("").unwrap_err().field, "course_name");
        assert_eq!(ExamName::parse("").unwrap_err().field, "exam_name");
        assert_eq!(
            reason(CampusName::parse(&"x".repeat(121))),
            ValidationReason::TooLong { max: 120 }
        );
        assert_eq!(
            reason(CityName::parse("a\u{7}b")),
            ValidationReason::ControlCharacters
        );
    }

    #[test]
    fn text_deserialization_validates() {
        assert!(serde_json::from_str::<PersonName>("\"  \"").is_err());
        let name: PersonName = serde_json::from_str("\" Ada \"").unwrap();
        assert_eq!(name.as_str(), "Ada");
    }

    // --- email ---

    #[test]
    fn email_is_trimmed_and_lowercased() {
        let email = Email::parse("  Ada.Lovelace+Notes@Example.ORG ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace+notes@example.org");
    }

    #[test]
    fn email_rejects_empty() {
        assert_eq!(reason(Email::parse("  ")), ValidationReason::Empty);
    }

    #[test]
    fn email_rejects_longer_than_254() {
        let email = format!("a@{}.com", "b".repeat(60).repeat(5));
        assert_eq!(
            reason(Email::parse(&email)),
            ValidationReason::TooLong { max: 254 }
        );
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for raw in [
            "no-at-sign",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@@example.com",
            "a@b@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "ada lovelace@example.com",
            "ada@exa_mple.com",
            "ada@-example.com",
            "ada@example..com",
            "\"ada\"@example.com",
        ] {
            assert_eq!(
                reason(Email::parse(raw)),
                ValidationReason::InvalidFormat,
                "{raw}"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            reason(Email::parse(&long_local)),
            ValidationReason::InvalidFormat
        );
    }

    #[test]
    fn email_deserialization_validates_and_normalizes() {
        assert!(serde_json::from_str::<Email>("\"nope\"").is_err());
        let email: Email = serde_json::from_str("\"A@B.CO\"").unwrap();
        assert_eq!(email.as_str(), "a@b.co");
    }

    // --- birth date ---

    #[test]
    fn birth_date_accepts_today_and_exactly_120_years() {
        let today = date(2026, 11, 22);
        assert!(BirthDate::parse(today, today).is_ok());
        assert!(BirthDate::parse(date(1906, 11, 22), today).is_ok());
    }

    #[test]
    fn birth_date_rejects_the_future() {
        let today = date(2026, 11, 22);
        assert_eq!(
            reason(BirthDate::parse(date(2026, 11, 23), today)),
            ValidationReason::InFuture
        );
    }

    #[test]
    fn birth_date_rejects_more_than_120_years_ago() {
        let today = date(2026, 11, 22);
        assert_eq!(
            reason(BirthDate::parse(date(1905, 11, 22), today)),
            ValidationReason::TooOld { max_years: 120 }
        );
    }

    #[test]
    fn birth_date_parses_iso_strings() {
        let today = date(2026, 11, 22);
        assert_eq!(
            BirthDate::parse_str("2008-03-14", today).unwrap().date(),
            date(2008, 3, 14)
        );
        assert_eq!(
            reason(BirthDate::parse_str("14/03/2008", today)),
            ValidationReason::InvalidFormat
        );
    }

    #[test]
    fn age_is_counted_in_whole_years() {
        let born = BirthDate::parse(date(2008, 3, 14), date(2026, 1, 1)).unwrap();
        assert_eq!(born.age_on(date(2026, 3, 13)), 17);
        assert_eq!(born.age_on(date(2026, 3, 14)), 18);
        assert_eq!(born.age_on(date(2000, 1, 1)), 0);
    }

    // --- capacity ---

    #[test]
    fn capacity_accepts_bounds() {
        assert_eq!(Capacity::new(1).unwrap().get(), 1);
        assert_eq!(Capacity::new(10_000).unwrap().get(), 10_000);
        assert_eq!(Capacity::from_i64(30).unwrap().get(), 30);
    }

    #[test]
    fn capacity_rejects_out_of_range() {
        let expected = ValidationReason::OutOfRange {
            min: 1,
            max: 10_000,
        };
        assert_eq!(reason(Capacity::new(0)), expected);
        assert_eq!(reason(Capacity::new(10_001)), expected);
        assert_eq!(reason(Capacity::from_i64(-5)), expected);
        assert!(serde_json::from_str::<Capacity>("0").is_err());
    }

    // --- grade note ---

    #[test]
    fn grade_note_parses_up_to_two_decimals() {
        assert_eq!(GradeNote::parse("0").unwrap().hundredths(), 0);
        assert_eq!(GradeNote::parse("7").unwrap().hundredths(), 700);
        assert_eq!(GradeNote::parse("7.5").unwrap().hundredths(), 750);
        assert_eq!(GradeNote::parse("7.25").unwrap().hundredths(), 725);
        assert_eq!(GradeNote::parse("07.05").unwrap().hundredths(), 705);
        assert_eq!(GradeNote::parse("10.00").unwrap().hundredths(), 1000);
        assert_eq!(GradeNote::parse("-0").unwrap().hundredths(), 0);
    }

    #[test]
    fn grade_note_rejects_out_of_range() {
        let expected = ValidationReason::OutOfRange { min: 0, max: 10 };
        assert_eq!(reason(GradeNote::parse("10.01")), expected);
        assert_eq!(reason(GradeNote::parse("-1")), expected);
        assert_eq!(reason(GradeNote::parse("99999999999")), expected);
        assert_eq!(reason(GradeNote::from_hundredths(1001)), expected);
        assert_eq!(reason(GradeNote::from_f64(10.5)), expected);
        assert_eq!(reason(GradeNote::from_f64(-0.5)), expected);
    }

    #[test]
    fn grade_note_rejects_too_many_decimals() {
        let expected = ValidationReason::TooManyDecimals { max: 2 };
        assert_eq!(reason(GradeNote::parse("7.255")), expected);
        assert_eq!(reason(GradeNote::from_f64(7.255)), expected);
    }

    #[test]
    fn grade_note_rejects_malformed_and_empty() {
        assert_eq!(reason(GradeNote::parse("")), ValidationReason::Empty);
        for raw in [
            "abc", "7,5", "7.", ".5", "1e1", "+7", "7.-1", "-", "--5", "-+5",
        ] {
            assert_eq!(
                reason(GradeNote::parse(raw)),
                ValidationReason::InvalidFormat,
                "{raw}"
            );
        }
        assert_eq!(
            reason(GradeNote::from_f64(f64::NAN)),
            ValidationReason::InvalidFormat
        );
    }

    #[test]
    fn grade_note_from_f64_tolerates_binary_representation() {
        assert_eq!(GradeNote::from_f64(7.35).unwrap().hundredths(), 735);
        assert_eq!(GradeNote::from_f64(0.1 + 0.2).unwrap().hundredths(), 30);
        assert!((GradeNote::from_f64(8.4).unwrap().as_f64() - 8.4).abs() < 1e-9);
    }

    #[test]
    fn grade_note_serializes_as_two_decimal_string() {
        let note = GradeNote::parse("7.5").unwrap();
        assert_eq!(note.to_string(), "7.50");
        assert_eq!(
            serde_json::to_value(note).unwrap(),
            serde_json::json!("7.50")
        );
        assert_eq!(serde_json::from_str::<GradeNote>("\"7.50\"").unwrap(), note);
        assert!(serde_json::from_str::<GradeNote>("\"11\"").is_err());
    }

    #[test]
    fn validation_error_can_be_reported_against_another_field() {
        let err = Email::parse("nope")
            .unwrap_err()
            .for_field("applicant_email");
        assert_eq!(err.field, "applicant_email");
        assert_eq!(err.code(), "INVALID_FORMAT");
        assert_eq!(err.kind(), RejectionKind::Validation);
        assert_eq!(
            err.to_string(),
            "invalid applicant_email: has an invalid format"
        );
    }
}
