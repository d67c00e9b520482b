//! The sans-IO parsers of sipwasm, compiled on their own for fuzzing.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    reason = "only the parsers are exercised"
)]

#[path = "../../src/sip/mod.rs"]
pub mod sip;

#[path = "../../src/http/head.rs"]
pub mod http_head;
