//! Who the client is, for rate limits and connection caps: the TCP peer, unless the
//! peer is a configured trusted proxy, in which case the client named by the proxy.
//!
//! Behind a reverse proxy every request comes from the proxy's address, so all users
//! shared one rate-limit bucket (6 real users doing 20 logins got 10 `RATE_LIMITED`).
//! The forwarding headers are believed only from trusted peers: from anyone else they
//! are a client's own claim. The list is read from the right (each proxy appends the
//! address it received from), skipping trusted proxies; the first address that is not
//! one is the client. Addresses a client prepended itself lie further left and are
//! never reached.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request that arrived from `peer`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    // `::ffff:10.0.0.2` (an IPv4 peer on a dual-stack listener) is `10.0.0.2`.
    let peer = peer.to_canonical();
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(&peer) {
        return peer;
    }
    // Every hop, left to right; `None` for one that does not parse (`unknown`, an
    // obfuscated name): the walk from the right stops there.
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        hops.extend(value.split(',').map(|hop| parse_hop(hop.trim())));
    }
    if hops.is_empty() {
        for value in headers.get_all("forwarded") {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for element in value.split(',') {
                let hop = element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(value.trim().trim_matches('"')))
                });
                if let Some(hop) = hop {
                    hops.push(hop);
                }
            }
        }
    }
    // From the right: trusted proxies are skipped; the first other address is the
    // client. An entry that does not parse ends the walk at the last trusted hop,
    // never reaching what a client may have written further left.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(address) if is_trusted(address) => client = *address,
            Some(address) => return *address,
            None => return client,
        }
    }
    client
}

/// One hop: `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let address: IpAddr = if let Ok(address) = hop.parse() {
        address
    } else if let Some(rest) = hop.strip_prefix('[') {
        rest.split_once(']')?.0.parse().ok()?
    } else {
        let (host, port) = hop.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse().ok()?
    };
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_address(ip("203.0.113.1"), &h, &[]),
            ip("203.0.113.1")
        );
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_address(ip("203.0.113.1"), &h, &trusted),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A client that prepends a fake address gains nothing.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.3")]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &h, &trusted),
            ip("198.51.100.7")
        );
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.8:5555"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &h, &trusted),
            ip("198.51.100.8")
        );
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"",
        )]);
        assert_eq!(
            client_address(ip("10.0.0.2"), &h, &trusted),
            ip("2001:db8::1")
        );
        // An entry that does not parse stops the walk: the client's own "1.1.1.1"
        // further left is never taken.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.3")]);
        assert_eq!(client_address(ip("10.0.0.2"), &h, &trusted), ip("10.0.0.3"));
        // An IPv4 peer on a dual-stack listener is still the trusted proxy.
        let h = headers(&[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(
            client_address(ip("::ffff:10.0.0.2"), &h, &trusted),
            ip("198.51.100.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
    }
}
