//! Token buckets: per client address for the public mutations and anonymous reads,
//! per account for signed-in reads and writes.
//!
//! Bounded: at most 10,000 keys (`MAX_TRACKED`) are kept. At the bound, buckets that refilled
//! are forgotten (a new one starts full: nothing is lost), then, if that is not enough
//! (a crowd of keys all spending), the fullest, until a quarter of the room is free:
//! the keys most held back stay held back, and the sweep is paid once per 2,500 new
//! keys, not on every request.
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

/// Most keys tracked at once.
const MAX_TRACKED: usize = 10_000;

/// Keys kept when the fullest are forgotten to make room.
const KEEP_WHEN_FULL: usize = MAX_TRACKED * 3 / 4;

impl RateLimiter<IpAddr> {
    /// Takes one token for the client address `client`; on refusal, how long until
    /// one is available.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.check_key(bucket_key(client))
    }

    /// Takes `cost` tokens for the client address `client` (see [`Self::take`]).
    pub fn check_cost(&self, client: IpAddr, cost: u32) -> Result<(), Duration> {
        self.take(bucket_key(client), cost)
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
        self.take(client, 1)
    }

    /// Takes `cost` tokens for `client`, all or none; on refusal, how long until they
    /// are available. A cost above the burst takes the whole burst (a full bucket), so
    /// that no request waits for ever.
    pub fn take(&self, client: K, cost: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.config.burst.max(1));
        let cost = f64::from(cost.max(1)).min(burst);
        let rate = self.refill_per_second();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            make_room(&mut buckets, now, rate, burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - bucket.tokens) / rate))
        }
    }
}

/// Forgets the buckets that refilled; when too few did, the fullest, down to
/// [`KEEP_WHEN_FULL`] keys. Always down to that many, so that a sweep (linear in the
/// keys) comes at most once per 2,500 new keys.
fn make_room<K: Hash + Eq>(buckets: &mut HashMap<K, Bucket>, now: Instant, rate: f64, burst: f64) {
    let level = |bucket: &Bucket| {
        (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate).min(burst)
    };
    buckets.retain(|_, bucket| level(bucket) < burst);
    if buckets.len() <= KEEP_WHEN_FULL {
        return;
    }
    let mut levels: Vec<f64> = buckets.values().map(level).collect();
    // The level below which KEEP_WHEN_FULL buckets lie: those above it go.
    let (_, threshold, _) = levels.select_nth_unstable_by(KEEP_WHEN_FULL, f64::total_cmp);
    let threshold = *threshold;
    // At most KEEP_WHEN_FULL stay (fewer when levels tie at the threshold).
    buckets.retain(|_, bucket| level(bucket) < threshold);
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

    /// A crowd of keys, each spending, cannot grow the map past its bound; the keys
    /// held back the most are the ones kept.
    #[test]
    fn the_keys_tracked_are_bounded_and_the_fullest_go_first() {
        let limiter = RateLimiter::<u64>::new(RateLimitConfig {
            burst: 3,
            per_minute: 1,
        });
        // Key 0 spends its whole burst: the most held back of all.
        for _ in 0..3 {
            assert!(limiter.check_key(0).is_ok());
        }
        assert!(limiter.check_key(0).is_err());
        for key in 1..(3 * MAX_TRACKED as u64) {
            assert!(limiter.check_key(key).is_ok());
            let tracked = limiter.buckets.lock().unwrap().len();
            assert!(tracked <= MAX_TRACKED, "{tracked} keys tracked");
        }
        assert!(
            limiter.check_key(0).is_err(),
            "the spent bucket was forgotten"
        );
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
