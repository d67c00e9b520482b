//! The tokio shell: listeners, connections, flows, datagrams. Sockets live here and
//! nowhere in `sip/` or `core/`.

pub(crate) mod admission;
pub(crate) mod gate;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;
pub(crate) mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::NonceKey;
use crate::config::{HttpConfig, WebSocketConfig};
use crate::driver::CoreCell;
use crate::driver::flow::FlowTable;
use crate::metrics::Metrics;

/// Messages a flow writes in a row before reading gets a turn (WebSocket and TCP/TLS
/// flows).
const WRITES_IN_A_ROW: u32 = 16;

/// SIP transport limits.
#[derive(Debug, Clone)]
pub(crate) struct SipLimits {
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
pub(crate) struct Shared {
    /// HTTP limits.
    pub http: HttpConfig,
    /// WebSocket settings.
    pub websocket: WebSocketConfig,
    /// SIP limits.
    pub sip: SipLimits,
    /// `Server` header.
    pub server_header: String,
    /// Live flows (the same table as the core's outlet).
    pub flows: Arc<FlowTable>,
    /// The SIP core, its queue and its outlet.
    pub core: Arc<CoreCell>,
    /// Digest nonces.
    pub nonce: NonceKey,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// How long shutdown waits for close handshakes.
    pub grace: Duration,
    /// Connection counts and caps.
    pub admission: Arc<admission::Admission>,
    /// `limits.rate`, counted before parsing.
    pub gate: gate::SourceGate,
    /// The TLS connections the server opens: its rustls configuration.
    pub tls_client: Arc<rustls::ClientConfig>,
    /// The names TLS targets were resolved from (their certificates must match).
    pub dns: Arc<crate::dns::Dns>,
    /// Drain mode: new connections are closed at accept.
    pub drain: Arc<crate::drain::Drain>,
}
