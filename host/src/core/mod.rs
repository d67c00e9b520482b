//! The SIP core, sans-IO: messages and time in, messages to send and events out.
//!
//! The driver (`crate::driver`) calls [`Core::handle`] for every input and
//! [`Core::handle_timeout`] when [`Core::poll_timeout`] is due, and after each call
//! drains [`Core::poll_transmit`] and [`Core::poll_event`] until they return `None`.
//! Nothing here touches a socket or reads a clock.
//!
//! It is a stateful proxy (RFC 3261 section 16) with a registrar (section 10):
//! transactions with their timers, location lookup with parallel forking, Record-Route
//! with flow tokens (RFC 5626) so in-dialog requests reach browser connections,
//! CANCEL, best-response selection, loop detection.

pub mod cluster;
pub mod flowtoken;
mod forking;
pub mod gateways;
pub mod gruu;
pub mod identity;
pub mod limits;
pub mod location;
mod media;
pub mod myself;
pub mod operate;
pub mod peers;
mod proxy;
pub mod registrar;
pub mod resolve;
pub(crate) mod sharded;
pub mod transaction;
pub mod worst;

use std::collections::VecDeque;

// Seeded per process (keys come from the network), faster than SipHash.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use self::flowtoken::FlowTokens;
use self::forking::ProxyCtx;
use self::location::{Binding, Location};
pub use self::myself::Myself;
use self::registrar::RegistrarConfig;
use self::transaction::{ClientTx, ServerKey, ServerTx, TimerConfig, TimerRef, Timers, TxTable};
use crate::sip::headers::{HeaderName, Headers, first_value, params_of};
use crate::sip::message::{Essentials, Message, Method, Request, Response, reason_phrase};
use crate::sip::typed::{Via, ViaRef};
use crate::sip::uri::{HostRef, V4Text};

/// Identifies a flow: one connection (WS, WSS, TCP, TLS).
pub type FlowId = u64;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket.
    Ws,
    /// Secure WebSocket.
    Wss,
}

impl Transport {
    /// The Via token (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// The URI `transport` parameter (RFC 7118: `ws` for both WebSocket kinds); `None`
    /// for UDP, the default.
    pub fn uri_param(self) -> Option<&'static str> {
        match self {
            Self::Udp => None,
            Self::Tcp => Some("tcp"),
            Self::Tls => Some("tls"),
            Self::Ws | Self::Wss => Some("ws"),
        }
    }

    /// Reliable transports have no retransmissions.
    pub fn is_reliable(self) -> bool {
        self != Self::Udp
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Transport.
    pub transport: Transport,
    /// Our address it reached.
    pub local: SocketAddr,
    /// The real source address.
    pub remote: SocketAddr,
    /// The connection, for connection-oriented transports.
    pub flow: Option<FlowId>,
}

impl Source {
    /// Where responses to it go.
    pub fn reply_target(&self) -> Target {
        match self.flow {
            Some(id) => Target::Flow(id),
            None => Target::Udp {
                local: self.local,
                remote: self.remote,
            },
        }
    }
}

/// Where a message is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// On an existing connection.
    Flow(FlowId),
    /// A datagram from our listener `local` to `remote`.
    Udp {
        /// Our UDP listener.
        local: SocketAddr,
        /// Destination.
        remote: SocketAddr,
    },
    /// Over a TCP or TLS connection to `remote`: reuse one or open one.
    Connect {
        /// TCP or TLS.
        transport: Transport,
        /// Destination.
        remote: SocketAddr,
        /// Over TLS, the name the peer's certificate must prove, as the shell's key
        /// for it ([`resolve::ResolvedTarget::name`]); 0: the address itself (a URI
        /// that gave one), and always 0 over TCP.
        name: u64,
    },
}

impl Target {
    /// The peer it names, for the operator: `udp:IP:PORT`, `flow:ID`, `tls:IP:PORT`.
    pub fn describe(&self) -> String {
        match self {
            Self::Flow(f) => format!("flow:{f}"),
            Self::Udp { remote, .. } => format!("udp:{remote}"),
            Self::Connect {
                transport, remote, ..
            } => format!("{}:{remote}", transport.via_token().to_ascii_lowercase()),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub target: Target,
    /// The serialized message.
    pub payload: Bytes,
}

/// A parsed message and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Source.
    pub source: Source,
    /// The message.
    pub message: Message,
    /// The identity its flow proved, when its listener enforces it
    /// ([`identity::Identity`]); `None` on every other flow.
    pub identity: Option<Arc<identity::Identity>>,
}

impl Incoming {
    /// A message from a flow with no enforced identity.
    pub fn new(source: Source, message: Message) -> Self {
        Self {
            source,
            message,
            identity: None,
        }
    }
}

/// Inputs of the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A message arrived.
    Message(Box<Incoming>),
    /// A connection closed (exactly once per flow).
    FlowClosed(FlowId),
    /// A message to this target could not be sent (connection refused, flow gone).
    SendFailed(Target),
    /// The routing plugin's decision on request `id`, which the driver left for later
    /// ([`Core::route_later`]).
    Routed {
        /// The query's id ([`RouteQuery::id`]).
        id: u64,
        /// What to do.
        decision: RouteDecision,
    },
    /// What came of a media request ([`Core::poll_media`]).
    Media {
        /// The request's id ([`crate::media::MediaRequest::id`]).
        id: u64,
        /// The engine's SDP, or why there is none.
        outcome: crate::media::MediaOutcome,
    },
    /// The media engines' weights, 0 for those down ([`Core::set_media_engines`]).
    MediaEngines(Vec<u32>),
    /// The shared store's answer to an ask of [`Core::poll_cluster`].
    Cluster {
        /// The ask's id ([`cluster::ClusterRequest::id`]).
        id: u64,
        /// The answer.
        answer: cluster::ClusterAnswer,
    },
    /// Another node of the cluster replaced or removed a binding of this node.
    ClusterEvicted {
        /// Its address-of-record.
        aor: String,
        /// Its store key ([`cluster::store_key`]).
        key: String,
        /// The Call-ID of the registration it overwrote.
        call_id: String,
        /// Its CSeq.
        cseq: u32,
    },
    /// The shared store lost its data: this node's bindings are written again (those
    /// of the AoRs listed, or all).
    ClusterRepublish(Option<Vec<String>>),
    /// What the shared store has of an AoR this node holds bindings of, read after
    /// its eviction notices may have been missed: the bindings another node took
    /// over are dropped here, those the store lost are written again.
    ClusterHeld {
        /// The address-of-record.
        aor: String,
        /// The AoR's version when read.
        version: u64,
        /// Store keys ([`cluster::store_key`]) of the bindings the store has as this
        /// node's (this epoch).
        ours: Vec<String>,
        /// Those it has as another node's (or another epoch's).
        others: Vec<String>,
    },
    /// What a name the core asked for resolved to ([`Core::poll_resolve`]).
    Resolved {
        /// The request's id ([`resolve::ResolveRequest::id`]).
        id: u64,
        /// Its targets in order, or why there are none.
        outcome: resolve::ResolveOutcome,
    },
}

/// How much state the core holds ([`Core::stats`]): gauges of the admin API, and what
/// tests check is released once traffic stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Server transactions: requests received and not yet forgotten (RFC 3261 17.2,
    /// including the wait states that absorb retransmissions).
    pub server_transactions: usize,
    /// Client transactions: requests sent and not yet forgotten (RFC 3261 17.1).
    pub client_transactions: usize,
    /// Requests being proxied: response contexts (RFC 3261 16.7) still open.
    pub proxied: usize,
    /// Requests waiting for the routing plugin's decision.
    pub routing: usize,
    /// Messages waiting for a media engine's SDP.
    pub media_waiting: usize,
    /// Requests waiting for the cluster's shared store.
    pub cluster_waiting: usize,
    /// Timers armed: transaction timers, and the registration expiry sweep while
    /// there are bindings.
    pub timers: usize,
    /// Registered contacts.
    pub bindings: usize,
    /// Addresses of record with at least one binding.
    pub aors: usize,
    /// Dialogs in flight ([`operate`]).
    pub dialogs: usize,
    /// Requests refused for what they tried to make the server do (counters).
    pub refused: Refused,
}

/// Requests refused for what they tried to make the server do, counted since start
/// (each also gets its answer: a 403 with a Warning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// In-dialog requests whose Route entries of ours were forged or replayed: another
    /// Call-ID, another dialog tag, or an entry edited.
    pub forged_route: u64,
    /// REGISTERs with a Path from a peer that is not trusted.
    pub untrusted_path: u64,
    /// Requests from untrusted clients whose Route or Request-URI named a next hop
    /// elsewhere (no relay for them).
    pub relay: u64,
    /// REGISTERs refused because the registrar holds `sip.max-bindings` already.
    pub registrar_full: u64,
    /// REGISTERs for an address-of-record with no bindings refused with 503 because
    /// the core was behind ([`BUSY_BACKLOG`]).
    pub overload: u64,
    /// Answers cut to twice their request's size for a UDP peer that had not proven
    /// it receives what we send (not refused: counted here with the rest).
    pub trimmed_answer: u64,
    /// New requests refused with 403 on a flow whose listener enforces its identity:
    /// a REGISTER for another address-of-record, or a From of another user.
    pub identity: u64,
    /// New requests refused with 503 because `limits.max-transactions` were in flight.
    pub transactions_full: u64,
}

/// Why a request was refused: its counter in [`Refused`] and its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`Refused::forged_route`].
    ForgedRoute,
    /// [`Refused::untrusted_path`].
    UntrustedPath,
    /// [`Refused::relay`].
    Relay,
    /// [`Refused::registrar_full`].
    RegistrarFull,
    /// [`Refused::transactions_full`].
    TransactionsFull,
    /// [`Refused::overload`].
    Overload,
    /// [`Refused::identity`].
    Identity,
}

impl Refusal {
    /// The `reason` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForgedRoute => "forged-route",
            Self::UntrustedPath => "untrusted-path",
            Self::Relay => "relay",
            Self::RegistrarFull => "registrar-full",
            Self::TransactionsFull => "transactions-full",
            Self::Overload => "overload",
            Self::Identity => "identity",
        }
    }

    /// What the log line says.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ForgedRoute => {
                "in-dialog request with a Route entry not signed for its dialog refused (403)"
            }
            Self::UntrustedPath => {
                "REGISTER with a Path from a peer not in sip.trusted-peers refused (403)"
            }
            Self::Relay => {
                "request for a next hop elsewhere from an untrusted client refused (403)"
            }
            Self::RegistrarFull => "new binding refused: sip.max-bindings reached (503)",
            Self::TransactionsFull => {
                "new request refused: limits.max-transactions in flight (503)"
            }
            Self::Overload => {
                "REGISTER for a new address-of-record refused: the SIP core is behind (503)"
            }
            Self::Identity => {
                "request for or from another user on a connection with an enforced identity refused (403)"
            }
        }
    }
}

/// What the routing plugin decided for a request (already validated by the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// The default registrar/proxy behaviour; for a new call, with the plugin's choice
    /// of its media, if it made one.
    Continue(Option<Box<crate::media::Choice>>),
    /// Answer with this final response.
    Reply {
        /// 200..=699.
        status: u16,
        /// Reason phrase (the standard one when `None`).
        reason: Option<String>,
        /// Extra headers.
        headers: Vec<(HeaderName, String)>,
    },
    /// Forward statefully to this URI, which becomes the Request-URI (with the plugin's
    /// choice of the call's media, if any).
    Relay(crate::sip::uri::Uri, Option<Box<crate::media::Choice>>),
}

impl RouteDecision {
    /// The decision with the plugin's choice of the call's media (kept by `Continue`
    /// and `Relay` only: an answer made here has no media).
    #[must_use]
    pub fn with_media(self, choice: Option<crate::media::Choice>) -> Self {
        match self {
            Self::Continue(_) => Self::Continue(choice.map(Box::new)),
            Self::Relay(uri, _) => Self::Relay(uri, choice.map(Box::new)),
            reply @ Self::Reply { .. } => reply,
        }
    }
}

/// A new out-of-dialog request for the routing plugin ([`Core::route_query`]), once
/// routing is on ([`Core::set_routing`]): the id its decision carries, where it came
/// from, the request (with `received`/`rport` stamped).
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// The id [`Core::route`], [`Core::route_later`] and [`Input::Routed`] take.
    pub id: u64,
    /// Where it came from.
    pub source: &'a Source,
    /// The request.
    pub request: &'a Request,
}

/// A request waiting for its routing decision, not yet in a transaction.
#[derive(Debug)]
struct Query {
    id: u64,
    key: ServerKey,
    source: Source,
    req: Request,
}

/// A flow that carried SIP closed.
#[derive(Debug, Clone)]
pub struct ClosedFlow {
    /// Its id.
    pub flow: FlowId,
    /// Its transport.
    pub transport: Transport,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// AoRs that lost bindings with it, sorted, without duplicates.
    pub aors: Vec<String>,
}

/// Things the core tells the world besides messages.
#[derive(Debug, Clone)]
pub enum Event {
    /// A binding was added or refreshed.
    BindingSaved(Binding),
    /// A binding went away (unregistered, expired, or its flow closed).
    BindingRemoved(Binding),
    /// A flow that carried SIP closed (exactly once per flow), after its bindings were
    /// removed.
    FlowClosed(ClosedFlow),
    /// A request was refused (counted in [`CoreStats::refused`]); emitted at most once
    /// a minute per source and reason, for the log.
    Refused {
        /// Why.
        why: Refusal,
        /// Who sent it.
        source: SocketAddr,
        /// The request's Call-ID.
        call_id: String,
    },
    /// A member of a gateway set went down or came back up (its probes).
    GatewayState(gateways::GatewayChange),
    /// A media engine could not rewrite a call's SDP (or none was up): the call failed
    /// (500, 488) or went on with its SDP as it came.
    MediaFailed {
        /// The call.
        call_id: String,
        /// `offer` or `answer`.
        command: &'static str,
        /// What the engine said, or that it did not answer.
        why: String,
    },
}

/// A listener the core can send from and names itself by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListener {
    /// Transport.
    pub transport: Transport,
    /// Bound address.
    pub addr: SocketAddr,
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our names and addresses.
    pub myself: Arc<Myself>,
    /// Our SIP listeners.
    pub listeners: Vec<SipListener>,
    /// `Server` / `User-Agent` header value.
    pub server_header: String,
    /// Secret for tags, tokens and GRUUs.
    pub secret: [u8; 32],
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Registrar settings.
    pub registrar: RegistrarConfig,
    /// Forward requests for other domains (otherwise 403).
    pub relay: bool,
    /// Peers whose headers may steer requests (Path, Route): edge proxies, gateways.
    pub trusted: peers::TrustedPeers,
    /// Per-source rate and transactions in flight.
    pub limits: CoreLimits,
    /// The media relay: which calls, with which flags.
    pub media: crate::media::Settings,
    /// Gateway sets routing plugins relay to by name (`relay("gw:NAME")`).
    pub gateways: Vec<gateways::GatewaySet>,
    /// Several nodes sharing one location service (`[cluster]`).
    pub cluster: Option<cluster::ClusterSettings>,
}

/// The core's share of `[limits]` (`limits.rate` is counted in the shell, before
/// parsing: `transport::gate`).
#[derive(Debug, Clone)]
pub struct CoreLimits {
    /// Most server transactions in flight; past it new requests get 503.
    pub max_transactions: usize,
}

impl Default for CoreLimits {
    /// `limits.max-transactions`' default.
    fn default() -> Self {
        Self {
            max_transactions: 100_000,
        }
    }
}

/// An HMAC keyed with the core's secret (never printed).
#[derive(Clone)]
struct Keyed(Hmac<Sha256>);

impl fmt::Debug for Keyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyed(..)")
    }
}

/// How long a user whose bindings are gone stays "known" (480 instead of 404).
const KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Most AoRs remembered as recently registered ([`KNOWN_FOR`]).
const KNOWN_MAX: usize = 65_536;

/// How often [`Core::housekeeping`] runs at most.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Option tags we support.
pub const SUPPORTED: &[&str] = &["outbound", "path", "gruu"];
/// Methods we route.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, PRACK, UPDATE, SUBSCRIBE, NOTIFY, REFER, PUBLISH";

/// The SIP core.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    /// HMAC-SHA256 keyed with the secret once; cloned per MAC (keying costs two
    /// SHA-256 blocks).
    mac: Keyed,
    tokens: FlowTokens,
    gruus: gruu::TempGruus,
    /// Branch prefix of our Vias: tells our own Vias from another proxy's.
    branch_prefix: String,
    /// Keys the hash that makes To tags (see [`Core::make_to_tag`]).
    tag_keys: foldhash::quality::FixedState,
    location: Location,
    /// The wall-clock time as an HTTP-date, for the registrar's `Date` (RFC 3261 10.3
    /// step 8; phones set their clocks from it). Set by the driver ([`Core::set_date`]);
    /// the core reads no clock. Empty until then.
    date: String,
    /// When each AoR last had a binding: within [`KNOWN_FOR`] of that, a request for
    /// it gets 480 (temporarily unavailable) rather than 404. An AoR enters when it
    /// refreshes a registration, when its client removes a binding (unregisters, or
    /// its connection closes) and when restored from the store at start; a
    /// registration left to expire without a refresh, which is what a REGISTER flood
    /// leaves, takes no place. Pruned as it ages; at most [`KNOWN_MAX`].
    known_aors: sharded::Sharded<String, Instant>,
    last_prune: Option<Instant>,
    /// Flows that carried SIP: transport, our end, the peer's end.
    flows: HashMap<FlowId, (Transport, SocketAddr, SocketAddr)>,
    /// Server transactions waiting for the routing plugin's decision.
    routing: HashSet<u64>,
    /// Whether new out-of-dialog requests go to the routing plugin first.
    routed: bool,
    /// The request whose routing decision is asked for now ([`Core::route_query`]).
    query: Option<Query>,
    servers: TxTable<ServerTx>,
    clients: TxTable<ClientTx>,
    /// Client transactions of CANCELs we sent (their responses are absorbed).
    cancels: HashSet<u64>,
    ctxs: sharded::Sharded<u64, ProxyCtx>,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_id: u64,
    refused: Refused,
    /// UDP addresses that have shown they receive what we send (they answered a
    /// request of ours, or refreshed a registration by its Call-ID), and when: only
    /// they get answers more than twice their request's size (no amplification toward
    /// a spoofed source). Bounded by [`UDP_VERIFIED_MAX`], entries age out after
    /// [`UDP_VERIFIED_FOR`].
    udp_verified: HashMap<SocketAddr, Instant>,
    /// When [`Core::udp_verified`] was last swept of aged entries.
    udp_verified_swept: Option<Instant>,
    /// Refusals' log lines, once a minute per source.
    log_gate: limits::LogGate,
    /// Inputs waiting for the core when the current batch began ([`Core::set_backlog`]).
    backlog: usize,
    /// The media relay's state.
    media: media::MediaCore,
    /// Names to resolve for the shell ([`Core::poll_resolve`]).
    resolves: VecDeque<resolve::ResolveRequest>,
    /// What waits for each of them.
    resolving: HashMap<u64, forking::Awaiting>,
    /// How many of them are ACKs ([`forking::MAX_ACKS_RESOLVING`]).
    acks_resolving: usize,
    /// The gateway sets and their members' health.
    gateways: gateways::Gateways,
    /// Probes in flight: client transaction → (set, member).
    probes: HashMap<u64, (usize, usize)>,
    /// Members with a probe in flight (sent, or its name being resolved).
    probing: HashSet<(usize, usize)>,
    /// Requests waiting for the cluster's shared store, and its asks.
    cluster: cluster::ClusterState,
    /// Final answers given since the driver last took them ([`Core::take_finals`]).
    finals: Vec<operate::Final>,
    /// Dialogs in flight ([`operate`]).
    dialogs: operate::Dialogs,
    /// Drain mode: new dialogs are refused ([`Core::set_draining`]).
    draining: bool,
    /// The flow of the response being handled, for the dialog its 2xx confirms.
    answering_flow: Option<FlowId>,
}

/// Most UDP addresses remembered as reachable ([`Core::udp_verified`]); past it new
/// ones are not remembered until old ones age out (they get bounded answers meanwhile).
const UDP_VERIFIED_MAX: usize = 65_536;

/// Retry-After (seconds) on the 503 for a request refused because
/// `limits.max-transactions` are in flight: about as long as most of them take to end.
const TRANSACTIONS_FULL_RETRY: u32 = 5;

/// Inputs waiting for the core past which it is behind (about 20–50 ms of its work):
/// a REGISTER for an address-of-record with no bindings then gets 503 with
/// `Retry-After: 10` (refreshes, removals and everything else go on). The UDP shell
/// sheds newcomers' datagrams past the same mark.
pub const BUSY_BACKLOG: usize = 1024;

/// `Retry-After` of a registration refused while the core is behind.
const OVERLOAD_RETRY: u32 = 10;

/// How long a UDP address stays known as reachable.
const UDP_VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

impl Core {
    /// A new core.
    pub fn new(cfg: CoreConfig) -> Self {
        let mac = Keyed(Hmac::<Sha256>::new_from_slice(&cfg.secret).expect("any key length"));
        let mut m = mac.0.clone();
        m.update(b"branch-prefix");
        let h = m.finalize().into_bytes();
        let branch_prefix = format!("z9hG4bKsw{:02x}{:02x}", h[0], h[1]);
        let mut m = mac.0.clone();
        m.update(b"to-tag");
        let seed = m.finalize().into_bytes();
        let tag_keys = foldhash::quality::FixedState::with_seed(u64::from_be_bytes(
            seed[..8].try_into().expect("eight bytes"),
        ));
        let media = media::MediaCore::new(cfg.media.clone());
        let gateways = gateways::Gateways::new(
            cfg.gateways.clone(),
            u64::from_le_bytes(cfg.secret[8..16].try_into().expect("8 bytes")),
        );
        Self {
            mac,
            tag_keys,
            tokens: FlowTokens::new(cfg.secret),
            gruus: gruu::TempGruus::new(&cfg.secret),
            cfg,
            branch_prefix,
            location: Location::new(),
            date: String::new(),
            known_aors: sharded::Sharded::default(),
            last_prune: None,
            flows: HashMap::new(),
            routing: HashSet::new(),
            routed: false,
            query: None,
            servers: TxTable::default(),
            clients: TxTable::default(),
            cancels: HashSet::new(),
            ctxs: sharded::Sharded::default(),
            timers: Timers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            refused: Refused::default(),
            udp_verified: HashMap::new(),
            udp_verified_swept: None,
            log_gate: limits::LogGate::new(),
            backlog: 0,
            media,
            resolves: VecDeque::new(),
            resolving: HashMap::new(),
            acks_resolving: 0,
            gateways,
            probes: HashMap::new(),
            probing: HashSet::new(),
            cluster: cluster::ClusterState::default(),
            finals: Vec::new(),
            dialogs: operate::Dialogs::default(),
            draining: false,
            answering_flow: None,
        }
    }

    /// A fresh HMAC-SHA256 under the secret.
    fn hmac(&self) -> Hmac<Sha256> {
        self.mac.0.clone()
    }

    /// How many inputs wait for the core now (the shell says so before each batch).
    /// Past [`BUSY_BACKLOG`] the core is behind, and sheds the work it can refuse
    /// most cheaply and with least harm: registrations of new addresses-of-record.
    pub fn set_backlog(&mut self, waiting: usize) {
        self.backlog = waiting;
    }

    /// The current wall-clock time as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`),
    /// put in the `Date` of successful registrations. The driver calls this when the
    /// second changes.
    pub fn set_date(&mut self, http_date: String) {
        self.date = http_date;
    }

    /// Turns routing by plugin on: each new out-of-dialog request then waits for a
    /// decision. The core asks for it with [`Core::route_query`] after the input that
    /// brought the request; the driver answers at once with [`Core::route`], or says it
    /// will come later ([`Core::route_later`], then [`Input::Routed`]).
    pub fn set_routing(&mut self, on: bool) {
        self.routed = on;
    }

    /// The request waiting for its routing decision, if the last input brought one.
    /// Left unanswered until the next input (or timeout), it is waited for as with
    /// [`Core::route_later`].
    pub fn route_query(&self) -> Option<RouteQuery<'_>> {
        self.query.as_ref().map(|q| RouteQuery {
            id: q.id,
            source: &q.source,
            request: &q.req,
        })
    }

    /// The decision on the request of [`Core::route_query`], made now: the request
    /// goes on as it would have without waiting. A decision for another id is taken
    /// as [`Input::Routed`].
    pub fn route(&mut self, now: Instant, id: u64, decision: RouteDecision) {
        let Some(q) = self.query.take_if(|q| q.id == id) else {
            return self.on_routed(now, id, decision);
        };
        let Query {
            key,
            source,
            mut req,
            ..
        } = q;
        match self.route_decided(now, &source, &mut req, decision) {
            Ok(route) => self.take_route(now, source, key, req, route),
            Err(resp) => self.send(source.reply_target(), Bytes::from(resp.to_bytes())),
        }
    }

    /// The decision on the request of [`Core::route_query`] will come later, as
    /// [`Input::Routed`]: the request waits in a transaction, so retransmissions are
    /// absorbed (and an INVITE gets its 100).
    pub fn route_later(&mut self, now: Instant, id: u64) {
        if let Some(q) = self.query.take_if(|q| q.id == id) {
            self.wait_for_route(now, q);
        }
    }

    /// Puts a query no one answered in place into a transaction to wait.
    fn wait_for_route(&mut self, now: Instant, q: Query) {
        let Query {
            id,
            key,
            source,
            req,
        } = q;
        let trying = (req.method == Method::Invite).then(|| self.make_response(&req, 100, &[]));
        self.servers
            .insert(id, ServerTx::new(id, key, req, source, now));
        if let Some(trying) = trying {
            self.respond(id, trying, now);
        }
        self.routing.insert(id);
    }

    /// Restores a binding (from persistent storage at start) and returns it as kept
    /// (with its new id). Bindings that expired meanwhile are skipped.
    pub fn restore_binding(&mut self, mut b: Binding, now: Instant) -> Option<Binding> {
        if b.expires_at <= now {
            return None;
        }
        b.id = self.location.next_id();
        // Stored by an older version, the AoR may not be in today's canonical form.
        if let Some(aor) = crate::sip::uri::Uri::parse(&b.aor)
            .ok()
            .and_then(|u| registrar::aor_of(&u))
        {
            b.aor = aor;
        }
        self.mark_known(&b.aor, now);
        self.location.upsert(b.clone());
        self.arm_expiry();
        Some(b)
    }

    /// The bindings of an AoR (for the control API and tests).
    pub fn bindings(&self, aor: &str) -> &[Binding] {
        self.location.lookup(aor)
    }

    /// Processes one input. Afterwards drain [`Core::poll_transmit`] and
    /// [`Core::poll_event`], and re-check [`Core::poll_timeout`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        if let Some(q) = self.query.take() {
            self.wait_for_route(now, q);
        }
        self.age_out_dialogs(now);
        match input {
            Input::Message(incoming) => {
                let Incoming {
                    source,
                    message,
                    identity,
                } = *incoming;
                if let Some(f) = source.flow {
                    self.flows
                        .insert(f, (source.transport, source.local, source.remote));
                }
                match message {
                    Message::Request(req) => self.on_request(now, source, req, identity),
                    Message::Response(resp) => {
                        self.answering_flow = source.flow;
                        self.on_response(now, &source, resp);
                        self.answering_flow = None;
                    }
                }
            }
            Input::FlowClosed(flow) => {
                let known = self.flows.remove(&flow);
                let mut aors = Vec::new();
                let gone = self.location.remove_flow(flow);
                self.forget_in_cluster(&gone);
                for b in gone {
                    self.mark_known(&b.aor, now);
                    aors.push(b.aor.clone());
                    self.events.push_back(Event::BindingRemoved(b));
                }
                if let Some((transport, local, remote)) = known {
                    aors.sort();
                    aors.dedup();
                    self.events.push_back(Event::FlowClosed(ClosedFlow {
                        flow,
                        transport,
                        local,
                        remote,
                        aors,
                    }));
                }
                self.dialog_flow_closed(flow);
                self.fail_target(now, Target::Flow(flow));
            }
            Input::SendFailed(target) => self.fail_target(now, target),
            Input::Routed { id, decision } => self.on_routed(now, id, decision),
            Input::Media { id, outcome } => self.on_media(now, id, outcome),
            Input::MediaEngines(weights) => self.set_media_engines(weights),
            Input::Resolved { id, outcome } => self.on_resolved(now, id, outcome),
            Input::Cluster { id, answer } => self.on_cluster(now, id, answer),
            Input::ClusterEvicted {
                aor,
                key,
                call_id,
                cseq,
            } => self.on_evicted(now, &aor, &key, &call_id, cseq),
            Input::ClusterRepublish(only) => self.republish(only.as_deref()),
            Input::ClusterHeld {
                aor,
                version,
                ours,
                others,
            } => self.on_held(now, &aor, version, &ours, &others),
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How much state the core holds now.
    #[must_use]
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            server_transactions: self.servers.len(),
            client_transactions: self.clients.len(),
            proxied: self.ctxs.len(),
            routing: self.routing.len(),
            media_waiting: self.media_waiting(),
            cluster_waiting: self.cluster_waiting(),
            timers: self.timers.armed(),
            bindings: self.location.len(),
            aors: self.location.aors(),
            dialogs: self.dialogs.len(),
            refused: self.refused,
        }
    }

    /// When [`Core::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(q) = self.query.take() {
            self.wait_for_route(now, q);
        }
        // Bounded: each pop removes an entry; re-arming only adds later deadlines.
        while let Some((_, r)) = self.timers.pop_due(now) {
            match r {
                TimerRef::Server(id) => self.server_timer(id, now),
                TimerRef::Client(id) => self.client_timer(id, now),
                TimerRef::Expiry => {
                    let gone = self.location.expire(now);
                    self.forget_in_cluster(&gone);
                    for b in gone {
                        self.touch_known(&b.aor, now);
                        self.events.push_back(Event::BindingRemoved(b));
                    }
                    self.arm_expiry();
                }
                TimerRef::Housekeeping => {}
                TimerRef::Probe(set) => self.probe_set(now, set),
            }
        }
        if self
            .last_prune
            .is_none_or(|p| now.saturating_duration_since(p) >= HOUSEKEEPING_EVERY)
        {
            self.housekeeping(now);
        }
    }

    /// At most once a minute: aged AoRs forgotten, and every table that a flood grew
    /// and that emptied again gives its spare capacity back (hash tables never shrink
    /// on their own). While some table is still large, again in a minute.
    fn housekeeping(&mut self, now: Instant) {
        use self::sharded::shrink_map;
        self.last_prune = Some(now);
        self.known_aors
            .retain(|_, t| now.saturating_duration_since(*t) < KNOWN_FOR);
        let mut large = self.location.shrink();
        large |= self.known_aors.shrink();
        large |= self.servers.shrink();
        large |= self.clients.shrink();
        large |= self.ctxs.shrink();
        large |= shrink_map(&mut self.flows);
        large |= self.shrink_cluster();
        large |= shrink_map(&mut self.udp_verified);
        large |= self.timers.shrink();
        if self.transmits.capacity() > sharded::SHRINK_FROM && self.transmits.is_empty() {
            self.transmits.shrink_to_fit();
        }
        if large {
            self.timers
                .arm(now + HOUSEKEEPING_EVERY, TimerRef::Housekeeping);
        }
    }

    /// Records that `aor` has (or just had) a binding, if it is remembered already
    /// ([`Core::mark_known`]).
    fn touch_known(&mut self, aor: &str, now: Instant) {
        if let Some(t) = self.known_aors.get_mut(aor) {
            *t = now;
        }
    }

    /// Remembers that `aor` has (or just had) a binding its client kept up.
    fn mark_known(&mut self, aor: &str, now: Instant) {
        let full = self.known_aors.len() >= KNOWN_MAX;
        match self.known_aors.get_mut(aor) {
            Some(t) => *t = now,
            // Bounded: past it an AoR that loses its last binding is not remembered
            // (its callers get 404 rather than 480), so a flood of AoRs that register
            // and go cannot hold memory for the whole day.
            None if full => {}
            None => {
                self.known_aors.insert(aor.to_string(), now);
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, target: Target, payload: Bytes) {
        self.transmits.push_back(Transmit { target, payload });
    }

    fn arm_expiry(&mut self) {
        if let Some(t) = self.location.next_expiry() {
            self.timers.arm(t, TimerRef::Expiry);
        }
    }

    /// Counts a refusal of a request from `source`, and lets its log line out at most
    /// once a minute per source and reason.
    fn refuse(&mut self, why: Refusal, source: SocketAddr, req: &Request, now: Instant) {
        let r = &mut self.refused;
        *match why {
            Refusal::ForgedRoute => &mut r.forged_route,
            Refusal::UntrustedPath => &mut r.untrusted_path,
            Refusal::Relay => &mut r.relay,
            Refusal::RegistrarFull => &mut r.registrar_full,
            Refusal::TransactionsFull => &mut r.transactions_full,
            Refusal::Overload => &mut r.overload,
            Refusal::Identity => &mut r.identity,
        } += 1;
        if self.log_gate.allow(why.as_str(), source.ip(), now) {
            self.events.push_back(Event::Refused {
                why,
                source,
                call_id: req.call_id().unwrap_or("").to_string(),
            });
        }
    }

    /// Whether a new server transaction may start; if not, the request is answered 503
    /// with Retry-After (stateless: nothing is kept for it) and counted.
    fn room_for_transaction(&mut self, now: Instant, source: &Source, req: &Request) -> bool {
        if self.servers.len() < self.cfg.limits.max_transactions {
            return true;
        }
        self.refuse(Refusal::TransactionsFull, source.remote, req, now);
        let retry = (HeaderName::RetryAfter, TRANSACTIONS_FULL_RETRY.to_string());
        let bytes = self.response_bytes(req, 503, None, &[retry]);
        self.record_final(operate::method_label(&req.method), 503, Duration::ZERO);
        self.send(source.reply_target(), bytes);
        false
    }

    // ------------------------------------------------------------ server side

    fn on_request(
        &mut self,
        now: Instant,
        source: Source,
        mut req: Request,
        identity: Option<Arc<identity::Identity>>,
    ) {
        stamp_received(&mut req, source.remote);
        if req.method == Method::Ack
            && let Some(id) = &identity
            && !self.in_our_dialog(&req)
            && id.check(&req, &self.cfg.myself).is_err()
        {
            // An ACK gets no answer: one that is not this user's goes nowhere.
            self.refuse(Refusal::Identity, source.remote, &req, now);
            return;
        }
        match req.method {
            Method::Ack => return self.on_ack(now, source, req),
            Method::Cancel => return self.on_cancel(now, source, req),
            _ => {}
        }
        // No parsable top Via: no key either, and nowhere to answer.
        let Some(key) = ServerKey::of(&req, &req.method) else {
            return;
        };
        if let Some(id) = self.servers.find(&key) {
            let st = self.servers.get(id).expect("indexed");
            if let Some(bytes) = st.on_retransmission() {
                let target = st.source.reply_target();
                self.send(target, bytes);
            }
            return;
        }
        if let Some(id) = identity
            && !self.in_our_dialog(&req)
            && let Err(mismatch) = id.check(&req, &self.cfg.myself)
        {
            // Before the routing plugin: the flow's identity is the host's to hold.
            self.refuse(Refusal::Identity, source.remote, &req, now);
            let warning = proxy::warning(mismatch.describe());
            let bytes = self.response_bytes(&req, 403, None, &[warning]);
            self.record_final(operate::method_label(&req.method), 403, Duration::ZERO);
            self.send(source.reply_target(), bytes);
            return;
        }
        if self.refused_while_draining(&req) {
            // Drain mode: no new dialogs here; the client tries another server.
            let retry = (HeaderName::RetryAfter, operate::DRAIN_RETRY.to_string());
            let bytes = self.response_bytes(&req, 503, Some("Draining"), &[retry]);
            self.record_final(operate::method_label(&req.method), 503, Duration::ZERO);
            self.send(source.reply_target(), bytes);
            return;
        }
        if self.routed && !self.in_our_dialog(&req) && !self.sent_by_cluster_node(&source, &req) {
            // Out of dialog: the routing plugin decides first (unless the transaction
            // could not be kept anyway: then the plugin is not asked).
            if !self.room_for_transaction(now, &source, &req) {
                return;
            }
            let id = self.new_id();
            self.query = Some(Query {
                id,
                key,
                source,
                req,
            });
            return;
        }
        let route = self.decide(now, &source, &mut req);
        self.take_route(now, source, key, req, route);
    }

    /// Acts on where routing sent a new request.
    fn take_route(
        &mut self,
        now: Instant,
        source: Source,
        key: ServerKey,
        req: Request,
        route: proxy::Route,
    ) {
        match route {
            // What ends here is answered statelessly, as a registrar or an `sl` reply:
            // a retransmission gets the same answer again, and no state is kept for
            // the 32 s a UDP transaction would otherwise linger.
            proxy::Route::Answer {
                status,
                reason,
                headers,
            } => {
                if status == 430 {
                    // A BYE whose signed route held but whose other end's flow is gone
                    // (430): its dialog is over all the same. Any other answer here
                    // (a refusal, a loop, the plugin's) ends nothing.
                    self.dialog_bye(&req);
                }
                let bytes = self.response_bytes(&req, status, reason.as_deref(), &headers);
                self.record_final(operate::method_label(&req.method), status, Duration::ZERO);
                self.send(source.reply_target(), bytes);
            }
            proxy::Route::Forward(forwarding) => {
                if !self.room_for_transaction(now, &source, &req) {
                    return;
                }
                // A BYE on its way ends its dialog (RFC 3261 15.1.1: the session is
                // over once the BYE is sent); one refused (a forged route) ends none.
                self.dialog_bye(&req);
                let id = self.new_id();
                self.servers
                    .insert(id, ServerTx::new(id, key, req.clone(), source, now));
                if req.method == Method::Invite {
                    // A stateful proxy answers INVITE with 100 at once (RFC 3261 16.2).
                    let trying = self.make_response(&req, 100, &[]);
                    self.respond(id, trying, now);
                }
                self.start_ctx(now, id, source, req, forwarding);
            }
            proxy::Route::Cluster(wait) => {
                if !self.room_for_transaction(now, &source, &req) {
                    return;
                }
                let id = self.new_id();
                let trying =
                    (req.method == Method::Invite).then(|| self.make_response(&req, 100, &[]));
                self.servers
                    .insert(id, ServerTx::new(id, key, req, source, now));
                if let Some(trying) = trying {
                    self.respond(id, trying, now);
                }
                self.wait_for_cluster(now, id, wait);
            }
        }
    }

    /// Applies the routing plugin's decision on server transaction `id`.
    fn on_routed(&mut self, now: Instant, id: u64, decision: RouteDecision) {
        if !self.routing.remove(&id) {
            return;
        }
        let Some(st) = self.servers.get(id) else {
            return;
        };
        if st.last.as_ref().is_some_and(|(status, _)| *status >= 200) {
            // Answered meanwhile (a CANCEL): nothing left to decide.
            return;
        }
        let (source, mut req) = (st.source, st.request.clone());
        match self.route_decided(now, &source, &mut req, decision) {
            Ok(route) => self.route_waiting(now, id, source, req, route),
            Err(resp) => self.answer_routed(id, resp, now),
        }
    }

    /// Acts on where routing sent a request that waited in server transaction `id`
    /// (for the routing plugin, or for the cluster's store).
    fn route_waiting(
        &mut self,
        now: Instant,
        id: u64,
        source: Source,
        req: Request,
        route: proxy::Route,
    ) {
        match route {
            proxy::Route::Answer {
                status,
                reason,
                headers,
            } => {
                let mut resp = self.make_response(&req, status, &headers);
                if let Some(reason) = reason {
                    resp.reason = reason;
                }
                self.answer_routed(id, resp, now);
            }
            proxy::Route::Forward(forwarding) => self.start_ctx(now, id, source, req, forwarding),
            proxy::Route::Cluster(wait) => self.wait_for_cluster(now, id, wait),
        }
    }

    /// Where the routing plugin's decision sends `req`, or the reply it asked for.
    fn route_decided(
        &mut self,
        now: Instant,
        source: &Source,
        req: &mut Request,
        decision: RouteDecision,
    ) -> Result<proxy::Route, Response> {
        match decision {
            RouteDecision::Continue(media) => Ok(self.decide(now, source, req).with_media(media)),
            RouteDecision::Relay(target, media) => {
                Ok(self.relay_to(now, source, req, target).with_media(media))
            }
            RouteDecision::Reply {
                status,
                reason,
                headers,
            } => {
                let mut resp = self.make_response(req, status, &headers);
                if let Some(reason) = reason {
                    resp.reason = reason;
                }
                Err(resp)
            }
        }
    }

    /// Answers a routed request here. A non-INVITE is then answered as without a
    /// router, statelessly: its transaction only lived to absorb retransmissions while
    /// the plugin decided, and keeping it for timer J would hold every REGISTER for
    /// 32 s. An INVITE keeps its transaction (it sent 100; it absorbs the ACK).
    fn answer_routed(&mut self, id: u64, resp: Response, now: Instant) {
        let invite = self
            .servers
            .get(id)
            .is_some_and(|st| st.request.method == Method::Invite);
        if invite {
            return self.respond(id, resp, now);
        }
        if let Some(st) = self.servers.get(id) {
            let target = st.source.reply_target();
            let (method, elapsed) = (
                operate::method_label(&st.request.method),
                now.saturating_duration_since(st.started),
            );
            self.send(target, Bytes::from(resp.to_bytes()));
            self.record_final(method, resp.status, elapsed);
        }
        self.remove_server(id);
    }

    fn on_ack(&mut self, now: Instant, source: Source, req: Request) {
        if let Some(key) = ServerKey::of(&req, &Method::Invite)
            && let Some(id) = self.servers.find(&key)
        {
            let t = self.cfg.timers;
            let st = self.servers.get_mut(id).expect("indexed");
            if st.on_ack(now, &t) {
                self.arm_server(id);
                return;
            }
        }
        // The ACK for a non-2xx answered here without a transaction (a challenge or a
        // refusal, as `sl` does): it ends here (RFC 3261 17.2.1), the callee never saw
        // that INVITE.
        if self.acks_own_answer(&req) {
            return;
        }
        // An ACK for a 2xx is end to end: route it statelessly.
        self.forward_stateless(now, source, req);
    }

    /// Whether `ack`'s To tag is the one this server put in a final answer to its
    /// INVITE (same Call-ID, From, CSeq number and top Via: [`Core::make_to_tag`]).
    fn acks_own_answer(&self, ack: &Request) -> bool {
        ack.tag_of_to()
            .is_some_and(|tag| tag == self.make_to_tag(ack))
    }

    fn on_cancel(&mut self, now: Instant, source: Source, req: Request) {
        let invite = ServerKey::of(&req, &Method::Invite).and_then(|k| self.servers.find(&k));
        let Some(st_id) = invite else {
            let bytes = self.response_bytes(&req, 481, None, &[]);
            self.record_final(operate::method_label(&req.method), 481, Duration::ZERO);
            self.send(source.reply_target(), bytes);
            return;
        };
        let bytes = self.response_bytes(&req, 200, None, &[]);
        self.record_final(operate::method_label(&req.method), 200, Duration::ZERO);
        self.send(source.reply_target(), bytes);
        if self.routing.remove(&st_id) || self.cancel_cluster_wait(st_id) {
            // Still with the routing plugin or the cluster's store: nothing was
            // forwarded, end it here.
            if let Some(invite) = self.servers.get(st_id).map(|s| s.request.clone()) {
                let terminated = self.make_response(&invite, 487, &[]);
                self.respond(st_id, terminated, now);
            }
            return;
        }
        let ctx = self.servers.get(st_id).and_then(|s| s.ctx);
        if let Some(ctx) = ctx {
            self.cancel_ctx(now, ctx);
        }
    }

    /// Sends `resp` through server transaction `id`.
    fn respond(&mut self, id: u64, resp: Response, now: Instant) {
        let t = self.cfg.timers;
        let Some(source) = self.servers.get(id).map(|st| st.source) else {
            return;
        };
        let status = resp.status;
        if let Some(st) = self.servers.get(id)
            && status >= 200
            && st.last.as_ref().is_none_or(|(s, _)| *s < 200)
        {
            let (method, elapsed) = (
                operate::method_label(&st.request.method),
                now.saturating_duration_since(st.started),
            );
            self.record_final(method, status, elapsed);
            self.dialog_confirmed(id, &resp, now);
        }
        let unproven = source.flow.is_none() && !self.udp_proven(source.remote, now);
        let bytes = if unproven {
            self.bounded_for_udp(id, resp)
        } else {
            Bytes::from(resp.to_bytes())
        };
        let Some(st) = self.servers.get_mut(id) else {
            return;
        };
        st.quiet = unproven;
        if let Some(bytes) = st.respond(status, bytes, now, &t) {
            let target = st.source.reply_target();
            self.send(target, bytes);
        }
        self.arm_server(id);
    }

    fn arm_server(&mut self, id: u64) {
        if let Some(st) = self.servers.get(id) {
            if st.state == transaction::ServerState::Terminated {
                self.remove_server(id);
            } else if let Some(d) = st.deadline() {
                self.timers.arm(d, TimerRef::Server(id));
            }
        }
    }

    fn remove_server(&mut self, id: u64) {
        self.timers.disarm(TimerRef::Server(id));
        self.routing.remove(&id);
        if let Some(ctx) = self.servers.remove(id).and_then(|st| st.ctx) {
            self.ctxs.remove(&ctx);
        }
    }

    fn server_timer(&mut self, id: u64, now: Instant) {
        let t = self.cfg.timers;
        let Some(st) = self.servers.get_mut(id) else {
            return;
        };
        if st.deadline().is_none_or(|d| d > now) {
            // Woken early (an earlier deadline was replaced): wait for the real one.
            return self.arm_server(id);
        }
        if let Some(bytes) = st.on_timer(now, &t) {
            let target = st.source.reply_target();
            self.send(target, bytes);
        }
        self.arm_server(id);
    }

    /// A response to `req` with the headers RFC 3261 8.2.6 copies, a To tag when the
    /// request had none (stable across retransmissions), and `extra` headers.
    fn make_response(
        &self,
        req: &Request,
        status: u16,
        extra: &[(HeaderName, String)],
    ) -> Response {
        let mut resp = Response::for_request(req, status, self.to_tag_for(req, status).as_deref());
        for (n, v) in extra {
            resp.headers.push(n.clone(), v.as_str());
        }
        if status != 100 {
            resp.headers
                .push(HeaderName::Server, self.cfg.server_header.as_str());
        }
        resp
    }

    /// `make_response(req, status, extra).to_bytes()`, written directly: the
    /// registrar's and every stateless answer's path.
    fn response_bytes(
        &self,
        req: &Request,
        status: u16,
        reason: Option<&str>,
        extra: &[(HeaderName, String)],
    ) -> Bytes {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.unwrap_or(reason_phrase(status)).as_bytes());
        out.extend_from_slice(b"\r\n");
        self.response_fields(req, status, extra, |n, v| {
            // As the serializer: Content-Length is its own to write.
            if *n != HeaderName::ContentLength {
                for part in [n.as_str().as_bytes(), b": ", v.as_bytes(), b"\r\n"] {
                    out.extend_from_slice(part);
                }
            }
        });
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Bytes::from(out)
    }

    /// The header fields of a response to `req`, in order: those copied from the
    /// request ([`crate::sip::reply::copied_fields`]), `extra`, then Server.
    fn response_fields(
        &self,
        req: &Request,
        status: u16,
        extra: &[(HeaderName, String)],
        mut emit: impl FnMut(&HeaderName, &str),
    ) {
        let tag = self.to_tag_for(req, status);
        crate::sip::reply::copied_fields(req, status, tag.as_deref(), &mut emit);
        for (n, v) in extra {
            emit(n, v);
        }
        if status != 100 {
            emit(&HeaderName::Server, &self.cfg.server_header);
        }
    }

    /// The To tag a response with `status` to `req` adds, if it adds one.
    fn to_tag_for(&self, req: &Request, status: u16) -> Option<String> {
        crate::sip::reply::needs_to_tag(req, status).then(|| self.make_to_tag(req))
    }

    /// A To tag that is the same for retransmissions of one request, without state: a
    /// keyed hash of Call-ID, From, the CSeq number and the top Via (the key comes from
    /// the secret, so tags are not predictable; they need not be unforgeable). The CSeq
    /// method is left out: a CANCEL's answer carries the INVITE's tag (RFC 3261 9.2),
    /// and the ACK for a non-2xx answered here can be recognised by its To tag
    /// ([`Core::acks_own_answer`]).
    fn make_to_tag(&self, req: &Request) -> String {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = self.tag_keys.build_hasher();
        let cseq = req.headers.get(&HeaderName::CSeq).unwrap_or("");
        let cseq_number = cseq.trim_start().split(char::is_whitespace).next();
        for part in [
            req.call_id().unwrap_or(""),
            req.headers.get(&HeaderName::From).unwrap_or(""),
            cseq_number.unwrap_or(""),
            req.headers.values(&HeaderName::Via).next().unwrap_or(""),
        ] {
            h.write(part.as_bytes());
            h.write_u8(b'\n');
        }
        let (n, mut tag) = (h.finish(), String::with_capacity(16));
        for shift in (0..16).rev() {
            tag.push(char::from(
                b"0123456789abcdef"[(n >> (shift * 4)) as usize & 15],
            ));
        }
        tag
    }

    // ------------------------------------------------------------ client side

    /// Remembers that the UDP peer `addr` receives what we send it.
    fn mark_udp_verified(&mut self, addr: SocketAddr, now: Instant) {
        if self.udp_verified.len() >= UDP_VERIFIED_MAX && !self.udp_verified.contains_key(&addr) {
            // Aged entries are swept at most once a minute (a sweep walks them all).
            if self
                .udp_verified_swept
                .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 60)
            {
                self.udp_verified_swept = Some(now);
                self.udp_verified
                    .retain(|_, t| now.saturating_duration_since(*t) < UDP_VERIFIED_FOR);
            }
            if self.udp_verified.len() >= UDP_VERIFIED_MAX {
                return;
            }
        }
        self.udp_verified.insert(addr, now);
    }

    /// Whether the UDP peer `addr` has shown recently that it receives what we send.
    fn udp_verified(&self, addr: SocketAddr, now: Instant) -> bool {
        self.udp_verified
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < UDP_VERIFIED_FOR)
    }

    /// Whether answers to the UDP peer `addr` may be larger than twice its request: it
    /// showed it receives what we send ([`Core::udp_verified`]), a registration is
    /// reached there (behind an authenticating router, its REGISTER answered a nonce
    /// given to that address), or it is a trusted peer.
    pub(super) fn udp_proven(&self, addr: SocketAddr, now: Instant) -> bool {
        self.udp_verified(addr, now)
            || self.location.has_udp(addr)
            || self.cfg.trusted.contains(addr.ip())
    }

    /// `resp` as a UDP peer that has not proven itself ([`Core::udp_proven`], checked by
    /// the caller) gets it: at most twice the size
    /// of its request (no amplification toward a spoofed source). Larger, it is cut to
    /// its status and the fields that tie it to the request (Via, From, To, Call-ID,
    /// CSeq, and the first challenge of a 401/407), without a body; counted.
    fn bounded_for_udp(&mut self, id: u64, resp: Response) -> Bytes {
        let bytes = Bytes::from(resp.to_bytes());
        // Any request is longer than 300 bytes: nothing to check below twice that.
        if bytes.len() <= 600 {
            return bytes;
        }
        let request = self.servers.get(id).map_or(0, |st| {
            st.request
                .to_bytes()
                .len()
                .saturating_sub(proxy::STAMPED_AT_MOST)
        });
        if bytes.len() <= 2 * request {
            return bytes;
        }
        let mut headers = Headers::with_capacity(8);
        let mut challenge = false;
        for h in resp.headers.iter() {
            let keep = match h.name {
                // What ties it to the request, and what forms the dialog (a 2xx or
                // 1xx without its Contact or Record-Route would leave the caller
                // unable to go on); the body is what goes.
                HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::Contact
                | HeaderName::RecordRoute
                | HeaderName::Require => true,
                HeaderName::Other(ref n) if n.eq_ignore_ascii_case("RSeq") => true,
                HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate => {
                    !std::mem::replace(&mut challenge, true)
                }
                _ => false,
            };
            if keep {
                headers.push(h.name.clone(), h.value.clone());
            }
        }
        self.refused.trimmed_answer += 1;
        Bytes::from(
            Response {
                status: resp.status,
                reason: resp.reason,
                headers,
                body: Bytes::new(),
            }
            .to_bytes(),
        )
    }

    fn on_response(&mut self, now: Instant, source: &Source, resp: Response) {
        let Some(top) = resp.headers.values(&HeaderName::Via).next() else {
            return;
        };
        let Ok(via) = Via::parse(top) else {
            return;
        };
        let Some(branch) = via.branch() else {
            return;
        };
        if !branch.starts_with(&self.branch_prefix) {
            // Not sent by us: a proxy drops it (RFC 3261 16.7 step 1... 18.1.2).
            return;
        }
        let Ok(cseq) = resp.cseq() else {
            return;
        };
        let Some(id) = self
            .clients
            .find(&(branch.to_string(), cseq.method.clone()))
        else {
            return;
        };
        // A probe's answer from elsewhere than its member is not its member's.
        if self.probes.contains_key(&id) && !self.probe_answered_from(id, source) {
            return;
        }
        // An answer from where we sent the request: that address receives our packets.
        if let Some(&ClientTx {
            target: Target::Udp { remote, .. },
            ..
        }) = self.clients.get(id)
            && source.flow.is_none()
            && remote == source.remote
        {
            self.mark_udp_verified(remote, now);
        }
        let t = self.cfg.timers;
        let ct = self.clients.get_mut(id).expect("indexed");
        let (event, ack) = ct.on_response(resp.clone(), now, &t);
        if ack {
            let ack = build_ack(&ct.request, &resp);
            let target = ct.target;
            self.send(target, Bytes::from(ack.to_bytes()));
        }
        // Decided before arm_client, which forgets a terminated CANCEL transaction.
        let is_cancel = self.cancels.contains(&id);
        let probe = self.probe_event(now, id, event.as_ref());
        self.arm_client(id);
        if is_cancel || probe {
            return;
        }
        if let Some(event) = event {
            let owner = self.clients.get(id).map(|c| c.owner);
            if let Some((ctx, branch)) = owner {
                if self.is_current(ctx, branch, id) {
                    self.on_branch_event(now, ctx, branch, event);
                } else {
                    self.on_abandoned_event(now, ctx, id, event);
                }
            }
        }
    }

    /// Our Via for a request sent over `transport` from `local` (with `rport` over UDP,
    /// RFC 3581).
    pub(super) fn our_via(transport: Transport, local: SocketAddr, branch: &str) -> String {
        let rport = if transport == Transport::Udp {
            ";rport"
        } else {
            ""
        };
        format!(
            "SIP/2.0/{} {}:{};branch={branch}{rport}",
            transport.via_token(),
            crate::sip::uri::Host::from(local.ip()),
            local.port()
        )
    }

    /// A client transaction sending `req` (serialized: `bytes`) to `target` for
    /// `owner`. Toward a UDP address that has not shown it receives our packets (a
    /// dialog's party reached at an address it only claimed, a next hop never heard
    /// from), a request goes once: retransmissions would multiply what reaches a
    /// spoofed source's victim. Registered phones and trusted peers are proven.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of a client transaction"
    )]
    pub(super) fn client_tx(
        &self,
        now: Instant,
        id: u64,
        branch: String,
        req: Request,
        bytes: Bytes,
        target: Target,
        transport: Transport,
        owner: (u64, usize),
    ) -> ClientTx {
        let unproven =
            matches!(target, Target::Udp { remote, .. } if !self.udp_proven(remote, now));
        ClientTx::new(
            id,
            branch,
            req,
            bytes,
            target,
            transport.is_reliable() || unproven,
            owner,
            now,
            &self.cfg.timers,
        )
    }

    fn arm_client(&mut self, id: u64) {
        if let Some(ct) = self.clients.get(id) {
            if ct.state == transaction::ClientState::Terminated {
                self.remove_client(id);
            } else if let Some(d) = ct.deadline() {
                self.timers.arm(d, TimerRef::Client(id));
            }
        }
    }

    fn remove_client(&mut self, id: u64) {
        self.timers.disarm(TimerRef::Client(id));
        if self.clients.remove(id).is_some() {
            self.cancels.remove(&id);
            // A probe that ends without an outcome (it cannot: a final answer or a
            // timeout comes first) would otherwise hold its member's slot.
            if let Some(p) = self.probes.remove(&id) {
                self.probing.remove(&p);
            }
        }
    }

    fn client_timer(&mut self, id: u64, now: Instant) {
        let t = self.cfg.timers;
        let Some(ct) = self.clients.get_mut(id) else {
            return;
        };
        if ct.deadline().is_none_or(|d| d > now) {
            return self.arm_client(id);
        }
        let (resend, event, timer_c) = ct.on_timer(now, &t);
        let (target, owner) = (ct.target, ct.owner);
        if let Some(bytes) = resend {
            self.send(target, bytes);
        }
        let is_cancel = self.cancels.contains(&id);
        let probe = self.probe_event(now, id, event.as_ref());
        self.arm_client(id);
        if is_cancel || probe {
            return;
        }
        // An attempt given up for the next target has no say in its branch.
        if !self.is_current(owner.0, owner.1, id) {
            return;
        }
        if timer_c {
            self.on_timer_c(now, owner.0, owner.1);
        }
        if let Some(event) = event {
            self.on_branch_event(now, owner.0, owner.1, event);
        }
    }

    /// Everything waiting on `target` fails (flow closed, connect refused).
    fn fail_target(&mut self, now: Instant, target: Target) {
        let ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.target == target)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            // A connection that closed with requests in flight: those not answered at
            // all fail now; one that rang waits (RFC 3261 18.2.2: its answer may come
            // on a new connection), unless the peer is a node of this cluster (it died
            // with the request, nothing else will answer).
            if let Target::Connect { remote, .. } = target
                && self
                    .clients
                    .get(id)
                    .is_some_and(|c| c.state != transaction::ClientState::Calling)
                && !self.is_cluster_peer(remote.ip())
            {
                continue;
            }
            let Some(ct) = self.clients.get_mut(id) else {
                continue;
            };
            let event = ct.on_transport_error();
            let owner = ct.owner;
            let is_cancel = self.cancels.contains(&id);
            let probe = self.probe_event(now, id, event.as_ref());
            self.arm_client(id);
            if is_cancel || probe {
                continue;
            }
            if event.is_some() && self.is_current(owner.0, owner.1, id) {
                // A connection gone or a UDP address that answered ICMP unreachable:
                // the contact cannot be reached there now (430, 480 to the caller).
                let gone = matches!(target, Target::Flow(_) | Target::Udp { .. });
                self.on_branch_failed(now, owner.0, owner.1, gone);
            }
        }
        // Answers retransmitted toward an unreachable UDP address (a spoofed source, a
        // phone gone away) stop there: those transactions end.
        if let Target::Udp { .. } = target {
            let done: Vec<u64> = self
                .servers
                .iter()
                .filter(|(_, st)| {
                    st.source.reply_target() == target
                        && st.last.as_ref().is_some_and(|(status, _)| *status >= 200)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in done {
                self.remove_server(id);
            }
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): same R-URI, top Via,
/// Call-ID, From, Route and CSeq number as the INVITE, To from the response.
fn build_ack(invite: &Request, resp: &Response) -> Request {
    let mut headers = Headers::new();
    if let Some(v) = invite.headers.values(&HeaderName::Via).next() {
        headers.push(HeaderName::Via, v);
    }
    for name in [HeaderName::From] {
        if let Some(v) = invite.headers.get(&name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = resp.headers.get(&HeaderName::To) {
        headers.push(HeaderName::To, to);
    }
    if let Some(c) = invite.call_id() {
        headers.push(HeaderName::CallId, c);
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push(HeaderName::CSeq, format!("{seq} ACK"));
    for r in invite.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, r);
    }
    headers.push(HeaderName::MaxForwards, "70");
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Bytes::new(),
    }
}

/// The tokens of a list header (`Supported`, `Require`...), trimmed.
pub(crate) fn split_tokens(headers: &Headers, name: &HeaderName) -> Vec<String> {
    headers
        .values(name)
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// RFC 3261 section 18.2.1 and RFC 3581: add `received` to the top Via when the
/// sent-by host is not the source address, and fill in `rport` when it is present.
/// Parameters keep their order (an existing `received` or `rport` is given its new
/// value in place); the values after the first on its line stay as written. Returns
/// whether there is a top Via it could parse.
pub fn stamp_received(req: &mut Request, source: SocketAddr) -> bool {
    use std::fmt::Write as _;
    let Some(top) = req.headers.first_mut(&HeaderName::Via) else {
        return false;
    };
    let Some((first, rest)) = first_value(&top.value) else {
        return false;
    };
    let Ok(via) = ViaRef::parse(first) else {
        return false;
    };
    let rport = via.has_rport();
    if !rport && via.host == HostRef::from(source.ip()) {
        return true;
    }
    let mut value = String::with_capacity(top.value.len() + 40);
    value.push_str("SIP/2.0/");
    value.extend(via.transport.chars().map(|c| c.to_ascii_uppercase()));
    value.push(' ');
    via.host.push_to(&mut value);
    let mut num = itoa::Buffer::new();
    if let Some(p) = via.port {
        value.push(':');
        value.push_str(num.format(p));
    }
    let ip = |out: &mut String| match source.ip() {
        std::net::IpAddr::V4(a) => out.push_str(V4Text::new(a).as_str()),
        a => {
            let _ = write!(out, "{a}");
        }
    };
    let mut received = false;
    for (name, v) in params_of(via.params) {
        value.push(';');
        value.push_str(name);
        if rport && name.eq_ignore_ascii_case("rport") {
            value.push('=');
            value.push_str(num.format(source.port()));
        } else if name.eq_ignore_ascii_case("received") {
            value.push('=');
            ip(&mut value);
            received = true;
        } else if let Some(v) = v {
            value.push('=');
            value.push_str(v);
        }
    }
    if !received {
        value.push_str(";received=");
        ip(&mut value);
    }
    value.push_str(rest);
    top.value = value;
    true
}

#[cfg(test)]
mod tests;
