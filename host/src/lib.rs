//! sipwasm: a SIP server for browsers (SIP over WebSocket, RFC 7118) and phones (UDP,
//! TCP, TLS), whose admission and policy decisions are made by sandboxed WebAssembly
//! component plugins.
//!
//! # How a message goes through
//!
//! ```text
//!  browser                                               phone
//!    │ TCP/TLS                                             │ UDP / TCP / TLS
//!    ▼                                                     ▼
//!  transport::ws ── http::reader ─▶ http::head ─▶ http::handshake
//!    │                                 │
//!    │              plugin (http-handler: reply | challenge | upgrade)
//!    │ 101 upgrade                     │
//!    ▼                                 ▼
//!  WebSocket flow ──────────┐   transport::{udp, tcp} ── sip::framing
//!                           ▼           │
//!                    sip::parse ◀───────┘
//!                           │ Input
//!                           ▼
//!             driver::CoreCell ──▶ core::Core::handle (sans-IO: registrar,
//!                           │          transactions, proxy, location)
//!      route_query ◀────────┤
//!      plugin (sip-router)  │ poll_transmit / poll_event
//!      ──▶ route ──────────▶│
//!                           ▼
//!             driver::outlet ──▶ flow send queue / UDP socket / new connection
//!                           │
//!                           ▼ BindingSaved / Removed
//!                         store (SQLite, its own thread)
//! ```
//!
//! # Modules, lowest first
//!
//! Each imports only modules above it in this list (`host/tests/module_arrows.rs`
//! fails on a circle); the first six are sans-IO: bytes and time in, values out
//! (`host/tests/sans_io.rs`).
//!
//! - [`sip`]: SIP messages: parse, framing, headers, URIs, serialization, the
//!   response for a request.
//! - `hex`: lower-case hex.
//! - [`media`]: rtpengine's ng protocol (bencode, commands, replies, flag sets).
//! - [`core`]: the SIP core: transactions, registrar, location, proxy, flow tokens,
//!   limits. One object driven by inputs, asked for what to send.
//! - [`auth`]: Digest nonces and responses, password-guessing bans.
//! - [`http`]: HTTP request heads, the WebSocket handshake, responses (and `reader.rs`,
//!   the one async reader).
//! - `files`: private files and directories in the data directory.
//! - [`keys`]: the named keys plugins sign and verify with (`[keys]`).
//! - [`users`]: the user store (HA1 per realm) logins are checked against.
//! - [`config`]: the configuration file, its defaults and checks.
//! - [`builtin`]: the plugins compiled into the binary.
//! - [`metrics`]: counters and gauges.
//! - `dns`: next hops named by a host name, resolved as RFC 3263 says (hickory),
//!   cached by TTL.
//! - `store`: the SQLite location store for UDP bindings.
//! - [`plugin`]: the wasmtime host: engine, pools, limits, host imports, decisions.
//! - `driver`: runs the core for the tasks that bring it inputs; the flow table; the
//!   outlet that sends what it produced.
//! - `transport`: sockets: UDP, TCP/TLS streams, web connections and WebSocket flows,
//!   admission and rate gates.
//! - `admin`: the admin API.
//! - [`memory`]: how freed memory goes back to the system.
//! - [`server`]: the wiring.
//!
//! Modules in code font are the crate's own; the others are public for the binary,
//! the end-to-end tests, the benchmarks and the fuzz targets (which compile the
//! sans-IO files on their own, `host/fuzz`).

pub(crate) mod admin;
pub mod auth;
pub mod builtin;
pub(crate) mod capture;
pub(crate) mod cluster;
pub mod config;
pub mod core;
pub mod ctl;
pub(crate) mod dns;
pub mod drain;
pub(crate) mod driver;
pub(crate) mod files;
pub(crate) mod hex;
pub mod http;
pub mod keys;
pub mod logs;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod plugin;
pub mod server;
pub mod sip;
pub(crate) mod store;
pub(crate) mod transport;
pub mod users;
