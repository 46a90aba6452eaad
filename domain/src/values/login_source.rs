//! Where a login comes from, as far as lockouts are concerned.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{ValidationError, ValidationReason};

/// The source of a login attempt: the client's IPv4 address, or the /64 prefix of its
/// IPv6 address (one client usually owns a whole /64 and could otherwise take a fresh
/// count per address). An IPv4-mapped IPv6 address is its IPv4 address.
///
/// Serialized as text: `203.0.113.9`, or `2001:db8:1:2::/64`. Only those canonical forms
/// parse, so a stored source always names one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LoginSource(Key);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    V4(Ipv4Addr),
    /// The network address of the /64 (host bits zero).
    V6Prefix(Ipv6Addr),
}

impl LoginSource {
    pub const FIELD: &'static str = "source";

    /// The source of a client at `address`: never fails, every address has one.
    pub fn from_ip(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self(Key::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(Key::V4(v4)),
                None => Self(Key::V6Prefix(prefix_64(v6))),
            },
        }
    }

    /// Parses the text form (see the type's docs): an IPv4 address, or an IPv6 /64
    /// prefix with its host bits zero.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = || ValidationError::new(Self::FIELD, ValidationReason::InvalidFormat);
        if let Some(network) = raw.strip_suffix("/64") {
            let v6: Ipv6Addr = network.parse().map_err(|_| invalid())?;
            if v6.to_ipv4_mapped().is_some() || prefix_64(v6) != v6 {
                return Err(invalid());
            }
            return Ok(Self(Key::V6Prefix(v6)));
        }
        raw.parse::<Ipv4Addr>()
            .map(|v4| Self(Key::V4(v4)))
            .map_err(|_| invalid())
    }
}

fn prefix_64(address: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(address) & !((1u128 << 64) - 1))
}

impl From<IpAddr> for LoginSource {
    fn from(address: IpAddr) -> Self {
        Self::from_ip(address)
    }
}

impl TryFrom<String> for LoginSource {
    type Error = ValidationError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<LoginSource> for String {
    fn from(value: LoginSource) -> Self {
        value.to_string()
    }
}

impl fmt::Display for LoginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Key::V4(v4) => v4.fmt(f),
            Key::V6Prefix(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: &str) -> LoginSource {
        LoginSource::from_ip(address.parse().unwrap())
    }

    #[test]
    fn ipv4_is_the_address_and_ipv6_its_64_prefix() {
        assert_eq!(source("203.0.113.9").to_string(), "203.0.113.9");
        assert_eq!(source("::ffff:203.0.113.9"), source("203.0.113.9"));
        assert_eq!(
            source("2001:db8:1:2:aaaa:bbbb:cccc:dddd").to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff::9"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
    }

    #[test]
    fn the_text_form_round_trips_and_nothing_else_parses() {
        for text in ["203.0.113.9", "2001:db8:1:2::/64", "::/64"] {
            assert_eq!(LoginSource::parse(text).unwrap().to_string(), text);
        }
        for text in [
            "",
            "2001:db8::1",
            "2001:db8::1/64",
            "2001:db8::/48",
            "203.0.113.9/32",
            "::ffff:203.0.113.9/64",
            "::ffff:0:0/64",
            "example.org",
            " 203.0.113.9",
        ] {
            assert_eq!(
                LoginSource::parse(text),
                Err(ValidationError::new(
                    LoginSource::FIELD,
                    ValidationReason::InvalidFormat
                )),
                "{text:?}"
            );
        }
    }

    #[test]
    fn serialized_as_text() {
        let v6 = source("2001:db8:1:2::7");
        let json = serde_json::to_string(&v6).unwrap();
        assert_eq!(json, "\"2001:db8:1:2::/64\"");
        assert_eq!(serde_json::from_str::<LoginSource>(&json).unwrap(), v6);
        assert!(serde_json::from_str::<LoginSource>("\"2001:db8::1\"").is_err());
    }
}
