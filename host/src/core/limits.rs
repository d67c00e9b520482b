//! Per-source bounds, sans-IO: what counts as one source, a request-rate limiter in the
//! manner of Kamailio's `pike` (a token bucket per source, a ban past it), and a gate
//! that lets a limit's log line through at most once a minute per source. Time comes in
//! as an argument.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt as _};

use super::peers::TrustedPeers;

/// The source a per-source limit counts against: an IPv4 address (also when it comes
/// IPv4-mapped from a dual-stack socket), or the /64 an IPv6 address is in (one
/// subscriber line or host gets a /64; counting single IPv6 addresses would let one
/// machine pose as 2^64 sources).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// Lets a limit's log line through at most once per [`LogGate::EVERY`] per source
/// (the counters in `/metrics` count every hit), or per key of another kind (a name
/// that did not resolve). Bounded: past [`LogGate::MAX_SOURCES`] keys remembered, one
/// line a minute covers the rest.
#[derive(Debug)]
pub struct LogGate<K = (&'static str, IpAddr)> {
    last: HashMap<K, Instant>,
    /// The last line for sources not remembered (the table was full).
    overflow: Option<Instant>,
    swept: Option<Instant>,
}

impl<K: Eq + std::hash::Hash> Default for LogGate<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl LogGate {
    /// Whether to log `what` for `source` now (and if so, remembers it).
    pub fn allow(&mut self, what: &'static str, source: IpAddr, now: Instant) -> bool {
        self.allow_key((what, source_key(source)), now)
    }
}

impl<K: Eq + std::hash::Hash> LogGate<K> {
    /// How often one source's line for one limit may be logged.
    pub const EVERY: Duration = Duration::from_secs(60);
    /// Most (limit, source) pairs remembered.
    pub const MAX_SOURCES: usize = 4096;

    /// An empty gate.
    pub fn new() -> Self {
        Self {
            last: HashMap::new(),
            overflow: None,
            swept: None,
        }
    }

    /// Whether to log the line of `key` now (and if so, remembers it).
    pub fn allow_key(&mut self, key: K, now: Instant) -> bool {
        if let Some(at) = self.last.get_mut(&key) {
            if now.saturating_duration_since(*at) < Self::EVERY {
                return false;
            }
            *at = now;
            return true;
        }
        if self.last.len() >= Self::MAX_SOURCES
            && self
                .swept
                .is_none_or(|s| now.saturating_duration_since(s) >= Self::EVERY)
        {
            self.swept = Some(now);
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < Self::EVERY);
        }
        if self.last.len() < Self::MAX_SOURCES {
            self.last.insert(key, now);
            return true;
        }
        match self.overflow {
            Some(at) if now.saturating_duration_since(at) < Self::EVERY => false,
            _ => {
                self.overflow = Some(now);
                true
            }
        }
    }
}

/// `limits.rate`: requests per second per source, the burst above it, and the ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Sustained requests per second one source may send; 0 turns the limit off.
    pub per_second: u32,
    /// Requests a source may send at once above the sustained rate.
    pub burst: u32,
    /// How long a source that went past the burst is refused.
    pub ban: Duration,
}

/// What the rate limiter says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate (or exempt).
    Pass,
    /// The source is banned: refuse, and tell it to come back after this many
    /// seconds. `newly` is true for the request that caused the ban.
    Banned {
        /// Whole seconds until the ban ends, at least 1.
        retry_after: u32,
        /// This request started the ban.
        newly: bool,
    },
}

/// One source's bucket. Tokens are counted in thousandths so refills need no floats.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    refilled: Instant,
    banned_until: Option<Instant>,
}

/// Most sources tracked at once. Past it, sources not tracked yet pass unchecked until
/// the sweep frees room. Each entry is about 64 bytes, so the table stays under
/// ~100 MiB even when full.
pub const MAX_TRACKED: usize = 1_000_000;

/// A token bucket per source ([`source_key`]): `burst` requests at once, refilled at
/// `per_second`; a request that finds the bucket empty bans its source for `ban`
/// (every request meanwhile is refused, and does not extend the ban). Trusted peers and
/// exempt blocks are never limited. Memory: a source's entry goes once its bucket is
/// full again and it is not banned, so the table holds the sources active in the last
/// `burst / per_second` seconds plus the banned ones, at most [`MAX_TRACKED`].
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateConfig,
    exempt: TrustedPeers,
    buckets: HashMap<IpAddr, Bucket>,
    swept: Option<Instant>,
}

impl RateLimiter {
    /// New rates (a reload): counts and bans so far stay.
    pub fn set_config(&mut self, cfg: RateConfig) {
        self.cfg = cfg;
    }

    /// A limiter; `exempt` are never limited (trusted peers and configured blocks).
    pub fn new(cfg: RateConfig, exempt: TrustedPeers) -> Self {
        Self {
            cfg,
            exempt,
            buckets: HashMap::new(),
            swept: None,
        }
    }

    /// Whether the limit is on.
    pub fn is_on(&self) -> bool {
        self.cfg.per_second > 0
    }

    /// Until when `ip`'s source is banned, if it is.
    pub fn banned_until(&self, ip: IpAddr) -> Option<Instant> {
        self.buckets.get(&source_key(ip))?.banned_until
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Counts one request from `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        self.check_weighted(ip, now, 1)
    }

    /// Counts a request from `ip` at `now` as `weight` requests (at most the burst, so
    /// that any message can pass a fresh bucket).
    pub fn check_weighted(&mut self, ip: IpAddr, now: Instant, weight: u32) -> Verdict {
        if !self.is_on() || self.exempt.contains(ip) {
            return Verdict::Pass;
        }
        self.sweep(now);
        let cfg = self.cfg;
        let full = u64::from(cfg.burst.max(1)) * 1000;
        let key = source_key(ip);
        let len = self.buckets.len();
        let b = match self.buckets.get_mut(&key) {
            Some(b) => b,
            None if len >= MAX_TRACKED => return Verdict::Pass,
            None => self.buckets.entry(key).or_insert(Bucket {
                milli_tokens: full,
                refilled: now,
                banned_until: None,
            }),
        };
        if let Some(until) = b.banned_until {
            if now < until {
                return Verdict::Banned {
                    retry_after: secs_until(now, until),
                    newly: false,
                };
            }
            // The ban is over: a fresh bucket.
            b.banned_until = None;
            b.milli_tokens = full;
            b.refilled = now;
        }
        let elapsed = now.saturating_duration_since(b.refilled);
        let refill = elapsed
            .as_millis()
            .saturating_mul(u128::from(cfg.per_second));
        b.milli_tokens = (u128::from(b.milli_tokens) + refill).min(u128::from(full)) as u64;
        b.refilled = now;
        let cost = u64::from(weight.clamp(1, cfg.burst.max(1))) * 1000;
        if b.milli_tokens >= cost {
            b.milli_tokens -= cost;
            return Verdict::Pass;
        }
        let until = now + cfg.ban;
        b.banned_until = Some(until);
        Verdict::Banned {
            retry_after: secs_until(now, until),
            newly: true,
        }
    }

    /// Drops sources whose bucket is full again and who are not banned (they are as a
    /// new source would be), at most once a second. Small tables too: a thousand
    /// sources that came and left were kept for good below 1,024.
    fn sweep(&mut self, now: Instant) {
        if self.buckets.is_empty()
            || self
                .swept
                .is_some_and(|s| now.saturating_duration_since(s) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        let cfg = self.cfg;
        let full = u128::from(cfg.burst.max(1)) * 1000;
        self.buckets.retain(|_, b| match b.banned_until {
            Some(until) => now < until,
            None => {
                let refill = now
                    .saturating_duration_since(b.refilled)
                    .as_millis()
                    .saturating_mul(u128::from(cfg.per_second));
                u128::from(b.milli_tokens) + refill < full
            }
        });
        // A flood from many sources grew the table: its room goes back once they left.
        super::sharded::shrink_map(&mut self.buckets);
    }
}

/// Whole seconds from `now` to `until`, rounded up, at least 1.
fn secs_until(now: Instant, until: Instant) -> u32 {
    let d = until.saturating_duration_since(now);
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peers::Cidr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(per_second: u32, burst: u32, exempt: &[&str]) -> RateLimiter {
        RateLimiter::new(
            RateConfig {
                per_second,
                burst,
                ban: Duration::from_secs(60),
            },
            TrustedPeers::new(exempt.iter().map(|c| c.parse::<Cidr>().unwrap()).collect()),
        )
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1")),
            source_key(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    /// The bucket table a flood from many sources grew gives its room back once they
    /// left (it kept room for 8,192 after the attack bench's REGISTER flood).
    #[test]
    fn the_buckets_of_sources_that_left_give_their_room_back() {
        let mut r = limiter(10, 20, &[]);
        let t0 = Instant::now();
        for i in 0..5_000u32 {
            let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
            r.check(IpAddr::from([a, b, c, d]), t0);
        }
        assert!(r.buckets.capacity() >= 5_000);
        // Their buckets refill in two seconds; the next sweep drops them.
        r.check(ip("192.0.2.1"), t0 + Duration::from_secs(3));
        assert_eq!(r.tracked(), 1);
        assert!(
            r.buckets.capacity() < crate::core::sharded::SHRINK_FROM,
            "{}",
            r.buckets.capacity()
        );
    }

    /// A flood from a thousand addresses (the attack bench's INVITE flood came from
    /// 1,016) leaves no large table behind either: under 4,096 entries the table was
    /// kept, 128 KiB in the allocator's large size classes, on a page of megabytes
    /// that the flood's other leftovers shared.
    #[test]
    fn a_thousand_sources_that_left_give_their_room_back_too() {
        let mut r = limiter(10, 20, &[]);
        let t0 = Instant::now();
        for i in 0..1_000u32 {
            let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
            r.check(IpAddr::from([a, b, c, d]), t0);
        }
        assert!(r.buckets.capacity() >= 1_000);
        r.check(ip("192.0.2.1"), t0 + Duration::from_secs(3));
        assert_eq!(r.tracked(), 1);
        let bytes = r.buckets.capacity() * std::mem::size_of::<(IpAddr, Bucket)>();
        assert!(
            bytes < crate::core::sharded::SHRINK_FROM_BYTES,
            "{} entries, {bytes} bytes kept",
            r.buckets.capacity()
        );
    }

    #[test]
    fn a_burst_passes_then_the_source_is_banned_for_the_ban_time() {
        let mut r = limiter(10, 20, &[]);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            assert_eq!(r.check(a, t0), Verdict::Pass);
        }
        assert_eq!(
            r.check(a, t0),
            Verdict::Banned {
                retry_after: 60,
                newly: true
            }
        );
        // Meanwhile refused, the ban not extended, another source unaffected.
        let t = t0 + Duration::from_secs(30);
        assert_eq!(
            r.check(a, t),
            Verdict::Banned {
                retry_after: 30,
                newly: false
            }
        );
        assert_eq!(r.check(ip("192.0.2.2"), t), Verdict::Pass);
        // After the ban, a fresh burst.
        let t = t0 + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(r.check(a, t), Verdict::Pass);
        }
    }

    #[test]
    fn the_sustained_rate_is_never_banned() {
        let mut r = limiter(10, 20, &[]);
        let t0 = Instant::now();
        let a = ip("2001:db8::1");
        // 10 per second for a minute, 100 ms apart, from addresses in one /64.
        let base = u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap());
        for i in 0..600u64 {
            let from = IpAddr::V6(Ipv6Addr::from(base + u128::from(i)));
            let at = t0 + Duration::from_millis(100 * i);
            assert_eq!(r.check(from, at), Verdict::Pass, "request {i}");
        }
        // Twice the rate empties the bucket within seconds.
        let t1 = t0 + Duration::from_secs(60);
        let banned = (0..100u64)
            .map(|i| r.check(a, t1 + Duration::from_millis(50 * i)))
            .position(|v| v != Verdict::Pass);
        assert!(banned.is_some_and(|n| n > 20 && n < 60), "{banned:?}");
    }

    #[test]
    fn exempt_sources_and_a_zero_rate_are_never_limited() {
        let mut r = limiter(1, 1, &["127.0.0.0/8"]);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(r.check(ip("127.0.0.5"), t), Verdict::Pass);
        }
        let mut off = limiter(0, 1, &[]);
        for _ in 0..100 {
            assert_eq!(off.check(ip("192.0.2.1"), t), Verdict::Pass);
        }
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let mut r = limiter(100, 100, &[]);
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            r.check(a, t0);
        }
        assert_eq!(r.tracked(), 5000);
        // A second later every bucket is full again: the next request sweeps them.
        r.check(ip("192.0.2.1"), t0 + Duration::from_secs(2));
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn the_log_gate_lets_one_line_a_minute_per_source_and_limit() {
        let mut g = LogGate::new();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(g.allow("rate", a, t0));
        assert!(!g.allow("rate", a, t0 + Duration::from_secs(59)));
        assert!(g.allow("conn", a, t0), "another limit");
        assert!(g.allow("rate", ip("192.0.2.2"), t0), "another source");
        assert!(g.allow("rate", a, t0 + Duration::from_secs(60)));
        // Past the table's size one line a minute covers every new source.
        let mut g = LogGate::new();
        for i in 0..LogGate::<(&str, IpAddr)>::MAX_SOURCES as u32 {
            assert!(g.allow("x", IpAddr::V4((0x0a00_0000 + i).into()), t0));
        }
        assert!(g.allow("x", ip("192.0.2.9"), t0));
        assert!(!g.allow("x", ip("192.0.2.10"), t0));
        assert!(g.allow("x", ip("192.0.2.10"), t0 + Duration::from_secs(61)));
    }
}
