//! Bytes to [`Message`] for whole-message transports (a datagram, a WebSocket message).
//! Never panics; work is linear in the input; limits bound everything.

use bytes::Bytes;

use super::headers::{HeaderName, Headers, is_token_char};
use super::message::{Essentials, Message, Method, Request, Response};
use super::scan;
use super::typed::{CSeq, NameAddrRef, ViaRef};
use super::uri::Uri;

/// Most header field lines in one message.
pub const MAX_HEADERS: usize = 256;

/// Why a message could not be parsed. `header` names the field at fault, when one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}{}", header.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct ParseError {
    /// What is wrong.
    pub reason: &'static str,
    /// The header at fault.
    pub header: Option<HeaderName>,
}

impl ParseError {
    fn new(reason: &'static str) -> Self {
        Self {
            reason,
            header: None,
        }
    }

    fn at(header: HeaderName, reason: &'static str) -> Self {
        Self {
            reason,
            header: Some(header),
        }
    }

    /// A reason phrase for a 400 answering this error, e.g. `Bad Header: CSeq`.
    pub fn reason_phrase(&self) -> String {
        match &self.header {
            Some(h) => format!("Bad Header: {h}"),
            None => format!("Bad Request: {}", self.reason),
        }
    }
}

/// Parses one complete message (everything in `buf` belongs to it).
///
/// Leading CRLFs are skipped. With a `Content-Length`, bytes beyond it are ignored and
/// fewer bytes are an error; without one, the rest of `buf` is the body.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::new("empty message"))?;
    let buf = &buf[start..];
    let (head_end, body_start) =
        find_head_end(buf).ok_or(ParseError::new("no blank line after the headers"))?;
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ParseError::new("headers are not UTF-8"))?;
    let body = &buf[body_start..];

    let mut lines = scan::split(head, b'\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or("");
    let headers = parse_headers(lines)?;
    let body = frame_body(&headers, body)?;

    if let Some(rest) = start_line.strip_prefix("SIP/") {
        let (status, reason) = parse_status_line(rest)?;
        let resp = Response {
            status,
            reason,
            headers,
            body,
        };
        check_essentials(&resp)?;
        Ok(Message::Response(resp))
    } else {
        let (method, uri) = parse_request_line(start_line)?;
        let req = Request {
            method,
            uri,
            headers,
            body,
        };
        let cseq = check_essentials(&req)?;
        if cseq.method != req.method {
            return Err(ParseError::at(
                HeaderName::CSeq,
                "CSeq method does not match the request",
            ));
        }
        Ok(Message::Request(req))
    }
}

/// The 400 (505 for another SIP version) answering a request that failed to parse,
/// when it can still be answered:
/// it must be a request (not an ACK) with Via, Call-ID and CSeq lines to copy (RFC 3261
/// 8.2.6). The reason phrase names the bad header. `None` means drop it silently.
pub fn error_response(buf: &[u8], err: &ParseError, server: &str) -> Option<Vec<u8>> {
    answer_unparsed(buf, server, &[], |version| {
        // RFC 3261 8.2.2: another version gets 505; anything else broken gets 400.
        Some(if version == "SIP/2.0" {
            (format!("SIP/2.0 400 {}", err.reason_phrase()), "bad400")
        } else {
            ("SIP/2.0 505 Version Not Supported".to_string(), "bad505")
        })
    })
}

/// The `status` answer to a request refused before it was parsed (a source past its
/// rate), built from its head alone as [`error_response`] is, with `extra` header
/// lines (`Retry-After`). `None` for anything that gets no answer: a response, an ACK,
/// a request without the lines to copy, or another SIP version.
pub fn refusal_response(
    buf: &[u8],
    status: u16,
    reason: &str,
    extra: &[(HeaderName, String)],
    server: &str,
) -> Option<Vec<u8>> {
    answer_unparsed(buf, server, extra, |version| {
        (version == "SIP/2.0").then(|| (format!("SIP/2.0 {status} {reason}"), "refused"))
    })
}

/// An answer to a request from its head alone, unparsed: the status line `status`
/// gives for the request's SIP version (with the To tag to add when there is none; no
/// answer when it gives none), then the Via, From, To, Call-ID and CSeq lines copied,
/// `extra`, `Server`. Works on the bytes: the head is split with `memchr` and only the
/// copied lines are decoded, so refusing a flood of 64 KB heads costs a scan each.
fn answer_unparsed(
    buf: &[u8],
    server: &str,
    extra: &[(HeaderName, String)],
    status: impl FnOnce(&str) -> Option<(String, &'static str)>,
) -> Option<Vec<u8>> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let buf = &buf[start..];
    let head_end = find_head_end(buf)
        .map(|(e, _)| e)
        .unwrap_or(buf.len().min(65_535));
    let head = &buf[..head_end];
    let mut rest = Some(head);
    let mut lines = std::iter::from_fn(move || {
        let text = rest?;
        let (line, next) = match memchr::memchr(b'\n', text) {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        rest = next;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    });
    let first = String::from_utf8_lossy(lines.next()?);
    let first = first.trim_end();
    let method = first.split(' ').next()?;
    let version = first.rsplit(' ').next()?;
    if method.is_empty()
        || method == "ACK"
        || first.starts_with("SIP/")
        || !version.starts_with("SIP/")
    {
        return None;
    }
    let (status_line, tag) = status(version)?;
    // Unfold, then keep the lines a response copies (a continuation belongs to the
    // line before it, kept or not).
    let mut fields: Vec<(HeaderName, String)> = Vec::new();
    let mut last_kept = false;
    for line in lines {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if last_kept && let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(&String::from_utf8_lossy(line.trim_ascii()));
            }
            continue;
        }
        last_kept = false;
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(line[..colon].trim_ascii()) else {
            continue;
        };
        let name = HeaderName::parse(name);
        if matches!(
            name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            let value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
            fields.push((name, value));
            last_kept = true;
        }
    }
    // Without a Via the answer has nowhere to go; without a CSeq the client cannot
    // match it. What else is missing is simply not echoed.
    let has = |n: &HeaderName| fields.iter().any(|(f, _)| f == n);
    if !(has(&HeaderName::Via) && has(&HeaderName::CSeq)) {
        return None;
    }
    if fields
        .iter()
        .any(|(_, v)| v.bytes().any(|b| b < 0x20 && b != b'\t'))
    {
        return None;
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in fields.iter().chain(extra) {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        if *n == HeaderName::To && !v.contains(";tag=") {
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Server: ");
    out.extend_from_slice(server.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}

/// Where the head ends: `(end of head, start of body)`. A blank line is CRLF CRLF, or
/// (leniently) LF LF or LF CRLF; framing and parsing use this one rule.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    find_head_end_from(buf, 0)
}

/// [`find_head_end`], skipping the first `from` bytes already known not to hold it.
pub(crate) fn find_head_end_from(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let start = from.saturating_sub(3).min(buf.len());
    find_head_end_inner(&buf[start..]).map(|(e, b)| (e + start, b + start))
}

fn find_head_end_inner(buf: &[u8]) -> Option<(usize, usize)> {
    for i in memchr::memchr_iter(b'\n', buf) {
        if buf.get(i + 1) == Some(&b'\n') {
            return Some((i, i + 2));
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            return Some((i, i + 3));
        }
    }
    None
}

fn parse_request_line(line: &str) -> Result<(Method, Uri), ParseError> {
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF (single spaces).
    let Some((m, (u, v))) =
        scan::split_once(line, b' ').and_then(|(m, rest)| Some((m, scan::split_once(rest, b' ')?)))
    else {
        return Err(ParseError::new("malformed request line"));
    };
    if scan::find(v, b' ').is_some() {
        return Err(ParseError::new("malformed request line"));
    }
    if v != "SIP/2.0" {
        return Err(ParseError::new(if v.starts_with("SIP/") {
            "unsupported SIP version"
        } else {
            "malformed request line"
        }));
    }
    let method = Method::parse(m).map_err(ParseError::new)?;
    let uri = Uri::parse(u).map_err(|_| ParseError::new("invalid Request-URI"))?;
    Ok((method, uri))
}

fn parse_status_line(rest: &str) -> Result<(u16, String), ParseError> {
    let rest = rest
        .strip_prefix("2.0 ")
        .ok_or(ParseError::new("unsupported SIP version"))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new("invalid status code"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| ParseError::new("invalid status code"))?;
    if !(100..=699).contains(&status) {
        return Err(ParseError::new("status code out of range"));
    }
    if reason.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err(ParseError::new("control character in reason phrase"));
    }
    Ok((status, reason.to_string()))
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    // Most messages have fewer; growing from empty reallocates four times.
    let mut headers = Headers::with_capacity(16);
    let mut current: Option<(HeaderName, String)> = None;
    // Checked once unfolded, so that continuation lines are held to the same rules.
    let finish = |headers: &mut Headers, (name, value): (HeaderName, String)| {
        if !controls_only_escaped(&value) {
            return Err(ParseError::at(name, "control character in header value"));
        }
        headers.push(name, value);
        Ok(())
    };
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 section 7.3.1): one space replaces the fold.
            let (_, value) = current
                .as_mut()
                .ok_or(ParseError::new("continuation line before any header"))?;
            let more = line.trim_ascii();
            if !value.is_empty() && !more.is_empty() {
                value.push(' ');
            }
            value.push_str(more);
            continue;
        }
        if let Some(done) = current.take() {
            finish(&mut headers, done)?;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::new("too many header fields"));
        }
        let (name, value) =
            scan::split_once(line, b':').ok_or(ParseError::new("header line without colon"))?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::new("invalid header name"));
        }
        current = Some((HeaderName::parse(name), value.trim_ascii().to_string()));
    }
    if let Some(done) = current {
        finish(&mut headers, done)?;
    }
    Ok(headers)
}

/// Control characters may only appear escaped inside a quoted string (RFC 3261
/// `quoted-pair`, e.g. a display name with `\<NUL>`); CR and LF never.
fn controls_only_escaped(value: &str) -> bool {
    let b = value.as_bytes();
    // Nearly every value has no control character at all: one cheap pass.
    if !b.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
        return true;
    }
    let (mut in_quotes, mut i) = (false, 0);
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => match b.get(i + 1) {
                Some(b'\r' | b'\n') | None => return false,
                Some(_) => i += 1,
            },
            b'"' => in_quotes = !in_quotes,
            c if (c < 0x20 && c != b'\t') || c == 0x7f => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

fn frame_body(headers: &Headers, body: &[u8]) -> Result<Bytes, ParseError> {
    let mut length: Option<usize> = None;
    for v in headers.get_all(&HeaderName::ContentLength) {
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::at(
                HeaderName::ContentLength,
                "invalid Content-Length",
            ));
        }
        let n: usize = v
            .parse()
            .map_err(|_| ParseError::at(HeaderName::ContentLength, "invalid Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(ParseError::at(
                HeaderName::ContentLength,
                "conflicting Content-Length",
            ));
        }
        length = Some(n);
    }
    match length {
        Some(n) if n > body.len() => Err(ParseError::at(
            HeaderName::ContentLength,
            "body shorter than Content-Length",
        )),
        Some(n) => Ok(Bytes::copy_from_slice(&body[..n])),
        None => Ok(Bytes::copy_from_slice(body)),
    }
}

/// Checks the headers every message needs; returns its CSeq.
fn check_essentials(m: &impl Essentials) -> Result<CSeq, ParseError> {
    let h = m.hdrs();
    for (name, what) in [
        (HeaderName::CallId, "missing Call-ID"),
        (HeaderName::From, "missing From"),
        (HeaderName::To, "missing To"),
        (HeaderName::CSeq, "missing CSeq"),
        (HeaderName::Via, "missing Via"),
    ] {
        match h.count(&name) {
            0 => return Err(ParseError::at(name, what)),
            1 => {}
            _ if name == HeaderName::Via => {}
            _ => return Err(ParseError::at(name, "header must appear once")),
        }
    }
    if m.call_id()
        .is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace))
    {
        return Err(ParseError::at(HeaderName::CallId, "invalid Call-ID"));
    }
    // Checked in place, without building the owned values (the core parses what it
    // uses when it uses it).
    for name in [HeaderName::From, HeaderName::To] {
        let value = h.get(&name).unwrap_or("");
        NameAddrRef::parse(value).map_err(|r| ParseError::at(name, r))?;
    }
    let cseq = m.cseq().map_err(|r| ParseError::at(HeaderName::CSeq, r))?;
    let mut vias = 0;
    for v in h.values(&HeaderName::Via) {
        ViaRef::parse(v).map_err(|r| ParseError::at(HeaderName::Via, r))?;
        vias += 1;
    }
    if vias == 0 {
        return Err(ParseError::at(HeaderName::Via, "missing Via"));
    }
    // Leading zeros are allowed (RFC 4475 wsinv: "0068").
    if let Some(mf) = h.get(&HeaderName::MaxForwards)
        && (mf.is_empty()
            || mf.len() > 10
            || !mf.bytes().all(|b| b.is_ascii_digit())
            || mf.parse::<u32>().map_or(true, |n| n > 255))
    {
        return Err(ParseError::at(
            HeaderName::MaxForwards,
            "invalid Max-Forwards",
        ));
    }
    Ok(cseq)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:localhost SIP/2.0\r\n\
        Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKhjhs8ass877\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:localhost>\r\n\
        From: Alice <sip:alice@localhost>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 63104 OPTIONS\r\n\
        Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n\
        Accept: application/sdp\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn options_request() {
        let Message::Request(r) = parse(OPTIONS.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.uri.to_string(), "sip:localhost");
        assert_eq!(r.vias().unwrap()[0].transport, "WS");
        assert_eq!(r.cseq().unwrap().seq, 63104);
        assert_eq!(r.get_from().unwrap().tag(), Some("1928301774"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn compact_folded_and_body() {
        let msg = "\r\n\r\nMESSAGE sip:bob@localhost SIP/2.0\r\n\
            v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1,\r\n SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK2\r\n\
            t: <sip:bob@localhost>\r\nf: <sip:a@localhost>;tag=x\r\ni: c1\r\n\
            CSeq: 1\r\n  MESSAGE\r\nc: text/plain\r\nl: 5\r\n\r\nhello-extra";
        let Message::Request(r) = parse(msg.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.vias().unwrap().len(), 2);
        assert_eq!(r.cseq().unwrap().method, Method::Message);
        assert_eq!(&r.body[..], b"hello");
    }

    #[test]
    fn response() {
        let msg = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
            To: <sip:b@l>;tag=2\r\nFrom: <sip:a@l>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let Message::Response(r) = parse(msg.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!((r.status, r.reason.as_str()), (180, "Ringing"));
    }

    #[test]
    fn answerable_errors_get_400_naming_the_header() {
        let bad = OPTIONS.replace("63104 OPTIONS", "x OPTIONS");
        let e = parse(bad.as_bytes()).unwrap_err();
        let resp = error_response(bad.as_bytes(), &e, "t").unwrap();
        let text = String::from_utf8(resp).unwrap();
        assert!(
            text.starts_with("SIP/2.0 400 Bad Header: CSeq\r\n"),
            "{text}"
        );
        assert!(text.contains("Call-ID: a84b4c76e66710\r\n"));
        assert!(text.contains("To: <sip:localhost>;tag=bad400\r\n"));
        // No Via: nothing to answer to. An ACK is never answered. Responses neither.
        let no_via = OPTIONS.replace(
            "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKhjhs8ass877\r\n",
            "",
        );
        let e = parse(no_via.as_bytes()).unwrap_err();
        assert!(error_response(no_via.as_bytes(), &e, "t").is_none());
        let ack = bad.replace("OPTIONS sip", "ACK sip");
        assert!(error_response(ack.as_bytes(), &e, "t").is_none());
        assert!(error_response(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", &e, "t").is_none());
        assert!(error_response(b"\x16\x03garbage", &e, "t").is_none());
        // A folded line belongs to its own header: the continuation of a header not
        // copied is not glued onto the copied one before it.
        let folded = bad.replace(
            "Call-ID: a84b4c76e66710\r\n",
            "Call-ID: a84b4c76e66710\r\nSubject: one\r\n two\r\n",
        );
        let text = String::from_utf8(error_response(folded.as_bytes(), &e, "t").unwrap()).unwrap();
        assert!(text.contains("Call-ID: a84b4c76e66710\r\n"), "{text}");
        let folded_via = bad.replace(
            ";branch=z9hG4bKhjhs8ass877\r\n",
            "\r\n ;branch=z9hG4bKhjhs8ass877\r\n",
        );
        let text =
            String::from_utf8(error_response(folded_via.as_bytes(), &e, "t").unwrap()).unwrap();
        assert!(
            text.contains(".invalid ;branch=z9hG4bKhjhs8ass877\r\n"),
            "{text}"
        );
    }

    #[test]
    fn errors_name_the_header() {
        let e = parse(OPTIONS.replace("63104 OPTIONS", "63104 INVITE").as_bytes()).unwrap_err();
        assert_eq!(e.header, Some(HeaderName::CSeq));
        let e = parse(
            OPTIONS
                .replace("Call-ID: a84b4c76e66710\r\n", "")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason_phrase(), "Bad Header: Call-ID");
        let e = parse(
            OPTIONS
                .replace("Content-Length: 0", "Content-Length: 10")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.header, Some(HeaderName::ContentLength));
        let e = parse(OPTIONS.replace("SIP/2.0/WS", "SIP/2.0").as_bytes()).unwrap_err();
        assert_eq!(e.header, Some(HeaderName::Via));
        assert!(parse(OPTIONS.replace("OPTIONS sip", "OPTIONS  sip").as_bytes()).is_err());
        assert!(parse(OPTIONS.replace("SIP/2.0\r\n", "SIP/7.0\r\n").as_bytes()).is_err());
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"\r\n\r\n").is_err());
        assert!(parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']).is_err());
    }
}
