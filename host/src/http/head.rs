//! HTTP/1.x request heads: bytes in, [`RequestHead`] out, under limits (sans-IO).

use std::fmt;

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head (request line, headers, blank line) in bytes.
    pub max_head_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest body announced by `Content-Length`.
    pub max_body_bytes: usize,
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method token.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// Protocol version.
    pub version: Version,
    /// Header fields in order, duplicates kept; values trimmed of surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// Body length from `Content-Length` (0 when absent).
    pub content_length: usize,
    /// The client wants the connection closed after the response.
    pub close: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated header `name` contains `token` (case-insensitive),
    /// across all its occurrences.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why a request head was refused. [`HeadError::status`] gives the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head is longer than the limit.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than the limit.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Not an HTTP/1.x request line or header field.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    #[error("HTTP version not supported")]
    Version,
    /// `Content-Length` larger than the limit.
    #[error("body of {0} bytes is larger than the limit")]
    BodyTooLarge(usize),
    /// A body framed other than by `Content-Length` (chunked).
    #[error("Transfer-Encoding is not accepted; send Content-Length")]
    LengthRequired,
    /// Invalid, repeated or conflicting `Content-Length`.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// HTTP/1.1 without `Host`, or several `Host` fields.
    #[error("{0}")]
    BadHost(&'static str),
    /// An `Expect` other than `100-continue`.
    #[error("unsupported expectation")]
    Expectation,
}

impl HeadError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::Malformed(_) | Self::BadContentLength | Self::BadHost(_) => 400,
            Self::Version => 505,
            Self::BodyTooLarge(_) => 413,
            Self::LengthRequired => 411,
            Self::Expectation => 417,
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (the caller stops at `max_head_bytes`, see
/// [`HeadError::HeadTooLarge`], which this function also reports once `buf` is longer).
/// `Ok(Some((head, n)))`: the head took `n` bytes; the body (if any) follows.
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Leading empty lines before a request are to be ignored (RFC 9112 section 2.2);
    // httparse does that. Allocate exactly the header slots the limit allows.
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders(limits.max_headers));
        }
        Err(httparse::Error::Version) => {
            // "HTTP/2.0" is a version we don't speak; "SIP/2.0" or garbage is not HTTP.
            return Err(if looks_like_http_version(buf) {
                HeadError::Version
            } else {
                HeadError::Malformed("not an HTTP/1.x request line")
            });
        }
        Err(e) => return Err(HeadError::Malformed(httparse_reason(e))),
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            if buf.len() >= limits.max_head_bytes {
                return Err(HeadError::HeadTooLarge(limits.max_head_bytes));
            }
            return Ok(None);
        }
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::HeadTooLarge(limits.max_head_bytes));
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::Version),
    };
    let method = req
        .method
        .ok_or(HeadError::Malformed("no method"))?
        .to_string();
    let target = req
        .path
        .ok_or(HeadError::Malformed("no request target"))?
        .to_string();
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // Values may carry obs-text (bytes >= 0x80); keep them readable rather than refuse.
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        headers.push((h.name.to_string(), value));
    }
    let mut head = RequestHead {
        method,
        target,
        version,
        headers,
        content_length: 0,
        close: false,
        expect_continue: false,
    };
    check_framing(&mut head, limits)?;
    Ok(Some((head, len)))
}

fn check_framing(head: &mut RequestHead, limits: &HeadLimits) -> Result<(), HeadError> {
    if head.headers_named("Transfer-Encoding").next().is_some() {
        // Chunked bodies are not accepted (and TE with Content-Length is a smuggling
        // vector): 411 asks the client to send Content-Length instead.
        if head.headers_named("Content-Length").next().is_some() {
            return Err(HeadError::BadContentLength);
        }
        return Err(HeadError::LengthRequired);
    }
    let mut length: Option<usize> = None;
    for v in head.headers_named("Content-Length") {
        // Several fields, or a list, are only valid when all values agree.
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 18 {
                return Err(HeadError::BadContentLength);
            }
            let n: usize = part.parse().map_err(|_| HeadError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadContentLength);
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body_bytes {
        return Err(HeadError::BodyTooLarge(length));
    }
    head.content_length = length;

    let hosts = head.headers_named("Host").count();
    if hosts > 1 {
        return Err(HeadError::BadHost("more than one Host header"));
    }
    if hosts == 0 && head.version == Version::Http11 {
        return Err(HeadError::BadHost("HTTP/1.1 request without Host"));
    }
    if let Some(h) = head.header("Host")
        && h.contains(|c: char| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err(HeadError::BadHost("invalid Host header"));
    }

    head.close = match head.version {
        Version::Http11 => head.has_token("Connection", "close"),
        Version::Http10 => !head.has_token("Connection", "keep-alive"),
    };
    if let Some(e) = head.header("Expect") {
        if !e.eq_ignore_ascii_case("100-continue") {
            return Err(HeadError::Expectation);
        }
        head.expect_continue = head.version == Version::Http11;
    }
    Ok(())
}

fn looks_like_http_version(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    line.rsplit(|&b| b == b' ')
        .next()
        .is_some_and(|v| v.starts_with(b"HTTP/"))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_headers: 8,
        max_body_bytes: 100,
    };

    fn p(s: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse(s.as_bytes(), &LIMITS)
    }

    #[test]
    fn complete_head_keeps_order_and_duplicates() {
        let text = "GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\nleft";
        let (h, n) = p(text).unwrap().unwrap();
        assert_eq!(&text[n..], "left");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/ws?x=1");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers_named("X-A").collect::<Vec<_>>(), ["1", "2"]);
        assert!(!h.close);
    }

    #[test]
    fn partial_then_limits() {
        assert!(p("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "y".repeat(2000));
        assert_eq!(p(&big).unwrap_err().status(), 431);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(9));
        assert_eq!(p(&many).unwrap_err().status(), 431);
    }

    #[test]
    fn statuses() {
        assert_eq!(p("GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 505);
        assert_eq!(
            p("OPTIONS sip:a SIP/2.0\r\n\r\n").unwrap_err().status(),
            400
        );
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n";
        assert_eq!(parse(tls_hello, &LIMITS).unwrap_err().status(), 400);
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        let post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
        assert_eq!(p(post).unwrap_err().status(), 413);
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(p(chunked).unwrap_err().status(), 411);
        let both =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(p(both).unwrap_err().status(), 400);
        let conflict =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(p(conflict).unwrap_err().status(), 400);
        let neg = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(p(neg).unwrap_err().status(), 400);
        let expect = "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n";
        assert_eq!(p(expect).unwrap_err().status(), 417);
    }

    #[test]
    fn connection_persistence() {
        let (h, _) = p("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        let (h, _) = p("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.close);
        let (h, _) = p("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
    }

    #[test]
    fn content_length_lists_that_agree() {
        let (h, _) = p("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.content_length, 5);
    }
}
