//! `[[gateways]]`: sets of next hops (PSTN gateways, trunks, a PBX farm) a routing
//! plugin relays to by name (`relay("gw:NAME")`), chosen by an algorithm, probed with
//! OPTIONS, failed over on 408, 5xx and transport errors.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Invalid;

/// One `[[gateways]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatewaySetConfig {
    /// What `relay("gw:NAME")` names: 1–64 letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The members: `"sip:host[:port][;transport=…]"` or `{ uri = "…", weight = N,
    /// priority = P }`.
    pub targets: Vec<GatewayTarget>,
    /// How a request picks among the members of the best priority that are up:
    /// `round-robin`, `weighted`, `hash-call-id`, `hash-header`.
    #[serde(default)]
    pub algorithm: GatewayAlgorithm,
    /// With `hash-header`: the header whose value picks the member (the Call-ID
    /// when a request has none).
    #[serde(default)]
    pub hash_header: Option<String>,
    /// How often each member gets an OPTIONS; `"0s"`: never (members are always up).
    #[serde(default = "default_probe_interval", with = "duration")]
    pub probe_interval: Duration,
    /// Failed probes in a row (408, 5xx, no answer, transport error) that take a
    /// member down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Answered probes in a row that bring a member back up.
    #[serde(default = "default_up_after")]
    pub up_after: u32,
}

/// A member of a gateway set.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GatewayTarget {
    /// Just its URI (weight 1, priority 0).
    Uri(String),
    /// With a weight and a priority.
    Weighted {
        /// Its URI.
        uri: String,
        /// Share among members of equal priority (`weighted`, `hash-*`), 1–1000.
        #[serde(default = "default_weight")]
        weight: u32,
        /// Lower first: members of a higher priority only when all of the lower
        /// are down or failed for a request.
        #[serde(default)]
        priority: u32,
    },
}

impl GatewayTarget {
    /// (uri, weight, priority).
    pub fn parts(&self) -> (&str, u32, u32) {
        match self {
            Self::Uri(u) => (u, 1, 0),
            Self::Weighted {
                uri,
                weight,
                priority,
            } => (uri, *weight, *priority),
        }
    }
}

/// `gateways[].algorithm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayAlgorithm {
    /// Each request the next member.
    #[default]
    RoundRobin,
    /// Members in proportion to their weights (smooth weighted round robin).
    Weighted,
    /// One member per Call-ID (rendezvous hashing: a member going down moves only its
    /// own calls).
    HashCallId,
    /// One member per value of `hash-header`.
    HashHeader,
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_down_after() -> u32 {
    3
}

fn default_up_after() -> u32 {
    2
}

fn default_weight() -> u32 {
    1
}

/// Whether `name` may name a gateway set.
pub(crate) fn name_is_valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl super::Config {
    /// The checks of `[[gateways]]`.
    pub(super) fn check_gateways(&self) -> Result<(), Invalid> {
        check(&self.gateways)
    }
}

/// The checks of `[[gateways]]`.
fn check(sets: &[GatewaySetConfig]) -> Result<(), Invalid> {
    for (i, g) in sets.iter().enumerate() {
        let key = |k: &str| format!("gateways[{i}].{k}");
        if !name_is_valid(&g.name) {
            return Err((
                key("name"),
                "1 to 64 letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if sets[..i].iter().any(|o| o.name == g.name) {
            return Err((key("name"), format!("`{}` names two sets", g.name)));
        }
        if g.targets.is_empty() || g.targets.len() > 64 {
            return Err((key("targets"), "1 to 64 targets".into()));
        }
        for (j, t) in g.targets.iter().enumerate() {
            let (uri, weight, _) = t.parts();
            let parsed = crate::sip::uri::Uri::parse(uri);
            let transport_ok = |u: &crate::sip::uri::SipUri| match u.param("transport") {
                None => true,
                Some(Some(t)) => match t.to_ascii_lowercase().as_str() {
                    "udp" => !u.secure,
                    "tcp" | "tls" => true,
                    _ => false,
                },
                Some(None) => false,
            };
            match parsed.as_ref().ok().and_then(|u| u.as_sip()) {
                Some(u) if u.user.is_none() && u.headers.is_none() && transport_ok(u) => {}
                _ => {
                    return Err((
                        format!("gateways[{i}].targets[{j}]"),
                        format!(
                            "`{uri}` is not a sip: or sips: URI without a user part, \
                             over UDP, TCP or TLS (sip:host[:port][;transport=udp|tcp|tls]; \
                             sips: not over UDP)"
                        ),
                    ));
                }
            }
            if !(1..=1000).contains(&weight) {
                return Err((
                    format!("gateways[{i}].targets[{j}].weight"),
                    "must be between 1 and 1000".into(),
                ));
            }
        }
        match (g.algorithm, &g.hash_header) {
            (GatewayAlgorithm::HashHeader, None) => {
                return Err((key("hash-header"), "is required with hash-header".into()));
            }
            (GatewayAlgorithm::HashHeader, Some(h))
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                return Err((key("hash-header"), format!("`{h}` is not a header name")));
            }
            (a, Some(_)) if a != GatewayAlgorithm::HashHeader => {
                return Err((
                    key("hash-header"),
                    "only with algorithm = \"hash-header\"".into(),
                ));
            }
            _ => {}
        }
        if !g.probe_interval.is_zero()
            && (g.probe_interval < Duration::from_secs(1)
                || g.probe_interval > Duration::from_secs(3600))
        {
            return Err((
                key("probe-interval"),
                "0s (no probes) or between 1s and 1h".into(),
            ));
        }
        for (k, v) in [("down-after", g.down_after), ("up-after", g.up_after)] {
            if !(1..=100).contains(&v) {
                return Err((key(k), "must be between 1 and 100".into()));
            }
        }
    }
    Ok(())
}

impl GatewaySetConfig {
    /// The set as the core takes it (checked: every target parses).
    pub fn to_core(&self) -> crate::core::gateways::GatewaySet {
        use crate::core::gateways::{Algorithm, GatewaySet, MemberSpec};
        GatewaySet {
            name: self.name.clone(),
            members: self
                .targets
                .iter()
                .filter_map(|t| {
                    let (uri, weight, priority) = t.parts();
                    match crate::sip::uri::Uri::parse(uri).ok()? {
                        crate::sip::uri::Uri::Sip(uri) => Some(MemberSpec {
                            uri,
                            weight,
                            priority,
                        }),
                        crate::sip::uri::Uri::Other(_) => None,
                    }
                })
                .collect(),
            algorithm: match self.algorithm {
                GatewayAlgorithm::RoundRobin => Algorithm::RoundRobin,
                GatewayAlgorithm::Weighted => Algorithm::Weighted,
                GatewayAlgorithm::HashCallId => Algorithm::HashCallId,
                GatewayAlgorithm::HashHeader => {
                    Algorithm::HashHeader(crate::sip::headers::HeaderName::parse(
                        self.hash_header.as_deref().unwrap_or("Call-ID"),
                    ))
                }
            },
            probe_every: (!self.probe_interval.is_zero()).then_some(self.probe_interval),
            down_after: self.down_after,
            up_after: self.up_after,
        }
    }
}
