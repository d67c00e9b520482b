#![no_main]
//! The SIP core fed any sequence of messages from a UDP phone, two browser connections
//! and a TCP connection, with a user registered on each kind of flow. The input is cut
//! into messages at NUL bytes; the first byte of each picks the source (low two bits),
//! how many seconds pass before it (next five) and whether its connection closes
//! instead (top bit). Every call's media goes through one of two engines, whose
//! answers (a rewritten SDP, no answer, a refusal) take turns. The core never panics,
//! everything it sends parses as SIP, and once every timer has run no transaction,
//! response context, routing query or media wait is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sipwasm_fuzz::core::registrar::RegistrarConfig;
use sipwasm_fuzz::core::transaction::TimerConfig;
use sipwasm_fuzz::core::{
    Core, CoreConfig, FlowId, Incoming, Input, Myself, SipListener, Source, Transport,
};
use sipwasm_fuzz::media::{MediaOutcome, Mode, Settings};
use sipwasm_fuzz::sip;

const UDP: &str = "127.0.0.1:5060";
const TCP: &str = "127.0.0.1:5060";
const WS: &str = "127.0.0.1:8080";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn source(pick: u8) -> Source {
    match pick & 3 {
        0 => Source {
            transport: Transport::Udp,
            local: addr(UDP),
            remote: addr("127.0.0.1:5070"),
            flow: None,
        },
        n @ (1 | 2) => Source {
            transport: Transport::Ws,
            local: addr(WS),
            remote: SocketAddr::from(([127, 0, 0, 1], 40000 + u16::from(n))),
            flow: Some(FlowId::from(n)),
        },
        _ => Source {
            transport: Transport::Tcp,
            local: addr(TCP),
            remote: addr("127.0.0.1:40003"),
            flow: Some(3),
        },
    }
}

struct Run {
    core: Core,
    now: Instant,
}

impl Run {
    fn drain(&mut self) {
        for _ in 0..1000 {
            while let Some(t) = self.core.poll_transmit() {
                if let Err(e) = sip::parse(&t.payload) {
                    panic!(
                        "the core sent a message that does not parse ({e}):\n{}",
                        String::from_utf8_lossy(&t.payload)
                    );
                }
            }
            while self.core.poll_event().is_some() {}
            let Some(req) = self.core.poll_media() else {
                return;
            };
            if req.id == 0 {
                continue;
            }
            let outcome = match req.id % 3 {
                0 => MediaOutcome::Sdp(
                    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                      m=audio 30000 RTP/AVP 0\r\n"
                        .to_vec(),
                ),
                1 => MediaOutcome::Unavailable("no answer".into()),
                _ => MediaOutcome::Refused("Failed to parse SDP".into()),
            };
            self.core.handle(self.now, Input::Media { id: req.id, outcome });
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.core.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn feed(&mut self, source: Source, bytes: &[u8]) {
        if let Ok(message) = sip::parse(bytes) {
            self.core.handle(
                self.now,
                Input::Message(Box::new(Incoming::new(source, message))),
            );
            self.drain();
        }
    }
}

fn register(user: &str, pick: u8, contact: &str) -> String {
    let s = source(pick);
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bKreg{pick};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=r{pick}\r\nTo: <sip:{user}@localhost>\r\n\
         Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nSupported: outbound, gruu\r\n\
         Contact: <{contact}>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000000{pick}>\";reg-id=1\r\n\r\n",
        s.transport.via_token(),
        s.remote,
    )
}

fuzz_target!(|data: &[u8]| {
    let listeners = vec![
        SipListener {
            transport: Transport::Udp,
            addr: addr(UDP),
        },
        SipListener {
            transport: Transport::Tcp,
            addr: addr(TCP),
        },
        SipListener {
            transport: Transport::Ws,
            addr: addr(WS),
        },
    ];
    let mut run = Run {
        core: Core::new(CoreConfig {
            myself: Arc::new(Myself::new(
                &["localhost".into()],
                &[addr(UDP), addr(TCP), addr(WS)],
            )),
            listeners,
            server_header: "fuzz".into(),
            secret: [7; 32],
            timers: TimerConfig::default(),
            registrar: RegistrarConfig::default(),
            relay: false,
            trusted: sipwasm_fuzz::core::peers::TrustedPeers::default(),
            limits: sipwasm_fuzz::core::CoreLimits::default(),
            media: Settings {
                mode: Mode::Always,
                ..Settings::default()
            },
            gateways: Vec::new(),
            cluster: None,
        }),
        now: Instant::now(),
    };
    run.core.set_media_engines(vec![1, 1]);
    // Someone to call on each kind of flow.
    run.feed(source(0), register("phone", 0, "sip:phone@127.0.0.1:5070").as_bytes());
    run.feed(source(1), register("web", 1, "sip:w1@w1.invalid;transport=ws").as_bytes());
    run.feed(source(2), register("web", 2, "sip:w2@w2.invalid;transport=ws").as_bytes());
    run.feed(source(3), register("desk", 3, "sip:desk@127.0.0.1:40003;transport=tcp").as_bytes());

    let mut closed = [false; 4];
    for (i, chunk) in data.split(|&b| b == 0).enumerate() {
        if i >= 64 {
            break;
        }
        let Some((&pick, message)) = chunk.split_first() else {
            continue;
        };
        run.advance(Duration::from_secs(u64::from((pick >> 2) & 0x1f)));
        let which = usize::from(pick & 3);
        if closed[which] {
            continue;
        }
        if pick & 0x80 != 0 && which != 0 {
            closed[which] = true;
            run.core.handle(run.now, Input::FlowClosed(which as FlowId));
            run.drain();
            continue;
        }
        run.feed(source(pick), message);
    }
    // Every wait state, timer C and the registrations' expiry are over.
    run.advance(Duration::from_secs(4000));
    let stats = run.core.stats();
    assert_eq!(stats.server_transactions, 0, "{stats:?}");
    assert_eq!(stats.client_transactions, 0, "{stats:?}");
    assert_eq!(stats.proxied, 0, "{stats:?}");
    assert_eq!(stats.routing, 0, "{stats:?}");
    assert_eq!(stats.media_waiting, 0, "{stats:?}");
});
