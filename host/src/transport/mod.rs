//! The tokio shell: listeners, connections, flows. Sockets live here and nowhere in
//! `sip/` or `core/`.

pub mod flow;
pub mod tls;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::admin::metrics::Metrics;
use crate::config::{HttpConfig, WebSocketConfig};
use crate::core::Input;
use crate::core::auth::NonceKey;
pub use flow::{FlowGuard, FlowInfo, FlowTable, SendError};

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    /// HTTP limits.
    pub http: HttpConfig,
    /// WebSocket settings.
    pub websocket: WebSocketConfig,
    /// `Server` header.
    pub server_header: String,
    /// Live flows.
    pub flows: Arc<FlowTable>,
    /// The core's inbox.
    pub core_tx: mpsc::Sender<Input>,
    /// Digest nonces.
    pub nonce: NonceKey,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// How long shutdown waits for close handshakes.
    pub grace: Duration,
}
