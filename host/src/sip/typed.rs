//! Typed views of header values, parsed only when asked for: Via, CSeq, name-addr.

use std::fmt;

use super::headers::{
    Params, check_params, find_param, find_unquoted, param, parse_params, write_params,
};
use super::method::Method;
use super::scan;
use super::uri::{Host, HostRef, Uri, UriRef, split_host_port_ref};

/// One Via value: `SIP/2.0/WS abc.invalid;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased (`UDP`, `TCP`, `TLS`, `WS`, `WSS`, ...).
    pub transport: String,
    /// Sent-by host.
    pub host: Host,
    /// Sent-by port.
    pub port: Option<u16>,
    /// Parameters in order.
    pub params: Params,
}

impl Via {
    /// Parses one Via value.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        ViaRef::parse(s)?.into_owned()
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").flatten()
    }

    /// Whether `rport` is present (with or without value).
    pub fn has_rport(&self) -> bool {
        param(&self.params, "rport").is_some()
    }

    /// Sets a parameter, replacing any existing value (names compared case-insensitively).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_string(), value)),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write_params(f, &self.params)
    }
}

/// A [`Via`] borrowed from its text: checked as [`Via::parse`] checks, without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaRef<'a> {
    /// Transport token, as written.
    pub transport: &'a str,
    /// Sent-by host.
    pub host: HostRef<'a>,
    /// Sent-by port.
    pub port: Option<u16>,
    /// The parameters as written, already checked.
    pub params: &'a str,
}

impl<'a> ViaRef<'a> {
    /// Parses one Via value.
    pub fn parse(s: &'a str) -> Result<Self, &'static str> {
        let s = s.trim_ascii();
        let (proto, rest) = split_ws(s).ok_or("Via without sent-by")?;
        let mut parts = scan::split(proto, b'/').map(str::trim_ascii);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Err("invalid Via protocol");
        }
        match (name, version, transport) {
            (Some(n), Some(v), Some(t))
                if n.eq_ignore_ascii_case("SIP") && v == "2.0" && !t.is_empty() =>
            {
                if !t.bytes().all(super::headers::is_token_char) {
                    return Err("invalid Via transport");
                }
                let (sent_by, params) = match memchr::memchr(b';', rest.as_bytes()) {
                    Some(i) => (rest[..i].trim_ascii(), &rest[i..]),
                    None => (rest.trim_ascii(), ""),
                };
                let (host, port) =
                    split_host_port_ref(sent_by).map_err(|_| "invalid Via sent-by")?;
                check_params(params).map_err(|_| "invalid Via parameter")?;
                Ok(Self {
                    transport: t,
                    host,
                    port,
                    params,
                })
            }
            _ => Err("invalid Via protocol"),
        }
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        find_param(self.params, "branch").flatten()
    }

    /// Whether `rport` is present (with or without value).
    pub fn has_rport(&self) -> bool {
        find_param(self.params, "rport").is_some()
    }

    /// The owned [`Via`] (transport upper-cased).
    pub fn into_owned(self) -> Result<Via, &'static str> {
        Ok(Via {
            transport: self.transport.to_ascii_uppercase(),
            host: self.host.into_owned(),
            port: self.port,
            params: parse_params(self.params).map_err(|_| "invalid Via parameter")?,
        })
    }
}

/// Splits at the first run of whitespace. Via allows LWS around the slashes of the
/// protocol (`SIP / 2.0 / UDP`), so whitespace adjacent to a slash does not count.
fn split_ws(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let prev_slash = i > 0 && b[i - 1] == b'/';
            let next_slash = j < b.len() && b[j] == b'/';
            if !prev_slash && !next_slash {
                return Some((&s[..i], &s[j..]));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// Max-Forwards (RFC 3261 section 20.22): hops a request may still take, 0 to 255 (the
/// parser refuses other values); 70, the value RFC 3261 recommends, when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxForwards(u8);

impl MaxForwards {
    /// A new request's.
    pub const INITIAL: Self = Self(70);

    /// From a Max-Forwards value (`None`: the header is absent; see
    /// [`super::message::Request::max_forwards`]).
    pub fn from_value(value: Option<&str>) -> Self {
        value
            .and_then(|v| v.trim().parse::<u8>().ok())
            .map_or(Self::INITIAL, Self)
    }

    /// No hop left: a proxy answers 483 instead of forwarding (RFC 3261 16.3 step 3).
    pub fn exhausted(self) -> bool {
        self.0 == 0
    }

    /// What the next hop gets (RFC 3261 16.6 step 3).
    #[must_use]
    pub fn after_hop(self) -> Self {
        Self(self.0.saturating_sub(1))
    }

    /// The number of hops.
    pub fn hops(self) -> u8 {
        self.0
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (at most 2^31 - 1 per RFC 3261 section 8.1.1.5).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let mut it = s.split_ascii_whitespace();
        let (Some(n), Some(m), None) = (it.next(), it.next(), it.next()) else {
            return Err("invalid CSeq");
        };
        if n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid CSeq number");
        }
        let seq: u64 = n.parse().map_err(|_| "invalid CSeq number")?;
        if seq > u64::from(u32::MAX >> 1) {
            return Err("CSeq number too large");
        }
        Ok(Self {
            seq: seq as u32,
            method: Method::parse(m).map_err(|_| "invalid CSeq method")?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// `"Alice" <sip:alice@example.org>;tag=1928301774` or `sip:alice@example.org;tag=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, as written (quotes kept).
    pub display: Option<String>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters (after the URI).
    pub params: Params,
}

impl NameAddr {
    /// Parses a From / To / Contact / Route value.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        NameAddrRef::parse(s)?.into_owned()
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// A [`NameAddr`] borrowed from its text: checked as [`NameAddr::parse`] checks,
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddrRef<'a> {
    /// Display name, as written (quotes kept).
    pub display: Option<&'a str>,
    /// The URI.
    pub uri: UriRef<'a>,
    /// Header parameters as written, already checked.
    pub params: &'a str,
}

impl<'a> NameAddrRef<'a> {
    /// Parses a From / To / Contact / Route value.
    pub fn parse(s: &'a str) -> Result<Self, &'static str> {
        let s = s.trim_ascii();
        if let Some(lt) = find_unquoted(s, b'<') {
            let display = s[..lt].trim_ascii();
            if display.starts_with('"') {
                if !(display.len() >= 2 && display.ends_with('"')) {
                    return Err("unterminated display name");
                }
            } else if !display
                .split_ascii_whitespace()
                .all(|w| w.bytes().all(super::headers::is_token_char))
            {
                // An unquoted display name is tokens and spaces (RFC 3261 25.1).
                return Err("display name must be quoted");
            }
            let gt = memchr::memchr(b'>', &s.as_bytes()[lt..]).ok_or("missing '>'")? + lt;
            let uri = UriRef::parse(s[lt + 1..gt].trim_ascii())?;
            let params = &s[gt + 1..];
            check_params(params).map_err(|_| "invalid header parameter")?;
            Ok(Self {
                display: (!display.is_empty()).then_some(display),
                uri,
                params,
            })
        } else {
            // addr-spec: parameters after the URI belong to the header, not to the URI.
            let (uri, params) = match memchr::memchr(b';', s.as_bytes()) {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            if uri.contains(['?', ',']) {
                return Err("URI with headers or commas must be in angle brackets");
            }
            let uri = UriRef::parse(uri.trim_ascii())?;
            check_params(params).map_err(|_| "invalid header parameter")?;
            Ok(Self {
                display: None,
                uri,
                params,
            })
        }
    }

    /// The owned [`NameAddr`].
    pub fn into_owned(self) -> Result<NameAddr, &'static str> {
        Ok(NameAddr {
            display: self.display.map(str::to_string),
            uri: self.uri.into_owned()?,
            params: parse_params(self.params).map_err(|_| "invalid header parameter")?,
        })
    }
}

/// The `tag` parameter of a From or To value, found without building a [`NameAddr`]
/// (the same rules as [`NameAddr::parse`] followed by [`NameAddr::tag`]): this is asked
/// several times per request of values the parser already checked.
pub fn tag_param(value: &str) -> Option<&str> {
    let s = value.trim_ascii();
    let params = match find_unquoted(s, b'<') {
        Some(lt) => &s[scan::find(&s[lt..], b'>')? + lt + 1..],
        None => scan::find(s, b';').map_or("", |i| &s[i..]),
    };
    find_param(params, "tag").flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_forwards_hops_down_to_zero_and_defaults_to_70() {
        let req = |mf: &str| match crate::sip::parse(
            format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n{mf}\
                 From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap()
        {
            crate::sip::Message::Request(r) => r,
            crate::sip::Message::Response(_) => unreachable!(),
        };
        assert_eq!(req("").max_forwards(), MaxForwards::INITIAL);
        let mut r = req("Max-Forwards: 0001\r\n");
        let mf = r.max_forwards();
        assert!(!mf.exhausted() && mf.after_hop().exhausted());
        r.set_max_forwards(mf.after_hop());
        assert_eq!(
            r.headers
                .get_all(&crate::sip::HeaderName::MaxForwards)
                .collect::<Vec<_>>(),
            ["0"]
        );
        assert_eq!(r.max_forwards().after_hop(), r.max_forwards());
    }

    use super::*;

    #[test]
    fn tag_param_agrees_with_name_addr() {
        for v in [
            "<sip:a@b>;tag=x1",
            "<sip:a@b;tag=inuri>",
            "\"A <;tag=q>\" <sip:a@b>;foo;TAG = x2 ",
            "sip:a@b;tag=x3;other",
            "sip:a@b",
            "Bob <sip:b@c>;tag",
            "<sip:a@b>;x=\"tag=no\";tag=x4",
        ] {
            let parsed = NameAddr::parse(v).unwrap();
            assert_eq!(tag_param(v), parsed.tag(), "{v}");
        }
    }

    #[test]
    fn via_round_trip() {
        let v = Via::parse("SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport").unwrap();
        assert_eq!(v.transport, "WS");
        assert_eq!(v.host, Host::Name("df7jal23ls0d.invalid".into()));
        assert_eq!(v.branch(), Some("z9hG4bKasudf"));
        assert!(v.has_rport());
        let mut v = v;
        v.set_param("received", Some("127.0.0.1".into()));
        v.set_param("rport", Some("5555".into()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport=5555;received=127.0.0.1"
        );
        let v = Via::parse("SIP / 2.0 / UDP [::1]:5060 ; branch=z9hG4bK1").unwrap();
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/3.0/UDP host").is_err());
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse("4711  INVITE").unwrap();
        assert_eq!((c.seq, c.method.as_str()), (4711, "INVITE"));
        assert!(CSeq::parse("4711").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("4294967296 INVITE").is_err());
        assert!(CSeq::parse("1 INVITE extra").is_err());
    }

    #[test]
    fn name_addr() {
        let n = NameAddr::parse(r#""Bob <the builder>" <sip:bob@b.org;transport=ws>;tag=a6c85cf"#)
            .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#""Bob <the builder>""#));
        assert_eq!(n.tag(), Some("a6c85cf"));
        assert_eq!(n.uri.as_sip().unwrap().param("transport"), Some(Some("ws")));
        let n = NameAddr::parse("sip:alice@a.org;tag=1").unwrap();
        assert_eq!(n.tag(), Some("1"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        assert!(NameAddr::parse("<sip:alice@a.org").is_err());
        // RFC 4475 baddn: an unquoted display name with a comma.
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(NameAddr::parse("caller<sip:caller@example.com>;tag=323").is_ok());
    }
}
