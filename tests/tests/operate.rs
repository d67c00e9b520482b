//! Operating the server: what an operator's tools see of it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sipwasm::sip::message::Essentials as _;
use sipwasm_tests::sip::Ua;
use sipwasm_tests::*;

/// Debian's sngrep.
const SNGREP: &str = "/usr/bin/sngrep";

/// Whether a UDP port is taken (by the collector started on it).
fn udp_taken(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// The last "Dialog count: N" sngrep printed (it rewrites one line with `\r`).
fn dialogs(out: &str) -> Option<u32> {
    out.split("Dialog count: ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .last()
}

#[tokio::test]
async fn sngrep_receives_the_registers_over_hep() {
    assert!(
        std::path::Path::new(SNGREP).exists(),
        "{SNGREP} is missing: run ./tests/run-all.sh (it installs Debian's sngrep)"
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // sngrep without its interface, listening for HEP. Its input is an empty capture
    // file instead of a live device, so that only what comes by HEP counts (the
    // test's SIP on loopback is not sniffed). (sngrep 1.6 writes no -O file while it
    // listens for HEP: what it counts is the evidence.)
    let empty = dir.path().join("empty.pcap");
    let mut header = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65_535, 1] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&empty, header).unwrap();
    let mut sngrep = Command::new(SNGREP)
        .args(["-N", "-I"])
        .arg(&empty)
        .arg("-L")
        .arg(format!("udp:127.0.0.1:{port}"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sngrep");
    let logs = capture_stderr(&mut sngrep);
    // Read as it comes: sngrep rewrites one line (`\r`), ended only when it exits.
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        use std::io::Read as _;
        let (mut stdout, sink) = (sngrep.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut text = sink.lock().unwrap();
                if text.len() < 1 << 20 {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !udp_taken(port) {
        assert!(
            Instant::now() < deadline,
            "sngrep did not listen within 10 s: {}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = Server::standard(&format!(
        "[capture]\nhep = [\"udp:127.0.0.1:{port}\"]\nagent-id = 2001\n"
    ));
    // Two phones register (two Call-IDs): sngrep sees two dialogs, parsed from the
    // HEP packets (REGISTERs in, 200s out).
    for user in ["cap1", "cap2"] {
        let mut phone = Ua::udp(&s, user).await;
        assert_eq!(phone.register(600).await.status, 200);
    }
    let mut seen = None;
    for _ in 0..100 {
        seen = dialogs(&out.lock().unwrap());
        if seen == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = sngrep.kill();
    let _ = sngrep.wait();
    assert_eq!(
        seen,
        Some(2),
        "sngrep: {:?} / {}",
        out.lock().unwrap(),
        logs.lock().unwrap()
    );
}

/// call-policy as `sip.router`, blocking calls and messages to 666.
const ROUTER_BLOCKING_666: &str = r#"
[sip]
router = "router"

[plugins.router]
path = "{plugins}/call_policy.wasm"
deadline = "2s"
[plugins.router.config]
blocked = ["666"]
"#;

/// `sip:USER@localhost` percent-encoded as a path segment.
fn aor_segment(user: &str) -> String {
    format!("sip%3A{user}%40localhost")
}

/// A WebSocket flow that carried SIP (an OPTIONS and its 200), and its id: the
/// newest flow the control API lists.
async fn raw_flow(s: &Server, branch: &str) -> (Ws<tokio::net::TcpStream>, u64) {
    let mut raw = ws_connect_to(s).await;
    options_round_trip(&mut raw, branch, "WS", false).await;
    let (_, flows) = s.api("GET", "/api/v1/flows", None).await;
    let id = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_u64())
        .max()
        .unwrap();
    (raw, id)
}

/// The one binding a registration answer lists.
fn only_binding(v: &serde_json::Value) -> &serde_json::Value {
    let b = v["bindings"].as_array().expect("bindings");
    assert_eq!(b.len(), 1, "{v}");
    &b[0]
}

/// A call from `caller` to `callee` (both registered), answered and ACKed; the
/// caller's dialog and the callee's INVITE.
async fn call(
    caller: &mut Ua,
    callee: &mut Ua,
    to: &str,
) -> (sipwasm_tests::sip::Dialog, sipwasm::sip::Request) {
    let (invite, dialog) = caller.request("INVITE", to, "", sipwasm_tests::sip::SDP);
    caller.send(&invite).await;
    let inv = callee.recv_request("INVITE").await;
    callee
        .send(&callee.response(&inv, 200, "", sipwasm_tests::sip::SDP))
        .await;
    let ok = caller.recv_status(200).await;
    let mut d = caller.dialog_as_caller(dialog, &ok);
    let ack = caller.in_dialog(&mut d, "ACK", Some(1));
    caller.send(&ack).await;
    callee.recv_request("ACK").await;
    (d, inv)
}

/// The control API: registrations with their filters, one AoR, a binding removed;
/// flows with their traffic, one closed with a reason its client reads in the close
/// frame; transactions and dialogs in flight; plugins; and clear answers to bad input.
#[tokio::test]
async fn the_control_api_lists_removes_and_closes() {
    use futures_util::StreamExt as _;
    let s = Server::standard("");
    let mut alice = Ua::udp(&s, "alice").await;
    let mut carol = Ua::tcp(&s, "carol").await;
    let mut bob = Ua::ws(&s, "bob").await;
    for ua in [&mut alice, &mut carol, &mut bob] {
        assert_eq!(ua.register(600).await.status, 200);
    }

    let (status, all) = s.api("GET", "/api/v1/registrations", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 3, "{all}");
    assert_eq!(all["truncated"], false);
    let aors: Vec<&str> = all["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["aor"].as_str().unwrap())
        .collect();
    assert_eq!(
        aors,
        [
            "sip:alice@localhost",
            "sip:bob@localhost",
            "sip:carol@localhost"
        ]
    );
    let (_, by_prefix) = s
        .api("GET", "/api/v1/registrations?prefix=sip%3Ab", None)
        .await;
    assert_eq!(by_prefix["total"], 1, "{by_prefix}");
    assert_eq!(by_prefix["registrations"][0]["aor"], "sip:bob@localhost");
    let (_, by_aor) = s
        .api(
            "GET",
            "/api/v1/registrations?aor=sip%3Acarol%40localhost",
            None,
        )
        .await;
    assert_eq!(by_aor["total"], 1, "{by_aor}");
    let (_, other_node) = s
        .api("GET", "/api/v1/registrations?node=elsewhere", None)
        .await;
    assert_eq!(other_node["total"], 0, "{other_node}");
    let (_, cut) = s.api("GET", "/api/v1/registrations?limit=2", None).await;
    assert_eq!(cut["truncated"], true, "{cut}");

    let (status, one) = s
        .api(
            "GET",
            &format!("/api/v1/registrations/{}", aor_segment("alice")),
            None,
        )
        .await;
    assert_eq!(status, 200, "{one}");
    let b = only_binding(&one);
    assert_eq!(b["transport"], "UDP");
    assert_eq!(b["reach"], "udp");
    assert_eq!(b["user_agent"], "sipwasm-tests");
    assert!(b["expires_in"].as_u64().unwrap() > 590, "{b}");
    let (_, bob_reg) = s
        .api(
            "GET",
            &format!("/api/v1/registrations/{}", aor_segment("bob")),
            None,
        )
        .await;
    let bob_flow = only_binding(&bob_reg)["flow"].as_u64().expect("bob's flow");

    // Flows with their traffic: bob's WebSocket read a REGISTER and wrote its 200.
    let (status, flows) = s.api("GET", "/api/v1/flows", None).await;
    assert_eq!(status, 200);
    let f = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"].as_u64() == Some(bob_flow))
        .unwrap_or_else(|| panic!("bob's flow {bob_flow} in {flows}"));
    assert_eq!(f["transport"], "WS");
    assert!(f["messages_in"].as_u64().unwrap() >= 1, "{f}");
    assert!(f["messages_out"].as_u64().unwrap() >= 1, "{f}");
    assert!(f["bytes_in"].as_u64().unwrap() > 100, "{f}");
    assert!(f["bytes_out"].as_u64().unwrap() > 100, "{f}");

    // A call in progress: its INVITE's transaction, then its dialog.
    let (invite, dialog) = alice.request("INVITE", "carol", "", sipwasm_tests::sip::SDP);
    alice.send(&invite).await;
    let inv = carol.recv_request("INVITE").await;
    let call_id = inv.call_id().unwrap().to_string();
    let (_, txs) = s.api("GET", "/api/v1/transactions", None).await;
    assert!(txs["server"].as_u64().unwrap() >= 1, "{txs}");
    assert!(
        txs["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["call_id"] == call_id.as_str()
                && t["method"] == "INVITE"
                && t["kind"] == "server"),
        "{txs}"
    );
    carol
        .send(&carol.response(&inv, 200, "", sipwasm_tests::sip::SDP))
        .await;
    let ok = alice.recv_status(200).await;
    let mut d = alice.dialog_as_caller(dialog, &ok);
    let ack = alice.in_dialog(&mut d, "ACK", Some(1));
    alice.send(&ack).await;
    carol.recv_request("ACK").await;
    let (_, dialogs) = s.api("GET", "/api/v1/dialogs", None).await;
    assert_eq!(dialogs["count"], 1, "{dialogs}");
    assert_eq!(dialogs["dialogs"][0]["call_id"], call_id.as_str());
    assert_eq!(dialogs["dialogs"][0]["from"], "sip:alice@localhost");
    let bye = alice.in_dialog(&mut d, "BYE", None);
    alice.send(&bye).await;
    let b = carol.recv_request("BYE").await;
    carol.send(&carol.response(&b, 200, "", "")).await;
    assert_eq!(alice.recv_final().await.status, 200);
    let (_, dialogs) = s.api("GET", "/api/v1/dialogs", None).await;
    assert_eq!(dialogs["count"], 0, "the BYE ended it: {dialogs}");

    // Plugins: the standard set, with their calls and times.
    let (_, plugins) = s.api("GET", "/api/v1/plugins", None).await;
    let seed = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "seed")
        .unwrap_or_else(|| panic!("{plugins}"));
    assert_eq!(seed["world"], "http-handler", "{seed}");
    assert_eq!(seed["hash"].as_str().unwrap().len(), 16, "{seed}");
    assert!(seed["calls"].as_u64().unwrap() >= 1, "{seed}");
    assert!(seed["p99_ms"].as_f64().is_some(), "{seed}");

    // One binding removed: gone from the list, its caller gets 480 (known, not here).
    let alice_id = only_binding(&one)["id"].as_u64().unwrap();
    let path = format!(
        "/api/v1/registrations/{}/bindings/{alice_id}",
        aor_segment("alice")
    );
    let (status, removed) = s.api("DELETE", &path, None).await;
    assert_eq!((status, &removed["removed"]), (200, &serde_json::json!(1)));
    let (status, _) = s.api("DELETE", &path, None).await;
    assert_eq!(status, 404, "removed already");
    let (status, _) = s
        .api(
            "GET",
            &format!("/api/v1/registrations/{}", aor_segment("alice")),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (msg, _) = carol.request("MESSAGE", "alice", "", "hello");
    carol.send(&msg).await;
    assert_eq!(carol.recv_final().await.status, 480);

    // A flow closed with a reason: the client reads it in a 1000 close frame, and its
    // binding goes with the flow.
    let (mut raw, newest) = raw_flow(&s, "opsclose").await;
    let (status, closed) = s
        .api(
            "POST",
            &format!("/api/v1/flows/{newest}/close"),
            Some(r#"{"reason":"maintenance window"}"#),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    let frame = within("the close frame", async {
        loop {
            match raw.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1000);
    assert_eq!(frame.reason.as_str(), "maintenance window");
    let (status, _) = s
        .api(
            "POST",
            &format!("/api/v1/flows/{bob_flow}/close"),
            Some("{}"),
        )
        .await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..100 {
        let (_, all) = s.api("GET", "/api/v1/registrations", None).await;
        if all["total"] == 1 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "bob's binding went with his flow");

    // Bad input gets a clear answer.
    for (method, path, body, want) in [
        ("POST", "/api/v1/flows/abc/close", "", 400),
        ("POST", "/api/v1/flows/999999/close", "", 404),
        ("POST", "/api/v1/flows/1/close", "[1]", 400),
        ("POST", "/api/v1/flows/1/close", r#"{"reason":7}"#, 400),
        ("GET", "/api/v1/registrations?limit=0", "", 400),
        ("GET", "/api/v1/registrations?aor=%zz", "", 400),
        (
            "DELETE",
            "/api/v1/registrations/sip%3Anobody%40localhost",
            "",
            404,
        ),
        ("DELETE", "/api/v1/registrations/x/bindings/y", "", 400),
        ("POST", "/api/v1/registrations", "", 405),
        ("GET", "/api/v1/nothing-here", "", 404),
        ("POST", "/api/v1/plugins/nope/reload", "", 404),
        ("POST", "/api/v1/drain", r#"{"exit":"yes"}"#, 400),
    ] {
        let (status, v) = s
            .api(method, path, (!body.is_empty()).then_some(body))
            .await;
        assert_eq!(status, want, "{method} {path} {body}: {v}");
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    // Without the token: 401, whatever the path.
    let r = http_once(
        s.admin,
        b"GET /api/v1/registrations HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
}

/// Drain mode: new connections are closed at accept and new calls get 503 with
/// Retry-After, while the call in progress goes on to its BYE; drain mode can be
/// left; asked to exit, the server stops by itself once the last call ended.
#[tokio::test]
async fn drain_refuses_new_work_finishes_calls_and_exits() {
    let mut s = Server::standard("");
    let mut alice = Ua::udp(&s, "dalice").await;
    let mut carol = Ua::udp(&s, "dcarol").await;
    assert_eq!(carol.register(600).await.status, 200);
    let (mut d, _) = call(&mut alice, &mut carol, "dcarol").await;

    let (status, v) = s
        .api("POST", "/api/v1/drain", Some(r#"{"exit":false}"#))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["draining"], true);
    // A new call: 503, try elsewhere in 30 s.
    let (invite, _) = alice.request("INVITE", "dcarol", "", sipwasm_tests::sip::SDP);
    alice.send(&invite).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.headers.get(&sipwasm::sip::HeaderName::RetryAfter),
        Some("30")
    );
    // A new connection: closed at accept.
    let mut conn = tokio::net::TcpStream::connect(s.sip).await.unwrap();
    let mut buf = [0u8; 16];
    let n = within(
        "the close at accept",
        tokio::io::AsyncReadExt::read(&mut conn, &mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let (_, v) = s.api("GET", "/api/v1/drain", None).await;
    assert_eq!(v["dialogs"], 1, "{v}");
    assert_eq!(v["empty"], false, "{v}");
    assert!(v["refused_connections"].as_u64().unwrap() >= 1, "{v}");

    // Drain mode left: new calls ring again.
    let (status, v) = s.api("DELETE", "/api/v1/drain", None).await;
    assert_eq!((status, &v["draining"]), (200, &serde_json::json!(false)));
    let (invite, dialog2) = alice.request("INVITE", "dcarol", "", sipwasm_tests::sip::SDP);
    alice.send(&invite).await;
    let inv2 = carol.recv_request("INVITE").await;
    carol.send(&carol.response(&inv2, 486, "", "")).await;
    assert_eq!(alice.recv_final().await.status, 486);
    // The proxy's ACK for the 486 (RFC 3261 17.1.1.3).
    carol.recv_request("ACK").await;
    let _ = dialog2;

    // Draining to exit: the call in progress still ends normally, then the server
    // stops by itself.
    let (status, v) = s
        .api("POST", "/api/v1/drain", Some(r#"{"exit":true}"#))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["exit_when_empty"], true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        s.wait_exit(Duration::from_millis(1)).is_none(),
        "a call is still up"
    );
    let bye = alice.in_dialog(&mut d, "BYE", None);
    alice.send(&bye).await;
    let b = carol.recv_request("BYE").await;
    carol.send(&carol.response(&b, 200, "", "")).await;
    assert_eq!(alice.recv_final().await.status, 200);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit after the last call ended:\n{}", s.logs()));
    assert!(status.success(), "{status}");
    assert!(s.logs().contains("drained"), "{}", s.logs());
}

/// `sipwasm ctl ARGS` against the server of `s` (its config names the admin
/// listener, its data directory the token): (exit success, stdout, stderr).
fn ctl(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(sipwasm_bin())
        .arg("--config")
        .arg(&s.config_path)
        .args(["--log", "warn", "ctl"])
        .args(args)
        .output()
        .expect("run sipwasm ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sipwasm ctl` speaks the control API: tables by default, the API's JSON with
/// `--json`, a flow closed, a binding removed, drain mode on and off, plugins and a
/// reload; errors on stderr with a failing exit status.
#[tokio::test]
async fn ctl_speaks_the_control_api() {
    let s = Server::standard("");
    let mut erin = Ua::udp(&s, "erin").await;
    let mut fred = Ua::ws(&s, "fred").await;
    assert_eq!(erin.register(600).await.status, 200);
    assert_eq!(fred.register(600).await.status, 200);

    let (ok, out, err) = ctl(&s, &["status"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("sipwasm 0.1.0 (commit "), "{out}");
    assert!(out.contains("AoRs 2  bindings 2"), "{out}");

    let (ok, out, err) = ctl(&s, &["registrations"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AOR "), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("sip:erin@localhost ")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("sip:fred@localhost ")),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"2 binding(s)"), "{out}");

    let (ok, out, err) = ctl(
        &s,
        &["--json", "registrations", "--aor", "sip:fred@localhost"],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["aor"], "sip:fred@localhost");
    let fred_flow = v["bindings"][0]["flow"].as_u64().expect("fred's flow");

    let (ok, out, _) = ctl(&s, &["flows"]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{fred_flow} ")) && l.contains(" WS ")),
        "{out}"
    );
    let (ok, _, err) = ctl(
        &s,
        &[
            "flows",
            "--close",
            &fred_flow.to_string(),
            "--reason",
            "ctl test",
        ],
    );
    assert!(ok, "{err}");
    assert!(s.wait_for_log("flow closed by the operator").await);
    let (ok, _, err) = ctl(&s, &["flows", "--close", "999999"]);
    assert!(!ok);
    assert!(err.contains("404: no such flow"), "{err}");

    let (ok, _, err) = ctl(&s, &["registrations", "--remove", "sip:erin@localhost"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&s, &["registrations", "--remove", "sip:erin@localhost"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");

    let (ok, out, err) = ctl(&s, &["plugins"]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().starts_with("NAME "), "{out}");
    for name in ["seed", "misbehave", "welcome"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{out}"
        );
    }
    let (ok, out, err) = ctl(&s, &["--json", "plugins", "--reload", "welcome"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"reloaded\":true"), "{out}");

    let (ok, out, err) = ctl(&s, &["drain"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("draining true"), "{out}");
    let (ok, out, err) = ctl(&s, &["drain", "--wait", "--timeout", "10"]);
    assert!(ok, "{err}");
    assert!(out.contains("empty true"), "{out}");
    let (ok, out, err) = ctl(&s, &["drain", "--cancel"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("draining false"), "{out}");

    let (ok, out, err) = ctl(&s, &["--json", "reload"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["restart_needed"], serde_json::json!([]), "{v}");

    // A wrong token: refused, said on stderr.
    let (ok, _, err) = ctl(&s, &["--token", "wrong", "status"]);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
}

/// `POST /api/v1/reload` (and SIGHUP) applies new limits at once (a lower
/// `connections-per-source` refuses the next connection), names what needs a restart,
/// and a file that does not validate changes nothing (422 naming file and key).
#[tokio::test]
async fn reload_applies_limits_and_names_what_needs_a_restart() {
    let s = Server::standard("[limits]\nconnections-per-source = 50\nexempt = []\n");
    let config = std::fs::read_to_string(&s.config_path).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(s.sip).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Broken: nothing changes.
    std::fs::write(
        &s.config_path,
        config.replace(
            "connections-per-source = 50",
            "connections-per-source = \"x\"",
        ),
    )
    .unwrap();
    let (status, v) = s.api("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 422, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("sipwasm.toml") && e.contains("limits"), "{e}");

    // Three connections are open: a cap of 3 refuses the fourth; sip.max-contacts
    // needs a restart.
    std::fs::write(
        &s.config_path,
        config
            .replace("connections-per-source = 50", "connections-per-source = 3")
            .replace("[admin]", "[sip]\nmax-contacts = 7\n\n[admin]"),
    )
    .unwrap();
    let (status, v) = s.api("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["changed"],
        serde_json::json!(["limits.connections-per-source: 50 -> 3"]),
        "{v}"
    );
    assert_eq!(v["restart_needed"], serde_json::json!(["sip"]), "{v}");
    assert!(v["plugins"]["seed"]["reloaded"] == true, "{v}");
    let mut fourth = tokio::net::TcpStream::connect(s.sip).await.unwrap();
    let mut buf = [0u8; 8];
    let n = within(
        "the refusal",
        tokio::io::AsyncReadExt::read(&mut fourth, &mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "the fourth connection is closed at accept");
    assert!(
        s.metric("sipwasm_connections_refused_total{reason=\"per-source\"}")
            .await
            >= 1,
        "{}",
        s.metrics().await
    );
    // Reloaded again without a change: sip still named, nothing else changed.
    let (_, v) = s.api("POST", "/api/v1/reload", None).await;
    assert_eq!(v["changed"], serde_json::json!([]), "{v}");
    assert_eq!(v["restart_needed"], serde_json::json!(["sip"]), "{v}");
    // SIGHUP (`systemctl reload`) does the same.
    std::fs::write(
        &s.config_path,
        config
            .replace("connections-per-source = 50", "connections-per-source = 2")
            .replace("[admin]", "[sip]\nmax-contacts = 7\n\n[admin]"),
    )
    .unwrap();
    s.signal("HUP");
    assert!(
        s.wait_for_log("configuration reload: limits.connections-per-source: 3 -> 2")
            .await,
        "{}",
        s.logs()
    );
    drop(held);
}

/// The packaging in `docs/packaging`: the sample production configuration passes
/// `sipwasm --check` as it is (public addresses, which are not this machine's, are
/// not bound by a check), with only its certificate and plugin paths pointed at this
/// build's; a broken copy is refused naming the key. The systemd unit verifies
/// cleanly with systemd-analyze and checks the same configuration before starting.
#[test]
fn the_sample_production_config_and_systemd_unit_check() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sample = std::fs::read_to_string(repo.join("docs/packaging/sipwasm.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["sip.example.com".to_string()]).unwrap();
    let (cert_path, key_path) = (
        dir.path().join("fullchain.pem"),
        dir.path().join("privkey.pem"),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    for (from, what) in [
        (
            "/etc/letsencrypt/live/sip.example.com/fullchain.pem",
            "certificate",
        ),
        ("/etc/letsencrypt/live/sip.example.com/privkey.pem", "key"),
        ("/usr/local/lib/sipwasm/call_policy.wasm", "routing plugin"),
        ("/var/lib/sipwasm", "data directory"),
    ] {
        assert!(
            sample.contains(from),
            "the sample names its {what} at {from}"
        );
    }
    let text = sample
        .replace(
            "/etc/letsencrypt/live/sip.example.com/fullchain.pem",
            &cert_path.display().to_string(),
        )
        .replace(
            "/etc/letsencrypt/live/sip.example.com/privkey.pem",
            &key_path.display().to_string(),
        )
        .replace(
            "/usr/local/lib/sipwasm/call_policy.wasm",
            &plugin("call_policy").display().to_string(),
        )
        .replace(
            "/var/lib/sipwasm",
            &dir.path().join("data").display().to_string(),
        );
    assert!(text.contains("203.0.113.10"), "public addresses stay");
    let config = dir.path().join("sipwasm.toml");
    std::fs::write(&config, &text).unwrap();
    let check = |path: &std::path::Path| {
        Command::new(sipwasm_bin())
            .arg("--config")
            .arg(path)
            .arg("--check")
            .output()
            .unwrap()
    };
    let out = check(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin token is set and long enough for a listener anywhere.
    assert!(
        text.contains("[admin]") && text.contains("token = \""),
        "{text}"
    );
    // A typo is refused with the file and the key.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        text.replacen("shutdown-grace", "shutdown-grase", 1),
    )
    .unwrap();
    let out = check(&broken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broken.toml") && err.contains("shutdown-grase"),
        "{err}"
    );

    // The unit: systemd-analyze finds nothing to say (with this build's binary at the
    // path it names), and it checks the configuration before each start.
    let unit = std::fs::read_to_string(repo.join("docs/packaging/sipwasm.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStartPre=/usr/local/bin/sipwasm --config /etc/sipwasm/sipwasm.toml --check"
        ),
        "{unit}"
    );
    let local = dir.path().join("sipwasm.service");
    std::fs::write(
        &local,
        unit.replace(
            "/usr/local/bin/sipwasm",
            &sipwasm_bin().display().to_string(),
        ),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze (Debian's systemd; ./tests/run-all.sh installs it)");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
}

/// Every string under an `expr` or `query`/`definition` key of a Grafana dashboard.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone());
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The latency histograms and response classes count real traffic (a REGISTER's
/// final answer, the plugin a WebSocket upgrade called), and the Grafana dashboard in
/// docs/grafana names only metrics the server declares.
#[tokio::test]
async fn metrics_histograms_and_the_grafana_dashboard() {
    let s = Server::standard("");
    let mut udp = Ua::udp(&s, "histo").await;
    let mut ws = Ua::ws(&s, "histows").await;
    assert_eq!(udp.register(600).await.status, 200);
    assert_eq!(ws.register(600).await.status, 200);
    let (msg, _) = udp.request("MESSAGE", "nobody", "", "hi");
    udp.send(&msg).await;
    assert_eq!(udp.recv_final().await.status, 404);
    let text = s.metrics().await;
    for (series, at_least) in [
        (
            "sipwasm_sip_request_duration_seconds_bucket{method=\"REGISTER\",le=\"+Inf\"}",
            2,
        ),
        (
            "sipwasm_sip_request_duration_seconds_count{method=\"REGISTER\"}",
            2,
        ),
        (
            "sipwasm_sip_responses_total{method=\"REGISTER\",class=\"2xx\"}",
            2,
        ),
        (
            "sipwasm_sip_responses_total{method=\"MESSAGE\",class=\"4xx\"}",
            1,
        ),
        (
            "sipwasm_plugin_call_duration_seconds_count{plugin=\"seed\"}",
            1,
        ),
    ] {
        let n = metric_in(&text, series).unwrap_or(0);
        assert!(n >= at_least, "{series} = {n}:\n{text}");
    }
    // Buckets are cumulative: the first is at most the +Inf one.
    let first = metric_in(
        &text,
        "sipwasm_sip_request_duration_seconds_bucket{method=\"REGISTER\",le=\"0.0001\"}",
    )
    .expect("the first bucket");
    assert!(first <= 2, "{text}");

    // Declared families (histograms with their three series).
    let mut declared = std::collections::BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        declared.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                declared.insert(format!("{name}{suffix}"));
            }
        }
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("docs/grafana/sipwasm.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let mut named = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("sipwasm_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            named.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|n| !declared.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names {unknown:?}, not in /metrics"
    );
    for needed in [
        "sipwasm_sip_request_duration_seconds_bucket",
        "sipwasm_plugin_call_duration_seconds_bucket",
        "sipwasm_sip_responses_total",
        "sipwasm_sip_refused_total",
        "sipwasm_connections_refused_total",
    ] {
        assert!(named.contains(needed), "the dashboard shows {needed}");
    }
}

/// `--log-format json`: one JSON object a line with the fixed keys; a request's lines
/// carry its Call-ID — what the routing plugin logs about it (with the plugin's name)
/// and the core's refusal of it (with its source).
#[tokio::test]
async fn json_logs_carry_the_call_id_of_each_request() {
    let s = Server::standard_with_args(ROUTER_BLOCKING_666, &["--log-format", "json"]);
    let mut phone = Ua::udp(&s, "jsonlog").await;
    let (msg, _) = phone.request("MESSAGE", "666", "", "hi");
    let blocked_call = msg
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .unwrap()
        .to_string();
    phone.send(&msg).await;
    assert_eq!(phone.recv_final().await.status, 403);
    // A REGISTER with a Path from a peer that is not trusted: refused, logged.
    let path_call = format!("jsonpath-{}", sipwasm_tests::sip::rand_tag());
    let via = phone.via();
    phone
        .send(&format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: <sip:jsonlog@localhost>;tag=p1\r\nTo: <sip:jsonlog@localhost>\r\n\
             Call-ID: {path_call}\r\nCSeq: 1 REGISTER\r\nPath: <sip:edge.invalid;lr>\r\n\
             Supported: path\r\nContact: <{}>\r\nContent-Length: 0\r\n\r\n",
            phone.contact()
        ))
        .await;
    assert_eq!(phone.recv_final().await.status, 403);
    assert!(s.wait_for_log("untrusted").await, "{}", s.logs());
    assert!(s.wait_for_log("blocked MESSAGE").await, "{}", s.logs());

    let logs = s.logs();
    let mut lines = Vec::new();
    for l in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
        for key in ["time", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {l}");
        }
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{l}");
        lines.push(v);
    }
    let plugin_line = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .unwrap()
                .contains("blocked MESSAGE to 666")
        })
        .expect("the plugin's line");
    assert_eq!(
        plugin_line["call-id"],
        blocked_call.as_str(),
        "{plugin_line}"
    );
    assert_eq!(plugin_line["plugin"], "router", "{plugin_line}");
    // The refusal's line (a debug line about the routing call may name the same
    // request before it).
    let refusal = lines
        .iter()
        .find(|v| v["call-id"] == path_call.as_str() && v["level"] != "debug")
        .unwrap_or_else(|| panic!("a line with the refused REGISTER's Call-ID:\n{logs}"));
    assert_eq!(refusal["level"], "warn", "{refusal}");
    assert!(
        refusal["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{refusal}"
    );
    assert_eq!(refusal["fields"]["reason"], "untrusted-path", "{refusal}");
}

/// Checks `v` against an OpenAPI schema (the subset docs/admin-api.json uses: type,
/// nullable, properties, required, additionalProperties, items, enum, $ref).
fn conforms(
    schema: &serde_json::Value,
    v: &serde_json::Value,
    doc: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    if let Some(r) = schema["$ref"].as_str() {
        let name = r
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unknown $ref {r}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref {r} names nothing"));
        }
        return conforms(target, v, doc, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true || schema["type"].is_null() {
            Ok(())
        } else {
            Err(format!("{at}: null where {schema} is not nullable"))
        };
    }
    let fits = match schema["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("number") => v.is_number(),
        Some(other) => return Err(format!("{at}: type {other} not supported here")),
    };
    if !fits {
        return Err(format!("{at}: {v} is not {}", schema["type"]));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} not in {allowed:?}"));
    }
    if let Value::Object(m) = v {
        let props = schema["properties"].as_object();
        for req in schema["required"].as_array().into_iter().flatten() {
            let k = req.as_str().unwrap();
            if !m.contains_key(k) {
                return Err(format!("{at}: required {k} missing in {v}"));
            }
        }
        for (k, x) in m {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(s, x, doc, &format!("{at}.{k}"))?,
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => {
                        return Err(format!("{at}: {k} is not in the schema"));
                    }
                    Value::Object(_) => conforms(
                        &schema["additionalProperties"],
                        x,
                        doc,
                        &format!("{at}.{k}"),
                    )?,
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(a), false) = (v, schema["items"].is_null()) {
        for (i, x) in a.iter().enumerate() {
            conforms(&schema["items"], x, doc, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// docs/admin-api.json describes the control API as it answers: every documented
/// operation is called on a server with registrations, flows, a dialog and plugins,
/// and each answer's status is documented for it and its body fits the schema.
#[tokio::test]
async fn the_openapi_file_describes_the_real_answers() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("docs/admin-api.json")).unwrap())
            .expect("the OpenAPI file is JSON");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let s = Server::standard("");
    let mut alice = Ua::udp(&s, "oalice").await;
    let mut carol = Ua::ws(&s, "ocarol").await;
    assert_eq!(carol.register(600).await.status, 200);
    assert_eq!(alice.register(600).await.status, 200);
    let (_d, _) = call(&mut alice, &mut carol, "ocarol").await;
    let (_, reg) = s
        .api(
            "GET",
            "/api/v1/registrations/sip%3Aoalice%40localhost",
            None,
        )
        .await;
    let alice_id = reg["bindings"][0]["id"].as_u64().unwrap();
    let (_raw, raw_flow) = raw_flow(&s, "oapi").await;

    // (method, documented path, path called, body, status expected).
    let calls: Vec<(&str, &str, String, Option<&str>, u16)> = vec![
        ("GET", "/api/v1/status", "/api/v1/status".into(), None, 200),
        (
            "GET",
            "/api/v1/version",
            "/api/v1/version".into(),
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/registrations",
            "/api/v1/registrations?prefix=sip%3Ao&limit=1".into(),
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/registrations",
            "/api/v1/registrations?limit=nope".into(),
            None,
            400,
        ),
        (
            "GET",
            "/api/v1/registrations/{aor}",
            "/api/v1/registrations/sip%3Aocarol%40localhost".into(),
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/registrations/{aor}",
            "/api/v1/registrations/sip%3Anobody%40localhost".into(),
            None,
            404,
        ),
        ("GET", "/api/v1/flows", "/api/v1/flows".into(), None, 200),
        (
            "GET",
            "/api/v1/transactions",
            "/api/v1/transactions".into(),
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/dialogs",
            "/api/v1/dialogs".into(),
            None,
            200,
        ),
        (
            "GET",
            "/api/v1/plugins",
            "/api/v1/plugins".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/plugins/{name}/reload",
            "/api/v1/plugins/welcome/reload".into(),
            None,
            200,
        ),
        (
            "POST",
            "/api/v1/plugins/{name}/reload",
            "/api/v1/plugins/nothing/reload".into(),
            None,
            404,
        ),
        ("GET", "/api/v1/drain", "/api/v1/drain".into(), None, 200),
        (
            "POST",
            "/api/v1/drain",
            "/api/v1/drain".into(),
            Some(r#"{"exit":false}"#),
            200,
        ),
        (
            "POST",
            "/api/v1/drain",
            "/api/v1/drain".into(),
            Some(r#"{"exit":1}"#),
            400,
        ),
        ("DELETE", "/api/v1/drain", "/api/v1/drain".into(), None, 200),
        ("POST", "/api/v1/reload", "/api/v1/reload".into(), None, 200),
        (
            "POST",
            "/api/v1/flows/{id}/close",
            format!("/api/v1/flows/{raw_flow}/close"),
            Some(r#"{"reason":"openapi"}"#),
            200,
        ),
        (
            "POST",
            "/api/v1/flows/{id}/close",
            "/api/v1/flows/424242/close".into(),
            None,
            404,
        ),
        (
            "DELETE",
            "/api/v1/registrations/{aor}/bindings/{id}",
            format!("/api/v1/registrations/sip%3Aoalice%40localhost/bindings/{alice_id}"),
            None,
            200,
        ),
        (
            "DELETE",
            "/api/v1/registrations/{aor}",
            "/api/v1/registrations/sip%3Aocarol%40localhost".into(),
            None,
            200,
        ),
        (
            "DELETE",
            "/api/v1/registrations/{aor}",
            "/api/v1/registrations/sip%3Aocarol%40localhost".into(),
            None,
            404,
        ),
        ("GET", "/flows", "/flows".into(), None, 200),
        ("GET", "/gateways", "/gateways".into(), None, 200),
        (
            "POST",
            "/plugins/reload",
            "/plugins/reload".into(),
            None,
            200,
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (method, template, path, body, want) in &calls {
        let (status, v) = s.api(method, path, *body).await;
        assert_eq!(status, *want, "{method} {path}: {v}");
        let op = &doc["paths"][*template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let mut resp = &op["responses"][status.to_string()];
        if let Some(r) = resp["$ref"].as_str() {
            resp = &doc["components"]["responses"][r.rsplit('/').next().unwrap()];
        }
        let schema = &resp["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template}: status {status} has no JSON schema"
        );
        conforms(schema, &v, &doc, &format!("{method} {path} {status}"))
            .unwrap_or_else(|e| panic!("{e}"));
        covered.insert(format!("{method} {template}"));
    }
    // The text answers.
    for (template, ctype) in [("/metrics", "text/plain"), ("/ui/", "text/html")] {
        let r = s.admin_request("GET", template).await;
        assert_eq!(r.status, 200, "{template}");
        assert!(
            r.header("content-type").unwrap_or("").starts_with(ctype),
            "{template}"
        );
        let op = &doc["paths"][template]["get"]["responses"]["200"]["content"];
        assert!(op[ctype].is_object(), "{template}: {ctype} documented");
        covered.insert(format!("GET {template}"));
    }
    // Every documented operation was called.
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "delete", "put", "patch"] {
            if ops[m].is_object() {
                documented.insert(format!("{} {path}", m.to_ascii_uppercase()));
            }
        }
    }
    assert_eq!(
        documented, covered,
        "documented operations against those called"
    );
}

/// A drain to exit with a time limit stops the server at the limit even with a call
/// up (an end that never hangs up must not hold a restart for ever).
#[tokio::test]
async fn a_drain_to_exit_stops_at_its_time_limit() {
    let mut s = Server::standard("");
    let mut alice = Ua::udp(&s, "talice").await;
    let mut carol = Ua::udp(&s, "tcarol").await;
    assert_eq!(carol.register(600).await.status, 200);
    let _call = call(&mut alice, &mut carol, "tcarol").await;
    let (status, v) = s
        .api(
            "POST",
            "/api/v1/drain",
            Some(r#"{"exit":true,"exit_after":1}"#),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["dialogs"], 1, "{v}");
    assert!(v["exit_by_unix"].as_u64().is_some(), "{v}");
    let status = s
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit at the time limit:\n{}", s.logs()));
    assert!(status.success(), "{status}");
    assert!(
        s.logs().contains("drain time limit reached"),
        "{}",
        s.logs()
    );
}

/// `sipwasm ctl` reaches an admin listener on every address (0.0.0.0) by loopback.
#[tokio::test]
async fn ctl_reaches_a_listener_on_every_address() {
    let s = Server::start(
        r#"
[server]
domains = ["localhost"]
data-dir = "{data}"

[[listen]]
transport = "udp"
address = "127.0.0.1:{sip}"

[admin]
listen = "0.0.0.0:{admin}"
token = "0123456789abcdef0123456789abcdef-ctl"

[sip]
open-registration = true
"#,
    );
    let (ok, out, err) = ctl(&s, &["status"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("sipwasm "), "{out}");
}

/// Routing changes without a restart: the routing plugin's settings (its blocked
/// list) edited in the file and reloaded take effect for the next request; a plugin
/// added to the file needs a restart and is named so.
#[tokio::test]
async fn a_reload_applies_the_routing_plugins_new_settings() {
    let s = Server::standard(ROUTER_BLOCKING_666);
    let mut phone = Ua::udp(&s, "rphone").await;
    let status_to = async |phone: &mut Ua, user: &str| {
        let (msg, _) = phone.request("MESSAGE", user, "", "hi");
        phone.send(&msg).await;
        phone.recv_final().await.status
    };
    assert_eq!(status_to(&mut phone, "666").await, 403);
    assert_eq!(status_to(&mut phone, "777").await, 404);
    let config = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(
        &s.config_path,
        config.replace("blocked = [\"666\"]", "blocked = [\"777\"]")
            + "\n[plugins.extra]\nbuiltin = \"welcome\"\n",
    )
    .unwrap();
    let (status, v) = s.api("POST", "/api/v1/reload", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["changed"],
        serde_json::json!(["plugins.router: new settings"]),
        "{v}"
    );
    assert_eq!(
        v["restart_needed"],
        serde_json::json!(["plugins.extra"]),
        "{v}"
    );
    assert_eq!(status_to(&mut phone, "666").await, 404, "no longer blocked");
    assert_eq!(status_to(&mut phone, "777").await, 403, "blocked now");
}
