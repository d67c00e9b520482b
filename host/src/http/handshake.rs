//! The WebSocket opening handshake, server side (RFC 6455 section 4.2, RFC 7118),
//! sans-IO: inspect a [`RequestHead`], compute the accept key, build the 101.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::head::{RequestHead, Version};
use super::response::{HeaderList, push_header};

/// The GUID of RFC 6455 section 1.3, appended to the client's key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocol of SIP over WebSocket (RFC 7118 section 4.1).
pub(crate) const SIP_SUBPROTOCOL: &str = "sip";

/// A request that is a valid WebSocket opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeOffer {
    /// `Sec-WebSocket-Key` as sent (trimmed).
    pub key: String,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order.
    pub subprotocols: Vec<String>,
}

impl UpgradeOffer {
    /// Whether the client offered `sip`.
    pub fn offers_sip(&self) -> bool {
        self.subprotocols.iter().any(|p| p == SIP_SUBPROTOCOL)
    }
}

/// What a request is, as a WebSocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeCheck {
    /// It does not ask for a WebSocket.
    NotWebSocket,
    /// A valid handshake.
    Offer(UpgradeOffer),
    /// It asks for a WebSocket but breaks a rule.
    Invalid(HandshakeError),
}

/// A broken WebSocket handshake; [`HandshakeError::status`] gives the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Method other than GET.
    #[error("WebSocket handshake must use GET")]
    NotGet,
    /// HTTP/1.0.
    #[error("WebSocket handshake needs HTTP/1.1")]
    NotHttp11,
    /// No `Host`.
    #[error("WebSocket handshake without Host")]
    NoHost,
    /// `Upgrade` does not contain `websocket`.
    #[error("Upgrade header does not contain websocket")]
    NoUpgradeWebSocket,
    /// `Connection` does not contain the `Upgrade` token.
    #[error("Connection header does not contain the Upgrade token")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing, repeated, or not 16 bytes in base64.
    #[error("Sec-WebSocket-Key missing or not 16 bytes of base64")]
    BadKey,
    /// No `Sec-WebSocket-Version`.
    #[error("Sec-WebSocket-Version missing")]
    NoVersion,
    /// A version other than 13.
    #[error("unsupported Sec-WebSocket-Version (this server speaks 13)")]
    UnsupportedVersion,
    /// The client did not offer the `sip` subprotocol.
    #[error("the client did not offer the sip subprotocol (RFC 7118)")]
    NoSipSubprotocol,
}

impl HandshakeError {
    /// The HTTP status that answers this error: 426 (with `Sec-WebSocket-Version: 13`)
    /// for an unsupported version, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Extra headers the error response must carry.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

/// Checks a request against RFC 6455 section 4.2.1 and RFC 7118.
///
/// A request asks for a WebSocket when it carries `Upgrade: websocket`, a
/// `Sec-WebSocket-Key` or a `Sec-WebSocket-Version`; such a request must then satisfy
/// every rule, or it is [`HandshakeCheck::Invalid`].
pub(crate) fn inspect(head: &RequestHead) -> HandshakeCheck {
    let asks = head.has_token("Upgrade", "websocket")
        || head.header("Sec-WebSocket-Key").is_some()
        || head.header("Sec-WebSocket-Version").is_some();
    if !asks {
        return HandshakeCheck::NotWebSocket;
    }
    match check(head) {
        Ok(offer) => HandshakeCheck::Offer(offer),
        Err(e) => HandshakeCheck::Invalid(e),
    }
}

fn check(head: &RequestHead) -> Result<UpgradeOffer, HandshakeError> {
    if head.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if head.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    if head.header("Host").is_none_or(str::is_empty) {
        return Err(HandshakeError::NoHost);
    }
    // Upgrade is a list of protocol names, each optionally with "/version".
    let upgrade = head
        .headers_named("Upgrade")
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.trim()
                .split('/')
                .next()
                .unwrap_or("")
                .eq_ignore_ascii_case("websocket")
        });
    if !upgrade {
        return Err(HandshakeError::NoUpgradeWebSocket);
    }
    if !head.has_token("Connection", "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let mut keys = head.headers_named("Sec-WebSocket-Key");
    let key = keys.next().ok_or(HandshakeError::BadKey)?.trim();
    if keys.next().is_some() || !key_is_valid(key) {
        return Err(HandshakeError::BadKey);
    }
    let mut versions = head.headers_named("Sec-WebSocket-Version");
    match (versions.next(), versions.next()) {
        (None, _) => return Err(HandshakeError::NoVersion),
        (Some(v), None) if v.trim() == "13" => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let subprotocols: Vec<String> = head
        .headers_named("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    Ok(UpgradeOffer {
        key: key.to_string(),
        subprotocols,
    })
}

/// A key is valid when it is base64 of exactly 16 bytes (RFC 6455 section 4.1).
fn key_is_valid(key: &str) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|k| k.len() == 16)
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The 101 response completing the handshake, with `extra` headers (already
/// validated) after the host's own.
pub(crate) fn switching_protocols(
    offer: &UpgradeOffer,
    subprotocol: &str,
    server: &str,
    extra: &HeaderList,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    push_header(&mut out, "Upgrade", "websocket");
    push_header(&mut out, "Connection", "Upgrade");
    push_header(&mut out, "Sec-WebSocket-Accept", &accept_key(&offer.key));
    push_header(&mut out, "Sec-WebSocket-Protocol", subprotocol);
    push_header(&mut out, "Server", server);
    for (n, v) in extra {
        push_header(&mut out, n, v);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{HeadLimits, parse};

    fn head(text: &str) -> RequestHead {
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_headers: 50,
            max_body_bytes: 0,
        };
        parse(text.as_bytes(), &limits).unwrap().unwrap().0
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: foo, sip\r\n\r\n";

    #[test]
    fn rfc6455_example_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_handshake() {
        match inspect(&head(GOOD)) {
            HandshakeCheck::Offer(o) => {
                assert_eq!(o.subprotocols, ["foo", "sip"]);
                assert!(o.offers_sip());
                let r = String::from_utf8(switching_protocols(&o, "sip", "t", &vec![])).unwrap();
                assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
                assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
                assert!(r.contains("Sec-WebSocket-Protocol: sip\r\n"));
                assert!(r.ends_with("\r\n\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_request_is_not_websocket() {
        let h = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(inspect(&h), HandshakeCheck::NotWebSocket);
    }

    fn invalid(text: String) -> HandshakeError {
        match inspect(&head(&text)) {
            HandshakeCheck::Invalid(e) => e,
            other => panic!("expected invalid, got {other:?} for {text}"),
        }
    }

    #[test]
    fn each_rule() {
        let g = GOOD.to_string();
        assert_eq!(invalid(g.replace("GET", "POST")), HandshakeError::NotGet);
        assert_eq!(
            invalid(g.replace("HTTP/1.1", "HTTP/1.0")),
            HandshakeError::NotHttp11
        );
        assert_eq!(
            invalid(g.replace("Upgrade: websocket", "Upgrade: h2c")),
            HandshakeError::NoUpgradeWebSocket
        );
        assert_eq!(
            invalid(g.replace("keep-alive, Upgrade", "keep-alive")),
            HandshakeError::NoConnectionUpgrade
        );
        assert_eq!(
            invalid(g.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            HandshakeError::BadKey
        );
        assert_eq!(
            invalid(g.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")),
            HandshakeError::BadKey
        );
        let e = invalid(g.replace("Version: 13", "Version: 8"));
        assert_eq!((e, e.status()), (HandshakeError::UnsupportedVersion, 426));
        assert_eq!(e.headers(), [("Sec-WebSocket-Version", "13")]);
        assert_eq!(
            invalid(g.replace("Sec-WebSocket-Version: 13\r\n", "")),
            HandshakeError::NoVersion
        );
    }

    #[test]
    fn sip_not_offered_is_visible() {
        let h = head(&GOOD.replace("foo, sip", "chat"));
        match inspect(&h) {
            HandshakeCheck::Offer(o) => assert!(!o.offers_sip()),
            other => panic!("{other:?}"),
        }
    }
}
