//! SIP through the real binary: registrations, messages and calls between browsers
//! (WebSocket) and phones (UDP, TCP), with scripted user agents that show exactly
//! what crosses the wire.

use std::time::Duration;

use sipwasm::sip::headers::HeaderName;
use sipwasm::sip::{Essentials, Response};
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::*;

async fn registered(mut ua: Ua) -> Ua {
    let r = ua.register(600).await;
    assert_eq!(r.status, 200, "{} registers", ua.user);
    ua
}

#[tokio::test]
async fn register_refresh_query_and_unregister_over_ws_udp_and_tcp() {
    let s = Server::standard("");
    for mut ua in [
        Ua::ws(&s, "wsuser").await,
        Ua::udp(&s, "udpuser").await,
        Ua::tcp(&s, "tcpuser").await,
    ] {
        let r = ua.register(600).await;
        assert_eq!(r.status, 200);
        // The registrar's Date (RFC 3261 10.3 step 8): phones set their clocks from it.
        let date = r.headers.get(&HeaderName::Date).expect("Date in the 200");
        let date = httpdate::parse_http_date(date).expect("an HTTP-date");
        let skew = match std::time::SystemTime::now().duration_since(date) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(skew < Duration::from_secs(60), "Date off by {skew:?}");
        let contacts: Vec<&str> = r.headers.values(&HeaderName::Contact).collect();
        assert_eq!(contacts.len(), 1, "{contacts:?}");
        assert!(
            contacts[0].contains(";expires=600") || contacts[0].contains(";expires=599"),
            "{contacts:?}"
        );
        // Refresh with a shorter time.
        let r = ua.register(300).await;
        assert!(
            r.headers
                .get(&HeaderName::Contact)
                .unwrap()
                .contains("expires=30")
        );
        // Too short: 423 with Min-Expires.
        let r = ua.register(5).await;
        assert_eq!(r.status, 423);
        assert_eq!(r.headers.get(&HeaderName::MinExpires), Some("60"));
        // Unregister: no contacts left.
        let r = ua.register(0).await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get(&HeaderName::Contact).is_none());
    }
}

#[tokio::test]
async fn outbound_registration_gets_require_flow_timer_and_gruus() {
    let s = Server::standard("");
    let mut ua = Ua::ws(&s, "obuser").await;
    ua.instance = Some("urn:uuid:00000000-0000-4000-8000-000000000001".into());
    let r = ua.register(600).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get(&HeaderName::Require), Some("outbound"));
    assert_eq!(r.headers.get(&HeaderName::FlowTimer), Some("120"));
    let contact = r.headers.get(&HeaderName::Contact).unwrap();
    assert!(contact.contains(
        "pub-gruu=\"sip:obuser@localhost;gr=urn:uuid:00000000-0000-4000-8000-000000000001\""
    ));
    let temp_gruu = |r: &Response| {
        let contact = r.headers.get(&HeaderName::Contact).unwrap();
        let (_, rest) = contact.split_once("temp-gruu=\"").expect("a temp-gruu");
        let (uri, _) = rest.split_once('"').unwrap();
        assert!(
            uri.starts_with("sip:tgruu.") && uri.ends_with("@localhost;gr"),
            "{uri}"
        );
        uri.to_string()
    };
    // Each refresh hands out a new temporary GRUU, and all of them reach the browser
    // while it stays registered under the same Call-ID (RFC 5627 3.2).
    let first = temp_gruu(&r);
    let r = ua.register(600).await;
    assert_eq!(r.status, 200);
    let second = temp_gruu(&r);
    assert_ne!(first, second);
    let mut phone = Ua::udp(&s, "gruucaller").await;
    for (n, uri) in [&first, &second].into_iter().enumerate() {
        let (text, _) = phone.request("MESSAGE", uri, "", &format!("via temp GRUU {n}"));
        phone.send(&text).await;
        let m = ua.recv_request("MESSAGE").await;
        assert_eq!(m.body.as_ref(), format!("via temp GRUU {n}").as_bytes());
        ua.send(&ua.response(&m, 200, "", "")).await;
        assert_eq!(phone.recv_final().await.status, 200);
    }
    // Registered again under a new Call-ID (a reloaded page): the old ones are gone,
    // the new one works.
    let text = ua
        .register_text(600)
        .replace("Call-ID: reg-", "Call-ID: again-");
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 200);
    let third = temp_gruu(&r);
    for old in [&first, &second] {
        let (text, _) = phone.request("MESSAGE", old, "", "stale");
        phone.send(&text).await;
        assert_eq!(phone.recv_final().await.status, 404, "{old}");
    }
    let (text, _) = phone.request("MESSAGE", &third, "", "fresh");
    phone.send(&text).await;
    let m = ua.recv_request("MESSAGE").await;
    ua.send(&ua.response(&m, 200, "", "")).await;
    assert_eq!(phone.recv_final().await.status, 200);
    // Registering a GRUU of its own as a Contact would loop: 403 (RFC 5627 5.1).
    let text = ua.register_text(600);
    let own = text.replacen(&format!("<{}>", ua.contact()), &format!("<{third}>"), 1);
    assert_ne!(own, text);
    ua.send(&own).await;
    assert_eq!(ua.recv_final().await.status, 403);
}

#[tokio::test]
async fn a_registration_through_an_edge_proxy_keeps_its_path() {
    // Only a trusted peer may register with a Path (the egress rule): the edge is on
    // 127.0.0.2, which the operator names.
    let s = Server::standard("[sip]\ntrusted-peers = [\"127.0.0.2\"]\n");
    // A UDP socket playing an edge proxy that registers a phone behind it and puts
    // itself in Path (RFC 3327); the phone's Contact is the edge's own address.
    let mut edge = Ua::udp_from(&s, "behind", "127.0.0.2").await;
    // The edge receives on another socket than it sends from (a multi-homed edge):
    // its Path names that one.
    let mut edge_in = Ua::udp_from(&s, "edge-in", "127.0.0.2").await;
    let path = format!("<sip:{};lr>", edge_in.host);
    let with_path = |text: String, supported: &str| {
        text.replace(
            "Supported: path, gruu\r\n",
            &format!("Supported: {supported}\r\nPath: {path}\r\n"),
        )
    };
    // The UA did not announce the extension: the proxy inserted itself on its own,
    // which RFC 3327 5.3 recommends refusing with 420.
    let text = with_path(edge.register_text(600), "gruu");
    edge.send(&text).await;
    let r = edge.recv_final().await;
    assert_eq!(r.status, 420);
    assert_eq!(r.headers.get(&HeaderName::Unsupported), Some("path"));
    // Announced: bound, and the Path comes back in the 200.
    let text = with_path(edge.register_text(600), "path, gruu");
    edge.send(&text).await;
    let r = edge.recv_final().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get(&HeaderName::Path), Some(path.as_str()));
    // Outbound through an edge whose Path lacks `ob` (it keeps no flows): 439, as RFC
    // 5626 section 6 says, instead of a binding the edge could not reach.
    edge.instance = Some("urn:uuid:00000000-0000-4000-8000-0000000000ed".into());
    let text = edge
        .register_text(600)
        .replace(
            "Supported: path, gruu, outbound\r\n",
            &format!("Supported: path, outbound\r\nPath: {path}\r\n"),
        )
        .replacen(
            ";rport\r\n",
            ";rport\r\nVia: SIP/2.0/UDP 10.0.0.8:5060;branch=z9hG4bKphone\r\n",
            1,
        );
    edge.send(&text).await;
    let r = edge.recv_final().await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (439, "First Hop Lacks Outbound Support")
    );
    edge.instance = None;
    // A browser's MESSAGE for the phone goes to the edge where its Path says, with the
    // Path as Route.
    let mut browser = Ua::ws(&s, "sender").await;
    let (text, _) = browser.request("MESSAGE", "behind", "", "through the edge");
    browser.send(&text).await;
    let m = edge_in.recv_request("MESSAGE").await;
    assert_eq!(m.headers.get(&HeaderName::Route), Some(path.as_str()));
    assert_eq!(m.uri.to_string(), format!("sip:behind@{}", edge.host));
    edge_in.send(&edge_in.response(&m, 200, "", "")).await;
    assert_eq!(browser.recv_final().await.status, 200);
    assert!(edge.quiet_for(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn a_reloaded_page_replaces_its_registration() {
    let s = Server::standard("");
    let instance = "urn:uuid:00000000-0000-4000-8000-0000000000aa";
    let mut first = Ua::ws(&s, "reload").await;
    first.instance = Some(instance.into());
    assert_eq!(first.register(600).await.status, 200);
    // The page reloads: a new connection, a new contact, the same instance and reg-id.
    let mut second = Ua::ws(&s, "reload").await;
    second.instance = Some(instance.into());
    let r = second.register(600).await;
    assert_eq!(
        r.headers.values(&HeaderName::Contact).count(),
        1,
        "replaced, not piled up"
    );
    // Calls reach the new page only.
    let mut caller = Ua::udp(&s, "caller").await;
    let (text, _) = caller.request("MESSAGE", "reload", "", "hi");
    caller.send(&text).await;
    let m = second.recv_request("MESSAGE").await;
    second.send(&second.response(&m, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
    assert!(first.quiet_for(Duration::from_millis(200)).await.is_none());
}

/// Requests sent back to back, without waiting for answers.
const BURST: u32 = 100;

/// Many browsers and phones at once, each sending a burst of REGISTERs without waiting:
/// every one is answered 200, each UA's in the order sent. The core takes inputs from
/// whichever task runs it through one queue, and a connection has a bounded number of
/// requests in the core at a time, so its answers fit its send queue: an input left
/// behind or an answer dropped would hang here, one taken out of order would get 500
/// (a CSeq lower than the binding's) or show below.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_from_many_connections_at_once_are_all_answered_in_order() {
    let s = Server::standard("");
    let mut uas = Vec::new();
    for i in 0..24 {
        let user = format!("burst{i}");
        uas.push(match i % 3 {
            0 => Ua::ws(&s, &user).await,
            1 => Ua::tcp(&s, &user).await,
            _ => Ua::udp(&s, &user).await,
        });
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(uas.len()));
    let mut tasks = Vec::new();
    for mut ua in uas {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let texts: Vec<String> = (0..BURST).map(|_| ua.register_text(600)).collect();
            // All start together, so the server sees the bursts interleaved.
            start.wait().await;
            for text in &texts {
                ua.send(text).await;
            }
            let mut cseqs = Vec::new();
            for _ in 0..BURST {
                let r = ua.recv_final().await;
                assert_eq!(r.status, 200, "{}: {}", ua.user, r.reason);
                let cseq = r.headers.get(&HeaderName::CSeq).unwrap_or_default();
                let n: u32 = cseq.split(' ').next().unwrap_or("").parse().unwrap_or(0);
                cseqs.push(n);
            }
            let first = cseqs[0];
            let expected: Vec<u32> = (first..first + BURST).collect();
            assert_eq!(cseqs, expected, "{}: answers in the order sent", ua.user);
            ua.user
        }));
    }
    for task in tasks {
        let user = within("a burst answered", task).await.expect("burst task");
        assert!(user.starts_with("burst"));
    }
    assert_eq!(s.metric("sipwasm_sip_send_queue_full_total").await, 0);
}

async fn message(from: &mut Ua, to: &mut Ua) {
    let (text, _) = from.request("MESSAGE", &to.user.clone(), "", "hello there");
    from.send(&text).await;
    let m = to.recv_request("MESSAGE").await;
    assert_eq!(&m.body[..], b"hello there");
    assert_eq!(m.headers.get(&HeaderName::MaxForwards), Some("69"));
    to.send(&to.response(&m, 200, "", "")).await;
    let r = from.recv_final().await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.vias().unwrap().len(),
        1,
        "only the sender's Via comes back"
    );
}

#[tokio::test]
async fn messages_ws_to_ws_ws_to_udp_and_udp_to_ws() {
    let s = Server::standard("");
    let mut a = registered(Ua::ws(&s, "ann").await).await;
    let mut b = registered(Ua::ws(&s, "ben").await).await;
    let mut p = registered(Ua::udp(&s, "pat").await).await;
    let mut t = registered(Ua::tcp(&s, "tom").await).await;
    message(&mut a, &mut b).await;
    message(&mut a, &mut p).await;
    message(&mut p, &mut a).await;
    message(&mut t, &mut a).await;
    message(&mut a, &mut t).await;
}

/// A whole call: INVITE, 180, 200, ACK, then BYE from `hangup_by_caller`'s side.
async fn call(caller: &mut Ua, callee: &mut Ua, hangup_by_caller: bool) {
    let (invite, dialog) = caller.request("INVITE", &callee.user.clone(), "", SDP);
    caller.send(&invite).await;
    let inv = callee.recv_request("INVITE").await;
    assert!(
        inv.headers.values(&HeaderName::RecordRoute).count() >= 1,
        "record-routed"
    );
    callee.send(&callee.response(&inv, 180, "", "")).await;
    caller.recv_status(180).await;
    callee.send(&callee.response(&inv, 200, "", SDP)).await;
    let ok = caller.recv_status(200).await;
    let mut cd = caller.dialog_as_caller(dialog, &ok);
    let mut ed = callee.dialog_as_callee(&inv);
    let ack = caller.in_dialog(&mut cd, "ACK", Some(1));
    caller.send(&ack).await;
    let got = callee.recv_request("ACK").await;
    assert_eq!(got.call_id(), inv.call_id());
    if hangup_by_caller {
        let bye = caller.in_dialog(&mut cd, "BYE", None);
        caller.send(&bye).await;
        let b = callee.recv_request("BYE").await;
        callee.send(&callee.response(&b, 200, "", "")).await;
        assert_eq!(caller.recv_final().await.status, 200);
    } else {
        let bye = callee.in_dialog(&mut ed, "BYE", None);
        callee.send(&bye).await;
        let b = caller.recv_request("BYE").await;
        caller.send(&caller.response(&b, 200, "", "")).await;
        assert_eq!(callee.recv_final().await.status, 200);
    }
}

#[tokio::test]
async fn calls_between_browsers_and_phones_with_each_side_hanging_up() {
    let s = Server::standard("");
    let mut a = registered(Ua::ws(&s, "alice").await).await;
    let mut b = registered(Ua::ws(&s, "bob").await).await;
    let mut p = registered(Ua::udp(&s, "phone").await).await;
    let mut t = registered(Ua::tcp(&s, "tcpphone").await).await;
    for hangup_by_caller in [true, false] {
        call(&mut a, &mut b, hangup_by_caller).await;
        call(&mut a, &mut p, hangup_by_caller).await;
        call(&mut p, &mut a, hangup_by_caller).await;
        call(&mut t, &mut b, hangup_by_caller).await;
        call(&mut a, &mut t, hangup_by_caller).await;
    }
}

/// SIP over TLS (`SIP/2.0/TLS`, RFC 3261 26.2): a phone on the TLS listener registers,
/// exchanges messages with a browser and a UDP phone, and calls them both ways, each
/// side hanging up; requests reach it over its own connection.
#[tokio::test]
async fn tls_phones_register_message_and_call() {
    let s = Server::standard("");
    let mut t = registered(Ua::tls(&s, "tlsphone").await).await;
    let mut a = registered(Ua::ws(&s, "webpal").await).await;
    let mut p = registered(Ua::udp(&s, "udppal").await).await;
    message(&mut t, &mut a).await;
    message(&mut a, &mut t).await;
    message(&mut p, &mut t).await;
    // What reaches the TLS phone came over TLS: the server's own Via says so.
    let (text, _) = a.request("MESSAGE", "tlsphone", "", "via?");
    a.send(&text).await;
    let m = t.recv_request("MESSAGE").await;
    let top = m.headers.get(&HeaderName::Via).unwrap();
    assert!(top.starts_with("SIP/2.0/TLS 127.0.0.1:"), "{top}");
    t.send(&t.response(&m, 200, "", "")).await;
    assert_eq!(a.recv_final().await.status, 200);
    for hangup_by_caller in [true, false] {
        call(&mut a, &mut t, hangup_by_caller).await;
        call(&mut t, &mut a, hangup_by_caller).await;
        call(&mut t, &mut p, hangup_by_caller).await;
    }
    // The transport changes between the browser and the TLS phone: two Record-Routes,
    // the one facing the phone for TLS.
    let (invite, _) = a.request("INVITE", "tlsphone", "", SDP);
    a.send(&invite).await;
    let inv = t.recv_request("INVITE").await;
    let rr: Vec<&str> = inv.headers.values(&HeaderName::RecordRoute).collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(
        rr[0].contains(&format!("127.0.0.1:{};transport=tls;lr", s.tls.port())),
        "{rr:?}"
    );
    t.send(&t.response(&inv, 486, "", "")).await;
    assert_eq!(a.recv_final().await.status, 486);
}

#[tokio::test]
async fn cancel_gets_487_and_busy_486_passes_back() {
    let s = Server::standard("");
    let mut a = registered(Ua::ws(&s, "canceller").await).await;
    let mut p = registered(Ua::udp(&s, "ringing").await).await;
    let (invite, _) = a.request("INVITE", "ringing", "", SDP);
    a.send(&invite).await;
    let inv = p.recv_request("INVITE").await;
    p.send(&p.response(&inv, 180, "", "")).await;
    a.recv_status(180).await;
    // The caller gives up.
    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
                SDP.len()
            ),
            "Content-Length: 0\r\n\r\n",
        );
    a.send(&cancel).await;
    let c = p.recv_request("CANCEL").await;
    p.send(&p.response(&c, 200, "", "")).await;
    p.send(&p.response(&inv, 487, "", "")).await;
    // The callee gets the hop-by-hop ACK for its 487.
    p.recv_request("ACK").await;
    let mut statuses = vec![];
    for _ in 0..2 {
        statuses.push(a.recv_final().await.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 487],
        "200 for the CANCEL, 487 for the INVITE"
    );

    // Busy.
    let (invite, _) = a.request("INVITE", "ringing", "", SDP);
    a.send(&invite).await;
    let inv = p.recv_request("INVITE").await;
    p.send(&p.response(&inv, 486, "", "")).await;
    p.recv_request("ACK").await;
    assert_eq!(a.recv_final().await.status, 486);
}

#[tokio::test]
async fn unknown_user_404_and_a_vanished_browser_480() {
    let s = Server::standard("");
    let mut p = Ua::udp(&s, "caller404").await;
    let (invite, _) = p.request("INVITE", "nosuchuser", "", SDP);
    p.send(&invite).await;
    assert_eq!(p.recv_final().await.status, 404);

    let gone = registered(Ua::ws(&s, "gone").await).await;
    gone.vanish().await;
    // Its binding goes with its connection: the caller gets 480, not a hang.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (invite, _) = p.request("INVITE", "gone", "", SDP);
        p.send(&invite).await;
        let status = p.recv_final().await.status;
        if status == 480 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn udp_retransmissions_are_absorbed() {
    let s = Server::standard("");
    let mut callee = registered(Ua::ws(&s, "absorb").await).await;
    let mut p = Ua::udp(&s, "retransmitter").await;
    let (invite, _) = p.request("INVITE", "absorb", "", SDP);
    for _ in 0..3 {
        p.send(&invite).await;
    }
    let inv = callee.recv_request("INVITE").await;
    assert!(
        callee.quiet_for(Duration::from_millis(300)).await.is_none(),
        "one INVITE reaches the callee"
    );
    callee.send(&callee.response(&inv, 486, "", "")).await;
    assert_eq!(p.recv_status(486).await.status, 486);
}

#[tokio::test]
async fn udp_registrations_survive_a_restart_and_ws_ones_do_not() {
    let mut s = Server::standard("");
    let mut phone = Ua::udp(&s, "persistent").await;
    // With a feature tag (RFC 3840), which is part of the binding.
    let text = phone
        .register_text(600)
        .replace(";expires=600", ";expires=600;+sip.ice");
    phone.send(&text).await;
    assert_eq!(phone.recv_final().await.status, 200);
    let browser = registered(Ua::ws(&s, "ephemeral").await).await;
    drop(browser);
    let s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    assert!(
        s.wait_for_log("restored UDP registrations").await,
        "{}",
        s.logs()
    );
    // A query (a REGISTER without Contact) lists the restored binding as registered.
    let query: String = phone
        .register_text(600)
        .split_inclusive("\r\n")
        .filter(|line| !line.starts_with("Contact:"))
        .collect();
    phone.send(&query).await;
    let r = phone.recv_final().await;
    assert_eq!(r.status, 200);
    let contact = r.headers.get(&HeaderName::Contact).unwrap_or("");
    assert!(contact.ends_with(";+sip.ice"), "{contact}");
    let mut caller = Ua::udp(&s, "wakeup").await;
    let (text, _) = caller.request("MESSAGE", "persistent", "", "still there?");
    caller.send(&text).await;
    let m = phone.recv_request("MESSAGE").await;
    phone.send(&phone.response(&m, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
    let (text, _) = caller.request("MESSAGE", "ephemeral", "", "gone?");
    caller.send(&text).await;
    assert_eq!(
        caller.recv_final().await.status,
        404,
        "WS bindings are not restored"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_header_and_garbage_is_dropped() {
    let s = Server::standard("");
    for mut ua in [
        Ua::udp(&s, "sloppy").await,
        Ua::ws(&s, "sloppyweb").await,
        Ua::tcp(&s, "sloppytcp").await,
    ] {
        let (text, _) = ua.request("MESSAGE", "someone", "", "x");
        let bad = text.replace("Max-Forwards: 70", "Max-Forwards: lots");
        ua.send(&bad).await;
        let r = ua.recv_final().await;
        assert_eq!(r.status, 400);
        assert_eq!(r.reason, "Bad Header: Max-Forwards");
        // Garbage without Via/Call-ID/CSeq gets nothing back.
        if ua.transport != "TCP" {
            ua.send("HELLO sip:x SIP/2.0\r\nFoo: bar\r\n\r\n").await;
            assert!(ua.quiet_for(Duration::from_millis(200)).await.is_none());
        }
    }
}
