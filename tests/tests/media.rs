//! The media relay against a real rtpengine (Debian's, userspace, on loopback): a
//! browser's WebRTC offer reaches a phone as plain RTP and the phone's answer reaches
//! the browser as DTLS-SRTP with ICE; the engine forwards the phone's RTP; every way a
//! call ends leaves no session in the engine; a dead engine fails new calls cleanly.

use std::time::Duration;

use sipwasm::sip::{Essentials, Request};
use sipwasm_tests::rtpengine::{Rtpengine, rtp_packets};
use sipwasm_tests::sip::Ua;
use sipwasm_tests::{Server, within};
use tokio::net::UdpSocket;

/// An offer as Chromium makes it for one audio track (ICE, DTLS-SRTP, rtcp-mux, BUNDLE).
const BROWSER_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 50999 typ host generation 0\r\n\
a=ice-ufrag:Xk3a\r\n\
a=ice-pwd:8Dq2TtZkFQm3hWv0aYy1p9Lc\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n";

/// A desk phone's answer: PCMU over RTP/AVP to `port`.
fn phone_answer(port: u16) -> String {
    format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

fn server_with(engines: &[String], extra: &str) -> Server {
    let list = engines
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Server::standard(&format!("[media]\nengines = [{list}]\n{extra}"))
}

fn body(req_or_resp: &[u8]) -> String {
    String::from_utf8_lossy(req_or_resp).into_owned()
}

/// The audio port an SDP's `m=audio` line names.
fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in:\n{sdp}"))
}

/// alice (WebSocket) calls carol (UDP) with the browser's offer; returns carol's
/// INVITE, alice's dialog start and the call's Call-ID.
async fn browser_calls_phone(
    alice: &mut Ua,
    carol: &mut Ua,
) -> (Request, sipwasm_tests::sip::Dialog, String) {
    let (invite, dialog) = alice.request("INVITE", "carol", "", BROWSER_OFFER);
    alice.send(&invite).await;
    let inv = carol.recv_request("INVITE").await;
    let call_id = inv.call_id().unwrap().to_string();
    (inv, dialog, call_id)
}

#[tokio::test]
async fn a_browser_and_a_phone_meet_through_rtpengine_and_the_call_leaves_nothing() {
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let mut carol = Ua::udp(&server, "carol").await;
    assert_eq!(carol.register(300).await.status, 200);
    let mut alice = Ua::ws(&server, "alice").await;
    assert_eq!(alice.register(300).await.status, 200);

    let (inv, dialog, call_id) = browser_calls_phone(&mut alice, &mut carol).await;
    let offer = body(&inv.body);
    assert!(
        offer.contains(" RTP/AVP "),
        "the phone gets plain RTP:\n{offer}"
    );
    assert!(offer.contains("c=IN IP4 127.0.0.1"), "{offer}");
    for webrtc in [
        "a=ice-ufrag",
        "a=fingerprint",
        "a=setup",
        "a=rtcp-mux",
        "a=crypto",
    ] {
        assert!(
            !offer.contains(webrtc),
            "{webrtc} reached the phone:\n{offer}"
        );
    }
    let engine_port_for_phone = audio_port(&offer);

    // The phone answers; the browser gets DTLS-SRTP with ICE from the engine.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    carol.send(&carol.response(&inv, 180, "", "")).await;
    carol
        .send(&carol.response(&inv, 200, "", &phone_answer(rtp_port)))
        .await;
    alice.recv_status(180).await;
    let ok = alice.recv_status(200).await;
    let answer = body(&ok.body);
    for webrtc in [
        "UDP/TLS/RTP/SAVPF",
        "a=ice-ufrag",
        "a=ice-pwd",
        "a=fingerprint:sha-256",
        "a=rtcp-mux",
        "a=candidate",
        "a=setup:",
    ] {
        assert!(
            answer.contains(webrtc),
            "no {webrtc} for the browser:\n{answer}"
        );
    }
    assert!(
        !answer.contains(&format!(" {rtp_port} ")),
        "the phone's port is hidden:\n{answer}"
    );
    let q = engine
        .query(&call_id)
        .await
        .expect("the engine holds the call");
    assert_eq!(rtp_packets(&q), 0);
    // The engine's own count of its sessions reaches /metrics (asked every 10 s).
    let series = format!("sipwasm_media_sessions{{engine=\"{}\"}}", engine.ng);
    let mut sessions = 0;
    for _ in 0..30 {
        sessions = sipwasm_tests::metric_in(&server.metrics().await, &series).unwrap_or(0);
        if sessions >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(sessions, 1, "{series}");

    // The phone's RTP reaches the engine at the port the engine gave it.
    let packet = {
        let mut p = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        p.extend_from_slice(&[0xff; 160]);
        p
    };
    for seq in 0..20u8 {
        let mut p = packet.clone();
        p[3] = seq;
        rtp.send_to(&p, ("127.0.0.1", engine_port_for_phone))
            .await
            .unwrap();
    }
    let mut counted = 0;
    for _ in 0..50 {
        counted = rtp_packets(&engine.query(&call_id).await.expect("still there"));
        if counted >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        counted >= 20,
        "the engine received {counted} of the phone's 20 packets"
    );

    // ACK and BYE from the browser: the phone hangs up on its side, the engine forgets.
    let mut d = alice.dialog_as_caller(dialog, &ok);
    let ack = alice.in_dialog(&mut d, "ACK", Some(1));
    alice.send(&ack).await;
    carol.recv_request("ACK").await;
    let bye = alice.in_dialog(&mut d, "BYE", None);
    alice.send(&bye).await;
    let bye_in = carol.recv_request("BYE").await;
    carol.send(&carol.response(&bye_in, 200, "", "")).await;
    assert_eq!(alice.recv_final().await.status, 200);
    engine.wait_gone(&call_id).await;
    assert!(
        server
            .metrics()
            .await
            .contains("sipwasm_media_requests_total{engine=")
    );
}

#[tokio::test]
async fn cancel_and_a_refusal_leave_no_session_in_the_engine() {
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let mut carol = Ua::udp(&server, "carol").await;
    carol.register(300).await;
    let mut alice = Ua::ws(&server, "alice").await;
    alice.register(300).await;

    // CANCEL while it rings.
    let (invite, _) = alice.request("INVITE", "carol", "", BROWSER_OFFER);
    alice.send(&invite).await;
    let inv = carol.recv_request("INVITE").await;
    let call_id = inv.call_id().unwrap().to_string();
    carol.send(&carol.response(&inv, 180, "", "")).await;
    alice.recv_status(180).await;
    assert!(engine.query(&call_id).await.is_some());
    let cancel = cancel_of(&invite);
    alice.send(&cancel).await;
    let c = carol.recv_request("CANCEL").await;
    carol.send(&carol.response(&c, 200, "", "")).await;
    carol.send(&carol.response(&inv, 487, "", "")).await;
    carol.recv_request("ACK").await;
    let fin = alice.recv_final().await;
    // The CANCEL's own 200 may come first.
    let fin = if fin.status == 200 {
        alice.recv_final().await
    } else {
        fin
    };
    assert_eq!(fin.status, 487);
    engine.wait_gone(&call_id).await;

    // Busy.
    let (_, _, call_id) = {
        let (invite, dialog) = alice.request("INVITE", "carol", "", BROWSER_OFFER);
        alice.send(&invite).await;
        let inv = carol.recv_request("INVITE").await;
        carol.send(&carol.response(&inv, 486, "", "")).await;
        carol.recv_request("ACK").await;
        assert_eq!(alice.recv_final().await.status, 486);
        (inv.clone(), dialog, inv.call_id().unwrap().to_string())
    };
    engine.wait_gone(&call_id).await;
}

/// The CANCEL for an INVITE we wrote (same Via, From, To, Call-ID, CSeq number).
fn cancel_of(invite: &str) -> String {
    let mut out = String::new();
    let mut lines = invite.split("\r\n");
    let first = lines.next().unwrap();
    out.push_str(&first.replacen("INVITE", "CANCEL", 1));
    out.push_str("\r\n");
    for l in lines {
        let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "to" | "call-id" | "max-forwards" => {
                out.push_str(l);
                out.push_str("\r\n");
            }
            "cseq" => out.push_str(&l.replace("INVITE", "CANCEL").replace("\r", "")),
            _ => {}
        }
        if name == "cseq" {
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_dead_engine_gets_no_calls_and_with_none_left_a_call_gets_500() {
    let mut live = Rtpengine::start().await;
    // An engine that is not there: nothing listens on its port.
    let dead = format!("udp:127.0.0.1:{}", sipwasm_tests::free_port());
    let server = server_with(
        &[dead.clone(), live.engine()],
        "timeout = \"100ms\"\ntries = 2\n",
    );
    assert!(
        within(
            "the dead engine is noticed",
            server.wait_for_log("media engine does not answer ping")
        )
        .await
    );
    let mut carol = Ua::udp(&server, "carol").await;
    carol.register(300).await;
    let mut alice = Ua::ws(&server, "alice").await;
    alice.register(300).await;
    // Every call goes to the live one.
    for _ in 0..3 {
        let (inv, _, call_id) = browser_calls_phone(&mut alice, &mut carol).await;
        assert!(live.query(&call_id).await.is_some());
        carol.send(&carol.response(&inv, 486, "", "")).await;
        carol.recv_request("ACK").await;
        assert_eq!(alice.recv_final().await.status, 486);
        live.wait_gone(&call_id).await;
    }
    // Without any engine: 500 at once, with a reason, and nothing waits.
    live.kill();
    let (invite, _) = alice.request("INVITE", "carol", "", BROWSER_OFFER);
    alice.send(&invite).await;
    let fin = alice.recv_final().await;
    assert_eq!(fin.status, 500, "{fin:?}");
    assert_eq!(fin.reason, "Media Relay Unavailable");
    assert!(carol.quiet_for(Duration::from_millis(300)).await.is_none());
    assert!(server.wait_for_log("media relay failed for a call").await);
    assert_eq!(server.metric("sipwasm_media_waiting").await, 0);
}

/// The call-ids rtpengine holds now (`list`).
async fn engine_calls(engine: &Rtpengine) -> Vec<String> {
    use sipwasm::media::ng::Value;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dict = Value::Dict(vec![(b"command".to_vec(), Value::str("list"))]);
    sock.send_to(&sipwasm::media::ng::request("list1", &dict), engine.ng)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = within("rtpengine list", sock.recv(&mut buf)).await.unwrap();
    let (_, reply) = sipwasm::media::ng::split_reply(&buf[..n]).unwrap();
    match reply.get("calls") {
        Some(Value::List(calls)) => calls.iter().filter_map(Value::as_text).collect(),
        other => panic!("list: {other:?}"),
    }
}

/// Each stream of a call's `query` reply with the tag of the party it belongs to
/// (`tags.TAG.medias[].streams[]`).
fn streams(q: &sipwasm::media::ng::Value) -> Vec<(String, &sipwasm::media::ng::Value)> {
    use sipwasm::media::ng::Value;
    let Some(Value::Dict(tags)) = q.get("tags") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (tag, t) in tags {
        let tag = String::from_utf8_lossy(tag).into_owned();
        let Some(Value::List(medias)) = t.get("medias") else {
            continue;
        };
        for m in medias {
            if let Some(Value::List(streams)) = m.get("streams") {
                out.extend(streams.iter().map(|s| (tag.clone(), s)));
            }
        }
    }
    out
}

/// The engine's local ports for a call's streams.
fn local_ports(q: &sipwasm::media::ng::Value) -> Vec<u16> {
    streams(q)
        .into_iter()
        .filter_map(|(_, s)| s.get("local port")?.as_int())
        .map(|p| p as u16)
        .collect()
}

/// Packets the engine received per party of a call (its streams' `stats.packets`), by
/// the party's tag.
fn packets_by_tag(q: &sipwasm::media::ng::Value) -> Vec<(String, i64)> {
    use sipwasm::media::ng::Value;
    let Some(Value::Dict(tags)) = q.get("tags") else {
        return Vec::new();
    };
    let all = streams(q);
    tags.iter()
        .map(|(tag, _)| {
            let tag = String::from_utf8_lossy(tag).into_owned();
            let n = all
                .iter()
                .filter(|(t, _)| *t == tag)
                .filter_map(|(_, s)| s.get("stats")?.get("packets")?.as_int())
                .sum();
            (tag, n)
        })
        .collect()
}

/// A real browser (JsSIP in headless Chromium, its fake microphone playing a tone) calls
/// a real phone (baresip over UDP, playing a tone): DTLS connects, the phone's audio
/// reaches the browser (packets and audio energy in `getStats()`), the browser's reaches
/// the engine for the phone (its per-party counters), hold and resume from either side
/// keep it, and the
/// phone's hang-up leaves no session.
#[tokio::test]
async fn chromium_and_baresip_hear_each_other_through_rtpengine() {
    use sipwasm_tests::phone::{Phone, Transport};
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let mut phone = Phone::start(&server, "bob", Transport::Udp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut browser = browser_with_tone(&server, dir.path()).await;

    browser
        .cmd(serde_json::json!({"cmd": "call", "target": "bob"}))
        .await;
    phone.expect("CALL_INCOMING").await;
    phone.cmd("accept", "").await;
    phone.expect("CALL_ESTABLISHED").await;
    browser.expect("accepted").await;
    let call_id = the_call(&engine).await;
    // Audio arrives in the browser over a connected DTLS transport; both parties' RTP
    // reaches the engine (the browser's is what the engine forwards to the phone).
    hear_each_other(&mut browser, &engine, &call_id).await;

    // Hold and resume from the browser: re-INVITEs through the engine; audio goes on.
    browser.cmd(serde_json::json!({"cmd": "hold"})).await;
    browser.expect("held").await;
    browser.cmd(serde_json::json!({"cmd": "unhold"})).await;
    browser.expect("resumed").await;
    audio_goes_on(&mut browser, "the browser resumed").await;
    // Hold and resume from the phone: its re-INVITEs reach the browser through the
    // engine as WebRTC offers; audio goes on.
    phone.cmd("hold", "").await;
    assert_eq!(browser.expect("hold").await["by"], "remote");
    phone.cmd("resume", "").await;
    assert_eq!(browser.expect("unhold").await["by"], "remote");
    audio_goes_on(&mut browser, "the phone resumed").await;

    // The phone hangs up; the engine forgets the call.
    phone.cmd("hangup", "").await;
    phone.expect("CALL_CLOSED").await;
    browser.expect("ended").await;
    engine.wait_gone(&call_id).await;
}

/// A browser's call forks to two phones of one user: each branch gets its own leg in
/// the engine (its own ports); the one that answers keeps its media, the one that was
/// cancelled loses its leg and only its leg.
#[tokio::test]
async fn forking_to_two_phones_keeps_the_winner_and_deletes_the_loser() {
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let mut desk = Ua::udp(&server, "carol").await;
    assert_eq!(desk.register(300).await.status, 200);
    let mut mobile = Ua::udp(&server, "carol").await;
    assert_eq!(mobile.register(300).await.status, 200);
    let mut alice = Ua::ws(&server, "alice").await;
    alice.register(300).await;

    let (invite, dialog) = alice.request("INVITE", "carol", "", BROWSER_OFFER);
    alice.send(&invite).await;
    let to_desk = desk.recv_request("INVITE").await;
    let to_mobile = mobile.recv_request("INVITE").await;
    let call_id = to_desk.call_id().unwrap().to_string();
    let (desk_port, mobile_port) = (
        audio_port(&body(&to_desk.body)),
        audio_port(&body(&to_mobile.body)),
    );
    assert_ne!(desk_port, mobile_port, "each branch has its own leg");
    mobile.send(&mobile.response(&to_mobile, 180, "", "")).await;
    alice.recv_status(180).await;

    // The desk phone answers; the mobile's branch is cancelled.
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    desk.send(&desk.response(&to_desk, 200, "", &phone_answer(rtp_port)))
        .await;
    let ok = alice.recv_status(200).await;
    let cancel = mobile.recv_request("CANCEL").await;
    mobile.send(&mobile.response(&cancel, 200, "", "")).await;
    mobile.send(&mobile.response(&to_mobile, 487, "", "")).await;
    mobile.recv_request("ACK").await;
    let mut d = alice.dialog_as_caller(dialog, &ok);
    let ack = alice.in_dialog(&mut d, "ACK", Some(1));
    alice.send(&ack).await;
    desk.recv_request("ACK").await;

    // The mobile's leg goes (the engine holds its port no more), the desk's stays and
    // carries the call.
    let packet = [0x80u8, 0, 0, 1, 0, 0, 0, 160, 0xab, 0xcd, 0xef, 0x01];
    let mut seen = (0, Vec::new());
    for _ in 0..50 {
        rtp.send_to(&packet, ("127.0.0.1", desk_port))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let q = engine.query(&call_id).await.expect("the call goes on");
        seen = (rtp_packets(&q), local_ports(&q));
        if seen.0 >= 10 && !seen.1.contains(&mobile_port) {
            break;
        }
    }
    assert!(
        seen.0 >= 10 && seen.1.contains(&desk_port) && !seen.1.contains(&mobile_port),
        "packets through the desk's leg and the engine's ports ({desk_port} desk, \
         {mobile_port} mobile): {seen:?}"
    );
    let bye = alice.in_dialog(&mut d, "BYE", None);
    alice.send(&bye).await;
    let bye_in = desk.recv_request("BYE").await;
    desk.send(&desk.response(&bye_in, 200, "", "")).await;
    engine.wait_gone(&call_id).await;
}

/// The server with an engine and call-policy as the router, whose `[media]` settings
/// (TOML inline table) choose the media of the calls it lets through.
fn routed_server(engine: &Rtpengine, media: &str) -> Server {
    Server::standard(&format!(
        r#"
[sip]
router = "router"

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
deadline = "2s"

[plugins.router.config]
media = {media}

[media]
engines = ["{}"]
"#,
        engine.engine()
    ))
}

/// The routing plugin decides a call's media (`media.choose`): a call it keeps direct
/// passes its SDP untouched although the mode would relay it; a call it relays gets its
/// flags on top of the configured ones (here: only PCMA toward the phone).
#[tokio::test]
async fn the_routing_plugin_chooses_a_calls_media() {
    let engine = Rtpengine::start().await;
    // Direct.
    let server = routed_server(&engine, r#"{ relay = "direct" }"#);
    let mut carol = Ua::udp(&server, "carol").await;
    carol.register(300).await;
    let mut alice = Ua::ws(&server, "alice").await;
    alice.register(300).await;
    let (inv, _, call_id) = browser_calls_phone(&mut alice, &mut carol).await;
    assert_eq!(body(&inv.body), BROWSER_OFFER, "the SDP goes as it came");
    assert!(engine.query(&call_id).await.is_none());
    carol.send(&carol.response(&inv, 486, "", "")).await;
    carol.recv_request("ACK").await;
    assert_eq!(alice.recv_final().await.status, 486);
    drop((alice, carol, server));

    // Relayed, with the plugin's codec flags toward the phone.
    let server = routed_server(
        &engine,
        r#"{ relay = "relay", toward-plain = ["codec-strip-all", "codec-offer-PCMA"] }"#,
    );
    let mut carol = Ua::udp(&server, "carol").await;
    carol.register(300).await;
    let mut alice = Ua::ws(&server, "alice").await;
    alice.register(300).await;
    let (inv, _, call_id) = browser_calls_phone(&mut alice, &mut carol).await;
    let offer = body(&inv.body);
    let m_line = offer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(
        m_line.ends_with(" RTP/AVP 8"),
        "only PCMA for the phone: {m_line}"
    );
    assert!(engine.query(&call_id).await.is_some());
    carol.send(&carol.response(&inv, 486, "", "")).await;
    carol.recv_request("ACK").await;
    assert_eq!(alice.recv_final().await.status, 486);
    engine.wait_gone(&call_id).await;
}

/// Linphone as the phone: Chromium calls it through the engine; Linphone's tone (a WAV
/// it plays into calls) reaches the browser with DTLS connected, RTP flows both ways
/// through the engine, Linphone's hold and resume (re-INVITEs from the phone's side)
/// keep the media, and its hang-up leaves no session.
#[tokio::test]
async fn chromium_calls_linphone_through_rtpengine() {
    use sipwasm_tests::linphone::Linphone;
    use sipwasm_tests::phone::{Transport, tone_wav};
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("tone.wav");
    std::fs::write(&wav, tone_wav(30)).unwrap();
    let mut lin = Linphone::start(&server, "lin", Transport::Udp).await;
    lin.cmd(&format!("play {}", wav.display())).await;
    let mut browser = browser_with_tone(&server, dir.path()).await;

    browser
        .cmd(serde_json::json!({"cmd": "call", "target": "lin"}))
        .await;
    lin.answer_from("alice").await;
    browser.expect("accepted").await;
    let call_id = the_call(&engine).await;
    hear_each_other(&mut browser, &engine, &call_id).await;

    // Linphone holds and resumes: its re-INVITEs reach the browser through the engine.
    lin.cmd("pause").await;
    lin.expect("is now paused").await;
    assert_eq!(browser.expect("hold").await["by"], "remote");
    lin.cmd("resume").await;
    lin.expect("Media streams established").await;
    assert_eq!(browser.expect("unhold").await["by"], "remote");
    audio_goes_on(&mut browser, "Linphone resumed").await;

    lin.cmd("terminate").await;
    browser.expect("ended").await;
    engine.wait_gone(&call_id).await;
}

/// The other way round: baresip calls the browser. The phone's plain offer reaches
/// Chromium as a WebRTC offer (ICE, DTLS, rtcp-mux) through the engine, the browser
/// answers, and each side's audio reaches the other through the engine.
#[tokio::test]
async fn baresip_calls_chromium_through_rtpengine() {
    use sipwasm_tests::phone::{Phone, Transport};
    let engine = Rtpengine::start().await;
    let server = server_with(&[engine.engine()], "");
    let mut phone = Phone::start(&server, "bob", Transport::Udp).await;
    let dir = tempfile::tempdir().unwrap();
    let mut browser = browser_with_tone(&server, dir.path()).await;

    phone.dial("alice").await;
    browser.expect("incoming").await;
    browser.cmd(serde_json::json!({"cmd": "answer"})).await;
    phone.expect("CALL_ESTABLISHED").await;
    browser.expect("accepted").await;
    let call_id = the_call(&engine).await;
    hear_each_other(&mut browser, &engine, &call_id).await;
    browser.cmd(serde_json::json!({"cmd": "hangup"})).await;
    phone.expect("CALL_CLOSED").await;
    engine.wait_gone(&call_id).await;
}

/// Chromium (JsSIP) registered as alice, its fake microphone playing a 440 Hz tone from
/// a file in `dir`.
async fn browser_with_tone(server: &Server, dir: &std::path::Path) -> sipwasm_tests::js::Agent {
    use sipwasm_tests::js::{Agent, Lib};
    let wav = dir.join("browser-tone.wav");
    std::fs::write(&wav, sipwasm_tests::phone::tone_wav(30)).unwrap();
    let mut browser = Agent::start_in_chromium_with_audio(server, Lib::JsSip, "alice", &wav).await;
    browser.register().await;
    browser
}

/// The browser's media stats now (`stats` command).
async fn stats(browser: &mut sipwasm_tests::js::Agent) -> serde_json::Value {
    browser.cmd(serde_json::json!({"cmd": "stats"})).await;
    browser.expect("stats").await
}

/// Waits (bounded) until the browser has received 50 packets of audio with energy over a
/// connected DTLS transport, and both parties' RTP has reached the engine; panics
/// naming what was missing.
async fn hear_each_other(
    browser: &mut sipwasm_tests::js::Agent,
    engine: &Rtpengine,
    call_id: &str,
) {
    let heard = |s: &serde_json::Value| {
        s["packetsReceived"].as_u64().unwrap_or(0) >= 50
            && s["totalAudioEnergy"].as_f64().unwrap_or(0.0) > 0.0
            && s["dtlsState"] == "connected"
    };
    let mut now = serde_json::Value::Null;
    for _ in 0..40 {
        now = stats(browser).await;
        if heard(&now) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let per_tag = packets_by_tag(&engine.query(call_id).await.expect("the call"));
    assert!(heard(&now), "the browser hears nothing: {now} {per_tag:?}");
    assert!(
        per_tag.len() == 2 && per_tag.iter().all(|(_, n)| *n > 20),
        "packets per party: {per_tag:?}"
    );
}

/// Asserts the browser receives at least 20 packets within a second (audio goes on).
async fn audio_goes_on(browser: &mut sipwasm_tests::js::Agent, after_what: &str) {
    let before = stats(browser).await["packetsReceived"]
        .as_u64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = stats(browser).await["packetsReceived"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        after >= before + 20,
        "no audio after {after_what}: {before} -> {after}"
    );
}

/// The only call the engine holds.
async fn the_call(engine: &Rtpengine) -> String {
    let calls = engine_calls(engine).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls[0].clone()
}
