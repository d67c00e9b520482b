//! The cluster's location service (several nodes, one shared store): the core's side.
//!
//! The node that holds a connection owns its bindings. The shared store (Redis, in the
//! shell: `crate::cluster`) only makes them findable: each node writes its own
//! bindings through, and reads the others' when a request or a REGISTER needs an
//! address-of-record. A binding another node holds reaches the core as
//! [`Reach::Node`], its first Path entry that node's route to the flow
//! (`<sip:TOKEN@node;lr;swc>`): a request for it goes there, and that node delivers
//! it on the flow, or answers 430 when the flow is gone.
//!
//! REGISTER ordering across nodes: the core reads the AoR (its bindings on other
//! nodes and the AoR's version), decides the REGISTER on a copy of the AoR with the
//! registrar every single node runs ([`super::location::Location::scratch`]), and asks the store to
//! write the result only if the version has not moved. A node that lost that race
//! reads again and decides again, now against the winner's bindings: two nodes never
//! both win (the lower CSeq of one Call-ID gets 500, a reg-id's newer flow replaces
//! the older one on any node). The core stays sans-IO: it asks
//! ([`Core::poll_cluster`]), the shell answers ([`super::Input::Cluster`]).

use std::collections::VecDeque;
use std::time::Instant;

use foldhash::HashMap;

use super::location::{Binding, Reach};
use super::proxy::{Wait, warning};
use super::registrar::{self, Change, Outcome};
use super::{Core, Event, Source};
use crate::sip::headers::HeaderName;
use crate::sip::message::{Essentials, Request};

/// The core's part of `[cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Host, port and transport of the URI other nodes reach this node at
    /// (`10.0.0.2:5070;transport=tcp`): the host part of this node's routes to its
    /// flows.
    pub route_host: String,
    /// The other nodes (`cluster.peers`): only they may route by this node's route
    /// entries, past the routing plugin.
    pub peers: super::peers::TrustedPeers,
}

/// What the core asks of the shared store.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAsk {
    /// The AoR's bindings held by other live nodes, and its version
    /// ([`ClusterAnswer::Found`]).
    Lookup {
        /// The address-of-record.
        aor: String,
    },
    /// Write this node's bindings of the AoR and remove the listed ones, if the
    /// AoR's version is still `version` ([`ClusterAnswer::Committed`] or
    /// [`ClusterAnswer::Conflict`]).
    Commit {
        /// The address-of-record.
        aor: String,
        /// The version the decision was made on.
        version: u64,
        /// This node's bindings to write (their Path starts with this node's route).
        save: Vec<Binding>,
        /// Store keys ([`store_key`]) of bindings gone, whichever node held them.
        remove: Vec<String>,
        /// Whether the AoR is remembered once its bindings are gone (480 rather than
        /// 404 for a day, as a single node remembers an AoR whose client refreshed
        /// or unregistered); an AoR registered once and left to expire, as a flood's
        /// are, is not.
        remember: bool,
    },
    /// Write this node's bindings whatever the version (after the store lost its
    /// data). No answer.
    Publish {
        /// The address-of-record.
        aor: String,
        /// This node's bindings.
        save: Vec<Binding>,
    },
    /// Remove bindings this node held (expired, flow closed) if the store still has
    /// them as this node's, as they were (the same Call-ID and CSeq: not a newer
    /// registration written since under the same key). No answer.
    Forget {
        /// The address-of-record.
        aor: String,
        /// Store keys ([`store_key`]) with the Call-ID and CSeq of each binding.
        remove: Vec<Forgotten>,
        /// Whether this node holds no binding of the AoR any more (it leaves the
        /// node's index).
        last: bool,
    },
}

/// One ask; `id` 0 for those that get no answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRequest {
    /// What [`super::Input::Cluster`] answers with.
    pub id: u64,
    /// The ask.
    pub ask: ClusterAsk,
}

/// The store's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAnswer {
    /// The AoR's bindings on other live nodes ([`Reach::Node`]), its version, and
    /// whether it had any binding at all (bindings of dead nodes included: a call to
    /// it gets 480, not 404).
    Found {
        /// Its version.
        version: u64,
        /// Other nodes' live bindings.
        bindings: Vec<Binding>,
        /// Whether the store knew the AoR.
        known: bool,
    },
    /// Written: the AoR's version now.
    Committed {
        /// The version the write made.
        version: u64,
    },
    /// Not written: the AoR changed since it was read.
    Conflict,
    /// The store did not answer in time.
    Unavailable,
}

/// The key of a binding in the store: its Contact, and its instance and reg-id when
/// it has them (the flows of one instance share a Contact; two devices behind
/// different NATs may share a private one).
pub fn store_key(b: &Binding) -> String {
    match (&b.instance, b.reg_id) {
        (Some(i), Some(r)) => format!("{}#{i}#{r}", b.contact),
        (Some(i), None) => format!("{}#{i}", b.contact),
        (None, _) => b.contact.clone(),
    }
}

/// What a Forget removes of a binding: its key, Call-ID and CSeq.
pub type Forgotten = (String, String, u32);

/// What a Forget removes of a binding `b`.
fn forgotten(b: &Binding) -> Forgotten {
    (store_key(b), b.call_id.clone(), b.cseq)
}

/// Times a REGISTER is decided again after losing a race for its AoR before it gets
/// 500 with `Retry-After`.
const MAX_TRIES: u8 = 4;

/// What a request waiting for the store waits to do.
#[derive(Debug)]
pub(super) enum Waiting {
    /// Forward a request to the AoR's bindings, with this loop hash.
    Call(String),
    /// Decide a REGISTER for the AoR (after a lookup).
    Register { aor: String, tries: u8 },
    /// Answer a REGISTER once its changes are written.
    Commit {
        aor: String,
        tries: u8,
        outcome: Outcome,
        changes: Vec<Change>,
        /// The other nodes' bindings the decision kept.
        remote: Vec<Binding>,
    },
}

/// The core's cluster state.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    /// Asks for the shell.
    asks: VecDeque<ClusterRequest>,
    /// Server transactions waiting for an answer.
    waiting: HashMap<u64, Waiting>,
    /// AoRs with a REGISTER being decided, and the REGISTERs waiting behind it: one at
    /// a time per AoR on a node, so that its decision is made on what the one before
    /// wrote.
    busy: HashMap<String, VecDeque<u64>>,
    /// What this node last wrote of an AoR it holds bindings of: the AoR's version
    /// then, and the other nodes' bindings it was decided with. A refresh is decided
    /// on it and written in one round trip; if the version moved meanwhile, the write
    /// is refused and the AoR read again.
    seen: HashMap<String, (u64, Vec<Binding>)>,
}

/// Seconds a REGISTER refused because the store is unreachable is told to wait: spread
/// so that a node's clients do not all come back at once.
fn retry_after(seed: u64) -> String {
    (10 + seed % 21).to_string()
}

impl Core {
    /// The next ask for the shared store, if the cluster is on.
    pub fn poll_cluster(&mut self) -> Option<ClusterRequest> {
        self.cluster.asks.pop_front()
    }

    /// Whether the cluster is on.
    pub(super) fn clustered(&self) -> bool {
        self.cfg.cluster.is_some()
    }

    fn ask_cluster(&mut self, id: u64, ask: ClusterAsk) {
        self.cluster.asks.push_back(ClusterRequest { id, ask });
    }

    /// Puts a request in a server transaction to wait for the store.
    pub(super) fn wait_for_cluster(&mut self, now: Instant, id: u64, wait: Wait) {
        match wait {
            Wait::Call { aor, hash } => {
                self.cluster.waiting.insert(id, Waiting::Call(hash));
                self.ask_cluster(id, ClusterAsk::Lookup { aor });
            }
            Wait::Register { aor } => {
                if let Some(queue) = self.cluster.busy.get_mut(&aor) {
                    queue.push_back(id);
                    return;
                }
                self.cluster.busy.insert(aor.clone(), VecDeque::new());
                self.start_register(now, id, aor);
            }
        }
    }

    /// Decides REGISTER `id` on what this node last wrote of the AoR, or reads the
    /// AoR first.
    fn start_register(&mut self, now: Instant, id: u64, aor: String) {
        let seen = self.cluster.seen.get(&aor).map(|(version, remote)| {
            let live: Vec<Binding> = remote
                .iter()
                .filter(|b| b.expires_at > now)
                .cloned()
                .collect();
            (*version, live)
        });
        let request = self
            .servers
            .get(id)
            .map(|st| (st.source, st.request.clone()));
        match (seen, request) {
            (Some((version, remote)), Some(request)) => {
                self.decide_register(now, id, request, aor, 0, version, remote);
            }
            _ => {
                self.cluster.waiting.insert(
                    id,
                    Waiting::Register {
                        aor: aor.clone(),
                        tries: 0,
                    },
                );
                self.ask_cluster(id, ClusterAsk::Lookup { aor });
            }
        }
    }

    /// The next REGISTER for `aor`, once the one before it is answered.
    fn next_register(&mut self, now: Instant, aor: &str) {
        let next = self.cluster.busy.get_mut(aor).and_then(VecDeque::pop_front);
        match next {
            Some(id) => self.start_register(now, id, aor.to_string()),
            None => {
                self.cluster.busy.remove(aor);
            }
        }
    }

    /// The store's answer for server transaction `id`.
    pub(super) fn on_cluster(&mut self, now: Instant, id: u64, answer: ClusterAnswer) {
        let Some(waiting) = self.cluster.waiting.remove(&id) else {
            return;
        };
        let live = self
            .servers
            .get(id)
            .filter(|st| st.last.as_ref().is_none_or(|(s, _)| *s < 200))
            .map(|st| (st.source, st.request.clone()));
        match waiting {
            Waiting::Call(hash) => {
                let Some((source, req)) = live else { return };
                let (remote, known) = match answer {
                    ClusterAnswer::Found {
                        bindings, known, ..
                    } => (bindings, known),
                    // The store did not answer: the user may be on another node.
                    _ => (Vec::new(), true),
                };
                let route = self.local_request_with(now, &req, hash, &remote, known);
                self.route_waiting(now, id, source, req, route);
            }
            Waiting::Register { aor, tries } => {
                let Some((source, req)) = live else {
                    return self.next_register(now, &aor);
                };
                match answer {
                    ClusterAnswer::Found {
                        version, bindings, ..
                    } => {
                        self.decide_register(now, id, (source, req), aor, tries, version, bindings)
                    }
                    _ => self.register_unavailable(now, id, &req, &aor),
                }
            }
            Waiting::Commit {
                aor,
                tries,
                outcome,
                changes,
                remote,
            } => {
                let Some((source, req)) = live else {
                    return self.next_register(now, &aor);
                };
                match answer {
                    ClusterAnswer::Committed { version } => {
                        self.apply_committed(now, &aor, changes);
                        if self.holds(&aor) {
                            self.cluster.seen.insert(aor.clone(), (version, remote));
                        } else {
                            self.cluster.seen.remove(&aor);
                        }
                        let route = self.registered(now, &source, &req, outcome, Vec::new());
                        self.route_waiting(now, id, source, req, route);
                        self.next_register(now, &aor);
                    }
                    ClusterAnswer::Conflict if tries + 1 < MAX_TRIES => {
                        self.cluster.seen.remove(&aor);
                        self.cluster.waiting.insert(
                            id,
                            Waiting::Register {
                                aor: aor.clone(),
                                tries: tries + 1,
                            },
                        );
                        self.ask_cluster(id, ClusterAsk::Lookup { aor });
                    }
                    ClusterAnswer::Conflict => {
                        let mut resp = self.make_response(
                            &req,
                            500,
                            &[
                                (HeaderName::RetryAfter, "1".into()),
                                warning("Registration Changed Meanwhile On Another Node"),
                            ],
                        );
                        resp.reason = "Registration Changed Meanwhile".into();
                        self.answer_routed(id, resp, now);
                        self.next_register(now, &aor);
                    }
                    _ => self.register_unavailable(now, id, &req, &aor),
                }
            }
        }
    }

    /// 503 with a spread `Retry-After`: the store did not answer, so a REGISTER cannot
    /// be decided against the other nodes' bindings.
    fn register_unavailable(&mut self, now: Instant, id: u64, req: &Request, aor: &str) {
        // It may come back empty: read the AoR again then.
        self.cluster.seen.remove(aor);
        let seed = self.new_id() ^ id;
        let resp = self.make_response(
            req,
            503,
            &[
                (HeaderName::RetryAfter, retry_after(seed)),
                warning("Location Service Unavailable"),
            ],
        );
        self.answer_routed(id, resp, now);
        self.next_register(now, aor);
    }

    /// Decides a REGISTER on a copy of the AoR with the other nodes' bindings, then
    /// asks for its changes to be written.
    #[allow(clippy::too_many_arguments)]
    fn decide_register(
        &mut self,
        now: Instant,
        id: u64,
        (source, req): (Source, Request),
        aor: String,
        tries: u8,
        version: u64,
        remote: Vec<Binding>,
    ) {
        let Some(to) = req.get_to().ok() else {
            return self.register_unavailable(now, id, &req, &aor);
        };
        let mut copy = self.location.scratch(&aor, remote);
        let before: Vec<String> = copy.lookup(&aor).iter().map(store_key).collect();
        let mut changes = Vec::with_capacity(2);
        let outcome = registrar::register(
            &mut copy,
            registrar::Registration {
                req: &req,
                to: &to,
                source: &source,
            },
            now,
            &self.cfg.registrar,
            &self.gruus,
            &mut changes,
        );
        if changes.is_empty() {
            let route = self.registered(now, &source, &req, outcome, Vec::new());
            self.route_waiting(now, id, source, req, route);
            return self.next_register(now, &aor);
        }
        let after = copy.lookup(&aor);
        let save: Vec<Binding> = after
            .iter()
            .filter(|b| b.reach.is_local())
            .map(|b| self.published(b))
            .collect();
        let kept: Vec<String> = after.iter().map(store_key).collect();
        let remote: Vec<Binding> = after
            .iter()
            .filter(|b| !b.reach.is_local())
            .cloned()
            .collect();
        let mut remove: Vec<String> = before.into_iter().filter(|k| !kept.contains(k)).collect();
        remove.dedup();
        // As a single node remembers it (`Core::mark_known`): its client refreshed or
        // removed a binding, or it was remembered already.
        let remember = changes
            .iter()
            .any(|c| matches!(c, Change::Refreshed(_) | Change::Removed(_)))
            || self.known_aors.contains_key(&aor);
        self.cluster.waiting.insert(
            id,
            Waiting::Commit {
                aor: aor.clone(),
                tries,
                outcome,
                changes,
                remote,
            },
        );
        self.ask_cluster(
            id,
            ClusterAsk::Commit {
                aor,
                version,
                save,
                remove,
                remember,
            },
        );
    }

    /// A binding of this node as the store keeps it: its Path starts with this node's
    /// route to it.
    fn published(&self, b: &Binding) -> Binding {
        let mut b = b.clone();
        let Some(settings) = &self.cfg.cluster else {
            return b;
        };
        let token = match b.reach {
            Reach::Flow(f) => self.tokens.encode(f),
            Reach::Udp { remote, .. } => self.tokens.encode_udp(remote),
            Reach::Node => return b,
        };
        b.path
            .insert(0, format!("<sip:{token}@{};lr;swc>", settings.route_host));
        b
    }

    /// Applies the changes of a REGISTER the store took to this node's bindings (those
    /// of other nodes are theirs to drop: the store tells them).
    fn apply_committed(&mut self, now: Instant, aor: &str, changes: Vec<Change>) {
        let mut renamed: Vec<(u64, u64)> = Vec::new();
        let mut gone = Vec::new();
        for c in changes {
            let (Change::Saved(b) | Change::Refreshed(b) | Change::Removed(b)) = &c;
            if !b.reach.is_local() {
                continue;
            }
            match c {
                Change::Removed(b) => {
                    // Gone already when its flow closed meanwhile (told then).
                    if self.location.remove_id(aor, b.id).is_some() {
                        self.events.push_back(Event::BindingRemoved(b));
                    }
                    self.mark_known(aor, now);
                }
                Change::Saved(mut b) | Change::Refreshed(mut b) => {
                    // Its flow closed while the store wrote it: it goes again.
                    if let Some(f) = b.on_flow()
                        && !self.flows.contains_key(&f)
                    {
                        gone.push(forgotten(&b));
                        continue;
                    }
                    if !self.location.has(aor, b.id) {
                        let new = match renamed.iter().find(|(old, _)| *old == b.id) {
                            Some((_, new)) => *new,
                            None => {
                                let new = self.location.next_id();
                                renamed.push((b.id, new));
                                new
                            }
                        };
                        b.id = new;
                    }
                    self.touch_known(aor, now);
                    self.location.upsert(b.clone());
                    self.events.push_back(Event::BindingSaved(b));
                }
            }
        }
        if !gone.is_empty() {
            let last = !self.holds(aor);
            self.ask_cluster(
                0,
                ClusterAsk::Forget {
                    aor: aor.to_string(),
                    remove: gone,
                    last,
                },
            );
        }
        self.arm_expiry();
    }

    /// Tells the store that these bindings of this node are gone.
    pub(super) fn forget_in_cluster(&mut self, gone: &[Binding]) {
        if !self.clustered() {
            return;
        }
        let mut by_aor: Vec<(String, Vec<Forgotten>)> = Vec::new();
        for b in gone.iter().filter(|b| b.reach.is_local()) {
            match by_aor.iter_mut().find(|(a, _)| *a == b.aor) {
                Some((_, keys)) => keys.push(forgotten(b)),
                None => by_aor.push((b.aor.clone(), vec![forgotten(b)])),
            }
        }
        for (aor, remove) in by_aor {
            let last = !self.holds(&aor);
            if last {
                self.cluster.seen.remove(&aor);
            }
            self.ask_cluster(0, ClusterAsk::Forget { aor, remove, last });
        }
    }

    /// Whether this node holds a binding of `aor`.
    fn holds(&self, aor: &str) -> bool {
        self.location.lookup(aor).iter().any(|b| b.reach.is_local())
    }

    /// Another node replaced or removed a binding of this node: it goes here too
    /// (the store no longer has it).
    /// The binding the eviction names goes only if it is the registration the
    /// evicting node overwrote (its Call-ID, a CSeq not above): a late eviction spares
    /// a newer registration of the same Contact here.
    pub(super) fn on_evicted(
        &mut self,
        now: Instant,
        aor: &str,
        key: &str,
        call_id: &str,
        cseq: u32,
    ) {
        let newer = self
            .location
            .lookup(aor)
            .iter()
            .any(|b| store_key(b) == key && (b.call_id != call_id || b.cseq > cseq));
        if newer {
            return;
        }
        self.drop_local(now, aor, |k| k == key);
        if !self.holds(aor) {
            // Off this node's index.
            self.ask_cluster(
                0,
                ClusterAsk::Forget {
                    aor: aor.to_string(),
                    remove: Vec::new(),
                    last: true,
                },
            );
        }
    }

    /// A CANCEL for an INVITE waiting for the store: it is not forwarded at all.
    pub(super) fn cancel_cluster_wait(&mut self, id: u64) -> bool {
        if matches!(self.cluster.waiting.get(&id), Some(Waiting::Call(_))) {
            self.cluster.waiting.remove(&id);
            return true;
        }
        false
    }

    /// Whether `addr` is another node of the cluster (`cluster.peers`).
    pub(super) fn is_cluster_peer(&self, addr: std::net::IpAddr) -> bool {
        self.cfg
            .cluster
            .as_ref()
            .is_some_and(|c| c.peers.contains(addr))
    }

    /// What the store had of `aor` (at `version`), read when evictions may have been
    /// missed: this node's bindings the store has as another's go (taken over); those
    /// it does not have at all are written again (lost, as by a failover to a
    /// replica that lagged). Not while a REGISTER for the AoR is being decided here,
    /// nor when this node wrote the AoR since (what was read is older).
    pub(super) fn on_held(
        &mut self,
        now: Instant,
        aor: &str,
        version: u64,
        ours: &[String],
        others: &[String],
    ) {
        if self.cluster.busy.contains_key(aor)
            || self
                .cluster
                .seen
                .get(aor)
                .is_some_and(|(v, _)| *v > version)
        {
            return;
        }
        self.drop_local(now, aor, |k| others.iter().any(|h| h == k));
        let lost: Vec<Binding> = self
            .location
            .lookup(aor)
            .iter()
            .filter(|b| b.reach.is_local())
            .filter(|b| {
                let k = store_key(b);
                !ours.contains(&k) && !others.contains(&k)
            })
            .map(|b| self.published(b))
            .collect();
        if !lost.is_empty() {
            self.cluster.seen.remove(aor);
            self.ask_cluster(
                0,
                ClusterAsk::Publish {
                    aor: aor.to_string(),
                    save: lost,
                },
            );
        }
    }

    /// Drops this node's bindings of `aor` whose store keys `gone` says, without
    /// telling the store (it no longer has them as this node's).
    fn drop_local(&mut self, now: Instant, aor: &str, gone: impl Fn(&str) -> bool) {
        let ids: Vec<u64> = self
            .location
            .lookup(aor)
            .iter()
            .filter(|b| b.reach.is_local() && gone(&store_key(b)))
            .map(|b| b.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        self.cluster.seen.remove(aor);
        for id in ids {
            if let Some(b) = self.location.remove_id(aor, id) {
                self.mark_known(aor, now);
                self.events.push_back(Event::BindingRemoved(b));
            }
        }
        self.arm_expiry();
    }

    /// The store lost its data (restarted empty): every binding of this node is
    /// written again, or those of the AoRs `only` names (whose first write failed).
    pub(super) fn republish(&mut self, only: Option<&[String]>) {
        let mut by_aor: HashMap<String, Vec<Binding>> = HashMap::default();
        let bindings: Vec<Binding> = match only {
            None => {
                self.cluster.seen.clear();
                self.location.all().cloned().collect()
            }
            Some(aors) => {
                for a in aors {
                    self.cluster.seen.remove(a);
                }
                aors.iter()
                    .flat_map(|a| self.location.lookup(a).iter().cloned())
                    .collect()
            }
        };
        for b in bindings.iter().filter(|b| b.reach.is_local()) {
            by_aor
                .entry(b.aor.clone())
                .or_default()
                .push(self.published(b));
        }
        for (aor, save) in by_aor {
            self.ask_cluster(0, ClusterAsk::Publish { aor, save });
        }
    }

    /// Gives back the spare room of the cluster's tables (a burst of REGISTERs grew
    /// them); whether one is still large.
    pub(super) fn shrink_cluster(&mut self) -> bool {
        use super::sharded::shrink_map;
        let c = &mut self.cluster;
        let mut large = shrink_map(&mut c.seen);
        large |= shrink_map(&mut c.waiting);
        large |= shrink_map(&mut c.busy);
        large
    }

    /// Requests waiting for the store and AoRs being registered (for stats).
    pub(super) fn cluster_waiting(&self) -> usize {
        self.cluster.waiting.len()
    }
}
