//! Gateway sets (`[[gateways]]`) end to end: the example router plugin relays users
//! starting with 9 to `gw:pstn`; the members are UDP peers of the test that count what
//! reaches them; the server probes them with OPTIONS.

use std::time::{Duration, Instant};

use sipwasm_tests::peer::{Peer, eventually};
use sipwasm_tests::sip::Ua;
use sipwasm_tests::*;

/// The standard server with call-policy relaying 9… to `gw:pstn`, whose `[[gateways]]`
/// entry is `gateways`; `sip` added to `[sip]`.
fn server(sip: &str, gateways: &str) -> Server {
    Server::standard(&format!(
        r#"
[sip]
router = "router"
{sip}

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
deadline = "2s"
[plugins.router.config]
relay = {{ "9" = "gw:pstn" }}

[[gateways]]
name = "pstn"
{gateways}
"#
    ))
}

fn targets(peers: &[&Peer]) -> String {
    let list: Vec<String> = peers
        .iter()
        .map(|p| format!("\"sip:{}\"", p.addr))
        .collect();
    format!("targets = [{}]", list.join(", "))
}

/// A MESSAGE to `to`, with `call_id` when given; its final status and how long it took.
async fn message(ua: &mut Ua, to: &str, call_id: Option<&str>) -> (u16, Duration) {
    let (mut text, d) = ua.request("MESSAGE", to, "", "hi");
    if let Some(c) = call_id {
        text = text.replace(&format!("Call-ID: {}", d.call_id), &format!("Call-ID: {c}"));
    }
    let start = Instant::now();
    ua.send(&text).await;
    let r = ua.recv_final().await;
    (r.status, start.elapsed())
}

async fn gateway_up(s: &Server, peer: &std::net::SocketAddr) -> u64 {
    let series = format!("sipwasm_gateway_up{{set=\"pstn\",target=\"sip:{peer}\"}}");
    let text = s.metrics().await;
    metric_in(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Waits (20 s at most) until the member's `sipwasm_gateway_up` is `up`.
async fn until_state(s: &Server, peer: &std::net::SocketAddr, up: u64) {
    for _ in 0..200 {
        if gateway_up(s, peer).await == up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{peer} not {up} within 20 s:\n{}", s.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_a_down_member_is_skipped_and_comes_back() {
    let (a, b, c) = (
        Peer::udp(Some(200)).await,
        Peer::udp(Some(200)).await,
        Peer::udp(Some(200)).await,
    );
    let s = server(
        "failover-after = \"1s\"",
        &format!(
            "{}\nprobe-interval = \"1s\"\ndown-after = 2\nup-after = 1\n",
            targets(&[&a, &b, &c])
        ),
    );
    eventually("every member probed", || {
        [&a, &b, &c].iter().all(|p| p.got("OPTIONS") >= 1)
    })
    .await;
    let mut ua = Ua::udp(&s, "alice").await;
    for n in 0..30 {
        let (status, _) = message(&mut ua, "9001", None).await;
        assert_eq!(status, 200, "MESSAGE {n}");
    }
    assert_eq!(
        [a.got("MESSAGE"), b.got("MESSAGE"), c.got("MESSAGE")],
        [10, 10, 10],
        "round robin"
    );
    // The user goes to the member (its host and port).
    assert_eq!(a.last_uri("MESSAGE"), Some(format!("sip:9001@{}", a.addr)));

    // b goes away: its probes fail (ICMP), it is down within two probes, and
    // requests skip it without waiting on it.
    let b_addr = b.addr;
    b.close().await;
    until_state(&s, &b_addr, 0).await;
    assert!(s.wait_for_log("gateway down").await);
    let reply = s.admin_request("GET", "/gateways").await;
    let list: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let downs: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["up"] == false)
        .collect();
    assert_eq!(downs.len(), 1, "{list}");
    assert_eq!(downs[0]["target"], format!("sip:{b_addr}"));
    let before = (a.got("MESSAGE"), c.got("MESSAGE"));
    for _ in 0..10 {
        let (status, _) = message(&mut ua, "9001", None).await;
        assert_eq!(status, 200);
    }
    // Round robin over the two that are up (were b still tried, its ICMP would send
    // each of its turns to the member after it, and the split would not be even).
    assert_eq!(
        (a.got("MESSAGE") - before.0, c.got("MESSAGE") - before.1),
        (5, 5)
    );

    // b is back: one answered probe and it gets its share again.
    let b = Peer::udp_at(b_addr, Some(200)).await;
    until_state(&s, &b_addr, 1).await;
    for _ in 0..9 {
        assert_eq!(message(&mut ua, "9001", None).await.0, 200);
    }
    assert_eq!(b.got("MESSAGE"), 3, "traffic returns to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_moves_on_and_a_call_id_stays_on_one_member() {
    let broken = Peer::udp(Some(500)).await;
    let (y, z) = (Peer::udp(Some(200)).await, Peer::udp(Some(200)).await);
    // No probes here: the 500 member stays up, and each request meets it by hash.
    let s = server(
        "",
        &format!(
            "{}\nalgorithm = \"hash-call-id\"\nprobe-interval = \"0s\"\n",
            targets(&[&broken, &y, &z])
        ),
    );
    let mut ua = Ua::udp(&s, "alice").await;
    for n in 0..30 {
        let (status, _) = message(&mut ua, "9001", Some(&format!("call-{n}"))).await;
        assert_eq!(status, 200, "the caller never sees the member's 500");
    }
    let tried_broken = broken.got("MESSAGE");
    assert!(
        tried_broken > 0,
        "some Call-IDs hash to the broken member first"
    );
    assert_eq!(y.got("MESSAGE") + z.got("MESSAGE"), 30);
    // One Call-ID, five requests: one member gets them all.
    let (y0, z0) = (y.got("MESSAGE"), z.got("MESSAGE"));
    for _ in 0..5 {
        assert_eq!(message(&mut ua, "9001", Some("same-call")).await.0, 200);
    }
    let (dy, dz) = (y.got("MESSAGE") - y0, z.got("MESSAGE") - z0);
    assert!((dy, dz) == (5, 0) || (dy, dz) == (0, 5), "{dy}, {dz}");
}
