//! The SIP core, sans-IO: messages and time in, messages to send out.
//!
//! The driver (in `server.rs`) calls [`Core::handle`] for every input, then drains
//! [`Core::poll_transmit`] until it returns `None`. Nothing here touches a socket or
//! reads a clock: `now` is passed in.
//!
//! Today the core is a stateless responder for requests addressed to the server
//! itself: OPTIONS gets 200, methods it does not serve get 501, users it does not know
//! get 404, other domains get 403. The transaction layer, registrar and proxy replace
//! it behind the same four verbs.

pub mod auth;
pub mod myself;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sip::headers::{HeaderName, Headers, split_list};
use crate::sip::message::{Essentials, Message, Method, Request, Response, reason_phrase};
use crate::sip::typed::Via;
use crate::sip::uri::Host;
pub use myself::Myself;

/// Identifies a flow: one connection (WS, WSS, later TCP/TLS) or one UDP 5-tuple.
pub type FlowId = u64;

/// Where a message is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On an existing flow (the one a request came in on, or a registered one).
    Flow(FlowId),
    /// To an address (UDP, or a new connection).
    Addr(SocketAddr),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub target: Target,
    /// The serialized message.
    pub payload: Vec<u8>,
}

/// The transport a message arrived on, as written in Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    /// WebSocket (`WS`).
    Ws,
    /// Secure WebSocket (`WSS`).
    Wss,
}

/// A parsed message from a flow.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The flow it came in on.
    pub flow: FlowId,
    /// The real source address.
    pub source: SocketAddr,
    /// The transport.
    pub transport: SipTransport,
    /// The message.
    pub message: Message,
}

/// Inputs of the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A message arrived.
    Message(Box<Incoming>),
    /// A flow closed (exactly once per flow).
    FlowClosed(FlowId),
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our names and addresses.
    pub myself: Arc<Myself>,
    /// `Server` header value.
    pub server_header: String,
    /// Secret for deterministic tags (and later flow tokens).
    pub secret: [u8; 32],
}

/// Option tags we support (for `Require` checks).
const SUPPORTED: &[&str] = &[];

/// The SIP core.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    transmits: VecDeque<Transmit>,
}

impl Core {
    /// A new core.
    pub fn new(config: CoreConfig) -> Self {
        Self {
            config,
            transmits: VecDeque::new(),
        }
    }

    /// Processes one input. Afterwards call [`Core::poll_transmit`] until `None`.
    pub fn handle(&mut self, _now: Instant, input: Input) {
        match input {
            Input::Message(incoming) => {
                let Incoming {
                    flow,
                    source,
                    message,
                    ..
                } = *incoming;
                match message {
                    Message::Request(req) => self.handle_request(flow, source, req),
                    // Stateless: responses have no transaction to match and are absorbed.
                    Message::Response(_) => {}
                }
            }
            Input::FlowClosed(_) => {}
        }
    }

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Core::handle_timeout`] should next be called (no timers yet).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_request(&mut self, flow: FlowId, source: SocketAddr, mut req: Request) {
        if req.method == Method::Ack {
            return;
        }
        stamp_received(&mut req, source);
        let (status, extra) = self.decide(&req);
        let resp = self.response(&req, status, extra);
        self.transmits.push_back(Transmit {
            target: Target::Flow(flow),
            payload: resp.to_bytes(),
        });
    }

    fn decide(&self, req: &Request) -> (u16, Vec<(HeaderName, String)>) {
        let unsupported: Vec<&str> = req
            .headers
            .values(&HeaderName::Require)
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            return (420, vec![(HeaderName::Unsupported, unsupported.join(", "))]);
        }
        let Some(uri) = req.uri.as_sip() else {
            return (416, vec![]);
        };
        if !self.config.myself.is_myself_uri(uri) {
            return (403, vec![]);
        }
        match (&req.method, &uri.user) {
            (Method::Cancel, _) => (481, vec![]),
            (Method::Options, None) => (
                200,
                vec![
                    (HeaderName::Allow, "OPTIONS, ACK".into()),
                    (HeaderName::Accept, "application/sdp".into()),
                ],
            ),
            (_, Some(_)) => (404, vec![]),
            (_, None) => (501, vec![]),
        }
    }

    fn response(&self, req: &Request, status: u16, extra: Vec<(HeaderName, String)>) -> Response {
        let mut headers = Headers::new();
        for v in req.headers.get_all(&HeaderName::Via) {
            headers.push(HeaderName::Via, v);
        }
        if let Some(from) = req.headers.get(&HeaderName::From) {
            headers.push(HeaderName::From, from);
        }
        if let Some(to) = req.headers.get(&HeaderName::To) {
            let has_tag = req.get_to().is_ok_and(|t| t.tag().is_some());
            if has_tag || status == 100 {
                headers.push(HeaderName::To, to);
            } else {
                headers.push(HeaderName::To, format!("{to};tag={}", self.to_tag(req)));
            }
        }
        if let Some(c) = req.call_id() {
            headers.push(HeaderName::CallId, c);
        }
        if let Some(c) = req.headers.get(&HeaderName::CSeq) {
            headers.push(HeaderName::CSeq, c);
        }
        for (n, v) in extra {
            headers.push(n, v);
        }
        headers.push(HeaderName::Server, self.config.server_header.clone());
        Response {
            status,
            reason: reason_phrase(status).to_string(),
            headers,
            body: Default::default(),
        }
    }

    /// A To tag that is the same for retransmissions of one request, without state:
    /// HMAC(secret, Call-ID, From tag, CSeq, top branch).
    fn to_tag(&self, req: &Request) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.config.secret).expect("any key length");
        for part in [
            req.call_id().unwrap_or(""),
            req.headers.get(&HeaderName::From).unwrap_or(""),
            req.headers.get(&HeaderName::CSeq).unwrap_or(""),
            req.headers.values(&HeaderName::Via).next().unwrap_or(""),
        ] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        let out = m.finalize().into_bytes();
        out[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// RFC 3261 section 18.2.1 and RFC 3581: add `received` to the top Via when the
/// sent-by host is not the source address, and fill in `rport` when it is present.
pub fn stamp_received(req: &mut Request, source: SocketAddr) {
    let Some(top) = req.headers.first_mut(&HeaderName::Via) else {
        return;
    };
    let mut values: Vec<String> = split_list(&top.value).map(str::to_string).collect();
    let Some(first) = values.first_mut() else {
        return;
    };
    let Ok(mut via) = Via::parse(first) else {
        return;
    };
    let changed = if via.has_rport() {
        via.set_param("rport", Some(source.port().to_string()));
        via.set_param("received", Some(source.ip().to_string()));
        true
    } else if via.host != Host::from(source.ip()) {
        via.set_param("received", Some(source.ip().to_string()));
        true
    } else {
        false
    };
    if changed {
        *first = via.to_string();
        top.value = values.join(", ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    fn core() -> Core {
        Core::new(CoreConfig {
            myself: Arc::new(Myself::new(
                &["localhost".into()],
                &["127.0.0.1:8080".parse().unwrap()],
            )),
            server_header: "test".into(),
            secret: [3; 32],
        })
    }

    fn request(first_line: &str, extra: &str) -> Input {
        let method = first_line.split(' ').next().unwrap();
        let text = format!(
            "{first_line} SIP/2.0\r\nVia: SIP/2.0/WS abc.invalid;branch=z9hG4bK776;rport\r\n\
             From: <sip:alice@localhost>;tag=a1\r\nTo: <sip:localhost>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\n{extra}Max-Forwards: 70\r\n\r\n"
        );
        Input::Message(Box::new(Incoming {
            flow: 9,
            source: "127.0.0.1:50000".parse().unwrap(),
            transport: SipTransport::Ws,
            message: parse(text.as_bytes()).unwrap(),
        }))
    }

    fn answer(input: Input) -> Option<(Target, Response)> {
        let mut c = core();
        c.handle(Instant::now(), input);
        let t = c.poll_transmit()?;
        assert!(c.poll_transmit().is_none());
        match parse(&t.payload).unwrap() {
            Message::Response(r) => Some((t.target, r)),
            Message::Request(_) => panic!("core sent a request"),
        }
    }

    #[test]
    fn options_to_us_is_200_on_the_same_flow() {
        let (target, r) = answer(request("OPTIONS sip:localhost", "")).unwrap();
        assert_eq!(target, Target::Flow(9));
        assert_eq!(r.status, 200);
        let via = &r.vias().unwrap()[0];
        assert_eq!(via.branch(), Some("z9hG4bK776"));
        assert_eq!(
            crate::sip::headers::param(&via.params, "rport"),
            Some(Some("50000"))
        );
        assert_eq!(
            crate::sip::headers::param(&via.params, "received"),
            Some(Some("127.0.0.1"))
        );
        assert!(r.get_to().unwrap().tag().is_some());
        assert_eq!(r.cseq().unwrap().seq, 1);
        assert_eq!(r.call_id(), Some("c1"));
    }

    #[test]
    fn same_request_same_tag() {
        let (_, a) = answer(request("OPTIONS sip:localhost", "")).unwrap();
        let (_, b) = answer(request("OPTIONS sip:localhost", "")).unwrap();
        assert_eq!(a.get_to().unwrap().tag(), b.get_to().unwrap().tag());
    }

    #[test]
    fn other_statuses() {
        assert_eq!(
            answer(request("MESSAGE sip:bob@localhost", ""))
                .unwrap()
                .1
                .status,
            404
        );
        assert_eq!(
            answer(request("REGISTER sip:localhost", ""))
                .unwrap()
                .1
                .status,
            501
        );
        assert_eq!(
            answer(request("OPTIONS sip:elsewhere.org", ""))
                .unwrap()
                .1
                .status,
            403
        );
        assert_eq!(
            answer(request("OPTIONS sip:localhost:9999", ""))
                .unwrap()
                .1
                .status,
            403
        );
        assert_eq!(
            answer(request("OPTIONS tel:+123", "")).unwrap().1.status,
            416
        );
        let (_, r) = answer(request("OPTIONS sip:localhost", "Require: foo, bar\r\n")).unwrap();
        assert_eq!(r.status, 420);
        assert_eq!(r.headers.get(&HeaderName::Unsupported), Some("foo, bar"));
        assert!(answer(request("ACK sip:localhost", "")).is_none());
    }
}
