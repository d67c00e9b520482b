//! Plugin sandboxing and the failure policy, with the `misbehave` test plugin: traps,
//! endless loops, memory bombs and invalid decisions never take the server down.

use std::time::{Duration, Instant};

use sipwasm_tests::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> HttpReply {
    http_once(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
    .await
}

async fn assert_still_serving(s: &Server) {
    let r = get(s.ws2, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
}

#[tokio::test]
async fn trap_gets_500_and_the_next_request_works() {
    let s = Server::standard("");
    let r = get(s.ws2, "/trap").await;
    assert_eq!(r.status, 500);
    assert_still_serving(&s).await;
    assert!(
        s.wait_for_log("plugin failed on an HTTP request: trap")
            .await,
        "{}",
        s.logs()
    );
    let line = s
        .logs()
        .lines()
        .find(|l| l.contains("plugin failed on an HTTP request: trap"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("plugin=\"misbehave\"") && line.contains("cause=\"trap\""),
        "{line}"
    );
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"misbehave\",cause=\"trap\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn endless_loop_is_stopped_at_the_deadline() {
    let s = Server::standard("");
    let started = Instant::now();
    let r = get(s.ws2, "/loop").await;
    let took = started.elapsed();
    assert_eq!(r.status, 500);
    // Deadline 250 ms, epoch tick 5 ms: generous bound, this is not a benchmark.
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    assert_still_serving(&s).await;
    assert!(s.wait_for_log("cause=\"timeout\"").await, "{}", s.logs());
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"misbehave\",cause=\"timeout\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_looping_plugin_does_not_stall_other_connections() {
    let s = Server::standard("");
    // Several loops at once (more than the two worker threads) and a normal request.
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.ws2;
            tokio::spawn(async move { get(addr, "/loop").await.status })
        })
        .collect();
    let r = get(s.ws2, "/").await;
    assert_eq!(r.status, 200);
    for l in loops {
        assert_eq!(l.await.unwrap(), 500);
    }
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_the_cap() {
    let s = Server::standard("");
    let r = get(s.ws2, "/bomb").await;
    assert_eq!(r.status, 500);
    assert_still_serving(&s).await;
    assert!(s.wait_for_log("cause=\"memory\"").await, "{}", s.logs());
}

#[tokio::test]
async fn invalid_decisions_get_500() {
    let s = Server::standard("");
    for path in ["/crlf", "/owned", "/status-101"] {
        let r = get(s.ws2, path).await;
        assert_eq!(r.status, 500, "{path}");
        assert!(r.header("Injected").is_none());
        assert!(r.header("X-Test").is_none());
    }
    let r = http_once(
        s.ws2,
        handshake("localhost", "")
            .replace("GET / ", "GET /wrong-proto ")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_still_serving(&s).await;
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"misbehave\",cause=\"invalid\"}")
            .await,
        4
    );
    assert!(s.wait_for_log("CR, LF").await, "{}", s.logs());
}

#[tokio::test]
async fn failure_open_falls_back_to_the_builtin_policy() {
    let s = Server::standard("");
    let config = STANDARD.replace(
        "path = \"{plugins}/misbehave.wasm\"",
        "path = \"{plugins}/misbehave.wasm\"\nfailure = \"open\"",
    );
    drop(s);
    let s = Server::start(&config);
    let up = http_once(
        s.ws2,
        handshake("localhost", "")
            .replace("GET / ", "GET /trap ")
            .as_bytes(),
    )
    .await;
    assert_eq!(up.status, 101);
    let plain = get(s.ws2, "/trap").await;
    assert_eq!(plain.status, 404);
}

#[tokio::test]
async fn challenge_gets_401_with_host_made_nonces() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws2).await;
    c.send(b"GET /challenge HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 401);
    let challenges = r.headers_named("WWW-Authenticate");
    assert_eq!(challenges.len(), 2, "{r:?}");
    assert!(
        challenges[0]
            .starts_with("Digest realm=\"test\", qop=\"auth\", algorithm=SHA-256, nonce=\"")
    );
    assert!(challenges[1].contains("algorithm=MD5"));
    // The connection stays usable.
    c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(c.response().await.unwrap().status, 200);
}

/// Issue 18, item 6: an http-handler verifies the credentials of the challenge it asked
/// for (the `digest` import in its world), with the same rules as for SIP: the nonce is
/// the client's, the `uri` is the request's, a count is good for one request.
#[tokio::test]
async fn an_http_handler_verifies_the_credentials_of_its_challenge() {
    use md5::Digest as _;
    let md5 = |s: &str| -> String {
        md5::Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws2).await;
    c.send(b"GET /challenge HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    let md5_challenge = r
        .headers_named("WWW-Authenticate")
        .into_iter()
        .find(|v| v.contains("algorithm=MD5"))
        .unwrap()
        .to_string();
    let start = md5_challenge.find("nonce=\"").unwrap() + 7;
    let nonce = &md5_challenge[start..][..md5_challenge[start..].find('"').unwrap()];
    let answer = |target: &str, password: &str, nc: u32| {
        let ha1 = md5(&format!("web:test:{password}"));
        let ha2 = md5(&format!("GET:{target}"));
        let response = md5(&format!("{ha1}:{nonce}:{nc:08x}:abc:auth:{ha2}"));
        format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Digest username=\"web\", \
             realm=\"test\", nonce=\"{nonce}\", uri=\"{target}\", response=\"{response}\", \
             algorithm=MD5, qop=auth, nc={nc:08x}, cnonce=\"abc\"\r\n\r\n"
        )
    };
    let mut ask = async |raw: String| {
        c.send(raw.as_bytes()).await;
        String::from_utf8(c.response().await.unwrap().body).unwrap()
    };
    assert_eq!(ask(answer("/verify?pw1", "pw1", 1)).await, "valid");
    assert_eq!(ask(answer("/verify?pw1", "other", 2)).await, "invalid");
    // The same count again on another request: a replay.
    assert_eq!(ask(answer("/verify?pw1", "pw1", 1)).await, "stale");
    assert_eq!(ask(answer("/verify?pw1", "pw1", 3)).await, "valid");
    // Credentials for another target do not pass for this one.
    let other = answer("/elsewhere", "pw1", 4).replacen("GET /elsewhere", "GET /verify?pw1", 1);
    assert_eq!(ask(other).await, "invalid");
    assert_eq!(
        ask("GET /verify?pw1 HTTP/1.1\r\nHost: localhost\r\n\r\n".into()).await,
        "missing"
    );
}

#[tokio::test]
async fn host_imports_config_and_is_myself() {
    let s = Server::standard("");
    let r = get(s.ws2, "/config").await;
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json, serde_json::json!({"greeting": "hello", "answer": 42}));
    let port = s.ws2.port();
    for (host, expected) in [
        ("localhost".to_string(), "yes"),
        ("LOCALHOST".to_string(), "yes"),
        (format!("localhost:{port}"), "yes"),
        (format!("127.0.0.1:{}", s.wss.port()), "yes"),
        ("127.0.0.1".to_string(), "yes"),
        ("localhost:1".to_string(), "no"),
        ("evil.example".to_string(), "no"),
        ("127.0.0.2".to_string(), "no"),
    ] {
        let r = get(s.ws2, &format!("/myself?{host}")).await;
        assert_eq!(String::from_utf8_lossy(&r.body), expected, "{host}");
    }
}

#[tokio::test]
async fn request_reaches_the_plugin_whole() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws2).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        c.send(b"POST /echo?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Dup: 1\r\nx-dup: 2\r\nContent-Length: 3\r\n\r\nabc")
            .await;
        let r = c.response().await.unwrap();
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.starts_with("POST /echo?q=1 HTTP/1.1\n"), "{text}");
        assert!(
            text.contains("X-Dup: 1\nx-dup: 2\n"),
            "order and duplicates kept: {text}"
        );
        assert!(
            text.contains(&format!("-> 127.0.0.1:{} Transport::Tcp", s.ws2.port())),
            "{text}"
        );
        assert!(text.contains("websocket: Websocket::None"), "{text}");
        assert!(text.contains("body: abc"), "{text}");
        ids.push(
            text.lines()
                .find(|l| l.starts_with("connection-id:"))
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(ids[0], ids[1], "same connection, same id");
}

#[tokio::test]
async fn upgrade_headers_and_identity_reach_the_flow() {
    let s = Server::standard("");
    let mut c = HttpConn::connect(s.ws2).await;
    c.send(handshake("localhost", "").as_bytes()).await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("Set-Cookie"), Some("session=test; HttpOnly"));
    // The flow is listed once its task has taken over the upgraded connection, which
    // can be just after the 101 reached us: ask again for up to 2 s.
    let mut listed = Vec::new();
    for _ in 0..100 {
        let flows = s.admin_request("GET", "/flows").await;
        let json: serde_json::Value = serde_json::from_slice(&flows.body).unwrap();
        listed = json.as_array().unwrap().clone();
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flow = listed
        .first()
        .expect("the upgraded connection is listed as a flow");
    assert_eq!(flow["transport"], "WS");
    assert_eq!(flow["identity"], serde_json::json!([["user", "test"]]));
    drop(c);
}

#[tokio::test]
async fn fresh_instances_per_request_work_too() {
    let config = STANDARD.replace(
        "path = \"{plugins}/misbehave.wasm\"",
        "path = \"{plugins}/misbehave.wasm\"\ninstances = \"fresh\"",
    );
    let s = Server::start(&config);
    for _ in 0..3 {
        assert_still_serving(&s).await;
    }
    assert_eq!(
        s.metric("sipwasm_plugin_instantiations_total{plugin=\"misbehave\"}")
            .await,
        3
    );
    let s2 = Server::standard("");
    for _ in 0..3 {
        assert_still_serving(&s2).await;
    }
    assert_eq!(
        s2.metric("sipwasm_plugin_instantiations_total{plugin=\"misbehave\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn plugins_are_chosen_by_path_prefix() {
    let config = r#"
[server]
domains = ["localhost", "127.0.0.1"]
data-dir = "{data}"

[[listen]]
transport = "ws"
address = "127.0.0.1:{ws}"
routes = { "/" = "welcome", "/ws" = "seed" }

[[listen]]
transport = "ws"
address = "127.0.0.1:{ws2}"
routes = { "/sip" = "seed" }

[plugins.welcome]
path = "{plugins}/welcome.wasm"

[plugins.seed]
path = "{plugins}/seed_policy.wasm"
[plugins.seed.config]
web-ports = [{ws}, {ws2}]
"#;
    let s = Server::start(config);
    let page = get(s.ws, "/").await;
    assert!(String::from_utf8_lossy(&page.body).contains("<title>sipwasm</title>"));
    let host = format!("localhost:{}", s.ws.port());
    let up = http_once(
        s.ws,
        handshake(&host, "")
            .replace("GET / ", "GET /ws?token=1 ")
            .as_bytes(),
    )
    .await;
    assert_eq!(up.status, 101, "seed-policy upgrades at /ws");
    // seed-policy answers plain requests under /ws with 404 (welcome would serve a page).
    assert_eq!(get(s.ws, "/ws/").await.status, 404);
    // "/wsx" is not under "/ws": it goes to "/" (welcome), which has no such page.
    let other = get(s.ws, "/wsx").await;
    assert_eq!(other.status, 404);
    assert_eq!(other.header("Content-Type"), Some("text/plain"));
    // A listener with routes only: paths none of them match get the host's 404.
    let none = get(s.ws2, "/elsewhere").await;
    assert_eq!(none.status, 404);
    assert_eq!(
        none.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
}

#[tokio::test]
async fn guest_stdout_and_stderr_become_log_lines() {
    let s = Server::standard("");
    let r = get(s.ws2, "/stderr").await;
    assert_eq!(r.status, 200);
    assert!(
        s.wait_for_log("\"misbehave: a line on stderr\" plugin=\"misbehave\"")
            .await,
        "{}",
        s.logs()
    );
    assert!(
        s.logs()
            .contains("\"misbehave: a line on stdout\" plugin=\"misbehave\""),
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn a_trap_report_carries_what_the_guest_printed_last() {
    let s = Server::standard("");
    let r = get(s.ws2, "/throw").await;
    assert_eq!(r.status, 500);
    assert!(
        s.wait_for_log("(stderr: Error: misbehave threw)").await,
        "{}",
        s.logs()
    );
    assert_still_serving(&s).await;
}

/// `misbehave` imports `wasi:keyvalue/store`, which the host does not grant: it loads
/// (the log says what is denied), and the call that uses it fails closed.
#[tokio::test]
async fn ungranted_wasi_imports_load_and_fail_closed() {
    let s = Server::standard("");
    assert!(
        s.wait_for_log(
            "imports not granted to plugins, calls to them fail: wasi:keyvalue/store@0.2.0-draft"
        )
        .await,
        "{}",
        s.logs()
    );
    let r = get(s.ws2, "/denied").await;
    assert_eq!(r.status, 500);
    assert!(
        s.wait_for_log("wasi:keyvalue/store@0.2.0-draft#get is not granted to plugins")
            .await,
        "{}",
        s.logs()
    );
    assert_eq!(
        s.metric("sipwasm_plugin_failures_total{plugin=\"misbehave\",cause=\"trap\"}")
            .await,
        1
    );
    assert_still_serving(&s).await;
}
