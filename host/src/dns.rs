//! Next hops named by a host name, resolved as RFC 3263 says, with hickory's resolver:
//! NAPTR (the transport) → SRV (priority, weight, port) → A/AAAA, or less of that chain
//! when the URI fixes a transport or a port. What a name resolved to is kept for the
//! shortest TTL of the records it took (at most `dns.max-ttl`; a failure for
//! `dns.negative-ttl`), and each request draws its own order among SRV records of
//! equal priority by their weights (RFC 2782), so that the weights hold across
//! requests while DNS is asked once per TTL. Requests for a name being looked up wait
//! for that one lookup.
//!
//! The core asks ([`crate::core::Core::poll_resolve`]) and gets the answer as an input;
//! the driver answers from the cache in the same turn, or starts a lookup.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, ResolveError, TokioResolver};

use crate::config::DnsConfig;
use crate::core::Transport;
use crate::core::limits::LogGate;
use crate::core::resolve::{NamedHop, ResolveOutcome, ResolvedTarget};

/// Most targets one name gives a request (each tried in turn on failure).
const MAX_TARGETS: usize = 16;

/// Most SRV records of one name looked up further (A/AAAA): with one NAPTR and at
/// most three SRV queries, a resolution asks at most 1 + 3 + 2 × 8 + 2 queries.
const MAX_SRV: usize = 8;

/// Shortest time a resolution is kept, whatever TTL its records have: records of
/// TTL 0 do not turn each request into a resolution.
const MIN_TTL: Duration = Duration::from_secs(5);

/// Most requests waiting for one name; more get a failure at once.
const MAX_WAITING_PER_NAME: usize = 10_000;

/// Most TLS targets whose name is remembered for the certificate check.
const MAX_TLS_NAMES: usize = 16_384;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One SRV record (or the name itself, when there is none) with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Server {
    priority: u16,
    weight: u16,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// The servers of one transport, in NAPTR order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    transport: Transport,
    servers: Vec<Server>,
}

/// What a name resolved to, before a request draws its order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Plan {
    groups: Vec<Group>,
}

impl Plan {
    /// The targets in the order one request tries them: groups in order; in each,
    /// servers by priority, those of equal priority drawn by weight (RFC 2782: a
    /// weight-0 server is drawn only rarely before the others); each server's
    /// addresses in turn. Without duplicates, at most [`MAX_TARGETS`].
    fn order(&self, mut random: impl FnMut() -> u64) -> Vec<ResolvedTarget> {
        let mut out: Vec<ResolvedTarget> = Vec::new();
        for g in &self.groups {
            let mut servers: Vec<&Server> = g.servers.iter().collect();
            servers.sort_by_key(|s| s.priority);
            let mut drawn: Vec<&Server> = Vec::with_capacity(servers.len());
            for same in servers.chunk_by(|a, b| a.priority == b.priority) {
                // Weight 0 first, as RFC 2782 orders them before the draw.
                let mut left: Vec<&Server> =
                    same.iter().filter(|s| s.weight == 0).copied().collect();
                left.extend(same.iter().filter(|s| s.weight > 0).copied());
                while !left.is_empty() {
                    let total: u64 = left.iter().map(|s| u64::from(s.weight)).sum();
                    let at = if total == 0 {
                        // All weight 0: any order, drawn evenly.
                        (random() % left.len() as u64) as usize
                    } else {
                        let pick = random() % (total + 1);
                        let mut running = 0u64;
                        left.iter()
                            .position(|s| {
                                running += u64::from(s.weight);
                                running >= pick
                            })
                            .unwrap_or(0)
                    };
                    drawn.push(left.remove(at));
                }
            }
            for s in drawn {
                for ip in &s.addrs {
                    let t = ResolvedTarget {
                        transport: g.transport,
                        addr: SocketAddr::new(*ip, s.port),
                        name: 0,
                    };
                    if !out.contains(&t) {
                        out.push(t);
                    }
                    if out.len() == MAX_TARGETS {
                        return out;
                    }
                }
            }
        }
        out
    }
}

/// A name's entry in the cache.
#[derive(Debug, Clone)]
enum Entry {
    Found { plan: Arc<Plan>, until: Instant },
    Failed { why: Arc<str>, until: Instant },
}

impl Entry {
    fn until(&self) -> Instant {
        match self {
            Self::Found { until, .. } | Self::Failed { until, .. } => *until,
        }
    }
}

/// Why a lookup gave nothing.
#[derive(Debug)]
enum Miss {
    /// The name has no records of that type (or does not exist: `nx`).
    Empty { nx: bool },
    /// No answer, or a server error: the whole resolution fails.
    Error(String),
}

impl From<ResolveError> for Miss {
    fn from(e: ResolveError) -> Self {
        if e.is_nx_domain() {
            Self::Empty { nx: true }
        } else if e.is_no_records_found() {
            Self::Empty { nx: false }
        } else {
            Self::Error(e.to_string())
        }
    }
}

/// The resolver with its cache of RFC 3263 results.
pub(crate) struct Dns {
    resolver: Result<TokioResolver, String>,
    cache: Mutex<HashMap<NamedHop, Entry>>,
    /// Names being looked up, with the requests waiting for each.
    waiting: Mutex<HashMap<NamedHop, Vec<u64>>>,
    /// When each failed name was last logged.
    logged: Mutex<LogGate<String>>,
    /// The names TLS targets were resolved from, by key ([`ResolvedTarget::name`]):
    /// a certificate must be valid for its target's (RFC 5922: the URI's host, not
    /// the SRV target's).
    tls_names: Mutex<HashMap<u64, Arc<str>>>,
    /// Keys the names' hashes: they cannot be aimed at one another.
    name_keys: foldhash::quality::FixedState,
    rng: Mutex<u64>,
    cache_size: usize,
    max_ttl: Duration,
    negative_ttl: Duration,
    max_lookups: usize,
    /// Bounds a whole resolution (NAPTR, SRV and addresses, each with its tries).
    deadline: Duration,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field(
                "servers",
                &self
                    .resolver
                    .as_ref()
                    .map(|r| r.config().name_servers().len()),
            )
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver over `dns.servers`, or those of `/etc/resolv.conf`. When that file
    /// cannot be read, every name fails (each with the reason, logged) and the server
    /// runs on with literal next hops.
    pub(crate) fn new(cfg: &DnsConfig) -> Self {
        let resolver = build(cfg);
        if let Err(why) = &resolver {
            tracing::warn!("no DNS resolver ({why}): next hops named by a host name will get 500");
        }
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self {
            resolver,
            cache: Mutex::default(),
            waiting: Mutex::default(),
            logged: Mutex::default(),
            tls_names: Mutex::default(),
            name_keys: foldhash::quality::FixedState::with_seed(
                u64::from_le_bytes(seed).rotate_left(17),
            ),
            rng: Mutex::new(u64::from_le_bytes(seed) | 1),
            cache_size: cfg.cache_size,
            max_ttl: cfg.max_ttl,
            negative_ttl: cfg.negative_ttl,
            max_lookups: cfg.max_lookups,
            // NAPTR, SRV, then addresses (concurrently): three rounds of tries.
            deadline: cfg.timeout * u32::try_from(cfg.attempts).unwrap_or(10) * 3
                + Duration::from_secs(1),
        }
    }

    /// A next draw of the request orders' generator (splitmix64).
    fn random(&self) -> u64 {
        let mut s = lock(&self.rng);
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The outcome for `hop` from the cache, in an order drawn for this request.
    pub(crate) fn cached(&self, hop: &NamedHop, now: Instant) -> Option<ResolveOutcome> {
        let entry = {
            let mut cache = lock(&self.cache);
            match cache.get(hop) {
                Some(e) if e.until() > now => e.clone(),
                Some(_) => {
                    cache.remove(hop);
                    return None;
                }
                None => return None,
            }
        };
        Some(self.outcome_of(hop, &entry))
    }

    fn outcome_of(&self, hop: &NamedHop, entry: &Entry) -> ResolveOutcome {
        match entry {
            Entry::Found { plan, .. } => {
                let mut targets = plan.order(|| self.random());
                if targets.is_empty() {
                    return ResolveOutcome::Failed("no address".into());
                }
                if targets.iter().any(|t| t.transport == Transport::Tls) {
                    let key = self.note_tls_name(&hop.host);
                    for t in targets.iter_mut().filter(|t| t.transport == Transport::Tls) {
                        t.name = key;
                    }
                }
                ResolveOutcome::Targets(targets)
            }
            Entry::Failed { why, .. } => ResolveOutcome::Failed(why.to_string()),
        }
    }

    /// Request `id` waits for `hop`: true when a lookup must start (the first to
    /// wait), false when one is under way. `Err` when too many names are being looked
    /// up.
    pub(crate) fn wait(&self, hop: &NamedHop, id: u64) -> Result<bool, ()> {
        let mut w = lock(&self.waiting);
        if let Some(ids) = w.get_mut(hop) {
            if ids.len() >= MAX_WAITING_PER_NAME {
                return Err(());
            }
            ids.push(id);
            return Ok(false);
        }
        if w.len() >= self.max_lookups {
            return Err(());
        }
        w.insert(hop.clone(), vec![id]);
        Ok(true)
    }

    /// Looks `hop` up, caches what came of it and returns the requests that waited,
    /// each with its outcome.
    pub(crate) async fn look_up(&self, hop: &NamedHop) -> Vec<(u64, ResolveOutcome)> {
        let entry = match tokio::time::timeout(self.deadline, self.resolve(hop)).await {
            Ok(Ok((plan, until))) if !plan.groups.is_empty() => Entry::Found {
                plan: Arc::new(plan),
                until: until
                    .min(Instant::now() + self.max_ttl)
                    .max(Instant::now() + MIN_TTL),
            },
            Ok(Ok((_, until))) => Entry::Failed {
                why: "no SIP server or address for it".into(),
                until: until
                    .min(Instant::now() + self.negative_ttl)
                    .max(Instant::now() + MIN_TTL.min(self.negative_ttl)),
            },
            Ok(Err(why)) => Entry::Failed {
                why: why.into(),
                until: Instant::now() + self.negative_ttl,
            },
            Err(_) => Entry::Failed {
                why: format!("no answer within {:?}", self.deadline).into(),
                until: Instant::now() + self.negative_ttl,
            },
        };
        if let Entry::Failed { why, .. } = &entry {
            self.log_failure(hop, why);
        }
        {
            let mut cache = lock(&self.cache);
            if cache.len() >= self.cache_size {
                let now = Instant::now();
                cache.retain(|_, e| e.until() > now);
                if cache.len() >= self.cache_size
                    && let Some(k) = cache.keys().next().cloned()
                {
                    cache.remove(&k);
                }
            }
            cache.insert(hop.clone(), entry.clone());
        }
        let ids = lock(&self.waiting).remove(hop).unwrap_or_default();
        ids.into_iter()
            .map(|id| (id, self.outcome_of(hop, &entry)))
            .collect()
    }

    /// The requests waiting for `hop`, taken without a lookup (the one under way was
    /// dropped before it ended): they get a failure rather than wait for good.
    pub(crate) fn abandon(&self, hop: &NamedHop) -> Vec<u64> {
        lock(&self.waiting).remove(hop).unwrap_or_default()
    }

    /// The key of `host` as the name TLS targets must prove, remembered for
    /// [`Dns::tls_name`]; never 0.
    fn note_tls_name(&self, host: &str) -> u64 {
        use std::hash::BuildHasher as _;
        let key = self.name_keys.hash_one(host).max(1);
        let mut names = lock(&self.tls_names);
        if !names.contains_key(&key) {
            if names.len() >= MAX_TLS_NAMES
                && let Some(k) = names.keys().next().copied()
            {
                // A dialog still naming the one let go cannot open a new connection
                // to it (it would prove nothing), and fails instead.
                names.remove(&k);
            }
            names.insert(key, host.into());
        }
        key
    }

    /// The name a TLS connection to a target of key `key` must prove, if still known.
    pub(crate) fn tls_name(&self, key: u64) -> Option<Arc<str>> {
        lock(&self.tls_names).get(&key).cloned()
    }

    fn log_failure(&self, hop: &NamedHop, why: &str) {
        if !lock(&self.logged).allow_key(hop.host.clone(), Instant::now()) {
            return;
        }
        tracing::warn!(next_hop = %hop, "next hop did not resolve: {why}; its requests get 500 (logged at most once a minute per name)");
    }

    /// RFC 3263 section 4 for `hop`: its plan and until when it holds.
    async fn resolve(&self, hop: &NamedHop) -> Result<(Plan, Instant), String> {
        let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
        let name = Name::from_ascii(format!("{}.", hop.host))
            .map_err(|e| format!("`{}` is not a domain name: {e}", hop.host))?;
        let mut until = Instant::now() + self.max_ttl;
        // A port: no NAPTR, no SRV (4.2): the name's addresses.
        if let Some(port) = hop.port {
            let transport = hop.transport.unwrap_or(if hop.secure {
                Transport::Tls
            } else {
                Transport::Udp
            });
            let addrs = addresses(resolver, &name, &mut until).await?;
            return Ok((plan_of_addresses(transport, port, addrs), until));
        }
        // The transports to look for, in order: NAPTR's, unless the URI names one.
        let mut default_transport = hop.transport.unwrap_or(if hop.secure {
            Transport::Tls
        } else {
            Transport::Udp
        });
        let services: Vec<(Transport, Name)> = match hop.transport {
            Some(t) => vec![(t, srv_name(t, &name)?)],
            None => {
                let from_naptr = naptr(resolver, &name, hop.secure, &mut until).await?;
                match from_naptr {
                    Some(list) => {
                        default_transport = list[0].0;
                        list
                    }
                    // No NAPTR records (4.1): SRV for each transport we send over.
                    None => {
                        let all: &[Transport] = if hop.secure {
                            &[Transport::Tls]
                        } else {
                            &[Transport::Udp, Transport::Tcp, Transport::Tls]
                        };
                        all.iter()
                            .map(|t| Ok((*t, srv_name(*t, &name)?)))
                            .collect::<Result<_, String>>()?
                    }
                }
            }
        };
        let mut plan = Plan::default();
        for (transport, srv) in &services {
            let records = match resolver.lookup(srv.clone(), RecordType::SRV).await {
                Ok(l) => {
                    until = until.min(l.valid_until());
                    l.iter()
                        .filter_map(|r| match r {
                            RData::SRV(s) => Some(s.clone()),
                            _ => None,
                        })
                        .take(MAX_SRV)
                        .collect::<Vec<_>>()
                }
                Err(e) => match Miss::from(e) {
                    Miss::Empty { .. } => Vec::new(),
                    Miss::Error(why) => return Err(format!("SRV {srv}: {why}")),
                },
            };
            // "." as the target: the service is decidedly not available (RFC 2782).
            let records: Vec<_> = records
                .into_iter()
                .filter(|s| !s.target().is_root())
                .collect();
            if records.is_empty() {
                continue;
            }
            let lookups = records.iter().map(|s| {
                let target = s.target().clone();
                async move { (addresses_of(resolver, &target).await, target) }
            });
            let mut servers = Vec::new();
            for (s, (found, target)) in records
                .iter()
                .zip(futures_util::future::join_all(lookups).await)
            {
                match found {
                    Ok((addrs, valid)) => {
                        until = until.min(valid);
                        servers.push(Server {
                            priority: s.priority(),
                            weight: s.weight(),
                            port: s.port(),
                            addrs,
                        });
                    }
                    // One server without addresses is skipped; the others serve.
                    Err(Miss::Empty { .. }) => {}
                    Err(Miss::Error(why)) => {
                        tracing::debug!(%target, "address lookup failed: {why}");
                    }
                }
            }
            if !servers.is_empty() {
                plan.groups.push(Group {
                    transport: *transport,
                    servers,
                });
                // The first transport (in NAPTR's order, or UDP, TCP, TLS without
                // NAPTR) that has servers is the one (RFC 3263 4.1); its servers are
                // the failover.
                break;
            }
        }
        if plan.groups.is_empty() {
            // No SRV records (4.2): the name's own addresses, on the default port, with
            // the URI's transport, NAPTR's first, or UDP (TLS for sips:).
            let port = if default_transport == Transport::Tls {
                5061
            } else {
                5060
            };
            let addrs = addresses(resolver, &name, &mut until).await?;
            plan = plan_of_addresses(default_transport, port, addrs);
        }
        Ok((plan, until))
    }
}

fn plan_of_addresses(transport: Transport, port: u16, addrs: Vec<IpAddr>) -> Plan {
    if addrs.is_empty() {
        return Plan::default();
    }
    Plan {
        groups: vec![Group {
            transport,
            servers: vec![Server {
                priority: 0,
                weight: 0,
                port,
                addrs,
            }],
        }],
    }
}

/// `_sip._udp.NAME`, `_sip._tcp.NAME`, `_sips._tcp.NAME` (RFC 3263 4.1).
fn srv_name(t: Transport, name: &Name) -> Result<Name, String> {
    let prefix = match t {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
        other => return Err(format!("no SRV service for {other}")),
    };
    Name::from_ascii(prefix)
        .and_then(|p| p.append_domain(name))
        .map_err(|e| format!("SRV name for {name}: {e}"))
}

/// The name's NAPTR records for SIP (RFC 3263 4.1): the transports we send over, in
/// order then preference, each with the SRV name it points to; `None` without any.
/// A `sips:` URI takes `SIPS+D2T` only.
async fn naptr(
    resolver: &TokioResolver,
    name: &Name,
    secure: bool,
    until: &mut Instant,
) -> Result<Option<Vec<(Transport, Name)>>, String> {
    let lookup = match resolver.lookup(name.clone(), RecordType::NAPTR).await {
        Ok(l) => l,
        Err(e) => {
            // No such name is no NAPTR too: some servers say so of a name that only
            // has SRV records under it; the address lookup tells in the end.
            return match Miss::from(e) {
                Miss::Empty { .. } => Ok(None),
                Miss::Error(why) => Err(format!("NAPTR {name}: {why}")),
            };
        }
    };
    *until = (*until).min(lookup.valid_until());
    let mut records: Vec<(u16, u16, Transport, Name)> = lookup
        .iter()
        .filter_map(|r| match r {
            RData::NAPTR(n) => Some(n),
            _ => None,
        })
        // "S": the replacement is an SRV name (the only terminal flag SIP uses).
        .filter(|n| n.flags().eq_ignore_ascii_case(b"s"))
        .filter_map(|n| {
            let transport = match n.services().to_ascii_uppercase().as_slice() {
                b"SIP+D2U" if !secure => Transport::Udp,
                b"SIP+D2T" if !secure => Transport::Tcp,
                b"SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            Some((
                n.order(),
                n.preference(),
                transport,
                n.replacement().clone(),
            ))
        })
        .collect();
    if records.is_empty() {
        // Records for other services only (or none of ours): as if there were none.
        return Ok(None);
    }
    records.sort_by_key(|r| (r.0, r.1));
    // The best record of each transport only: more are no more transports.
    let mut seen = Vec::new();
    records.retain(|r| {
        let new = !seen.contains(&r.2);
        seen.push(r.2);
        new
    });
    Ok(Some(
        records.into_iter().map(|(_, _, t, n)| (t, n)).collect(),
    ))
}

/// A name's addresses, its IPv4 ones first; an empty list when it has none.
async fn addresses(
    resolver: &TokioResolver,
    name: &Name,
    until: &mut Instant,
) -> Result<Vec<IpAddr>, String> {
    match addresses_of(resolver, name).await {
        Ok((addrs, valid)) => {
            *until = (*until).min(valid);
            Ok(addrs)
        }
        Err(Miss::Empty { nx: true }) => Err(format!("{name}: no such name")),
        Err(Miss::Empty { nx: false }) => Ok(Vec::new()),
        Err(Miss::Error(why)) => Err(format!("{name}: {why}")),
    }
}

async fn addresses_of(
    resolver: &TokioResolver,
    name: &Name,
) -> Result<(Vec<IpAddr>, Instant), Miss> {
    let found = resolver.lookup_ip(name.clone()).await?;
    let mut addrs: Vec<IpAddr> = found.iter().collect();
    addrs.sort_by_key(IpAddr::is_ipv6);
    addrs.dedup();
    Ok((addrs, found.valid_until()))
}

fn build(cfg: &DnsConfig) -> Result<TokioResolver, String> {
    let (config, mut opts) = if cfg.servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("/etc/resolv.conf: {e}"))?
    } else {
        let mut group = NameServerConfigGroup::new();
        for addr in &cfg.servers {
            group.push(NameServerConfig::new(*addr, Protocol::Udp));
            // A truncated answer is asked again over TCP.
            group.push(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        (
            ResolverConfig::from_parts(None, Vec::new(), group),
            ResolverOpts::default(),
        )
    };
    opts.timeout = cfg.timeout;
    opts.attempts = cfg.attempts;
    opts.cache_size = cfg.cache_size;
    opts.positive_max_ttl = Some(cfg.max_ttl);
    opts.negative_max_ttl = Some(cfg.negative_ttl);
    // SIP names are absolute: no search list, no ndots games.
    opts.ndots = 0;
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(priority: u16, weight: u16, last: u8) -> Server {
        Server {
            priority,
            weight,
            port: 5060,
            addrs: vec![IpAddr::from([127, 0, 0, last])],
        }
    }

    fn seq(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 11
        }
    }

    #[test]
    fn priority_first_then_weights_drawn() {
        let plan = Plan {
            groups: vec![Group {
                transport: Transport::Udp,
                servers: vec![server(20, 0, 9), server(10, 90, 1), server(10, 10, 2)],
            }],
        };
        let mut firsts = [0u32; 3];
        let mut random = seq(7);
        for _ in 0..10_000 {
            let order = plan.order(&mut random);
            assert_eq!(order.len(), 3);
            // Priority 20 always last.
            assert_eq!(order[2].addr.ip(), IpAddr::from([127, 0, 0, 9]));
            let first = order[0].addr.ip();
            firsts[if first == IpAddr::from([127, 0, 0, 1]) {
                0
            } else {
                1
            }] += 1;
        }
        // Weight 90 against 10: about nine in ten first.
        assert!((8_700..=9_300).contains(&firsts[0]), "{firsts:?}");
    }

    #[test]
    fn groups_keep_their_order_and_duplicates_go() {
        let plan = Plan {
            groups: vec![
                Group {
                    transport: Transport::Tcp,
                    servers: vec![server(1, 1, 1), server(2, 1, 1)],
                },
                Group {
                    transport: Transport::Udp,
                    servers: vec![server(1, 1, 1)],
                },
            ],
        };
        let order = plan.order(seq(1));
        assert_eq!(
            order,
            vec![
                ResolvedTarget {
                    transport: Transport::Tcp,
                    addr: "127.0.0.1:5060".parse().unwrap(),
                    name: 0,
                },
                ResolvedTarget {
                    transport: Transport::Udp,
                    addr: "127.0.0.1:5060".parse().unwrap(),
                    name: 0,
                },
            ]
        );
    }

    #[test]
    fn targets_are_bounded() {
        let servers = (0..40).map(|i| server(i, 1, i as u8)).collect();
        let plan = Plan {
            groups: vec![Group {
                transport: Transport::Udp,
                servers,
            }],
        };
        assert_eq!(plan.order(seq(3)).len(), MAX_TARGETS);
    }

    #[test]
    fn weight_zero_servers_still_come() {
        let plan = Plan {
            groups: vec![Group {
                transport: Transport::Udp,
                servers: vec![server(1, 0, 1), server(1, 0, 2)],
            }],
        };
        let mut random = seq(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let order = plan.order(&mut random);
            assert_eq!(order.len(), 2);
            seen.insert(order[0].addr);
        }
        assert_eq!(seen.len(), 2, "both weight-0 servers get to be first");
    }
}
