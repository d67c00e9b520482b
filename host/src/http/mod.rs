//! HTTP/1.1 before the WebSocket upgrade.
//!
//! `head`, `handshake` and `response` are sans-IO (bytes and time in, values out);
//! `reader` is the async part that pulls a request off a socket under limits.

pub(crate) mod answer;
pub(crate) mod handshake;
pub mod head;
pub(crate) mod reader;
pub mod response;
pub mod ws_frames;
