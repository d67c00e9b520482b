//! sipwasm: a SIP server for browsers (SIP over WebSocket, RFC 7118) and phones, whose
//! admission and policy decisions are made by sandboxed WebAssembly component plugins.
//!
//! ```text
//! TCP/TLS accept ─▶ http::reader (limits) ─▶ http::head ─▶ http::handshake::inspect
//!                     └▶ plugin::Plugin::decide ─▶ reply | challenge | upgrade
//!                          upgrade ─▶ 101 ─▶ transport::ws flow (flow table)
//! WS message ─▶ sip::parse ─▶ core::Core::handle ─▶ poll_transmit ─▶ flow send
//! ```
//!
//! The sans-IO rule: `sip/`, `core/` and `http/` (except `http/reader.rs`) take bytes
//! and time and return values; they never touch tokio, sockets or the clock. Only
//! `transport/`, `plugin/`, `admin.rs`, `driver.rs`, `server.rs`, `memory.rs` and `main.rs`
//! do I/O.

pub mod admin;
pub mod auth;
pub mod builtin;
pub mod config;
pub mod core;
pub mod driver;
pub(crate) mod hex;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod plugin;
pub mod server;
pub mod sip;
pub mod store;
pub mod transport;
