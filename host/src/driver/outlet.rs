//! Where what the core produced goes: a flow's send queue, a UDP socket, or a
//! connection still to be opened. The driver owns it; the transports fill it (flows,
//! sockets) and open the connections it asks for, so they depend on the driver and
//! the driver on none of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::flow::{FlowTable, SendError};
use crate::core::{FlowId, Target, Transmit, Transport};
use crate::metrics::Metrics;

/// A connection for the transports to open: `Target::Connect` found no flow to the
/// peer (transport, address, name key). Sent once per peer while messages wait for it.
pub(crate) type ConnectRequest = (Transport, SocketAddr, u64);

/// The sending side of the server, as the driver sees it.
#[derive(Debug)]
pub(crate) struct Outlet {
    /// Live flows (shared with the transports, which add and remove them).
    pub flows: Arc<FlowTable>,
    /// UDP sockets by local address.
    pub udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Outgoing connections being opened.
    pub connector: Connector,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// SIP capture (`[capture] hep`), when on.
    pub capture: Option<Arc<crate::capture::Capture>>,
}

impl Outlet {
    /// Captures a message that arrived (`[capture]`), when capture is on.
    pub(crate) fn captured_in(
        &self,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        sip: &[u8],
    ) {
        if let Some(c) = &self.capture {
            c.message(transport, remote, local, sip);
        }
    }

    /// Captures a message about to leave for `target`, when capture is on.
    fn captured_out(&self, target: &Target, payload: &[u8]) {
        let Some(c) = &self.capture else { return };
        let (transport, local, remote) = match *target {
            Target::Flow(id) => match self.flows.get(id) {
                Some(f) => (f.transport, f.local, f.remote),
                None => return,
            },
            Target::Udp { local, remote } => (Transport::Udp, local, remote),
            Target::Connect {
                transport, remote, ..
            } => {
                let unspecified: SocketAddr = if remote.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                (transport, unspecified, remote)
            }
        };
        c.message(transport, local, remote, payload);
    }

    /// Sends what the core produced. Returns the target when it is already known to
    /// be unreachable (the caller tells the core); UDP destinations an ICMP error
    /// reported meanwhile go to `unreachable`.
    pub(crate) fn dispatch(&self, t: Transmit, unreachable: &mut Vec<Target>) -> Option<Target> {
        self.captured_out(&t.target, &t.payload);
        match t.target {
            Target::Flow(id) => match self.flows.send(id, t.payload) {
                Ok(()) => None,
                Err(SendError::NoFlow) => Some(t.target),
                Err(SendError::Full) => {
                    tracing::debug!(flow = id, "send queue full; message dropped");
                    self.metrics.sip_send_queue_full();
                    None
                }
            },
            Target::Udp { local, remote } => {
                let Some(socket) = self.udp.get(&local) else {
                    return Some(t.target);
                };
                let mut sent = socket.try_send_to(&t.payload, remote);
                // An ICMP error of an earlier datagram (to another address, say a port
                // nobody listens on) is reported by the socket's next call, this one:
                // the error is consumed by that report (the receive loop reads which
                // address it was about from the error queue), and this datagram is
                // still to be sent.
                for _ in 0..4 {
                    match &sent {
                        Err(e) if is_reported_icmp(e) => {
                            // This call took the report the receive loop would have
                            // had: read what it was about here (a port nobody listens
                            // on), or its transactions would never hear of it.
                            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                for r in self::unreachable(socket) {
                                    self.metrics.udp_unreachable();
                                    unreachable.push(Target::Udp { local, remote: r });
                                }
                            }
                            sent = socket.try_send_to(&t.payload, remote);
                        }
                        _ => break,
                    }
                }
                match sent {
                    Ok(_) => self.metrics.sip_out(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let socket = socket.clone();
                        tokio::spawn(async move {
                            let _ = socket.send_to(&t.payload, remote).await;
                        });
                    }
                    Err(e) => tracing::debug!(%remote, "UDP send failed: {e}"),
                }
                None
            }
            Target::Connect {
                transport,
                remote,
                name,
            } => {
                if let Some(id) = self.flows.find_for_connect(transport, remote, name)
                    && self.flows.send(id, t.payload.clone()).is_ok()
                {
                    return None;
                }
                let peer = (transport, remote, name);
                if !self.connector.queue(peer, t.payload) {
                    return None;
                }
                // The transports stop listening only when the server stops.
                match self.connector.requests.send(peer) {
                    Ok(()) => None,
                    Err(_) => {
                        self.connector.drop_pending(peer);
                        Some(t.target)
                    }
                }
            }
        }
    }
}

/// Whether a send failed only because the socket reported an ICMP error of an
/// earlier datagram (`IP_RECVERR`: unreachable port, host or network).
fn is_reported_icmp(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, HostUnreachable, NetworkUnreachable};
    matches!(
        e.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable
    )
}

/// Messages waiting for outgoing connections that are being opened, so that a burst
/// of messages to one peer opens one connection.
#[derive(Debug)]
pub(crate) struct Connector {
    pending: Mutex<HashMap<ConnectRequest, Vec<Bytes>>>,
    /// To the transports' task that opens connections.
    requests: mpsc::UnboundedSender<ConnectRequest>,
}

impl Connector {
    /// A connector whose connections are opened by whoever reads `requests`' other
    /// end.
    pub(crate) fn new(requests: mpsc::UnboundedSender<ConnectRequest>) -> Self {
        Self {
            pending: Mutex::default(),
            requests,
        }
    }

    /// Queues `payload`; true when a connection must be opened (first message).
    fn queue(&self, peer: ConnectRequest, payload: Bytes) -> bool {
        let mut p = self.pending.lock().expect("connector lock");
        match p.get_mut(&peer) {
            Some(q) => {
                q.push(payload);
                false
            }
            None => {
                p.insert(peer, vec![payload]);
                true
            }
        }
    }

    /// The connection is up as flow `id` of `flows`: send what waited for it.
    pub(crate) fn flush_pending(&self, flows: &FlowTable, peer: ConnectRequest, id: FlowId) {
        let queued = self.pending.lock().expect("connector lock").remove(&peer);
        for payload in queued.into_iter().flatten() {
            if let Err(e) = flows.send(id, payload) {
                tracing::debug!(flow = id, "queued message not sent: {e}");
            }
        }
    }

    /// The connection failed: forget what waited for it.
    pub(crate) fn drop_pending(&self, peer: ConnectRequest) {
        self.pending.lock().expect("connector lock").remove(&peer);
    }
}

/// Most error-queue entries read per receive error (the rest wait for the next one).
const ERRORS_PER_WAKE: usize = 64;

/// The destinations of queued ICMP errors (`MSG_ERRQUEUE`: the address each refused
/// datagram was sent to), without blocking.
pub(crate) fn unreachable(socket: &UdpSocket) -> Vec<SocketAddr> {
    let s = socket2::SockRef::from(socket);
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    let mut out = Vec::new();
    for _ in 0..ERRORS_PER_WAKE {
        match s.recv_from_with_flags(&mut buf, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) {
            Ok((_, addr)) => {
                if let Some(a) = addr.as_socket()
                    && !out.contains(&a)
                {
                    out.push(a);
                }
            }
            Err(_) => break,
        }
    }
    out
}
