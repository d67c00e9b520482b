//! Interoperability with sipp (a real SIP peer) on UDP and TCP, against browsers on
//! WebSocket.

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::sipp::{Load, Sipp, SippRun};
use sipwasm_tests::*;

fn run<'a>(scenario: &'a str, service: &'a str, transport: &'a str, port: u16) -> SippRun<'a> {
    SippRun {
        scenario,
        service,
        transport,
        port,
        fill: &[],
        keys: &[],
        load: None,
    }
}

async fn sipp_register(s: &Server, user: &str, transport: &str, port: u16, expires: &str) {
    Sipp::start(
        s,
        SippRun {
            keys: &[("expires", expires)],
            ..run("register.xml", user, transport, port)
        },
    )
    .success()
    .await;
}

#[tokio::test]
async fn sipp_registers_and_unregisters_over_udp_and_tcp() {
    let s = Server::standard("");
    let port = free_port();
    sipp_register(&s, "sippudp", "u1", port, "600").await;
    sipp_register(&s, "sipptcp", "t1", free_port(), "600").await;
    // The UDP binding points at sipp's address: a socket there now gets the MESSAGE.
    let phone = tokio::net::UdpSocket::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let mut sender = Ua::ws(&s, "sender").await;
    let (text, _) = sender.request("MESSAGE", "sippudp", "", "for sipp");
    sender.send(&text).await;
    let mut buf = vec![0u8; 65536];
    let (n, _) = within(
        "MESSAGE to the registered address",
        phone.recv_from(&mut buf),
    )
    .await
    .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(got.starts_with("MESSAGE sip:sippudp@127.0.0.1:"), "{got}");
    drop(phone);
    sipp_register(&s, "sippudp", "u1", port, "0").await;
}

#[tokio::test]
async fn browser_calls_a_sipp_phone_and_hangs_up() {
    let s = Server::standard("");
    let port = free_port();
    sipp_register(&s, "sippphone", "u1", port, "600").await;
    let phone = Sipp::start(&s, run("uas_answer.xml", "sippphone", "u1", port));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut browser = Ua::ws(&s, "webcaller").await;
    assert_eq!(browser.register(600).await.status, 200);
    let ok = browser.call_and_hang_up("sippphone").await;
    assert_eq!(
        ok.headers.values(&HeaderName::RecordRoute).count(),
        2,
        "WS and UDP sides"
    );
    phone.success().await;
}

#[tokio::test]
async fn sipp_phones_call_a_browser_over_udp_and_tcp_and_hang_up() {
    let s = Server::standard("");
    let mut browser = Ua::ws(&s, "webcallee").await;
    assert_eq!(browser.register(600).await.status, 200);
    for transport in ["u1", "t1"] {
        let caller = Sipp::start(&s, run("uac_call.xml", "webcallee", transport, 0));
        let inv = browser.recv_request("INVITE").await;
        browser.send(&browser.response(&inv, 180, "", "")).await;
        browser.send(&browser.response(&inv, 200, "", SDP)).await;
        browser.recv_request("ACK").await;
        let bye = browser.recv_request("BYE").await;
        browser.send(&browser.response(&bye, 200, "", "")).await;
        caller.success().await;
    }
}

#[tokio::test]
async fn sipp_sees_busy_and_unknown_users() {
    let s = Server::standard("");
    let port = free_port();
    sipp_register(&s, "busyphone", "u1", port, "600").await;
    let phone = Sipp::start(&s, run("uas_busy.xml", "busyphone", "u1", port));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Sipp::start(
        &s,
        SippRun {
            fill: &[("STATUS", "486")],
            ..run("uac_rejected.xml", "busyphone", "u1", 0)
        },
    )
    .success()
    .await;
    phone.success().await;
    Sipp::start(
        &s,
        SippRun {
            fill: &[("STATUS", "404")],
            ..run("uac_rejected.xml", "nobody-here", "u1", 0)
        },
    )
    .success()
    .await;
    Sipp::start(
        &s,
        SippRun {
            fill: &[("METHOD", "MESSAGE"), ("STATUS", "404")],
            ..run("uac_expect.xml", "nobody-here", "t1", 0)
        },
    )
    .success()
    .await;
}

/// A value of the server's /metrics text (`name{labels}` exactly as rendered).
fn gauge(metrics: &str, series: &str) -> u64 {
    metric_in(metrics, series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{metrics}"))
}

/// Hundreds of calls between two sipp phones over UDP, through links that lose 5% of
/// the INVITEs and BYEs (either way) and of the 200s to BYEs: every call must complete,
/// repaired by retransmissions (the caller's, and the proxy's client transactions
/// towards the callee), and once the transactions' wait states are over nothing may be
/// left in the core.
#[tokio::test]
async fn calls_over_lossy_links_all_complete_and_leave_no_state() {
    const CALLS: u32 = 400;
    // T1 = 100 ms here and in the scenarios: the wait states (64*T1) end in 6.4 s.
    let s = Server::standard("[sip]\nt1 = \"100ms\"\nt4 = \"1s\"\n");
    let port = free_port();
    sipp_register(&s, "lossyphone", "u1", port, "600").await;
    let sent_before = gauge(&s.metrics().await, "sipwasm_sip_messages_out_total");
    let fill = [("T1", "100"), ("LOSS", "5")];
    let callee = Sipp::start(
        &s,
        SippRun {
            fill: &fill,
            load: Some(Load {
                calls: CALLS,
                rate: 0,
                limit: 0,
            }),
            ..run("uas_lossy.xml", "lossyphone", "u1", port)
        },
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Sipp::start(
        &s,
        SippRun {
            fill: &fill,
            load: Some(Load {
                calls: CALLS,
                rate: 80,
                limit: 100,
            }),
            ..run("uac_lossy.xml", "lossyphone", "u1", 0)
        },
    )
    .success()
    .await;
    callee.success().await;

    // Without loss a call is 7 messages out of the proxy (100, 180, 200 and the BYE's 200
    // to the caller; INVITE, ACK and BYE to the callee): more means it retransmitted.
    let m = s.metrics().await;
    let sent = gauge(&m, "sipwasm_sip_messages_out_total") - sent_before;
    assert!(
        sent > 7 * u64::from(CALLS),
        "{sent} messages sent for {CALLS} calls: no retransmission at all?"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = s.metrics().await;
        let left = [
            "sipwasm_sip_transactions{side=\"server\"}",
            "sipwasm_sip_transactions{side=\"client\"}",
            "sipwasm_proxy_requests",
            "sipwasm_routing_pending",
        ]
        .map(|series| gauge(&m, series));
        if left == [0; 4] {
            // Only the registration expiry sweep is armed, for the callee's binding.
            assert_eq!(gauge(&m, "sipwasm_sip_timers"), 1, "{m}");
            assert_eq!(gauge(&m, "sipwasm_registrar_bindings"), 1, "{m}");
            assert_eq!(gauge(&m, "sipwasm_registrar_aors"), 1, "{m}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "core state left 30 s after the last call:\n{m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
