//! E-mail addresses.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ValidationError, ValidationReason};

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
