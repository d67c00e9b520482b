//! rtpengine's "ng" control protocol, sans-IO: a request is a cookie, a space and a
//! bencoded dictionary in one UDP datagram; the reply carries the same cookie. The
//! daemon answers a cookie it has seen in the last 30–60 s from its cache without acting
//! again, so a retry resends the same bytes, and cookies must not repeat.
//!
//! Bencode: byte strings `<len>:<bytes>`, integers `i<n>e`, lists `l…e`, dictionaries
//! `d<key><value>…e`. rtpengine neither sorts the keys it sends nor needs ours sorted;
//! [`Value::encode`] writes them in the order given and [`Value::decode`] takes any.

use std::fmt;

/// The largest datagram rtpengine reads (and so the largest request).
pub const MAX_DATAGRAM: usize = 65_535;

/// Nesting deeper than this is refused (a `query` reply nests five deep).
const MAX_DEPTH: usize = 32;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A byte string (SDP goes in as it is).
    Bytes(Vec<u8>),
    /// An integer.
    Int(i64),
    /// A list.
    List(Vec<Value>),
    /// A dictionary, in the order of its keys on the wire.
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why a datagram is not an ng message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NgError {
    /// No space after the cookie, or an empty cookie.
    NoCookie,
    /// The bencoding stops before its end.
    Truncated,
    /// A byte where bencoding allows none, at this offset.
    Unexpected(usize),
    /// An integer or length out of range, or with leading zeros.
    BadNumber(usize),
    /// Nested deeper than 32 levels.
    TooDeep,
    /// Bytes after the value.
    Trailing(usize),
    /// The document is not a dictionary.
    NotADict,
}

impl fmt::Display for NgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCookie => f.write_str("no cookie"),
            Self::Truncated => f.write_str("bencoding cut short"),
            Self::Unexpected(at) => write!(f, "unexpected byte at offset {at}"),
            Self::BadNumber(at) => write!(f, "bad number at offset {at}"),
            Self::TooDeep => f.write_str("nested too deep"),
            Self::Trailing(at) => write!(f, "bytes after the value at offset {at}"),
            Self::NotADict => f.write_str("not a dictionary"),
        }
    }
}

impl std::error::Error for NgError {}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }

    /// A list of byte strings.
    pub fn strs<S: AsRef<str>>(items: &[S]) -> Self {
        Self::List(items.iter().map(|s| Self::str(s.as_ref())).collect())
    }

    /// Appends the bencoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bytes(b) => encode_bytes(b, out),
            Self::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Self::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Self::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    encode_bytes(k, out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The one value `input` holds, all of it.
    pub fn decode(input: &[u8]) -> Result<Self, NgError> {
        let mut at = 0;
        let v = decode_at(input, &mut at, 0)?;
        if at != input.len() {
            return Err(NgError::Trailing(at));
        }
        Ok(v)
    }

    /// The value under `key` in a dictionary (the first, if the key repeats).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Dict(entries) => entries
                .iter()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A byte string's bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string as text (lossy: rtpengine's texts are ASCII).
    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// An integer, or a byte string that holds one (rtpengine writes both).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Digits from `*at` up to `end` (exclusive), as a number: no sign unless `signed`, no
/// leading zeros, no overflow.
fn number(input: &[u8], at: &mut usize, end: u8, signed: bool) -> Result<i64, NgError> {
    let start = *at;
    let negative = signed && input.get(*at) == Some(&b'-');
    if negative {
        *at += 1;
    }
    let digits_from = *at;
    let mut n: i64 = 0;
    loop {
        match input.get(*at) {
            None => return Err(NgError::Truncated),
            Some(&c) if c == end => break,
            Some(c @ b'0'..=b'9') => {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(c - b'0')))
                    .ok_or(NgError::BadNumber(start))?;
                *at += 1;
            }
            Some(_) => return Err(NgError::Unexpected(*at)),
        }
    }
    let digits = &input[digits_from..*at];
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || (negative && n == 0) {
        return Err(NgError::BadNumber(start));
    }
    *at += 1; // the end byte
    Ok(if negative { -n } else { n })
}

fn decode_bytes(input: &[u8], at: &mut usize) -> Result<Vec<u8>, NgError> {
    let start = *at;
    let len = number(input, at, b':', false)?;
    let len = usize::try_from(len).map_err(|_| NgError::BadNumber(start))?;
    let end = at.checked_add(len).ok_or(NgError::BadNumber(start))?;
    let bytes = input.get(*at..end).ok_or(NgError::Truncated)?;
    *at = end;
    Ok(bytes.to_vec())
}

fn decode_at(input: &[u8], at: &mut usize, depth: usize) -> Result<Value, NgError> {
    if depth > MAX_DEPTH {
        return Err(NgError::TooDeep);
    }
    match input.get(*at) {
        None => Err(NgError::Truncated),
        Some(b'i') => {
            *at += 1;
            number(input, at, b'e', true).map(Value::Int)
        }
        Some(b'l') => {
            *at += 1;
            let mut items = Vec::new();
            while input.get(*at) != Some(&b'e') {
                items.push(decode_at(input, at, depth + 1)?);
            }
            *at += 1;
            Ok(Value::List(items))
        }
        Some(b'd') => {
            *at += 1;
            let mut entries = Vec::new();
            while input.get(*at) != Some(&b'e') {
                match input.get(*at) {
                    None => return Err(NgError::Truncated),
                    Some(b'0'..=b'9') => {}
                    Some(_) => return Err(NgError::Unexpected(*at)),
                }
                let k = decode_bytes(input, at)?;
                let v = decode_at(input, at, depth + 1)?;
                entries.push((k, v));
            }
            *at += 1;
            Ok(Value::Dict(entries))
        }
        Some(b'0'..=b'9') => decode_bytes(input, at).map(Value::Bytes),
        Some(_) => Err(NgError::Unexpected(*at)),
    }
}

/// A request datagram: `cookie`, a space, the bencoded `dict`.
pub fn request(cookie: &str, dict: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 256);
    out.extend_from_slice(cookie.as_bytes());
    out.push(b' ');
    dict.encode(&mut out);
    out
}

/// The cookie of a reply datagram and its dictionary.
pub fn split_reply(datagram: &[u8]) -> Result<(&[u8], Value), NgError> {
    let space = datagram
        .iter()
        .position(|&b| b == b' ')
        .ok_or(NgError::NoCookie)?;
    if space == 0 {
        return Err(NgError::NoCookie);
    }
    let v = Value::decode(&datagram[space + 1..])?;
    if !matches!(v, Value::Dict(_)) {
        return Err(NgError::NotADict);
    }
    Ok((&datagram[..space], v))
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `result: ok` (a warning when the daemon has one, the SDP for offer and answer).
    Ok {
        /// The rewritten SDP (offer, answer).
        sdp: Option<Vec<u8>>,
        /// A non-fatal problem (`delete` of an unknown call).
        warning: Option<String>,
        /// The whole dictionary (`query` counters, `delete` statistics).
        dict: Value,
    },
    /// `result: pong`.
    Pong,
    /// `result: error` with its reason.
    Error(String),
    /// `result: load limit`: this engine takes no new calls now.
    LoadLimit(String),
}

impl Reply {
    /// Reads a reply dictionary.
    pub fn of(dict: Value) -> Self {
        let result = dict.get("result").and_then(Value::as_text);
        match result.as_deref() {
            Some("ok") => Self::Ok {
                sdp: dict
                    .get("sdp")
                    .and_then(Value::as_bytes)
                    .map(<[u8]>::to_vec),
                warning: dict.get("warning").and_then(Value::as_text),
                dict,
            },
            Some("pong") => Self::Pong,
            Some("load limit") => Self::LoadLimit(
                dict.get("message")
                    .and_then(Value::as_text)
                    .unwrap_or_else(|| "load limit".into()),
            ),
            Some("error") => Self::Error(
                dict.get("error-reason")
                    .and_then(Value::as_text)
                    .unwrap_or_else(|| "(no reason)".into()),
            ),
            Some(other) => Self::Error(format!("unknown result {other:?}")),
            None => Self::Error("reply without a result".into()),
        }
    }
}

/// The sessions an engine holds now, from its `statistics` reply
/// (`statistics.currentstatistics.sessionsown`).
pub fn sessions_of(statistics: &Value) -> Option<i64> {
    statistics
        .get("statistics")?
        .get("currentstatistics")?
        .get("sessionsown")?
        .as_int()
}

/// How the media toward one side is written: the ng keys of an offer or answer whose
/// SDP goes to that side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    /// `transport-protocol` (`RTP/AVP`, `UDP/TLS/RTP/SAVPF`…).
    pub transport_protocol: Option<String>,
    /// `ICE`: `force`, `remove`…
    pub ice: Option<String>,
    /// `DTLS`: `off`, `passive`…
    pub dtls: Option<String>,
    /// `SDES` items (`off`).
    pub sdes: Vec<String>,
    /// `rtcp-mux` items (`offer`, `require`, `demux`…).
    pub rtcp_mux: Vec<String>,
    /// `flags` items (`generate-mid`, `trust-address`, `codec-…`).
    pub flags: Vec<String>,
    /// `replace` items (`origin`, `session-connection`).
    pub replace: Vec<String>,
}

impl Flags {
    /// Toward a browser (WebRTC): DTLS-SRTP with ICE, RTCP multiplexed, a `mid`.
    pub fn toward_webrtc() -> Self {
        Self {
            transport_protocol: Some("UDP/TLS/RTP/SAVPF".into()),
            ice: Some("force".into()),
            dtls: None,
            sdes: vec!["off".into()],
            rtcp_mux: vec!["offer".into(), "require".into()],
            flags: vec!["generate-mid".into()],
            replace: vec!["origin".into(), "session-connection".into()],
        }
    }

    /// Toward a plain SIP phone: RTP/AVP, no ICE, no DTLS, RTCP on its own port.
    pub fn toward_plain() -> Self {
        Self {
            transport_protocol: Some("RTP/AVP".into()),
            ice: Some("remove".into()),
            dtls: Some("off".into()),
            sdes: vec!["off".into()],
            rtcp_mux: vec!["demux".into()],
            flags: Vec::new(),
            replace: vec!["origin".into(), "session-connection".into()],
        }
    }

    fn add_to(&self, d: &mut Vec<(Vec<u8>, Value)>) {
        let mut put = |k: &str, v: Value| d.push((k.as_bytes().to_vec(), v));
        if let Some(p) = &self.transport_protocol {
            put("transport-protocol", Value::str(p));
        }
        if let Some(i) = &self.ice {
            put("ICE", Value::str(i));
        }
        if let Some(x) = &self.dtls {
            put("DTLS", Value::str(x));
        }
        if !self.sdes.is_empty() {
            put("SDES", Value::strs(&self.sdes));
        }
        if !self.rtcp_mux.is_empty() {
            put("rtcp-mux", Value::strs(&self.rtcp_mux));
        }
        if !self.flags.is_empty() {
            put("flags", Value::strs(&self.flags));
        }
        if !self.replace.is_empty() {
            put("replace", Value::strs(&self.replace));
        }
    }
}

/// Which call, which side of it: `from_tag` is always the offerer's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The tag of the party whose SDP is the offer.
    pub from_tag: String,
    /// The answerer's tag, once known.
    pub to_tag: Option<String>,
    /// The branch of the Via this server put on the forked request (one media session
    /// per branch, so a losing branch is deleted alone).
    pub via_branch: Option<String>,
}

impl Leg {
    fn add_to(&self, d: &mut Vec<(Vec<u8>, Value)>) {
        d.push((b"call-id".to_vec(), Value::str(&self.call_id)));
        d.push((b"from-tag".to_vec(), Value::str(&self.from_tag)));
        if let Some(t) = &self.to_tag {
            d.push((b"to-tag".to_vec(), Value::str(t)));
        }
        if let Some(b) = &self.via_branch {
            d.push((b"via-branch".to_vec(), Value::str(b)));
        }
    }
}

/// An ng command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Is the engine there?
    Ping,
    /// An SDP offer, rewritten for the side it goes to.
    Offer {
        /// The call and the offerer's tag.
        leg: Leg,
        /// The SDP as it came.
        sdp: Vec<u8>,
        /// How to write it for its recipient.
        flags: Flags,
    },
    /// An SDP answer (`leg.to_tag` is the answerer's), rewritten for the offerer.
    Answer {
        /// The call, the offerer's and the answerer's tags.
        leg: Leg,
        /// The SDP as it came.
        sdp: Vec<u8>,
        /// How to write it for its recipient.
        flags: Flags,
    },
    /// Ends the media of a call, or of one branch of it (`via_branch` without
    /// `to_tag`), at once.
    Delete {
        /// Which call or branch.
        leg: Leg,
    },
    /// Ends the media of a whole call at once.
    DeleteCall {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// Counters of a call.
    Query {
        /// The SIP Call-ID.
        call_id: String,
    },
    /// The engine's own counters (its sessions).
    Statistics,
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Delete { .. } | Self::DeleteCall { .. } => "delete",
            Self::Query { .. } => "query",
            Self::Statistics => "statistics",
        }
    }

    /// The command's dictionary.
    pub fn dict(&self) -> Value {
        let mut d: Vec<(Vec<u8>, Value)> = vec![(b"command".to_vec(), Value::str(self.name()))];
        match self {
            Self::Ping | Self::Statistics => {}
            Self::Offer { leg, sdp, flags } | Self::Answer { leg, sdp, flags } => {
                leg.add_to(&mut d);
                d.push((b"sdp".to_vec(), Value::Bytes(sdp.clone())));
                flags.add_to(&mut d);
                // A new call on a full engine answers `load limit`, not a bare error.
                d.push((b"supports".to_vec(), Value::strs(&["load limit"])));
            }
            Self::Delete { leg } => {
                leg.add_to(&mut d);
                // Now, not after the daemon's default 30 s.
                d.push((b"delete delay".to_vec(), Value::Int(0)));
            }
            Self::DeleteCall { call_id } => {
                d.push((b"call-id".to_vec(), Value::str(call_id)));
                d.push((b"delete delay".to_vec(), Value::Int(0)));
            }
            Self::Query { call_id } => d.push((b"call-id".to_vec(), Value::str(call_id))),
        }
        Value::Dict(d)
    }

    /// The datagram with `cookie`.
    pub fn datagram(&self, cookie: &str) -> Vec<u8> {
        request(cookie, &self.dict())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v = Value::Dict(vec![
            (
                b"sdp".to_vec(),
                Value::Bytes(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n".to_vec()),
            ),
            (b"n".to_vec(), Value::Int(-42)),
            (
                b"l".to_vec(),
                Value::List(vec![Value::str("a b"), Value::Int(0), Value::List(vec![])]),
            ),
            (b"empty".to_vec(), Value::Bytes(Vec::new())),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(
            out,
            b"d3:sdp29:v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n1:ni-42e1:ll3:a bi0elee5:empty0:e"
        );
        assert_eq!(Value::decode(&out), Ok(v));
    }

    #[test]
    fn replies_as_rtpengine_writes_them() {
        let (cookie, d) = split_reply(b"5323_1 d6:result4:ponge").unwrap();
        assert_eq!(cookie, b"5323_1");
        assert_eq!(Reply::of(d), Reply::Pong);

        let (_, d) = split_reply(b"X d3:sdp5:v=0\r\n6:result2:oke").unwrap();
        assert!(
            matches!(Reply::of(d), Reply::Ok { sdp: Some(s), warning: None, .. } if s == b"v=0\r\n")
        );

        let (_, d) =
            split_reply(b"X d7:warning38:Call-ID not found or tags didn't match6:result2:oke")
                .unwrap();
        assert!(
            matches!(Reply::of(d), Reply::Ok { warning: Some(w), .. } if w.starts_with("Call-ID not found"))
        );

        let (_, d) = split_reply(b"X d6:result5:error12:error-reason15:Unknown call-ide").unwrap();
        assert_eq!(Reply::of(d), Reply::Error("Unknown call-id".into()));

        let (_, d) =
            split_reply(b"X d6:result10:load limit7:message30:Parallel session limit reachede")
                .unwrap();
        assert_eq!(
            Reply::of(d),
            Reply::LoadLimit("Parallel session limit reached".into())
        );
    }

    #[test]
    fn broken_input_gets_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"d",
            b"d3:abc",
            b"d3:abci1",
            b"i01e",
            b"i-0e",
            b"ie",
            b"i99999999999999999999e",
            b"99999999999999999999:x",
            b"5:abc",
            b"x",
            b"d1:a1:be trailing",
            b"di1e1:ae",
            b"l",
        ] {
            assert!(
                Value::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = [vec![b'l'; 100], vec![b'e'; 100]].concat();
        assert_eq!(Value::decode(&deep), Err(NgError::TooDeep));
        assert_eq!(split_reply(b"nospace").unwrap_err(), NgError::NoCookie);
        assert_eq!(
            split_reply(b" d6:result4:ponge").unwrap_err(),
            NgError::NoCookie
        );
        assert_eq!(split_reply(b"c i1e").unwrap_err(), NgError::NotADict);
    }

    #[test]
    fn an_offer_toward_a_browser_carries_the_webrtc_keys_as_lists() {
        let cmd = Command::Offer {
            leg: Leg {
                call_id: "c1".into(),
                from_tag: "ft".into(),
                to_tag: None,
                via_branch: Some("z9hG4bK1".into()),
            },
            sdp: b"v=0\r\n".to_vec(),
            flags: Flags::toward_webrtc(),
        };
        let d = Value::decode(&cmd.datagram("ck_1")[5..]).unwrap();
        assert_eq!(d.get("command"), Some(&Value::str("offer")));
        assert_eq!(d.get("via-branch"), Some(&Value::str("z9hG4bK1")));
        assert_eq!(d.get("to-tag"), None);
        assert_eq!(d.get("ICE"), Some(&Value::str("force")));
        assert_eq!(d.get("rtcp-mux"), Some(&Value::strs(&["offer", "require"])));
        assert_eq!(d.get("SDES"), Some(&Value::strs(&["off"])));
        assert_eq!(
            d.get("replace"),
            Some(&Value::strs(&["origin", "session-connection"]))
        );
        assert_eq!(d.get("DTLS"), None);
        let del = Command::Delete {
            leg: Leg {
                call_id: "c1".into(),
                from_tag: "ft".into(),
                to_tag: None,
                via_branch: Some("z9hG4bK2".into()),
            },
        };
        let d = Value::decode(&del.datagram("ck_2")[5..]).unwrap();
        assert_eq!(d.get("delete delay"), Some(&Value::Int(0)));
    }
}
