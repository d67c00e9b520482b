//! A response for a request (RFC 3261 section 8.2.6.2), written once: the SIP core's
//! own answers, the plugin tools that show what the server would send, and the test
//! clients that answer as a user agent all build it here.

use bytes::Bytes;

use super::headers::{HeaderName, Headers};
use super::message::{Essentials as _, Request, Response, reason_phrase};

/// Whether a response with `status` to `req` must add a To tag: every response but
/// 100 Trying to a request outside a dialog (its To has no tag yet).
pub fn needs_to_tag(req: &Request, status: u16) -> bool {
    status != 100 && req.tag_of_to().is_none()
}

/// The header fields a response with `status` to `req` copies from it, in order:
/// every Via, From, To (with `;tag=to_tag` added when [`needs_to_tag`] and a tag is
/// given), Call-ID, CSeq. A header the request lacks is left out (a parsed request
/// has them all).
pub fn copied_fields(
    req: &Request,
    status: u16,
    to_tag: Option<&str>,
    mut emit: impl FnMut(&HeaderName, &str),
) {
    for v in req.headers.get_all(&HeaderName::Via) {
        emit(&HeaderName::Via, v);
    }
    if let Some(from) = req.headers.get(&HeaderName::From) {
        emit(&HeaderName::From, from);
    }
    if let Some(to) = req.headers.get(&HeaderName::To) {
        match to_tag.filter(|_| needs_to_tag(req, status)) {
            Some(tag) => {
                let mut value = String::with_capacity(to.len() + 5 + tag.len());
                for part in [to, ";tag=", tag] {
                    value.push_str(part);
                }
                emit(&HeaderName::To, &value);
            }
            None => emit(&HeaderName::To, to),
        }
    }
    if let Some(c) = req.call_id() {
        emit(&HeaderName::CallId, c);
    }
    if let Some(c) = req.headers.get(&HeaderName::CSeq) {
        emit(&HeaderName::CSeq, c);
    }
}

impl Response {
    /// A response with `status` (and its standard reason phrase) to `req`: the fields
    /// of [`copied_fields`], no body. The caller adds its own header fields (Contact,
    /// Server, ...) and may change the reason.
    pub fn for_request(req: &Request, status: u16, to_tag: Option<&str>) -> Self {
        let mut headers = Headers::with_capacity(8);
        copied_fields(req, status, to_tag, |n, v| headers.push(n.clone(), v));
        Self {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Message, parse};

    fn request(to: &str) -> Request {
        let text = format!(
            "OPTIONS sip:b@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:a@example.com>;tag=f\r\n\
             To: {to}\r\n\
             Call-ID: c1\r\n\
             CSeq: 7 OPTIONS\r\n\
             Contact: <sip:a@192.0.2.1>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn a_response_copies_what_8_2_6_2_says_and_tags_to() {
        let req = request("<sip:b@example.com>");
        let r = Response::for_request(&req, 404, Some("t1"));
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
        assert_eq!(
            r.headers.get(&HeaderName::To),
            Some("<sip:b@example.com>;tag=t1")
        );
        assert_eq!(
            r.headers.get_all(&HeaderName::Via).collect::<Vec<_>>(),
            [
                "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
                "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK0"
            ]
        );
        assert_eq!(r.headers.get(&HeaderName::CSeq), Some("7 OPTIONS"));
        // Neither Contact nor Max-Forwards is copied.
        assert!(r.headers.get(&HeaderName::Contact).is_none());
    }

    #[test]
    fn a_tagged_to_and_100_trying_keep_the_to_as_it_was() {
        let req = request("<sip:b@example.com>;tag=x");
        let r = Response::for_request(&req, 200, Some("t1"));
        assert_eq!(
            r.headers.get(&HeaderName::To),
            Some("<sip:b@example.com>;tag=x")
        );
        let req = request("<sip:b@example.com>");
        let r = Response::for_request(&req, 100, Some("t1"));
        assert_eq!(r.headers.get(&HeaderName::To), Some("<sip:b@example.com>"));
        assert!(!needs_to_tag(&req, 100) && needs_to_tag(&req, 180));
    }
}
