//! HTTP/1.1 before the WebSocket upgrade.
//!
//! `head`, `handshake` and `response` are sans-IO (bytes and time in, values out);
//! `reader` is the async part that pulls a request off a socket under limits.

pub mod answer;
pub mod handshake;
pub mod head;
pub mod reader;
pub mod response;
pub mod ws_frames;

pub use answer::{Answer, AnswerContext, Decision, RequestFacts, Upgrade, answer};
pub use handshake::{HandshakeCheck, HandshakeError, UpgradeOffer};
pub use head::{HeadError, HeadLimits, RequestHead, Version};
pub use response::{HeaderList, Response};
