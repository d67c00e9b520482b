//! SIP over WebSocket flows: tungstenite clients over ws and wss, keepalives, pings,
//! close codes, many clients, shutdown.

use futures_util::{SinkExt, StreamExt};
use sipwasm_tests::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn options_over_ws_in_text_and_binary_frames() {
    let s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    options_round_trip(&mut ws, "text1", "WS", false).await;
    options_round_trip(&mut ws, "bin1", "WS", true).await;
    assert!(s.metric("sipwasm_sip_messages_in_total").await >= 2);
}

#[tokio::test]
async fn options_over_wss() {
    let s = Server::standard("");
    let mut ws = wss_connect(s.wss, &s.certificate()).await;
    options_round_trip(&mut ws, "tls1", "WSS", false).await;
    options_round_trip(&mut ws, "tls2", "WSS", true).await;
    let flows = s.admin_request("GET", "/flows").await;
    let json: serde_json::Value = serde_json::from_slice(&flows.body).unwrap();
    assert_eq!(json[0]["transport"], "WSS");
}

#[tokio::test]
async fn answers_for_requests_the_core_ends() {
    let s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    let cases = [
        ("MESSAGE sip:bob@localhost", "MESSAGE", "404"),
        ("REGISTER sip:localhost", "REGISTER", "200"),
        ("INVITE sip:localhost", "INVITE", "404"),
        ("OPTIONS sip:elsewhere.example", "OPTIONS", "403"),
    ];
    for (i, (line, method, status)) in cases.iter().enumerate() {
        let msg = format!(
            "{line} SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bKst{i}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@localhost>;tag=a\r\nTo: <sip:bob@localhost>\r\nCall-ID: st{i}\r\n\
             CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        ws.send(Message::text(msg)).await.unwrap();
        let mut reply = next_data(&mut ws).await.unwrap();
        if reply.starts_with("SIP/2.0 100 ") {
            reply = next_data(&mut ws).await.unwrap();
        }
        assert!(
            reply.starts_with(&format!("SIP/2.0 {status} ")),
            "{line}: {reply}"
        );
        assert!(reply.contains(";tag="), "To tag added: {reply}");
    }
}

#[tokio::test]
async fn garbage_is_dropped_and_the_flow_goes_on() {
    let s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    ws.send(Message::text("this is not SIP\r\n\r\n"))
        .await
        .unwrap();
    ws.send(Message::text(
        "INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
    ))
    .await
    .unwrap();
    // The next answer is for the OPTIONS: nothing came back for the garbage.
    options_round_trip(&mut ws, "after-garbage", "WS", false).await;
    assert_eq!(s.metric("sipwasm_sip_parse_errors_total").await, 2);
}

#[tokio::test]
async fn crlf_keepalive_gets_crlf() {
    let s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    ws.send(Message::text("\r\n\r\n")).await.unwrap();
    assert_eq!(next_data(&mut ws).await.as_deref(), Some("\r\n"));
    ws.send(Message::Binary(b"\r\n\r\n".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_data(&mut ws).await.as_deref(), Some("\r\n"));
}

#[tokio::test]
async fn bytes_sent_right_after_the_handshake_are_kept() {
    let s = Server::standard("");
    let sip = options("early", "WS");
    let frame = ws_frame(0x81, sip.as_bytes(), Some(MASK));
    let mut c = raw_ws(s.ws, &frame).await;
    let reply = c.frame().await.expect("a frame");
    assert_eq!(reply.opcode, 0x1);
    let text = String::from_utf8(reply.payload).unwrap();
    assert!(text.starts_with("SIP/2.0 200 OK"), "{text}");
}

#[tokio::test]
async fn idle_client_is_pinged_and_a_silent_one_is_closed() {
    let s = Server::standard("[websocket]\nping-interval = \"300ms\"\npong-timeout = \"300ms\"\n");
    // A raw client that never answers is pinged, then closed after the pong timeout.
    let mut raw = raw_ws(s.ws, b"").await;
    let first = raw.frame().await.expect("a ping");
    assert_eq!(first.opcode, 0x9);
    assert!(raw.closed().await);
    assert!(s.metric("sipwasm_ws_ping_timeouts_total").await >= 1);

    // A tungstenite client answers pings while it reads, so it stays over several
    // intervals.
    let mut ws = ws_connect(s.ws).await;
    let mut pings = 0;
    let listen_until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while let Ok(m) = tokio::time::timeout_at(listen_until, ws.next()).await {
        match m {
            Some(Ok(Message::Ping(p))) => {
                assert!(p.is_empty());
                pings += 1;
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} pings");
    options_round_trip(&mut ws, "after-pings", "WS", false).await;
}

#[tokio::test]
async fn message_over_the_limit_closes_with_1009() {
    let s = Server::standard("");
    let mut c = raw_ws(s.ws, b"").await;
    let big = vec![b'a'; 64 * 1024 + 1];
    c.send(&ws_frame(0x81, &big, Some(MASK))).await;
    assert_eq!(c.close_code().await, Some(1009));
    // Also when the message is split over frames.
    let mut c = raw_ws(s.ws, b"").await;
    let half = vec![b'a'; 40 * 1024];
    c.send(&ws_frame(0x01, &half, Some(MASK))).await;
    c.send(&ws_frame(0x80, &half, Some(MASK))).await;
    assert_eq!(c.close_code().await, Some(1009));
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_bad_utf8_with_1007() {
    let s = Server::standard("");
    let sip = options("x", "WS");
    // Unmasked client frame.
    let mut c = raw_ws(s.ws, b"").await;
    c.send(&ws_frame(0x81, sip.as_bytes(), None)).await;
    assert_eq!(c.close_code().await, Some(1002));
    // Reserved opcode.
    let mut c = raw_ws(s.ws, b"").await;
    c.send(&ws_frame(0x83, b"x", Some(MASK))).await;
    assert_eq!(c.close_code().await, Some(1002));
    // RSV bit without an extension.
    let mut c = raw_ws(s.ws, b"").await;
    c.send(&ws_frame(0xC1, b"x", Some(MASK))).await;
    assert_eq!(c.close_code().await, Some(1002));
    // Invalid UTF-8 in a text frame.
    let mut c = raw_ws(s.ws, b"").await;
    c.send(&ws_frame(0x81, &[0xC3, 0x28, 0xff], Some(MASK)))
        .await;
    assert_eq!(c.close_code().await, Some(1007));
    assert!(s.metric("sipwasm_ws_closed_on_error_total").await >= 4);
}

#[tokio::test]
async fn client_close_is_answered_and_the_flow_removed() {
    let s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    options_round_trip(&mut ws, "c", "WS", false).await;
    ws.close(None).await.unwrap();
    assert!(next_data(&mut ws).await.is_none());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if s.metric("sipwasm_flows_open").await == 0
            && s.metric("sipwasm_flows_closed_total").await == 1
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flow not removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_hundred_clients_at_once() {
    let s = Server::standard("");
    let addr = s.ws;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut ws = ws_connect(addr).await;
                options_round_trip(&mut ws, &format!("many{i}"), "WS", i % 2 == 0).await;
                ws
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("client task"));
    }
    assert_eq!(s.metric("sipwasm_flows_open").await, 200);
    assert_eq!(s.metric("sipwasm_ws_upgrades_total").await, 200);
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let mut s = Server::standard("");
    let mut ws = ws_connect(s.ws).await;
    let mut wss = wss_connect(s.wss, &s.certificate()).await;
    options_round_trip(&mut ws, "before-stop", "WS", false).await;
    let reader = tokio::spawn(async move {
        let code = |m: Option<Result<Message, _>>| match m {
            Some(Ok(Message::Close(Some(f)))) => Some(u16::from(f.code)),
            _ => None,
        };
        let a = within("close on ws", ws.next()).await;
        let b = within("close on wss", wss.next()).await;
        (code(a), code(b))
    });
    let (status, took) = tokio::task::spawn_blocking(move || {
        let r = s.terminate();
        drop(s);
        r
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(reader.await.unwrap(), (Some(1001), Some(1001)));
}
