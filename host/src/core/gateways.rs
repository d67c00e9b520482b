//! Gateway sets (`[[gateways]]`): next hops a routing plugin relays to by name
//! (`relay("gw:NAME")`). A request gets the members that are up, the best priority
//! first, ordered within it by the set's algorithm; its branch tries them in turn,
//! moving on at a 408, a 5xx, a transport error or silence. Each member is probed with
//! OPTIONS: down after `down-after` failed probes in a row, up after `up-after`
//! answered ones. Sans-IO: the probes are the core's own requests, their answers
//! inputs like any other.

use std::hash::BuildHasher as _;
use std::time::Duration;

use crate::sip::headers::HeaderName;
use crate::sip::message::{Essentials, Request};
use crate::sip::uri::SipUri;

/// How a request picks among members of one priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Each request the next member.
    RoundRobin,
    /// In proportion to the weights (smooth weighted round robin).
    Weighted,
    /// By Call-ID (rendezvous hashing).
    HashCallId,
    /// By a header's value (the Call-ID without it).
    HashHeader(HeaderName),
}

/// A member as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// Where it is (`sip:host[:port][;transport=…]`, no user).
    pub uri: SipUri,
    /// Share among members of equal priority.
    pub weight: u32,
    /// Lower first.
    pub priority: u32,
}

/// A set as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySet {
    /// What `relay("gw:NAME")` names.
    pub name: String,
    /// Its members.
    pub members: Vec<MemberSpec>,
    /// How a request picks among them.
    pub algorithm: Algorithm,
    /// How often each member is probed; `None`: never (always up).
    pub probe_every: Option<Duration>,
    /// Failed probes in a row that take a member down.
    pub down_after: u32,
    /// Answered probes in a row that bring it back.
    pub up_after: u32,
}

/// A member's health.
#[derive(Debug, Clone, Default)]
struct Health {
    down: bool,
    /// Failed probes in a row (while up) or answered ones (while down).
    streak: u32,
    /// Smooth weighted round robin's running weight.
    current: i64,
}

/// The sets and their members' health.
#[derive(Debug, Default)]
pub(super) struct Gateways {
    sets: Vec<(GatewaySet, Vec<Health>, u64)>,
    /// Keys the hash of `hash-*` algorithms.
    keys: foldhash::quality::FixedState,
}

/// A member changed state ([`super::Event::GatewayState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayChange {
    /// The set's name.
    pub set: String,
    /// The member's URI.
    pub target: String,
    /// Up now (else down).
    pub up: bool,
}

impl Gateways {
    pub(super) fn new(sets: Vec<GatewaySet>, seed: u64) -> Self {
        Self {
            sets: sets
                .into_iter()
                .map(|s| {
                    let n = s.members.len();
                    (s, vec![Health::default(); n], 0)
                })
                .collect(),
            keys: foldhash::quality::FixedState::with_seed(seed),
        }
    }

    /// The set named `name`.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.sets.iter().position(|(s, _, _)| s.name == name)
    }

    pub(super) fn set(&self, set: usize) -> &GatewaySet {
        &self.sets[set].0
    }

    /// Member `m` of `set`'s URI (a probe's Request-URI).
    pub(super) fn member_uri(&self, set: usize, m: usize) -> crate::sip::uri::Uri {
        crate::sip::uri::Uri::Sip(self.sets[set].0.members[m].uri.clone())
    }

    pub(super) fn len(&self) -> usize {
        self.sets.len()
    }

    /// The members a request tries, in order: those up, by priority, each priority's
    /// ordered by the set's algorithm. Empty when all are down.
    pub(super) fn order(&mut self, set: usize, req: &Request) -> Vec<usize> {
        let keys = self.keys.clone();
        let (spec, health, rr) = &mut self.sets[set];
        let mut priorities: Vec<u32> = spec
            .members
            .iter()
            .zip(health.iter())
            .filter(|(_, h)| !h.down)
            .map(|(m, _)| m.priority)
            .collect();
        priorities.sort_unstable();
        priorities.dedup();
        let key = match &spec.algorithm {
            Algorithm::HashHeader(h) => req
                .headers
                .get(h)
                .map(str::trim)
                .or_else(|| req.call_id())
                .unwrap_or(""),
            _ => req.call_id().unwrap_or(""),
        };
        let turn = *rr;
        *rr = rr.wrapping_add(1);
        let mut out = Vec::new();
        for p in priorities {
            let mut group: Vec<usize> = (0..spec.members.len())
                .filter(|&i| !health[i].down && spec.members[i].priority == p)
                .collect();
            match &spec.algorithm {
                Algorithm::RoundRobin => {
                    let n = group.len();
                    group.rotate_left((turn % n as u64) as usize);
                }
                Algorithm::Weighted => {
                    // Smooth weighted round robin: each member gains its weight, the
                    // highest goes first and pays back the total.
                    let total: i64 = group
                        .iter()
                        .map(|&i| i64::from(spec.members[i].weight))
                        .sum();
                    for &i in &group {
                        health[i].current += i64::from(spec.members[i].weight);
                    }
                    let first = *group
                        .iter()
                        .max_by_key(|&&i| (health[i].current, std::cmp::Reverse(i)))
                        .expect("a priority has members");
                    health[first].current -= total;
                    group.sort_by_key(|&i| {
                        (i != first, std::cmp::Reverse(spec.members[i].weight), i)
                    });
                }
                Algorithm::HashCallId | Algorithm::HashHeader(_) => {
                    // Highest score first; a member's score does not depend on the
                    // others, so one going down moves only its own keys.
                    let score = |i: usize| {
                        let h = keys.hash_one((key, i));
                        // Weighted rendezvous: -w / ln(u), u in (0, 1].
                        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                        f64::from(spec.members[i].weight) / -u.ln().min(-f64::MIN_POSITIVE)
                    };
                    group.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
                }
            }
            out.extend(group);
        }
        out
    }

    /// A probe of member `m` of `set` was answered (`ok`) or failed; the change of
    /// state it made, if any.
    pub(super) fn probed(&mut self, set: usize, m: usize, ok: bool) -> Option<GatewayChange> {
        let (spec, health, _) = &mut self.sets[set];
        let h = &mut health[m];
        let limit = if h.down {
            spec.up_after
        } else {
            spec.down_after
        };
        // A streak counts answers while down, failures while up.
        if ok == h.down {
            h.streak += 1;
        } else {
            h.streak = 0;
        }
        if h.streak < limit {
            return None;
        }
        h.down = !h.down;
        h.streak = 0;
        h.current = 0;
        Some(GatewayChange {
            set: spec.name.clone(),
            target: spec.members[m].uri.to_string(),
            up: !h.down,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(algorithm: Algorithm, weights: &[(u32, u32)]) -> GatewaySet {
        GatewaySet {
            name: "pstn".into(),
            members: weights
                .iter()
                .enumerate()
                .map(|(i, &(weight, priority))| MemberSpec {
                    uri: match crate::sip::uri::Uri::parse(&format!("sip:192.0.2.{i}")).unwrap() {
                        crate::sip::uri::Uri::Sip(u) => u,
                        crate::sip::uri::Uri::Other(_) => unreachable!(),
                    },
                    weight,
                    priority,
                })
                .collect(),
            algorithm,
            probe_every: Some(Duration::from_secs(10)),
            down_after: 2,
            up_after: 1,
        }
    }

    fn req(call_id: &str) -> Request {
        let text = format!(
            "MESSAGE sip:9001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKg\r\n\
             From: <sip:a@localhost>;tag=1\r\nTo: <sip:9001@localhost>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 MESSAGE\r\nX-Account: acct-{call_id}\r\nContent-Length: 0\r\n\r\n"
        );
        match crate::sip::parse(text.as_bytes()).unwrap() {
            crate::sip::message::Message::Request(r) => r,
            crate::sip::message::Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn round_robin_turns_and_priorities_come_after() {
        let mut g = Gateways::new(
            vec![set(Algorithm::RoundRobin, &[(1, 0), (1, 0), (1, 5)])],
            1,
        );
        let firsts: Vec<usize> = (0..4).map(|_| g.order(0, &req("a"))[0]).collect();
        assert_eq!(firsts, vec![0, 1, 0, 1]);
        assert_eq!(g.order(0, &req("a"))[2], 2, "priority 5 last");
    }

    #[test]
    fn weighted_follows_the_weights_exactly() {
        let mut g = Gateways::new(vec![set(Algorithm::Weighted, &[(3, 0), (1, 0)])], 1);
        let mut count = [0; 2];
        for _ in 0..400 {
            count[g.order(0, &req("a"))[0]] += 1;
        }
        assert_eq!(count, [300, 100]);
    }

    #[test]
    fn hashing_keeps_a_key_on_one_member_and_moves_only_a_downed_members_keys() {
        let mut g = Gateways::new(
            vec![set(Algorithm::HashCallId, &[(1, 0), (1, 0), (1, 0)])],
            7,
        );
        let before: Vec<usize> = (0..300)
            .map(|i| g.order(0, &req(&format!("c{i}")))[0])
            .collect();
        // The same Call-ID again: the same member.
        for (i, was) in before.iter().enumerate() {
            assert_eq!(g.order(0, &req(&format!("c{i}")))[0], *was);
        }
        let spread: Vec<usize> = (0..3)
            .map(|m| before.iter().filter(|&&b| b == m).count())
            .collect();
        assert!(
            spread.iter().all(|&n| (70..=130).contains(&n)),
            "{spread:?}"
        );
        // Member 1 goes down: only its keys move.
        assert!(g.probed(0, 1, false).is_none());
        assert_eq!(g.probed(0, 1, false).map(|c| c.up), Some(false));
        for (i, was) in before.iter().enumerate() {
            let now = g.order(0, &req(&format!("c{i}")))[0];
            if *was != 1 {
                assert_eq!(now, *was);
            } else {
                assert_ne!(now, 1);
            }
        }
        // By a header instead.
        let mut h = Gateways::new(
            vec![set(
                Algorithm::HashHeader(HeaderName::parse("X-Account")),
                &[(1, 0), (1, 0)],
            )],
            7,
        );
        // The same header value (X-Account: acct-same) under other Call-IDs: the same
        // member.
        let mut one = req("same");
        let a = h.order(0, &one)[0];
        for n in 0..20 {
            one.headers.remove_first_value(&HeaderName::CallId);
            one.headers.push(HeaderName::CallId, format!("other-{n}"));
            assert_eq!(h.order(0, &one)[0], a);
        }
    }

    #[test]
    fn down_after_failures_in_a_row_up_after_answers() {
        let mut g = Gateways::new(vec![set(Algorithm::RoundRobin, &[(1, 0), (1, 0)])], 1);
        assert!(g.probed(0, 0, false).is_none());
        assert!(
            g.probed(0, 0, true).is_none(),
            "an answer breaks the streak"
        );
        assert!(g.probed(0, 0, false).is_none());
        let down = g.probed(0, 0, false).unwrap();
        assert_eq!((down.set.as_str(), down.up), ("pstn", false));
        assert_eq!(g.order(0, &req("a")), vec![1]);
        assert_eq!(g.probed(0, 0, true).map(|c| c.up), Some(true));
        assert_eq!(g.order(0, &req("a")).len(), 2);
        // All down: nothing to try.
        for m in 0..2 {
            g.probed(0, m, false);
            g.probed(0, m, false);
        }
        assert!(g.order(0, &req("a")).is_empty());
    }
}
