//! The location service: bindings from an address-of-record to contacts (RFC 3261
//! section 10), each bound to the flow or the UDP 5-tuple it was registered over.
//! In memory; persistence happens outside the core through [`super::Event`]s.

use std::collections::BTreeSet;

// Seeded per process (keys come from the network), faster than SipHash.
use foldhash::HashMap;

use super::sharded::{Sharded, shrink_map};
use std::net::SocketAddr;
use std::time::Instant;

use super::{FlowId, Target, Transport};

/// How to reach a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Over the connection it was registered on (WS, WSS, TCP, TLS).
    Flow(FlowId),
    /// By datagram to the address the REGISTER came from, from the listener it reached.
    Udp {
        /// Our listener.
        local: SocketAddr,
        /// The registering client's source address.
        remote: SocketAddr,
    },
    /// Through another node of the cluster, which holds its flow: by the binding's
    /// first Path entry, that node's route to it ([`super::cluster`]).
    Node,
}

impl Reach {
    /// The transmit target; `None` for a binding held by another node (reached by its
    /// Path).
    pub fn target(&self) -> Option<Target> {
        match *self {
            Self::Flow(id) => Some(Target::Flow(id)),
            Self::Udp { local, remote } => Some(Target::Udp { local, remote }),
            Self::Node => None,
        }
    }

    /// Whether this node holds the binding (its flow or its UDP address).
    pub fn is_local(&self) -> bool {
        !matches!(self, Self::Node)
    }
}

/// One binding.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Unique id (for timers and indexes).
    pub id: u64,
    /// Normalized address-of-record, `sip:user@domain`.
    pub aor: String,
    /// The Contact URI as registered.
    pub contact: String,
    /// q value in thousandths (1000 = 1.0); `None` when not given.
    pub q: Option<u16>,
    /// When it expires.
    pub expires_at: Instant,
    /// When it was last refreshed (most recent first when forking).
    pub updated: Instant,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// RFC 5626 `+sip.instance` (without the angle brackets and quotes).
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`.
    pub reg_id: Option<u32>,
    /// RFC 3327 Path values, in order.
    pub path: Vec<String>,
    /// The Contact's other header parameters as written, each with its `;` (feature
    /// tags such as `+sip.ice`, RFC 3840): kept with the binding and listed in the 200
    /// (RFC 5626 section 6). Not `expires`, `q`, `+sip.instance`, `reg-id` or the
    /// GRUU parameters, which the registrar writes itself.
    pub params: String,
    /// How to reach it.
    pub reach: Reach,
    /// The transport it was registered over.
    pub transport: Transport,
    /// The key of its RFC 5627 temporary GRUUs, when it has them (see
    /// [`super::gruu`]): shared by the bindings of its instance, replaced when the
    /// instance's temporary GRUUs are invalidated.
    pub temp_gruu: Option<String>,
    /// User-Agent of the REGISTER.
    pub user_agent: Option<String>,
}

impl Binding {
    /// Seconds left at `now` (0 when expired).
    pub fn remaining(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    /// Whether it lives on a connection (and dies with it).
    pub fn on_flow(&self) -> Option<FlowId> {
        match self.reach {
            Reach::Flow(id) => Some(id),
            Reach::Udp { .. } | Reach::Node => None,
        }
    }
}

/// All bindings.
#[derive(Debug, Default)]
pub struct Location {
    by_aor: Sharded<String, Vec<Binding>>,
    by_flow: HashMap<FlowId, Vec<(String, u64)>>,
    /// Bindings by the instance part of their temporary GRUU keys
    /// ([`super::gruu::index_key`]).
    by_gruu_key: Sharded<String, Vec<(String, u64)>>,
    /// Bindings on a flow by their Contact text: a request whose Request-URI is a
    /// browser's `.invalid` Contact finds its connection without a scan.
    by_flow_contact: Sharded<String, Vec<(String, u64)>>,
    expiries: BTreeSet<(Instant, u64)>,
    aor_of: Sharded<u64, String>,
    /// How many bindings are reached by datagram at each address.
    by_udp: HashMap<std::net::SocketAddr, usize>,
    next_id: u64,
    /// Bindings counted in [`Location::len`] beyond those held: the rest of the
    /// registrar, for a copy of one AoR's bindings ([`Location::scratch`]).
    elsewhere: usize,
}

impl Location {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Room in the table of AoRs (for tests of [`Location::shrink`]).
    #[cfg(test)]
    pub fn aor_capacity(&self) -> usize {
        self.by_aor.capacity()
    }

    /// Gives back the spare capacity of tables that shrank to under a quarter of it
    /// (a flood of registrations that expired leaves them sized for the flood);
    /// returns whether any table is still large enough to look at again later.
    pub fn shrink(&mut self) -> bool {
        let mut large = false;
        large |= self.by_aor.shrink();
        large |= shrink_map(&mut self.by_flow);
        large |= self.by_gruu_key.shrink();
        large |= self.by_flow_contact.shrink();
        large |= self.aor_of.shrink();
        large |= shrink_map(&mut self.by_udp);
        large
    }

    /// A copy of `aor`'s bindings with `remote` (held by other nodes of the cluster)
    /// added, for the registrar to decide a REGISTER on before anything is written:
    /// it counts the rest of this registrar in [`Location::len`], and its new
    /// bindings' ids come after every id given so far.
    pub fn scratch(&self, aor: &str, remote: Vec<Binding>) -> Self {
        let mut copy = Self {
            next_id: self.next_id,
            elsewhere: self.len() - self.lookup(aor).len(),
            ..Self::default()
        };
        for b in self.lookup(aor) {
            copy.upsert(b.clone());
        }
        for mut b in remote {
            b.id = copy.next_id();
            b.aor = aor.to_string();
            copy.upsert(b);
        }
        copy
    }

    /// Whether `aor` has a binding with id `id`.
    pub fn has(&self, aor: &str, id: u64) -> bool {
        self.lookup(aor).iter().any(|b| b.id == id)
    }

    /// A fresh binding id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The live bindings of `aor`.
    pub fn lookup(&self, aor: &str) -> &[Binding] {
        self.by_aor.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether some binding is reached by datagram at `remote` (its REGISTER came from
    /// there).
    pub fn has_udp(&self, remote: std::net::SocketAddr) -> bool {
        self.by_udp.contains_key(&remote)
    }

    /// Whether the AoR has (or had, until its last binding went) any binding.
    pub fn knows(&self, aor: &str) -> bool {
        self.by_aor.contains_key(aor)
    }

    /// The bindings whose temporary GRUU keys index as `index` (see
    /// [`super::gruu::index_key`]): those of one instance.
    pub fn by_gruu_key(&self, index: &str) -> impl Iterator<Item = &Binding> {
        self.by_gruu_key
            .get(index)
            .into_iter()
            .flatten()
            .filter_map(|(aor, id)| self.by_aor.get(aor)?.iter().find(|b| b.id == *id))
    }

    /// A binding on a flow whose Contact is exactly `contact`.
    pub fn on_flow_with_contact(&self, contact: &str) -> Option<&Binding> {
        let (aor, id) = self.by_flow_contact.get(contact)?.first()?;
        self.by_aor.get(aor)?.iter().find(|b| b.id == *id)
    }

    /// Inserts or replaces (same id) a binding. A replacement that keeps what the
    /// indexes hold (AoR, reach, Contact, temporary GRUU) is made in place, moving only
    /// its expiry: the refresh of a registration.
    pub fn upsert(&mut self, b: Binding) {
        if let Some(old) = self
            .by_aor
            .get_mut(&b.aor)
            .and_then(|list| list.iter_mut().find(|o| o.id == b.id))
            && old.reach == b.reach
            && old.contact == b.contact
            && old.temp_gruu == b.temp_gruu
        {
            self.expiries.remove(&(old.expires_at, b.id));
            self.expiries.insert((b.expires_at, b.id));
            *old = b;
            return;
        }
        self.remove_id(&b.aor.clone(), b.id);
        if let Some(flow) = b.on_flow() {
            self.by_flow
                .entry(flow)
                .or_default()
                .push((b.aor.clone(), b.id));
            push_one(&mut self.by_flow_contact, &b.contact, (b.aor.clone(), b.id));
        }
        if let Some(t) = &b.temp_gruu {
            let key = super::gruu::index_key(t);
            push_one(&mut self.by_gruu_key, key, (b.aor.clone(), b.id));
        }
        if let Reach::Udp { remote, .. } = b.reach {
            *self.by_udp.entry(remote).or_default() += 1;
        }
        self.expiries.insert((b.expires_at, b.id));
        self.aor_of.insert(b.id, b.aor.clone());
        match self.by_aor.get_mut(&b.aor) {
            Some(list) => list.push(b),
            None => {
                // Most AoRs have one binding: a `Vec`'s first push makes room for four
                // (1.4 KB of `Binding`s), which was most of a registration's memory.
                let aor = b.aor.clone();
                self.by_aor.insert(aor, vec![b]);
            }
        }
    }

    /// Removes one binding; returns it.
    pub fn remove_id(&mut self, aor: &str, id: u64) -> Option<Binding> {
        let list = self.by_aor.get_mut(aor)?;
        let pos = list.iter().position(|b| b.id == id)?;
        let b = list.remove(pos);
        if list.is_empty() {
            self.by_aor.remove(aor);
        }
        if let Reach::Udp { remote, .. } = b.reach
            && let Some(n) = self.by_udp.get_mut(&remote)
        {
            *n -= 1;
            if *n == 0 {
                self.by_udp.remove(&remote);
            }
        }
        if let Some(flow) = b.on_flow()
            && let Some(v) = self.by_flow.get_mut(&flow)
        {
            v.retain(|(_, i)| *i != id);
            if v.is_empty() {
                self.by_flow.remove(&flow);
            }
        }
        if b.on_flow().is_some()
            && let Some(v) = self.by_flow_contact.get_mut(&b.contact)
        {
            v.retain(|(_, i)| *i != id);
            if v.is_empty() {
                self.by_flow_contact.remove(&b.contact);
            }
        }
        if let Some(t) = &b.temp_gruu {
            let index = super::gruu::index_key(t);
            if let Some(v) = self.by_gruu_key.get_mut(index) {
                v.retain(|(_, i)| *i != id);
                if v.is_empty() {
                    self.by_gruu_key.remove(index);
                }
            }
        }
        self.expiries.remove(&(b.expires_at, b.id));
        self.aor_of.remove(&id);
        Some(b)
    }

    /// Removes every binding that lives on `flow`.
    pub fn remove_flow(&mut self, flow: FlowId) -> Vec<Binding> {
        let ids = self.by_flow.remove(&flow).unwrap_or_default();
        ids.into_iter()
            .filter_map(|(aor, id)| self.remove_id(&aor, id))
            .collect()
    }

    /// Removes and returns bindings expired at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Binding> {
        let due: Vec<(Instant, u64)> = self.expiries.range(..=(now, u64::MAX)).copied().collect();
        due.into_iter()
            .filter_map(|(_, id)| {
                let aor = self.aor_of.get(&id)?.clone();
                self.remove_id(&aor, id)
            })
            .collect()
    }

    /// The next expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.aor_of.len() + self.elsewhere
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.aor_of.is_empty()
    }

    /// Number of addresses of record with at least one binding.
    pub fn aors(&self) -> usize {
        self.by_aor.len()
    }

    /// An AoR with its bindings, if it has any (the admin API).
    pub fn entry(&self, aor: &str) -> Option<(&String, &Vec<Binding>)> {
        self.by_aor.get_key_value(aor)
    }

    /// Every AoR with its bindings, in no order (the admin API).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Vec<Binding>)> {
        self.by_aor.iter()
    }

    /// Every binding (for the control API).
    pub fn all(&self) -> impl Iterator<Item = &Binding> {
        self.by_aor.values().flatten()
    }
}

/// Appends `x` to the list under `key`, a list of one (`vec!` makes room for just
/// that) if there was none.
fn push_one<T>(map: &mut Sharded<String, Vec<T>>, key: &str, x: T) {
    match map.get_mut(key) {
        Some(list) => list.push(x),
        None => {
            map.insert(key.to_string(), vec![x]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn binding(loc: &mut Location, aor: &str, now: Instant, secs: u64, reach: Reach) -> Binding {
        Binding {
            id: loc.next_id(),
            aor: aor.into(),
            contact: "sip:a@b".into(),
            q: None,
            expires_at: now + Duration::from_secs(secs),
            updated: now,
            call_id: "c".into(),
            cseq: 1,
            instance: None,
            reg_id: None,
            path: vec![],
            params: String::new(),
            reach,
            transport: Transport::Ws,
            temp_gruu: Some(format!("t{secs}")),
            user_agent: None,
        }
    }

    /// An AoR with one binding holds room for one: a million AoRs registered by a
    /// flood took 2 GB when each list kept room for four.
    #[test]
    fn an_aor_with_one_binding_holds_room_for_one() {
        let now = Instant::now();
        let mut loc = Location::new();
        let a = binding(&mut loc, "sip:a@l", now, 10, Reach::Flow(7));
        loc.upsert(a.clone());
        assert_eq!(loc.by_aor.get("sip:a@l").map(Vec::capacity), Some(1));
        assert_eq!(
            loc.by_flow_contact.get(&a.contact).map(Vec::capacity),
            Some(1)
        );
        let b = binding(&mut loc, "sip:a@l", now, 20, Reach::Flow(8));
        loc.upsert(b);
        assert_eq!(loc.lookup("sip:a@l").len(), 2);
    }

    #[test]
    fn flows_and_expiry() {
        let now = Instant::now();
        let mut loc = Location::new();
        let a = binding(&mut loc, "sip:a@l", now, 10, Reach::Flow(7));
        let b = binding(&mut loc, "sip:a@l", now, 20, Reach::Flow(8));
        loc.upsert(a.clone());
        loc.upsert(b.clone());
        assert_eq!(loc.lookup("sip:a@l").len(), 2);
        assert_eq!(loc.by_gruu_key("t10").next().unwrap().id, a.id);
        let gone = loc.remove_flow(7);
        assert_eq!(gone.len(), 1);
        assert!(loc.remove_flow(7).is_empty(), "exactly once");
        assert_eq!(loc.next_expiry(), Some(b.expires_at));
        assert!(loc.expire(now + Duration::from_secs(19)).is_empty());
        assert_eq!(loc.expire(now + Duration::from_secs(20)).len(), 1);
        assert!(loc.is_empty());
        assert!(!loc.knows("sip:a@l"));
        assert!(loc.by_gruu_key("t20").next().is_none());
    }

    #[test]
    fn upsert_replaces_same_id() {
        let now = Instant::now();
        let mut loc = Location::new();
        let mut a = binding(&mut loc, "sip:a@l", now, 10, Reach::Flow(1));
        loc.upsert(a.clone());
        a.expires_at = now + Duration::from_secs(100);
        a.reach = Reach::Flow(2);
        loc.upsert(a.clone());
        assert_eq!(loc.len(), 1);
        assert!(loc.remove_flow(1).is_empty());
        assert_eq!(loc.remove_flow(2).len(), 1);
    }

    #[test]
    fn upsert_refreshes_in_place() {
        let now = Instant::now();
        let mut loc = Location::new();
        let mut a = binding(&mut loc, "sip:a@l", now, 10, Reach::Flow(1));
        loc.upsert(a.clone());
        // Same indexes, a later expiry and a new CSeq: updated where it stands.
        a.expires_at = now + Duration::from_secs(100);
        a.cseq = 2;
        loc.upsert(a.clone());
        assert_eq!(loc.lookup("sip:a@l"), [a.clone()]);
        assert_eq!(loc.next_expiry(), Some(a.expires_at));
        assert!(loc.expire(now + Duration::from_secs(10)).is_empty());
        assert_eq!(loc.by_gruu_key("t10").next().unwrap().cseq, 2);
        assert_eq!(loc.remove_flow(1).len(), 1);
    }

    #[test]
    fn flow_bindings_are_found_by_contact() {
        let now = Instant::now();
        let mut loc = Location::new();
        let mut a = binding(&mut loc, "sip:a@l", now, 10, Reach::Flow(1));
        a.contact = "sip:x@r1.invalid;transport=ws".into();
        loc.upsert(a.clone());
        let udp = binding(
            &mut loc,
            "sip:u@l",
            now,
            10,
            Reach::Udp {
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: "127.0.0.1:5070".parse().unwrap(),
            },
        );
        loc.upsert(udp);
        assert_eq!(
            loc.on_flow_with_contact("sip:x@r1.invalid;transport=ws")
                .map(|b| b.id),
            Some(a.id)
        );
        assert!(
            loc.on_flow_with_contact("sip:a@b").is_none(),
            "only bindings on a flow"
        );
        // A new Contact on the same flow (same id) moves the index.
        a.contact = "sip:x@r2.invalid;transport=ws".into();
        loc.upsert(a.clone());
        assert!(
            loc.on_flow_with_contact("sip:x@r1.invalid;transport=ws")
                .is_none()
        );
        assert_eq!(
            loc.on_flow_with_contact("sip:x@r2.invalid;transport=ws")
                .map(|b| b.id),
            Some(a.id)
        );
        // Gone with its flow.
        assert_eq!(loc.remove_flow(1).len(), 1);
        assert!(
            loc.on_flow_with_contact("sip:x@r2.invalid;transport=ws")
                .is_none()
        );
        assert!(loc.by_flow_contact.is_empty());
    }
}
