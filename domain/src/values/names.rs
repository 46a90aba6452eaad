//! Free-text names typed by people: person, institution, campus, city, course and
//! exam names, normalized and checked against look-alikes.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization as _;

use super::{ValidationError, ValidationReason};

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

/// Declares each validated text type: its doc comment, name, the field name its
/// validation errors report and its maximum length in characters.
macro_rules! text_types {
    ($($(#[$doc:meta])* $name:ident, field = $field:literal, max = $max:literal;)+) => {
        $(text_types!(@one $(#[$doc])* $name, $field, $max);)+
    };
    (@one $(#[$doc:meta])* $name:ident, $field:literal, $max:literal) => {
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

text_types! {
    /// A person's full name (users, students, teachers, applicants).
    PersonName, field = "name", max = 200;
    /// An institution's display name.
    InstitutionName, field = "institution_name", max = 200;
    /// A campus name, unique (case-insensitively) within its institution.
    CampusName, field = "campus_name", max = 120;
    /// The city a campus is in.
    CityName, field = "city", max = 120;
    /// A course name, unique (case-insensitively) within its campus.
    CourseName, field = "course_name", max = 200;
    /// The name of an exam (e.g. "Midterm"), shown in the student's grade notification.
    ExamName, field = "exam_name", max = 200;
}
