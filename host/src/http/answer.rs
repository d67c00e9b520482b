//! What goes on the wire for a decision, sans-IO: the plugin (or the failure policy)
//! decided; this turns the decision, the handshake check and the request's facts into
//! bytes and what happens to the connection next. Shared by the web listeners and
//! `sipwasm plugin run`.

use std::time::SystemTime;

use super::handshake::{self, HandshakeCheck, HandshakeError};
use super::head::Version;
use super::response::{HeaderList, Response};
use crate::auth::NonceKey;

/// A validated decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this response.
    Reply(Response),
    /// Send 401 with a Digest challenge for this realm.
    Challenge {
        /// The realm.
        realm: String,
    },
    /// Complete the WebSocket handshake.
    Upgrade(Upgrade),
}

/// A validated upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Always `sip` (checked).
    pub subprotocol: String,
    /// Extra headers for the 101.
    pub headers: HeaderList,
    /// Attributes attached to the flow.
    pub identity: Vec<(String, String)>,
}

/// Facts about the request the answer depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts {
    /// HTTP version.
    pub version: Version,
    /// The client asked to close after the response.
    pub client_close: bool,
    /// A HEAD request (no body in the response).
    pub head: bool,
}

/// The bytes to send and what the connection does after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A response; keep reading requests afterwards when `keep_alive`.
    Respond {
        /// The serialized response.
        bytes: Vec<u8>,
        /// Whether the connection stays open.
        keep_alive: bool,
    },
    /// The 101: the connection becomes a WebSocket flow with this identity.
    Upgrade {
        /// The serialized 101.
        bytes: Vec<u8>,
        /// Identity attributes for the flow.
        identity: Vec<(String, String)>,
    },
    /// The plugin asked to upgrade a request that is not a valid SIP WebSocket
    /// handshake: the error response, then close.
    Refuse {
        /// The serialized 400 or 426.
        bytes: Vec<u8>,
        /// Why.
        error: HandshakeError,
    },
}

/// Everything [`answer`] needs besides the decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerContext<'a> {
    /// `Server` header value.
    pub server: &'a str,
    /// For `Date`.
    pub date: SystemTime,
    /// Makes Digest nonces for challenges.
    pub nonce: &'a NonceKey,
    /// The client's address, which a challenge's nonce is bound to.
    pub peer: Option<std::net::IpAddr>,
}

/// Turns a decision into bytes (RFC 9112 responses, RFC 6455 101, RFC 7616 401).
pub(crate) fn answer(
    decision: Decision,
    check: HandshakeCheck,
    facts: RequestFacts,
    cx: AnswerContext<'_>,
) -> Answer {
    let http10 = facts.version == Version::Http10;
    match decision {
        Decision::Reply(resp) => {
            let keep_alive = !resp.close && !facts.client_close;
            Answer::Respond {
                bytes: resp.serialize(cx.server, cx.date, keep_alive, http10, facts.head),
                keep_alive,
            }
        }
        Decision::Challenge { realm } => {
            let now = cx
                .date
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let mut resp = Response::error(401, "");
            resp.close = false;
            for value in cx.nonce.challenge_headers(&realm, now, false, cx.peer) {
                resp.headers.push(("WWW-Authenticate".into(), value));
            }
            let keep_alive = !facts.client_close;
            Answer::Respond {
                bytes: resp.serialize(cx.server, cx.date, keep_alive, http10, facts.head),
                keep_alive,
            }
        }
        Decision::Upgrade(upgrade) => {
            let offer = match check {
                HandshakeCheck::Offer(o) if o.offers_sip() => o,
                refused => {
                    let error = match refused {
                        HandshakeCheck::Invalid(e) => e,
                        HandshakeCheck::Offer(_) => HandshakeError::NoSipSubprotocol,
                        HandshakeCheck::NotWebSocket => HandshakeError::NoUpgradeWebSocket,
                    };
                    let mut resp = Response::error(error.status(), &error.to_string());
                    for (n, v) in error.headers() {
                        resp.headers.push(((*n).into(), (*v).into()));
                    }
                    return Answer::Refuse {
                        bytes: resp.serialize(cx.server, cx.date, false, http10, facts.head),
                        error,
                    };
                }
            };
            Answer::Upgrade {
                bytes: handshake::switching_protocols(
                    &offer,
                    &upgrade.subprotocol,
                    cx.server,
                    &upgrade.headers,
                ),
                identity: upgrade.identity,
            }
        }
    }
}
