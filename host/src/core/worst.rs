//! The costliest messages one datagram can carry (64 KB at most), one per step of the
//! core that could be made to work more than linearly: thousands of Contacts, Contacts
//! with thousands of parameters, Vias, Route entries naming us, challenges in forked
//! responses. The unit tests check each gets its answer; `sipwasm-bench worst` times
//! each through a real core in a release build (the README quotes the figures). Sans-IO:
//! texts and the order to feed them, nothing more.

/// Where a case's message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The attacker, a UDP client.
    Attacker,
    /// The first registered phone (UDP, `127.0.0.1:5070`): a callee's response.
    PhoneA,
    /// The second registered phone (UDP, `127.0.0.1:5071`).
    PhoneB,
}

/// One hostile input: set-up messages, then the message timed.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name (`contacts`, `vias`...).
    pub name: &'static str,
    /// Fed first (registrations and the like), not timed.
    pub setup: Vec<(From, String)>,
    /// The timed message, and who sends it.
    pub message: (From, String),
    /// The status of the answer it must get (`None`: it is a response, relayed on).
    pub expect: Option<u16>,
}

/// The largest datagram these cases fill.
pub const MAX: usize = 65_000;

fn register(user: &str, port: u16, branch: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=w{branch}\r\nTo: <sip:{user}@localhost>\r\n\
         Call-ID: worst-{branch}\r\nCSeq: 1 REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Grows `unit` (its index substituted for `{}`) until `fixed + the units` nearly fill
/// [`MAX`]; returns the units joined by `sep`.
fn fill(fixed: usize, sep: &str, unit: impl Fn(usize) -> String) -> String {
    let mut out = String::new();
    for i in 0.. {
        let u = unit(i);
        if fixed + out.len() + sep.len() + u.len() > MAX {
            break;
        }
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&u);
    }
    out
}

/// Every case.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Thousands of distinct Contacts: refused before any is parsed.
    let contacts = fill(400, ",", |i| format!("sip:{i}@h"));
    cases.push(Case {
        name: "contacts",
        setup: vec![],
        message: (
            From::Attacker,
            register("many", 5090, "c", &format!("Contact: {contacts}\r\n")),
        ),
        expect: Some(403),
    });

    // Two Contacts with thousands of parameters each, the same URI: compared once.
    let params = fill(600, "", |i| format!(";p{i}=v"))
        .chars()
        .take(MAX / 2 - 400)
        .collect::<String>();
    let params = &params[..params.rfind(';').unwrap_or(0)];
    cases.push(Case {
        name: "contact-parameters",
        setup: vec![],
        message: (
            From::Attacker,
            register(
                "params",
                5090,
                "p",
                &format!("Contact: <sip:a@10.0.0.1{params}>, <sip:a@10.0.0.1{params}>\r\n"),
            ),
        ),
        expect: Some(200),
    });

    // Thousands of Vias on a request to be forwarded: each looked at once (loop
    // detection), never pairwise.
    let vias = fill(600, ",", |i| {
        format!(
            "SIP/2.0/UDP 10.{}.{}.1;branch=z9hG4bKv{i}",
            i / 250 % 250,
            i % 250
        )
    });
    cases.push(Case {
        name: "vias",
        setup: vec![(
            From::PhoneA,
            register("callee", 5070, "rv", "Contact: <sip:callee@127.0.0.1:5070>\r\n"),
        )],
        message: (
            From::Attacker,
            format!(
                "MESSAGE sip:callee@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKvm;rport\r\n\
                 Via: {vias}\r\nMax-Forwards: 70\r\nFrom: <sip:x@localhost>;tag=v\r\nTo: <sip:callee@localhost>\r\n\
                 Call-ID: worst-v\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            ),
        ),
        expect: None,
    });

    // Thousands of Route entries naming us: a few are popped, then it is a loop (482).
    let routes = fill(400, ",", |_| "<sip:127.0.0.1:5060;lr>".to_string());
    cases.push(Case {
        name: "routes",
        setup: vec![],
        message: (
            From::Attacker,
            format!(
                "MESSAGE sip:callee@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKrm;rport\r\n\
                 Route: {routes}\r\nMax-Forwards: 70\r\nFrom: <sip:x@localhost>;tag=r\r\nTo: <sip:callee@localhost>\r\n\
                 Call-ID: worst-r\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            ),
        ),
        expect: Some(482),
    });

    // A forked request whose branches both answer 407 with as many challenges as a
    // message may hold: aggregated without a pairwise walk.
    let challenge = |branch: char| {
        move |i: usize| {
            format!(
                "Proxy-Authenticate: Digest realm=\"r{branch}{i}\", nonce=\"{}\", qop=\"auth\"\r\n",
                "n".repeat(260)
            )
        }
    };
    let many_a = fill(600, "", challenge('a'));
    let many_b = fill(600, "", challenge('b'));
    cases.push(Case {
        name: "challenges",
        setup: vec![
            (
                From::PhoneA,
                register("forked", 5070, "fa", "Contact: <sip:forked@127.0.0.1:5070>\r\n"),
            ),
            (
                From::PhoneB,
                register("forked", 5071, "fb", "Contact: <sip:forked@127.0.0.1:5071>\r\n"),
            ),
            (
                From::Attacker,
                "MESSAGE sip:forked@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKfm;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:x@localhost>;tag=f\r\nTo: <sip:forked@localhost>\r\n\
                 Call-ID: worst-f\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
                    .to_string(),
            ),
            // PhoneA's 407 (its Via is filled in by `answer_to_branch`).
            (From::PhoneA, many_a),
        ],
        message: (From::PhoneB, many_b),
        expect: Some(407),
    });
    cases
}

/// A 407 answering the request `forwarded` (as a callee sends it), with `challenges`
/// (`Proxy-Authenticate` lines) added.
pub fn answer_to_branch(forwarded: &crate::sip::message::Request, challenges: &str) -> String {
    use crate::sip::headers::HeaderName;
    let mut s = String::from("SIP/2.0 407 Proxy Authentication Required\r\n");
    for v in forwarded.headers.get_all(&HeaderName::Via) {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    for name in [HeaderName::From, HeaderName::CallId, HeaderName::CSeq] {
        if let Some(v) = forwarded.headers.get(&name) {
            s.push_str(&format!("{}: {v}\r\n", name.as_str()));
        }
    }
    if let Some(to) = forwarded.headers.get(&HeaderName::To) {
        s.push_str(&format!("To: {to};tag=callee\r\n"));
    }
    s.push_str(challenges);
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// The address each sender has (the listener is the caller's).
pub fn source(from: From, local: std::net::SocketAddr) -> super::Source {
    let port = match from {
        From::Attacker => 5090,
        From::PhoneA => 5070,
        From::PhoneB => 5071,
    };
    super::Source {
        transport: super::Transport::Udp,
        local,
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        flow: None,
    }
}

/// Feeds `case`'s set-up to `core` (a core whose domain is `localhost`, with a UDP
/// listener at `local`) and returns the input to time: the case's message, as the
/// sender would send it (a response answers the branch forwarded to it).
pub fn prepare(
    core: &mut super::Core,
    case: &Case,
    local: std::net::SocketAddr,
    now: std::time::Instant,
) -> Result<super::Input, String> {
    use crate::sip::message::Message;
    // Requests the core forwarded, by the port they went to.
    let mut forwarded: Vec<(u16, crate::sip::message::Request)> = Vec::new();
    let input_of = |from: From, text: &str, forwarded: &[(u16, crate::sip::message::Request)]| {
        let src = source(from, local);
        let text = match (from, text.starts_with("SIP/2.0")) {
            (From::PhoneA | From::PhoneB, false) if text.starts_with("Proxy-Authenticate") => {
                let to = forwarded
                    .iter()
                    .find(|(p, _)| *p == src.remote.port())
                    .ok_or_else(|| format!("{}: nothing was forwarded to {from:?}", case.name))?;
                answer_to_branch(&to.1, text)
            }
            _ => text.to_string(),
        };
        let message = crate::sip::parse(text.as_bytes())
            .map_err(|e| format!("{}: the message does not parse: {e}", case.name))?;
        Ok::<_, String>(super::Input::Message(Box::new(super::Incoming::new(
            src, message,
        ))))
    };
    for (from, text) in &case.setup {
        let input = input_of(*from, text, &forwarded)?;
        core.handle(now, input);
        while let Some(t) = core.poll_transmit() {
            if let super::Target::Udp { remote, .. } = t.target
                && let Ok(Message::Request(r)) = crate::sip::parse(&t.payload)
            {
                forwarded.push((remote.port(), r));
            }
        }
        while core.poll_event().is_some() {}
    }
    let (from, text) = &case.message;
    input_of(*from, text, &forwarded)
}

/// What the core sent after the timed input: the status of the answer that reached
/// the attacker, if any, and how many messages went out.
pub fn outcome(core: &mut super::Core, local: std::net::SocketAddr) -> (Option<u16>, usize) {
    let attacker = source(From::Attacker, local).remote;
    let (mut status, mut sent) = (None, 0);
    while let Some(t) = core.poll_transmit() {
        sent += 1;
        if matches!(t.target, super::Target::Udp { remote, .. } if remote == attacker)
            && let Ok(crate::sip::message::Message::Response(r)) = crate::sip::parse(&t.payload)
        {
            status = Some(r.status);
        }
    }
    while core.poll_event().is_some() {}
    (status, sent)
}
