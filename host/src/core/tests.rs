//! The core against simulated peers on a simulated clock: every call flow here runs
//! in microseconds, timers included.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::sip::parse;

const WS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const UDP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060);
const TCP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060);

struct Sim {
    core: Core,
    now: Instant,
    /// The routing queries of [`Sim::with_router`] left for later.
    asked: Vec<Routed>,
    /// Decides routing queries in place when it returns a decision (as the driver
    /// does with a quick plugin); `None`: every query is left for later.
    in_place: Option<fn(&Request) -> Option<RouteDecision>>,
    /// Routing queries the core made.
    queries: usize,
}

/// A request the router was asked about (its decision comes later).
struct Routed {
    id: u64,
    request: Request,
}

fn phone() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

fn browser(flow: FlowId) -> Source {
    Source {
        transport: Transport::Ws,
        local: WS,
        remote: format!("127.0.0.1:{}", 40000 + flow).parse().unwrap(),
        flow: Some(flow),
    }
}

/// Where the core sends to the UDP phone.
fn udp_phone_target() -> Target {
    Target::Udp {
        local: UDP,
        remote: phone(),
    }
}

/// A trusted edge proxy over UDP (`sip.trusted-peers`).
fn edge() -> Source {
    Source {
        transport: Transport::Udp,
        local: UDP,
        remote: "127.0.0.2:5070".parse().unwrap(),
        flow: None,
    }
}

fn udp_phone() -> Source {
    Source {
        transport: Transport::Udp,
        local: UDP,
        remote: phone(),
        flow: None,
    }
}

impl Sim {
    /// A core that asks the routing plugin about out-of-dialog requests; the plugin
    /// answers later, through [`Sim::routed`].
    fn with_router() -> Self {
        let mut sim = Self::new();
        sim.core.set_routing(true);
        sim
    }

    /// The requests the router was asked about since the last call.
    fn route_queries(&mut self) -> Vec<Routed> {
        std::mem::take(&mut self.asked)
    }

    /// Runs `f` with routing off (as a core without a router).
    fn without_router<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.core.set_routing(false);
        let out = f(self);
        self.core.set_routing(true);
        out
    }

    /// Answers the core's routing query, if it has one, as the driver does: in place
    /// when [`Sim::in_place`] decides, else later (recorded for [`Sim::routed`]).
    fn ask_router(&mut self) {
        let Some(q) = self.core.route_query() else {
            return;
        };
        let (id, request) = (q.id, q.request.clone());
        self.queries += 1;
        match self.in_place.and_then(|decide| decide(&request)) {
            Some(decision) => self.core.route(self.now, id, decision),
            None => {
                self.asked.push(Routed { id, request });
                self.core.route_later(self.now, id);
            }
        }
    }

    /// Answers routing query `id`; returns what the core sends.
    fn routed(&mut self, id: u64, decision: RouteDecision) -> Vec<(Target, Message)> {
        self.core.handle(self.now, Input::Routed { id, decision });
        self.drain()
    }

    fn new() -> Self {
        Self::with_limits(CoreLimits::default())
    }

    /// A core that relays media in `mode` through two engines, both up.
    fn with_media(mode: crate::media::Mode) -> Self {
        let mut sim = Self::with_settings(
            CoreLimits::default(),
            crate::media::Settings {
                mode,
                ..crate::media::Settings::default()
            },
        );
        sim.core.set_media_engines(vec![1, 1]);
        sim
    }

    /// The media requests the core made since the last call.
    fn media(&mut self) -> Vec<crate::media::MediaRequest> {
        std::iter::from_fn(|| self.core.poll_media()).collect()
    }

    /// What came of media request `id`; returns what the core sends.
    fn media_done(
        &mut self,
        id: u64,
        outcome: crate::media::MediaOutcome,
    ) -> Vec<(Target, Message)> {
        self.core.handle(self.now, Input::Media { id, outcome });
        self.drain()
    }

    fn with_limits(limits: CoreLimits) -> Self {
        Self::with_settings(limits, crate::media::Settings::default())
    }

    fn with_gateways(sets: Vec<gateways::GatewaySet>) -> Self {
        let mut sim = Self::with_router();
        let mut cfg = sim.core.cfg.clone();
        cfg.gateways = sets;
        sim.core = Core::new(cfg);
        sim.core.set_routing(true);
        sim.core.start_probes(sim.now);
        sim
    }

    fn with_settings(limits: CoreLimits, media: crate::media::Settings) -> Self {
        let listeners = vec![
            SipListener {
                transport: Transport::Udp,
                addr: UDP,
            },
            SipListener {
                transport: Transport::Tcp,
                addr: TCP,
            },
            SipListener {
                transport: Transport::Ws,
                addr: WS,
            },
        ];
        let myself = Arc::new(Myself::new(&["localhost".into()], &[UDP, TCP, WS]));
        Self {
            core: Core::new(CoreConfig {
                myself,
                listeners,
                server_header: "test".into(),
                secret: [5; 32],
                timers: TimerConfig::default(),
                registrar: RegistrarConfig::default(),
                relay: false,
                // The edge proxy of `edge()`.
                trusted: peers::TrustedPeers::new(vec!["127.0.0.2".parse().unwrap()]),
                limits,
                media,
                gateways: Vec::new(),
                cluster: None,
            }),
            now: Instant::now(),
            asked: Vec::new(),
            in_place: None,
            queries: 0,
        }
    }

    /// Feeds a message; returns what the core sends.
    fn feed(&mut self, source: Source, text: &str) -> Vec<(Target, Message)> {
        let message = parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("test message does not parse: {e}\n{text}"));
        self.core.handle(
            self.now,
            Input::Message(Box::new(Incoming::new(source, message))),
        );
        self.ask_router();
        self.drain()
    }

    fn drain(&mut self) -> Vec<(Target, Message)> {
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            out.push((
                t.target,
                parse(&t.payload).expect("the core sends parsable messages"),
            ));
        }
        out
    }

    /// Advances the clock by `d`, running timers (bounded).
    fn advance(&mut self, d: Duration) -> Vec<(Target, Message)> {
        let end = self.now + d;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.core.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.core.handle_timeout(self.now);
                    out.extend(self.drain());
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    fn register_ws(&mut self, user: &str, flow: FlowId) {
        let out = self.feed(
            browser(flow),
            &format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS b{flow}.invalid;branch=z9hG4bKreg{user}{flow}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=r{flow}\r\nTo: <sip:{user}@localhost>\r\n\
                 Call-ID: reg-{user}-{flow}\r\nCSeq: 1 REGISTER\r\n\
                 Contact: <sip:{user}{flow}@b{flow}.invalid;transport=ws>;expires=600\r\n\r\n"
            ),
        );
        assert_eq!(status(&out[0].1), 200, "{out:?}");
    }

    /// Lets every timer run out (well past timer C) and checks that no transaction,
    /// response context, routing query or transaction timer is left; `bindings`
    /// contacts under `aors` AoRs are still registered.
    fn assert_idle_after_timers(&mut self, bindings: usize, aors: usize) {
        self.assert_idle_with_calls_up(bindings, aors, 0);
    }

    /// [`Sim::assert_idle_after_timers`] with `dialogs` calls still up (answered, no
    /// BYE yet): counted until their BYE.
    fn assert_idle_with_calls_up(&mut self, bindings: usize, aors: usize, dialogs: usize) {
        self.advance(Duration::from_secs(400));
        assert_eq!(
            self.core.stats(),
            CoreStats {
                bindings,
                aors,
                dialogs,
                // The registration expiry sweep.
                timers: usize::from(bindings > 0),
                ..CoreStats::default()
            }
        );
        assert!(self.core.servers.is_empty() && self.core.clients.is_empty());
        assert!(self.core.cancels.is_empty());
    }

    /// `n` INVITEs to `user` over UDP, `every` apart, from 250 addresses 127.0.`net`.x
    /// (a port each): callers that never answer what comes back.
    fn invite_flood(&mut self, user: &str, n: u32, net: u8, every: Duration) {
        for i in 0..n {
            let from: SocketAddr = format!("127.0.{net}.{}:{}", 1 + i % 250, 6000 + i)
                .parse()
                .unwrap();
            let source = Source {
                remote: from,
                ..udp_phone()
            };
            let text = format!(
                "INVITE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKfl{net}x{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:x{i}@localhost>;tag=i{i}\r\nTo: <sip:{user}@localhost>\r\n\
                 Call-ID: fl-{net}-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{from}>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
            );
            self.feed(source, &text);
            self.advance(every);
        }
    }

    fn register_udp(&mut self, user: &str) {
        let out = self.feed(
            udp_phone(),
            &format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKregu{user};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=ru\r\nTo: <sip:{user}@localhost>\r\n\
                 Call-ID: reg-{user}-udp\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:5070>\r\n\r\n"
            ),
        );
        assert_eq!(status(&out[0].1), 200, "{out:?}");
    }
}

fn response(m: &Message) -> &Response {
    match m {
        Message::Response(r) => r,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn status(m: &Message) -> u16 {
    match m {
        Message::Response(r) => r.status,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

/// The first request among what the core sent (after a 100 Trying, say), and where.
fn forwarded(out: &[(Target, Message)]) -> (Target, &Request) {
    out.iter()
        .find_map(|(t, m)| match m {
            Message::Request(r) => Some((*t, r)),
            Message::Response(_) => None,
        })
        .expect("forwarded")
}

/// The Record-Route values of `req`, in order.
fn record_route(req: &Request) -> Vec<String> {
    req.headers
        .values(&HeaderName::RecordRoute)
        .map(str::to_string)
        .collect()
}

fn request(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(r) => panic!("expected a request, got {}", r.status),
    }
}

/// A response to `req` as a UA would send it: the fields a response copies
/// ([`Response::for_request`], To tagged `callee`), the Record-Routes of a dialog-forming
/// answer (RFC 3261 12.1.1), extra headers.
fn answer(req: &Request, status: u16, extra: &str) -> String {
    let r = Response::for_request(req, status, Some("callee"));
    let mut s = format!("SIP/2.0 {status} {}\r\n", r.reason);
    for h in r.headers.iter() {
        s.push_str(&format!("{}: {}\r\n", h.name.as_str(), h.value));
    }
    if (101..300).contains(&status) {
        for rr in req.headers.get_all(&HeaderName::RecordRoute) {
            s.push_str(&format!("Record-Route: {rr}\r\n"));
        }
    }
    s.push_str(extra);
    s.push_str("\r\n");
    s
}

fn invite_from_udp(to_user: &str, branch: &str) -> String {
    format!(
        "INVITE sip:{to_user}@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:{to_user}@localhost>\r\n\
         Call-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:phone@127.0.0.1:5070>\r\n\
         Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
}

#[test]
fn options_to_us_over_ws_and_udp() {
    let mut sim = Sim::new();
    let opts = "OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKo1;rport\r\n\
                Max-Forwards: 70\r\nFrom: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: o1\r\n\
                CSeq: 1 OPTIONS\r\n\r\n";
    let out = sim.feed(browser(1), opts);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Target::Flow(1));
    assert_eq!(status(&out[0].1), 200);
    let out = sim.feed(
        udp_phone(),
        &opts.replace("SIP/2.0/WS x.invalid", "SIP/2.0/UDP 127.0.0.1:5070"),
    );
    assert_eq!(out[0].0, udp_phone_target());
}

#[test]
fn message_udp_to_ws_and_back() {
    let mut sim = Sim::new();
    sim.register_ws("bob", 7);
    let out = sim.feed(
        udp_phone(),
        "MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p\r\nTo: <sip:bob@localhost>\r\nCall-ID: m1\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let (target, m) = &out[0];
    assert_eq!(*target, Target::Flow(7));
    let fwd = request(m);
    assert_eq!(fwd.uri.to_string(), "sip:bob7@b7.invalid;transport=ws");
    assert_eq!(fwd.headers.get(&HeaderName::MaxForwards), Some("69"));
    assert_eq!(fwd.vias().unwrap().len(), 2);
    assert_eq!(fwd.vias().unwrap()[0].transport, "WS");
    assert!(
        fwd.headers.get(&HeaderName::RecordRoute).is_none(),
        "MESSAGE is not record-routed"
    );
    assert_eq!(&fwd.body[..], b"hi");
    let out = sim.feed(browser(7), &answer(fwd, 200, ""));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, udp_phone_target());
    let Message::Response(r) = &out[0].1 else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.vias().unwrap().len(), 1, "our Via is stripped");
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn a_contact_with_headers_and_method_is_retargeted_without_them() {
    let mut sim = Sim::new();
    let out = sim.feed(
        udp_phone(),
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrh;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@localhost>;tag=rh\r\nTo: <sip:carol@localhost>\r\n\
         Call-ID: reg-h\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:carol@127.0.0.1:5070;user=phone;method=INVITE;x-dev=7?Subject=hi&Priority=urgent>\r\n\r\n",
    );
    assert_eq!(status(&out[0].1), 200, "{out:?}");
    let out = sim.feed(
        browser(3),
        "MESSAGE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKmh\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@localhost>;tag=b\r\nTo: <sip:carol@localhost>\r\nCall-ID: mh\r\n\
         CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(out.len(), 1, "{out:?}");
    // RFC 3261 19.1.1, Table 1: neither headers nor `method` may be in a Request-URI;
    // the other parameters stay (19.1.5).
    assert_eq!(
        request(&out[0].1).uri.to_string(),
        "sip:carol@127.0.0.1:5070;user=phone;x-dev=7"
    );
}

#[test]
fn prack_and_update_in_the_early_dialog_cross_while_the_invite_is_pending() {
    let mut sim = Sim::new();
    sim.register_ws("bob", 3);
    let out = sim.feed(udp_phone(), &invite_from_udp("bob", "pr1"));
    let inv = request(&out[1].1).clone();
    let rr = record_route(&inv);
    // A reliable 183 (RFC 3262) passes up with its RSeq and our Record-Route.
    let early = answer(
        &inv,
        183,
        "Require: 100rel\r\nRSeq: 1\r\nContact: <sip:bob3@b3.invalid;transport=ws>\r\n",
    );
    let out = sim.feed(browser(3), &early);
    assert_eq!(out.len(), 1, "{out:?}");
    let Message::Response(up) = &out[0].1 else {
        panic!()
    };
    assert_eq!(up.status, 183);
    assert_eq!(up.headers.get(&HeaderName::parse("RSeq")), Some("1"));
    // The phone's PRACK and then an UPDATE follow the early dialog's route set to the
    // browser; their answers come back; the INVITE is still pending meanwhile.
    for (n, method, extra) in [(2, "PRACK", "RAck: 1 1 INVITE\r\n"), (3, "UPDATE", "")] {
        let req = format!(
            "{method} sip:bob3@b3.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpr{n};rport\r\nMax-Forwards: 70\r\n\
             Route: {}, {}\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:bob@localhost>;tag=callee\r\n\
             Call-ID: call-pr1\r\nCSeq: {n} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
            rr[1], rr[0]
        );
        let out = sim.feed(udp_phone(), &req);
        assert_eq!(out.len(), 1, "{method}: {out:?}");
        assert_eq!(out[0].0, Target::Flow(3), "{method}");
        let fwd = request(&out[0].1).clone();
        assert_eq!(fwd.uri.to_string(), "sip:bob3@b3.invalid;transport=ws");
        let out = sim.feed(browser(3), &answer(&fwd, 200, ""));
        assert_eq!(out.len(), 1, "{method} 200: {out:?}");
        assert_eq!(out[0].0, udp_phone_target());
        assert_eq!(status(&out[0].1), 200);
    }
    let out = sim.feed(
        browser(3),
        &answer(&inv, 200, "Contact: <sip:bob3@b3.invalid;transport=ws>\r\n"),
    );
    assert_eq!(status(&out[0].1), 200);
}

#[test]
fn invite_udp_to_ws_with_double_record_route_ack_and_bye_both_ways() {
    let mut sim = Sim::new();
    sim.register_ws("bob", 3);
    let out = sim.feed(udp_phone(), &invite_from_udp("bob", "i1"));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[0].1), 100);
    assert_eq!(out[1].0, Target::Flow(3));
    let inv = request(&out[1].1).clone();
    let rr = record_route(&inv);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        rr[0].contains("@127.0.0.1:8080;transport=ws;lr"),
        "WS side carries a flow token: {rr:?}"
    );
    assert!(
        rr[1].starts_with("<sip:fu") && rr[1].contains("@127.0.0.1:5060;lr;sw=c"),
        "the UDP side names the phone's address, signed for the caller's side: {rr:?}"
    );

    // Ringing and answer pass back to the phone.
    let out = sim.feed(browser(3), &answer(&inv, 180, ""));
    assert_eq!(status(&out[0].1), 180);
    let ok = answer(&inv, 200, "Contact: <sip:bob3@b3.invalid;transport=ws>\r\n");
    let out = sim.feed(browser(3), &ok);
    assert_eq!(out.len(), 1);
    let Message::Response(ok_up) = &out[0].1 else {
        panic!()
    };
    assert_eq!(ok_up.status, 200);
    assert_eq!(ok_up.headers.values(&HeaderName::RecordRoute).count(), 2);

    // The phone's route set is the Record-Route list in order.
    let route_from_phone = format!("Route: {}\r\nRoute: {}\r\n", rr[1], rr[0]);
    let ack = format!(
        "ACK sip:bob3@b3.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack1;rport\r\n\
         Max-Forwards: 70\r\n{route_from_phone}From: <sip:phone@localhost>;tag=p1\r\nTo: <sip:bob@localhost>;tag=callee\r\n\
         Call-ID: call-i1\r\nCSeq: 1 ACK\r\n\r\n"
    );
    let out = sim.feed(udp_phone(), &ack);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].0,
        Target::Flow(3),
        "the flow token routes the ACK to the browser"
    );
    assert_eq!(request(&out[0].1).method, Method::Ack);
    assert!(request(&out[0].1).headers.get(&HeaderName::Route).is_none());

    // BYE from the browser: its route set is the reverse.
    let bye = format!(
        "BYE sip:phone@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\n\
         Route: {}\r\nRoute: {}\r\nFrom: <sip:bob@localhost>;tag=callee\r\nTo: <sip:phone@localhost>;tag=p1\r\n\
         Call-ID: call-i1\r\nCSeq: 2 BYE\r\n\r\n",
        rr[0], rr[1]
    );
    let out = sim.feed(browser(3), &bye);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, udp_phone_target());
    let bye_fwd = request(&out[0].1).clone();
    assert_eq!(bye_fwd.uri.to_string(), "sip:phone@127.0.0.1:5070");
    let out = sim.feed(udp_phone(), &answer(&bye_fwd, 200, ""));
    assert_eq!(out[0].0, Target::Flow(3));
    assert_eq!(status(&out[0].1), 200);
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn a_udp_phone_behind_nat_gets_its_dialog_requests_at_its_real_address() {
    let mut sim = Sim::new();
    sim.register_ws("web", 4);
    // The phone says 10.0.0.5:5060 but its packets come from 127.0.0.1:5070 (a NAT).
    let nat = |text: String| {
        text.replace(
            "Contact: <sip:phone@127.0.0.1:5070>",
            "Contact: <sip:phone@10.0.0.5:5060>",
        )
    };
    let out = sim.feed(udp_phone(), &nat(invite_from_udp("web", "n1")));
    assert_eq!(out[1].0, Target::Flow(4));
    let inv = request(&out[1].1).clone();
    let rr = record_route(&inv);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        rr[1].starts_with("<sip:fu"),
        "the UDP side names the phone's real address: {rr:?}"
    );
    let ok = answer(&inv, 200, "Contact: <sip:web@w4.invalid;transport=ws>\r\n");
    sim.feed(browser(4), &ok);
    // The browser hangs up: its BYE is for the Contact (a private address) but goes
    // where the phone really is.
    let bye = format!(
        "BYE sip:phone@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/WS w4.invalid;branch=z9hG4bKnbye\r\nMax-Forwards: 70\r\n\
         Route: {}\r\nRoute: {}\r\nFrom: <sip:web@localhost>;tag=callee\r\nTo: <sip:phone@localhost>;tag=p1\r\n\
         Call-ID: call-n1\r\nCSeq: 2 BYE\r\n\r\n",
        rr[0], rr[1]
    );
    let out = sim.feed(browser(4), &bye);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, udp_phone_target());
    assert_eq!(
        request(&out[0].1).uri.to_string(),
        "sip:phone@10.0.0.5:5060"
    );
    // A forged token is refused.
    let forged = bye
        .replace(&rr[1][9..14], "AAAAA")
        .replace("z9hG4bKnbye", "z9hG4bKnbyf");
    assert_eq!(status(&sim.feed(browser(4), &forged)[0].1), 403);

    // Called: registered from behind the NAT, the INVITE goes to the real address and
    // the phone's entry carries it, so the caller's ACK and BYE follow.
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnreg;rport\r\n\
               Max-Forwards: 70\r\nFrom: <sip:natted@localhost>;tag=nr\r\nTo: <sip:natted@localhost>\r\n\
               Call-ID: nat-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:natted@10.0.0.5:5060>\r\n\r\n";
    assert_eq!(status(&sim.feed(udp_phone(), reg)[0].1), 200);
    let invite = "INVITE sip:natted@localhost SIP/2.0\r\nVia: SIP/2.0/WS w4.invalid;branch=z9hG4bKninv\r\n\
                  Max-Forwards: 70\r\nFrom: <sip:web@localhost>;tag=w\r\nTo: <sip:natted@localhost>\r\n\
                  Call-ID: call-n2\r\nCSeq: 1 INVITE\r\nContact: <sip:web@w4.invalid;transport=ws>\r\n\r\n";
    let out = sim.feed(browser(4), invite);
    let (target, fwd) = forwarded(&out);
    assert_eq!(target, udp_phone_target());
    let rr = record_route(fwd);
    assert!(rr[0].starts_with("<sip:fu"), "{rr:?}");
    // The caller's ACK for the 200 (route set reversed) reaches the phone's real address.
    let ack = format!(
        "ACK sip:natted@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/WS w4.invalid;branch=z9hG4bKnack\r\nMax-Forwards: 70\r\n\
         Route: {}, {}\r\nFrom: <sip:web@localhost>;tag=w\r\nTo: <sip:natted@localhost>;tag=callee\r\n\
         Call-ID: call-n2\r\nCSeq: 1 ACK\r\n\r\n",
        rr[1], rr[0]
    );
    let out = sim.feed(browser(4), &ack);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, udp_phone_target());
}

#[test]
fn every_record_route_entry_names_where_its_side_is_reached() {
    let mut sim = Sim::new();
    sim.register_ws("web", 4);
    // An upstream proxy (which does not record-route) sends us its UA's INVITE: the
    // caller's side is reached where the request came from (the proxy), not at the
    // UA's Contact, which only the proxy can reach.
    let via_proxy = invite_from_udp("web", "up1").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKup1;rport\r\n",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKup1;rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKua1\r\n",
    );
    let via_proxy = via_proxy.replace(
        "Contact: <sip:phone@127.0.0.1:5070>",
        "Contact: <sip:phone@10.0.0.7:5060>",
    );
    let out = sim.feed(udp_phone(), &via_proxy);
    assert_eq!(out[1].0, Target::Flow(4));
    let inv = request(&out[1].1).clone();
    let rr = record_route(&inv);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(rr[1].starts_with("<sip:fu"), "{rr:?}");
    // The browser's BYE goes back to the proxy, whatever the Request-URI says.
    let bye = format!(
        "BYE sip:phone@10.0.0.7:5060 SIP/2.0\r\nVia: SIP/2.0/WS b4.invalid;branch=z9hG4bKupb\r\nMax-Forwards: 70\r\n\
         Route: {}, {}\r\nFrom: <sip:web@localhost>;tag=callee\r\nTo: <sip:phone@localhost>;tag=p1\r\n\
         Call-ID: call-up1\r\nCSeq: 2 BYE\r\n\r\n",
        rr[0], rr[1]
    );
    let out = sim.feed(browser(4), &bye);
    assert_eq!(out[0].0, udp_phone_target(), "{out:?}");
    assert_eq!(
        request(&out[0].1).uri.to_string(),
        "sip:phone@10.0.0.7:5060"
    );

    // A binding registered through a trusted edge proxy (with Path) is reached through
    // it; the callee's entry names the edge.
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKpreg;rport\r\n\
               Via: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bKua2\r\n\
               Max-Forwards: 69\r\nFrom: <sip:far@localhost>;tag=pr\r\nTo: <sip:far@localhost>\r\n\
               Call-ID: path-reg\r\nCSeq: 1 REGISTER\r\nPath: <sip:127.0.0.2:5070;lr>\r\n\
               Supported: path\r\nContact: <sip:far@10.0.0.8:5060>\r\n\r\n";
    // From anyone else, a Path is refused (it names where the server is to send).
    let out = sim.feed(udp_phone(), reg);
    assert_eq!(status(&out[0].1), 403);
    assert_eq!(sim.core.stats().refused.untrusted_path, 1);
    assert!(sim.core.bindings("sip:far@localhost").is_empty());
    assert_eq!(status(&sim.feed(edge(), reg)[0].1), 200);
    let invite = "INVITE sip:far@localhost SIP/2.0\r\nVia: SIP/2.0/WS w4.invalid;branch=z9hG4bKpinv\r\n\
                  Max-Forwards: 70\r\nFrom: <sip:web@localhost>;tag=w\r\nTo: <sip:far@localhost>\r\n\
                  Call-ID: call-p2\r\nCSeq: 1 INVITE\r\nContact: <sip:web@w4.invalid;transport=ws>\r\n\r\n";
    let out = sim.feed(browser(4), invite);
    let (target, fwd) = forwarded(&out);
    let edge_target = Target::Udp {
        local: UDP,
        remote: "127.0.0.2:5070".parse().unwrap(),
    };
    assert_eq!(target, edge_target);
    let rr = record_route(fwd);
    assert!(
        rr[0].starts_with("<sip:fu") && rr[0].contains(";sw=e"),
        "{rr:?}"
    );

    // An edge that registers from one address but names another in its Path (a
    // multi-homed edge, or one behind a balancer) is reached where its Path says, over
    // the transport it names; a Path naming a host is resolved (RFC 3263, in the
    // shell) and reached at what it resolves to.
    for (n, path, want) in [
        (
            1,
            "<sip:127.0.0.2:5090;lr>",
            Target::Udp {
                local: UDP,
                remote: "127.0.0.2:5090".parse().unwrap(),
            },
        ),
        (
            2,
            "<sip:127.0.0.3:5091;transport=tcp;lr>",
            Target::Connect {
                transport: Transport::Tcp,
                remote: "127.0.0.3:5091".parse().unwrap(),
                name: 0,
            },
        ),
        (
            3,
            "<sip:edge.example.org;lr>",
            Target::Udp {
                local: UDP,
                remote: "127.0.0.4:5070".parse().unwrap(),
            },
        ),
        // One naming us (a misconfigured edge) would loop.
        (4, "<sip:127.0.0.1:5060;lr>", edge_target),
    ] {
        let reg = reg
            .replace("far@", &format!("far{n}@"))
            .replace("Call-ID: path-reg", &format!("Call-ID: path-reg{n}"))
            .replace("z9hG4bKpreg", &format!("z9hG4bKpreg{n}"))
            .replace("<sip:127.0.0.2:5070;lr>", path);
        assert_eq!(status(&sim.feed(edge(), &reg)[0].1), 200, "{path}");
        let invite = invite
            .replace("far@", &format!("far{n}@"))
            .replace("call-p2", &format!("call-p2-{n}"))
            .replace("z9hG4bKpinv", &format!("z9hG4bKpinv{n}"));
        let mut out = sim.feed(browser(4), &invite);
        if let Some(r) = sim.core.poll_resolve() {
            assert_eq!(r.hop.host, "edge.example.org", "{path}");
            let outcome = resolve::ResolveOutcome::Targets(vec![resolve::ResolvedTarget {
                transport: Transport::Udp,
                addr: "127.0.0.4:5070".parse().unwrap(),
                name: 0,
            }]);
            sim.core
                .handle(sim.now, Input::Resolved { id: r.id, outcome });
            out.extend(sim.drain());
        }
        let (target, fwd) = forwarded(&out);
        assert_eq!(target, want, "{path}");
        assert_eq!(fwd.headers.get(&HeaderName::Route), Some(path));
    }
}

#[test]
fn a_strict_router_before_us_is_understood() {
    let mut sim = Sim::new();
    sim.register_ws("sam", 5);
    let out = sim.feed(udp_phone(), &invite_from_udp("sam", "sr"));
    let inv = request(&out[1].1).clone();
    let rr = record_route(&inv);
    // An RFC 2543 hop routes strictly: our UDP-side entry becomes the Request-URI and
    // the remote target goes last in Route (RFC 3261 16.4, 12.2.1.1).
    let ours = rr[1].trim_start_matches('<').trim_end_matches('>');
    let bye = format!(
        "BYE {ours} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKsbye;rport\r\nMax-Forwards: 70\r\n\
         Route: {}\r\nRoute: <sip:sam@s5.invalid;transport=ws>\r\nFrom: <sip:phone@localhost>;tag=p1\r\n\
         To: <sip:sam@localhost>;tag=callee\r\nCall-ID: call-sr\r\nCSeq: 2 BYE\r\n\r\n",
        rr[0]
    );
    let out = sim.feed(udp_phone(), &bye);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Target::Flow(5));
    let fwd = request(&out[0].1);
    assert_eq!(fwd.uri.to_string(), "sip:sam@s5.invalid;transport=ws");
    assert_eq!(fwd.headers.get(&HeaderName::Route), None);
}

#[test]
fn ws_to_udp_invite_and_bye_from_the_phone() {
    let mut sim = Sim::new();
    sim.register_udp("carol");
    let inv = "INVITE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKw1\r\nMax-Forwards: 70\r\n\
               From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: w1\r\nCSeq: 1 INVITE\r\n\
               Contact: <sip:alice@a9.invalid;transport=ws;ob>\r\n\r\n";
    let out = sim.feed(browser(9), inv);
    assert_eq!(out[1].0, udp_phone_target());
    let fwd = request(&out[1].1).clone();
    assert_eq!(fwd.uri.to_string(), "sip:carol@127.0.0.1:5070");
    let rr = record_route(&fwd);
    assert!(
        rr[0].starts_with("<sip:fu") && rr[0].contains(";sw=e"),
        "{rr:?}"
    );
    assert!(rr[1].contains("transport=ws") && rr[1].contains(";sw=c"));
    sim.feed(
        udp_phone(),
        &answer(&fwd, 200, "Contact: <sip:carol@127.0.0.1:5070>\r\n"),
    );
    // BYE from the phone, with its route set (RR order), to the browser's contact.
    let bye = format!(
        "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb2;rport\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
         To: <sip:alice@localhost>;tag=a\r\nCall-ID: w1\r\nCSeq: 1 BYE\r\n\r\n",
        rr[0], rr[1]
    );
    let out = sim.feed(udp_phone(), &bye);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Target::Flow(9));
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn a_strict_router_after_us_gets_its_uri_as_the_request_uri() {
    let mut sim = Sim::new();
    sim.register_udp("carol");
    let inv = "INVITE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\n\
               From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: s1\r\nCSeq: 1 INVITE\r\n\
               Contact: <sip:alice@a9.invalid;transport=ws;ob>\r\n\r\n";
    let out = sim.feed(browser(9), inv);
    let fwd = request(&out[1].1).clone();
    let rr = record_route(&fwd);
    // The browser's route set: our two entries, then an RFC 2543 proxy (no `lr`) that
    // the callee's side of the dialog went through.
    let bye = format!(
        "BYE sip:carol@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKs2\r\nMax-Forwards: 70\r\n\
         Route: {}, {}, <sip:127.0.0.1:5090>\r\nFrom: <sip:alice@localhost>;tag=a\r\n\
         To: <sip:carol@localhost>;tag=callee\r\nCall-ID: s1\r\nCSeq: 2 BYE\r\n\r\n",
        rr[1], rr[0]
    );
    let out = sim.feed(browser(9), &bye);
    assert_eq!(out.len(), 1, "{out:?}");
    // Sent where our callee-side entry says the dialog's callee side is reached (the
    // INVITE went there), never to an address the route set merely names.
    assert_eq!(out[0].0, udp_phone_target());
    // RFC 3261 16.6 step 6: the strict router's URI is the Request-URI, the target the
    // last Route value.
    let fwd = request(&out[0].1);
    assert_eq!(fwd.uri.to_string(), "sip:127.0.0.1:5090");
    let route: Vec<&str> = fwd.headers.values(&HeaderName::Route).collect();
    assert_eq!(route, ["<sip:carol@127.0.0.1:5070>"]);
}

#[test]
fn cancel_gets_200_then_487_passes_up_and_is_acked() {
    let mut sim = Sim::new();
    sim.register_ws("bob", 4);
    let out = sim.feed(udp_phone(), &invite_from_udp("bob", "c1"));
    let inv = request(&out[1].1).clone();
    // No CANCEL before a provisional response.
    let cancel = invite_from_udp("bob", "c1")
        .replace("INVITE sip:bob@localhost", "CANCEL sip:bob@localhost")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            "\r\n",
        );
    let out = sim.feed(udp_phone(), &cancel);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0].1), 200);
    // The 180 arrives: now the CANCEL goes out.
    let out = sim.feed(browser(4), &answer(&inv, 180, ""));
    let sent_cancel = out
        .iter()
        .find(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::Cancel));
    let (target, c) = sent_cancel.expect("CANCEL to the callee");
    assert_eq!(*target, Target::Flow(4));
    assert_eq!(
        request(c).vias().unwrap()[0].branch(),
        inv.vias().unwrap()[0].branch()
    );
    sim.feed(browser(4), &answer(request(c), 200, ""));
    let out = sim.feed(browser(4), &answer(&inv, 487, ""));
    let ack = out
        .iter()
        .find(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::Ack));
    assert!(ack.is_some(), "487 is ACKed hop by hop: {out:?}");
    let up = out
        .iter()
        .find(|(_, m)| matches!(m, Message::Response(_)))
        .unwrap();
    assert_eq!(up.0, udp_phone_target());
    assert_eq!(status(&up.1), 487);
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn unknown_user_404_gone_user_480_and_bindings_go_with_the_flow() {
    let mut sim = Sim::new();
    let out = sim.feed(udp_phone(), &invite_from_udp("nobody", "u1"));
    assert_eq!(status(&out.last().unwrap().1), 404);
    sim.register_ws("dave", 11);
    assert_eq!(sim.core.bindings("sip:dave@localhost").len(), 1);
    sim.core.handle(sim.now, Input::FlowClosed(11));
    assert!(sim.core.bindings("sip:dave@localhost").is_empty());
    let removed = std::iter::from_fn(|| sim.core.poll_event())
        .filter(|e| matches!(e, Event::BindingRemoved(_)))
        .count();
    assert_eq!(removed, 1);
    sim.core.handle(sim.now, Input::FlowClosed(11));
    assert!(sim.core.poll_event().is_none(), "removed exactly once");
    let out = sim.feed(udp_phone(), &invite_from_udp("dave", "u2"));
    assert_eq!(status(&out.last().unwrap().1), 480);
}

#[test]
fn flow_closing_during_a_call_attempt_fails_over_with_480() {
    let mut sim = Sim::new();
    sim.register_ws("erin", 12);
    let out = sim.feed(udp_phone(), &invite_from_udp("erin", "f1"));
    assert_eq!(out[1].0, Target::Flow(12));
    sim.core.handle(sim.now, Input::FlowClosed(12));
    let out = sim.drain();
    assert_eq!(out.len(), 1, "{out:?}");
    // The flow failed (430) and there is no other: the caller gets 480, not the 430
    // (endpoints do not see 430, RFC 5626 11.5).
    assert_eq!(status(&out[0].1), 480, "{out:?}");
}

#[test]
fn udp_invite_retransmissions_are_absorbed_and_timer_a_b_give_408() {
    let mut sim = Sim::new();
    sim.register_udp("frank");
    let out = sim.feed(udp_phone(), &invite_from_udp("frank", "t1"));
    assert_eq!(out.len(), 2);
    // The caller retransmits: the 100 is sent again, nothing goes downstream.
    let out = sim.feed(udp_phone(), &invite_from_udp("frank", "t1"));
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0].1), 100);
    // No answer downstream: timer A retransmits, timer B gives up at 64*T1.
    let out = sim.advance(Duration::from_secs(40));
    let retransmits = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::Request(_)))
        .count();
    assert_eq!(
        retransmits, 6,
        "A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    );
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(finals[0], 408, "{finals:?}");
    // The 408 is retransmitted to the caller (timer G) until it ACKs.
    assert!(finals.len() > 1);
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn max_forwards_and_loops() {
    let mut sim = Sim::new();
    sim.register_udp("gina");
    let out = sim.feed(
        udp_phone(),
        &invite_from_udp("gina", "mf").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(status(&out.last().unwrap().1), 483);
    // A request that already passed us with the same hash is a loop.
    let out = sim.feed(udp_phone(), &invite_from_udp("gina", "lp"));
    let mut fwd = request(&out[1].1).clone();
    // It comes back (a misconfigured peer routes it to us) for the same target: a loop.
    fwd.uri = crate::sip::Uri::parse("sip:gina@localhost").unwrap();
    let looped = fwd.to_bytes();
    let out = sim.feed(udp_phone(), std::str::from_utf8(&looped).unwrap());
    assert_eq!(status(&out.last().unwrap().1), 482);
}

/// The ACK a UAC sends for a non-2xx final answer `resp` to `invite` (RFC 3261 17.1.1.3).
fn ack_for(invite: &str, resp: &Message) -> String {
    let Message::Response(resp) = resp else {
        panic!("expected a response")
    };
    let inv = parse(invite.as_bytes()).unwrap();
    let Message::Request(inv) = inv else {
        panic!("expected a request")
    };
    let via = inv.headers.get(&HeaderName::Via).unwrap();
    format!(
        "ACK {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
         Call-ID: {}\r\nCSeq: 1 ACK\r\n\r\n",
        inv.uri,
        inv.headers.get(&HeaderName::From).unwrap(),
        resp.headers.get(&HeaderName::To).unwrap(),
        inv.call_id().unwrap(),
    )
}

#[test]
fn the_ack_for_a_refusal_made_here_ends_here() {
    let mut sim = Sim::new();
    sim.register_udp("hank");
    // Refused here without a transaction (483), to a user who has a binding.
    let invite = invite_from_udp("hank", "sa").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = sim.feed(udp_phone(), &invite);
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0].1), 483);
    // Its ACK is not forwarded to hank, who never saw the INVITE.
    let out = sim.feed(udp_phone(), &ack_for(&invite, &out[0].1));
    assert!(out.is_empty(), "{out:?}");
    // The same for a 404.
    let invite = invite_from_udp("nobody", "sb");
    let out = sim.feed(udp_phone(), &invite);
    assert_eq!(status(&out[0].1), 404);
    assert!(
        sim.feed(udp_phone(), &ack_for(&invite, &out[0].1))
            .is_empty()
    );
    // The answer to a CANCEL carries the tag of the INVITE's answer (RFC 3261 9.2).
    let a = sim
        .core
        .make_to_tag(request(&parse(invite.as_bytes()).unwrap()));
    let cancel = invite
        .replacen("INVITE", "CANCEL", 1)
        .replace("1 INVITE", "1 CANCEL");
    let b = sim
        .core
        .make_to_tag(request(&parse(cancel.as_bytes()).unwrap()));
    assert_eq!(a, b);
}

#[test]
fn a_registration_200_carries_the_date_the_driver_set() {
    let mut sim = Sim::new();
    let register = |cseq: u32| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKd{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:lou@localhost>;tag=d\r\nTo: <sip:lou@localhost>\r\n\
             Call-ID: date\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:lou@127.0.0.1:5070>\r\n\r\n"
        )
    };
    let date = |out: &[(Target, Message)]| {
        out[0]
            .1
            .headers()
            .get(&HeaderName::Date)
            .map(str::to_string)
    };
    // No clock given yet: no Date rather than a wrong one.
    assert_eq!(date(&sim.feed(udp_phone(), &register(1))), None);
    sim.core.set_date("Sat, 28 Nov 2026 16:00:00 GMT".into());
    let out = sim.feed(udp_phone(), &register(2));
    assert_eq!(status(&out[0].1), 200);
    assert_eq!(date(&out).as_deref(), Some("Sat, 28 Nov 2026 16:00:00 GMT"));
    // Not on a refusal.
    let out = sim.feed(
        udp_phone(),
        &register(3).replace("\r\n\r\n", "\r\nExpires: 5\r\n\r\n"),
    );
    assert_eq!(status(&out[0].1), 423);
    assert_eq!(date(&out), None);
}

#[test]
fn options_to_a_user_with_no_hops_left_is_not_forwarded() {
    let mut sim = Sim::new();
    sim.register_udp("ivan");
    let options = |uri: &str| {
        format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmf{};rport\r\n\
             Max-Forwards: 0\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <{uri}>\r\n\
             Call-ID: mf-{}\r\nCSeq: 1 OPTIONS\r\n\r\n",
            uri.len(),
            uri.len()
        )
    };
    let out = sim.feed(udp_phone(), &options("sip:ivan@localhost"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0].1), 483);
    // For the server itself it is answered (16.3 step 3's exception).
    let out = sim.feed(udp_phone(), &options("sip:localhost"));
    assert_eq!(status(&out[0].1), 200);
}

#[test]
fn a_route_set_naming_us_too_often_is_a_loop() {
    let mut sim = Sim::new();
    sim.register_udp("jane");
    let ours = |n: usize| vec!["<sip:127.0.0.1:5060;lr>"; n].join(", ");
    let invite = |n: usize| {
        invite_from_udp("jane", &format!("rt{n}")).replace(
            "Max-Forwards: 70",
            &format!("Route: {}\r\nMax-Forwards: 70", ours(n)),
        )
    };
    // Two of ours (a transport change) are popped and the request goes on.
    let out = sim.feed(udp_phone(), &invite(2));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(request(&out[1].1).headers.get(&HeaderName::Route), None);
    // A thousand in one line are not walked: 482 after a few.
    let out = sim.feed(udp_phone(), &invite(1000));
    assert_eq!(status(&out.last().unwrap().1), 482);
}

#[test]
fn forking_to_two_flows_best_response_and_cancel_of_the_rest() {
    let mut sim = Sim::new();
    sim.register_ws("hank", 21);
    sim.register_ws("hank", 22);
    let out = sim.feed(udp_phone(), &invite_from_udp("hank", "fk"));
    let invites: Vec<(Target, Request)> = out
        .iter()
        .filter_map(|(t, m)| match m {
            Message::Request(r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(invites.len(), 2);
    let (a, b) = (&invites[0].1, &invites[1].1);
    sim.feed(
        browser(if invites[0].0 == Target::Flow(21) {
            21
        } else {
            22
        }),
        &answer(a, 180, ""),
    );
    let other = if invites[1].0 == Target::Flow(21) {
        21
    } else {
        22
    };
    let out = sim.feed(browser(other), &answer(b, 200, ""));
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 200))
    );
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::Cancel)),
        "the ringing branch is cancelled: {out:?}"
    );
    // The call was answered and never hung up: its dialog stays counted.
    sim.assert_idle_with_calls_up(2, 1, 1);
}

#[test]
fn a_failed_flow_does_not_hide_the_other_devices_answer() {
    let mut sim = Sim::new();
    sim.register_ws("kate", 31);
    sim.register_ws("kate", 32);
    let out = sim.feed(udp_phone(), &invite_from_udp("kate", "ff"));
    let invite_on = |flow: FlowId| {
        out.iter()
            .find_map(|(t, m)| match m {
                Message::Request(r) if *t == Target::Flow(flow) => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no INVITE on flow {flow}: {out:?}"))
    };
    let on_32 = invite_on(32);
    // One tab closes while it rings (its branch fails with 430); the other is busy.
    sim.core.handle(sim.now, Input::FlowClosed(31));
    assert!(
        sim.drain()
            .iter()
            .all(|(_, m)| !matches!(m, Message::Response(r) if r.status >= 200)),
        "no final answer while a branch is pending"
    );
    let out = sim.feed(browser(32), &answer(&on_32, 486, ""));
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Response(r) if r.status >= 200 => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(finals, [486], "{out:?}");
}

#[test]
fn best_response_prefers_lower_class_and_turns_503_into_500() {
    let mut sim = Sim::new();
    sim.register_ws("ivy", 31);
    sim.register_ws("ivy", 32);
    let out = sim.feed(udp_phone(), &invite_from_udp("ivy", "br"));
    let reqs: Vec<(Target, Request)> = out
        .iter()
        .filter_map(|(t, m)| match m {
            Message::Request(r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect();
    let flow_of = |t: Target| match t {
        Target::Flow(f) => f,
        _ => unreachable!(),
    };
    sim.feed(browser(flow_of(reqs[0].0)), &answer(&reqs[0].1, 503, ""));
    let out = sim.feed(browser(flow_of(reqs[1].0)), &answer(&reqs[1].1, 486, ""));
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(finals, [486]);

    let out = sim.feed(udp_phone(), &invite_from_udp("ivy", "br2"));
    let reqs: Vec<(Target, Request)> = out
        .iter()
        .filter_map(|(t, m)| match m {
            Message::Request(r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect();
    sim.feed(browser(flow_of(reqs[0].0)), &answer(&reqs[0].1, 503, ""));
    let out = sim.feed(browser(flow_of(reqs[1].0)), &answer(&reqs[1].1, 503, ""));
    assert_eq!(
        status(
            &out.iter()
                .find(|(_, m)| matches!(m, Message::Response(_)))
                .unwrap()
                .1
        ),
        500
    );
}

#[test]
fn forged_or_stale_flow_tokens() {
    let mut sim = Sim::new();
    // Our own entry for this dialog (Call-ID st, caller tag 2: the To tag of requests
    // toward the caller), naming flow 999, which is gone.
    let entry = sim.core.rr_uri(
        Transport::Ws,
        WS,
        proxy::RrToken::Flow(999),
        ("st", "2"),
        proxy::Side::Caller,
        None,
    );
    let stale = FlowTokens::new([5; 32]).encode(999);
    assert!(entry.contains(&stale));
    let bye = format!(
        "BYE sip:x@y.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst;rport\r\n\
         Max-Forwards: 70\r\nRoute: {entry}\r\n\
         From: <sip:a@localhost>;tag=1\r\nTo: <sip:b@localhost>;tag=2\r\nCall-ID: st\r\nCSeq: 1 BYE\r\n\r\n"
    );
    let out = sim.feed(udp_phone(), &bye);
    assert_eq!(status(&out[0].1), 430);
    let forged = bye.replace(&stale, "ftAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let out = sim.feed(udp_phone(), &forged.replace("z9hG4bKst", "z9hG4bKst2"));
    assert_eq!(status(&out[0].1), 403);
    // The right entry on another dialog (Call-ID), or with another tag: 403.
    for (n, (from, to)) in [("st", "st-other"), ("tag=2", "tag=3")].iter().enumerate() {
        let other = bye
            .replace(&format!("Call-ID: {from}"), &format!("Call-ID: {to}"))
            .replace(
                &format!("To: <sip:b@localhost>;{from}"),
                &format!("To: <sip:b@localhost>;{to}"),
            )
            .replace("z9hG4bKst", &format!("z9hG4bKso{n}"));
        let out = sim.feed(udp_phone(), &other);
        assert_eq!(status(&out[0].1), 403, "{other}");
    }
    // An unsigned token of ours (the old form) proves nothing.
    let unsigned = bye.replace(
        &entry,
        &format!("<sip:{stale}@127.0.0.1:8080;transport=ws;lr>"),
    );
    let out = sim.feed(udp_phone(), &unsigned.replace("z9hG4bKst", "z9hG4bKst3"));
    assert_eq!(status(&out[0].1), 403);
    // Our entry on a request outside the dialog (no To tag): refused too.
    let untagged = bye
        .replace("To: <sip:b@localhost>;tag=2", "To: <sip:b@localhost>")
        .replace("z9hG4bKst", "z9hG4bKst4");
    let out = sim.feed(udp_phone(), &untagged);
    assert_eq!(status(&out[0].1), 403);
    assert_eq!(sim.core.stats().refused.forged_route, 5);
}

#[test]
fn foreign_domains_are_refused_without_relay() {
    let mut sim = Sim::new();
    let out = sim.feed(
        udp_phone(),
        &invite_from_udp("x", "fd").replace("sip:x@localhost SIP", "sip:x@192.0.2.9 SIP"),
    );
    assert_eq!(status(&out.last().unwrap().1), 403);
}

#[test]
fn registrations_expire_on_the_simulated_clock() {
    let mut sim = Sim::new();
    sim.register_ws("jo", 41);
    sim.advance(Duration::from_secs(599));
    assert_eq!(sim.core.bindings("sip:jo@localhost").len(), 1);
    sim.advance(Duration::from_secs(2));
    assert!(sim.core.bindings("sip:jo@localhost").is_empty());
    assert!(
        std::iter::from_fn(|| sim.core.poll_event()).any(|e| matches!(e, Event::BindingRemoved(_)))
    );
}

#[test]
fn non_invite_udp_server_absorbs_retransmissions_with_the_same_answer() {
    let mut sim = Sim::new();
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrr;rport\r\n\
               Max-Forwards: 70\r\nFrom: <sip:kim@localhost>;tag=1\r\nTo: <sip:kim@localhost>\r\nCall-ID: rr\r\n\
               CSeq: 1 REGISTER\r\nContact: <sip:kim@127.0.0.1:5070>\r\n\r\n";
    let first = sim.feed(udp_phone(), reg);
    let again = sim.feed(udp_phone(), reg);
    assert_eq!(first.len(), 1);
    assert_eq!(again.len(), 1);
    assert_eq!(first[0].1, again[0].1, "the stored response is sent again");
    // After timer J the transaction is gone.
    sim.advance(Duration::from_secs(33));
    assert!(sim.core.servers.is_empty());
}

/// The semantic cases of RFC 4475 (3.3): the parser accepts them, the core answers.
#[test]
fn torture_semantics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/torture");
    for (file, want) in [
        ("unkscm.sip", 416),
        ("novelsc.sip", 416),
        ("bext01.sip", 420),
        ("zeromf.sip", 483),
    ] {
        let mut sim = Sim::new();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let out = sim.feed(udp_phone(), &text);
        let got: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
        assert_eq!(got.last(), Some(&want), "{file}: {got:?}");
    }
}

#[test]
fn no_open_relay_through_preloaded_routes_or_fake_to_tags() {
    let mut sim = Sim::new();
    // An initial request with a Route to elsewhere: relaying it is not allowed.
    let preloaded = invite_from_udp("x", "pr")
        .replace("sip:x@localhost SIP/2.0", "sip:x@192.0.2.66 SIP/2.0")
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRoute: <sip:192.0.2.1;lr>\r\n",
        );
    let out = sim.feed(udp_phone(), &preloaded);
    assert_eq!(status(&out.last().unwrap().1), 403);
    // Our Route plus a To tag, but no MAC of a dialog we record-routed: refused too.
    let faked = invite_from_udp("x", "ft")
        .replace("sip:x@localhost SIP/2.0", "sip:x@192.0.2.66 SIP/2.0")
        .replace(
            "To: <sip:x@localhost>",
            "To: <sip:x@192.0.2.66>;tag=made-up",
        )
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;lr>\r\n",
        );
    let out = sim.feed(udp_phone(), &faked);
    assert_eq!(status(&out.last().unwrap().1), 403);
}

#[test]
fn cancel_after_100_and_giving_up_on_a_silent_callee() {
    let mut sim = Sim::new();
    sim.register_udp("quiet");
    let out = sim.feed(udp_phone(), &invite_from_udp("quiet", "gu"));
    let inv = request(&out[1].1).clone();
    // The callee only says 100: that is enough to CANCEL it.
    sim.feed(udp_phone(), &answer(&inv, 100, ""));
    let cancel = invite_from_udp("quiet", "gu")
        .replace("INVITE sip:quiet@localhost", "CANCEL sip:quiet@localhost")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
            "\r\n",
        );
    let out = sim.feed(udp_phone(), &cancel);
    let sent = out
        .iter()
        .find(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::Cancel));
    let (_, c) = sent.expect("CANCEL goes out after a 100");
    // The callee accepts the CANCEL but never sends 487.
    sim.feed(udp_phone(), &answer(request(c), 200, ""));
    let out = sim.advance(Duration::from_secs(40));
    let finals: Vec<u16> = out
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Response(r) if r.status >= 200 => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(finals.first(), Some(&487), "{finals:?}");
    // Nothing is left behind once the last timers ran.
    sim.advance(Duration::from_secs(60));
    assert!(
        sim.core.clients.is_empty() && sim.core.ctxs.is_empty(),
        "state leaked"
    );
    sim.assert_idle_after_timers(1, 1);
}

#[test]
fn timers_do_not_pile_up_with_traffic() {
    let mut sim = Sim::new();
    sim.register_udp("busy");
    for i in 0..2000 {
        let q = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKq{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:busy@localhost>;tag=q\r\nTo: <sip:busy@localhost>\r\n\
             Call-ID: q{i}\r\nCSeq: 1 REGISTER\r\n\r\n"
        );
        sim.feed(udp_phone(), &q);
    }
    assert!(
        sim.core.timers.len() < 10,
        "{} timer entries",
        sim.core.timers.len()
    );
}

#[test]
fn an_aor_holds_a_bounded_number_of_contacts() {
    let mut sim = Sim::new();
    let contacts: String = (0..40)
        .map(|i| format!("Contact: <sip:many@127.0.0.1:{}>\r\n", 6000 + i))
        .collect();
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmany;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:many@localhost>;tag=m\r\nTo: <sip:many@localhost>\r\n\
         Call-ID: many\r\nCSeq: 1 REGISTER\r\n{contacts}\r\n"
    );
    let out = sim.feed(udp_phone(), &reg);
    assert_eq!(status(&out[0].1), 403);
    assert!(sim.core.bindings("sip:many@localhost").is_empty());
}

#[test]
fn the_router_sees_new_requests_once_and_its_decisions_are_applied() {
    let mut sim = Sim::with_router();
    // REGISTER waits for the plugin; a retransmission meanwhile is absorbed.
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrr1;rport\r\n\
               Max-Forwards: 70\r\nFrom: <sip:al@localhost>;tag=ru\r\nTo: <sip:al@localhost>\r\n\
               Call-ID: rr1\r\nCSeq: 1 REGISTER\r\nContact: <sip:al@127.0.0.1:5070>\r\n\r\n";
    assert!(sim.feed(udp_phone(), reg).is_empty());
    assert!(sim.feed(udp_phone(), reg).is_empty());
    let q = sim.route_queries();
    assert_eq!(q.len(), 1, "one query for a request and its retransmission");
    assert_eq!(q[0].request.method, Method::Register);
    assert!(
        q[0].request
            .headers
            .get(&HeaderName::Via)
            .unwrap()
            .contains("rport=5070")
    );
    let out = sim.routed(q[0].id, RouteDecision::Continue(None));
    assert_eq!(status(&out[0].1), 200);
    assert_eq!(sim.core.bindings("sip:al@localhost").len(), 1);
    // A late or repeated decision for it changes nothing.
    assert!(
        sim.routed(q[0].id, RouteDecision::Continue(None))
            .is_empty()
    );
    // Answered here, it was answered statelessly as without a router: a later
    // retransmission is a new question (the registrar's answer is the same).
    assert!(sim.feed(udp_phone(), reg).is_empty());
    let again = sim.route_queries();
    assert_eq!(again.len(), 1);
    let out = sim.routed(again[0].id, RouteDecision::Continue(None));
    assert_eq!(status(&out[0].1), 200);

    // A reply with its own reason and headers; To gets our tag.
    let out = sim.feed(udp_phone(), &invite_from_udp("666", "rr2"));
    assert_eq!(status(&out[0].1), 100, "INVITE gets 100 at once");
    let q = sim.route_queries();
    let out = sim.routed(
        q[0].id,
        RouteDecision::Reply {
            status: 403,
            reason: Some("Blocked".into()),
            headers: vec![(HeaderName::parse("Warning"), "399 sipwasm \"no\"".into())],
        },
    );
    let Message::Response(r) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!((r.status, r.reason.as_str()), (403, "Blocked"));
    assert!(r.headers.get(&HeaderName::To).unwrap().contains("tag="));
    assert_eq!(
        r.headers.get(&HeaderName::parse("Warning")),
        Some("399 sipwasm \"no\"")
    );
    // The phone ACKs the 403: absorbed hop by hop, no query.
    let ack = format!(
        "ACK sip:666@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrr2;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: {}\r\n\
         Call-ID: call-rr2\r\nCSeq: 1 ACK\r\n\r\n",
        r.headers.get(&HeaderName::To).unwrap()
    );
    assert!(sim.feed(udp_phone(), &ack).is_empty());
    assert!(sim.route_queries().is_empty());

    // A relay to a literal address: the Request-URI becomes the target.
    sim.feed(udp_phone(), &invite_from_udp("9001", "rr3"));
    let q = sim.route_queries();
    let out = sim.routed(
        q[0].id,
        RouteDecision::Relay(
            crate::sip::uri::Uri::parse("sip:9001@127.0.0.1:5090").unwrap(),
            None,
        ),
    );
    let (target, m) = &out[0];
    assert_eq!(
        *target,
        Target::Udp {
            local: UDP,
            remote: "127.0.0.1:5090".parse().unwrap()
        }
    );
    assert_eq!(request(m).uri.to_string(), "sip:9001@127.0.0.1:5090");

    // A relay to one of our users is an alias: location lookup.
    sim.without_router(|sim| sim.register_ws("bob", 3));
    sim.feed(udp_phone(), &invite_from_udp("robert", "rr4"));
    let q = sim.route_queries();
    let out = sim.routed(
        q[0].id,
        RouteDecision::Relay(
            crate::sip::uri::Uri::parse("sip:bob@localhost").unwrap(),
            None,
        ),
    );
    assert_eq!(out[0].0, Target::Flow(3));
}

#[test]
fn cancel_while_the_router_decides_ends_the_invite_with_487() {
    let mut sim = Sim::with_router();
    let out = sim.feed(udp_phone(), &invite_from_udp("bob", "rc1"));
    assert_eq!(status(&out[0].1), 100);
    let q = sim.route_queries();
    let cancel = "CANCEL sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrc1;rport\r\n\
                  Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:bob@localhost>\r\n\
                  Call-ID: call-rc1\r\nCSeq: 1 CANCEL\r\n\r\n";
    let out = sim.feed(udp_phone(), cancel);
    let statuses: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
    assert_eq!(statuses, vec![200, 487]);
    assert!(
        sim.route_queries().is_empty(),
        "CANCEL is not shown to the plugin"
    );
    // The decision that comes afterwards forwards nothing.
    assert!(
        sim.routed(q[0].id, RouteDecision::Continue(None))
            .is_empty()
    );
    sim.assert_idle_after_timers(0, 0);
}

#[test]
fn a_closed_flow_is_reported_once_with_the_aors_it_lost() {
    let mut sim = Sim::new();
    sim.register_ws("bob", 4);
    sim.register_ws("bob", 4);
    while sim.core.poll_event().is_some() {}
    sim.core.handle(sim.now, Input::FlowClosed(4));
    sim.core.handle(sim.now, Input::FlowClosed(4));
    sim.core.handle(sim.now, Input::FlowClosed(99));
    let closed: Vec<ClosedFlow> = std::iter::from_fn(|| sim.core.poll_event())
        .filter_map(|e| match e {
            Event::FlowClosed(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].flow, 4);
    assert_eq!(closed[0].aors, vec!["sip:bob@localhost".to_string()]);
    assert_eq!(closed[0].transport, Transport::Ws);
}

#[test]
fn a_routing_query_is_answered_in_place_or_later() {
    let mut sim = Sim::with_router();
    sim.in_place = Some(
        |req| match req.uri.as_sip().and_then(|u| u.user.clone()).as_deref() {
            Some("666") => Some(RouteDecision::Reply {
                status: 403,
                reason: Some("Blocked".into()),
                headers: vec![],
            }),
            Some("later") => None,
            _ => Some(RouteDecision::Continue(None)),
        },
    );
    // In place: answered at once, no event, no 100 for a reply decided in place.
    let out = sim.feed(udp_phone(), &invite_from_udp("666", "h1"));
    let statuses: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
    assert_eq!(statuses, vec![403]);
    assert!(sim.core.poll_event().is_none(), "nothing else to do");
    // Continue in place: the default routing (unknown user).
    let out = sim.feed(udp_phone(), &invite_from_udp("nobody", "h2"));
    assert_eq!(status(&out[0].1), 404);
    // Later: 100 now, the decision through Input::Routed.
    let out = sim.feed(udp_phone(), &invite_from_udp("later", "h3"));
    assert_eq!(status(&out[0].1), 100);
    assert!(sim.core.poll_event().is_none());
    let later = sim.route_queries();
    assert_eq!(later.len(), 1);
    let out = sim.routed(
        later[0].id,
        RouteDecision::Reply {
            status: 486,
            reason: None,
            headers: vec![],
        },
    );
    assert_eq!(status(&out[0].1), 486);
    assert_eq!(sim.queries, 3);
}

/// A driver that takes no notice of a routing query: the request waits for its
/// decision all the same (in a transaction, from the next input on), and a
/// retransmission meanwhile is absorbed rather than asked about again.
#[test]
fn a_routing_query_left_unanswered_waits_for_its_decision() {
    let mut sim = Sim::new();
    sim.core.set_routing(true);
    let text = invite_from_udp("carol", "u1");
    let message = || {
        Input::Message(Box::new(Incoming::new(
            udp_phone(),
            parse(text.as_bytes()).unwrap(),
        )))
    };
    sim.core.handle(sim.now, message());
    let id = sim.core.route_query().expect("asked").id;
    assert!(sim.drain().is_empty(), "nothing sent before the decision");
    // The retransmission: the first request now waits in its transaction (100), and
    // the retransmission gets that 100 again instead of a query of its own.
    sim.core.handle(sim.now, message());
    assert!(sim.core.route_query().is_none());
    let statuses: Vec<u16> = sim.drain().iter().map(|(_, m)| status(m)).collect();
    assert_eq!(statuses, vec![100, 100]);
    assert_eq!(sim.core.stats().routing, 1);
    let out = sim.routed(
        id,
        RouteDecision::Reply {
            status: 480,
            reason: None,
            headers: vec![],
        },
    );
    assert_eq!(status(&out[0].1), 480);
    assert_eq!(sim.core.stats().routing, 0);
}

#[test]
fn direct_response_bytes_equal_the_serialized_response() {
    let sim = Sim::new();
    let requests = [
        // No To tag, two Via lines (one with two values), compact names.
        "REGISTER sip:localhost SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport=5070;received=127.0.0.1\r\n\
         Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx\r\n\
         f: \"A\" <sip:a@localhost>;tag=1\r\nt: <sip:a@localhost>\r\ni: c1\r\nCSeq: 7 REGISTER\r\nl: 0\r\n\r\n",
        // With a To tag.
        "BYE sip:a@localhost SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK2\r\n\
         From: <sip:b@localhost>;tag=2\r\nTo: <sip:a@localhost>;tag=3\r\nCall-ID: c2\r\nCSeq: 2 BYE\r\n\r\n",
    ];
    for text in requests {
        let Message::Request(req) = parse(text.as_bytes()).unwrap() else {
            panic!("a request");
        };
        for (status, extra) in [
            (100, vec![]),
            (
                200,
                vec![(HeaderName::Contact, "<sip:a@h>;expires=60".to_string())],
            ),
            (
                423,
                vec![
                    (HeaderName::MinExpires, "60".to_string()),
                    (HeaderName::ContentLength, "9".to_string()),
                ],
            ),
            (699, vec![]),
        ] {
            let direct = sim.core.response_bytes(&req, status, None, &extra);
            let built = sim.core.make_response(&req, status, &extra).to_bytes();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&built)
            );
        }
    }
}

#[test]
fn received_and_rport_stamped_in_place() {
    let stamp = |via_line: &str, from: &str| {
        let text = format!(
            "OPTIONS sip:localhost SIP/2.0\r\nVia: {via_line}\r\nFrom: <sip:a@localhost>;tag=1\r\n\
             To: <sip:localhost>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let Message::Request(mut req) = parse(text.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        assert!(stamp_received(&mut req, from.parse().unwrap()));
        req.headers.get(&HeaderName::Via).unwrap().to_string()
    };
    // rport filled in where it stands, received appended; transport upper-cased.
    assert_eq!(
        stamp(
            "SIP/2.0/ws abc.invalid;branch=z9hG4bK1;rport;x=\"a;b\"",
            "127.0.0.1:40001"
        ),
        "SIP/2.0/WS abc.invalid;branch=z9hG4bK1;rport=40001;x=\"a;b\";received=127.0.0.1"
    );
    // An existing received (any case) gets the new value in place.
    assert_eq!(
        stamp(
            "SIP/2.0/UDP [::1]:5070;RECEIVED=10.0.0.1;branch=z9hG4bK2",
            "127.0.0.2:5070"
        ),
        "SIP/2.0/UDP [::1]:5070;RECEIVED=127.0.0.2;branch=z9hG4bK2"
    );
    // Sent-by already the source and no rport: left exactly as written.
    assert_eq!(
        stamp(
            "SIP/2.0/UDP 127.0.0.1:5070 ; branch=z9hG4bK3",
            "127.0.0.1:5070"
        ),
        "SIP/2.0/UDP 127.0.0.1:5070 ; branch=z9hG4bK3"
    );
    // Only the first value of a multi-value line changes; the rest stays as written.
    assert_eq!(
        stamp(
            "SIP/2.0/TCP h.example;branch=z9hG4bK4 ,SIP/2.0/UDP other;branch=z9hG4bK5",
            "[::1]:6000"
        ),
        "SIP/2.0/TCP h.example;branch=z9hG4bK4;received=::1,SIP/2.0/UDP other;branch=z9hG4bK5"
    );
}

#[test]
fn a_to_tag_without_our_route_does_not_get_past_the_router() {
    let mut sim = Sim::with_router();
    sim.without_router(|sim| sim.register_ws("bob", 7));
    // A REGISTER with a To tag is still a REGISTER: the plugin is asked (it is where
    // authentication happens), and nothing is bound before it answers.
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtt1;rport\r\n\
               Max-Forwards: 70\r\nFrom: <sip:bob@localhost>;tag=x1\r\nTo: <sip:bob@localhost>;tag=forged\r\n\
               Call-ID: tt1\r\nCSeq: 1 REGISTER\r\nContact: <sip:evil@127.0.0.1:5070>\r\n\r\n";
    assert!(sim.feed(udp_phone(), reg).is_empty());
    let q = sim.route_queries();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].request.method, Method::Register);
    assert_eq!(sim.core.bindings("sip:bob@localhost").len(), 1);
    // An INVITE with a To tag and no Route, or with a Route naming us without the
    // dialog's MAC: new requests as far as the plugin is concerned.
    let tagged = invite_from_udp("bob", "tt2").replace(
        "To: <sip:bob@localhost>",
        "To: <sip:bob@localhost>;tag=forged",
    );
    assert_eq!(status(&sim.feed(udp_phone(), &tagged)[0].1), 100);
    assert_eq!(sim.route_queries().len(), 1);
    let forged = invite_from_udp("bob", "tt3")
        .replace(
            "To: <sip:bob@localhost>",
            "To: <sip:bob@localhost>;tag=forged",
        )
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;lr;sw=0123456789ab>\r\n",
        );
    assert_eq!(status(&sim.feed(udp_phone(), &forged)[0].1), 100);
    assert_eq!(sim.route_queries().len(), 1);
    // A real dialog: the INVITE is asked about once; the BYE in it, on our Record-Route,
    // is not.
    sim.feed(udp_phone(), &invite_from_udp("bob", "tt4"));
    let q = sim.route_queries();
    assert_eq!(q.len(), 1);
    let out = sim.routed(q[0].id, RouteDecision::Continue(None));
    let (_, fwd) = forwarded(&out);
    let rr = record_route(fwd);
    assert!(!rr.is_empty());
    // The phone's route set is the Record-Route reversed; ours face the phone last.
    let route: Vec<String> = rr.iter().rev().cloned().collect();
    let bye = format!(
        "BYE sip:bob@b7.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtt5;rport\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:bob@localhost>;tag=b1\r\n\
         Call-ID: call-tt4\r\nCSeq: 2 BYE\r\n\r\n",
        route.join(", ")
    );
    let out = sim.feed(udp_phone(), &bye);
    assert!(
        sim.route_queries().is_empty(),
        "an in-dialog BYE is not asked about"
    );
    let (target, fwd) = forwarded(&out);
    assert_eq!(target, Target::Flow(7));
    assert_eq!(fwd.method, Method::Bye);
}

#[test]
fn a_register_for_another_domains_aor_is_not_found() {
    let mut sim = Sim::new();
    for (i, to) in ["<sip:al@example.org>", "<tel:+15550100>"]
        .iter()
        .enumerate()
    {
        let reg = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfd{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: {to};tag=fd\r\nTo: {to}\r\n\
             Call-ID: fd{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:al@127.0.0.1:5070>\r\n\r\n"
        );
        let out = sim.feed(udp_phone(), &reg);
        assert_eq!(status(&out[0].1), 404, "{to}");
    }
    assert!(sim.core.bindings("sip:al@example.org").is_empty());
}

#[test]
fn an_escaped_user_is_the_same_address_of_record() {
    let mut sim = Sim::new();
    // A phone registers as %2B15550100 (an escaped +); a call to +15550100 reaches it.
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKesc1;rport\r\n\
               Max-Forwards: 70\r\nFrom: <sip:%2B15550100@localhost>;tag=e1\r\nTo: <sip:%2B15550100@localhost>\r\n\
               Call-ID: esc1\r\nCSeq: 1 REGISTER\r\nContact: <sip:p@127.0.0.1:5070>\r\n\r\n";
    assert_eq!(status(&sim.feed(udp_phone(), reg)[0].1), 200);
    assert_eq!(sim.core.bindings("sip:+15550100@localhost").len(), 1);
    sim.register_ws("caller", 3);
    let out = sim.feed(
        browser(3),
        "MESSAGE sip:+15550100@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKesc2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@localhost>;tag=c3\r\nTo: <sip:+15550100@localhost>\r\n\
         Call-ID: esc2\r\nCSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi",
    );
    let (target, fwd) = forwarded(&out);
    assert_eq!(target, udp_phone_target());
    assert_eq!(fwd.uri.to_string(), "sip:p@127.0.0.1:5070");
}

#[test]
fn a_register_decided_after_its_flow_closed_binds_nothing() {
    let mut sim = Sim::with_router();
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS b9.invalid;branch=z9hG4bKlate\r\n\
               Max-Forwards: 70\r\nFrom: <sip:late@localhost>;tag=l9\r\nTo: <sip:late@localhost>\r\n\
               Call-ID: late-9\r\nCSeq: 1 REGISTER\r\n\
               Contact: <sip:late@b9.invalid;transport=ws>;expires=600\r\n\r\n";
    assert!(sim.feed(browser(9), reg).is_empty());
    let q = sim.route_queries();
    assert_eq!(q.len(), 1);
    // The WebSocket closes while the routing plugin decides.
    sim.core.handle(sim.now, Input::FlowClosed(9));
    sim.drain();
    sim.routed(q[0].id, RouteDecision::Continue(None));
    assert!(sim.core.bindings("sip:late@localhost").is_empty());
    assert_eq!(sim.core.stats().bindings, 0);
    while let Some(e) = sim.core.poll_event() {
        assert!(!matches!(e, Event::BindingSaved(_)), "{e:?}");
    }
}

/// Issue 18, item 5: no amplification over UDP toward an address that never showed it
/// receives our packets, and one branch per address when forking.
#[test]
fn udp_answers_are_bounded_for_unproven_sources_and_forks_go_once_per_address() {
    let mut sim = Sim::new();
    // One socket registers 32 Contacts of one AoR (all reached at its address).
    let contacts: Vec<String> = (0..32)
        .map(|i| format!("<sip:amp{i}-with-a-longer-user-part@127.0.0.1:5070;transport=udp>"))
        .collect();
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKamp1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:amp@localhost>;tag=a\r\nTo: <sip:amp@localhost>\r\n\
         Call-ID: amp-reg\r\nCSeq: 1 REGISTER\r\nContact: {}\r\n\r\n",
        contacts.join(", ")
    );
    let out = sim.feed(udp_phone(), &reg);
    assert_eq!(status(&out[0].1), 200);
    assert_eq!(sim.core.bindings("sip:amp@localhost").len(), 32);
    // A query from an address that never heard from us: at most twice its size.
    let stranger = Source {
        remote: "127.0.0.9:5099".parse().unwrap(),
        ..udp_phone()
    };
    let query = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bKq1;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:amp@localhost>;tag=q\r\nTo: <sip:amp@localhost>\r\n\
                 Call-ID: q1\r\nCSeq: 1 REGISTER\r\n\r\n";
    sim.core.handle(
        sim.now,
        Input::Message(Box::new(Incoming::new(
            stranger,
            parse(query.as_bytes()).unwrap(),
        ))),
    );
    let answer = sim.core.poll_transmit().expect("answered");
    let request_size = parse(query.as_bytes()).unwrap().to_bytes().len();
    assert!(
        answer.payload.len() <= 2 * request_size,
        "{} bytes for a {request_size}-byte request:\n{}",
        answer.payload.len(),
        String::from_utf8_lossy(&answer.payload)
    );
    let resp = parse(&answer.payload).unwrap();
    assert_eq!(status(&resp), 200);
    assert!(resp.headers().values(&HeaderName::Contact).count() < 32);
    // The registering phone refreshes by its Call-ID: it receives us, the full list.
    let out = sim.feed(
        udp_phone(),
        &reg.replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER")
            .replace("z9hG4bKamp1", "z9hG4bKamp2"),
    );
    assert_eq!(out[0].1.headers().values(&HeaderName::Contact).count(), 32);
    // A MESSAGE for the AoR reaches that address once, not 32 times.
    let out = sim.feed(
        browser(3),
        "MESSAGE sip:amp@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKampm\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@localhost>;tag=x\r\nTo: <sip:amp@localhost>\r\n\
         Call-ID: amp-m\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    );
    let sent: Vec<_> = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::Request(_)))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, udp_phone_target());
}

/// Issue 18: the worst message of each shape (64 KB of Contacts, parameters, Vias,
/// Routes, challenges) gets its answer; `sipwasm-bench worst` times them.
#[test]
fn the_worst_inputs_get_their_answers() {
    for case in worst::cases() {
        let mut sim = Sim::new();
        let input =
            worst::prepare(&mut sim.core, &case, UDP, sim.now).unwrap_or_else(|e| panic!("{e}"));
        if let Input::Message(m) = &input {
            let size = m.message.to_bytes().len();
            assert!(size <= 65_535, "{}: {size} bytes", case.name);
        }
        sim.core.handle(sim.now, input);
        let (status, sent) = worst::outcome(&mut sim.core, UDP);
        match case.expect {
            Some(want) => assert_eq!(status, Some(want), "{}", case.name),
            None => assert!(sent > 0, "{}: nothing sent", case.name),
        }
    }
}

/// ICMP unreachable for a UDP address: client transactions toward it fail at once (the
/// caller gets 480), and final answers retransmitted toward it stop.
#[test]
fn an_unreachable_udp_address_ends_the_transactions_toward_it() {
    let mut sim = Sim::new();
    sim.register_udp("pat");
    // A browser's INVITE to the phone, which is gone.
    let out = sim.feed(
        browser(6),
        "INVITE sip:pat@localhost SIP/2.0\r\nVia: SIP/2.0/WS b6.invalid;branch=z9hG4bKun1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:web@localhost>;tag=w6\r\nTo: <sip:pat@localhost>\r\n\
         Call-ID: un1\r\nCSeq: 1 INVITE\r\nContact: <sip:web@b6.invalid;transport=ws>\r\n\r\n",
    );
    assert_eq!(forwarded(&out).0, udp_phone_target());
    sim.core
        .handle(sim.now, Input::SendFailed(udp_phone_target()));
    let out = sim.drain();
    assert!(
        out.iter()
            .any(|(t, m)| *t == Target::Flow(6)
                && matches!(m, Message::Response(r) if r.status == 480)),
        "{out:?}"
    );
    // The phone's own INVITE to an unknown user, answered 404 with a transaction (it
    // retransmits until the ACK): the ICMP error ends it.
    sim.register_ws("ws", 7);
    let out = sim.feed(udp_phone(), &invite_from_udp("ws", "un2"));
    let inv = forwarded(&out).1.clone();
    let out = sim.feed(browser(7), &answer(&inv, 486, ""));
    assert!(out.iter().any(|(t, _)| *t == udp_phone_target()));
    sim.core
        .handle(sim.now, Input::SendFailed(udp_phone_target()));
    sim.drain();
    let later = sim.advance(Duration::from_secs(40));
    assert!(
        !later.iter().any(|(t, _)| *t == udp_phone_target()),
        "retransmitted after the ICMP error: {later:?}"
    );
}

/// No amplification through a callee: a response relayed to a UDP caller that has not
/// proven it receives our packets is at most twice its request; a caller with a
/// registration at its address gets it whole.
#[test]
fn relayed_answers_to_unproven_udp_callers_are_bounded() {
    let mut sim = Sim::new();
    sim.register_ws("big", 8);
    let stranger = Source {
        remote: "127.0.0.9:5099".parse().unwrap(),
        ..udp_phone()
    };
    let sdp = format!("v=0\r\n{}", "a=x-padding:0123456789abcdef\r\n".repeat(100));
    for (source, proven) in [(stranger, false), (udp_phone(), true)] {
        if proven {
            sim.register_udp("caller");
        }
        let branch = if proven { "ra2" } else { "ra1" };
        let invite = invite_from_udp("big", branch).replace(
            "Via: SIP/2.0/UDP 127.0.0.1:5070",
            &format!("Via: SIP/2.0/UDP {}", source.remote),
        );
        let request_size = invite.len();
        let out = {
            let message = parse(invite.as_bytes()).unwrap();
            sim.core.handle(
                sim.now,
                Input::Message(Box::new(Incoming::new(source, message))),
            );
            sim.drain()
        };
        let inv = forwarded(&out).1.clone();
        let ok = format!(
            "{}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            answer(&inv, 200, "Contact: <sip:big8@b8.invalid;transport=ws>\r\n")
                .trim_end_matches("\r\n"),
            sdp.len()
        );
        sim.core.handle(
            sim.now,
            Input::Message(Box::new(Incoming::new(
                browser(8),
                parse(ok.as_bytes()).unwrap(),
            ))),
        );
        let sent: Vec<Transmit> = std::iter::from_fn(|| sim.core.poll_transmit()).collect();
        let to_caller = sent
            .iter()
            .find(|t| matches!(t.target, Target::Udp { remote, .. } if remote == source.remote))
            .expect("the 200 relayed");
        let resp = parse(&to_caller.payload).unwrap();
        assert_eq!(status(&resp), 200);
        if proven {
            assert!(to_caller.payload.len() > 2 * request_size, "whole");
        } else {
            assert!(
                to_caller.payload.len() <= 2 * request_size,
                "{} bytes for a {request_size}-byte INVITE",
                to_caller.payload.len()
            );
        }
    }
    assert_eq!(sim.core.stats().refused.trimmed_answer, 1);
}

/// Bindings behind one trusted edge share its address: each still gets its branch
/// (the one-branch-per-address rule is for direct UDP registrations).
#[test]
fn bindings_behind_one_edge_each_get_a_branch() {
    let mut sim = Sim::new();
    for (n, contact) in ["desk", "soft"].iter().enumerate() {
        let reg = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKe{n};rport\r\n\
             Via: SIP/2.0/UDP 10.0.0.{n}:5060;branch=z9hG4bKua{n}\r\n\
             Max-Forwards: 69\r\nFrom: <sip:two@localhost>;tag=e{n}\r\nTo: <sip:two@localhost>\r\n\
             Call-ID: edge-{n}\r\nCSeq: 1 REGISTER\r\nPath: <sip:127.0.0.2:5070;lr>\r\n\
             Supported: path\r\nContact: <sip:{contact}@10.0.0.{n}:5060>\r\n\r\n"
        );
        assert_eq!(status(&sim.feed(edge(), &reg)[0].1), 200);
    }
    let out = sim.feed(
        browser(3),
        "MESSAGE sip:two@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKtwo\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@localhost>;tag=x\r\nTo: <sip:two@localhost>\r\n\
         Call-ID: two-m\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    );
    let sent = out
        .iter()
        .filter(|(_, m)| matches!(m, Message::Request(_)))
        .count();
    assert_eq!(sent, 2, "{out:?}");
}

/// Nothing is retransmitted toward a UDP address that has not proven it receives our
/// packets: neither a final answer (timer G) nor an in-dialog request toward it (timer
/// E), so what reaches a spoofed source's victim is never multiplied.
#[test]
fn nothing_is_retransmitted_toward_an_unproven_udp_address() {
    let mut sim = Sim::new();
    sim.register_ws("rt", 9);
    let stranger = Source {
        remote: "127.0.0.9:5099".parse().unwrap(),
        ..udp_phone()
    };
    let to_stranger = |out: &[(Target, Message)]| {
        out.iter()
            .filter(|(t, _)| matches!(t, Target::Udp { remote, .. } if *remote == stranger.remote))
            .count()
    };
    let feed_from = |sim: &mut Sim, text: &str| {
        let message = parse(text.as_bytes()).unwrap();
        sim.core.handle(
            sim.now,
            Input::Message(Box::new(Incoming::new(stranger, message))),
        );
        sim.drain()
    };
    // A call refused: the 486 goes once.
    let invite = invite_from_udp("rt", "q1").replace("127.0.0.1:5070", "127.0.0.9:5099");
    let out = feed_from(&mut sim, &invite);
    let inv = forwarded(&out).1.clone();
    let out = sim.feed(browser(9), &answer(&inv, 486, ""));
    assert_eq!(to_stranger(&out), 1);
    assert_eq!(to_stranger(&sim.advance(Duration::from_secs(40))), 0);
    // A call answered; the browser's BYE goes to the caller once.
    let invite = invite_from_udp("rt", "q2").replace("127.0.0.1:5070", "127.0.0.9:5099");
    let out = feed_from(&mut sim, &invite);
    let inv = forwarded(&out).1.clone();
    let rr = record_route(&inv);
    sim.feed(
        browser(9),
        &answer(&inv, 200, "Contact: <sip:rt9@b9.invalid;transport=ws>\r\n"),
    );
    let bye = format!(
        "BYE sip:phone@127.0.0.9:5099 SIP/2.0\r\nVia: SIP/2.0/WS b9.invalid;branch=z9hG4bKqbye\r\nMax-Forwards: 70\r\n\
         Route: {}, {}\r\nFrom: <sip:rt@localhost>;tag=callee\r\nTo: <sip:phone@localhost>;tag=p1\r\n\
         Call-ID: call-q2\r\nCSeq: 2 BYE\r\n\r\n",
        rr[0], rr[1]
    );
    let out = sim.feed(browser(9), &bye);
    assert_eq!(to_stranger(&out), 1, "{out:?}");
    assert_eq!(to_stranger(&sim.advance(Duration::from_secs(40))), 0);
}

#[test]
fn past_max_transactions_new_requests_get_503_and_retransmissions_are_still_absorbed() {
    let mut sim = Sim::with_limits(CoreLimits {
        max_transactions: 2,
    });
    sim.register_udp("bob");
    // Two INVITEs to a phone that never answers hold two transactions.
    for b in ["t1", "t2"] {
        let out = sim.feed(
            browser(1),
            &invite_from_udp("bob", b)
                .replace("SIP/2.0/UDP 127.0.0.1:5070", "SIP/2.0/WS x.invalid"),
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 100))
        );
    }
    let third =
        invite_from_udp("bob", "t3").replace("SIP/2.0/UDP 127.0.0.1:5070", "SIP/2.0/WS x.invalid");
    let out = sim.feed(browser(1), &third);
    assert_eq!(out.len(), 1, "answered here, not forwarded: {out:?}");
    assert_eq!(status(&out[0].1), 503);
    assert!(
        response(&out[0].1)
            .headers
            .get(&HeaderName::RetryAfter)
            .is_some()
    );
    assert_eq!(sim.core.stats().refused.transactions_full, 1);
    // A retransmission of one in flight is absorbed as ever (no second 503, no fork).
    let again =
        invite_from_udp("bob", "t1").replace("SIP/2.0/UDP 127.0.0.1:5070", "SIP/2.0/WS x.invalid");
    let out = sim.feed(browser(1), &again);
    assert!(
        out.iter()
            .all(|(_, m)| !matches!(m, Message::Response(r) if r.status == 503))
    );
    // Once they time out, there is room again.
    sim.advance(Duration::from_secs(200));
    let out = sim.feed(
        browser(1),
        &third.replace("call-t3", "call-t4").replace("bKt3", "bKt4"),
    );
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 100))
    );
}

#[test]
fn tables_a_flood_of_registrations_grew_give_their_room_back_once_it_expired() {
    let mut sim = Sim::new();
    for i in 0..(KNOWN_MAX / 8) {
        sim.register_udp(&format!("flood{i}"));
    }
    assert!(sim.core.location.aor_capacity() >= KNOWN_MAX / 8);
    // Every binding expires (default 3600 s); the housekeeping that follows shrinks.
    sim.advance(Duration::from_secs(3601));
    assert_eq!(sim.core.stats().bindings, 0);
    assert!(
        sim.core.location.aor_capacity() < sharded::SHRINK_FROM,
        "{}",
        sim.core.location.aor_capacity()
    );

    assert_eq!(
        sim.core.known_aors.len(),
        0,
        "left to expire unrefreshed: not remembered"
    );
    // The memory of gone AoRs is bounded too.
    for i in 0..(KNOWN_MAX / 8) {
        sim.core
            .mark_known(&format!("sip:more{i}@localhost"), sim.now);
    }
    for i in 0..KNOWN_MAX {
        sim.core
            .mark_known(&format!("sip:extra{i}@localhost"), sim.now);
    }
    assert_eq!(sim.core.known_aors.len(), KNOWN_MAX);
}

/// A REGISTER flood of AoRs that register once and expire took all of the known AoRs'
/// places (65,536) for a day: an AoR that registered after it got 404 instead of 480
/// once it went offline. Registrations left to expire unrefreshed are not remembered
/// now; a refreshed one is, and so is one its client removed.
#[test]
fn registrations_left_to_expire_unrefreshed_are_not_remembered() {
    let mut sim = Sim::new();
    for i in 0..KNOWN_MAX {
        sim.register_udp(&format!("oneshot{i}"));
    }
    let register = |user: &str, cseq: u32, expires: u32| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKkn{user}{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=kn\r\nTo: <sip:{user}@localhost>\r\n\
             Call-ID: kn-{user}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:5070>;expires={expires}\r\n\r\n"
        )
    };
    // Carol registers after the flood and refreshes; Dan registers and unregisters.
    for (user, cseq, expires) in [
        ("carol", 1, 3600),
        ("carol", 2, 3600),
        ("dan", 1, 3600),
        ("dan", 2, 0),
    ] {
        let out = sim.feed(udp_phone(), &register(user, cseq, expires));
        assert_eq!(status(&out[0].1), 200, "{out:?}");
    }
    // Every binding expires (3600 s).
    for _ in 0..4 {
        sim.advance(Duration::from_secs(1000));
    }
    assert_eq!(sim.core.stats().bindings, 0);
    assert_eq!(sim.core.known_aors.len(), 2, "carol and dan only");
    let out = sim.feed(udp_phone(), &invite_from_udp("carol", "kn1"));
    assert_eq!(status(&out.last().unwrap().1), 480);
    let out = sim.feed(udp_phone(), &invite_from_udp("dan", "kn2"));
    assert_eq!(status(&out.last().unwrap().1), 480);
    let out = sim.feed(udp_phone(), &invite_from_udp("oneshot7", "kn3"));
    assert_eq!(status(&out.last().unwrap().1), 404);
}

#[test]
fn behind_the_core_refuses_new_addresses_of_record_and_serves_registered_ones() {
    let mut sim = Sim::new();
    sim.register_udp("bob");
    sim.core.set_backlog(BUSY_BACKLOG + 1);
    let register = |user: &str, cseq: u32| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKov{user}{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=ru\r\nTo: <sip:{user}@localhost>\r\n\
             Call-ID: reg-{user}-udp\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:5070>\r\n\r\n"
        )
    };
    // A new address-of-record waits: 503 with Retry-After, nothing bound, counted.
    let out = sim.feed(udp_phone(), &register("newcomer", 1));
    assert_eq!(status(&out[0].1), 503);
    assert_eq!(
        response(&out[0].1).headers.get(&HeaderName::RetryAfter),
        Some("10")
    );
    assert!(sim.core.bindings("sip:newcomer@localhost").is_empty());
    assert_eq!(sim.core.bindings("sip:bob@localhost").len(), 1);
    assert_eq!(sim.core.stats().refused.overload, 1);
    // The registered phone refreshes as before.
    let out = sim.feed(udp_phone(), &register("bob", 2));
    assert_eq!(status(&out[0].1), 200);
    // Caught up: the newcomer registers.
    sim.core.set_backlog(0);
    let out = sim.feed(udp_phone(), &register("newcomer", 3));
    assert_eq!(status(&out[0].1), 200);
}

/// The INVITE flood of the attack campaign: INVITEs from many UDP sources to a phone
/// that never answers, some sources gone (ICMP unreachable) by the time their 408
/// comes. Once the timers ran, nothing is left.
#[test]
fn an_invite_flood_to_a_silent_phone_leaves_nothing_once_the_timers_ran() {
    let mut sim = Sim::new();
    sim.register_udp("pat");
    sim.invite_flood("pat", 300, 20, Duration::from_millis(7));
    // Timer B: the 408s go out; a third of the callers' ports are closed by then.
    let out = sim.advance(Duration::from_secs(33));
    let mut gone = 0;
    for (t, m) in &out {
        if let (Target::Udp { remote, .. }, Message::Response(r)) = (t, m)
            && r.status == 408
            && remote.port() % 3 == 0
        {
            sim.core.handle(sim.now, Input::SendFailed(*t));
            gone += 1;
        }
    }
    assert!(gone > 50, "{gone}");
    sim.drain();
    sim.assert_idle_after_timers(1, 1);
}

/// The timer heap and its index grow with the transactions in flight and never
/// shrank: after an INVITE flood they held several MB (8.5 MB in the attack bench,
/// with 100,000 transactions) for good. Housekeeping gives the room back.
#[test]
fn the_timers_a_flood_armed_give_their_room_back_once_they_ran() {
    let mut sim = Sim::new();
    sim.register_udp("pat");
    sim.invite_flood("pat", 5_000, 21, Duration::from_millis(1));
    let grown = sim.core.timers.capacity();
    assert!(grown >= sharded::SHRINK_FROM, "{grown}");
    // Their retransmissions and timeouts (in steps: `advance` runs a bounded number).
    for _ in 0..50 {
        sim.advance(Duration::from_secs(5));
    }
    sim.assert_idle_after_timers(1, 1);
    assert!(
        sim.core.timers.capacity() < sharded::SHRINK_FROM,
        "the timers' room after the flood: {} (grown to {grown})",
        sim.core.timers.capacity()
    );
}

/// The registrar's own reason phrases reach the client ("Out of order CSeq"), on the stateless answer and on the one given after the routing plugin
/// said continue; before, only the status came through, with its usual phrase.
#[test]
fn the_registrars_reason_phrases_reach_the_client() {
    let register = |branch: &str, cseq: &str| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:rp@localhost>;tag=rp\r\nTo: <sip:rp@localhost>\r\n\
             Call-ID: reg-rp\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:rp@127.0.0.1:5070>\r\n\r\n"
        )
    };
    let mut sim = Sim::new();
    let out = sim.feed(udp_phone(), &register("rp1", "5"));
    assert_eq!(status(&out[0].1), 200);
    let out = sim.feed(udp_phone(), &register("rp2", "4"));
    let r = response(&out[0].1);
    assert_eq!((r.status, r.reason.as_str()), (500, "Out of order CSeq"));
    // Through a routing plugin that lets it through.
    let mut sim = Sim::with_router();
    sim.feed(udp_phone(), &register("rp3", "5"));
    let q = sim.route_queries();
    let out = sim.routed(q[0].id, RouteDecision::Continue(None));
    assert_eq!(status(&out[0].1), 200, "{out:?}");
    sim.feed(udp_phone(), &register("rp4", "4"));
    let q = sim.route_queries();
    let out = sim.routed(q[0].id, RouteDecision::Continue(None));
    let r = response(&out[0].1);
    assert_eq!((r.status, r.reason.as_str()), (500, "Out of order CSeq"));
}

// ------------------------------------------------------------------ media relay

mod media_relay {
    use super::*;
    use crate::media::ng::{Command, Leg};
    use crate::media::{MediaOutcome, Mode};

    const BROWSER_SDP: &str =
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    const PHONE_SDP: &str =
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn with_sdp(sdp: &str) -> String {
        format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    /// An INVITE from browser flow 9 (alice, tag `a`) to `user`, with `sdp` if any.
    fn browser_invite(user: &str, call: &str, sdp: Option<&str>) -> String {
        let body = sdp.map(with_sdp).unwrap_or_else(|| "\r\n".into());
        format!(
            "INVITE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@localhost>;tag=a\r\nTo: <sip:{user}@localhost>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@a9.invalid;transport=ws;ob>\r\n{body}"
        )
    }

    /// A response to `req` carrying `sdp`.
    fn answer_with_sdp(req: &Request, status: u16, contact: &str, sdp: &str) -> String {
        let mut a = answer(req, status, &format!("Contact: <{contact}>\r\n"));
        // `answer` ends with the blank line: the body goes after it.
        a.truncate(a.len() - 2);
        a + &with_sdp(sdp)
    }

    fn body(m: &Message) -> &[u8] {
        match m {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    fn top_branch(req: &Request) -> String {
        Via::parse(req.headers.values(&HeaderName::Via).next().unwrap())
            .unwrap()
            .branch()
            .unwrap()
            .to_string()
    }

    /// An offer's or answer's offerer tag, answerer tag and ICE flag.
    fn tags_and_ice(cmd: &Command) -> (&str, Option<&str>, Option<&str>) {
        match cmd {
            Command::Offer { leg, flags, .. } | Command::Answer { leg, flags, .. } => (
                leg.from_tag.as_str(),
                leg.to_tag.as_deref(),
                flags.ice.as_deref(),
            ),
            c => panic!("not an offer or answer: {c:?}"),
        }
    }

    /// A core relaying in bridge mode with carol registered over UDP, and browser flow 9
    /// calling her with an offer (Call-ID `call`); the media requests it made.
    fn browser_calls_carol(call: &str) -> (Sim, Vec<crate::media::MediaRequest>) {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.register_udp("carol");
        sim.feed(
            browser(9),
            &browser_invite("carol", call, Some(BROWSER_SDP)),
        );
        let asked = sim.media();
        (sim, asked)
    }

    #[test]
    fn a_browser_calls_a_phone_through_the_engine_offer_answer_and_bye() {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.register_udp("carol");
        let out = sim.feed(
            browser(9),
            &browser_invite("carol", "m1", Some(BROWSER_SDP)),
        );
        // Only the 100: the INVITE waits for the engine.
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(status(&out[0].1), 100);
        let asked = sim.media();
        assert_eq!(asked.len(), 1, "{asked:?}");
        let Command::Offer { leg, sdp, flags } = &asked[0].command else {
            panic!("{asked:?}")
        };
        assert_eq!((leg.call_id.as_str(), leg.from_tag.as_str()), ("m1", "a"));
        assert_eq!(leg.to_tag, None);
        assert!(
            leg.via_branch
                .as_deref()
                .is_some_and(|b| b.starts_with("z9hG4bKsw"))
        );
        assert_eq!(sdp.as_slice(), BROWSER_SDP.as_bytes());
        assert_eq!(
            flags.transport_protocol.as_deref(),
            Some("RTP/AVP"),
            "toward the phone"
        );
        assert_eq!(flags.ice.as_deref(), Some("remove"));
        let engine = asked[0].engine;
        assert!(sim.core.stats().media_waiting == 1);

        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(PHONE_SDP.as_bytes().to_vec()),
        );
        let (target, inv) = forwarded(&out);
        assert_eq!(target, udp_phone_target());
        assert_eq!(
            inv.body.as_ref(),
            PHONE_SDP.as_bytes(),
            "the engine's SDP goes to the phone"
        );
        assert_eq!(top_branch(inv), *leg.via_branch.as_ref().unwrap());
        let rr = record_route(inv);
        assert!(
            rr.iter().all(|r| r.contains(&format!(";mr={engine};"))),
            "{rr:?}"
        );
        let inv = inv.clone();

        // Ringing without SDP passes at once; the 200's SDP goes to the engine.
        let out = sim.feed(udp_phone(), &answer(&inv, 180, ""));
        assert_eq!(status(&out[0].1), 180);
        let ok = answer_with_sdp(&inv, 200, "sip:carol@127.0.0.1:5070", "v=0 phone\r\n");
        let out = sim.feed(udp_phone(), &ok);
        assert!(out.is_empty(), "the 200 waits for the engine: {out:?}");
        let asked = sim.media();
        let Command::Answer { leg, flags, .. } = &asked[0].command else {
            panic!("{asked:?}")
        };
        assert_eq!(
            (leg.from_tag.as_str(), leg.to_tag.as_deref()),
            ("a", Some("callee")),
            "the offerer's tag first"
        );
        assert_eq!(
            flags.transport_protocol.as_deref(),
            Some("UDP/TLS/RTP/SAVPF"),
            "toward the browser"
        );
        assert_eq!(asked[0].engine, engine, "the call stays on its engine");
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(b"v=0 for the browser\r\n".to_vec()),
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, status(&out[0].1)), (Target::Flow(9), 200));
        assert_eq!(body(&out[0].1), b"v=0 for the browser\r\n");
        // A retransmitted 200 gets the same SDP without asking again.
        let out = sim.feed(udp_phone(), &ok);
        assert_eq!(body(&out[0].1), b"v=0 for the browser\r\n");
        assert!(sim.media().is_empty());

        // The phone hangs up: the call's media goes.
        let bye = format!(
            "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmb1;rport\r\n\
             Max-Forwards: 70\r\nRoute: {}\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
             To: <sip:alice@localhost>;tag=a\r\nCall-ID: m1\r\nCSeq: 1 BYE\r\n\r\n",
            rr[0], rr[1]
        );
        let out = sim.feed(udp_phone(), &bye);
        assert_eq!(out[0].0, Target::Flow(9), "the BYE goes on at once");
        let asked = sim.media();
        assert_eq!(asked.len(), 1);
        assert_eq!(
            asked[0].command,
            Command::DeleteCall {
                call_id: "m1".into()
            }
        );
        assert_eq!(
            (asked[0].id, asked[0].engine),
            (0, engine),
            "nothing waits for a delete"
        );
        sim.assert_idle_after_timers(1, 1);
    }

    #[test]
    fn phone_to_phone_and_browser_to_browser_stay_direct_in_bridge_mode() {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.register_ws("bob", 3);
        let out = sim.feed(browser(9), &browser_invite("bob", "m2", Some(BROWSER_SDP)));
        let (_, inv) = forwarded(&out);
        assert_eq!(inv.body.as_ref(), BROWSER_SDP.as_bytes());
        assert!(record_route(inv).iter().all(|r| !r.contains(";mr=")));
        assert!(sim.media().is_empty());
        // In `always` mode the same call goes through an engine.
        let mut sim = Sim::with_media(Mode::Always);
        sim.register_ws("bob", 3);
        sim.feed(browser(9), &browser_invite("bob", "m3", Some(BROWSER_SDP)));
        let asked = sim.media();
        assert!(
            matches!(&asked[..], [r] if matches!(&r.command, Command::Offer { flags, .. } if flags.ice.as_deref() == Some("force"))),
            "{asked:?}"
        );
    }

    #[test]
    fn forking_keeps_each_branch_apart_and_deletes_only_the_loser() {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.register_ws("hank", 21);
        sim.register_ws("hank", 22);
        sim.feed(udp_phone(), &invite_from_udp("hank", "mf"));
        let asked = sim.media();
        assert_eq!(asked.len(), 2, "one offer per branch: {asked:?}");
        let branches: Vec<String> = asked
            .iter()
            .map(|r| match &r.command {
                Command::Offer { leg, .. } => leg.via_branch.clone().unwrap(),
                c => panic!("{c:?}"),
            })
            .collect();
        assert_ne!(branches[0], branches[1]);
        assert_eq!(asked[0].engine, asked[1].engine, "one call, one engine");
        let mut invites = Vec::new();
        for r in &asked {
            let out = sim.media_done(r.id, MediaOutcome::Sdp(b"v=0 webrtc\r\n".to_vec()));
            let (t, inv) = forwarded(&out);
            invites.push((t, inv.clone()));
        }
        let flow = |t: Target| match t {
            Target::Flow(f) => f,
            t => panic!("{t:?}"),
        };
        let (ta, a) = &invites[0];
        let (tb, b) = &invites[1];
        sim.feed(browser(flow(*ta)), &answer(a, 180, ""));
        // The other answers: its SDP goes to the engine as that branch's answer.
        let out = sim.feed(
            browser(flow(*tb)),
            &answer_with_sdp(b, 200, "sip:h@x.invalid;transport=ws", BROWSER_SDP),
        );
        assert!(out.is_empty());
        let asked = sim.media();
        let Command::Answer { leg, .. } = &asked[0].command else {
            panic!("{asked:?}")
        };
        assert_eq!(leg.via_branch.as_ref(), Some(&top_branch(b)));
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(PHONE_SDP.as_bytes().to_vec()),
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 200))
        );
        let cancel = out
            .iter()
            .find_map(|(_, m)| match m {
                Message::Request(r) if r.method == Method::Cancel => Some(r.clone()),
                _ => None,
            })
            .expect("the ringing branch is cancelled");
        sim.feed(browser(flow(*ta)), &answer(&cancel, 200, ""));
        sim.feed(browser(flow(*ta)), &answer(a, 487, ""));
        let asked = sim.media();
        assert_eq!(
            asked.iter().map(|r| &r.command).collect::<Vec<_>>(),
            vec![&Command::Delete {
                leg: Leg {
                    call_id: "call-mf".into(),
                    from_tag: "p1".into(),
                    to_tag: None,
                    via_branch: Some(top_branch(a)),
                }
            }],
            "only the losing branch's leg goes, never the call"
        );
        // The call was answered and never hung up: its dialog stays counted.
        sim.assert_idle_with_calls_up(2, 1, 1);
    }

    #[test]
    fn an_engine_that_does_not_answer_passes_the_call_to_the_other_then_500() {
        let (mut sim, first) = browser_calls_carol("m4");
        let out = sim.media_done(first[0].id, MediaOutcome::Unavailable("no answer".into()));
        assert!(out.is_empty());
        let second = sim.media();
        assert_eq!(second.len(), 1);
        assert_ne!(
            second[0].engine, first[0].engine,
            "the other engine gets the call"
        );
        let out = sim.media_done(second[0].id, MediaOutcome::Unavailable("no answer".into()));
        let r = response(&out[0].1);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (500, "Media Relay Unavailable")
        );
        assert!(
            r.headers
                .get(&HeaderName::Warning)
                .is_some_and(|w| w.contains("Media Relay"))
        );
        assert!(sim.media().is_empty(), "no leg to delete");
        // With no engine up, a new call fails at once.
        sim.core.set_media_engines(vec![0, 0]);
        let out = sim.feed(
            browser(9),
            &browser_invite("carol", "m5", Some(BROWSER_SDP)),
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 500)),
            "{out:?}"
        );
        // A refused SDP is a 488.
        sim.core.set_media_engines(vec![1, 1]);
        sim.feed(
            browser(9),
            &browser_invite("carol", "m6", Some(BROWSER_SDP)),
        );
        let asked = sim.media();
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Refused("Failed to parse SDP".into()),
        );
        assert_eq!(status(&out[0].1), 488);
        sim.assert_idle_after_timers(1, 1);
    }

    #[test]
    fn cancel_while_the_engine_works_ends_the_call_and_its_leg() {
        let (mut sim, asked) = browser_calls_carol("m7");
        let cancel = "CANCEL sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKm7\r\nMax-Forwards: 70\r\n\
                      From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: m7\r\nCSeq: 1 CANCEL\r\n\r\n";
        let out = sim.feed(browser(9), cancel);
        assert_eq!(status(&out[0].1), 200);
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(PHONE_SDP.as_bytes().to_vec()),
        );
        assert!(
            out.iter().all(|(t, _)| *t != udp_phone_target()),
            "nothing reaches the phone: {out:?}"
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 487))
        );
        let asked = sim.media();
        assert!(
            matches!(&asked[..], [r] if matches!(r.command, Command::Delete { .. } | Command::DeleteCall { .. })),
            "{asked:?}"
        );
        sim.assert_idle_after_timers(1, 1);
    }

    #[test]
    fn a_late_offer_is_offered_from_the_200_and_answered_from_the_ack() {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.register_udp("carol");
        let out = sim.feed(browser(9), &browser_invite("carol", "m8", None));
        let (_, inv) = forwarded(&out);
        assert!(sim.media().is_empty(), "no SDP, nothing to ask yet");
        let rr = record_route(inv);
        assert!(rr[0].contains(";mr="), "the dialog is relayed: {rr:?}");
        let inv = inv.clone();
        sim.feed(
            udp_phone(),
            &answer_with_sdp(&inv, 200, "sip:carol@127.0.0.1:5070", PHONE_SDP),
        );
        let asked = sim.media();
        assert!(
            matches!(asked[0].command, Command::Offer { .. }),
            "{asked:?}"
        );
        assert_eq!(
            tags_and_ice(&asked[0].command),
            ("callee", Some("a"), Some("force")),
            "the 200's offer, from the callee, goes to the browser"
        );
        sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(b"v=0 webrtc offer\r\n".to_vec()),
        );
        let ack = format!(
            "ACK sip:carol@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKm8ack\r\nMax-Forwards: 70\r\n\
             Route: {}\r\nRoute: {}\r\nFrom: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>;tag=callee\r\n\
             Call-ID: m8\r\nCSeq: 1 ACK\r\n{}",
            rr[1],
            rr[0],
            with_sdp(BROWSER_SDP)
        );
        let out = sim.feed(browser(9), &ack);
        assert!(out.is_empty(), "the ACK waits for the engine");
        let asked = sim.media();
        assert!(
            matches!(asked[0].command, Command::Answer { .. }),
            "{asked:?}"
        );
        assert_eq!(
            tags_and_ice(&asked[0].command),
            ("callee", Some("a"), Some("remove")),
            "the ACK's answer goes to the phone"
        );
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(PHONE_SDP.as_bytes().to_vec()),
        );
        assert_eq!(out[0].0, udp_phone_target());
        assert_eq!(body(&out[0].1), PHONE_SDP.as_bytes());
        // The call was answered and never hung up: its dialog stays counted.
        sim.assert_idle_with_calls_up(1, 1, 1);
    }

    #[test]
    fn a_route_whose_engine_was_changed_is_refused() {
        let (mut sim, asked) = browser_calls_carol("m9");
        let out = sim.media_done(
            asked[0].id,
            MediaOutcome::Sdp(PHONE_SDP.as_bytes().to_vec()),
        );
        let (_, inv) = forwarded(&out);
        let rr = record_route(inv);
        let engine = asked[0].engine;
        let forged: Vec<String> = rr
            .iter()
            .map(|r| r.replace(&format!(";mr={engine};"), &format!(";mr={};", 1 - engine)))
            .collect();
        let bye = format!(
            "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmb9;rport\r\n\
             Max-Forwards: 70\r\nRoute: {}\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
             To: <sip:alice@localhost>;tag=a\r\nCall-ID: m9\r\nCSeq: 1 BYE\r\n\r\n",
            forged[0], forged[1]
        );
        let out = sim.feed(udp_phone(), &bye);
        assert_eq!(status(&out[0].1), 403, "{out:?}");
        assert!(sim.media().is_empty());
    }
}

mod media_choice {
    use super::*;
    use crate::media::ng::Command;
    use crate::media::{Choice, Mode};

    fn offer(call: &str) -> String {
        format!(
            "INVITE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@a9.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        )
    }

    /// A routed core relaying in bridge mode, carol registered over UDP.
    fn sim() -> Sim {
        let mut sim = Sim::with_media(Mode::Bridge);
        sim.core.set_routing(true);
        sim.without_router(|sim| sim.register_udp("carol"));
        sim
    }

    #[test]
    fn the_routing_plugin_keeps_a_call_direct_or_relays_it_with_its_flags() {
        // Direct: a browser calling a phone, which the mode would relay.
        let mut sim = sim();
        sim.feed(browser(9), &offer("mc1"));
        let q = sim.route_queries();
        let direct = Choice {
            relay: Some(false),
            ..Choice::default()
        };
        let out = sim.routed(q[0].id, RouteDecision::Continue(Some(Box::new(direct))));
        let (_, inv) = forwarded(&out);
        assert_eq!(inv.body.as_ref(), b"v=0\n", "the SDP goes as it came");
        assert!(record_route(inv).iter().all(|r| !r.contains(";mr=")));
        assert!(sim.media().is_empty());

        // Relayed with the plugin's flags added to the configured ones.
        sim.feed(browser(9), &offer("mc2"));
        let q = sim.route_queries();
        let relay = Choice {
            relay: Some(true),
            toward_webrtc: vec!["codec-offer-opus".into()],
            toward_plain: vec!["codec-strip-all".into(), "codec-offer-PCMA".into()],
        };
        sim.routed(q[0].id, RouteDecision::Continue(Some(Box::new(relay))));
        let asked = sim.media();
        let Command::Offer { flags, .. } = &asked[0].command else {
            panic!("{asked:?}")
        };
        assert_eq!(flags.transport_protocol.as_deref(), Some("RTP/AVP"));
        assert_eq!(flags.flags, vec!["codec-strip-all", "codec-offer-PCMA"]);
    }

    #[test]
    fn a_choice_to_relay_needs_an_engine_up() {
        let mut sim = sim();
        sim.core.set_media_engines(vec![0, 0]);
        sim.feed(browser(9), &offer("mc3"));
        let q = sim.route_queries();
        let relay = Choice {
            relay: Some(true),
            ..Choice::default()
        };
        let out = sim.routed(q[0].id, RouteDecision::Continue(Some(Box::new(relay))));
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m, Message::Response(r) if r.status == 500)),
            "{out:?}"
        );
    }
}

#[test]
fn an_enforced_identity_holds_on_its_flow_before_the_router_is_asked() {
    let mut sim = Sim::with_router();
    sim.in_place = Some(|_| Some(RouteDecision::Continue(None)));
    let alice = Some(Arc::new(
        super::identity::Identity::from_attributes(&[("user".into(), "alice".into())]).unwrap(),
    ));
    let feed = |sim: &mut Sim, text: String| {
        let message = parse(text.as_bytes()).unwrap();
        let mut incoming = Incoming::new(browser(3), message);
        incoming.identity = alice.clone();
        sim.core.handle(sim.now, Input::Message(Box::new(incoming)));
        sim.ask_router();
        sim.drain()
    };
    let register = |user: &str, branch: &str| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=r3\r\nTo: <sip:{user}@localhost>\r\n\
             Call-ID: reg-3\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:a3@b3.invalid;transport=ws>;expires=600\r\n\r\n"
        )
    };
    let message = |from: &str, branch: &str| {
        format!(
            "MESSAGE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from}@localhost>;tag=m3\r\nTo: <sip:carol@localhost>\r\n\
             Call-ID: m-{branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // As someone else: 403 with the reason in a Warning, and the router not asked.
    let out = feed(&mut sim, register("bob", "r1"));
    assert_eq!(status(&out[0].1), 403, "{out:?}");
    assert!(
        response(&out[0].1)
            .headers
            .get(&HeaderName::Warning)
            .is_some_and(|w| w.contains("To Is Not This Connection's User")),
        "{out:?}"
    );
    let out = feed(&mut sim, message("bob", "m1"));
    assert_eq!(status(&out[0].1), 403, "{out:?}");
    // A To tag it made up does not make a request part of a dialog of ours.
    let tagged = message("bob", "m0").replace(
        "To: <sip:carol@localhost>",
        "To: <sip:carol@localhost>;tag=forged",
    );
    let out = feed(&mut sim, tagged);
    assert_eq!(status(&out[0].1), 403, "{out:?}");
    assert_eq!(sim.queries, 0, "the routing plugin was not asked");
    assert_eq!(sim.core.stats().refused.identity, 3);
    // Nor an ACK (which gets no answer) From someone else toward a registered user.
    sim.register_ws("carol", 9);
    let ack = "ACK sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS b3.invalid;branch=z9hG4bKa1\r\n\
               Max-Forwards: 70\r\nFrom: <sip:bob@localhost>;tag=m3\r\n\
               To: <sip:carol@localhost>;tag=forged\r\nCall-ID: a-1\r\nCSeq: 1 ACK\r\n\
               Content-Length: 0\r\n\r\n";
    let out = feed(&mut sim, ack.to_string());
    assert!(out.is_empty(), "the ACK went nowhere: {out:?}");
    assert_eq!(sim.core.stats().refused.identity, 4);
    assert!(sim.core.bindings("sip:bob@localhost").is_empty());
    // As itself: the router decides as for any flow.
    let out = feed(&mut sim, register("alice", "r2"));
    assert_eq!(status(&out[0].1), 200, "{out:?}");
    assert_eq!(sim.core.bindings("sip:alice@localhost").len(), 1);
    let out = feed(&mut sim, message("alice", "m2"));
    assert_eq!(out[0].0, Target::Flow(9), "to carol: {out:?}");
    assert_eq!(request(&out[0].1).method, Method::Message);
    assert_eq!(sim.queries, 3, "carol's REGISTER and alice's two requests");
    assert_eq!(sim.core.stats().refused.identity, 4);
}

mod named_next_hops {
    //! Next hops named by a host name (RFC 3263): the branch waits for the shell's
    //! answer, then tries the targets in turn.
    use super::*;
    use crate::core::resolve::{ResolveOutcome, ResolvedTarget};

    fn target(transport: Transport, addr: &str) -> ResolvedTarget {
        ResolvedTarget {
            transport,
            addr: addr.parse().unwrap(),
            name: 0,
        }
    }

    fn udp_to(addr: &str) -> Target {
        Target::Udp {
            local: UDP,
            remote: addr.parse().unwrap(),
        }
    }

    fn from(addr: &str) -> Source {
        Source {
            transport: Transport::Udp,
            local: UDP,
            remote: addr.parse().unwrap(),
            flow: None,
        }
    }

    /// A phone's INVITE that the router relays to `uri`; returns the resolve request.
    fn relayed(sim: &mut Sim, call: &str, uri: &str) -> crate::core::resolve::ResolveRequest {
        let out = sim.feed(udp_phone(), &invite_from_udp("9001", call));
        assert_eq!(status(&out[0].1), 100);
        let q = sim.route_queries();
        let out = sim.routed(
            q[0].id,
            RouteDecision::Relay(crate::sip::uri::Uri::parse(uri).unwrap(), None),
        );
        assert!(
            out.is_empty(),
            "nothing is sent before the name resolves: {out:?}"
        );
        let r = sim.core.poll_resolve().expect("a name to resolve");
        assert!(sim.core.poll_resolve().is_none());
        r
    }

    fn resolved(sim: &mut Sim, id: u64, outcome: ResolveOutcome) -> Vec<(Target, Message)> {
        sim.core.handle(sim.now, Input::Resolved { id, outcome });
        sim.drain()
    }

    #[test]
    fn targets_are_tried_in_turn_on_503_silence_and_transport_errors() {
        let mut sim = Sim::with_router();
        let r = relayed(&mut sim, "dns1", "sip:9001@PBX.Example.Test.");
        assert_eq!(r.hop.host, "pbx.example.test");
        assert_eq!(
            (r.hop.port, r.hop.transport, r.hop.secure),
            (None, None, false)
        );
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Targets(vec![
                target(Transport::Udp, "127.0.0.1:6001"),
                target(Transport::Udp, "127.0.0.1:6002"),
                target(Transport::Tcp, "127.0.0.1:6003"),
            ]),
        );
        let (t, inv) = forwarded(&out);
        assert_eq!(t, udp_to("127.0.0.1:6001"));
        // The Request-URI keeps the name (RFC 3263 is about where, not what).
        assert_eq!(inv.uri.to_string(), "sip:9001@PBX.Example.Test.");
        // 503 from the first: ACKed, and the second gets the INVITE; the caller sees
        // nothing of it.
        let reply = answer(inv, 503, "");
        let out = sim.feed(from("127.0.0.1:6001"), &reply);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].0, udp_to("127.0.0.1:6001"));
        assert_eq!(request(&out[0].1).method, Method::Ack);
        let (t, inv2) = forwarded(&out[1..]);
        assert_eq!(t, udp_to("127.0.0.1:6002"));
        assert_eq!(inv2.method, Method::Invite);
        // The second says nothing at all (and, never heard from, gets no
        // retransmissions: no amplification toward an address we do not know
        // receives); after failover-after (5 s) the third.
        let out = sim.advance(Duration::from_millis(4900));
        assert!(out.is_empty(), "{out:?}");
        let out = sim.advance(Duration::from_millis(200));
        let (t, inv3) = forwarded(&out);
        assert_eq!(
            t,
            Target::Connect {
                transport: Transport::Tcp,
                remote: "127.0.0.1:6003".parse().unwrap(),
                name: 0,
            }
        );
        assert!(
            inv3.headers
                .values(&HeaderName::Via)
                .next()
                .unwrap()
                .starts_with("SIP/2.0/TCP")
        );
        // The last cannot be reached: the caller gets 500 (not the 503 that would
        // send RFC 3263 clients away from us).
        sim.core.handle(
            sim.now,
            Input::SendFailed(Target::Connect {
                transport: Transport::Tcp,
                remote: "127.0.0.1:6003".parse().unwrap(),
                name: 0,
            }),
        );
        let out = sim.drain();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, udp_phone_target());
        assert_eq!(status(&out[0].1), 500);
    }

    /// A phone's INVITE relayed to a name with two UDP targets; the first stays
    /// silent past failover-after and the second gets the INVITE. Returns the two
    /// INVITEs as sent.
    fn first_target_silent(sim: &mut Sim, call: &str) -> (Request, Request) {
        let r = relayed(sim, call, "sip:9001@two.example.test");
        let out = resolved(
            sim,
            r.id,
            ResolveOutcome::Targets(vec![
                target(Transport::Udp, "127.0.0.1:6001"),
                target(Transport::Udp, "127.0.0.1:6002"),
            ]),
        );
        let first = forwarded(&out).1.clone();
        let out = sim.advance(Duration::from_millis(5100));
        let (t, second) = forwarded(&out);
        assert_eq!(t, udp_to("127.0.0.1:6002"));
        (first, second.clone())
    }

    #[test]
    fn a_target_given_up_that_rings_late_is_cancelled() {
        let mut sim = Sim::with_router();
        let (first, second) = first_target_silent(&mut sim, "late1");
        // The first rings after all: it gets a CANCEL, the caller sees nothing of it.
        let out = sim.feed(from("127.0.0.1:6001"), &answer(&first, 180, ""));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, udp_to("127.0.0.1:6001"));
        assert_eq!(request(&out[0].1).method, Method::Cancel);
        // Its 487 is ACKed there and goes no further.
        let out = sim.feed(from("127.0.0.1:6001"), &answer(&first, 487, ""));
        assert!(
            out.iter()
                .all(|(t, m)| *t == udp_to("127.0.0.1:6001") && request(m).method == Method::Ack),
            "{out:?}"
        );
        // The second answers the call.
        let out = sim.feed(from("127.0.0.1:6002"), &answer(&second, 200, ""));
        assert_eq!(out[0].0, udp_phone_target());
        assert_eq!(status(&out[0].1), 200);
    }

    #[test]
    fn a_target_given_up_that_answers_late_answers_the_call() {
        let mut sim = Sim::with_router();
        let (first, second) = first_target_silent(&mut sim, "late2");
        let out = sim.feed(from("127.0.0.1:6002"), &answer(&second, 180, ""));
        assert_eq!(status(&out[0].1), 180);
        // The first answers after all: its 200 goes up (every 2xx does), and the
        // second, ringing, is cancelled.
        let out = sim.feed(from("127.0.0.1:6001"), &answer(&first, 200, ""));
        let statuses: Vec<_> = out
            .iter()
            .map(|(t, m)| match m {
                Message::Response(r) => (*t, r.status.to_string()),
                Message::Request(r) => (*t, r.method.as_str().to_string()),
            })
            .collect();
        assert!(
            statuses.contains(&(udp_phone_target(), "200".into())),
            "{statuses:?}"
        );
        assert!(
            statuses.contains(&(udp_to("127.0.0.1:6002"), "CANCEL".into())),
            "{statuses:?}"
        );
        // Nothing given up answers for it any more: a silent timeout ends quietly.
        let out = sim.advance(Duration::from_secs(40));
        assert!(
            out.iter().all(|(t, _)| *t != udp_phone_target()),
            "nothing more for the caller: {out:?}"
        );
    }

    #[test]
    fn a_message_tries_no_target_after_its_client_gave_up() {
        let mut sim = Sim::with_router();
        let msg = "MESSAGE sip:9001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKmsgf;rport\r\n\
                   Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:9001@localhost>\r\n\
                   Call-ID: msgf\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        assert!(sim.feed(udp_phone(), msg).is_empty());
        let q = sim.route_queries();
        sim.routed(
            q[0].id,
            RouteDecision::Relay(
                crate::sip::uri::Uri::parse("sip:9001@many.example.test").unwrap(),
                None,
            ),
        );
        let r = sim.core.poll_resolve().unwrap();
        let targets = (0..16)
            .map(|i| target(Transport::Udp, &format!("127.0.0.1:{}", 6100 + i)))
            .collect();
        let mut sent = resolved(&mut sim, r.id, ResolveOutcome::Targets(targets)).len();
        // All silent: one every 5 s while the client still waits (Timer F, 32 s),
        // none after; the transaction then ends without a 408 (RFC 4320).
        sent += sim.advance(Duration::from_secs(60)).len();
        assert_eq!(sent, 7, "targets tried at 0, 5, ... 30 s");
        assert_eq!(sim.core.stats().server_transactions, 0);
    }

    #[test]
    fn the_last_target_gets_the_whole_transaction_time() {
        let mut sim = Sim::with_router();
        let r = relayed(&mut sim, "dns2", "sip:9001@one.example.test");
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Targets(vec![target(Transport::Udp, "127.0.0.1:6001")]),
        );
        assert_eq!(forwarded(&out).0, udp_to("127.0.0.1:6001"));
        // No failover timer with nothing to fail over to: only retransmissions.
        let out = sim.advance(Duration::from_secs(10));
        assert!(out.iter().all(|(_, m)| request(m).method == Method::Invite));
    }

    #[test]
    fn a_name_that_does_not_resolve_gets_500_at_once() {
        let mut sim = Sim::with_router();
        let r = relayed(&mut sim, "dns3", "sip:9001@nowhere.example.test");
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Failed("nowhere.example.test.: no such name".into()),
        );
        assert_eq!(out.len(), 1, "{out:?}");
        let resp = response(&out[0].1);
        assert_eq!(
            (resp.status, resp.reason.as_str()),
            (500, "Unresolvable Destination")
        );
        assert_eq!(
            resp.headers.get(&HeaderName::parse("Warning")),
            Some("399 sipwasm \"Unresolvable Destination\"")
        );
        assert_eq!(sim.core.stats().client_transactions, 0);
    }

    #[test]
    fn names_that_never_resolve_are_not_asked() {
        // A WebSocket client's Contact host (RFC 6761: .invalid) and a sips: URI over
        // UDP are refused without a lookup.
        let mut sim = Sim::with_router();
        for (n, uri) in [
            "sip:9001@abc.invalid",
            "sips:9001@pbx.example.test;transport=udp",
        ]
        .iter()
        .enumerate()
        {
            let out = sim.feed(udp_phone(), &invite_from_udp("9001", &format!("inv{n}")));
            assert_eq!(status(&out[0].1), 100);
            let q = sim.route_queries();
            let out = sim.routed(
                q[0].id,
                RouteDecision::Relay(crate::sip::uri::Uri::parse(uri).unwrap(), None),
            );
            assert!(matches!(status(&out[0].1), 480 | 500), "{uri}: {out:?}");
            assert!(sim.core.poll_resolve().is_none(), "{uri}");
        }
    }

    #[test]
    fn sips_asks_for_tls_and_a_port_fixes_udp() {
        let mut sim = Sim::with_router();
        let r = relayed(&mut sim, "dns4", "sips:9001@pbx.example.test");
        assert_eq!(
            (r.hop.port, r.hop.transport, r.hop.secure),
            (None, Some(Transport::Tls), true)
        );
        let r = relayed(&mut sim, "dns5", "sip:9001@pbx.example.test:5080");
        assert_eq!(
            (r.hop.port, r.hop.transport),
            (Some(5080), Some(Transport::Udp))
        );
        let r = relayed(&mut sim, "dns6", "sip:9001@pbx.example.test;transport=TCP");
        assert_eq!((r.hop.port, r.hop.transport), (None, Some(Transport::Tcp)));
    }

    #[test]
    fn cancel_while_resolving_ends_the_call_and_sends_nothing_after() {
        let mut sim = Sim::with_router();
        let r = relayed(&mut sim, "dns7", "sip:9001@slow.example.test");
        let cancel = "CANCEL sip:9001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKdns7;rport\r\n\
                      Max-Forwards: 70\r\nFrom: <sip:phone@localhost>;tag=p1\r\nTo: <sip:9001@localhost>\r\n\
                      Call-ID: call-dns7\r\nCSeq: 1 CANCEL\r\n\r\n";
        let out = sim.feed(udp_phone(), cancel);
        assert_eq!(status(&out[0].1), 200);
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Targets(vec![target(Transport::Udp, "127.0.0.1:6001")]),
        );
        let statuses: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
        assert_eq!(statuses, vec![487], "{out:?}");
        // A late answer for a request that is gone does nothing.
        assert!(resolved(&mut sim, r.id, ResolveOutcome::Failed("late".into())).is_empty());
    }

    #[test]
    fn a_trusted_peers_route_to_a_name_takes_requests_and_their_acks_there() {
        let mut sim = Sim::new();
        let message = "MESSAGE sip:carol@far.example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKdm1\r\n\
                       Max-Forwards: 70\r\nRoute: <sip:proxy.example.org;lr>\r\nFrom: <sip:edge@localhost>;tag=e1\r\n\
                       To: <sip:carol@far.example.org>\r\nCall-ID: dm1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
        assert!(sim.feed(edge(), message).is_empty());
        let r = sim.core.poll_resolve().expect("the Route's host");
        assert_eq!(r.hop.host, "proxy.example.org");
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Targets(vec![target(Transport::Udp, "127.0.0.1:6010")]),
        );
        let (t, m) = forwarded(&out);
        assert_eq!(t, udp_to("127.0.0.1:6010"));
        let out = sim.feed(from("127.0.0.1:6010"), &answer(m, 200, ""));
        assert_eq!(status(&out[0].1), 200);
        // An ACK for a 2xx, forwarded without a transaction, waits for its name too.
        let ack = "ACK sip:carol@far.example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKda1\r\n\
                   Max-Forwards: 70\r\nRoute: <sip:proxy2.example.org;lr>\r\nFrom: <sip:edge@localhost>;tag=e1\r\n\
                   To: <sip:carol@far.example.org>;tag=c1\r\nCall-ID: da1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
        assert!(sim.feed(edge(), ack).is_empty());
        let r = sim.core.poll_resolve().expect("the ACK's Route host");
        let out = resolved(
            &mut sim,
            r.id,
            ResolveOutcome::Targets(vec![target(Transport::Udp, "127.0.0.1:6011")]),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, udp_to("127.0.0.1:6011"));
        assert_eq!(request(&out[0].1).method, Method::Ack);
    }
}

mod gateway_sets {
    //! `[[gateways]]`: relays to a set by name, failover, probes.
    use super::*;
    use crate::core::gateways::{Algorithm, GatewaySet, MemberSpec};

    fn member(port: u16) -> MemberSpec {
        let Ok(crate::sip::uri::Uri::Sip(uri)) =
            crate::sip::uri::Uri::parse(&format!("sip:127.0.0.1:{port}"))
        else {
            unreachable!()
        };
        MemberSpec {
            uri,
            weight: 1,
            priority: 0,
        }
    }

    fn pstn(ports: &[u16], probes: bool) -> GatewaySet {
        GatewaySet {
            name: "pstn".into(),
            members: ports.iter().map(|&p| member(p)).collect(),
            algorithm: Algorithm::RoundRobin,
            probe_every: probes.then_some(Duration::from_secs(1)),
            down_after: 2,
            up_after: 1,
        }
    }

    fn at(port: u16) -> SocketAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    fn peer(port: u16) -> Source {
        Source {
            transport: Transport::Udp,
            local: UDP,
            remote: at(port),
            flow: None,
        }
    }

    /// The probes in `out`, answered with `status` by their members.
    fn answer_probes(sim: &mut Sim, out: &[(Target, Message)], status: u16) -> usize {
        let probes: Vec<(SocketAddr, Request)> = out
            .iter()
            .filter_map(|(t, m)| match (t, m) {
                (Target::Udp { remote, .. }, Message::Request(r))
                    if r.method == Method::Options =>
                {
                    Some((*remote, r.clone()))
                }
                _ => None,
            })
            .collect();
        for (from, r) in &probes {
            sim.feed(peer(from.port()), &answer(r, status, ""));
        }
        probes.len()
    }

    #[test]
    fn members_are_probed_every_interval_and_go_down_and_up() {
        let mut sim = Sim::with_gateways(vec![pstn(&[7001, 7002, 7003], true)]);
        let out = sim.advance(Duration::from_millis(10));
        assert_eq!(answer_probes(&mut sim, &out, 200), 3);
        for round in 0..3 {
            let out = sim.advance(Duration::from_secs(1));
            assert_eq!(answer_probes(&mut sim, &out, 200), 3, "round {round}");
        }
        // 7002 stops answering (ICMP): down after two failed probes.
        for _ in 0..2 {
            let out = sim.advance(Duration::from_secs(1));
            let probes: Vec<_> = out
                .iter()
                .filter(|(t, _)| {
                    *t != Target::Udp {
                        local: UDP,
                        remote: at(7002),
                    }
                })
                .cloned()
                .collect();
            assert_eq!(answer_probes(&mut sim, &probes, 200), 2);
            sim.core.handle(
                sim.now,
                Input::SendFailed(Target::Udp {
                    local: UDP,
                    remote: at(7002),
                }),
            );
            sim.drain();
        }
        let mut changes = Vec::new();
        while let Some(e) = sim.core.poll_event() {
            if let Event::GatewayState(c) = e {
                changes.push(c);
            }
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].target.as_str(), changes[0].up),
            ("sip:127.0.0.1:7002", false)
        );
        // Answers again: up after one (up-after = 1); a 404 is alive too.
        let out = sim.advance(Duration::from_secs(1));
        assert_eq!(answer_probes(&mut sim, &out, 404), 3);
        let mut ups = Vec::new();
        while let Some(e) = sim.core.poll_event() {
            if let Event::GatewayState(c) = e {
                ups.push((c.target, c.up));
            }
        }
        assert_eq!(ups, vec![("sip:127.0.0.1:7002".to_string(), true)]);
    }

    #[test]
    fn probes_in_flight_are_not_work_a_drain_waits_for() {
        let mut sim = Sim::with_gateways(vec![pstn(&[7001, 7002], true)]);
        let out = sim.advance(Duration::from_millis(10));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(sim.core.stats().client_transactions, 2);
        assert_eq!(sim.core.in_progress(sim.now), (0, 0));
    }

    #[test]
    fn a_probe_answer_from_elsewhere_counts_for_nothing() {
        let mut sim = Sim::with_gateways(vec![pstn(&[7001], true)]);
        for _ in 0..4 {
            let out = sim.advance(Duration::from_secs(1));
            // Someone else answers 503 in the member's name (with the branch it
            // could only have seen on the wire): ignored.
            for (_, m) in &out {
                if let Message::Request(r) = m {
                    let mut elsewhere = peer(7999);
                    elsewhere.remote.set_ip("127.0.0.9".parse().unwrap());
                    sim.feed(elsewhere, &answer(r, 503, ""));
                }
            }
            // The member itself answers.
            assert_eq!(answer_probes(&mut sim, &out, 200), 1);
        }
        while let Some(e) = sim.core.poll_event() {
            assert!(!matches!(e, Event::GatewayState(_)), "{e:?}");
        }
    }

    #[test]
    fn a_relay_to_a_set_goes_round_and_moves_on_at_5xx_408_and_silence() {
        let mut sim = Sim::with_gateways(vec![pstn(&[7001, 7002, 7003], false)]);
        let relay = |sim: &mut Sim, call: &str| {
            let out = sim.feed(udp_phone(), &invite_from_udp("9001", call));
            assert_eq!(status(&out[0].1), 100);
            let q = sim.route_queries();
            sim.routed(
                q[0].id,
                RouteDecision::Relay(crate::sip::uri::Uri::Other("gw:pstn".into()), None),
            )
        };
        let out = relay(&mut sim, "gw1");
        let (t, inv) = forwarded(&out);
        assert_eq!(
            t,
            Target::Udp {
                local: UDP,
                remote: at(7001)
            }
        );
        assert_eq!(inv.uri.to_string(), "sip:9001@127.0.0.1:7001");
        let inv = inv.clone();
        // 500: the next member, the caller sees nothing.
        let out = sim.feed(peer(7001), &answer(&inv, 500, ""));
        let (t, inv2) = forwarded(&out[1..]);
        assert_eq!(
            t,
            Target::Udp {
                local: UDP,
                remote: at(7002)
            }
        );
        let inv2 = inv2.clone();
        // 408 from it: the third.
        let out = sim.feed(peer(7002), &answer(&inv2, 408, ""));
        let (t, inv3) = forwarded(&out[1..]);
        assert_eq!(
            t,
            Target::Udp {
                local: UDP,
                remote: at(7003)
            }
        );
        let out = sim.feed(peer(7003), &answer(inv3, 486, ""));
        let statuses: Vec<u16> = out
            .iter()
            .filter(|(t, _)| *t == udp_phone_target())
            .map(|(_, m)| status(m))
            .collect();
        assert_eq!(
            statuses,
            vec![486],
            "a 4xx is the callee's answer: no more members"
        );
        // A 6xx too (a member that declines for everyone): no next member.
        let out = relay(&mut sim, "gw6");
        let (t, inv) = forwarded(&out);
        let (t, inv) = (t, inv.clone());
        let member = match t {
            Target::Udp { remote, .. } => remote.port(),
            other => panic!("{other:?}"),
        };
        let out = sim.feed(peer(member), &answer(&inv, 603, ""));
        let to_caller: Vec<u16> = out
            .iter()
            .filter(|(t, _)| *t == udp_phone_target())
            .map(|(_, m)| status(m))
            .collect();
        assert_eq!(to_caller, vec![603]);
        assert!(
            out.iter()
                .all(|(_, m)| !matches!(m, Message::Request(r) if r.method == Method::Invite)),
            "{out:?}"
        );
        // A tel: Request-URI: its number is the user, as user=phone.
        let tel = invite_from_udp("9001", "gwtel").replacen(
            "INVITE sip:9001@localhost",
            "INVITE tel:+15550100",
            1,
        );
        sim.feed(udp_phone(), &tel);
        let q = sim.route_queries();
        let out = sim.routed(
            q[0].id,
            RouteDecision::Relay(crate::sip::uri::Uri::Other("gw:pstn".into()), None),
        );
        let (_, inv) = forwarded(&out);
        let ruri = inv.uri.to_string();
        assert!(
            ruri.starts_with("sip:+15550100@127.0.0.1:700") && ruri.ends_with(";user=phone"),
            "{ruri}"
        );
        // The fourth call starts at the first member again (round robin).
        let out = relay(&mut sim, "gw2");
        assert_eq!(
            forwarded(&out).0,
            Target::Udp {
                local: UDP,
                remote: at(7001)
            }
        );
        // An unknown set: 500.
        let out = sim.feed(udp_phone(), &invite_from_udp("9001", "gw3"));
        let q = sim.route_queries();
        let _ = out;
        let out = sim.routed(
            q[0].id,
            RouteDecision::Relay(crate::sip::uri::Uri::Other("gw:nope".into()), None),
        );
        let r = response(&out[0].1);
        assert_eq!((r.status, r.reason.as_str()), (500, "No Such Gateway Set"));
    }
}

/// The cluster's location service (`[cluster]`), its store answered by the test.
mod cluster {
    use super::*;
    use crate::core::cluster::{ClusterAnswer, ClusterAsk, ClusterRequest, ClusterSettings};
    use crate::core::location::Reach;

    fn clustered() -> Sim {
        let mut sim = Sim::new();
        let mut cfg = sim.core.cfg.clone();
        cfg.cluster = Some(ClusterSettings {
            route_host: "127.0.0.1:5060;transport=tcp".into(),
            // The edge of `edge()` is a node too.
            peers: peers::TrustedPeers::new(vec!["127.0.0.2".parse().unwrap()]),
        });
        sim.core = Core::new(cfg);
        sim
    }

    fn asks(sim: &mut Sim) -> Vec<ClusterRequest> {
        std::iter::from_fn(|| sim.core.poll_cluster()).collect()
    }

    fn answer(sim: &mut Sim, id: u64, answer: ClusterAnswer) -> Vec<(Target, Message)> {
        sim.core.handle(sim.now, Input::Cluster { id, answer });
        sim.drain()
    }

    fn register_udp(cseq: u32, expires: u32) -> String {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcl{cseq}x{expires};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:pat@localhost>;tag=ru\r\nTo: <sip:pat@localhost>\r\n\
             Call-ID: reg-pat\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:pat@127.0.0.1:5070>;expires={expires}\r\n\r\n"
        )
    }

    /// A binding another node holds: its route first in its Path.
    fn remote(contact: &str, call_id: &str, cseq: u32, route: &str) -> Binding {
        let now = Instant::now();
        Binding {
            id: 0,
            aor: "sip:pat@localhost".into(),
            contact: contact.into(),
            q: None,
            expires_at: now + Duration::from_secs(600),
            updated: now,
            call_id: call_id.into(),
            cseq,
            instance: None,
            reg_id: None,
            path: vec![route.into()],
            params: String::new(),
            reach: Reach::Node,
            transport: Transport::Udp,
            temp_gruu: None,
            user_agent: None,
        }
    }

    #[test]
    fn a_register_is_decided_on_every_nodes_bindings_and_written_if_nothing_moved() {
        let mut sim = clustered();
        assert!(sim.feed(udp_phone(), &register_udp(7, 600)).is_empty());
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id,
                ask: ClusterAsk::Lookup { aor },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!(aor, "sip:pat@localhost");
        assert!(
            answer(
                &mut sim,
                *id,
                ClusterAnswer::Found {
                    version: 3,
                    bindings: vec![],
                    known: false
                }
            )
            .is_empty()
        );
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id,
                ask:
                    ClusterAsk::Commit {
                        version,
                        save,
                        remove,
                        ..
                    },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!(*version, 3);
        assert!(remove.is_empty());
        assert_eq!(save.len(), 1);
        // The store keeps this node's route to the phone (its address, signed) first.
        let route = &save[0].path[0];
        assert!(
            route.starts_with("<sip:fu")
                && route.ends_with("@127.0.0.1:5060;transport=tcp;lr;swc>"),
            "{route}"
        );
        // Nothing is bound here until the store took it.
        assert!(sim.core.bindings("sip:pat@localhost").is_empty());
        // Another node wrote the AoR meanwhile: decided again, on what it wrote (the
        // same phone with a later CSeq): 500, and nothing written.
        let out = answer(&mut sim, *id, ClusterAnswer::Conflict);
        assert!(out.is_empty());
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id,
                ask: ClusterAsk::Lookup { .. },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        let theirs = remote(
            "sip:pat@127.0.0.1:5070",
            "reg-pat",
            9,
            "<sip:fuX@10.0.0.3:5060;lr;swc>",
        );
        let out = answer(
            &mut sim,
            *id,
            ClusterAnswer::Found {
                version: 4,
                bindings: vec![theirs],
                known: true,
            },
        );
        assert_eq!(status(&out[0].1), 500, "{out:?}");
        assert!(asks(&mut sim).is_empty());
        assert!(sim.core.bindings("sip:pat@localhost").is_empty());

        // A later CSeq moves the binding here: written with the other node's copy
        // removed (the store tells that node), then bound here.
        sim.feed(udp_phone(), &register_udp(10, 600));
        let id = asks(&mut sim)[0].id;
        let theirs = remote(
            "sip:pat@127.0.0.1:5070",
            "reg-pat",
            9,
            "<sip:fuX@10.0.0.3:5060;lr;swc>",
        );
        let (id, save) = found_then_commit(&mut sim, id, 4, vec![theirs]);
        assert_eq!((save.len(), save[0].cseq), (1, 10));
        let out = answer(&mut sim, id, ClusterAnswer::Committed { version: 1 });
        assert_eq!(status(&out[0].1), 200);
        let bound = sim.core.bindings("sip:pat@localhost");
        assert_eq!(bound.len(), 1);
        assert!(
            bound[0].reach.is_local() && bound[0].path.is_empty(),
            "{bound:?}"
        );
    }

    #[test]
    fn without_the_store_a_register_gets_503_and_registers_for_one_aor_wait_their_turn() {
        let mut sim = clustered();
        sim.feed(udp_phone(), &register_udp(1, 600));
        sim.feed(udp_phone(), &register_udp(2, 600));
        // One at a time per AoR.
        let a = asks(&mut sim);
        assert_eq!(a.len(), 1, "{a:?}");
        let out = answer(&mut sim, a[0].id, ClusterAnswer::Unavailable);
        let r = response(&out[0].1);
        assert_eq!(r.status, 503);
        let retry: u32 = r
            .headers
            .get(&HeaderName::RetryAfter)
            .unwrap()
            .parse()
            .unwrap();
        assert!((10..=30).contains(&retry), "{retry}");
        // Then the next one's turn.
        let a = asks(&mut sim);
        assert!(
            matches!(
                &a[..],
                [ClusterRequest {
                    ask: ClusterAsk::Lookup { .. },
                    ..
                }]
            ),
            "{a:?}"
        );
        // A retransmission of a REGISTER waiting is absorbed, not asked again.
        sim.feed(udp_phone(), &register_udp(2, 600));
        assert!(asks(&mut sim).is_empty());
    }

    #[test]
    fn a_call_for_a_user_on_another_node_goes_there_with_its_route() {
        let mut sim = clustered();
        let out = sim.feed(udp_phone(), &invite_from_udp("pat", "cl1"));
        // 100 Trying while the store is asked.
        assert_eq!(status(&out[0].1), 100);
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id,
                ask: ClusterAsk::Lookup { aor },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!(aor, "sip:pat@localhost");
        let route = "<sip:ftABC@127.0.0.9:5070;transport=tcp;lr;swc>";
        let theirs = remote("sip:pat@x.invalid;transport=ws", "c", 1, route);
        let out = answer(
            &mut sim,
            *id,
            ClusterAnswer::Found {
                version: 1,
                bindings: vec![theirs],
                known: true,
            },
        );
        let (target, inv) = forwarded(&out);
        assert_eq!(
            target,
            Target::Connect {
                transport: Transport::Tcp,
                remote: "127.0.0.9:5070".parse().unwrap(),
                name: 0,
            }
        );
        assert_eq!(inv.uri.to_string(), "sip:pat@x.invalid;transport=ws");
        assert_eq!(inv.headers.values(&HeaderName::Route).next(), Some(route));
        // That node's connection refused: the user is unavailable (480), not 500.
        sim.core.handle(sim.now, Input::SendFailed(target));
        let out = sim.drain();
        let last = out
            .iter()
            .rev()
            .find(|(_, m)| matches!(m, Message::Response(_)))
            .unwrap();
        assert_eq!(status(&last.1), 480, "{out:?}");

        // The store unreachable: the user may be elsewhere, 480 (not 404).
        sim.feed(udp_phone(), &invite_from_udp("pat", "cl2"));
        let id = asks(&mut sim)[0].id;
        let out = answer(&mut sim, id, ClusterAnswer::Unavailable);
        assert_eq!(status(&out[0].1), 480, "{out:?}");
    }

    #[test]
    fn a_node_route_delivers_on_the_flow_only_from_a_cluster_peer() {
        let mut sim = clustered();
        sim.core.set_routing(false);
        // A browser registered here; its REGISTER written to the store.
        sim.feed(browser(4), "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS b4.invalid;branch=z9hG4bKr4\r\n\
            Max-Forwards: 70\r\nFrom: <sip:web@localhost>;tag=r4\r\nTo: <sip:web@localhost>\r\n\
            Call-ID: reg-web-4\r\nCSeq: 1 REGISTER\r\nContact: <sip:w@b4.invalid;transport=ws>;expires=600\r\n\r\n");
        let id = asks(&mut sim)[0].id;
        let (id, save) = found_then_commit(&mut sim, id, 0, vec![]);
        let route = save[0].path[0].clone();
        assert_eq!(
            status(&answer(&mut sim, id, ClusterAnswer::Committed { version: 1 })[0].1),
            200
        );
        let message = |branch: &str| {
            format!(
                "MESSAGE sip:w@b4.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK{branch}\r\n\
                 Route: {route}\r\nMax-Forwards: 69\r\nFrom: <sip:x@localhost>;tag=x\r\nTo: <sip:web@localhost>\r\n\
                 Call-ID: {branch}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        // From another node (a trusted peer): on the browser's flow, no lookup.
        let out = sim.feed(edge(), &message("n1"));
        let (target, m) = forwarded(&out);
        assert_eq!(target, Target::Flow(4));
        assert_eq!(m.uri.to_string(), "sip:w@b4.invalid;transport=ws");
        assert!(asks(&mut sim).is_empty());
        // From anyone else: refused.
        let stranger = Source {
            remote: "192.0.2.7:5060".parse().unwrap(),
            ..udp_phone()
        };
        let out = sim.feed(stranger, &message("n2"));
        assert_eq!(status(&out[0].1), 403);
        // The flow gone: 430 to the node, which tries elsewhere; the store is told.
        sim.core.handle(sim.now, Input::FlowClosed(4));
        let a = asks(&mut sim);
        assert!(
            matches!(
                &a[..],
                [ClusterRequest {
                    id: 0,
                    ask: ClusterAsk::Forget { .. }
                }]
            ),
            "{a:?}"
        );
        let out = sim.feed(edge(), &message("n3"));
        assert_eq!(status(&out[0].1), 430);
    }

    /// Answers lookup `id` with `bindings` at `version`; the core's next ask must be
    /// the commit it decided: its id and the bindings it writes.
    fn found_then_commit(
        sim: &mut Sim,
        id: u64,
        version: u64,
        bindings: Vec<Binding>,
    ) -> (u64, Vec<Binding>) {
        let known = !bindings.is_empty();
        let found = ClusterAnswer::Found {
            version,
            bindings,
            known,
        };
        assert!(answer(sim, id, found).is_empty());
        match &asks(sim)[..] {
            [
                ClusterRequest {
                    id,
                    ask: ClusterAsk::Commit { save, .. },
                },
            ] => (*id, save.clone()),
            other => panic!("{other:?}"),
        }
    }

    impl Sim {
        /// A browser on flow `flow` registers `web` (the store empty, taking it).
        fn register_ws_clustered(&mut self, flow: FlowId) {
            self.feed(
                browser(flow),
                &format!(
                    "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS b{flow}.invalid;branch=z9hG4bKr{flow}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:web@localhost>;tag=r{flow}\r\nTo: <sip:web@localhost>\r\n\
                     Call-ID: reg-web-{flow}\r\nCSeq: 1 REGISTER\r\n\
                     Contact: <sip:w@b{flow}.invalid;transport=ws>;expires=600\r\n\r\n"
                ),
            );
            let id = asks(self)[0].id;
            let (id, _) = found_then_commit(self, id, 0, vec![]);
            let out = answer(self, id, ClusterAnswer::Committed { version: 1 });
            assert_eq!(status(&out[0].1), 200);
        }
    }

    /// The phone's REGISTER with CSeq `cseq`, the store empty and taking it: 200.
    fn register_here(sim: &mut Sim, cseq: u32) {
        sim.feed(udp_phone(), &register_udp(cseq, 600));
        let id = asks(sim)[0].id;
        let found = ClusterAnswer::Found {
            version: 0,
            bindings: vec![],
            known: false,
        };
        answer(sim, id, found);
        let id = asks(sim)[0].id;
        let out = answer(sim, id, ClusterAnswer::Committed { version: 1 });
        assert_eq!(status(&out[0].1), 200, "{out:?}");
    }

    #[test]
    fn a_refresh_is_written_in_one_round_trip_until_the_aor_moved() {
        let mut sim = clustered();
        sim.feed(udp_phone(), &register_udp(1, 600));
        let id = asks(&mut sim)[0].id;
        let (id, _) = found_then_commit(&mut sim, id, 6, vec![]);
        let out = answer(&mut sim, id, ClusterAnswer::Committed { version: 7 });
        assert_eq!(status(&out[0].1), 200);
        // The refresh: decided on what this node wrote (version 7), no lookup.
        sim.feed(udp_phone(), &register_udp(2, 600));
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id,
                ask: ClusterAsk::Commit { version: 7, .. },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        let out = answer(&mut sim, *id, ClusterAnswer::Committed { version: 8 });
        assert_eq!(status(&out[0].1), 200);
        // Another node wrote the AoR since: refused, read again, decided again.
        sim.feed(udp_phone(), &register_udp(3, 600));
        let id = asks(&mut sim)[0].id;
        assert!(answer(&mut sim, id, ClusterAnswer::Conflict).is_empty());
        let a = asks(&mut sim);
        assert!(
            matches!(
                &a[..],
                [ClusterRequest {
                    ask: ClusterAsk::Lookup { .. },
                    ..
                }]
            ),
            "{a:?}"
        );
        let (id, _) = found_then_commit(&mut sim, a[0].id, 9, vec![]);
        let out = answer(&mut sim, id, ClusterAnswer::Committed { version: 10 });
        assert_eq!(status(&out[0].1), 200);
        // Told that another node took the binding over: the next REGISTER reads first.
        sim.core.handle(
            sim.now,
            Input::ClusterEvicted {
                aor: "sip:pat@localhost".into(),
                key: "sip:pat@127.0.0.1:5070".into(),
                call_id: "reg-pat".into(),
                cseq: 3,
            },
        );
        asks(&mut sim);
        sim.feed(udp_phone(), &register_udp(4, 600));
        let a = asks(&mut sim);
        assert!(
            matches!(
                &a[..],
                [ClusterRequest {
                    ask: ClusterAsk::Lookup { .. },
                    ..
                }]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn what_the_store_holds_as_another_nodes_goes_what_it_lost_is_written_again() {
        let mut sim = clustered();
        register_here(&mut sim, 1);
        let key = "sip:pat@127.0.0.1:5070".to_string();
        let held = |version, ours: Vec<String>, others: Vec<String>| Input::ClusterHeld {
            aor: "sip:pat@localhost".into(),
            version,
            ours,
            others,
        };
        // Read before this node's last write (version 1): older than what is here.
        sim.core.handle(sim.now, held(0, vec![], vec![key.clone()]));
        assert_eq!(sim.core.bindings("sip:pat@localhost").len(), 1);
        // Still ours: nothing to do.
        sim.core.handle(sim.now, held(1, vec![key.clone()], vec![]));
        assert_eq!(sim.core.bindings("sip:pat@localhost").len(), 1);
        assert!(asks(&mut sim).is_empty());
        // The store lost it (a failover to a replica that lagged): written again.
        sim.core.handle(sim.now, held(1, vec![], vec![]));
        assert_eq!(sim.core.bindings("sip:pat@localhost").len(), 1);
        let a = asks(&mut sim);
        assert!(
            matches!(&a[..], [ClusterRequest { id: 0, ask: ClusterAsk::Publish { save, .. } }] if save.len() == 1),
            "{a:?}"
        );
        // Another node's now: it goes here, untold.
        register_here(&mut sim, 2);
        sim.core.handle(sim.now, held(1, vec![], vec![key]));
        assert!(sim.core.bindings("sip:pat@localhost").is_empty());
        assert!(asks(&mut sim).is_empty());
    }

    #[test]
    fn a_cancel_while_the_store_is_asked_ends_the_call_before_it_is_forwarded() {
        let mut sim = clustered();
        sim.feed(udp_phone(), &invite_from_udp("pat", "cw1"));
        let id = asks(&mut sim)[0].id;
        let cancel = invite_from_udp("pat", "cw1")
            .replace("INVITE sip:pat@localhost", "CANCEL sip:pat@localhost")
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
            .replace(
                "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
                "\r\n",
            );
        let out = sim.feed(udp_phone(), &cancel);
        let statuses: Vec<u16> = out.iter().map(|(_, m)| status(m)).collect();
        assert_eq!(statuses, [200, 487], "{out:?}");
        // The store answers after: nothing is forwarded.
        let route = "<sip:ftABC@127.0.0.9:5070;transport=tcp;lr;swc>";
        let theirs = remote("sip:pat@x.invalid;transport=ws", "c", 1, route);
        let found = ClusterAnswer::Found {
            version: 1,
            bindings: vec![theirs],
            known: true,
        };
        assert!(answer(&mut sim, id, found).is_empty());
    }

    #[test]
    fn a_trusted_peer_that_is_no_node_cannot_use_a_node_route() {
        let mut sim = clustered();
        let mut cfg = sim.core.cfg.clone();
        if let Some(c) = &mut cfg.cluster {
            c.peers = peers::TrustedPeers::new(vec!["127.0.0.3".parse().unwrap()]);
        }
        sim.core = Core::new(cfg);
        sim.core.set_routing(false);
        sim.register_ws_clustered(4);
        let token = sim.core.tokens.encode(4);
        let message = format!(
            "MESSAGE sip:w@b4.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKtp1\r\n\
             Route: <sip:{token}@127.0.0.1:5060;transport=tcp;lr;swc>\r\nMax-Forwards: 69\r\n\
             From: <sip:x@localhost>;tag=x\r\nTo: <sip:web@localhost>\r\nCall-ID: tp1\r\nCSeq: 1 MESSAGE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        // edge() is a trusted peer (sip.trusted-peers) but not in cluster.peers.
        let out = sim.feed(edge(), &message);
        assert_eq!(status(&out[0].1), 403, "{out:?}");
    }

    #[test]
    fn max_contacts_counts_the_bindings_of_every_node() {
        let mut sim = clustered();
        let mut cfg = sim.core.cfg.clone();
        cfg.registrar.max_contacts = 1;
        sim.core = Core::new(cfg);
        sim.feed(udp_phone(), &register_udp(1, 600));
        let id = asks(&mut sim)[0].id;
        // The AoR has one binding already, another phone on another node.
        let theirs = remote(
            "sip:pat@192.0.2.9:5060",
            "other",
            1,
            "<sip:fuY@10.0.0.3:5060;lr;swc>",
        );
        let found = ClusterAnswer::Found {
            version: 1,
            bindings: vec![theirs],
            known: true,
        };
        let out = answer(&mut sim, id, found);
        let r = response(&out[0].1);
        assert_eq!((r.status, r.reason.as_str()), (403, "Too Many Contacts"));
        assert!(asks(&mut sim).is_empty());
    }

    #[test]
    fn a_binding_another_node_took_over_is_dropped_here() {
        let mut sim = clustered();
        register_here(&mut sim, 1);
        assert_eq!(sim.core.bindings("sip:pat@localhost").len(), 1);
        let evicted = |cseq| Input::ClusterEvicted {
            aor: "sip:pat@localhost".into(),
            key: "sip:pat@127.0.0.1:5070".into(),
            call_id: "reg-pat".into(),
            cseq,
        };
        // A late eviction, of a registration older than the one here: spared.
        sim.core.handle(sim.now, evicted(0));
        assert_eq!(sim.core.bindings("sip:pat@localhost").len(), 1);
        sim.core.handle(sim.now, evicted(1));
        assert!(sim.core.bindings("sip:pat@localhost").is_empty());
        // Not removed from the store (it no longer has it as ours); the AoR only
        // leaves this node's index.
        let a = asks(&mut sim);
        assert!(
            matches!(&a[..], [ClusterRequest { id: 0, ask: ClusterAsk::Forget { remove, last: true, .. } }] if remove.is_empty()),
            "{a:?}"
        );
        // After the store lost its data, every binding of this node is written again.
        register_here(&mut sim, 2);
        sim.core.handle(sim.now, Input::ClusterRepublish(None));
        let a = asks(&mut sim);
        let [
            ClusterRequest {
                id: 0,
                ask: ClusterAsk::Publish { aor, save },
            },
        ] = &a[..]
        else {
            panic!("{a:?}")
        };
        assert_eq!((aor.as_str(), save.len()), ("sip:pat@localhost", 1));
    }
}

/// What the operator sees: dialogs, final answers, drain mode, bindings removed.
mod operate {
    use super::*;
    use crate::core::location::Reach;
    use crate::core::operate::{BindingFilter, Final};

    const CALL: &str = "INVITE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKop1\r\nMax-Forwards: 70\r\n\
               From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: op1\r\nCSeq: 1 INVITE\r\n\
               Contact: <sip:alice@a9.invalid;transport=ws;ob>\r\n\r\n";

    /// A browser on flow 9 calls carol (a UDP phone), who answers after `ring`;
    /// carol's route set.
    fn answered_call(sim: &mut Sim, ring: Duration) -> Vec<String> {
        let out = sim.feed(browser(9), CALL);
        let fwd = request(&out[1].1).clone();
        sim.advance(ring);
        sim.feed(
            udp_phone(),
            &answer(&fwd, 200, "Contact: <sip:carol@127.0.0.1:5070>\r\n"),
        );
        record_route(&fwd)
    }

    #[test]
    fn a_dialog_counts_from_its_2xx_to_its_bye() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        let rr = answered_call(&mut sim, Duration::from_millis(10));
        assert_eq!(sim.core.dialog_count(), 1);
        let list = sim.core.dialogs(sim.now, 10);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].call_id, "op1");
        assert_eq!(list[0].from, "sip:alice@localhost");
        assert_eq!(list[0].to, "sip:carol@localhost");
        assert_eq!(list[0].callee, "sip:carol@127.0.0.1:5070");
        // A BYE whose route was tampered with is refused and ends nothing.
        let forged = format!(
            "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopf;rport\r\n\
             Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
             To: <sip:alice@localhost>;tag=a\r\nCall-ID: op1\r\nCSeq: 1 BYE\r\n\r\n",
            rr[0].replace("sip:", "sip:x")
        );
        sim.feed(udp_phone(), &forged);
        assert_eq!(sim.core.dialog_count(), 1, "a forged BYE ends nothing");
        let bye = format!(
            "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKop2;rport\r\n\
             Max-Forwards: 70\r\nRoute: {}\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
             To: <sip:alice@localhost>;tag=a\r\nCall-ID: op1\r\nCSeq: 1 BYE\r\n\r\n",
            rr[0], rr[1]
        );
        let out = sim.feed(udp_phone(), &bye);
        assert_eq!(out[0].0, Target::Flow(9), "{out:?}");
        assert_eq!(sim.core.dialog_count(), 0);
        assert_eq!(sim.core.stats().refused.forged_route, 1);
    }

    #[test]
    fn a_dialog_ends_with_its_callees_flow_and_ages_out_without_a_bye() {
        let mut sim = Sim::new();
        sim.register_ws("wendy", 5);
        let out = sim.feed(udp_phone(), &invite_from_udp("wendy", "opc"));
        let fwd = out
            .iter()
            .find_map(|(t, m)| match m {
                Message::Request(r) if *t == Target::Flow(5) => Some(r.clone()),
                _ => None,
            })
            .expect("the INVITE to the browser");
        sim.feed(browser(5), &answer(&fwd, 200, ""));
        assert_eq!(sim.core.dialog_count(), 1);
        sim.core.handle(sim.now, Input::FlowClosed(5));
        assert_eq!(sim.core.dialog_count(), 0, "the callee's flow closed");
        // A phone-to-phone call whose BYE never comes: counted 12 hours at most.
        sim.register_udp("carol");
        answered_call(&mut sim, Duration::ZERO);
        assert_eq!(sim.core.dialog_count(), 1);
        sim.advance(super::super::operate::DIALOG_MAX_AGE);
        assert_eq!(sim.core.in_progress(sim.now).1, 0);
    }

    #[test]
    fn ended_dialogs_leave_nothing_behind() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        for i in 0..3000 {
            let call = CALL
                .replace("op1", &format!("opn{i}"))
                .replace("z9hG4bKop1", &format!("z9hG4bKopn{i}"));
            let out = sim.feed(browser(9), &call);
            let fwd = request(&out[1].1).clone();
            sim.feed(
                udp_phone(),
                &answer(&fwd, 200, "Contact: <sip:carol@127.0.0.1:5070>\r\n"),
            );
            let rr = record_route(&fwd);
            let bye = format!(
                "BYE sip:alice@a9.invalid;transport=ws;ob SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopb{i};rport\r\n\
                 Max-Forwards: 70\r\nRoute: {}\r\nRoute: {}\r\nFrom: <sip:carol@localhost>;tag=callee\r\n\
                 To: <sip:alice@localhost>;tag=a\r\nCall-ID: opn{i}\r\nCSeq: 1 BYE\r\n\r\n",
                rr[0], rr[1]
            );
            sim.feed(udp_phone(), &bye);
        }
        assert_eq!(sim.core.dialog_count(), 0);
        assert!(
            sim.core.dialogs.kept() <= 1024 + 1,
            "{}",
            sim.core.dialogs.kept()
        );
    }

    #[test]
    fn a_dialog_ends_with_its_callers_flow() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        answered_call(&mut sim, Duration::ZERO);
        assert_eq!(sim.core.dialog_count(), 1);
        sim.core.handle(sim.now, Input::FlowClosed(9));
        assert_eq!(sim.core.dialog_count(), 0);
    }

    #[test]
    fn a_call_being_set_up_is_work_a_drain_waits_for() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        assert_eq!(sim.core.in_progress(sim.now), (0, 0));
        let out = sim.feed(browser(9), CALL);
        assert_eq!(out.len(), 2, "{out:?}");
        // The INVITE's server and client transactions, no answer yet.
        assert_eq!(sim.core.in_progress(sim.now), (2, 0));
    }

    #[test]
    fn final_answers_are_recorded_with_their_time() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        let finals: Vec<Final> = sim.core.take_finals().collect();
        assert_eq!(
            finals,
            [Final {
                method: "REGISTER",
                status: 200,
                elapsed: Duration::ZERO
            }]
        );
        answered_call(&mut sim, Duration::from_millis(1500));
        let finals: Vec<Final> = sim.core.take_finals().collect();
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert_eq!(finals[0].method, "INVITE");
        assert_eq!(finals[0].status, 200);
        assert!(
            finals[0].elapsed >= Duration::from_millis(1500),
            "{finals:?}"
        );
        // A request for nobody: 404 at once; an extension method is `other`.
        sim.feed(
            udp_phone(),
            "FOO sip:nobody@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopx;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:p@localhost>;tag=1\r\nTo: <sip:nobody@localhost>\r\n\
             Call-ID: opx\r\nCSeq: 1 FOO\r\n\r\n",
        );
        let finals: Vec<Final> = sim.core.take_finals().collect();
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert_eq!((finals[0].method, finals[0].status), ("other", 404));
    }

    #[test]
    fn draining_refuses_new_dialogs_only() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        sim.core.set_draining(true);
        let out = sim.feed(browser(9), CALL);
        assert_eq!(out.len(), 1, "{out:?}");
        let r = response(&out[0].1);
        assert_eq!(r.status, 503);
        assert_eq!(r.headers.get(&HeaderName::RetryAfter), Some("30"));
        // A MESSAGE starts no dialog: it goes on.
        let out = sim.feed(
            browser(9),
            "MESSAGE sip:carol@localhost SIP/2.0\r\nVia: SIP/2.0/WS a9.invalid;branch=z9hG4bKopm\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@localhost>;tag=a\r\nTo: <sip:carol@localhost>\r\nCall-ID: opm\r\nCSeq: 1 MESSAGE\r\n\r\n",
        );
        assert_eq!(out[0].0, udp_phone_target(), "{out:?}");
        sim.core.set_draining(false);
        let out = sim.feed(browser(9), CALL);
        assert_eq!(out[1].0, udp_phone_target(), "{out:?}");
    }

    #[test]
    fn removing_bindings_tells_the_store() {
        let mut sim = Sim::new();
        sim.register_udp("carol");
        sim.register_ws("carol", 5);
        let _ = sim.drain();
        while sim.core.poll_event().is_some() {}
        let (total, list) = sim.core.registrations(&BindingFilter::default(), 10);
        assert_eq!(total, 2);
        let ws_id = list[0]
            .1
            .iter()
            .find(|b| b.reach == Reach::Flow(5))
            .unwrap()
            .id;
        assert_eq!(
            sim.core
                .remove_bindings(sim.now, "sip:nobody@localhost", None),
            0
        );
        assert_eq!(
            sim.core
                .remove_bindings(sim.now, "sip:carol@localhost", Some(ws_id)),
            1
        );
        assert!(matches!(sim.core.poll_event(), Some(Event::BindingRemoved(b)) if b.id == ws_id));
        assert_eq!(
            sim.core
                .remove_bindings(sim.now, "sip:carol@localhost", None),
            1
        );
        assert_eq!(sim.core.stats().bindings, 0);
        // Known a while: 480 to its callers, not 404.
        let out = sim.feed(browser(9), CALL);
        assert_eq!(response(&out[0].1).status, 480, "{out:?}");
    }
}
