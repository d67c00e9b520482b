//! The HTTP front through the real binary: each HTTP limit, the framing rules and the
//! plugin's view of the request. The handshake table itself runs against the seed policy
//! in each language in `languages.rs`.

use std::time::Duration;

use sipwasm_tests::*;

fn host(s: &Server) -> String {
    format!("localhost:{}", s.ws.port())
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
