//! The `sip-router` world end to end: the example plugin `plugins/call-policy` as
//! `sip.router`, with real peers (scripted UAs over WS and UDP, sipp as a UDP UAS).

use std::time::Duration;

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::sipp::{Sipp, SippRun};
use sipwasm_tests::*;

/// The standard server with call-policy as the router: 666 blocked, users starting
/// with 9 relayed to `next_hop`, `extra` appended to its settings.
fn server(next_hop: &str, extra: &str) -> Server {
    server_with("{plugins}/call_policy.wasm", next_hop, extra)
}

/// [`server`] with the call-policy at `path` (Rust, JavaScript or Python).
fn server_with(path: &str, next_hop: &str, extra: &str) -> Server {
    Server::standard(&format!(
        r#"
[sip]
router = "router"

[plugins.router]
path = "{path}"
# A debug build under parallel tests: see the seed plugin in `STANDARD`.
deadline = "2s"
{extra}
[plugins.router.config]
blocked = ["666"]
relay = {{ "9" = "{next_hop}" }}
"#
    ))
}

#[tokio::test]
async fn a_prefix_is_relayed_to_a_sipp_uas_over_udp() {
    let port = free_port();
    let s = server(&format!("127.0.0.1:{port}"), "");
    let uas = Sipp::start(
        &s,
        SippRun {
            scenario: "uas_answer.xml",
            service: "9001",
            transport: "u1",
            port,
            fill: &[],
            keys: &[],
            load: None,
        },
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut browser = Ua::ws(&s, "caller").await;
    assert_eq!(browser.register(600).await.status, 200);
    let ok = browser.call_and_hang_up("9001").await;
    assert_eq!(
        ok.headers.values(&HeaderName::RecordRoute).count(),
        2,
        "WS and UDP sides are record-routed"
    );
    uas.success().await;
}

#[tokio::test]
async fn each_closed_flow_is_reported_once_with_the_bindings_it_lost() {
    let s = server("127.0.0.1:9", "");
    let mut carol = Ua::ws(&s, "carol").await;
    assert_eq!(carol.register(600).await.status, 200);
    let mut quiet = Ua::ws(&s, "dave").await;
    let (options, _) = quiet.request("OPTIONS", "sip:localhost", "", "");
    quiet.send(&options).await;
    assert_eq!(quiet.recv_final().await.status, 200);

    // Both tabs disappear without unregistering.
    drop(carol);
    drop(quiet);
    assert!(
        s.wait_for_log("bindings lost: [sip:carol@localhost]").await,
        "{}",
        s.logs()
    );
    assert!(s.wait_for_log("bindings lost: []").await, "{}", s.logs());
    // Once each, even after the server had time to report more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = s.logs();
    assert_eq!(logs.matches("flow closed: ws ").count(), 2, "{logs}");
    assert_eq!(
        logs.matches("bindings lost: [sip:carol@localhost]").count(),
        1,
        "{logs}"
    );

    // The caller of the vanished user gets 480 (known, not reachable), not a hang.
    let mut phone = Ua::udp(&s, "erin").await;
    let (invite, _) = phone.request("INVITE", "carol", "", SDP);
    phone.send(&invite).await;
    assert_eq!(phone.recv_final().await.status, 480);
}

#[tokio::test]
async fn lookup_reads_the_registrar() {
    let s = server("127.0.0.1:9", "");
    let mut browser = Ua::ws(&s, "frank").await;
    assert_eq!(browser.register(600).await.status, 200);
    let mut phone = Ua::udp(&s, "frank").await;
    assert_eq!(phone.register(300).await.status, 200);

    let mut asker = Ua::udp(&s, "grace").await;
    let (q, _) = asker.request(
        "OPTIONS",
        "whereis",
        "X-Lookup: sip:frank@LOCALHOST\r\n",
        "",
    );
    asker.send(&q).await;
    let r = asker.recv_final().await;
    assert_eq!(r.status, 200, "{r:?}");
    let contacts: Vec<&str> = r.headers.values(&HeaderName::Contact).collect();
    assert_eq!(contacts.len(), 2, "{r:?}");
    // Most recent first.
    assert!(contacts[0].contains("transport-used=udp"), "{contacts:?}");
    assert!(contacts[1].contains("transport-used=ws"), "{contacts:?}");

    let (q, _) = asker.request(
        "OPTIONS",
        "whereis",
        "X-Lookup: sip:nobody@localhost\r\n",
        "",
    );
    asker.send(&q).await;
    let r = asker.recv_final().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.values(&HeaderName::Contact).count(), 0);
}

/// A decision the host refuses (a relay target that is not a URI) is a plugin
/// failure: 500 with `failure = "closed"`, the default routing with `"open"`.
#[tokio::test]
async fn an_invalid_decision_gets_the_failure_policy() {
    let s = server("not a uri", "");
    let mut phone = Ua::udp(&s, "henry").await;
    let (msg, _) = phone.request("MESSAGE", "9002", "", "x");
    phone.send(&msg).await;
    assert_eq!(phone.recv_final().await.status, 500);
    assert!(
        s.wait_for_log("plugin failed on a SIP request: invalid decision: relay target")
            .await,
        "{}",
        s.logs()
    );
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"router\",cause=\"invalid\"}")
            .await,
        1
    );

    let s = server("not a uri", "failure = \"open\"");
    let mut phone = Ua::udp(&s, "henry").await;
    let (msg, _) = phone.request("MESSAGE", "9002", "", "x");
    phone.send(&msg).await;
    assert_eq!(
        phone.recv_final().await.status,
        404,
        "open: the default routing (no such user)"
    );
}

#[tokio::test]
async fn in_dialog_requests_skip_the_plugin() {
    let s = server("127.0.0.1:9", "");
    let mut callee = Ua::ws(&s, "ivan").await;
    assert_eq!(callee.register(600).await.status, 200);
    let mut caller = Ua::udp(&s, "judy").await;
    let (invite, dialog) = caller.request("INVITE", "ivan", "", SDP);
    caller.send(&invite).await;
    let inv = callee.recv_request("INVITE").await;
    callee.send(&callee.response(&inv, 200, "", SDP)).await;
    let ok = caller.recv_status(200).await;
    let mut d = caller.dialog_as_caller(dialog, &ok);
    let ack = caller.in_dialog(&mut d, "ACK", Some(1));
    caller.send(&ack).await;
    callee.recv_request("ACK").await;
    // In-dialog: routed by Record-Route, never shown to the plugin (it would not
    // match any rule anyway; the metric tells).
    let calls_before = s
        .metric("sipwasm_plugin_calls_total{plugin=\"router\"}")
        .await;
    assert_eq!(
        calls_before, 2,
        "the REGISTER and the INVITE were shown to the plugin"
    );
    let bye = caller.in_dialog(&mut d, "BYE", None);
    caller.send(&bye).await;
    let b = callee.recv_request("BYE").await;
    callee.send(&callee.response(&b, 200, "", "")).await;
    assert_eq!(caller.recv_final().await.status, 200);
    assert_eq!(
        s.metric("sipwasm_plugin_calls_total{plugin=\"router\"}")
            .await,
        calls_before
    );
}

#[tokio::test]
async fn router_config_errors_name_the_key() {
    for (extra, expected) in [
        (
            "[sip]\nrouter = \"nothing\"\n",
            "sip.router: no plugin named \"nothing\"",
        ),
        (
            "[sip]\nrouter = \"seed\"\n",
            "sip.router: plugin seed is used as sip-router there but as http-handler by listen[",
        ),
        (
            "[sip]\nrouter = \"spare\"\n[plugins.spare]\npath = \"{plugins}/seed_policy.wasm\"\n",
            "does not implement the sip-router world",
        ),
    ] {
        let err = refused_config(&format!("{STANDARD}\n{extra}"));
        assert!(err.contains(expected), "{extra}: {err}");
    }
}

/// The router plugin reloads like any other; a replacement that does not implement
/// `sip-router` is refused and the old version keeps routing.
#[tokio::test]
async fn the_router_reloads_and_refuses_a_replacement_of_another_world() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("router.wasm");
    std::fs::copy(plugin("call_policy"), &live).unwrap();
    let s = Server::standard(&format!(
        r#"
[sip]
router = "router"

[plugins.router]
path = "{}"
[plugins.router.config]
blocked = ["666"]
"#,
        live.display()
    ));
    let tmp = live.with_extension("tmp");
    std::fs::copy(plugin("seed_policy"), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    s.signal("HUP");
    assert!(
        s.wait_for_log("does not implement the sip-router world")
            .await,
        "{}",
        s.logs()
    );
    assert!(
        s.wait_for_log("reload rejected, the old version stays")
            .await
    );
    let mut phone = Ua::udp(&s, "kim").await;
    let (invite, _) = phone.request("INVITE", "666", "", SDP);
    phone.send(&invite).await;
    assert_eq!(
        phone.recv_final().await.status,
        403,
        "the old version still routes"
    );

    std::fs::copy(plugin("call_policy"), &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    s.signal("HUP");
    assert!(s.wait_for_log("plugin reloaded").await, "{}", s.logs());
}

/// `sipwasm plugin run` on a SIP request file shows what a sip-router decides.
#[test]
fn plugin_run_shows_a_routing_decision() {
    let dir = tempfile::tempdir().unwrap();
    let run = |user: &str, config: &str| {
        let request = dir.path().join("invite.sip");
        std::fs::write(
            &request,
            format!(
                "INVITE sip:{user}@localhost SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\n\
                 Max-Forwards: 70\nFrom: <sip:alice@localhost>;tag=1\nTo: <sip:{user}@localhost>\n\
                 Call-ID: run1\nCSeq: 1 INVITE\nContent-Length: 0\n\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(sipwasm_bin())
            .args(["plugin", "run"])
            .arg(plugin("call_policy"))
            .arg("--request")
            .arg(&request)
            .args(["--config", config, "--log", "warn"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let blocked = run("666", "blocked = [\"666\"]");
    assert!(blocked.starts_with("SIP/2.0 403 Blocked\r\n"), "{blocked}");
    assert!(blocked.contains("Call-ID: run1\r\n"), "{blocked}");
    assert!(
        blocked.contains("To: <sip:666@localhost>;tag="),
        "{blocked}"
    );
    let relayed = run("9001", "relay = { \"9\" = \"127.0.0.1:5070\" }");
    assert!(
        relayed.starts_with("relay: forwarded statefully to sip:9001@127.0.0.1:5070"),
        "{relayed}"
    );
    let other = run("bob", "blocked = [\"666\"]");
    assert!(other.starts_with("continue:"), "{other}");
}

/// call-policy with Digest authentication on REGISTER and MESSAGE.
fn auth_server(algorithms: &str) -> Server {
    Server::standard(&format!(
        r#"
[sip]
router = "router"
digest-algorithms = [{algorithms}]

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
deadline = "2s"
[plugins.router.config.auth]
realm = "sipwasm"
methods = ["REGISTER", "MESSAGE"]
users = {{ alice = "alice-secret", bob = "bob-secret", carol = "carol-secret" }}
"#
    ))
}

fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` answer to a challenge value, RFC 2617 with qop=auth. Each answer
/// takes the next nonce count, as a client does for every request it sends with a
/// nonce (the server refuses a count used before by another request).
fn digest_answer(challenge: &str, user: &str, password: &str, method: &str, uri: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NC: AtomicU32 = AtomicU32::new(1);
    let nc = format!("{:08x}", NC.fetch_add(1, Ordering::Relaxed));
    let param = |name: &str| {
        let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        challenge[start..][..challenge[start..].find('"').unwrap()].to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\""
    )
}

#[tokio::test]
async fn the_router_authenticates_with_digest() {
    let s = auth_server("\"MD5\"");
    let mut alice = Ua::udp(&s, "alice").await;
    let r = alice.register(600).await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenges: Vec<&str> = r.headers.get_all(&HeaderName::WwwAuthenticate).collect();
    assert_eq!(
        challenges.len(),
        1,
        "MD5 only by default, for interop: {r:?}"
    );
    assert!(challenges[0].contains("algorithm=MD5"), "{challenges:?}");

    let register = |ua: &mut Ua, auth: &str| {
        ua.register_text(600).replace(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
        )
    };
    // The right password.
    let good = digest_answer(
        challenges[0],
        "alice",
        "alice-secret",
        "REGISTER",
        "sip:localhost",
    );
    let text = register(&mut alice, &good);
    alice.send(&text).await;
    assert_eq!(alice.recv_final().await.status, 200);
    // A wrong one.
    let bad = digest_answer(challenges[0], "alice", "guess", "REGISTER", "sip:localhost");
    let text = register(&mut alice, &bad);
    alice.send(&text).await;
    let r = alice.recv_final().await;
    assert_eq!((r.status, r.reason.as_str()), (403, "Wrong Credentials"));
    // Good credentials of another user do not register alice.
    let mallory = digest_answer(
        challenges[0],
        "carol",
        "carol-secret",
        "REGISTER",
        "sip:localhost",
    );
    let text = register(&mut alice, &mallory);
    alice.send(&text).await;
    let r = alice.recv_final().await;
    assert_eq!((r.status, r.reason.as_str()), (403, "Not Your Address"));
    // A To tag does not make a REGISTER part of a dialog: challenged all the same.
    let tagged = alice.register_text(600).replace(
        "To: <sip:alice@localhost>",
        "To: <sip:alice@localhost>;tag=forged",
    );
    assert!(tagged.contains(";tag=forged"), "{tagged}");
    alice.send(&tagged).await;
    assert_eq!(alice.recv_final().await.status, 401);
    // A forged nonce is not ours.
    let forged = good.replace(&good[good.find("nonce=\"").unwrap() + 7..][..8], "AAAAAAAA");
    let text = register(&mut alice, &forged);
    alice.send(&text).await;
    assert_eq!(alice.recv_final().await.status, 403);

    // A MESSAGE is challenged by the proxy (407).
    let (msg, _) = alice.request("MESSAGE", "bob", "", "hi");
    alice.send(&msg).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 407, "{r:?}");
    assert!(r.headers.get(&HeaderName::ProxyAuthenticate).is_some());
    // OPTIONS is not in the list: no challenge.
    let (opt, _) = alice.request("OPTIONS", "sip:localhost", "", "");
    alice.send(&opt).await;
    assert_eq!(alice.recv_final().await.status, 200);
    // A MESSAGE with a forged To tag is a new request to the plugin: challenged.
    let (msg, _) = alice.request("MESSAGE", "bob", "", "hi");
    let msg = msg.replace(
        "To: <sip:bob@localhost>",
        "To: <sip:bob@localhost>;tag=forged",
    );
    assert!(msg.contains(";tag=forged"), "{msg}");
    alice.send(&msg).await;
    assert_eq!(alice.recv_final().await.status, 407);
}

/// Issue 18, item 4: mallory, authenticated with his own password, names alice's AoR in
/// To behind a display name that looks like his own URI. The plugin checks the host's
/// parse of To (alice), not the header text: 403, and alice has no binding.
#[tokio::test]
async fn a_display_name_does_not_hijack_a_registration() {
    let s = auth_server("\"MD5\"");
    let mut mallory = Ua::udp(&s, "carol").await;
    let r = mallory.register(600).await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r.headers.get(&HeaderName::WwwAuthenticate).unwrap();
    let auth = digest_answer(
        challenge,
        "carol",
        "carol-secret",
        "REGISTER",
        "sip:localhost",
    );
    let text = mallory
        .register_text(600)
        .replace(
            "To: <sip:carol@localhost>",
            "To: \"sip:carol@localhost\" <sip:alice@localhost>",
        )
        .replace(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
        );
    assert!(text.contains("<sip:alice@localhost>"), "{text}");
    mallory.send(&text).await;
    let r = mallory.recv_final().await;
    assert_eq!((r.status, r.reason.as_str()), (403, "Not Your Address"));
    // Nothing was bound for alice (the plugin's registrar look-up says so).
    let mut asker = Ua::udp(&s, "grace").await;
    let (q, _) = asker.request(
        "OPTIONS",
        "whereis",
        "X-Lookup: sip:alice@localhost\r\n",
        "",
    );
    asker.send(&q).await;
    let r = asker.recv_final().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers.values(&HeaderName::Contact).count(), 0, "{r:?}");
}

#[tokio::test]
async fn browser_stacks_answer_the_routers_challenges() {
    use serde_json::json;
    use sipwasm_tests::js::{Agent, Lib};
    let s = auth_server("\"MD5\"");
    let mut alice = Agent::start_with(&s, Lib::JsSip, "alice", None, Some("alice-secret")).await;
    let mut bob = Agent::start_with(&s, Lib::SipJs, "bob", None, Some("bob-secret")).await;
    alice.register().await;
    bob.register().await;
    alice
        .cmd(json!({"cmd": "message", "target": "bob", "body": "authenticated hello"}))
        .await;
    assert_eq!(bob.expect("message").await["body"], "authenticated hello");
    alice.expect("message_sent").await;
    bob.cmd(json!({"cmd": "message", "target": "alice", "body": "and back"}))
        .await;
    assert_eq!(alice.expect("message").await["body"], "and back");
    bob.expect("message_sent").await;
    // The wrong password never registers.
    let mut eve = Agent::start_with(&s, Lib::JsSip, "carol", None, Some("wrong")).await;
    eve.cmd(json!({"cmd": "register"})).await;
    let failed = eve.expect("registration_failed").await;
    assert_eq!(failed["status"], 403, "{failed}");
}

#[tokio::test]
async fn sha256_challenges_when_configured() {
    let s = auth_server("\"SHA-256\", \"MD5\"");
    let mut ua = Ua::udp(&s, "alice").await;
    let r = ua.register(600).await;
    let challenges: Vec<&str> = r.headers.get_all(&HeaderName::WwwAuthenticate).collect();
    assert_eq!(challenges.len(), 2, "{r:?}");
    assert!(challenges[0].contains("algorithm=SHA-256"));
    assert!(challenges[1].contains("algorithm=MD5"));
}

/// Issue 18, item 6: alice's credentials for a MESSAGE to bob, sniffed, work for nothing
/// else: not on a MESSAGE to carol (another Request-URI), not again to bob on another
/// Call-ID with the same nonce count.
#[tokio::test]
async fn sniffed_credentials_work_for_nothing_else() {
    let s = auth_server("\"MD5\"");
    let mut alice = Ua::udp(&s, "alice").await;
    let (msg, _) = alice.request("MESSAGE", "bob", "", "hi");
    alice.send(&msg).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 407, "{r:?}");
    let challenge = r.headers.get(&HeaderName::ProxyAuthenticate).unwrap();
    let creds = digest_answer(
        challenge,
        "alice",
        "alice-secret",
        "MESSAGE",
        "sip:bob@localhost",
    );
    let with_creds = |text: String| {
        text.replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nProxy-Authorization: {creds}\r\n"),
            1,
        )
    };
    // Accepted: routing answers (bob is not registered).
    let (msg, _) = alice.request("MESSAGE", "bob", "", "hi");
    alice.send(&with_creds(msg)).await;
    let r = alice.recv_final().await;
    assert!(matches!(r.status, 404 | 480), "{r:?}");
    // The same credentials on a MESSAGE to carol: refused.
    let (msg, _) = alice.request("MESSAGE", "carol", "", "hi");
    alice.send(&with_creds(msg)).await;
    let r = alice.recv_final().await;
    assert!(matches!(r.status, 403 | 407), "{r:?}");
    // Again to bob on a new Call-ID with the same count: challenged again.
    let (msg, _) = alice.request("MESSAGE", "bob", "", "hi");
    alice.send(&with_creds(msg)).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 407, "{r:?}");
}

/// Issue 18, item 7: twelve REGISTERs with alice's username, a made-up nonce and a
/// garbage response, from alice's address (over UDP anyone can forge it), do not lock
/// alice out: only a wrong answer to a nonce given to that address counts as a guess.
#[tokio::test]
async fn a_spoofed_source_cannot_lock_out_its_victim() {
    let s = auth_server("\"MD5\"");
    let mut spoofer = Ua::udp_from(&s, "alice", "127.0.0.5").await;
    for i in 0..12 {
        let text = spoofer.register_text(600).replace(
            "Content-Length: 0\r\n",
            &format!(
                "Authorization: Digest username=\"alice\", realm=\"sipwasm\", nonce=\"madeup{i}\", \
                 uri=\"sip:localhost\", response=\"0123456789abcdef0123456789abcdef\"\r\nContent-Length: 0\r\n"
            ),
        );
        spoofer.send(&text).await;
        let r = spoofer.recv_final().await;
        assert!(matches!(r.status, 401 | 403), "{r:?}");
    }
    // alice herself, from that address, with her password.
    let mut alice = Ua::udp_from(&s, "alice", "127.0.0.5").await;
    let r = alice.register(600).await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r.headers.get(&HeaderName::WwwAuthenticate).unwrap();
    let auth = digest_answer(
        challenge,
        "alice",
        "alice-secret",
        "REGISTER",
        "sip:localhost",
    );
    let text = alice.register_text(600).replace(
        "Content-Length: 0\r\n",
        &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
    );
    alice.send(&text).await;
    assert_eq!(alice.recv_final().await.status, 200);
    assert_eq!(s.metric("sipwasm_digest_bans_total").await, 0);
}

/// What every call-policy (Rust, JavaScript, Python) does with the same settings:
/// blocked numbers get 403, others the registrar and proxy, a prefix is relayed to its
/// next hop, and a closed connection is logged with the bindings it lost.
async fn call_policy_table(path: &str) {
    let hop = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let next_hop = hop.local_addr().unwrap().to_string();
    // The Python interpreter needs more than the default 32 MiB.
    let s = server_with(path, &next_hop, "memory-limit = \"96MiB\"");
    let mut phone = Ua::udp(&s, "alice").await;
    assert_eq!(phone.register(600).await.status, 200, "REGISTER continues");
    let mut browser = Ua::ws(&s, "bob").await;
    assert_eq!(browser.register(600).await.status, 200);

    for method in ["INVITE", "MESSAGE"] {
        let body = if method == "INVITE" { SDP } else { "hi" };
        let (req, _) = phone.request(method, "666", "", body);
        phone.send(&req).await;
        let r = phone.recv_final().await;
        assert_eq!((r.status, r.reason.as_str()), (403, "Blocked"), "{method}");
        assert!(
            r.headers
                .get(&HeaderName::To)
                .is_some_and(|t| t.contains("tag=")),
            "{r:?}"
        );
    }
    assert!(
        s.wait_for_log("blocked INVITE to 666 from 127.0.0.1:")
            .await
    );

    // Not blocked: the default proxy delivers it.
    let (msg, _) = phone.request("MESSAGE", "bob", "", "hello bob");
    phone.send(&msg).await;
    let got = browser.recv_request("MESSAGE").await;
    assert_eq!(&got.body[..], b"hello bob");
    browser.send(&browser.response(&got, 200, "", "")).await;
    assert_eq!(phone.recv_final().await.status, 200);
    // An unknown user still gets the registrar's 404.
    let (msg, _) = phone.request("MESSAGE", "nobody", "", "x");
    phone.send(&msg).await;
    assert_eq!(phone.recv_final().await.status, 404);

    // Relayed: the next hop gets it with the user at its address.
    let (msg, _) = phone.request("MESSAGE", "9001", "", "to the trunk");
    phone.send(&msg).await;
    let mut buf = vec![0u8; 4096];
    let n = within("the relayed MESSAGE", hop.recv(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with(&format!("MESSAGE sip:9001@{next_hop} SIP/2.0")),
        "{text}"
    );

    // The browser disappears without unregistering.
    drop(browser);
    assert!(
        s.wait_for_log("bindings lost: [sip:bob@localhost]").await,
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn call_policy_in_rust_passes_the_table() {
    call_policy_table("{plugins}/call_policy.wasm").await;
}

#[tokio::test]
async fn call_policy_in_javascript_passes_the_table() {
    call_policy_table("{foreign}/call_policy_js.wasm").await;
}

#[tokio::test]
async fn call_policy_in_python_passes_the_table() {
    call_policy_table("{foreign}/call_policy_py.wasm").await;
}
