//! Real browser SIP stacks (JsSIP and SIP.js under Node) through sipwasm: registration,
//! messages and calls among themselves and with phones on UDP.

use serde_json::json;
use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::js::{Agent, Lib, browser_call, browser_calls_phone, phone_calls_browser};
use sipwasm_tests::sip::{SDP, Ua};
use sipwasm_tests::*;

#[tokio::test]
async fn jssip_and_sipjs_register_and_exchange_messages() {
    let s = Server::standard("");
    let mut alice = Agent::start(&s, Lib::JsSip, "alice", None).await;
    let mut bob = Agent::start(&s, Lib::SipJs, "bob", None).await;
    alice.register().await;
    bob.register().await;
    alice
        .cmd(json!({"cmd": "message", "target": "bob", "body": "hello bob"}))
        .await;
    let m = bob.expect("message").await;
    assert_eq!(m["body"], "hello bob");
    alice.expect("message_sent").await;
    bob.cmd(json!({"cmd": "message", "target": "alice", "body": "hi alice"}))
        .await;
    assert_eq!(alice.expect("message").await["body"], "hi alice");
    bob.expect("message_sent").await;
    // A message to nobody fails with 404.
    alice
        .cmd(json!({"cmd": "message", "target": "nobody", "body": "?"}))
        .await;
    assert_eq!(alice.expect("message_failed").await["status"], 404);
    // Unregistering works and the user is then unavailable.
    bob.cmd(json!({"cmd": "unregister"})).await;
    bob.expect("unregistered").await;
    alice
        .cmd(json!({"cmd": "message", "target": "bob", "body": "still there?"}))
        .await;
    assert_eq!(alice.expect("message_failed").await["status"], 480);
}

#[tokio::test]
async fn calls_between_jssip_and_sipjs_each_side_hanging_up() {
    let s = Server::standard("");
    let mut j = Agent::start(&s, Lib::JsSip, "jcaller", None).await;
    let mut p = Agent::start(&s, Lib::SipJs, "pcallee", None).await;
    j.register().await;
    p.register().await;
    browser_call(&mut j, &mut p, false).await;
    browser_call(&mut j, &mut p, true).await;
    browser_call(&mut p, &mut j, false).await;
    browser_call(&mut p, &mut j, true).await;
}

#[tokio::test]
async fn jssip_calls_a_udp_phone_and_the_phone_calls_back() {
    let s = Server::standard("");
    let mut browser = Agent::start(&s, Lib::JsSip, "webuser", None).await;
    browser.register().await;
    let mut phone = Ua::udp(&s, "deskphone").await;
    assert_eq!(phone.register(600).await.status, 200);

    let inv = browser_calls_phone(&mut browser, &mut phone).await;
    assert_eq!(inv.headers.values(&HeaderName::RecordRoute).count(), 2);
    phone_calls_browser(&mut phone, &mut browser).await;
}

#[tokio::test]
async fn busy_cancel_and_a_closed_tab() {
    let s = Server::standard("");
    let mut caller = Agent::start(&s, Lib::SipJs, "impatient", None).await;
    let mut callee = Agent::start(&s, Lib::JsSip, "busybee", None).await;
    caller.register().await;
    callee.register().await;
    // Busy: the callee rejects with 486 and the caller sees it.
    caller
        .cmd(json!({"cmd": "call", "target": "busybee"}))
        .await;
    callee.expect("incoming").await;
    callee.cmd(json!({"cmd": "reject", "status": 486})).await;
    assert_eq!(caller.expect("failed").await["status"], 486);
    // Cancel: the caller gives up while it rings.
    caller
        .cmd(json!({"cmd": "call", "target": "busybee"}))
        .await;
    callee.expect("incoming").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    caller.cmd(json!({"cmd": "hangup"})).await;
    let f = callee.expect("failed").await;
    assert_eq!(f["cause"], "Canceled", "{f}");
    // The callee's tab closes without unregistering: calls get 480, not a hang.
    callee.kill().await;
    let mut phone = Ua::udp(&s, "checker").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (invite, _) = phone.request("INVITE", "busybee", "", SDP);
        phone.send(&invite).await;
        let status = phone.recv_final().await.status;
        if status == 480 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reloaded_jssip_page_with_the_same_instance_replaces_its_binding() {
    let s = Server::standard("");
    let instance = "7b1e6a2c-36c1-4b7d-9a0e-2f5e8d3c1a11";
    let mut old_tab = Agent::start(&s, Lib::JsSip, "reloader", Some(instance)).await;
    old_tab.register().await;
    let mut new_tab = Agent::start(&s, Lib::JsSip, "reloader", Some(instance)).await;
    new_tab.register().await;
    let mut phone = Ua::udp(&s, "counter").await;
    let r = {
        let (q, _) = phone.request("REGISTER", "sip:localhost", "", "");
        // A query for the AoR: To must be the AoR.
        let q = q
            .replace("To: <sip:localhost>", "To: <sip:reloader@localhost>")
            .replace("Contact: <", "X-No-Contact: <");
        phone.send(&q).await;
        phone.recv_final().await
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.values(&HeaderName::Contact).count(), 1, "{r:?}");
    // Messages go to the new tab only.
    let (m, _) = phone.request("MESSAGE", "reloader", "", "which tab?");
    phone.send(&m).await;
    new_tab.expect("message").await;
    assert_eq!(phone.recv_final().await.status, 200);
}

#[tokio::test]
async fn jssip_and_sipjs_in_chromium_register_message_and_call() {
    let s = Server::standard("");
    // Each in its own headless Chromium: the browser's WebSocket, real WebRTC offers.
    // JsSIP over ws, SIP.js over wss.
    let mut j = Agent::start_in_chromium(&s, Lib::JsSip, "chromej", false).await;
    let mut p = Agent::start_in_chromium(&s, Lib::SipJs, "chromep", true).await;
    j.register().await;
    p.register().await;
    j.cmd(json!({"cmd": "message", "target": "chromep", "body": "from a page"}))
        .await;
    assert_eq!(p.expect("message").await["body"], "from a page");
    j.expect("message_sent").await;
    p.cmd(json!({"cmd": "message", "target": "chromej", "body": "and back"}))
        .await;
    assert_eq!(j.expect("message").await["body"], "and back");
    p.expect("message_sent").await;
    browser_call(&mut j, &mut p, true).await;
    browser_call(&mut p, &mut j, true).await;
    // A stack under Node reaches one in Chromium (calls between them would need the
    // Node stand-in to produce an SDP that Chromium's WebRTC accepts).
    let mut n = Agent::start(&s, Lib::JsSip, "nodej", None).await;
    n.register().await;
    n.cmd(json!({"cmd": "message", "target": "chromej", "body": "from node"}))
        .await;
    assert_eq!(j.expect("message").await["body"], "from node");
    n.expect("message_sent").await;
    // The tab closes without unregistering: its binding goes with its connection.
    p.kill().await;
    assert!(
        s.wait_for_log("binding removed aor=sip:chromep@localhost")
            .await,
        "{}",
        s.logs()
    );
    n.cmd(json!({"cmd": "message", "target": "chromep", "body": "gone?"}))
        .await;
    assert_eq!(n.expect("message_failed").await["status"], 480);
}

/// The admin dashboard in headless Chromium: it loads without console errors or failed
/// requests, shows a registration made after it loaded within 2 s (it updates live),
/// and its close button closes a flow. The screenshot is kept in
/// `target/test-artifacts/dashboard.png`.
#[tokio::test]
async fn the_dashboard_shows_live_registrations_and_closes_flows() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run ./tests/run-all.sh (it installs Debian's chromium)"
    );
    let s = Server::standard("");
    // A browser already connected: its flow is the one the page closes.
    let mut early = Ua::ws(&s, "early").await;
    assert_eq!(early.register(600).await.status, 200);
    let (_, reg) = s
        .api("GET", "/api/v1/registrations/sip%3Aearly%40localhost", None)
        .await;
    let flow = reg["bindings"][0]["flow"].as_u64().expect("early's flow");

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let config = json!({
        "url": format!("http://127.0.0.1:{}/ui/#token={}", s.admin.port(), s.admin_token()),
        "aor": "sip:live@localhost",
        "closeFlow": flow,
        "screenshot": shot,
        "timeoutMs": 2000,
        "chromium": "/usr/bin/chromium",
        "waitForGo": true,
    });
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    let mut driver = tokio::process::Command::new("node")
        .arg(js.join("dashboard.mjs"))
        .arg(config.to_string())
        .current_dir(&js)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    // Starting Chromium can take long while the rest of the suite runs.
    let ready = tokio::time::timeout(std::time::Duration::from_secs(90), lines.next_line())
        .await
        .expect("the page loaded within 90 s")
        .unwrap()
        .expect("a line");
    assert_eq!(ready, r#"{"ready":true}"#, "{ready}");
    // A registration after the page loaded: shown within 2 s.
    let mut live = Ua::ws(&s, "live").await;
    assert_eq!(live.register(600).await.status, 200);
    stdin.write_all(b"go\n").await.unwrap();
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .expect("the driver's report within 60 s")
        .unwrap()
        .expect("a report line");
    let report: serde_json::Value = serde_json::from_str(&report).expect(&report);
    assert!(report["fatal"].is_null(), "{report}");
    let shown = report["registrationShownMs"]
        .as_u64()
        .unwrap_or_else(|| panic!("the registration was not shown within 2 s: {report}"));
    assert!(shown <= 2000, "{report}");
    assert_eq!(report["flowClosed"], true, "{report}");
    assert_eq!(report["consoleErrors"], json!([]), "{report}");
    assert_eq!(report["failedRequests"], json!([]), "{report}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    // Closed for real: the flow is gone, and early's binding with it.
    let (_, flows) = s.api("GET", "/api/v1/flows", None).await;
    assert!(
        !flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"].as_u64() == Some(flow)),
        "{flows}"
    );
    let (status, _) = s
        .api("GET", "/api/v1/registrations/sip%3Aearly%40localhost", None)
        .await;
    assert_eq!(status, 404);
    let _ = driver.wait().await;
}
