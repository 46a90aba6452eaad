//! Token buckets: per client address for the public mutations and anonymous reads,
//! per account for signed-in writes.
//!
//! In memory, per process: with several API instances each limits on its own, which
//! is good enough against a single abusive client. The address is the TCP peer, or,
//! when the peer is a configured trusted proxy, the client it names in
//! `X-Forwarded-For`/`Forwarded` (see [`crate::client_address`]). An
//! IPv6 client is limited by its /64: one host usually holds a whole /64 and could
//! otherwise take a fresh bucket per address. (IPv4-mapped IPv6 addresses count as the
//! IPv4 address.)

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter<K = IpAddr> {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Above this many tracked addresses, full buckets are forgotten.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter<IpAddr> {
    /// Takes one token for the client address `client`; on refusal, how long until
    /// one is available.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_key(bucket_key(client))
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill_per_second(&self) -> f64 {
        f64::from(self.config.per_minute.max(1)) / 60.0
    }

    /// Takes one token for `client`; on refusal, how long until one is available.
    pub fn check_key(&self, client: K) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.config.burst.max(1));
        let rate = self.refill_per_second();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// The address a client's bucket is kept under: IPv4 as is, IPv6 by its /64.
pub(crate) fn bucket_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(network.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two requests at once, then one a minute.
    fn burst_of_two() -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            burst: 2,
            per_minute: 1,
        })
    }

    #[test]
    fn limits_after_burst_per_address() {
        let limiter = burst_of_two();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let limiter = burst_of_two();
        let first: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(first).is_ok());
        assert!(limiter.check(same_64).is_ok());
        assert!(limiter.check(same_64).is_err());
        assert!(limiter.check(first).is_err());
        assert!(limiter.check(other_64).is_ok());
        // An IPv4-mapped address shares the IPv4 address's bucket.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(limiter.check(v4).is_ok());
        assert!(limiter.check(mapped).is_ok());
        assert!(limiter.check(v4).is_err());
    }
}
