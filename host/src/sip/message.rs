//! SIP requests and responses.

use bytes::Bytes;

use super::headers::{HeaderName, Headers};
use super::typed::{CSeq, MaxForwards, NameAddr, Via};
use super::uri::Uri;

pub use super::method::Method;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
    /// Header fields (without Content-Length, which framing consumed).
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

impl Request {
    /// Its Max-Forwards (70 when absent).
    pub fn max_forwards(&self) -> MaxForwards {
        MaxForwards::from_value(self.headers.get(&HeaderName::MaxForwards))
    }

    /// Sets its Max-Forwards: first among its header fields, in place of any other.
    pub fn set_max_forwards(&mut self, mf: MaxForwards) {
        self.headers.remove_all(&HeaderName::MaxForwards);
        self.headers.push_front(
            HeaderName::MaxForwards,
            itoa::Buffer::new().format(mf.hops()).to_string(),
        );
    }
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code 100..=699.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields (without Content-Length).
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

/// A SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }
}

/// Typed access to the headers every message must carry, parsed on demand.
pub trait Essentials {
    /// The header fields.
    fn hdrs(&self) -> &Headers;

    /// The Via values, top first.
    fn vias(&self) -> Result<Vec<Via>, &'static str> {
        self.hdrs()
            .values(&HeaderName::Via)
            .map(Via::parse)
            .collect()
    }

    /// The CSeq.
    fn cseq(&self) -> Result<CSeq, &'static str> {
        CSeq::parse(self.hdrs().get(&HeaderName::CSeq).ok_or("missing CSeq")?)
    }

    /// The Call-ID.
    fn call_id(&self) -> Option<&str> {
        self.hdrs().get(&HeaderName::CallId)
    }

    /// The From header.
    fn get_from(&self) -> Result<NameAddr, &'static str> {
        NameAddr::parse(self.hdrs().get(&HeaderName::From).ok_or("missing From")?)
    }

    /// The To tag (without parsing the whole header; see [`super::typed::tag_param`]).
    fn tag_of_to(&self) -> Option<&str> {
        super::typed::tag_param(self.hdrs().get(&HeaderName::To)?)
    }

    /// The From tag.
    fn tag_of_from(&self) -> Option<&str> {
        super::typed::tag_param(self.hdrs().get(&HeaderName::From)?)
    }

    /// The To header.
    fn get_to(&self) -> Result<NameAddr, &'static str> {
        NameAddr::parse(self.hdrs().get(&HeaderName::To).ok_or("missing To")?)
    }
}

impl Essentials for Request {
    fn hdrs(&self) -> &Headers {
        &self.headers
    }
}

impl Essentials for Response {
    fn hdrs(&self) -> &Headers {
        &self.headers
    }
}

/// The standard reason phrase for a SIP status code (RFC 3261 section 21 and later RFCs).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        439 => "First Hop Lacks Outbound Support",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}
