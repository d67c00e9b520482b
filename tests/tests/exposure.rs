//! Safe to expose: the attacks an untrusted client on a public address tries, against
//! the real binary on its default policy (no router), each as an attacker would send it.
//! Every one of these passed against the server before it was fixed (issue 18).

use std::time::{Duration, Instant};

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::*;
use tokio::net::{TcpListener, UdpSocket};

/// Whether anything connects to `listener` within `wait`.
async fn connected_within(listener: &TcpListener, wait: Duration) -> bool {
    tokio::time::timeout(wait, listener.accept()).await.is_ok()
}

/// 1. Server-side request forgery through Path: a client may not make the server open a
///    connection to an address of its choosing (here a line protocol on loopback).
#[tokio::test]
async fn a_path_from_an_untrusted_client_is_refused_and_never_dialled() {
    let s = Server::standard("");
    // What the attacker wants the server to write to: a TCP service on loopback.
    let victim = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = victim.local_addr().unwrap().port();
    let mut attacker = Ua::udp(&s, "target").await;
    let text = attacker.register_text(600).replace(
        "Supported: path, gruu\r\n",
        &format!("Supported: path\r\nPath: <sip:127.0.0.1:{port};transport=tcp;lr>\r\n"),
    );
    attacker.send(&text).await;
    let r = attacker.recv_final().await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.headers
            .get(&HeaderName::Warning)
            .is_some_and(|w| w.contains("Trusted")),
        "the refusal says why: {r:?}"
    );
    // A MESSAGE for that AoR from someone else: nobody is registered, nothing dialled.
    let mut sender = Ua::udp(&s, "sender").await;
    let (text, _) = sender.request("MESSAGE", "target", "", "SET pwned 1\r\n");
    sender.send(&text).await;
    assert_eq!(sender.recv_final().await.status, 404);
    assert!(!connected_within(&victim, Duration::from_millis(300)).await);
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"untrusted-path\"}")
            .await,
        1
    );

    // A UDP REGISTER whose Contact names a TCP port is reached where it sends from.
    let contact = format!("sip:target@127.0.0.1:{port};transport=tcp");
    let text = attacker.register_text(600).replacen(
        &format!("<{}>", attacker.contact()),
        &format!("<{contact}>"),
        1,
    );
    attacker.send(&text).await;
    assert_eq!(attacker.recv_final().await.status, 200);
    let (text, _) = sender.request("MESSAGE", "target", "", "hello");
    sender.send(&text).await;
    let m = attacker.recv_request("MESSAGE").await;
    attacker.send(&attacker.response(&m, 200, "", "")).await;
    assert_eq!(sender.recv_final().await.status, 200);
    assert!(!connected_within(&victim, Duration::from_millis(300)).await);
}

/// 2. Open relay by replaying a Record-Route entry: the callee of a call saw our entries;
///    reused with a made-up tag, another Call-ID or another target they relay nothing
///    anywhere but to the dialog's own party.
#[tokio::test]
async fn a_replayed_record_route_entry_relays_nothing() {
    let s = Server::standard("");
    // Where the toll fraud would go.
    let premium = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let premium_uri = format!("sip:premium@{}", premium.local_addr().unwrap());
    let mut caller = Ua::udp(&s, "caller").await;
    let mut callee = Ua::udp(&s, "callee").await;
    assert_eq!(callee.register(600).await.status, 200);
    let (invite, dialog) = caller.request("INVITE", "callee", "", SDP);
    caller.send(&invite).await;
    let inv = callee.recv_request("INVITE").await;
    callee.send(&callee.response(&inv, 200, "", SDP)).await;
    let ok = caller.recv_status(200).await;
    let mut to_callee = caller.dialog_as_caller(dialog, &ok);
    let ack = caller.in_dialog(&mut to_callee, "ACK", Some(1));
    caller.send(&ack).await;
    callee.recv_request("ACK").await;

    // The callee turns attacker: its route set, a made-up To tag, a premium target.
    let as_callee = callee.dialog_as_callee(&inv);
    let mut forged = as_callee.clone();
    forged.target = premium_uri.clone();
    forged.remote = format!("<{premium_uri}>;tag=madeup");
    let text = callee.in_dialog(&mut forged, "MESSAGE", None);
    callee.send(&text).await;
    let r = callee.recv_final().await;
    assert_eq!(r.status, 403, "made-up tag: {r:?}");
    // Another Call-ID.
    let mut other = as_callee.clone();
    other.call_id = format!("{}-2", other.call_id);
    other.target = premium_uri.clone();
    let text = callee.in_dialog(&mut other, "MESSAGE", None);
    callee.send(&text).await;
    assert_eq!(callee.recv_final().await.status, 403, "another Call-ID");
    // The right tags and Call-ID with a premium target: it reaches the caller (the
    // dialog's party, where it was reached), never the premium address.
    let mut retargeted = as_callee.clone();
    retargeted.target = premium_uri.clone();
    let text = callee.in_dialog(&mut retargeted, "MESSAGE", None);
    callee.send(&text).await;
    let m = caller.recv_request("MESSAGE").await;
    caller.send(&caller.response(&m, 200, "", "")).await;
    assert_eq!(callee.recv_final().await.status, 200);
    let mut buf = [0u8; 65_536];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), premium.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing reaches the premium address"
    );
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"forged-route\"}")
            .await,
        2
    );
    // One entry per side, each naming where its side is reached.
    assert_eq!(inv.headers.get_all(&HeaderName::RecordRoute).count(), 2);
    // The dialog itself still works both ways.
    let mut to_caller = as_callee;
    let bye = callee.in_dialog(&mut to_caller, "INFO", None);
    callee.send(&bye).await;
    let info = caller.recv_request("INFO").await;
    caller.send(&caller.response(&info, 200, "", "")).await;
    assert_eq!(callee.recv_final().await.status, 200);
    let bye = caller.in_dialog(&mut to_callee, "BYE", None);
    caller.send(&bye).await;
    let b = callee.recv_request("BYE").await;
    callee.send(&callee.response(&b, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
}

/// 3. One packet stalls SIP for everyone: a 63 KB REGISTER with 4,900 Contacts is
///    refused before any of them is compared, and another client is answered at once.
#[tokio::test]
async fn a_register_with_thousands_of_contacts_stalls_nobody() {
    let s = Server::standard("");
    let mut attacker = Ua::udp(&s, "many").await;
    let mut other = Ua::udp(&s, "bystander").await;
    // One Contact header, comma-separated (the parser bounds header fields, not values).
    let contacts: Vec<String> = (0..4900).map(|i| format!("sip:{i}@h12")).collect();
    let text = attacker.register_text(600).replacen(
        "Contact: ",
        &format!("Contact: {}, ", contacts.join(",")),
        1,
    );
    assert!(text.len() > 60_000 && text.len() < 65_000, "{}", text.len());
    attacker.send(&text).await;
    let start = Instant::now();
    let (options, _) = other.request("OPTIONS", "sip:localhost", "", "");
    other.send(&options).await;
    let r = other.recv_final().await;
    let waited = start.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(attacker.recv_final().await.status, 403);
    // Before the fix the OPTIONS waited for the whole pairwise comparison (2.6 s in a
    // release build, far longer in the debug build the tests run).
    assert!(
        waited < Duration::from_secs(2),
        "the bystander waited {waited:?}"
    );
}

/// No relay for untrusted clients: a Request-URI in another domain, or a pre-loaded
/// Route to another host, gets 403 with a Warning that says why, and is counted.
#[tokio::test]
async fn relaying_for_untrusted_clients_is_refused_with_a_reason() {
    let s = Server::standard("");
    let mut ua = Ua::udp(&s, "relayer").await;
    let elsewhere = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let target = format!("sip:someone@{}", elsewhere.local_addr().unwrap());
    // A Request-URI in no domain of ours, and a pre-loaded Route to another host.
    let (text, _) = ua.request("MESSAGE", &target, "", "hi");
    ua.send(&text).await;
    let r = ua.recv_final().await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get(&HeaderName::Warning).is_some(), "{r:?}");
    let (text, _) = ua.request(
        "MESSAGE",
        "somebody",
        &format!("Route: <{target};lr>\r\n"),
        "hi",
    );
    ua.send(&text).await;
    assert_eq!(ua.recv_final().await.status, 403);
    let mut buf = [0u8; 65_536];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), elsewhere.recv_from(&mut buf))
            .await
            .is_err()
    );
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"relay\"}")
            .await,
        2
    );
}

/// 9. The admin API: a page that rebinds its name to the admin address, or posts to it
///    from another origin, gets nothing; only the bearer token opens it.
#[tokio::test]
async fn the_admin_api_wants_its_own_host_and_a_token() {
    let s = Server::standard("");
    let rebound = http_once(
        s.admin,
        b"GET /flows HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(rebound.status, 421, "{rebound:?}");
    let bare = http_once(s.admin, b"GET /flows HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(bare.status, 401);
    assert!(
        bare.header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    let cross = http_once(
        s.admin,
        b"POST /plugins/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n\
          Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(cross.status, 401);
    let wrong = http_once(
        s.admin,
        b"GET /flows HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer guess\r\n\r\n",
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(s.admin_request("GET", "/flows").await.status, 200);
    // Metrics stay open on loopback (Prometheus scrapes them as they are).
    assert!(s.metrics().await.contains("sipwasm_sip_refused_total"));
    // The generated token is this user's alone, in a directory that is too.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data_dir.path().join("admin-token")), 0o600);
    assert_eq!(mode(&s.data_dir.path().join("secret.key")), 0o600);
    assert_eq!(mode(s.data_dir.path()), 0o700);
}

/// 9 and 10 at start: an admin API or an open registrar on a public address is refused
/// with an error that names the key and says why.
#[test]
fn public_listeners_without_protection_are_refused_at_start() {
    let err = refused_config(
        r#"
[server]
domains = ["localhost"]
data-dir = "{data}"
[[listen]]
transport = "ws"
address = "0.0.0.0:{ws}"
plugin = "seed"
[plugins.seed]
path = "{plugins}/seed_policy.wasm"
"#,
    );
    assert!(err.contains("sip.open-registration"), "{err}");
    assert!(err.contains("router"), "{err}");
    let err = refused_config(
        r#"
[server]
domains = ["localhost"]
data-dir = "{data}"
[[listen]]
transport = "udp"
address = "127.0.0.1:{sip}"
[admin]
listen = "0.0.0.0:{admin}"
"#,
    );
    assert!(err.contains("admin.token"), "{err}");
}

/// 5. Reflection and amplification over UDP: a REGISTER query from an address that
///    never heard from us gets at most twice its size back (it got 14 times before),
///    and bindings that all reach one address get one branch, not one each.
#[tokio::test]
async fn udp_answers_do_not_amplify_and_forks_go_once_per_address() {
    let s = Server::standard("");
    // A phone (the would-be victim's address) with 32 registered Contacts.
    let mut phone = Ua::udp(&s, "amp").await;
    let contacts: Vec<String> = (0..32)
        .map(|i| format!("<sip:amp{i}-a-longer-user-part@{}>", phone.host))
        .collect();
    let text = phone.register_text(600).replacen(
        &format!("Contact: <{}>;expires=600", phone.contact()),
        &format!("Contact: {}", contacts.join(", ")),
        1,
    );
    phone.send(&text).await;
    let r = phone.recv_final().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers.values(&HeaderName::Contact).count(), 32);
    // A query for that AoR from an address that never heard from us.
    let stranger = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let here = stranger.local_addr().unwrap();
    let query = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {here};branch=z9hG4bKamp;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:amp@localhost>;tag=q\r\nTo: <sip:amp@localhost>\r\n\
         Call-ID: amp-query\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    );
    stranger.send_to(query.as_bytes(), s.sip).await.unwrap();
    let mut buf = [0u8; 65_536];
    let (n, _) = within("the answer", stranger.recv_from(&mut buf))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    assert!(
        n <= 2 * query.len(),
        "{n} bytes answered a {}-byte query:\n{answer}",
        query.len()
    );
    // A MESSAGE for the AoR reaches the phone's address once.
    let mut sender = Ua::udp(&s, "sender").await;
    let (msg, _) = sender.request("MESSAGE", "amp", "", "once");
    sender.send(&msg).await;
    let m = phone.recv_request("MESSAGE").await;
    phone.send(&phone.response(&m, 200, "", "")).await;
    assert_eq!(sender.recv_final().await.status, 200);
    assert!(
        phone.quiet_for(Duration::from_millis(300)).await.is_none(),
        "a second copy of the MESSAGE"
    );
}

/// Durability: at shutdown every answered REGISTER is on disk (the store's writer is
/// joined), and a corrupt store is moved aside with an error instead of keeping the
/// server down.
#[tokio::test]
async fn registrations_are_on_disk_at_shutdown_and_a_corrupt_store_is_moved_aside() {
    let mut s = Server::standard("");
    for i in 0..200 {
        let mut phone = Ua::udp(&s, &format!("disk{i}")).await;
        assert_eq!(phone.register(600).await.status, 200);
    }
    // Stopped right after the last 200.
    s.restart();
    assert!(
        s.logs()
            .lines()
            .any(|l| l.contains("restored UDP registrations") && l.contains("bindings=200")),
        "{}",
        s.logs()
    );
    // The store is damaged while the server is down.
    s.restart_with(|dir| {
        // Opened up by hand meanwhile: made private again at start.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("location.sqlite"), vec![0x5au8; 8192]).unwrap();
        let _ = std::fs::remove_file(dir.join("location.sqlite-wal"));
        let _ = std::fs::remove_file(dir.join("location.sqlite-shm"));
    });
    assert!(
        s.logs().contains("the location store is corrupt"),
        "{}",
        s.logs()
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(s.data_dir.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the data directory is private again");
    }
    let moved = std::fs::read_dir(s.data_dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("location.sqlite.corrupt-")
        });
    assert!(moved);
    let mut phone = Ua::udp(&s, "after").await;
    assert_eq!(phone.register(600).await.status, 200);
}

/// 8. A binding never outlives its flow: a browser's REGISTER still with the routing
///    plugin when its WebSocket closes binds nothing (it was bound to the closed flow
///    for good before: the flow's bindings had been removed already).
#[tokio::test]
async fn a_register_decided_after_its_websocket_closed_binds_nothing() {
    let s = Server::standard(
        r#"
[sip]
router = "slow"

[plugins.slow]
path = "{plugins}/slow_router.wasm"
deadline = "2s"
"#,
    );
    let mut ua = Ua::ws(&s, "late").await;
    let text = ua.register_text(600).replace(
        "Content-Length: 0\r\n",
        "X-Delay-Ms: 600\r\nContent-Length: 0\r\n",
    );
    ua.send(&text).await;
    ua.vanish().await;
    // Until the plugin has decided (bounded).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metric("sipwasm_routing_pending").await > 0 {
        assert!(Instant::now() < deadline, "the plugin never decided");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.metric("sipwasm_registrar_bindings").await, 0);
    // Nobody is reachable there: the AoR never had a binding.
    let mut sender = Ua::udp(&s, "sender").await;
    let (msg, _) = sender.request("MESSAGE", "late", "", "anyone?");
    sender.send(&msg).await;
    assert_eq!(sender.recv_final().await.status, 404);
}

/// CRLF keepalives in bulk over TCP (64 KB of them in one write) are each answered, in
/// order before the request that follows them, and cost linear time (the buffer is
/// drained once per read, the answers written at once).
#[tokio::test]
async fn a_flood_of_tcp_keepalives_is_answered_in_linear_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::standard("");
    let mut tcp = within("connect", tokio::net::TcpStream::connect(s.sip))
        .await
        .unwrap();
    let pings = 16_000;
    let mut bytes = b"\r\n\r\n".repeat(pings);
    bytes.extend_from_slice(options("ka1", "TCP").as_bytes());
    tcp.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !got.windows(7).any(|w| w == b"SIP/2.0") || !got.ends_with(b"\r\n\r\n") {
        let n = within("pongs and the answer", tcp.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let answer_at = got.windows(7).position(|w| w == b"SIP/2.0").unwrap();
    assert_eq!(
        answer_at,
        2 * pings,
        "one CRLF per keepalive, all before the answer"
    );
    assert!(got[..answer_at].iter().all(|&b| b == b'\r' || b == b'\n'));
    assert!(got[answer_at..].starts_with(b"SIP/2.0 200"));
}

/// 5, last part: a UDP destination that answers ICMP port unreachable (a phone gone
/// away, a spoofed source's victim) stops being retransmitted to at once: the caller
/// gets 480 now instead of nothing for the 32 s of timer F.
#[tokio::test]
async fn an_icmp_unreachable_destination_fails_its_branch_at_once() {
    let s = Server::standard("");
    let mut gone = Ua::udp(&s, "gone").await;
    assert_eq!(gone.register(600).await.status, 200);
    drop(gone);
    let mut sender = Ua::udp(&s, "asker").await;
    let (msg, _) = sender.request("MESSAGE", "gone", "", "still there?");
    sender.send(&msg).await;
    let r = sender.recv_final().await;
    assert_eq!(r.status, 480, "{r:?}");
    assert!(s.metric("sipwasm_udp_unreachable_total").await >= 1);
}

/// Issue 19 (first piece): the registrar as a whole is bounded (`sip.max-bindings`): a
/// new binding past it gets 503 with Retry-After; refreshing one always works.
#[tokio::test]
async fn a_full_registrar_answers_503_and_still_takes_refreshes() {
    let s = Server::standard("[sip]\nmax-bindings = 2\n");
    let mut a = Ua::udp(&s, "full-a").await;
    let mut b = Ua::ws(&s, "full-b").await;
    let mut c = Ua::udp(&s, "full-c").await;
    assert_eq!(a.register(600).await.status, 200);
    assert_eq!(b.register(600).await.status, 200);
    let r = c.register(600).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.headers.get(&HeaderName::parse("Retry-After")), Some("60"));
    assert_eq!(a.register(600).await.status, 200, "a refresh");
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"registrar-full\"}")
            .await,
        1
    );
    assert_eq!(s.metric("sipwasm_registrar_bindings").await, 2);
}
