//! The registrar's bindings as `sip-router` plugins see them through `lookup`: a
//! copy the SIP driver refreshes from the core after each binding event, readable from
//! any thread while the core runs on its own task.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use super::bindings::{Contact, SipTransport};
use crate::core::location::{Binding, Reach};
use crate::core::registrar::aor_of;
use crate::sip::uri::Uri;

/// AoR → bindings, most recent first; and, in a cluster, the store where the other
/// nodes' bindings are.
#[derive(Debug, Default)]
pub struct RegistrarView {
    by_aor: RwLock<HashMap<String, Vec<Binding>>>,
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
}

impl RegistrarView {
    /// The bindings `aor` has now, in the core's order (call after each change of it).
    pub fn set(&self, aor: &str, bindings: &[Binding]) {
        let mut map = self.by_aor.write().expect("registrar view lock");
        if bindings.is_empty() {
            map.remove(aor);
            return;
        }
        let mut list = bindings.to_vec();
        // Most recent first, as forking orders them.
        list.sort_by_key(|b| std::cmp::Reverse(b.updated));
        match map.get_mut(aor) {
            Some(old) => *old = list,
            None => {
                map.insert(aor.to_string(), list);
            }
        }
    }

    /// Lookups answer cluster-wide from now on: with the bindings `cluster`'s other
    /// nodes hold.
    pub(crate) fn attach_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The live contacts of `aor` (any form the registrar accepts:
    /// `sip:alice@Example.org;transport=tcp` is `sip:alice@example.org`) on this node.
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<Contact> {
        let Some(key) = Uri::parse(aor.trim()).ok().and_then(|u| aor_of(&u)) else {
            return Vec::new();
        };
        let list = self.local(&key);
        contacts(&list, now)
    }

    /// [`RegistrarView::lookup`] on every node of the cluster (this node's bindings and
    /// those the store has of the other live nodes, most recent first); this node's
    /// alone when there is no cluster or the store does not answer in time.
    pub async fn lookup_everywhere(&self, aor: &str) -> Vec<Contact> {
        let Some(key) = Uri::parse(aor.trim()).ok().and_then(|u| aor_of(&u)) else {
            return Vec::new();
        };
        let mut list = self.local(&key);
        if let Some(cluster) = self.cluster.get() {
            list.extend(cluster.others(&key).await);
            list.sort_by_key(|b| std::cmp::Reverse(b.updated));
        }
        contacts(&list, Instant::now())
    }

    fn local(&self, key: &str) -> Vec<Binding> {
        let map = self.by_aor.read().expect("registrar view lock");
        map.get(key).cloned().unwrap_or_default()
    }
}

/// The live ones of `list` as the WIT shows them.
fn contacts(list: &[Binding], now: Instant) -> Vec<Contact> {
    list.iter()
        .filter(|b| b.expires_at > now)
        .map(|b| Contact {
            uri: b.contact.clone(),
            expires: u32::try_from(b.remaining(now)).unwrap_or(u32::MAX),
            q: b.q,
            instance: b.instance.clone(),
            reg_id: b.reg_id,
            transport: sip_transport(b.transport),
            connection_id: match b.reach {
                Reach::Flow(f) => Some(f),
                Reach::Udp { .. } | Reach::Node => None,
            },
            user_agent: b.user_agent.clone(),
        })
        .collect()
}

/// The WIT transport of a core transport.
pub(crate) fn sip_transport(t: crate::core::Transport) -> SipTransport {
    use crate::core::Transport as T;
    match t {
        T::Udp => SipTransport::Udp,
        T::Tcp => SipTransport::Tcp,
        T::Tls => SipTransport::Tls,
        T::Ws => SipTransport::Ws,
        T::Wss => SipTransport::Wss,
    }
}
