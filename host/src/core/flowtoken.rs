//! Flow tokens (RFC 5626 section 5.2): the user part of the Record-Route entry that
//! faces a connection-oriented client, naming the flow so that requests in the dialog
//! reach the same connection. Signed with the server secret so they cannot be forged.
//!
//! A UDP flow is the peer's address (5.2: the 5-tuple): its token (`fu…`) names the
//! address a phone behind NAT really sends from, when its Contact says otherwise, so
//! that requests in the dialog reach it there rather than at a private address.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use std::net::{IpAddr, SocketAddr};

use super::{FlowId, Transport};

/// What an address token names: each kind has its prefix and its own MAC domain, so
/// one kind's token never passes for another's.
#[derive(Debug, Clone, Copy)]
enum AddrKind {
    Udp,
    Tcp,
    Tls,
}

impl AddrKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Udp => "fu",
            Self::Tcp => "fc",
            Self::Tls => "fs",
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Self::Udp => b"udp-flow-token",
            Self::Tcp => b"tcp-next-hop-token",
            Self::Tls => b"tls-next-hop-token",
        }
    }
}

const MAC_LEN: usize = 10;

/// Makes and checks flow tokens.
#[derive(Clone)]
pub struct FlowTokens {
    /// HMAC-SHA256 keyed with the secret once (the key schedule is two hash blocks).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for FlowTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowTokens(..)")
    }
}

impl FlowTokens {
    /// With the server secret.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            keyed: Hmac::<Sha256>::new_from_slice(&secret).expect("any key length"),
        }
    }

    fn mac(&self, flow: FlowId) -> [u8; MAC_LEN] {
        let mut m = self.keyed.clone();
        m.update(b"flow-token");
        m.update(&flow.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token for `flow` (URL-safe, fits a SIP user part).
    pub fn encode(&self, flow: FlowId) -> String {
        let mut raw = [0u8; 8 + MAC_LEN];
        raw[..8].copy_from_slice(&flow.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(flow));
        format!("ft{}", B64.encode(raw))
    }

    fn addr_mac(&self, kind: AddrKind, addr: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.keyed.clone();
        m.update(kind.label());
        m.update(addr);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    fn encode_addr(&self, kind: AddrKind, addr: SocketAddr) -> String {
        self.encode_addr_named(kind, addr, None)
    }

    /// An address token, with 8 more bytes for a name key when there is one (under
    /// the same MAC).
    fn encode_addr_named(&self, kind: AddrKind, addr: SocketAddr, name: Option<u64>) -> String {
        let mut raw = Vec::with_capacity(26 + MAC_LEN);
        match addr.ip() {
            IpAddr::V4(ip) => raw.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => raw.extend_from_slice(&ip.octets()),
        }
        raw.extend_from_slice(&addr.port().to_be_bytes());
        if let Some(n) = name {
            raw.extend_from_slice(&n.to_be_bytes());
        }
        let mac = self.addr_mac(kind, &raw);
        raw.extend_from_slice(&mac);
        format!("{}{}", kind.prefix(), B64.encode(raw))
    }

    fn decode_addr(&self, kind: AddrKind, token: &str) -> Option<SocketAddr> {
        match self.decode_addr_named(kind, token)? {
            (addr, 0) => Some(addr),
            _ => None,
        }
    }

    /// The address a token names and its name key (0 without one).
    fn decode_addr_named(&self, kind: AddrKind, token: &str) -> Option<(SocketAddr, u64)> {
        let raw = B64.decode(token.strip_prefix(kind.prefix())?).ok()?;
        let body_len = raw.len().checked_sub(MAC_LEN)?;
        let (body, mac) = raw.split_at(body_len);
        let (ip, rest) = match body.len() {
            6 | 14 => (
                IpAddr::from(<[u8; 4]>::try_from(&body[..4]).ok()?),
                &body[4..],
            ),
            18 | 26 => (
                IpAddr::from(<[u8; 16]>::try_from(&body[..16]).ok()?),
                &body[16..],
            ),
            _ => return None,
        };
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let name = match rest.len() {
            2 => 0,
            10 => u64::from_be_bytes(rest[2..10].try_into().ok()?),
            _ => return None,
        };
        let diff = self
            .addr_mac(kind, body)
            .iter()
            .zip(mac)
            .fold(0u8, |a, (x, y)| a | (x ^ y));
        (diff == 0 && (rest.len() == 2 || name != 0)).then_some((SocketAddr::new(ip, port), name))
    }

    /// The token for the UDP peer `addr`: its address and port, signed.
    pub fn encode_udp(&self, addr: SocketAddr) -> String {
        self.encode_addr(AddrKind::Udp, addr)
    }

    /// The UDP peer a `fu` token names, if the token is ours and intact.
    pub fn decode_udp(&self, token: &str) -> Option<SocketAddr> {
        self.decode_addr(AddrKind::Udp, token)
    }

    /// The token for a peer the server connects to over TCP (`fc…`) or TLS (`fs…`): a
    /// next hop it chose itself (a trusted peer, a plugin's relay), not a connection of
    /// the peer's; over TLS with the key of the name its certificate must prove (0:
    /// its address). `None` for other transports.
    pub fn encode_connect(
        &self,
        transport: Transport,
        addr: SocketAddr,
        name: u64,
    ) -> Option<String> {
        let kind = match transport {
            Transport::Tcp => AddrKind::Tcp,
            Transport::Tls => AddrKind::Tls,
            _ => return None,
        };
        let name = (transport == Transport::Tls && name != 0).then_some(name);
        Some(self.encode_addr_named(kind, addr, name))
    }

    /// The transport, address and name key a `fc` or `fs` token names, if ours and
    /// intact.
    pub fn decode_connect(&self, token: &str) -> Option<(Transport, SocketAddr, u64)> {
        let (transport, kind) = match token.get(..2)? {
            "fc" => (Transport::Tcp, AddrKind::Tcp),
            "fs" => (Transport::Tls, AddrKind::Tls),
            _ => return None,
        };
        let (addr, name) = self.decode_addr_named(kind, token)?;
        if transport == Transport::Tcp && name != 0 {
            return None;
        }
        Some((transport, addr, name))
    }

    /// The flow a token names, if the token is ours and intact.
    pub fn decode(&self, token: &str) -> Option<FlowId> {
        let raw = B64.decode(token.strip_prefix("ft")?).ok()?;
        if raw.len() != 8 + MAC_LEN {
            return None;
        }
        let flow = FlowId::from_be_bytes(raw[..8].try_into().ok()?);
        let expected = self.mac(flow);
        let diff = expected
            .iter()
            .zip(&raw[8..])
            .fold(0u8, |a, (x, y)| a | (x ^ y));
        (diff == 0).then_some(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let t = FlowTokens::new([9; 32]);
        let tok = t.encode(12345);
        assert!(
            tok.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(t.decode(&tok), Some(12345));
        assert_eq!(FlowTokens::new([1; 32]).decode(&tok), None);
        let mut forged = tok.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(t.decode(std::str::from_utf8(&forged).unwrap()), None);
        assert_eq!(t.decode("alice"), None);
    }

    #[test]
    fn udp_tokens_round_trip_and_resist_forgery() {
        let t = FlowTokens::new([9; 32]);
        for addr in ["203.0.113.5:34567", "[2001:db8::7]:5060"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let tok = t.encode_udp(addr);
            assert!(tok.starts_with("fu"), "{tok}");
            assert!(
                tok[2..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(t.decode_udp(&tok), Some(addr));
            assert_eq!(FlowTokens::new([1; 32]).decode_udp(&tok), None);
            let mut forged = tok.clone().into_bytes();
            forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
            assert_eq!(t.decode_udp(std::str::from_utf8(&forged).unwrap()), None);
            // Not a connection's token, nor the other way round.
            assert_eq!(t.decode(&tok), None);
        }
        assert_eq!(t.decode_udp(&t.encode(7)), None);
        // Connect tokens: their own kind, transport kept.
        let a: SocketAddr = "192.0.2.9:5061".parse().unwrap();
        let tls = t.encode_connect(Transport::Tls, a, 0).unwrap();
        assert_eq!(t.decode_connect(&tls), Some((Transport::Tls, a, 0)));
        let tcp = t.encode_connect(Transport::Tcp, a, 0).unwrap();
        assert_eq!(t.decode_connect(&tcp), Some((Transport::Tcp, a, 0)));
        // A TLS peer's name key travels in its token, under the MAC; TCP has none.
        let named = t.encode_connect(Transport::Tls, a, 0xfeed_beef).unwrap();
        assert_eq!(
            t.decode_connect(&named),
            Some((Transport::Tls, a, 0xfeed_beef))
        );
        assert_eq!(t.encode_connect(Transport::Tcp, a, 7), Some(tcp.clone()));
        let mut raw = B64.decode(&named[2..]).unwrap();
        raw[8] ^= 1;
        assert_eq!(
            t.decode_connect(&format!("fs{}", B64.encode(&raw))),
            None,
            "name key edited"
        );
        // A UDP token (no name room) is not a connect token with a name either.
        assert_eq!(t.decode_udp(&named.replacen("fs", "fu", 1)), None);
        let relabelled = format!("fc{}", &tls[2..]);
        assert_eq!(t.decode_connect(&relabelled), None, "TLS token as TCP");
        assert_eq!(t.decode_udp(&format!("fu{}", &tcp[2..])), None);
        assert_eq!(t.encode_connect(Transport::Udp, a, 0), None);
        assert_eq!(t.decode_udp("fu"), None);
        assert_eq!(t.decode_udp("fuAAAA"), None);
    }
}
