//! The flow table: every live SIP flow, its peer and identity, and a bounded queue to
//! send on it. A flow leaves the table exactly once, when its [`FlowGuard`] drops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::core::{FlowId, Transport};
use crate::metrics::Metrics;

/// What is known about a flow.
#[derive(Debug, Clone)]
pub(crate) struct FlowInfo {
    /// Its id (also the HTTP connection id the plugin saw).
    pub id: FlowId,
    /// WS, WSS, TCP or TLS.
    pub transport: Transport,
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address (tells the listener).
    pub local: SocketAddr,
    /// Attributes the plugin attached at upgrade.
    pub identity: Vec<(String, String)>,
    /// Whether its listener enforces that identity on the flow's SIP
    /// ([`crate::core::identity`]).
    pub enforced: bool,
    /// When the flow was established.
    pub opened: SystemTime,
    /// A connection the server opened to a next hop: over TLS, the key of the name
    /// its certificate proved (0: its address; see [`crate::core::Target::Connect`]).
    /// `None` for connections peers opened.
    pub outgoing: Option<u64>,
}

/// Why a message could not be queued on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The flow is gone.
    #[error("no such flow")]
    NoFlow,
    /// The flow's queue is full (the peer does not read).
    #[error("flow send queue full")]
    Full,
}

/// A flow's traffic, counted by its task and read by the operator.
#[derive(Debug, Default)]
pub(crate) struct FlowCtl {
    /// Bytes read, as SIP messages and keepalives.
    pub bytes_in: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// SIP messages read.
    pub messages_in: AtomicU64,
    /// SIP messages written.
    pub messages_out: AtomicU64,
}

impl FlowCtl {
    /// Counts bytes read.
    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a SIP message read.
    pub(crate) fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message written.
    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }
}

struct Entry {
    info: Arc<FlowInfo>,
    /// Dropped to close the flow (the operator's close): its task sends what is
    /// queued, then finds the channel closed and [`FlowTable::close_reason`].
    tx: Option<mpsc::Sender<Bytes>>,
    ctl: Arc<FlowCtl>,
    /// Why the operator closed it.
    closing: Option<Box<str>>,
}

#[derive(Default)]
struct Flows {
    by_id: HashMap<FlowId, Entry>,
    /// Stream connections by transport and peer address, for reuse (RFC 3261 18.1.1).
    by_peer: HashMap<(Transport, SocketAddr), FlowId>,
}

/// All live flows.
pub(crate) struct FlowTable {
    flows: Mutex<Flows>,
    next_id: AtomicU64,
    closed_tx: mpsc::UnboundedSender<Arc<FlowInfo>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len())
            .finish()
    }
}

impl FlowTable {
    /// A table that reports each closed flow on `closed_tx`, once.
    pub(crate) fn new(
        closed_tx: mpsc::UnboundedSender<Arc<FlowInfo>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            flows: Mutex::new(Flows::default()),
            next_id: AtomicU64::new(1),
            closed_tx,
            metrics,
        }
    }

    /// A fresh id for a new connection.
    pub(crate) fn next_id(&self) -> FlowId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a flow; it stays until the returned guard drops.
    pub(crate) fn register(self: &Arc<Self>, info: FlowInfo, tx: mpsc::Sender<Bytes>) -> FlowGuard {
        let id = info.id;
        let ctl = Arc::new(FlowCtl::default());
        let mut flows = self.flows.lock().expect("flow table lock");
        flows.by_peer.insert((info.transport, info.remote), id);
        flows.by_id.insert(
            id,
            Entry {
                info: Arc::new(info),
                tx: Some(tx),
                ctl: ctl.clone(),
                closing: None,
            },
        );
        drop(flows);
        self.metrics.flow_opened();
        FlowGuard {
            table: self.clone(),
            id,
            ctl,
        }
    }

    /// Queues `payload` on flow `id` without waiting.
    pub(crate) fn send(&self, id: FlowId, payload: Bytes) -> Result<(), SendError> {
        let flows = self.flows.lock().expect("flow table lock");
        let entry = flows.by_id.get(&id).ok_or(SendError::NoFlow)?;
        let tx = entry.tx.as_ref().ok_or(SendError::NoFlow)?;
        tx.try_send(payload).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::NoFlow,
        })
    }

    /// A flow's info.
    pub(crate) fn get(&self, id: FlowId) -> Option<Arc<FlowInfo>> {
        self.flows
            .lock()
            .expect("flow table lock")
            .by_id
            .get(&id)
            .map(|e| e.info.clone())
    }

    /// A flow that may carry what goes to `Target::Connect { transport, remote, name }`:
    /// over TCP any flow with that peer; over TLS only one the server opened and whose
    /// certificate proved `name` (a connection a peer opened from that address proved
    /// nothing, nor did one checked for another name).
    pub(crate) fn find_for_connect(
        &self,
        transport: Transport,
        remote: SocketAddr,
        name: u64,
    ) -> Option<FlowId> {
        let flows = self.flows.lock().expect("flow table lock");
        let id = *flows.by_peer.get(&(transport, remote))?;
        if transport == Transport::Tls {
            let info = &flows.by_id.get(&id)?.info;
            if info.outgoing != Some(name) {
                return None;
            }
        }
        Some(id)
    }

    /// Every live flow, by id.
    pub(crate) fn list(&self) -> Vec<Arc<FlowInfo>> {
        let mut v: Vec<_> = self
            .flows
            .lock()
            .expect("flow table lock")
            .by_id
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Every live flow with its traffic counts, by id.
    pub(crate) fn list_with_counts(&self) -> Vec<(Arc<FlowInfo>, Arc<FlowCtl>)> {
        let mut v: Vec<_> = self
            .flows
            .lock()
            .expect("flow table lock")
            .by_id
            .values()
            .map(|e| (e.info.clone(), e.ctl.clone()))
            .collect();
        v.sort_by_key(|(i, _)| i.id);
        v
    }

    /// Closes flow `id`, saying `reason` (a WebSocket's close frame carries it): its
    /// task writes what is queued, then closes. Nothing more is queued on it. False
    /// if there is no such flow.
    pub(crate) fn close(&self, id: FlowId, reason: &str) -> bool {
        let mut flows = self.flows.lock().expect("flow table lock");
        let Some(entry) = flows.by_id.get_mut(&id) else {
            return false;
        };
        if entry.closing.is_none() {
            entry.closing = Some(reason.into());
        }
        // The last sender: the task's receiver ends once it took what was queued.
        entry.tx = None;
        true
    }

    /// Why the operator closed flow `id`, if it did ([`Self::close`]).
    pub(crate) fn close_reason(&self, id: FlowId) -> Option<String> {
        let flows = self.flows.lock().expect("flow table lock");
        flows.by_id.get(&id)?.closing.as_deref().map(str::to_string)
    }

    /// Number of live flows.
    pub(crate) fn len(&self) -> usize {
        self.flows.lock().expect("flow table lock").by_id.len()
    }

    fn remove(&self, id: FlowId) {
        let mut flows = self.flows.lock().expect("flow table lock");
        let removed = flows.by_id.remove(&id);
        if let Some(e) = &removed {
            let key = (e.info.transport, e.info.remote);
            if flows.by_peer.get(&key) == Some(&id) {
                flows.by_peer.remove(&key);
            }
        }
        drop(flows);
        if let Some(e) = removed {
            self.metrics.flow_closed();
            // The receiver (the driver task) lives as long as the server.
            let _ = self.closed_tx.send(e.info);
        }
    }
}

/// Keeps a flow registered; dropping it removes the flow and reports the closure.
#[derive(Debug)]
pub(crate) struct FlowGuard {
    table: Arc<FlowTable>,
    id: FlowId,
    ctl: Arc<FlowCtl>,
}

impl FlowGuard {
    /// What the flow's task shares with the operator.
    pub(crate) fn ctl(&self) -> &FlowCtl {
        &self.ctl
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebSocket flow's info for the table.
    fn ws_flow(id: FlowId) -> FlowInfo {
        FlowInfo {
            id,
            transport: Transport::Ws,
            remote: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
            identity: vec![],
            enforced: false,
            opened: SystemTime::UNIX_EPOCH,
            outgoing: None,
        }
    }

    #[test]
    fn closes_exactly_once() {
        let (ctx, mut crx) = mpsc::unbounded_channel();
        let table = Arc::new(FlowTable::new(ctx, Arc::new(Metrics::default())));
        let (tx, mut rx) = mpsc::channel(1);
        let id = table.next_id();
        let guard = table.register(ws_flow(id), tx);
        table.send(id, Bytes::from_static(b"a")).unwrap();
        assert_eq!(
            table.send(id, Bytes::from_static(b"b")),
            Err(SendError::Full)
        );
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"a"));
        assert_eq!(table.len(), 1);
        drop(guard);
        assert_eq!(table.send(id, Bytes::new()), Err(SendError::NoFlow));
        table.remove(id);
        assert_eq!(crx.try_recv().unwrap().id, id);
        assert!(crx.try_recv().is_err());
    }

    #[test]
    fn a_close_lets_what_is_queued_go_first() {
        let (ctx, _crx) = mpsc::unbounded_channel();
        let table = Arc::new(FlowTable::new(ctx, Arc::new(Metrics::default())));
        let (tx, mut rx) = mpsc::channel(4);
        let id = table.next_id();
        let _guard = table.register(ws_flow(id), tx);
        table.send(id, Bytes::from_static(b"last")).unwrap();
        assert_eq!(table.close_reason(id), None);
        assert!(table.close(id, "maintenance"));
        assert!(!table.close(id + 1, "no such flow"));
        assert_eq!(
            table.send(id, Bytes::from_static(b"more")),
            Err(SendError::NoFlow)
        );
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"last"));
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(table.close_reason(id).as_deref(), Some("maintenance"));
        // Asked again: the first reason stays.
        assert!(table.close(id, "again"));
        assert_eq!(table.close_reason(id).as_deref(), Some("maintenance"));
    }

    #[test]
    fn a_tls_target_reuses_only_a_connection_that_proved_its_name() {
        let (ctx, _crx) = mpsc::unbounded_channel();
        let table = Arc::new(FlowTable::new(ctx, Arc::new(Metrics::default())));
        let peer: SocketAddr = "192.0.2.7:5061".parse().unwrap();
        let flow = |id, transport, outgoing| FlowInfo {
            id,
            transport,
            remote: peer,
            local: "127.0.0.1:2".parse().unwrap(),
            identity: vec![],
            enforced: false,
            opened: SystemTime::UNIX_EPOCH,
            outgoing,
        };
        // A connection the peer's address opened to us proves no name.
        let (tx, _rx) = mpsc::channel(1);
        let inbound = table.register(flow(1, Transport::Tls, None), tx);
        assert_eq!(table.find_for_connect(Transport::Tls, peer, 0), None);
        assert_eq!(table.find_for_connect(Transport::Tls, peer, 5), None);
        drop(inbound);
        table.remove(1);
        // Ours, checked for name 5: for name 5 only.
        let (tx, _rx) = mpsc::channel(1);
        let _ours = table.register(flow(2, Transport::Tls, Some(5)), tx);
        assert_eq!(table.find_for_connect(Transport::Tls, peer, 5), Some(2));
        assert_eq!(table.find_for_connect(Transport::Tls, peer, 6), None);
        assert_eq!(table.find_for_connect(Transport::Tls, peer, 0), None);
        // TCP proves nothing either way: any flow with the peer is reused.
        let (tx, _rx) = mpsc::channel(1);
        let _tcp = table.register(flow(3, Transport::Tcp, None), tx);
        assert_eq!(table.find_for_connect(Transport::Tcp, peer, 0), Some(3));
    }
}
