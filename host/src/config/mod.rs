//! Configuration: TOML text to a typed, validated [`Config`].
//!
//! Every error names the file, the key and what is wrong with it, e.g.
//! `sipwasm.toml: listen[1].address: invalid socket address syntax (line 9)`.
//! Durations are strings such as `"50ms"`, `"10s"`, `"2m"`; sizes are byte counts or
//! strings such as `"64KiB"`, `"32MiB"`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::peers::Cidr;

mod allowed_host;
mod capture;
mod cluster;
mod dns;
mod gateways;
mod media;
mod validate;

pub use self::allowed_host::AllowedHost;
pub use self::capture::CaptureConfig;
pub use self::cluster::{ClusterConfig, RedisUrls, StoreKind};
pub use self::dns::{DnsConfig, TlsClientConfig};
pub(crate) use self::gateways::name_is_valid as gateway_name_is_valid;
pub use self::gateways::{GatewayAlgorithm, GatewaySetConfig, GatewayTarget};
pub use self::media::{Engine, EngineEntry, FlagsConfig, MediaConfig, MediaMode};

/// The configuration the server runs with when started without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A configuration that could not be loaded: the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The file (or `<embedded default>`).
    pub file: String,
    /// The dotted key path, e.g. `plugins.seed-policy.deadline`; `(file)` for whole-file errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// General settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// The sockets to listen on.
    #[serde(default)]
    pub listen: Vec<ListenConfig>,
    /// HTTP limits before the WebSocket upgrade.
    #[serde(default)]
    pub http: HttpConfig,
    /// WebSocket settings after the upgrade.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// SIP: registrar, proxy, transactions.
    #[serde(default)]
    pub sip: SipConfig,
    /// Bounds on connections, request rates and transactions.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Plugins by name; listeners refer to them.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The Wasm engine shared by all plugins.
    #[serde(default)]
    pub plugin_runtime: PluginRuntimeConfig,
    /// The admin listener (metrics); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The media relay (rtpengine); calls stay direct without engines.
    #[serde(default)]
    pub media: MediaConfig,
    /// Named secret keys plugins sign and verify with (`crate::keys`).
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
    /// The user store logins are checked against (`crate::users`).
    #[serde(default)]
    pub users: UsersConfig,
    /// How next hops named by a host name are resolved (RFC 3263).
    #[serde(default)]
    pub dns: DnsConfig,
    /// TLS connections the server opens to next hops.
    #[serde(default)]
    pub tls_client: TlsClientConfig,
    /// Gateway sets routing plugins relay to by name (`relay("gw:NAME")`).
    #[serde(default)]
    pub gateways: Vec<GatewaySetConfig>,
    /// Several nodes sharing one location service on Redis; one node alone when
    /// absent.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// SIP messages copied to Homer-compatible collectors (HEPv3).
    #[serde(default)]
    pub capture: CaptureConfig,
    /// The file this was read from (none: the embedded default), for reloads.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[users]`: the user store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UsersConfig {
    /// The store file (`user:realm:md5-ha1:sha256-ha1` lines). Default: `users` in the
    /// data directory.
    pub file: Option<PathBuf>,
    /// The realm `sipwasm user add` writes when given none. Default: the first of
    /// `server.domains`.
    pub realm: Option<String>,
}

impl Config {
    /// The user store's file.
    pub fn users_file(&self) -> PathBuf {
        self.users
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("users"))
    }

    /// The realm users are added to by default.
    pub fn users_realm(&self) -> String {
        self.users.realm.clone().unwrap_or_else(|| {
            self.server
                .domains
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// `[keys.NAME]`: where a key is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyConfig {
    /// A file holding the key in hex (at least 32 bytes). Absent: `keys/NAME.key` in
    /// the data directory, made with 32 random bytes on first start.
    pub file: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Where the server keeps state (generated certificate, secrets). Default:
    /// `$XDG_DATA_HOME/sipwasm` or `~/.local/share/sipwasm`.
    pub data_dir: Option<PathBuf>,
    /// SIP domains this server is responsible for (also used by `is-myself`).
    #[serde(default = "default_domains")]
    pub domains: Vec<String>,
    /// Value of the `Server` header on HTTP and SIP responses.
    #[serde(default = "default_server_header")]
    pub server_header: String,
    /// How long shutdown waits for WebSocket close handshakes.
    #[serde(default = "default_shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            domains: default_domains(),
            server_header: default_server_header(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_domains() -> Vec<String> {
    vec!["localhost".into()]
}
fn default_server_header() -> String {
    concat!("sipwasm/", env!("CARGO_PKG_VERSION")).into()
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(2)
}

/// `[[listen]] identity`: what a WebSocket flow's identity binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// Attached to the flow, seen by the routing plugin and the control API.
    #[default]
    Attach,
    /// Attached and enforced on every REGISTER and new request of the flow.
    Enforce,
}

/// The transport a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
    /// HTTP and SIP over WebSocket on plain TCP.
    Ws,
    /// HTTPS and SIP over WebSocket on TLS.
    Wss,
}

impl ListenTransport {
    /// Web listeners serve HTTP first and need a plugin.
    pub fn is_web(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    /// Listeners that need a certificate.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// The SIP transport it carries.
    pub fn sip_transport(self) -> crate::core::Transport {
        use crate::core::Transport;
        match self {
            Self::Udp => Transport::Udp,
            Self::Tcp => Transport::Tcp,
            Self::Tls => Transport::Tls,
            Self::Ws => Transport::Ws,
            Self::Wss => Transport::Wss,
        }
    }
}

impl fmt::Display for ListenTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        })
    }
}

/// `[[listen]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenConfig {
    /// `udp`, `tcp`, `tls`, `ws` or `wss`.
    pub transport: ListenTransport,
    /// Address and port, e.g. `127.0.0.1:8080` or `[::1]:8443`.
    pub address: SocketAddr,
    /// Name of the plugin (a key of `[plugins]`) deciding HTTP requests (ws and wss
    /// listeners only).
    pub plugin: Option<String>,
    /// Plugins by path prefix (ws and wss only), e.g. `{ "/" = "welcome", "/ws" =
    /// "seed-policy" }`: the longest prefix matching the request path decides. With
    /// `plugin` as well, `plugin` serves paths no prefix matches.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Whether the identity the plugin attaches at upgrade binds the flow's SIP (ws and
    /// wss only): `attach` (the default) shows it to the routing plugin and the control
    /// API; `enforce` also refuses (403) a REGISTER for another address-of-record and a
    /// new request From another user, without asking the routing plugin, and refuses
    /// an upgrade whose identity names no `user`.
    #[serde(default)]
    pub identity: IdentityMode,
    /// PEM certificate chain (tls and wss only). When both are absent a self-signed
    /// certificate for localhost is generated in the data directory.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (tls and wss only).
    pub tls_key: Option<PathBuf>,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Largest request head (request line + headers) in bytes; more gets 431.
    #[serde(default = "default_max_head", with = "size")]
    pub max_head_bytes: usize,
    /// Most header fields in a request; more gets 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Largest request body (Content-Length) in bytes; more gets 413.
    #[serde(default = "default_max_body", with = "size")]
    pub max_body_bytes: usize,
    /// The whole head must arrive within this time of the connection (or of the
    /// previous response); otherwise the connection is closed.
    #[serde(default = "default_head_timeout", with = "duration")]
    pub head_timeout: Duration,
    /// A keep-alive connection with no new request for this long is closed.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: default_max_head(),
            max_headers: default_max_headers(),
            max_body_bytes: default_max_body(),
            head_timeout: default_head_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_head() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_head_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebSocketConfig {
    /// Largest message (and frame) accepted; a bigger one closes the connection with 1009.
    #[serde(default = "default_max_message", with = "size")]
    pub max_message_bytes: usize,
    /// Send a Ping after this long without traffic from the client.
    #[serde(default = "default_ping_interval", with = "duration")]
    pub ping_interval: Duration,
    /// Close the connection when nothing (Pong or other) arrives this long after a Ping.
    #[serde(default = "default_pong_timeout", with = "duration")]
    pub pong_timeout: Duration,
    /// Read buffer per connection (small keeps idle connections cheap).
    #[serde(default = "default_read_buffer", with = "size")]
    pub read_buffer_bytes: usize,
    /// Messages queued for sending on one connection before senders see it as full.
    #[serde(default = "default_send_queue")]
    pub send_queue: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message(),
            ping_interval: default_ping_interval(),
            pong_timeout: default_pong_timeout(),
            read_buffer_bytes: default_read_buffer(),
            send_queue: default_send_queue(),
        }
    }
}

fn default_max_message() -> usize {
    64 * 1024
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_pong_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_buffer() -> usize {
    4 * 1024
}
fn default_send_queue() -> usize {
    64
}

/// `[limits]`: what one source, and everyone together, may hold of the server. Each
/// hit is an answer (a close, a 503), a counter in `/metrics` and a log line at most
/// once a minute per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Most TCP/TLS/WebSocket connections open at once, accepted and outgoing; past it
    /// a new connection is closed at once. 0: the open-file limit less
    /// [`FD_RESERVE`] (files the server needs besides connections).
    #[serde(default)]
    pub max_connections: usize,
    /// Most connections from one source (an IPv4 address, an IPv6 /64) at once; 0: no
    /// per-source limit.
    #[serde(default = "default_connections_per_source")]
    pub connections_per_source: usize,
    /// A SIP-over-TCP/TLS connection must bring its first complete message (the TLS
    /// handshake included) within this time of its accept, or it is closed.
    #[serde(default = "default_first_message_timeout", with = "duration")]
    pub first_message_timeout: Duration,
    /// A WebSocket frame or fragmented message left unfinished this long closes its
    /// connection (1008).
    #[serde(default = "default_ws_partial_timeout", with = "duration")]
    pub ws_partial_timeout: Duration,
    /// Most server transactions in flight; past it new requests get 503 with
    /// Retry-After (a retransmission of one in flight is still absorbed).
    #[serde(default = "default_max_transactions")]
    pub max_transactions: usize,
    /// Requests per second one source may send, sustained (0 turns the limit off).
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Requests one source may send at once above the sustained rate.
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
    /// A source past its rate is banned this long: ignored over UDP, answered 503 with
    /// Retry-After on connections.
    #[serde(default = "default_rate_ban", with = "duration")]
    pub rate_ban: Duration,
    /// Sources the per-source limits (connections, rate) never apply to, besides
    /// `sip.trusted-peers`. Loopback by default: local processes (a reverse proxy,
    /// a test client) speak for many users.
    #[serde(default = "default_exempt", with = "cidrs")]
    pub exempt: Vec<Cidr>,
}

/// Files kept free for everything but connections when `limits.max-connections` is
/// derived from the open-file limit: listeners, UDP sockets, the store, plugin files,
/// logs, and connections being accepted before they are counted.
pub const FD_RESERVE: usize = 256;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            connections_per_source: default_connections_per_source(),
            first_message_timeout: default_first_message_timeout(),
            ws_partial_timeout: default_ws_partial_timeout(),
            max_transactions: default_max_transactions(),
            rate: default_rate(),
            rate_burst: default_rate_burst(),
            rate_ban: default_rate_ban(),
            exempt: default_exempt(),
        }
    }
}

impl LimitsConfig {
    /// The connection cap in force: the configured one, or the open-file limit
    /// (`nofile`) less [`FD_RESERVE`] (at least half of it when that is small).
    pub fn connection_cap(&self, nofile: u64) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        nofile.saturating_sub(FD_RESERVE).max(nofile / 2)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let secs = |d: Duration| d >= Duration::from_secs(1) && d <= Duration::from_secs(3600);
        if !secs(self.first_message_timeout) {
            return Err((
                "limits.first-message-timeout".into(),
                "must be between 1s and 1h".into(),
            ));
        }
        if !secs(self.ws_partial_timeout) {
            return Err((
                "limits.ws-partial-timeout".into(),
                "must be between 1s and 1h".into(),
            ));
        }
        if self.max_transactions == 0 {
            return Err((
                "limits.max-transactions".into(),
                "must be at least 1".into(),
            ));
        }
        if self.rate > 0 && self.rate_burst < self.rate {
            return Err((
                "limits.rate-burst".into(),
                "must be at least limits.rate (a second's worth of requests)".into(),
            ));
        }
        if self.rate_ban < Duration::from_secs(1) || self.rate_ban > Duration::from_secs(86_400) {
            return Err((
                "limits.rate-ban".into(),
                "must be between 1s and 1 day".into(),
            ));
        }
        Ok(())
    }
}

fn default_connections_per_source() -> usize {
    1000
}
fn default_first_message_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ws_partial_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_transactions() -> usize {
    100_000
}
fn default_rate() -> u32 {
    50
}
fn default_rate_burst() -> u32 {
    200
}
fn default_rate_ban() -> Duration {
    Duration::from_secs(60)
}
fn default_exempt() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1"]
        .iter()
        .map(|c| c.parse().expect("valid block"))
        .collect()
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SipConfig {
    /// Forward requests for domains that are not ours (otherwise 403).
    #[serde(default)]
    pub relay: bool,
    /// Peers whose headers may steer requests (addresses and CIDR blocks: edge proxies,
    /// gateways, trunks): only they may register with a Path or route with Route
    /// headers. Everyone else is answered and reached where its packets come from.
    #[serde(default, with = "cidrs")]
    pub trusted_peers: Vec<Cidr>,
    /// Without a `router` plugin anyone may register, unregister and query any AoR: on
    /// a listener that is not loopback the server refuses to start unless this says the
    /// operator means it.
    #[serde(default)]
    pub open_registration: bool,
    /// A plugin (a `[plugins]` entry implementing the `sip-router` world) asked about
    /// each new out-of-dialog request before the default routing.
    #[serde(default)]
    pub router: Option<String>,
    /// Digest algorithms offered when the router challenges, in order (`MD5`,
    /// `SHA-256`). MD5 alone by default: JsSIP and many phones know nothing else.
    #[serde(default = "default_digest_algorithms")]
    pub digest_algorithms: Vec<String>,
    /// Failed Digest responses for one username from one source address within
    /// `auth-failure-window` that get the pair banned for `auth-ban` (0: no limit).
    #[serde(default = "default_auth_failures_per_user")]
    pub auth_failures_per_user: u32,
    /// Failed Digest responses from one source address, all usernames together,
    /// within `auth-failure-window` that get the address banned (0: no limit).
    #[serde(default = "default_auth_failures_per_address")]
    pub auth_failures_per_address: u32,
    /// How far back failed Digest responses count.
    #[serde(default = "default_auth_failure_window", with = "duration")]
    pub auth_failure_window: Duration,
    /// How long a banned source's credentials are refused unchecked.
    #[serde(default = "default_auth_ban", with = "duration")]
    pub auth_ban: Duration,
    /// Largest SIP message on UDP, TCP and TLS (WebSocket has its own limit).
    #[serde(default = "default_sip_max_message", with = "size")]
    pub max_message_bytes: usize,
    /// A TCP/TLS connection without traffic for this long is closed.
    #[serde(default = "default_tcp_idle", with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// Shortest registration accepted (423 with Min-Expires below it).
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    /// Longest registration granted.
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    /// Registration time when the REGISTER gives none.
    #[serde(default = "default_default_expires")]
    pub default_expires: u32,
    /// Flow-Timer (seconds) for Outbound clients.
    #[serde(default = "default_flow_timer")]
    pub flow_timer: u32,
    /// Most bindings per address-of-record.
    #[serde(default = "default_max_contacts")]
    pub max_contacts: usize,
    /// Most bindings the registrar holds in all: a REGISTER that would add one past it
    /// gets 503 with Retry-After (refreshing or removing a binding always works).
    #[serde(default = "default_max_bindings")]
    pub max_bindings: usize,
    /// What a REGISTER with a Path gets when its UA did not say `Supported: path`.
    #[serde(default = "default_path_without_support")]
    pub path_without_support: PathPolicy,
    /// Timer T1 (RTT estimate).
    #[serde(default = "default_t1", with = "duration")]
    pub t1: Duration,
    /// Timer T2.
    #[serde(default = "default_t2", with = "duration")]
    pub t2: Duration,
    /// Timer T4.
    #[serde(default = "default_t4", with = "duration")]
    pub t4: Duration,
    /// Proxy INVITE timer C.
    #[serde(default = "default_timer_c", with = "duration")]
    pub timer_c: Duration,
    /// How long a target of a next hop's name (RFC 3263) has to answer at all before
    /// the next target is tried (only while one is left; the last one gets the whole
    /// transaction timeout).
    #[serde(default = "default_failover_after", with = "duration")]
    pub failover_after: Duration,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            relay: false,
            trusted_peers: Vec::new(),
            open_registration: false,
            router: None,
            digest_algorithms: default_digest_algorithms(),
            auth_failures_per_user: default_auth_failures_per_user(),
            auth_failures_per_address: default_auth_failures_per_address(),
            auth_failure_window: default_auth_failure_window(),
            auth_ban: default_auth_ban(),
            max_message_bytes: default_sip_max_message(),
            tcp_idle_timeout: default_tcp_idle(),
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_default_expires(),
            flow_timer: default_flow_timer(),
            max_contacts: default_max_contacts(),
            max_bindings: default_max_bindings(),
            path_without_support: default_path_without_support(),
            t1: default_t1(),
            t2: default_t2(),
            t4: default_t4(),
            timer_c: default_timer_c(),
            failover_after: default_failover_after(),
        }
    }
}

fn default_sip_max_message() -> usize {
    65_535
}
fn default_tcp_idle() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    86_400
}
fn default_default_expires() -> u32 {
    3_600
}
fn default_flow_timer() -> u32 {
    120
}
fn default_max_bindings() -> usize {
    1_000_000
}
fn default_max_contacts() -> usize {
    32
}
fn default_path_without_support() -> PathPolicy {
    PathPolicy::Reject
}
fn default_t1() -> Duration {
    Duration::from_millis(500)
}
fn default_t2() -> Duration {
    Duration::from_secs(4)
}
fn default_t4() -> Duration {
    Duration::from_secs(5)
}
/// RFC 3261 16.6 step 11: larger than 3 minutes.
fn default_timer_c() -> Duration {
    Duration::from_secs(181)
}

fn default_failover_after() -> Duration {
    Duration::from_secs(5)
}

/// What happens to a request when its plugin traps, times out, runs out of memory or
/// returns an invalid decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Answer 500 (the default).
    Closed,
    /// Decide with the built-in policy: upgrade valid SIP WebSocket handshakes, 404 otherwise.
    Open,
}

/// What the registrar does with a Path (RFC 3327) in a REGISTER whose UA did not list
/// `path` in Supported, that is when an intermediate proxy added it on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathPolicy {
    /// 420 Bad Extension with `Unsupported: path`: the policy RFC 3327 section 5.3
    /// recommends (the UA learns that a proxy inserted itself), Kamailio's `strict`.
    Reject,
    /// Store the Path and route through it, but leave it out of the 200 (for edge
    /// proxies in front of phones that do not announce the extension; Kamailio's `lazy`).
    Store,
}

/// How plugin instances are used across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceMode {
    /// Keep instances after a successful call and reuse them (fastest). An instance is
    /// dropped after any failure and after `max-reuse` calls.
    Reuse,
    /// A fresh instance for every request (no state survives between requests).
    Fresh,
}

/// `[plugins.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConfig {
    /// Path of the component (`.wasm`), relative to the config file.
    pub path: Option<PathBuf>,
    /// Name of a plugin compiled into the server (`seed-policy`, `welcome`).
    pub builtin: Option<String>,
    /// Failure policy.
    #[serde(default = "default_failure")]
    pub failure: FailurePolicy,
    /// CPU time one call may take.
    #[serde(default = "default_deadline", with = "duration")]
    pub deadline: Duration,
    /// Linear memory one instance may use.
    #[serde(default = "default_memory_limit", with = "size")]
    pub memory_limit: usize,
    /// `reuse` or `fresh`.
    #[serde(default = "default_instances")]
    pub instances: InstanceMode,
    /// With `instances = "reuse"`: calls after which an instance is replaced.
    #[serde(default = "default_max_reuse")]
    pub max_reuse: u64,
    /// Where the plugin may send HTTP requests (`wasi:http`): `scheme://host[:port]`
    /// entries; anything else is refused. Empty: no outbound requests at all.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Longest wait to connect, for the first byte and between bytes of an outbound
    /// response (the whole call still ends at `deadline`).
    #[serde(default = "default_outbound_timeout", with = "duration")]
    pub outbound_timeout: Duration,
    /// Instances (pool slots) the plugin may hold at once, busy and idle: its calls in
    /// flight at most. Unset: an equal share of what `plugin-runtime.pool-instances`
    /// leaves after the plugins that set it, at most eight per thread of the plugin
    /// runtime (filled in when the file is read), so one slow plugin cannot take the
    /// slots of the others, nor keep many calls spinning on a thread.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Calls that may wait for one of its instances; past it (or after waiting its
    /// `deadline`) a call fails as `busy` and its failure policy answers (`closed`:
    /// 503 with Retry-After).
    #[serde(default = "default_max_waiting")]
    pub max_waiting: usize,
    /// Calls at their deadline within a second (from at least four source addresses,
    /// and nine in ten of its calls then) after which the plugin is suspended: its
    /// failure policy answers at once (503 with `Retry-After` for `closed`) until one
    /// probe call is in time again. 0: never suspended.
    #[serde(default = "default_suspend_after")]
    pub suspend_after: u32,
    /// The first suspension; each probe at its deadline again doubles it, up to a
    /// minute.
    #[serde(default = "default_suspend_for", with = "duration")]
    pub suspend_for: Duration,
    /// Outbound HTTP requests (`wasi:http`) the plugin may have open at once, over all
    /// its instances; past it a request fails with `connection-limit-reached`.
    #[serde(default = "default_max_outbound")]
    pub max_outbound: usize,
    /// The keys of `[keys]` the plugin may sign and verify with (the `keys` import);
    /// none by default.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Handed to the plugin as JSON by `plugin-config()`.
    #[serde(default)]
    pub config: toml::Table,
}

fn default_failure() -> FailurePolicy {
    FailurePolicy::Closed
}
fn default_deadline() -> Duration {
    Duration::from_millis(50)
}
fn default_memory_limit() -> usize {
    32 << 20
}
fn default_instances() -> InstanceMode {
    InstanceMode::Reuse
}
fn default_max_reuse() -> u64 {
    10_000
}
fn default_max_waiting() -> usize {
    256
}
/// The longest a plugin stays suspended, however many probes failed (and so the
/// longest `suspend-for`).
pub const MAX_SUSPENSION: Duration = Duration::from_secs(60);

fn default_suspend_after() -> u32 {
    20
}
fn default_suspend_for() -> Duration {
    Duration::from_secs(5)
}
fn default_max_outbound() -> usize {
    64
}
fn default_digest_algorithms() -> Vec<String> {
    vec!["MD5".into()]
}
fn default_auth_failures_per_user() -> u32 {
    10
}
fn default_auth_failures_per_address() -> u32 {
    50
}
fn default_auth_failure_window() -> Duration {
    Duration::from_secs(300)
}
fn default_auth_ban() -> Duration {
    Duration::from_secs(600)
}
fn default_outbound_timeout() -> Duration {
    Duration::from_secs(2)
}

/// `[plugin-runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginRuntimeConfig {
    /// Plugin instances alive at once across all plugins (slots of the pooling allocator).
    #[serde(default = "default_pool_instances")]
    pub pool_instances: u32,
    /// Epoch tick: the granularity of plugin deadlines.
    #[serde(default = "default_epoch_tick", with = "duration")]
    pub epoch_tick: Duration,
    /// Reload a plugin when its file changes (a change is taken once it holds still
    /// for one interval). SIGHUP and `POST /plugins/reload` reload regardless.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// How often plugin files are checked.
    #[serde(default = "default_watch_interval", with = "duration")]
    pub watch_interval: Duration,
}

impl Default for PluginRuntimeConfig {
    fn default() -> Self {
        Self {
            pool_instances: default_pool_instances(),
            epoch_tick: default_epoch_tick(),
            watch: true,
            watch_interval: default_watch_interval(),
        }
    }
}

fn default_pool_instances() -> u32 {
    256
}
fn default_true() -> bool {
    true
}
fn default_watch_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_epoch_tick() -> Duration {
    Duration::from_millis(5)
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdminConfig {
    /// Where to serve the admin API. Keep it on loopback or a management network.
    pub listen: SocketAddr,
    /// The bearer token every endpoint but `/metrics` on loopback asks for. When unset,
    /// one is generated in the data directory (`admin-token`, mode 0600); a listener
    /// off loopback needs it set here (at least 32 characters).
    #[serde(default)]
    pub token: Option<String>,
    /// Host names the API may be reached by (the `Host` header), besides the listen
    /// address itself and, on loopback, `localhost`: a page that rebinds its own name
    /// to this address is refused.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Config {
    /// Reads and validates a config file. Relative plugin paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::parse(&text, &file, base)?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::parse(DEFAULT_CONFIG, "<embedded default>", Path::new("."))
            .expect("the embedded default configuration is valid")
    }

    /// Parses and validates TOML text; `file` names it in errors; relative plugin paths
    /// are resolved against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self, ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: file.to_string(),
            key,
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err("(file)".into(), toml_message(&e, text)))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(file)".into() } else { key };
            err(key, toml_message(e.inner(), text))
        })?;
        config
            .validate()
            .map_err(|(key, message)| err(key, message))?;
        config.share_plugin_slots();
        for plugin in config.plugins.values_mut() {
            if let Some(p) = &plugin.path
                && p.is_relative()
            {
                plugin.path = Some(base.join(p));
            }
        }
        Ok(config)
    }

    /// The plugins' `max-instances` fit the pool together, and those unset get an
    /// equal share of what is left (at least one slot each).
    fn check_plugin_slots(&self) -> Result<(), (String, String)> {
        let pool = u64::from(self.plugin_runtime.pool_instances);
        let mut set = 0u64;
        for (name, p) in &self.plugins {
            if let Some(n) = p.max_instances {
                if n == 0 {
                    return Err((
                        format!("plugins.{name}.max-instances"),
                        "must be at least 1".into(),
                    ));
                }
                set += u64::from(n);
            }
            if p.max_waiting > 100_000 {
                return Err((
                    format!("plugins.{name}.max-waiting"),
                    "must be at most 100000".into(),
                ));
            }
            if p.suspend_for < Duration::from_secs(1) || p.suspend_for > MAX_SUSPENSION {
                return Err((
                    format!("plugins.{name}.suspend-for"),
                    "must be between 1s and 60s".into(),
                ));
            }
            if p.max_outbound == 0 {
                return Err((
                    format!("plugins.{name}.max-outbound"),
                    "must be at least 1".into(),
                ));
            }
        }
        let unset = self
            .plugins
            .values()
            .filter(|p| p.max_instances.is_none())
            .count() as u64;
        if set + unset > pool {
            return Err((
                "plugin-runtime.pool-instances".into(),
                format!(
                    "{pool} slots cannot hold the plugins' max-instances ({set}) plus one slot for each of the {unset} plugins without it; raise pool-instances or lower max-instances"
                ),
            ));
        }
        Ok(())
    }

    /// Fills in the unset `max-instances`: an equal share of the pool slots the
    /// plugins that set it leave.
    fn share_plugin_slots(&mut self) {
        let pool = self.plugin_runtime.pool_instances;
        let set: u32 = self.plugins.values().filter_map(|p| p.max_instances).sum();
        let unset = self
            .plugins
            .values()
            .filter(|p| p.max_instances.is_none())
            .count() as u32;
        if unset == 0 {
            return;
        }
        // At most eight calls in flight per thread of the plugin runtime: a call that
        // spins to its deadline holds its thread's time slices, and with more of them
        // per thread each call's wall-clock deadline would pass long before its trap is
        // scheduled (set max-instances for plugins that mostly wait on outbound HTTP).
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1)
            .max(1) as u32;
        let share = ((pool - set) / unset).clamp(1, 8 * threads);
        for p in self.plugins.values_mut() {
            p.max_instances.get_or_insert(share);
        }
    }

    /// The data directory: configured, or the XDG default.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.server.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("sipwasm");
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/share/sipwasm"),
            None => PathBuf::from("sipwasm-data"),
        }
    }
}

/// A toml error message with its line number, without toml's multi-line snippet.
fn toml_message(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{msg} (line {line})")
        }
        None => msg,
    }
}

/// Parses `"50ms"`, `"10s"`, `"2m"`, `"1h"` (also `"1.5s"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} has no unit; write e.g. \"50ms\", \"10s\", \"2m\""))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"50ms\" or \"10s\""))?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?}; use us, ms, s, m or h"
            ));
        }
    };
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: `65536`, `"64KiB"`, `"32MiB"`, `"1GiB"`, `"500kB"`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 65536 or \"64KiB\""))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?}; use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mul)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| D::Error::custom("expected a duration string like \"50ms\" or \"10s\""))?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }
}

mod cidrs {
    use serde::{Deserialize, Deserializer, de::Error};

    use crate::core::peers::Cidr;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        let texts = Vec::<String>::deserialize(d).map_err(|_| {
            D::Error::custom(
                "expected a list of addresses or CIDR blocks like [\"192.0.2.10\", \"10.0.0.0/8\"]",
            )
        })?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.parse()
                    .map_err(|e| D::Error::custom(format!("[{i}]: {e}")))
            })
            .collect()
    }
}

mod size {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Raw::deserialize(d).map_err(|_| {
            D::Error::custom("expected a size: a byte count or a string like \"64KiB\"")
        })? {
            Raw::N(n) => usize::try_from(n).map_err(|_| D::Error::custom("size is too large")),
            Raw::S(s) => super::parse_size(&s).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/sipwasm"))
    }

    const MINIMAL: &str = r#"
[[listen]]
transport = "ws"
address = "127.0.0.1:8080"
plugin = "p"

[plugins.p]
path = "p.wasm"
"#;

    #[test]
    fn capture_keys_are_checked() {
        let c = parse(&format!(
            "{MINIMAL}\n[capture]\nhep = [\"udp:127.0.0.1:9060\"]\nsample = 0.5\n"
        ))
        .unwrap();
        assert_eq!(c.capture.collectors().len(), 1);
        for (body, key) in [
            ("hep = [\"tcp:127.0.0.1:9060\"]", "capture.hep"),
            ("hep = [\"udp:nowhere\"]", "capture.hep"),
            ("sample = 1.5", "capture.sample"),
        ] {
            let e = parse(&format!("{MINIMAL}\n[capture]\n{body}\n")).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
        }
    }

    #[test]
    fn cluster_keys_are_checked() {
        let base =
            format!("{MINIMAL}\n[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.2:5060\"\n");
        let cluster = |body: &str| {
            format!(
                "{base}[cluster]\nnode-id = \"a\"\nredis = \"redis://10.0.0.9:6379\"\n\
                 address = \"127.0.0.2:5060\"\npeers = [\"127.0.0.0/8\"]\n{body}"
            )
        };
        let c = parse(&cluster("")).unwrap();
        let k = c.cluster.unwrap();
        assert_eq!(k.route_host(), "127.0.0.2:5060;transport=tcp");
        assert_eq!(
            (k.heartbeat, k.dead_after),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        for (body, key) in [
            ("transport = \"udp\"\n", "cluster.address"),
            ("dead-after = \"1s\"\n", "cluster.dead-after"),
            ("heartbeat = \"10ms\"\n", "cluster.heartbeat"),
            ("timeout = \"1h\"\n", "cluster.timeout"),
            ("transport = \"ws\"\n", "cluster.transport"),
        ] {
            let e = parse(&cluster(body)).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
        }
        let e = parse(&cluster("").replace("node-id = \"a\"", "node-id = \"a b\"")).unwrap_err();
        assert_eq!(e.key, "cluster.node-id");
        let e = parse(&cluster("").replace("redis://10.0.0.9:6379", "10.0.0.9:6379")).unwrap_err();
        assert_eq!(e.key, "cluster.redis");
        let e = parse(&cluster("").replace("[\"127.0.0.0/8\"]", "[]")).unwrap_err();
        assert_eq!(e.key, "cluster.peers");
        let e = parse(&cluster("").replace(
            "address = \"127.0.0.2:5060\"\npeers",
            "address = \"127.0.0.2:5070\"\npeers",
        ))
        .unwrap_err();
        assert_eq!(e.key, "cluster.address");
        let e = parse(&cluster("colour = 1\n")).unwrap_err();
        assert_eq!(e.key, "cluster.colour");
        let list = "redis = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]";
        let c = parse(&cluster("").replace("redis = \"redis://10.0.0.9:6379\"", list)).unwrap();
        assert_eq!(c.cluster.unwrap().store_kind(), StoreKind::Cluster);
        let c = parse(&cluster("sentinel-master = \"mymaster\"\n")).unwrap();
        assert_eq!(c.cluster.unwrap().store_kind(), StoreKind::Sentinel);
        let e = parse(&cluster("sentinel-master = \"my master\"\n")).unwrap_err();
        assert_eq!(e.key, "cluster.sentinel-master");
        let e = parse(&cluster("").replace("redis = \"redis://10.0.0.9:6379\"", "redis = []"))
            .unwrap_err();
        assert_eq!(e.key, "cluster.redis");
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.listen.len(), 5);
        assert_eq!(c.plugins["login"].builtin.as_deref(), Some("cookie-login"));
        assert_eq!(c.plugins["login"].keys, ["login"]);
        assert_eq!(c.plugins["softphone"].builtin.as_deref(), Some("softphone"));
        assert!(c.keys.contains_key("login"));
        let web: Vec<_> = c.listen.iter().filter(|l| l.transport.is_web()).collect();
        assert_eq!(web.len(), 2);
        for l in web {
            assert_eq!(l.identity, IdentityMode::Enforce);
            assert_eq!(l.routes["/ws"], "login");
            assert_eq!(l.routes["/"], "softphone");
        }
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.http.max_head_bytes, 16 * 1024);
        assert_eq!(c.http.max_headers, 100);
        assert_eq!(c.http.max_body_bytes, 64 * 1024);
        assert_eq!(c.websocket.max_message_bytes, 64 * 1024);
        let p = &c.plugins["p"];
        assert_eq!(p.deadline, Duration::from_millis(50));
        assert_eq!(p.memory_limit, 32 << 20);
        assert_eq!(p.failure, FailurePolicy::Closed);
        assert_eq!(p.path.as_deref(), Some(Path::new("/etc/sipwasm/p.wasm")));
    }

    #[test]
    fn guessing_limits_default_on_and_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            (
                c.sip.auth_failures_per_user,
                c.sip.auth_failures_per_address
            ),
            (10, 50)
        );
        assert_eq!(c.sip.auth_failure_window, Duration::from_secs(300));
        assert_eq!(c.sip.auth_ban, Duration::from_secs(600));
        let c = parse(&format!(
            "{MINIMAL}\n[sip]\nauth-failures-per-user = 0\nauth-ban = \"1h\"\n"
        ))
        .unwrap();
        assert_eq!(c.sip.auth_failures_per_user, 0);
        assert_eq!(c.sip.auth_ban, Duration::from_secs(3600));
        for (text, key) in [
            ("auth-ban = \"0s\"", "sip.auth-ban"),
            ("auth-failure-window = \"500ms\"", "sip.auth-failure-window"),
            ("auth-ban = \"30d\"", "sip.auth-ban"),
            ("auth-failures-per-user = -1", "sip.auth-failures-per-user"),
        ] {
            let e = parse(&format!("{MINIMAL}\n[sip]\n{text}\n")).unwrap_err();
            assert!(e.key.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn limits_default_and_checked() {
        let c = parse(MINIMAL).unwrap();
        let l = &c.limits;
        assert_eq!(l.connections_per_source, 1000);
        assert_eq!(l.max_transactions, 100_000);
        assert_eq!(l.first_message_timeout, Duration::from_secs(10));
        assert_eq!(l.ws_partial_timeout, Duration::from_secs(30));
        assert_eq!((l.rate, l.rate_burst), (50, 200));
        assert_eq!(l.exempt.len(), 2);
        // The connection cap follows the open-file limit unless set.
        assert_eq!(l.connection_cap(20_000), 20_000 - FD_RESERVE);
        assert_eq!(l.connection_cap(300), 150);
        let c = parse(&format!(
            "{MINIMAL}\n[limits]\nmax-connections = 500\nexempt = []\n"
        ))
        .unwrap();
        assert_eq!(c.limits.connection_cap(20_000), 500);
        assert!(c.limits.exempt.is_empty());
        for (text, key) in [
            (
                "first-message-timeout = \"0s\"",
                "limits.first-message-timeout",
            ),
            ("ws-partial-timeout = \"2h\"", "limits.ws-partial-timeout"),
            ("max-transactions = 0", "limits.max-transactions"),
            ("rate = 100\nrate-burst = 10", "limits.rate-burst"),
            ("rate-ban = \"0s\"", "limits.rate-ban"),
            ("exempt = [\"10.0.0.1/8\"]", "limits.exempt"),
            ("connections = 5", "limits.connections"),
        ] {
            let e = parse(&format!("{MINIMAL}\n[limits]\n{text}\n")).unwrap_err();
            assert!(e.key.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn path_policy() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.sip.path_without_support, PathPolicy::Reject);
        let c = parse(&format!(
            "{MINIMAL}\n[sip]\npath-without-support = \"store\"\n"
        ))
        .unwrap();
        assert_eq!(c.sip.path_without_support, PathPolicy::Store);
        let e = parse(&format!(
            "{MINIMAL}\n[sip]\npath-without-support = \"lazy\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "sip.path-without-support");
        assert!(e.message.contains("reject"), "{e}");
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse(&MINIMAL.replace("127.0.0.1:8080", "127.0.0.1")).unwrap_err();
        assert_eq!(e.file, "test.toml");
        assert_eq!(e.key, "listen[0].address");

        // A SIP listener on a wildcard address would advertise 0.0.0.0 in Via and
        // Record-Route; a WebSocket one may.
        let udp_any = "[[listen]]\ntransport = \"udp\"\naddress = \"0.0.0.0:5060\"\n";
        let e = parse(&format!("{udp_any}{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "listen[0].address");
        assert!(e.message.contains("wildcard"), "{e}");
        let tcp_any = "[[listen]]\ntransport = \"tcp\"\naddress = \"[::]:5060\"\n";
        assert_eq!(
            parse(&format!("{tcp_any}{MINIMAL}")).unwrap_err().key,
            "listen[0].address"
        );
        // A wildcard WebSocket listener is fine, once the registrar is not left open
        // on it by accident.
        let public = MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080");
        let e = parse(&public).unwrap_err();
        assert_eq!(e.key, "sip.open-registration");
        assert!(
            e.message.contains("listen[0]") && e.message.contains("router"),
            "{e}"
        );
        assert!(parse(&format!("[sip]\nopen-registration = true\n{public}")).is_ok());
        assert!(parse(&format!("[sip]\nrouter = \"p\"\n{public}")).is_ok());
        let e = parse(&format!(
            "[sip]\ntrusted-peers = [\"10.0.0.1/8\"]\n{MINIMAL}"
        ))
        .unwrap_err();
        assert_eq!(e.key, "sip.trusted-peers");
        assert!(e.message.contains("host bits"), "{e}");
        let c = parse(&format!(
            "[sip]\ntrusted-peers = [\"10.0.0.0/8\", \"::1\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.sip.trusted_peers.len(), 2);
        let e = parse(&format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9090\"\n")).unwrap_err();
        assert_eq!(e.key, "admin.token");
        let e = parse(&format!(
            "{MINIMAL}[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"short\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "admin.token");

        let e = parse(&format!("{MINIMAL}deadline = \"50\"\n")).unwrap_err();
        assert_eq!(e.key, "plugins.p.deadline");
        assert!(e.message.contains("no unit"), "{e}");

        let e = parse(&format!("{MINIMAL}suspend-for = \"500ms\"\n")).unwrap_err();
        assert_eq!(e.key, "plugins.p.suspend-for");
        assert!(e.message.contains("between 1s and 60s"), "{e}");
        let c = parse(&format!("{MINIMAL}suspend-after = 0\n")).unwrap();
        assert_eq!(c.plugins["p"].suspend_after, 0);
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.plugins["p"].suspend_after, 20);
        assert_eq!(c.plugins["p"].suspend_for, Duration::from_secs(5));

        let e = parse(&format!("{MINIMAL}colour = 1\n")).unwrap_err();
        assert_eq!(e.key, "plugins.p.colour");
        assert!(e.message.contains("unknown field `colour`"), "{e}");

        let e = parse(&MINIMAL.replace("plugin = \"p\"", "plugin = \"q\"")).unwrap_err();
        assert_eq!(e.key, "listen[0].plugin");

        let e = parse("[[listen]\n").unwrap_err();
        assert_eq!(e.key, "(file)");
        assert!(e.message.contains("line 1"), "{e}");

        let e = parse(&format!("{MINIMAL}memory-limit = \"1TiB\"\n")).unwrap_err();
        assert_eq!(e.key, "plugins.p.memory-limit");
        let text = e.to_string();
        assert!(
            text.starts_with("test.toml: plugins.p.memory-limit: "),
            "{text}"
        );
    }

    #[test]
    fn wss_needs_both_cert_and_key() {
        let text = MINIMAL.replace("\"ws\"", "\"wss\"");
        assert!(parse(&text).is_ok());
        let with_cert = text.replace("plugin = \"p\"", "plugin = \"p\"\ntls-cert = \"c.pem\"");
        assert_eq!(parse(&with_cert).unwrap_err().key, "listen[0].tls-key");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("12 bananas").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
