//! Every resource bounded (issue 19): each limit hit against the real binary with a
//! small configured value, answered as the README says (a close, a 503, a dropped
//! datagram), counted in /metrics. The long campaigns are `sipwasm-bench attack`.

use std::time::{Duration, Instant};

use futures_util::SinkExt as _;
use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;

/// Sends OPTIONS over a raw stream and reads until its status line; `None` when the
/// connection closed first.
async fn options_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    branch: &str,
) -> Option<u16> {
    status_over(s, &options(branch, "TCP")).await
}

/// Sends `text` over `s`; the status of the answer.
async fn status_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    text: &str,
) -> Option<u16> {
    s.write_all(text.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    within("an answer to OPTIONS", async {
        loop {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                return head.get(8..11).and_then(|c| c.parse().ok());
            }
        }
    })
    .await
}

/// Whether the server closes `s` within `wait` (reads until end of stream).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let mut chunk = [0u8; 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    within("connect", socket.connect(to)).await.unwrap()
}

/// The server turns transparent huge pages off for itself: with them, an idle server
/// held 76 MiB instead of 31 and memory freed after a flood stayed (a 2 MB page is
/// kept whole while one object on it lives).
#[tokio::test]
async fn the_server_runs_without_transparent_huge_pages() {
    let s = Server::standard("");
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    assert_eq!(thp, Some("0"), "{status}");
}

#[tokio::test]
async fn a_connection_past_the_per_source_cap_is_closed_at_once() {
    let s = Server::standard("[limits]\nconnections-per-source = 3\nexempt = []\n");
    let mut held = Vec::new();
    for i in 0..3 {
        let mut c = TcpStream::connect(s.sip).await.unwrap();
        assert_eq!(options_over(&mut c, &format!("cap{i}")).await, Some(200));
        held.push(c);
    }
    // The fourth from this address, to SIP over TCP or to the WebSocket listener: closed
    // before anything is read.
    let mut fourth = TcpStream::connect(s.sip).await.unwrap();
    assert_eq!(options_over(&mut fourth, "cap3").await, None);
    let mut web = TcpStream::connect(s.ws).await.unwrap();
    let _ = web.write_all(handshake("localhost", "").as_bytes()).await;
    assert!(closed_within(&mut web, Duration::from_secs(2)).await);
    // Another source is not affected.
    let mut other = connect_from("127.0.0.2", s.sip).await;
    assert_eq!(options_over(&mut other, "cap-other").await, Some(200));
    assert_eq!(
        s.metric("sipwasm_connections_refused_total{reason=\"per-source\"}")
            .await,
        2
    );
    // The log line is written by the server's logging thread: wait for it.
    assert!(
        s.wait_for_log("limits.connections-per-source").await,
        "{}",
        s.logs()
    );
    // A connection closed frees its place.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = TcpStream::connect(s.sip).await.unwrap();
        if options_over(&mut again, "cap-again").await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_without_a_sip_message_is_closed_at_the_first_message_deadline() {
    let s = Server::standard("[limits]\nfirst-message-timeout = \"1s\"\n");
    let started = Instant::now();
    // Silent over TCP; only keepalives over TCP; silent over TLS (no handshake at all).
    let mut silent = TcpStream::connect(s.sip).await.unwrap();
    let mut pinging = TcpStream::connect(s.sip).await.unwrap();
    let mut tls_silent = TcpStream::connect(s.tls).await.unwrap();
    // One that sends its first message in time stays open past the deadline.
    let mut talker = TcpStream::connect(s.sip).await.unwrap();
    assert_eq!(options_over(&mut talker, "first1").await, Some(200));
    let pings = async {
        for _ in 0..8 {
            if pinging.write_all(b"\r\n\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        closed_within(&mut pinging, Duration::from_secs(5)).await
    };
    let (a, b, c) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(5)),
        pings,
        closed_within(&mut tls_silent, Duration::from_secs(5)),
    );
    assert!(
        a && b && c,
        "silent {a}, keepalives only {b}, TLS silent {c}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(options_over(&mut talker, "first2").await, Some(200));
    assert_eq!(
        s.metric("sipwasm_connections_timed_out_total{reason=\"first-message\"}")
            .await,
        3
    );
}

#[tokio::test]
async fn a_websocket_frame_or_message_left_unfinished_closes_with_1008() {
    let s = Server::standard("[limits]\nws-partial-timeout = \"1s\"\n");
    let text = options("half", "WS");
    // Half a frame, then nothing.
    let frame = ws_frame(0x81, text.as_bytes(), Some(MASK));
    let mut half = raw_ws(s.ws, &[]).await;
    half.send(&frame[..frame.len() / 2]).await;
    // The first fragment of a message, then only Pongs (which may come between
    // fragments, and which keep a connection alive).
    let mut fragment = raw_ws(s.ws, &[]).await;
    fragment
        .send(&ws_frame(0x01, &text.as_bytes()[..20], Some(MASK)))
        .await;
    let pongs = async {
        for _ in 0..6 {
            let pong = ws_frame(0x8A, b"", Some(MASK));
            if fragment.stream.write_all(&pong).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        fragment.close_code().await
    };
    // A whole message sent in two parts 300 ms apart is fine.
    let mut slow = raw_ws(s.ws, &[]).await;
    let whole = ws_frame(0x81, options("slow", "WS").as_bytes(), Some(MASK));
    slow.send(&whole[..10]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.send(&whole[10..]).await;
    let answer = slow.frame().await.expect("an answer");
    assert!(
        String::from_utf8_lossy(&answer.payload).starts_with("SIP/2.0 200"),
        "{answer:?}"
    );
    let (a, b) = tokio::join!(half.close_code(), pongs);
    assert_eq!((a, b), (Some(1008), Some(1008)));
    assert_eq!(
        s.metric("sipwasm_connections_timed_out_total{reason=\"ws-partial\"}")
            .await,
        2
    );
    // The slow sender is still served.
    slow.send(&ws_frame(
        0x81,
        options("slow2", "WS").as_bytes(),
        Some(MASK),
    ))
    .await;
    assert_eq!(slow.frame().await.map(|f| f.opcode), Some(1));
}

#[tokio::test]
async fn a_source_past_its_rate_gets_503_on_connections_and_is_ignored_over_udp() {
    let s =
        Server::standard("[limits]\nrate = 5\nrate-burst = 10\nrate-ban = \"30s\"\nexempt = []\n");
    let mut tcp = TcpStream::connect(s.sip).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(options_over(&mut tcp, &format!("rate{i}")).await.unwrap());
    }
    assert_eq!(&statuses[..10], &[200; 10]);
    assert_eq!(&statuses[10..], &[503, 503]);
    // Retry-After says how long the ban lasts.
    let mut ua = Ua::tcp(&s, "rated").await;
    let (text, _) = ua.request("OPTIONS", "localhost", "", "");
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 503);
    let retry: u32 = r
        .headers
        .get(&HeaderName::RetryAfter)
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((25..=30).contains(&retry), "{retry}");
    // Over UDP from the same address: no answer at all (a flood gets nothing back).
    let mut udp = Ua::udp(&s, "rated-udp").await;
    let (text, _) = udp.request("OPTIONS", "localhost", "", "");
    udp.send(&text).await;
    assert!(udp.quiet_for(Duration::from_millis(500)).await.is_none());
    // Another address is served.
    let mut other = Ua::udp_from(&s, "other", "127.0.0.3").await;
    assert_eq!(other.register(600).await.status, 200);
    // Four refused before parsing: three 503s, and the datagram dropped.
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"rate-limit\"}")
            .await,
        4
    );
    assert_eq!(s.metric("sipwasm_udp_banned_dropped_total").await, 1);
    // Logged once for this source however often it was refused.
    assert_eq!(
        s.logs().matches("source past limits.rate").count(),
        1,
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn malformed_requests_count_against_the_rate_and_a_banned_source_is_refused_unparsed() {
    let s =
        Server::standard("[limits]\nrate = 5\nrate-burst = 10\nrate-ban = \"30s\"\nexempt = []\n");
    let mut tcp = TcpStream::connect(s.sip).await.unwrap();
    // Ten requests that fail to parse: each answered 400, each counted.
    for i in 0..10 {
        let bad =
            options(&format!("bad{i}"), "TCP").replace("Max-Forwards: 70", "Max-Forwards: lots");
        assert_eq!(status_over(&mut tcp, &bad).await, Some(400));
    }
    // So the next request, well-formed, is past the burst: 503, and so is a malformed
    // one, refused before parsing (no 400, no parse error counted).
    assert_eq!(options_over(&mut tcp, "good").await, Some(503));
    let bad = options("bad-banned", "TCP").replace("Max-Forwards: 70", "Max-Forwards: lots");
    assert_eq!(status_over(&mut tcp, &bad).await, Some(503));
    assert_eq!(s.metric("sipwasm_sip_parse_errors_total").await, 10);
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"rate-limit\"}")
            .await,
        2
    );
    // Over WebSocket from the same address: refused too (one source, every transport).
    let mut ws = ws_connect_to(&s).await;
    ws.send(Message::text(options("ws-banned", "WS")))
        .await
        .unwrap();
    let reply = next_data(&mut ws).await.unwrap();
    assert!(reply.starts_with("SIP/2.0 503 "), "{reply}");
    assert!(reply.contains("\r\nRetry-After: "), "{reply}");
}

/// A banned source that keeps sending on its connection is read slowly: each refused
/// request holds its connection 10 ms, so it costs at most 100 refusals a second.
#[tokio::test]
async fn a_banned_connection_is_read_at_most_a_hundred_messages_a_second() {
    let s =
        Server::standard("[limits]\nrate = 5\nrate-burst = 10\nrate-ban = \"30s\"\nexempt = []\n");
    let mut tcp = TcpStream::connect(s.sip).await.unwrap();
    for i in 0..11 {
        options_over(&mut tcp, &format!("pre{i}")).await.unwrap();
    }
    // Thirty requests in one write, past the ban: thirty 503s, over at least 0.3 s.
    let burst: String = (0..30)
        .map(|i| options(&format!("tar{i}"), "TCP"))
        .collect();
    let started = Instant::now();
    tcp.write_all(burst.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    within("thirty answers", async {
        while got.windows(12).filter(|w| w == b"SIP/2.0 503 ").count() < 30 {
            let mut chunk = [0u8; 8192];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_max_transactions_new_requests_get_503_never_silence() {
    let s = Server::standard("[limits]\nmax-transactions = 2\n");
    // A phone that never answers its INVITEs.
    let mut bob = Ua::udp(&s, "tx-bob").await;
    assert_eq!(bob.register(600).await.status, 200);
    let mut caller = Ua::udp(&s, "tx-caller").await;
    for _ in 0..2 {
        let (invite, _) = caller.request("INVITE", "tx-bob", "", SDP);
        caller.send(&invite).await;
        caller.recv_status(100).await;
        bob.recv_request("INVITE").await;
    }
    let (invite, _) = caller.request("INVITE", "tx-bob", "", SDP);
    caller.send(&invite).await;
    let r = caller.recv_final().await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.headers.get(&HeaderName::RetryAfter).is_some());
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"transactions-full\"}")
            .await,
        1
    );
    // A REGISTER is answered statelessly and still works.
    let mut carol = Ua::udp(&s, "tx-carol").await;
    assert_eq!(carol.register(600).await.status, 200);
}

#[tokio::test]
async fn a_udp_datagram_over_max_message_bytes_is_dropped_and_counted() {
    let s = Server::standard("[sip]\nmax-message-bytes = 2048\n");
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let big = options("big", "UDP").replace(
        "Content-Length: 0\r\n",
        &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "a".repeat(3000)),
    );
    socket.send_to(big.as_bytes(), s.sip).await.unwrap();
    let mut buf = [0u8; 4096];
    let quiet = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "no answer to an oversize datagram");
    socket
        .send_to(options("small", "UDP").as_bytes(), s.sip)
        .await
        .unwrap();
    let (n, _) = within("an answer", socket.recv_from(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    assert_eq!(s.metric("sipwasm_udp_oversize_total").await, 1);
}

/// A server whose `sip.router` is the `slow-router` test plugin and whose web listener
/// is decided by the seed policy; `extra` configures the router (`[plugins.slow]`) and
/// anything else.
fn with_slow_router(extra: &str) -> String {
    format!(
        r#"
[server]
domains = ["localhost", "127.0.0.1"]
data-dir = "{{data}}"

[[listen]]
transport = "udp"
address = "127.0.0.1:{{sip}}"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws}}"
plugin = "seed"

[admin]
listen = "127.0.0.1:{{admin}}"

[sip]
router = "slow"

[plugins.seed]
path = "{{plugins}}/seed_policy.wasm"
deadline = "2s"
[plugins.seed.config]
web-ports = [{{ws}}]

{extra}"#
    )
}

/// One slow plugin cannot starve the others: a router whose calls wait on something
/// slow holds at most its `max-instances` pool slots, at most `max-waiting` calls wait
/// for them and the rest are answered 503 with Retry-After at once (never silence),
/// while the handshake plugin still gets instances from the same small pool.
#[tokio::test]
async fn a_slow_plugin_holds_only_its_own_slots_and_the_overflow_gets_503() {
    let s = Server::start(&with_slow_router(
        r#"[plugin-runtime]
pool-instances = 4

[plugins.slow]
path = "{plugins}/slow_router.wasm"
deadline = "1500ms"
max-instances = 2
max-waiting = 2
"#,
    ));
    // Ten calls at once that each wait 700 ms inside the router.
    let mut uas = Vec::new();
    for i in 0..10 {
        let mut ua = Ua::udp(&s, &format!("slow{i}")).await;
        let (text, _) = ua.request("OPTIONS", "sip:127.0.0.1", "X-Sleep-Ms: 700\r\n", "");
        ua.send(&text).await;
        uas.push(ua);
    }
    // Meanwhile the handshake plugin gets its instances: browsers connect at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut browsers = Vec::new();
    for _ in 0..3 {
        browsers.push(ws_connect_to(&s).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "handshakes waited for the router: {:?}",
        started.elapsed()
    );
    // Every request is answered: two at once, two after waiting, six refused as busy.
    let mut statuses = Vec::new();
    for ua in &mut uas {
        let r = ua.recv_final().await;
        if r.status == 503 {
            assert_eq!(r.headers.get(&HeaderName::RetryAfter), Some("1"), "{r:?}");
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + busy, 10, "{statuses:?}");
    assert!((2..=4).contains(&ok), "{statuses:?}");
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"slow\",cause=\"busy\"}")
            .await,
        busy as u64
    );
}

/// A router that spins to its deadline on every call keeps the plugin runtime busy;
/// calls it has no room for are refused from the core's side (their wait for a slot
/// never runs on that runtime), so every 503 is out before the running call's 500.
#[tokio::test]
async fn calls_a_saturated_router_has_no_room_for_get_their_503_before_it_finishes() {
    let s = Server::start(&with_slow_router(
        r#"[limits]
exempt = []

[plugins.slow]
path = "{plugins}/slow_router.wasm"
deadline = "400ms"
max-instances = 1
max-waiting = 0
[plugins.slow.config]
always-ms = 1500
"#,
    ));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = socket.local_addr().unwrap();
    const CALLS: usize = 100;
    for i in 0..CALLS {
        let text =
            options(&format!("sat{i}"), "UDP").replace("df7jal23ls0d.invalid", &me.to_string());
        socket.send_to(text.as_bytes(), s.sip).await.unwrap();
    }
    // Final statuses in the order they arrive.
    let mut order = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while order.len() < CALLS {
        let (n, _) = within("every call answered", socket.recv_from(&mut buf))
            .await
            .unwrap();
        assert!(n > 12, "a response");
        let status: u16 = String::from_utf8_lossy(&buf[8..11]).parse().unwrap();
        if status >= 200 {
            order.push(status);
        }
    }
    let first_500 = order
        .iter()
        .position(|&c| c == 500)
        .expect("the running call's 500");
    assert!(
        order[first_500..].iter().all(|&c| c == 500),
        "a 503 came after the running call ended: {order:?}"
    );
    assert_eq!(
        order.iter().filter(|&&c| c == 503).count(),
        CALLS - 1,
        "{order:?}"
    );
}

/// OPTIONS from `from` (one call for the router, `X-Delay-Ms: delay` when given); the
/// final status and its Retry-After.
async fn options_from(
    s: &Server,
    from: &str,
    branch: &str,
    delay: Option<u64>,
) -> (u16, Option<String>) {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    let me = socket.local_addr().unwrap();
    let mut text = options(branch, "UDP").replace("df7jal23ls0d.invalid", &me.to_string());
    if let Some(ms) = delay {
        text = text.replace(
            "Content-Length",
            &format!("X-Delay-Ms: {ms}\r\nContent-Length"),
        );
    }
    socket.send_to(text.as_bytes(), s.sip).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = within("an answer", socket.recv_from(&mut buf))
            .await
            .unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        let status: u16 = reply[8..11].parse().unwrap();
        if status >= 200 {
            let retry = reply
                .lines()
                .find_map(|l| l.strip_prefix("Retry-After: "))
                .map(str::to_string);
            return (status, retry);
        }
    }
}

/// A router whose calls keep running into their deadline is suspended: its failure
/// policy answers at once (503 with the rest of the suspension in Retry-After) instead
/// of after the deadline, until one probe call is in time again; calls at their
/// deadline from a single address never suspend it for everyone.
#[tokio::test]
async fn a_router_at_its_deadline_is_suspended_and_probed_back() {
    let s = Server::start(&with_slow_router(
        r#"[limits]
exempt = []

[plugins.slow]
path = "{plugins}/slow_router.wasm"
deadline = "200ms"
max-instances = 8
suspend-after = 6
suspend-for = "2s"
"#,
    ));
    // Sixteen calls at their deadline from one address: 500 (or 503 busy), and the
    // plugin serves the next call.
    let slow = |from: &'static str, tag: String| {
        let s = &s;
        async move { options_from(s, from, &tag, Some(1_500)).await }
    };
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(slow("127.0.0.21", format!("one{i}")));
    }
    for (status, _) in futures_util::future::join_all(calls).await {
        assert!(status == 500 || status == 503, "{status}");
    }
    assert_eq!(
        options_from(&s, "127.0.0.40", "after-one", None).await.0,
        200
    );
    assert_eq!(
        s.metric("sipwasm_plugin_suspensions_total{plugin=\"slow\"}")
            .await,
        0
    );
    // The same from eight addresses: suspended.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    const FROM: [&str; 8] = [
        "127.0.0.31",
        "127.0.0.32",
        "127.0.0.33",
        "127.0.0.34",
        "127.0.0.35",
        "127.0.0.36",
        "127.0.0.37",
        "127.0.0.38",
    ];
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(slow(FROM[i % 8], format!("many{i}")));
    }
    for (status, _) in futures_util::future::join_all(calls).await {
        assert!(status == 500 || status == 503, "{status}");
    }
    assert_eq!(
        s.metric("sipwasm_plugin_suspensions_total{plugin=\"slow\"}")
            .await,
        1
    );
    // A call that would be in time gets the failure policy at once meanwhile.
    let (status, retry) = options_from(&s, "127.0.0.40", "suspended", None).await;
    assert_eq!(status, 503);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"slow\",cause=\"suspended\"}")
            .await
            >= 1
    );
    // After the suspension one call probes the plugin: in time, so it is back.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(options_from(&s, "127.0.0.40", "probe", None).await.0, 200);
    assert_eq!(options_from(&s, "127.0.0.41", "back", None).await.0, 200);
}

/// What survives a crash: `kill -9` in the middle of a REGISTER load over UDP, then a
/// restart. Every binding answered 200 more than the documented write-behind bound
/// (1 s) before the kill is back: counted, and a sample of them reached by MESSAGE.
#[tokio::test]
async fn after_kill_9_every_udp_binding_answered_a_second_before_is_back() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let mut s = Server::standard("");
    let phones = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = phones.local_addr().unwrap().port();
    let register = |i: usize| {
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKk9{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:k9u{i}@localhost>;tag=k{i}\r\nTo: <sip:k9u{i}@localhost>\r\n\
             Call-ID: k9-{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:k9u{i}@127.0.0.1:{port}>;expires=3600\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    // When each AoR's 200 came.
    let answered: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let reader = {
        let (phones, answered) = (phones.clone(), answered.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = phones.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.starts_with("SIP/2.0 200")
                    && let Some(i) = text
                        .split("Call-ID: k9-")
                        .nth(1)
                        .and_then(|r| r.split("\r\n").next())
                        .and_then(|n| n.parse::<usize>().ok())
                {
                    answered.lock().unwrap().insert(i, Instant::now());
                }
            }
        })
    };
    // About 2,000 REGISTERs a second for 3 s, each for its own AoR; killed while they
    // still come.
    let load_until = Instant::now() + Duration::from_secs(3);
    let mut sent = 0usize;
    while Instant::now() < load_until && sent < 20_000 {
        for _ in 0..20 {
            phones
                .send_to(register(sent).as_bytes(), s.sip)
                .await
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    s.kill_and_restart();
    reader.abort();
    let cutoff = killed_at - Duration::from_secs(1);
    let before: Vec<usize> = {
        let a = answered.lock().unwrap();
        let mut v: Vec<usize> = a
            .iter()
            .filter(|(_, t)| **t <= cutoff)
            .map(|(i, _)| *i)
            .collect();
        v.sort_unstable();
        v
    };
    assert!(
        before.len() > 1000,
        "only {} answered before the cutoff",
        before.len()
    );
    let restored = s.metric("sipwasm_registrar_bindings").await as usize;
    assert!(
        restored >= before.len(),
        "{restored} bindings back, {} were answered more than 1 s before the kill",
        before.len()
    );
    // A sample of them, spread over the run, is reachable where it registered.
    let phones = Arc::try_unwrap(phones).unwrap();
    let mut sender = Ua::udp(&s, "k9-sender").await;
    let step = (before.len() / 40).max(1);
    for &i in before.iter().step_by(step) {
        let (msg, _) = sender.request("MESSAGE", &format!("k9u{i}"), "", "still there?");
        sender.send(&msg).await;
        let mut buf = vec![0u8; 65536];
        let (n, from) = within("the MESSAGE", phones.recv_from(&mut buf))
            .await
            .unwrap();
        let req = sipwasm::sip::parse(&buf[..n]).unwrap();
        let sipwasm::sip::Message::Request(req) = req else {
            panic!("expected the MESSAGE")
        };
        assert!(
            req.uri.to_string().contains(&format!("k9u{i}@")),
            "{}",
            req.uri
        );
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let name = HeaderName::parse(h);
            for v in req.headers.get_all(&name) {
                ok.push_str(&format!("{h}: {v}\r\n"));
            }
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        phones.send_to(ok.as_bytes(), from).await.unwrap();
        assert_eq!(sender.recv_final().await.status, 200);
    }
}

/// A plugin that fails on every call, from one source, is logged once a minute for that
/// source (every failure is counted): a flood must not flood the log too.
#[tokio::test]
async fn a_plugin_failing_on_every_call_is_logged_once_a_minute_per_source() {
    let s = Server::standard("");
    for _ in 0..5 {
        let r = http_once(s.ws2, b"GET /trap HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert_eq!(r.status, 500);
    }
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"misbehave\",cause=\"trap\"}")
            .await,
        5
    );
    assert_eq!(
        s.logs()
            .matches("plugin failed on an HTTP request: trap")
            .count(),
        1,
        "{}",
        s.logs()
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The memory an INVITE flood took goes back to the system once its transactions have
/// ended and a minute passed (huge pages off, freed memory purged after 10 ms, every
/// thread's heap collected once a minute: see `sipwasm::memory`): the server gives
/// back at least a third of what the flood added (before, none of it: 97 → 151 → 161
/// MiB). What stays is about the same whatever the flood's size (some 25 MiB in a
/// debug build: pages kept by a few objects still live on them, issue 19), so the
/// flood is made large enough that a slow machine, where fewer of its transactions are
/// alive at once, still shows it: with 12,000 INVITEs a clean-clone CI run with other
/// load beside it peaked 38 MiB above the idle server and gave back 31%.
#[tokio::test]
async fn memory_an_invite_flood_took_is_given_back_once_its_transactions_end() {
    // Timer B 6.4 s: the flood's transactions are all alive at once, then end.
    let s = Server::standard("[sip]\nt1 = \"100ms\"\nt4 = \"1s\"\n");
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKmemreg;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:silent@localhost>;tag=m\r\nTo: <sip:silent@localhost>\r\n\
         Call-ID: memreg\r\nCSeq: 1 REGISTER\r\nContact: <sip:silent@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(reg.as_bytes(), s.sip).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(s.pid());
    // The phone never answers (nor reads); the callers never read their answers.
    let callers = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = callers.local_addr().unwrap();
    let sdp = "v=0\r\n".to_string() + &"a=x-pad:0123456789abcdef0123456789abcdef\r\n".repeat(20);
    let mut peak = before;
    for i in 0..24_000u32 {
        let invite = format!(
            "INVITE sip:silent@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKmem{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:c{i}@localhost>;tag=c{i}\r\nTo: <sip:silent@localhost>\r\n\
             Call-ID: mem-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{from}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        callers.send_to(invite.as_bytes(), s.sip).await.unwrap();
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            peak = peak.max(rss_kib(s.pid()));
        }
    }
    assert!(
        peak > before + 30 * 1024,
        "the flood should take memory: {before} → {peak} KiB"
    );
    // Timer B, then timer H for the 408s: every transaction ends.
    let mut left = u64::MAX;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = s.metric("sipwasm_sip_transactions{side=\"server\"}").await
            + s.metric("sipwasm_sip_transactions{side=\"client\"}").await;
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "transactions still in flight");
    // Some traffic afterwards, as a live server has, for a minute: the core's
    // housekeeping gives back the tables' room and the allocator its free pages.
    for i in 0..620 {
        let opts = format!(
            "OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKmemo{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:silent@localhost>;tag=o\r\nTo: <sip:localhost>\r\n\
             Call-ID: memo{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        phone.send_to(opts.as_bytes(), s.sip).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss_kib(s.pid());
    eprintln!("RSS {before} KiB before, {peak} at the flood's peak, {after} after");
    assert!(
        after < before + (peak - before) * 2 / 3,
        "RSS {before} KiB before, {peak} at the flood's peak, {after} after its transactions ended"
    );
}
