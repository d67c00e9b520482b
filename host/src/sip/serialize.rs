//! [`Message`] to bytes. The only writer of `Content-Length`.

use super::headers::{HeaderName, Headers};
use super::message::{Message, Request, Response};

fn write_headers(out: &mut Vec<u8>, headers: &Headers, body_len: usize) {
    for h in headers {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body_len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

impl Request {
    /// Serializes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        let uri = self.uri.to_string();
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        write_headers(&mut out, &self.headers, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

impl Response {
    /// Serializes the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers(&mut out, &self.headers, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

impl Message {
    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;

    #[test]
    fn round_trip_rewrites_content_length() {
        let text = "MESSAGE sip:b@l SIP/2.0\r\nv: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
            To: <sip:b@l>\r\nFrom: <sip:a@l>;tag=1\r\nCall-ID: c\r\nCSeq: 2 MESSAGE\r\nl: 2\r\n\r\nhi";
        let m = parse(text.as_bytes()).unwrap();
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            out,
            "MESSAGE sip:b@l SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n\
             To: <sip:b@l>\r\nFrom: <sip:a@l>;tag=1\r\nCall-ID: c\r\nCSeq: 2 MESSAGE\r\n\
             Content-Length: 2\r\n\r\nhi"
        );
        assert_eq!(parse(out.as_bytes()).unwrap(), m);
    }
}
