//! Interoperability with sipp (a real SIP peer) on UDP and TCP, against browsers on
//! WebSocket.

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::sipp::{Sipp, SippRun};
use sipwasm_tests::*;

fn run<'a>(scenario: &'a str, service: &'a str, transport: &'a str, port: u16) -> SippRun<'a> {
    SippRun {
        scenario,
        service,
        transport,
        port,
        fill: &[],
        keys: &[],
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
