//! A real phone, baresip, through sipwasm: registered over UDP, TCP and TLS, calling
//! other phones and browser SIP stacks (JsSIP and SIP.js over WebSocket) with each side
//! hanging up, CANCEL, busy, and phones that go away with and without unregistering;
//! and a second phone, Linphone, which puts its GRUU in its Contacts.

use serde_json::json;
use sipwasm_tests::js::{Agent, Lib};
use sipwasm_tests::linphone::Linphone;
use sipwasm_tests::phone::{Phone, Transport};
use sipwasm_tests::*;

/// `caller` calls `callee`, who answers; then one of them hangs up and both see the
/// call end.
async fn call(caller: &mut Phone, callee: &mut Phone, callee_hangs_up: bool) {
    caller.dial(&callee.user).await;
    callee.expect("CALL_INCOMING").await;
    caller.expect("CALL_RINGING").await;
    callee.cmd("accept", "").await;
    caller.expect("CALL_ESTABLISHED").await;
    callee.expect("CALL_ESTABLISHED").await;
    let (hanger, other) = if callee_hangs_up {
        (callee, caller)
    } else {
        (caller, callee)
    };
    hanger.cmd("hangup", "").await;
    hanger.expect("CALL_CLOSED").await;
    // The BYE reached the other side through the proxy.
    let closed = other.expect("CALL_CLOSED").await;
    assert!(
        !closed["param"]
            .as_str()
            .unwrap_or_default()
            .contains("timeout"),
        "{}: call ended by a timeout, not the BYE: {closed}",
        other.user
    );
}

/// Waits for `phone`'s call to close and checks the SIP status that closed it.
async fn closes_with(phone: &mut Phone, status: &str) {
    let closed = phone.expect("CALL_CLOSED").await;
    assert!(
        closed["param"]
            .as_str()
            .unwrap_or_default()
            .starts_with(status),
        "{}: {closed}",
        phone.user
    );
}

#[tokio::test]
async fn phones_over_udp_tcp_and_tls_call_each_other() {
    let s = Server::standard("");
    let mut alice = Phone::start(&s, "alice", Transport::Udp).await;
    let mut bob = Phone::start(&s, "bob", Transport::Tcp).await;
    let mut carol = Phone::start(&s, "carol", Transport::Tls).await;
    // Every pair of transports, each direction of hang-up.
    call(&mut alice, &mut bob, true).await;
    call(&mut bob, &mut carol, false).await;
    call(&mut carol, &mut alice, true).await;
    call(&mut bob, &mut alice, false).await;
}

#[tokio::test]
async fn phones_over_ipv6_loopback() {
    // The same port on ::1 beside 127.0.0.1.
    let s = Server::standard(
        r#"
[[listen]]
transport = "udp"
address = "[::1]:{sip}"

[[listen]]
transport = "tcp"
address = "[::1]:{sip}"
"#,
    );
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.sip.port()));
    let mut alice = Phone::start_via(v6, "alice", Transport::Udp).await;
    let mut bob = Phone::start_via(v6, "bob", Transport::Tcp).await;
    for user in ["alice", "bob"] {
        let needle = format!("binding saved aor=sip:{user}@localhost");
        assert!(s.wait_for_log(&needle).await, "{}", s.logs());
        let logs = s.logs();
        let saved = logs
            .lines()
            .find(|l| l.contains(&format!("binding saved aor=sip:{user}@localhost")))
            .unwrap_or_else(|| panic!("no binding for {user}:\n{logs}"));
        assert!(saved.contains("@[::1]:"), "{saved}");
    }
    call(&mut alice, &mut bob, true).await;
    call(&mut bob, &mut alice, false).await;
}

#[tokio::test]
async fn phone_cancel_and_busy() {
    let s = Server::standard("");
    let mut alice = Phone::start(&s, "alice", Transport::Udp).await;
    let mut bob = Phone::start(&s, "bob", Transport::Tcp).await;
    // The caller gives up while it rings: CANCEL, the callee stops ringing.
    alice.dial("bob").await;
    bob.expect("CALL_INCOMING").await;
    alice.expect("CALL_RINGING").await;
    alice.cmd("hangup", "").await;
    alice.expect("CALL_CLOSED").await;
    bob.expect("CALL_CLOSED").await;
    // The callee is busy: its 486 reaches the caller.
    alice.dial("bob").await;
    bob.expect("CALL_INCOMING").await;
    alice.expect("CALL_RINGING").await;
    bob.cmd("hangup", "").await;
    closes_with(&mut alice, "486").await;
    // An unknown user: 404.
    alice.dial("nobody").await;
    closes_with(&mut alice, "404").await;
}

#[tokio::test]
async fn browsers_and_phones_call_each_other() {
    let s = Server::standard("");
    let mut web = Agent::start_for_phones(&s, Lib::JsSip, "web").await;
    web.register().await;
    let mut phone = Phone::start(&s, "phone", Transport::Udp).await;

    // Browser (WS) calls the phone (UDP); the browser hangs up.
    web.cmd(json!({"cmd": "call", "target": "phone"})).await;
    phone.expect("CALL_INCOMING").await;
    phone.cmd("accept", "").await;
    phone.expect("CALL_ESTABLISHED").await;
    web.expect("accepted").await;
    // Let the ACK get through before hanging up.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    web.cmd(json!({"cmd": "hangup"})).await;
    phone.expect("CALL_CLOSED").await;
    web.expect("ended").await;

    // The phone calls the browser; the phone hangs up (its BYE follows the flow token
    // in the Record-Route to the browser's connection).
    phone.dial("web").await;
    web.expect("incoming").await;
    web.cmd(json!({"cmd": "answer"})).await;
    phone.expect("CALL_ESTABLISHED").await;
    web.expect("accepted").await;
    phone.cmd("hangup", "").await;
    phone.expect("CALL_CLOSED").await;
    web.expect("ended").await;

    // SIP.js over WS and a phone on TLS, the phone declining.
    let mut sipjs = Agent::start_for_phones(&s, Lib::SipJs, "sipjs").await;
    sipjs.register().await;
    let mut secure = Phone::start(&s, "secure", Transport::Tls).await;
    sipjs.cmd(json!({"cmd": "call", "target": "secure"})).await;
    secure.expect("CALL_INCOMING").await;
    secure.cmd("hangup", "").await;
    assert_eq!(sipjs.expect("failed").await["status"], 486);
    // And answering.
    sipjs.cmd(json!({"cmd": "call", "target": "secure"})).await;
    secure.expect("CALL_INCOMING").await;
    secure.cmd("accept", "").await;
    secure.expect("CALL_ESTABLISHED").await;
    sipjs.expect("accepted").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    secure.cmd("hangup", "").await;
    sipjs.expect("ended").await;
}

#[tokio::test]
async fn phones_that_go_away_are_unavailable() {
    let s = Server::standard("");
    let mut alice = Phone::start(&s, "alice", Transport::Udp).await;
    // A TCP phone that dies without unregistering: its connection closes, and with it
    // its binding.
    let bob = Phone::start(&s, "bob", Transport::Tcp).await;
    bob.kill().await;
    assert!(
        s.wait_for_log("binding removed aor=sip:bob@localhost")
            .await,
        "{}",
        s.logs()
    );
    alice.dial("bob").await;
    closes_with(&mut alice, "480").await;
    // A UDP phone that quits unregisters first.
    let carol = Phone::start(&s, "carol", Transport::Udp).await;
    carol.quit().await;
    assert!(
        s.wait_for_log("binding removed aor=sip:carol@localhost")
            .await,
        "{}",
        s.logs()
    );
    alice.dial("carol").await;
    closes_with(&mut alice, "480").await;
}

/// `holder` puts its call with `held` on hold and takes it back: two re-INVITEs within
/// the dialog.
async fn hold_and_resume(holder: &mut Linphone, held: &mut Linphone) {
    holder.cmd("pause").await;
    holder.expect("is now paused").await;
    held.expect(&format!("has been paused by sip:{}@localhost", holder.user))
        .await;
    holder.cmd("resume").await;
    holder.expect("Media streams established").await;
    held.expect("Media streams established").await;
}

#[tokio::test]
async fn linphone_calls_and_messages_phones_and_browsers() {
    let s = Server::standard("");
    let mut lin = Linphone::start(&s, "lin", Transport::Udp).await;
    let mut tcp = Linphone::start(&s, "lintcp", Transport::Tcp).await;

    // Linphone to Linphone (UDP to TCP): the callee answers, the caller hangs up. Both
    // Contacts are GRUUs, so the ACK and BYE are routed by the registrar or a flow token.
    lin.call("lintcp").await;
    lin.expect("ringing").await;
    tcp.answer_from("lin").await;
    lin.expect("connected").await;
    tcp.expect("connected").await;
    lin.expect("Media streams established").await;
    tcp.expect("Media streams established").await;
    // Hold and resume from each side: re-INVITEs within the dialog, from the caller
    // (for the callee's GRUU, by its flow token) and from the callee (for the caller's
    // GRUU, found by the registrar).
    hold_and_resume(&mut lin, &mut tcp).await;
    hold_and_resume(&mut tcp, &mut lin).await;
    lin.cmd("terminate").await;
    lin.expect("ended").await;
    tcp.expect("ended").await;
    // And back, the callee hanging up.
    tcp.call("lin").await;
    lin.answer_from("lintcp").await;
    tcp.expect("connected").await;
    lin.expect("connected").await;
    lin.cmd("terminate").await;
    tcp.expect("ended").await;
    lin.expect("ended").await;
    // A message (and the IMDN reports it sends back).
    tcp.cmd("chat sip:lin@localhost over tcp and udp").await;
    assert!(
        lin.expect("Message received from sip:lintcp@localhost")
            .await
            .ends_with("over tcp and udp")
    );

    // A browser stack (JsSIP over WS) calls Linphone; Linphone hangs up: its BYE goes
    // out with the browser's flow token in the route set.
    let mut web = Agent::start_for_phones(&s, Lib::JsSip, "web").await;
    web.register().await;
    web.cmd(json!({"cmd": "call", "target": "lin"})).await;
    lin.answer_from("web").await;
    web.expect("accepted").await;
    lin.expect("connected").await;
    lin.expect("Media streams established").await;
    // Let the ACK get through before the re-INVITEs.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The browser holds and resumes (re-INVITEs from the WS side, for Linphone's GRUU).
    web.cmd(json!({"cmd": "hold"})).await;
    assert_eq!(web.expect("hold").await["by"], "local");
    web.expect("held").await;
    lin.expect("has been paused by sip:web@localhost").await;
    web.cmd(json!({"cmd": "unhold"})).await;
    assert_eq!(web.expect("unhold").await["by"], "local");
    web.expect("resumed").await;
    lin.expect("Media streams established").await;
    // Linphone holds and resumes (re-INVITEs to the browser's connection).
    lin.cmd("pause").await;
    lin.expect("is now paused").await;
    assert_eq!(web.expect("hold").await["by"], "remote");
    lin.cmd("resume").await;
    lin.expect("Media streams established").await;
    assert_eq!(web.expect("unhold").await["by"], "remote");
    lin.cmd("terminate").await;
    web.expect("ended").await;
    lin.expect("ended").await;
    // Linphone calls the browser; the browser hangs up: its BYE is for Linphone's GRUU.
    lin.call("web").await;
    web.expect("incoming").await;
    web.cmd(json!({"cmd": "answer"})).await;
    lin.expect("connected").await;
    web.expect("accepted").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    web.cmd(json!({"cmd": "hangup"})).await;
    web.expect("ended").await;
    lin.expect("ended").await;
    // The browser declines: Linphone hears why.
    lin.call("web").await;
    web.expect("incoming").await;
    web.cmd(json!({"cmd": "reject", "status": 486})).await;
    lin.expect("Call 5 with sip:web@localhost error").await;
    assert!(
        lin.logged(|l| l.starts_with("SIP/2.0 486 ")),
        "the browser's 486 reached Linphone"
    );

    // Linphone and baresip.
    let mut bare = Phone::start(&s, "bare", Transport::Udp).await;
    bare.dial("lintcp").await;
    tcp.answer_from("bare").await;
    bare.expect("CALL_ESTABLISHED").await;
    tcp.expect("connected").await;
    bare.cmd("hangup", "").await;
    bare.expect("CALL_CLOSED").await;
    tcp.expect("ended").await;

    // Unknown users: 404 reaches Linphone.
    lin.call("nobody").await;
    lin.expect("Call 6 with sip:nobody@localhost error").await;
    assert!(
        lin.logged(|l| l.starts_with("SIP/2.0 404 ")),
        "the 404 reached Linphone"
    );

    // Blind transfer: Linphone's REFER and the NOTIFYs about it cross the proxy in the
    // dialog, the transferee's new INVITE reaches the third phone (over TLS).
    let mut third = Linphone::start(&s, "third", Transport::Tls).await;
    lin.call("lintcp").await;
    tcp.answer_from("lin").await;
    lin.expect("connected").await;
    tcp.expect("connected").await;
    lin.cmd("transfer sip:third@localhost").await;
    third.answer_from("lintcp").await;
    tcp.expect("with sip:third@localhost connected").await;
    third.expect("connected").await;
    lin.expect("has been transfered").await;
    lin.expect("ended").await;
    third.cmd("terminate").await;
    tcp.expect("with sip:third@localhost ended").await;
    lin.quit().await;
    assert!(
        s.wait_for_log("binding removed aor=sip:lin@localhost")
            .await,
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn linphone_authenticates_with_sha256_digest() {
    // The example policy plugin as the router, asking for Digest on REGISTER, INVITE and
    // MESSAGE, SHA-256 offered first (RFC 8760).
    let s = Server::standard(
        r#"
[sip]
router = "router"
digest-algorithms = ["SHA-256", "MD5"]

[plugins.router]
path = "{plugins}/call_policy.wasm"
deadline = "2s"
[plugins.router.config.auth]
realm = "sipwasm"
methods = ["REGISTER", "INVITE", "MESSAGE"]
users = { lina = "lina-secret", linb = "linb-secret" }
"#,
    );
    let mut a = Linphone::start_with(&s, "lina", Transport::Udp, Some("lina-secret")).await;
    let mut b = Linphone::start_with(&s, "linb", Transport::Tcp, Some("linb-secret")).await;
    for phone in [&a, &b] {
        assert!(
            phone.logged(|l| l.starts_with("Authorization:") && l.contains("algorithm=SHA-256")),
            "{} answered the challenge with SHA-256",
            phone.user
        );
    }
    // The INVITE is challenged (407; its ACK ends here), then goes through.
    a.call("linb").await;
    b.answer_from("lina").await;
    assert!(a.logged(|l| l.starts_with("SIP/2.0 407 ")));
    a.expect("connected").await;
    b.expect("connected").await;
    b.cmd("terminate").await;
    a.expect("ended").await;
    b.expect("ended").await;
    // MESSAGE is challenged and authenticated too.
    b.cmd("chat sip:lina@localhost signed").await;
    assert!(
        a.expect("Message received from sip:linb@localhost")
            .await
            .ends_with("signed")
    );
    assert!(b.logged(|l| l.starts_with("Proxy-Authorization:") && l.contains("algorithm=SHA-256")));
}
