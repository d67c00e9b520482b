//! SIP URIs (RFC 3261 section 19.1): `sip:` and `sips:` parsed, other schemes kept whole.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::headers::{Params, check_params, param, parse_params, write_params};
use super::scan;

/// The host part of a URI or Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `example.org`, `192.0.2.1` or `[2001:db8::1]`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        HostRef::parse(s).map(HostRef::into_owned)
    }

    /// A view of this host (what [`HostRef::parse`] gives for its text).
    pub fn borrowed(&self) -> HostRef<'_> {
        match self {
            Self::Name(n) => HostRef::Name(n),
            Self::V4(a) => HostRef::V4(*a),
            Self::V6(a) => HostRef::V6(*a),
        }
    }

    /// The IP address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Name(_) => None,
            Self::V4(a) => Some(IpAddr::V4(*a)),
            Self::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        HostRef::from(ip).into_owned()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.borrowed().fmt(f)
    }
}

/// A [`Host`] borrowed from the text it was parsed from (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRef<'a> {
    /// A domain name, as written.
    Name(&'a str),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference.
    V6(Ipv6Addr),
}

impl<'a> HostRef<'a> {
    /// Parses `example.org`, `192.0.2.1` or `[2001:db8::1]`.
    pub fn parse(s: &'a str) -> Result<Self, &'static str> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or("unterminated IPv6 reference")?;
            return match inner.parse() {
                Ok(a) => Ok(Self::V6(a)),
                // RFC 5118 4.10: RFC 3261's ABNF admits a third colon before an embedded
                // IPv4 address (`2001:db8:::192.0.2.1`); tolerate it.
                Err(_) if inner.contains(":::") => inner
                    .replacen(":::", "::", 1)
                    .parse()
                    .map(Self::V6)
                    .map_err(|_| "invalid IPv6 address"),
                Err(_) => Err("invalid IPv6 address"),
            };
        }
        if s.is_empty() {
            return Err("empty host");
        }
        if let Ok(v4) = s.parse::<Ipv4Addr>() {
            return Ok(Self::V4(v4));
        }
        let valid = s.split('.').enumerate().all(|(i, label)| {
            // A trailing dot is allowed (fully qualified); other labels must not be empty.
            (label.is_empty() && i > 0 && s.ends_with('.') && s.len() > 1)
                || (!label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-'))
        });
        if !valid {
            return Err("invalid host name");
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err("invalid IPv4 address");
        }
        Ok(Self::Name(s))
    }

    /// The owned [`Host`].
    pub fn into_owned(self) -> Host {
        match self {
            Self::Name(n) => Host::Name(n.to_string()),
            Self::V4(a) => Host::V4(a),
            Self::V6(a) => Host::V6(a),
        }
    }
}

impl From<IpAddr> for HostRef<'_> {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::V4(a),
            IpAddr::V6(a) => Self::V6(a),
        }
    }
}

impl HostRef<'_> {
    /// Writes the host as it displays, without the formatting machinery for names
    /// and IPv4 addresses (every message's Via goes through here).
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Self::Name(n) => out.write_str(n),
            Self::V4(a) => out.write_str(V4Text::new(*a).as_str()),
            Self::V6(a) => write!(out, "[{a}]"),
        }
    }

    /// Appends the host to `out` as it displays.
    pub fn push_to(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = self.write_to(out);
    }
}

/// As [`Host`] displays.
impl fmt::Display for HostRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// Dotted-quad text of an IPv4 address, written without the formatting machinery
/// (`Ipv4Addr`'s `Display` pads and measures; this is on every message's path).
pub struct V4Text {
    buf: [u8; 15],
    len: usize,
}

impl V4Text {
    /// The text of `a`.
    pub fn new(a: Ipv4Addr) -> Self {
        let mut buf = [0u8; 15];
        let mut len = 0;
        for (i, octet) in a.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                buf[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                buf[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            buf[len] = b'0' + octet % 10;
            len += 1;
        }
        Self { buf, len }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and dots were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:`.
    pub secure: bool,
    /// User part, still escaped as received.
    pub user: Option<String>,
    /// Password, still escaped.
    pub password: Option<String>,
    /// Host.
    pub host: Host,
    /// Port, when given.
    pub port: Option<u16>,
    /// URI parameters (`;transport=ws;lr`).
    pub params: Params,
    /// Header part after `?`, raw.
    pub headers: Option<String>,
}

impl SipUri {
    /// A parameter's value (`Some(None)` for a flag such as `lr`).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }
}

/// Any URI in a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` / `sips:`.
    Sip(SipUri),
    /// Another absolute URI (`tel:`, `urn:`, `http:`...), kept as written.
    Other(String),
}

impl Uri {
    /// Parses a URI.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        UriRef::parse(s)?.into_owned()
    }

    /// The SIP URI, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            Self::Other(_) => None,
        }
    }
}

/// A URI borrowed from the text it was parsed from: checked as [`Uri::parse`] checks,
/// without allocating (the parser validates every From, To and Via this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriRef<'a> {
    /// `sip:` / `sips:`.
    Sip(SipUriRef<'a>),
    /// Another absolute URI, as written.
    Other(&'a str),
}

/// A [`SipUri`] borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUriRef<'a> {
    /// `sips:`.
    pub secure: bool,
    /// User part, still escaped.
    pub user: Option<&'a str>,
    /// Password, still escaped.
    pub password: Option<&'a str>,
    /// Host.
    pub host: HostRef<'a>,
    /// Port, when given.
    pub port: Option<u16>,
    /// The parameters as written (`;transport=ws;lr`), already checked.
    pub params: &'a str,
    /// Header part after `?`, raw.
    pub headers: Option<&'a str>,
}

impl<'a> UriRef<'a> {
    /// Parses a URI.
    pub fn parse(s: &'a str) -> Result<Self, &'static str> {
        let (scheme, rest) = scan::split_once(s, b':').ok_or("URI without scheme")?;
        if scheme.is_empty()
            || !scheme.as_bytes()[0].is_ascii_alphabetic()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err("invalid URI scheme");
        }
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            if rest.is_empty()
                || s.bytes()
                    .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
            {
                return Err("invalid URI");
            }
            return Ok(Self::Other(s));
        };
        SipUriRef::parse(rest, secure).map(Self::Sip)
    }

    /// The owned [`Uri`].
    pub fn into_owned(self) -> Result<Uri, &'static str> {
        Ok(match self {
            Self::Sip(u) => Uri::Sip(u.into_owned()?),
            Self::Other(s) => Uri::Other(s.to_string()),
        })
    }
}

impl<'a> SipUriRef<'a> {
    /// Parses what follows `sip:` (or `sips:`, `secure`).
    fn parse(rest: &'a str, secure: bool) -> Result<Self, &'static str> {
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
        {
            return Err("invalid character in URI");
        }
        // An unescaped '@' can only end the userinfo (params and headers can't hold one).
        let (userinfo, hostpart) = match memchr::memchr(b'@', rest.as_bytes()) {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match scan::split_once(ui, b':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err("empty user part");
                }
                check_escapes(u)?;
                (Some(u), p)
            }
            None => (None, None),
        };
        let (before_headers, headers) = match scan::split_once(hostpart, b'?') {
            Some((b, h)) => (b, Some(h)),
            None => (hostpart, None),
        };
        let (hostport, params) = match memchr::memchr(b';', before_headers.as_bytes()) {
            Some(i) => (&before_headers[..i], &before_headers[i..]),
            None => (before_headers, ""),
        };
        let (host, port) = split_host_port_ref(hostport)?;
        check_params(params).map_err(|_| "invalid URI parameter")?;
        Ok(Self {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The owned [`SipUri`].
    pub fn into_owned(self) -> Result<SipUri, &'static str> {
        Ok(SipUri {
            secure: self.secure,
            user: self.user.map(str::to_string),
            password: self.password.map(str::to_string),
            host: self.host.into_owned(),
            port: self.port,
            params: parse_params(self.params).map_err(|_| "invalid URI parameter")?,
            headers: self.headers.map(str::to_string),
        })
    }
}

/// Splits `host[:port]` where host may be an IPv6 reference.
pub fn split_host_port(s: &str) -> Result<(Host, Option<u16>), &'static str> {
    split_host_port_ref(s).map(|(h, p)| (h.into_owned(), p))
}

/// [`split_host_port`], borrowing the host name.
pub fn split_host_port_ref(s: &str) -> Result<(HostRef<'_>, Option<u16>), &'static str> {
    let (host, port) = if s.starts_with('[') {
        match scan::find(s, b']') {
            Some(end) => {
                let (h, after) = s.split_at(end + 1);
                match after.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None if after.is_empty() => (h, None),
                    None => return Err("garbage after IPv6 reference"),
                }
            }
            None => return Err("unterminated IPv6 reference"),
        }
    } else {
        match scan::rsplit_once(s, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid port");
            }
            Some(p.parse::<u16>().map_err(|_| "port out of range")?)
        }
        None => None,
    };
    Ok((HostRef::parse(host)?, port))
}

fn check_escapes(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return Err("truncated escape in URI");
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err("invalid escape in URI");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece with `write_str`: every binding and forwarded request is
        // written through here, and `write!` goes through the formatting machinery.
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                f.write_str(":")?;
                f.write_str(p)?;
            }
            f.write_str("@")?;
        }
        self.host.borrowed().fmt(f)?;
        if let Some(p) = self.port {
            f.write_str(":")?;
            f.write_str(itoa::Buffer::new().format(p))?;
        }
        write_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            f.write_str("?")?;
            f.write_str(h)?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => u.fmt(f),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// Whether a user part holds byte `c` as is: unreserved and user-unreserved (RFC 3261
/// 25.1); every other byte is escaped.
pub fn is_user_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c)
}

/// Appends `user` with each escape of a character a user part may hold as it is
/// unescaped, and the other escapes in upper-case hex: `%61lice` is `alice` and
/// `%2b1555` is `+1555` (RFC 3261 10.3 step 5; 19.1.4 makes them equal), `a%40b`
/// stays `a%40b`.
pub fn push_canonical_user(out: &mut String, user: &str) {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let plain = is_user_char;
    let b = user.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            let c = h << 4 | l;
            if plain(c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push_str(&user[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        let len = user[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&user[i..i + len]);
        i += len;
    }
}

/// Whether two SIP URIs are equal as RFC 3261 19.1.4 compares them: scheme, user and
/// password (escapes resolved, case-sensitive), host (case-insensitive), port (an absent
/// one differs from 5060), the `user`, `ttl`, `method`, `maddr` and `transport`
/// parameters (present in both with equal values, or in neither), other parameters only
/// where both have them, and the headers part.
pub fn same_sip_uri(a: &SipUri, b: &SipUri) -> bool {
    let canonical = |s: &Option<String>| {
        s.as_deref().map(|s| {
            let mut out = String::with_capacity(s.len());
            push_canonical_user(&mut out, s);
            out
        })
    };
    let host_eq = match (&a.host, &b.host) {
        (Host::Name(x), Host::Name(y)) => x.eq_ignore_ascii_case(y),
        (x, y) => x == y,
    };
    // The cheap fields first; the parameters last (they may be many).
    a.secure == b.secure
        && host_eq
        && a.port == b.port
        && a.headers == b.headers
        && canonical(&a.user) == canonical(&b.user)
        && canonical(&a.password) == canonical(&b.password)
        && same_params(&a.params, &b.params)
}

/// The parameter half of [`same_sip_uri`]: a parameter both have must have equal values
/// (case-insensitive); one only one has must not be in [`MUST_MATCH`]. The first of
/// duplicate names counts. Quadratic for the few parameters URIs have, sorted (n log n)
/// past that, so a URI with thousands of parameters costs no more than reading it.
fn same_params(a: &[(String, Option<String>)], b: &[(String, Option<String>)]) -> bool {
    type Param = (String, Option<String>);
    let value_eq = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        (x, y) => x == y,
    };
    let must_match = |name: &str| MUST_MATCH.iter().any(|m| name.eq_ignore_ascii_case(m));
    if a.len() <= 8 && b.len() <= 8 {
        return a.iter().all(|(name, av)| {
            match b.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, bv)) => value_eq(av.as_deref(), bv.as_deref()),
                None => !must_match(name),
            }
        }) && b.iter().all(|(name, _)| {
            a.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) || !must_match(name)
        });
    }
    // Lower-cased names, sorted, the first of each name kept (a stable sort keeps
    // duplicates in their order).
    fn sorted(ps: &[Param]) -> Vec<(String, Option<&str>)> {
        let mut v: Vec<(String, Option<&str>)> = ps
            .iter()
            .map(|(n, val)| (n.to_ascii_lowercase(), val.as_deref()))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v.dedup_by(|later, first| later.0 == first.0);
        v
    }
    let (a, b) = (sorted(a), sorted(b));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The side whose next name sorts first is the one with a name the other lacks.
        let (x, y) = (a.get(i), b.get(j));
        match (x, y) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if !value_eq(x.1, y.1) {
                    return false;
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 > y.0 => {
                if must_match(&y.0) {
                    return false;
                }
                j += 1;
            }
            (Some(x), _) => {
                if must_match(&x.0) {
                    return false;
                }
                i += 1;
            }
            (None, Some(y)) => {
                if must_match(&y.0) {
                    return false;
                }
                j += 1;
            }
            (None, None) => break,
        }
    }
    true
}

/// URI parameters that make two URIs differ when only one has them (RFC 3261 19.1.4).
const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_parameters_compare_as_few_do() {
        let sip = |s: &str| match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("{other:?}"),
        };
        let long = |extra: &str| {
            let p: String = (0..20).map(|i| format!(";p{i}=v{i}")).collect();
            sip(&format!("sip:a@h{p}{extra}"))
        };
        assert!(
            same_sip_uri(&long(""), &long(";other=1")),
            "one side only: ignored"
        );
        assert!(
            same_sip_uri(&long(";P19=V19"), &long("")),
            "case-insensitive"
        );
        assert!(
            !same_sip_uri(&long(";transport=tcp"), &long("")),
            "must match"
        );
        assert!(
            !same_sip_uri(&long(""), &long(";maddr=1.2.3.4")),
            "must match"
        );
        assert!(same_sip_uri(
            &long(";transport=TCP"),
            &long(";transport=tcp")
        ));
        assert!(!same_sip_uri(&long(";x=1"), &long(";x=2")));
    }

    #[test]
    fn uris_compare_as_rfc_3261_says() {
        let sip = |s: &str| match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            Uri::Other(_) => panic!("{s}"),
        };
        let same = |a: &str, b: &str| same_sip_uri(&sip(a), &sip(b));
        // The examples of RFC 3261 19.1.4, equal ones.
        assert!(same(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(same(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(same(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(same(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        // And different ones.
        assert!(!same(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!same("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!same(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!same("sip:bob@biloxi.com", "sips:bob@biloxi.com"));
        assert!(!same(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off"
        ));
        assert!(!same("sip:a@[::1]:5060", "sip:a@127.0.0.1:5060"));
        assert!(same("sip:a@[::1]:5060;ob", "sip:a@[0:0::1]:5060;ob"));
    }

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v4_text_matches_display() {
        for a in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [192, 168, 1, 254],
        ] {
            let a = Ipv4Addr::from(a);
            assert_eq!(V4Text::new(a).as_str(), a.to_string());
        }
    }

    #[test]
    fn forms() {
        let u = sip("sip:alice:secret@example.org:5060;transport=ws;lr?subject=x");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Name("example.org".into()));
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.param("TRANSPORT"), Some(Some("ws")));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("subject=x"));
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@example.org:5060;transport=ws;lr?subject=x"
        );

        let u = sip("sips:[2001:db8::1]:5061");
        assert!(u.secure);
        assert_eq!(u.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.to_string(), "sips:[2001:db8::1]:5061");

        let u = sip("sip:%61lice;x=y@127.0.0.1");
        assert_eq!(u.user.as_deref(), Some("%61lice;x=y"));
        assert_eq!(u.host, Host::V4("127.0.0.1".parse().unwrap()));

        assert_eq!(
            Uri::parse("tel:+1-201-555-0123").unwrap(),
            Uri::Other("tel:+1-201-555-0123".into())
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "alice@example.org",
            "sip:",
            "sip:@example.org",
            "sip:a@exa mple.org",
            "sip:a@example.org:99999",
            "sip:a@[::1",
            "sip:a@example.org:",
            "sip:a%4@example.org",
            "sip:a@-bad-.org",
            "sip:a@256.1.1.1",
            "1sip:a@b",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
