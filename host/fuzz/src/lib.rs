//! The sans-IO parts of sipwasm (parsers, SIP core), compiled on their own for fuzzing.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "only the sans-IO modules are exercised"
)]

#[path = "../../src/sip/mod.rs"]
pub mod sip;

#[path = "../../src/http/head.rs"]
pub mod http_head;

#[path = "../../src/http/response.rs"]
pub mod http_response;

#[path = "../../src/http/ws_frames.rs"]
pub mod ws_frames;

#[path = "../../src/hex.rs"]
pub mod hex;

#[path = "../../src/auth/mod.rs"]
pub mod auth;

#[path = "../../src/media/mod.rs"]
pub mod media;

#[path = "../../src/core/mod.rs"]
pub mod core;
