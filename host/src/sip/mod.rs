//! The SIP message layer, sans-IO: bytes in, typed messages out, and back.
//!
//! No sockets, no tasks, no clock here (CI checks that `tokio` never appears).

pub mod framing;
pub mod headers;
pub mod message;
pub mod method;
pub mod parse;
pub mod reply;
pub(crate) mod scan;
pub mod serialize;
pub mod typed;
pub mod uri;

pub use headers::{HeaderName, Headers};
pub use message::{Essentials, Message, Method, Request, Response};
pub use parse::{ParseError, error_response, parse, refusal_response};
pub use typed::{CSeq, MaxForwards, NameAddr, Via};
pub use uri::{Host, SipUri, Uri};
