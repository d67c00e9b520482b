//! HTTP responses: validation of header fields from plugins and serialization (sans-IO;
//! the caller passes the date).

use std::time::SystemTime;

/// Header fields as ordered `(name, value)` pairs.
pub type HeaderList = Vec<(String, String)>;

/// Header names the host sets itself; a plugin decision that sets one is invalid.
/// Compared case-insensitively; `sec-websocket-` is a prefix.
pub const HOST_OWNED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "date",
    "server",
];

/// Why a header field from a plugin is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The name is empty or not an HTTP token.
    #[error("header name {0:?} is not a token")]
    BadName(String),
    /// The value contains CR, LF, NUL or another control character.
    #[error("header {0} has a value with CR, LF or a control character")]
    BadValue(String),
    /// The name is one the host owns.
    #[error("header {0} is set by the host, not by plugins")]
    HostOwned(String),
}

/// Checks one header field a plugin wants to send.
pub fn validate_header(name: &str, value: &str) -> Result<(), HeaderError> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(HeaderError::BadName(name.chars().take(64).collect()));
    }
    let lower = name.to_ascii_lowercase();
    if HOST_OWNED_HEADERS.contains(&lower.as_str()) || lower.starts_with("sec-websocket-") {
        return Err(HeaderError::HostOwned(name.to_string()));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::BadValue(name.to_string()));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `name: value\r\n`.
pub fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A response ready to be serialized. Headers have been validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code 200..=599 (or an error status chosen by the host).
    pub status: u16,
    /// Reason phrase; the standard one when `None`.
    pub reason: Option<String>,
    /// Extra headers.
    pub headers: HeaderList,
    /// Body.
    pub body: Vec<u8>,
    /// Close the connection after sending.
    pub close: bool,
}

impl Response {
    /// A response with a plain-text body naming the status (and `detail`, if any).
    pub fn error(status: u16, detail: &str) -> Self {
        let mut body = format!("{status} {}", reason_phrase(status));
        if !detail.is_empty() {
            body.push_str(": ");
            body.push_str(detail);
        }
        body.push('\n');
        Self {
            status,
            reason: None,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into_bytes(),
            close: true,
        }
    }

    /// Serializes the response. `keep_alive` is the final word on persistence (the
    /// caller folds in `self.close` and the request's wishes); `head_request` drops the
    /// body but keeps its length; `http10` answers with `HTTP/1.0`.
    pub fn serialize(
        &self,
        server: &str,
        date: SystemTime,
        keep_alive: bool,
        http10: bool,
        head_request: bool,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        let reason = self
            .reason
            .as_deref()
            .unwrap_or_else(|| reason_phrase(self.status));
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        push_header(&mut out, "Date", &httpdate::fmt_http_date(date));
        push_header(&mut out, "Server", server);
        if !(self.status == 204 || self.status == 304 || self.status < 200) {
            push_header(&mut out, "Content-Length", &self.body.len().to_string());
        }
        if !keep_alive {
            push_header(&mut out, "Connection", "close");
        } else if http10 {
            push_header(&mut out, "Connection", "keep-alive");
        }
        for (n, v) in &self.headers {
            push_header(&mut out, n, v);
        }
        out.extend_from_slice(b"\r\n");
        if !head_request && self.status != 204 && self.status != 304 {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Whether a reason phrase from a plugin can be sent: visible ASCII, spaces, tabs.
pub fn reason_is_valid(reason: &str) -> bool {
    reason.len() <= 128
        && reason
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The standard reason phrase for a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            2 => "OK",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_validation() {
        assert!(validate_header("Set-Cookie", "a=b; Path=/").is_ok());
        assert!(matches!(
            validate_header("X", "a\r\nB: c"),
            Err(HeaderError::BadValue(_))
        ));
        assert!(matches!(
            validate_header("X", "a\0"),
            Err(HeaderError::BadValue(_))
        ));
        assert!(matches!(
            validate_header("X Y", "a"),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            validate_header("", "a"),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            validate_header("X\r\nY", "a"),
            Err(HeaderError::BadName(_))
        ));
        for owned in [
            "content-length",
            "Connection",
            "UPGRADE",
            "Sec-WebSocket-Accept",
            "Date",
        ] {
            assert!(
                matches!(validate_header(owned, "1"), Err(HeaderError::HostOwned(_))),
                "{owned}"
            );
        }
    }

    #[test]
    fn serialization() {
        let r = Response {
            status: 200,
            reason: None,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"hi".to_vec(),
            close: false,
        };
        let date = SystemTime::UNIX_EPOCH;
        let s = String::from_utf8(r.serialize("srv", date, true, false, false)).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: srv\r\n\
             Content-Length: 2\r\nContent-Type: text/plain\r\n\r\nhi"
        );
        let s = String::from_utf8(r.serialize("srv", date, false, true, true)).unwrap();
        assert!(s.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"), "HEAD has no body: {s}");
    }
}
