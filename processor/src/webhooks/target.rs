//! Where a webhook may be sent: HTTPS only (plain HTTP only to hosts the operator
//! allows), and never to loopback, private, link-local, multicast or otherwise
//! internal addresses (server-side request forgery), unless the operator allows their
//! network. Checked when an endpoint is registered or changed, and again at every
//! delivery on the addresses the name resolves to then: the connection goes to an
//! address that passed the check, never to a second resolution.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::WebhookConfig;

/// The longest URL an endpoint may have.
pub const MAX_URL_LENGTH: usize = 2048;

/// A URL that passed the static checks (scheme, host, length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: url::Url,
    pub host: String,
    pub port: u16,
    pub https: bool,
}

/// Why a URL or its addresses are refused. The text is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the URL is not valid")]
    Invalid,
    #[error("the URL is longer than {MAX_URL_LENGTH} characters")]
    TooLong,
    #[error("the URL must use https")]
    NotHttps,
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("the host resolves to an address webhooks may not reach ({0})")]
    Forbidden(IpAddr),
    #[error("the host did not resolve")]
    Unresolved,
}

/// Parses and checks `text` without resolving it.
pub fn parse(config: &WebhookConfig, text: &str) -> Result<Target, TargetError> {
    if text.len() > MAX_URL_LENGTH {
        return Err(TargetError::TooLong);
    }
    let url = url::Url::parse(text.trim()).map_err(|_| TargetError::Invalid)?;
    let host = url
        .host_str()
        .ok_or(TargetError::Invalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let https = match url.scheme() {
        "https" => true,
        "http"
            if config
                .insecure_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host)) =>
        {
            false
        }
        "http" => return Err(TargetError::NotHttps),
        _ => return Err(TargetError::Invalid),
    };
    let port = url.port_or_known_default().ok_or(TargetError::Invalid)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        check(config, ip)?;
    }
    Ok(Target {
        url,
        host,
        port,
        https,
    })
}

/// Whether `ip` is an address no webhook may reach by default: loopback, private,
/// carrier-grade NAT, link-local, multicast, broadcast, unspecified, documentation and
/// benchmarking ranges, and their IPv4-mapped or -compatible IPv6 forms.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10, shared address space
        || (a == 198 && (b == 18 || b == 19)) // 198.18.0.0/15, benchmarking
        || a >= 240 // reserved
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) embed an IPv4.
    let embedded = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        return internal_v4(embedded);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return internal_v4(embedded);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (segments[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (segments[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
}

/// Refuses an internal address unless the operator allowed its network.
pub fn check(config: &WebhookConfig, ip: IpAddr) -> Result<(), TargetError> {
    let canonical = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if is_internal(canonical)
        && !config
            .allowed_networks
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    {
        return Err(TargetError::Forbidden(ip));
    }
    Ok(())
}

/// Resolves the target's host and checks every address; returns the first allowed one.
/// An internal address among the answers refuses the whole name: a name that points at
/// both is an attack, not a configuration.
pub async fn resolve(
    config: &WebhookConfig,
    target: &Target,
    timeout: Duration,
) -> Result<SocketAddr, TargetError> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        check(config, ip)?;
        return Ok(SocketAddr::new(ip, target.port));
    }
    let addresses: Vec<SocketAddr> = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| TargetError::Unresolved)?
    .map_err(|_| TargetError::Unresolved)?
    .collect();
    for address in &addresses {
        check(config, address.ip())?;
    }
    addresses.first().copied().ok_or(TargetError::Unresolved)
}

/// The registration check: the static checks, then the addresses if the name resolves
/// now (a name that does not resolve yet is accepted; every delivery checks again).
pub async fn check_registration(config: &WebhookConfig, text: &str) -> Result<Target, TargetError> {
    let target = parse(config, text)?;
    match resolve(config, &target, Duration::from_secs(3)).await {
        Ok(_) | Err(TargetError::Unresolved) => Ok(target),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> WebhookConfig {
        WebhookConfig::default()
    }

    #[test]
    fn refuses_internal_addresses_of_both_families() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check(&strict(), ip).is_err(), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c7:1946",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check(&strict(), ip).is_ok(), "{ip} must be allowed");
        }
    }

    #[test]
    fn urls_must_be_https_unless_the_host_is_allowed() {
        assert_eq!(
            parse(&strict(), "http://example.com/hook"),
            Err(TargetError::NotHttps)
        );
        assert!(parse(&strict(), "https://example.com/hook").is_ok());
        assert_eq!(
            parse(&strict(), "https://[::1]:8443/"),
            Err(TargetError::Forbidden("::1".parse().unwrap()))
        );
        assert_eq!(
            parse(&strict(), "https://user:pw@example.com/"),
            Err(TargetError::Credentials)
        );
        assert_eq!(
            parse(&strict(), "ftp://example.com/"),
            Err(TargetError::Invalid)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert_eq!(parse(&strict(), &long), Err(TargetError::TooLong));
        let local = WebhookConfig {
            insecure_hosts: vec!["127.0.0.1".into()],
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
            ..WebhookConfig::default()
        };
        assert!(parse(&local, "http://127.0.0.1:9000/hook").is_ok());
        assert!(
            parse(&local, "http://[::ffff:127.0.0.1]:9000/").is_err(),
            "not an allowed host for http"
        );
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let target = parse(&strict(), "https://localhost/hook").unwrap();
        assert!(matches!(
            resolve(&strict(), &target, Duration::from_secs(3)).await,
            Err(TargetError::Forbidden(_))
        ));
    }
}
