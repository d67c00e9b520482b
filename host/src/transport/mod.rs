//! The tokio shell: listeners, connections, flows, datagrams. Sockets live here and
//! nowhere in `sip/` or `core/`.

pub mod admission;
pub mod flow;
pub mod gate;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::config::{HttpConfig, WebSocketConfig};
use crate::core::auth::NonceKey;
use crate::core::{FlowId, Target, Transmit, Transport};
use crate::metrics::Metrics;
pub use flow::{FlowGuard, FlowInfo, FlowTable, SendError};

/// SIP transport limits.
#[derive(Debug, Clone)]
pub struct SipLimits {
    /// Largest SIP message on any transport.
    pub max_message_bytes: usize,
    /// A TCP/TLS connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// An accepted TCP/TLS connection must bring a complete SIP message this soon.
    pub first_message_timeout: Duration,
    /// A WebSocket frame or message may stay unfinished this long.
    pub ws_partial_timeout: Duration,
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    /// HTTP limits.
    pub http: HttpConfig,
    /// WebSocket settings.
    pub websocket: WebSocketConfig,
    /// SIP limits.
    pub sip: SipLimits,
    /// `Server` header.
    pub server_header: String,
    /// Live flows.
    pub flows: Arc<FlowTable>,
    /// The SIP core and its queue.
    pub core: crate::driver::CoreCell,
    /// Digest nonces.
    pub nonce: NonceKey,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// How long shutdown waits for close handshakes.
    pub grace: Duration,
    /// UDP sockets by local address.
    pub udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// Outgoing connections being opened.
    pub connector: Connector,
    /// Connection counts and caps.
    pub admission: Arc<admission::Admission>,
    /// `limits.rate`, counted before parsing.
    pub gate: gate::SourceGate,
}

/// Messages waiting for outgoing connections that are being opened, so that a burst of
/// messages to one peer opens one connection.
#[derive(Debug, Default)]
pub struct Connector {
    pending: Mutex<HashMap<(Transport, SocketAddr), Vec<Bytes>>>,
}

impl Connector {
    /// Queues `payload`; true when a connection must be opened (first message).
    fn queue(&self, transport: Transport, remote: SocketAddr, payload: Bytes) -> bool {
        let mut p = self.pending.lock().expect("connector lock");
        match p.get_mut(&(transport, remote)) {
            Some(q) => {
                q.push(payload);
                false
            }
            None => {
                p.insert((transport, remote), vec![payload]);
                true
            }
        }
    }

    /// The connection is up as flow `id`: send what waited for it.
    pub fn flush_pending(
        &self,
        shared: &Shared,
        transport: Transport,
        remote: SocketAddr,
        id: FlowId,
    ) {
        let queued = self
            .pending
            .lock()
            .expect("connector lock")
            .remove(&(transport, remote));
        for payload in queued.into_iter().flatten() {
            if let Err(e) = shared.flows.send(id, payload) {
                tracing::debug!(flow = id, "queued message not sent: {e}");
            }
        }
    }

    /// The connection failed: forget what waited for it.
    pub fn drop_pending(&self, transport: Transport, remote: SocketAddr) {
        self.pending
            .lock()
            .expect("connector lock")
            .remove(&(transport, remote));
    }
}

/// Sends what the core produced. Returns the target when it is already known to be
/// unreachable (the caller tells the core).
pub fn dispatch(shared: &Arc<Shared>, t: Transmit) -> Option<Target> {
    match t.target {
        Target::Flow(id) => match shared.flows.send(id, t.payload) {
            Ok(()) => None,
            Err(SendError::NoFlow) => Some(t.target),
            Err(SendError::Full) => {
                tracing::debug!(flow = id, "send queue full; message dropped");
                shared.metrics.sip_send_queue_full();
                None
            }
        },
        Target::Udp { local, remote } => {
            let Some(socket) = shared.udp.get(&local) else {
                return Some(t.target);
            };
            match socket.try_send_to(&t.payload, remote) {
                Ok(_) => shared.metrics.sip_out(),
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
        Target::Connect { transport, remote } => {
            if let Some(id) = shared.flows.find(transport, remote)
                && shared.flows.send(id, t.payload.clone()).is_ok()
            {
                return None;
            }
            if shared.connector.queue(transport, remote, t.payload) {
                tokio::spawn(tcp::connect(shared.clone(), transport, remote));
            }
            None
        }
    }
}
