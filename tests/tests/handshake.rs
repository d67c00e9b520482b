//! The HTTP front and the WebSocket handshake, through the real binary and the
//! seed-policy plugin: each handshake rule, each HTTP limit.

use std::time::Duration;

use sipwasm_tests::*;

fn host(s: &Server) -> String {
    format!("localhost:{}", s.ws.port())
}

#[tokio::test]
async fn valid_handshake_gets_101_with_rfc6455_accept_key() {
    let s = Server::standard("");
    let r = http_once(s.ws, handshake(&host(&s), "").as_bytes()).await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    assert_eq!(r.header("Sec-WebSocket-Protocol"), Some("sip"));
    assert_eq!(r.header("Upgrade"), Some("websocket"));
    assert_eq!(r.header("Connection"), Some("Upgrade"));
}

/// Each broken handshake and the status it must get.
#[tokio::test]
async fn handshake_failures_get_their_status() {
    let s = Server::standard("");
    let h = host(&s);
    let good = handshake(&h, "");
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "missing key",
            good.replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), ""),
            400,
        ),
        ("short key", good.replace(SAMPLE_KEY, "c2hvcnQ="), 400),
        (
            "key not base64",
            good.replace(SAMPLE_KEY, "!!!!!!!!!!!!!!!!!!!!!!=="),
            400,
        ),
        ("version 8", good.replace("Version: 13", "Version: 8"), 426),
        (
            "no version",
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            400,
        ),
        (
            "sip not offered",
            good.replace("Protocol: sip", "Protocol: chat, xmpp"),
            400,
        ),
        (
            "no subprotocol",
            good.replace("Sec-WebSocket-Protocol: sip\r\n", ""),
            400,
        ),
        ("POST", good.replace("GET / ", "POST / "), 400),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        ("no Host", good.replace(&format!("Host: {h}\r\n"), ""), 400),
        (
            "two Hosts",
            good.replace(
                &format!("Host: {h}\r\n"),
                &format!("Host: {h}\r\nHost: {h}\r\n"),
            ),
            400,
        ),
        (
            "no Connection: upgrade",
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (
            "no Upgrade header",
            good.replace("Upgrade: websocket\r\n", ""),
            400,
        ),
        (
            "Upgrade: h2c",
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            400,
        ),
        ("foreign Host", good.replace(&h, "evil.example"), 403),
        ("our name, wrong port", good.replace(&h, "localhost:1"), 403),
    ];
    for (what, request, status) in cases {
        let mut c = HttpConn::connect(s.ws).await;
        c.send(request.as_bytes()).await;
        let r = c
            .response()
            .await
            .unwrap_or_else(|| panic!("{what}: no response"));
        assert_eq!(r.status, status, "{what}: {r:?}");
        if status == 426 {
            assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"), "{what}");
        }
        assert_eq!(r.header("Connection"), Some("close"), "{what}");
        assert!(c.closed().await, "{what}: connection left open");
    }
}

#[tokio::test]
async fn plain_request_to_seed_policy_is_404_and_keeps_alive() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws).await;
    for _ in 0..3 {
        c.send(format!("GET /index.html HTTP/1.1\r\nHost: {}\r\n\r\n", host(&s)).as_bytes())
            .await;
        let r = c.response().await.expect("response");
        assert_eq!(r.status, 404);
        assert!(r.header("Date").is_some());
        assert!(r.header("Server").unwrap().starts_with("sipwasm/"));
    }
}

#[tokio::test]
async fn seed_policy_refuses_ports_that_are_not_web_ports() {
    let config = STANDARD.replace("web-ports = [{ws}, {wss}]", "web-ports = [1]");
    let s = Server::start(&config);
    let r = http_once(s.ws, handshake(&host(&s), "").as_bytes()).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn seed_policy_origin_allow_list() {
    let config = STANDARD.replace(
        "web-ports = [{ws}, {wss}]",
        "web-ports = [{ws}, {wss}]\nallowed-origins = [\"https://app.example.org\"]",
    );
    let s = Server::start(&config);
    let h = host(&s);
    let ok = http_once(
        s.ws,
        handshake(&h, "Origin: https://app.example.org\r\n").as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 101);
    let bad = http_once(
        s.ws,
        handshake(&h, "Origin: https://evil.example\r\n").as_bytes(),
    )
    .await;
    assert_eq!(bad.status, 403);
    let none = http_once(s.ws, handshake(&h, "").as_bytes()).await;
    assert_eq!(none.status, 403);
    assert!(
        s.wait_for_log("Origin \\\"https://evil.example\\\" not allowed")
            .await,
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn non_http_first_line_is_refused_without_a_hang() {
    let s = Server::standard("");
    for garbage in [
        &b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ] {
        let mut c = HttpConn::connect(s.ws).await;
        c.send(garbage).await;
        // Either a 400 then close, or a plain close: never a hang.
        if let Some(r) = c.response().await {
            assert_eq!(r.status, 400);
        }
        assert!(c.closed().await);
    }
}

#[tokio::test]
async fn http_version_2_gets_505() {
    let s = Server::standard("");
    let r = http_once(s.ws, b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(r.status, 505);
}

#[tokio::test]
async fn oversize_head_gets_431() {
    let s = Server::standard("");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        host(&s),
        "a".repeat(17 * 1024)
    );
    let mut c = HttpConn::connect(s.ws).await;
    c.send(big.as_bytes()).await;
    assert_eq!(c.response().await.expect("431").status, 431);
    assert!(c.closed().await);

    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = http_once(
        s.ws,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431);
}

#[tokio::test]
async fn oversize_and_chunked_bodies() {
    let s = Server::standard("");
    let h = host(&s);
    let r = http_once(
        s.ws,
        format!("POST / HTTP/1.1\r\nHost: {h}\r\nContent-Length: 65537\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = http_once(
        s.ws,
        format!("POST / HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 411);
    // A body at the limit is read and handed to the plugin.
    let body = "b".repeat(64 * 1024);
    let r = http_once(
        s.ws2,
        format!(
            "POST /echo HTTP/1.1\r\nHost: {h}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains(&body));
}

#[tokio::test]
async fn slow_head_is_closed_after_the_head_timeout() {
    let s = Server::standard("[http]\nhead-timeout = \"1s\"\n");
    let mut c = HttpConn::connect(s.ws).await;
    c.send(b"GET / HTTP/1.1\r\nHost: loc").await;
    let started = std::time::Instant::now();
    assert!(c.closed().await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
    // A connection that sends nothing at all is closed too.
    let mut c = HttpConn::connect(s.ws).await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let s = Server::standard("[http]\nidle-timeout = \"1s\"\n");
    let mut c = HttpConn::connect(s.ws3).await;
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(c.response().await.unwrap().status, 200);
    assert!(c.closed().await);
}

#[tokio::test]
async fn keep_alive_pipelining_and_http10() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws3).await;
    // Two pipelined requests in one write, then a third.
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let first = c.response().await.unwrap();
    assert_eq!(first.status, 200);
    assert!(String::from_utf8_lossy(&first.body).contains("<title>sipwasm</title>"));
    assert_eq!(
        first.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let head = c.response().await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    c.send(b"DELETE / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert!(c.closed().await);

    let mut c = HttpConn::connect(s.ws3).await;
    c.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn expect_100_continue() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws2).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let cont = c.response().await.unwrap();
    assert_eq!(cont.status, 100);
    c.send(b"hello").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("body: hello"));
}
