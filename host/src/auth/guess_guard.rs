//! Throttling of password guessing (what `svcrack` and friends do against SIP Digest).
//!
//! Failed Digest responses are counted per source address and per (source address,
//! username) within a window. Past a limit, credentials from that address (for that
//! username, or for every username) are refused without being checked until the ban
//! ends: the guesser gets the same answer as for a wrong password, and never learns
//! that it guessed right. Counting per username as well as per address keeps one
//! misconfigured phone from locking out the other phones behind the same NAT (they
//! stay under the per-address limit), while spraying one password over many
//! usernames still trips the per-address one. IPv6 sources count by their /64, the
//! block one host usually holds. Sans-IO: the caller passes the time.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt as _};

/// The most addresses and (address, username) pairs tracked at once. Reached, the
/// ones with nothing pending go first, then the oldest counts (bans are kept).
const MAX_TRACKED: usize = 65_536;
/// Usernames are tracked by at most this many bytes.
const MAX_USER_BYTES: usize = 128;

/// Limits of a [`GuessGuard`]; a limit of 0 turns that count off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuessLimits {
    /// Failures for one username from one address within `window` that start a ban.
    pub per_user: u32,
    /// Failures from one address, all usernames together, within `window`.
    pub per_address: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
}

/// What a failure started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BanStarted {
    /// Credentials for this username from this address are refused.
    User(IpAddr, String),
    /// Every credential from this address is refused.
    Address(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    User(IpAddr, String),
}

#[derive(Debug, Clone, Copy)]
struct Track {
    failures: u32,
    /// Start of the current counting window.
    since: Instant,
    banned_until: Option<Instant>,
}

impl Track {
    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }
}

/// Counts failed Digest responses and refuses the sources of too many.
#[derive(Debug)]
pub(crate) struct GuessGuard {
    limits: GuessLimits,
    tracks: Mutex<HashMap<Key, Track>>,
}

/// The address failures count by: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4), IPv6 by its /64.
fn source_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USER_BYTES);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_string()
}

impl GuessGuard {
    /// A guard with `limits`.
    pub(crate) fn new(limits: GuessLimits) -> Self {
        Self {
            limits,
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// Its limits.
    pub(crate) fn limits(&self) -> GuessLimits {
        self.limits
    }

    fn keys(&self, addr: IpAddr, user: &str) -> [Option<(Key, u32)>; 2] {
        let addr = source_of(addr);
        [
            (self.limits.per_address > 0).then_some((Key::Address(addr), self.limits.per_address)),
            (self.limits.per_user > 0)
                .then(|| (Key::User(addr, user_key(user)), self.limits.per_user)),
        ]
    }

    /// Whether credentials for `user` from `addr` are refused at `now`.
    pub(crate) fn refused(&self, addr: IpAddr, user: &str, now: Instant) -> bool {
        let tracks = self.tracks.lock().expect("guess guard lock");
        self.keys(addr, user)
            .into_iter()
            .flatten()
            .any(|(k, _)| tracks.get(&k).is_some_and(|t| t.banned(now)))
    }

    /// Counts a failed response for `user` from `addr`; returns the bans it started.
    pub(crate) fn failed(&self, addr: IpAddr, user: &str, now: Instant) -> Vec<BanStarted> {
        let mut started = Vec::new();
        let mut tracks = self.tracks.lock().expect("guess guard lock");
        for (key, limit) in self.keys(addr, user).into_iter().flatten() {
            if !tracks.contains_key(&key) && tracks.len() >= MAX_TRACKED {
                self.make_room(&mut tracks, now);
            }
            let t = tracks.entry(key.clone()).or_insert(Track {
                failures: 0,
                since: now,
                banned_until: None,
            });
            if t.banned(now) {
                continue;
            }
            if now.duration_since(t.since) >= self.limits.window || t.banned_until.is_some() {
                // A new window (or the first failure after a ban ended).
                *t = Track {
                    failures: 0,
                    since: now,
                    banned_until: None,
                };
            }
            t.failures += 1;
            if t.failures >= limit {
                t.banned_until = Some(now + self.limits.ban);
                started.push(match key {
                    Key::Address(a) => BanStarted::Address(a),
                    Key::User(a, u) => BanStarted::User(a, u),
                });
            }
        }
        started
    }

    /// Counts a successful response for `user` from `addr`: that username's count from
    /// that address starts over (the address's count does not).
    pub(crate) fn succeeded(&self, addr: IpAddr, user: &str) {
        if self.limits.per_user == 0 {
            return;
        }
        let key = Key::User(source_of(addr), user_key(user));
        let mut tracks = self.tracks.lock().expect("guess guard lock");
        if tracks.get(&key).is_some_and(|t| t.banned_until.is_none()) {
            tracks.remove(&key);
        }
    }

    /// Drops what no longer matters; if that is not enough, the counts that are not
    /// bans, oldest first, down to three quarters of the bound.
    fn make_room(&self, tracks: &mut HashMap<Key, Track>, now: Instant) {
        let window = self.limits.window;
        tracks.retain(|_, t| t.banned(now) || now.duration_since(t.since) < window);
        if tracks.len() < MAX_TRACKED * 3 / 4 {
            return;
        }
        let mut counts: Vec<(Instant, Key)> = tracks
            .iter()
            .filter(|(_, t)| !t.banned(now))
            .map(|(k, t)| (t.since, k.clone()))
            .collect();
        counts.sort_unstable_by_key(|(since, _)| *since);
        let excess = tracks.len().saturating_sub(MAX_TRACKED * 3 / 4);
        for (_, k) in counts.into_iter().take(excess) {
            tracks.remove(&k);
        }
    }

    /// How many addresses and pairs are tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tracks.lock().expect("guess guard lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GuessLimits = GuessLimits {
        per_user: 3,
        per_address: 5,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(600),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_user_is_refused_from_an_address_after_its_limit_until_the_ban_ends() {
        let g = GuessGuard::new(LIMITS);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(g.failed(a, "alice", t0).is_empty());
        assert!(g.failed(a, "alice", t0).is_empty());
        assert!(!g.refused(a, "alice", t0));
        assert_eq!(
            g.failed(a, "alice", t0 + Duration::from_secs(1)),
            vec![BanStarted::User(a, "alice".into())]
        );
        assert!(g.refused(a, "alice", t0 + Duration::from_secs(2)));
        // Other users from the same address, and alice from elsewhere, go on.
        assert!(!g.refused(a, "bob", t0 + Duration::from_secs(2)));
        assert!(!g.refused(ip("192.0.2.2"), "alice", t0 + Duration::from_secs(2)));
        // Failures during the ban start nothing new and do not extend it.
        assert!(g.failed(a, "alice", t0 + Duration::from_secs(3)).is_empty());
        assert!(g.refused(a, "alice", t0 + Duration::from_secs(600)));
        assert!(!g.refused(a, "alice", t0 + Duration::from_secs(601)));
        // After the ban the count starts over.
        assert!(
            g.failed(a, "alice", t0 + Duration::from_secs(602))
                .is_empty()
        );
        assert!(!g.refused(a, "alice", t0 + Duration::from_secs(602)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let g = GuessGuard::new(LIMITS);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..10 {
            // One failure a minute, as a phone with a wrong password retries.
            let started = g.failed(a, "alice", t0 + Duration::from_secs(61 * i));
            assert!(started.is_empty(), "failure {i}: {started:?}");
        }
        assert!(!g.refused(a, "alice", t0 + Duration::from_secs(61 * 10)));
    }

    #[test]
    fn spraying_usernames_trips_the_address_limit() {
        let g = GuessGuard::new(LIMITS);
        let t0 = Instant::now();
        let a = ip("192.0.2.9");
        let mut started = Vec::new();
        for u in ["u1", "u2", "u3", "u4", "u5"] {
            started.extend(g.failed(a, u, t0));
        }
        assert_eq!(started, vec![BanStarted::Address(a)]);
        assert!(g.refused(a, "anyone", t0));
        assert!(!g.refused(ip("192.0.2.10"), "anyone", t0));
    }

    #[test]
    fn success_starts_the_users_count_over_but_not_the_addresses() {
        let g = GuessGuard::new(LIMITS);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        g.failed(a, "alice", t0);
        g.failed(a, "alice", t0);
        g.succeeded(a, "alice");
        g.failed(a, "alice", t0);
        g.failed(a, "alice", t0);
        assert!(!g.refused(a, "alice", t0));
        // Four failures from the address so far; the fifth bans it.
        assert_eq!(g.failed(a, "bob", t0), vec![BanStarted::Address(a)]);
        // A success does not lift a ban.
        g.succeeded(a, "alice");
        assert!(g.refused(a, "alice", t0));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let g = GuessGuard::new(LIMITS);
        let t0 = Instant::now();
        for i in 1..=3 {
            g.failed(ip(&format!("2001:db8:1:2::{i}")), "alice", t0);
        }
        assert!(g.refused(ip("2001:db8:1:2:ffff::1"), "alice", t0));
        assert!(!g.refused(ip("2001:db8:1:3::1"), "alice", t0));
        for _ in 0..3 {
            g.failed(ip("::ffff:192.0.2.7"), "bob", t0);
        }
        assert!(g.refused(ip("192.0.2.7"), "bob", t0));
    }

    #[test]
    fn zero_limits_turn_counting_off() {
        let g = GuessGuard::new(GuessLimits {
            per_user: 0,
            per_address: 0,
            ..LIMITS
        });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            assert!(g.failed(a, "alice", t0).is_empty());
        }
        assert!(!g.refused(a, "alice", t0));
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn tracking_is_bounded_and_keeps_bans() {
        let g = GuessGuard::new(GuessLimits {
            per_user: 2,
            per_address: 0,
            ..LIMITS
        });
        let t0 = Instant::now();
        let banned = ip("192.0.2.1");
        g.failed(banned, "alice", t0);
        g.failed(banned, "alice", t0);
        // More sources, one failure each, than are tracked.
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let a = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            assert!(g.failed(a, "x", t0 + Duration::from_millis(1)).is_empty());
        }
        assert!(g.tracked() <= MAX_TRACKED);
        assert!(g.refused(banned, "alice", t0 + Duration::from_millis(2)));
        // Counting goes on for new sources.
        let fresh = ip("198.51.100.1");
        let t1 = t0 + Duration::from_millis(3);
        assert!(g.failed(fresh, "y", t1).is_empty());
        assert_eq!(
            g.failed(fresh, "y", t1),
            vec![BanStarted::User(fresh, "y".into())]
        );
    }
}
