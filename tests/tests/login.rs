//! Browser login end to end: the identity a plugin proves at the WebSocket upgrade,
//! enforced on the flow's SIP by the host (`[[listen]] identity = "enforce"`).

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::Ua;
use sipwasm_tests::*;

/// The standard server with its `ws3` listener served by `misbehave` (whose `/as?U`
/// logs the connection in as U) with its identity enforced, `ws2` the same plugin
/// with the identity only attached, and call-policy as the routing plugin.
fn server() -> Server {
    let template = STANDARD.replace(
        "address = \"127.0.0.1:{ws3}\"\nplugin = \"welcome\"",
        "address = \"127.0.0.1:{ws3}\"\nplugin = \"misbehave\"\nidentity = \"enforce\"",
    );
    assert_ne!(template, STANDARD, "the ws3 listener is in STANDARD");
    Server::start(&format!(
        r#"{template}
[sip]
router = "router"

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
# A debug build under parallel tests: see the seed plugin in `STANDARD`.
deadline = "2s"
"#
    ))
}

fn warning(r: &sipwasm::sip::Response) -> String {
    r.headers
        .get(&HeaderName::Warning)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn an_enforced_flow_registers_and_sends_only_as_its_user() {
    let s = server();
    let routed = "sipwasm_plugin_calls_total{plugin=\"router\"}";
    let mut carol = Ua::udp(&s, "carol").await;
    assert_eq!(carol.register(600).await.status, 200);

    let mut alice = Ua::ws_at(s.ws3, "/as?alice", "alice").await;
    assert_eq!(alice.register(600).await.status, 200, "{}", s.logs());
    let before = s.metric(routed).await;
    assert!(before >= 2, "REGISTERs are routed: {before}");

    // As bob, on alice's connection: refused by the host, the router not asked.
    alice.user = "bob".into();
    let r = alice.register(600).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        warning(&r).contains("To Is Not This Connection's User"),
        "{r:?}"
    );
    let (msg, _) = alice.request("MESSAGE", "carol", "", "from bob, honest");
    alice.send(&msg).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        warning(&r).contains("From Is Not This Connection's User"),
        "{r:?}"
    );
    assert!(
        carol
            .quiet_for(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(
        s.metric(routed).await,
        before,
        "the routing plugin was not consulted"
    );
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"identity\"}")
            .await,
        2
    );
    // Nothing of bob was registered: a message to him finds no one.
    let (to_bob, _) = carol.request("MESSAGE", "bob", "", "hi bob");
    carol.send(&to_bob).await;
    assert_eq!(carol.recv_final().await.status, 404);

    // As herself: routed and delivered as from any flow.
    alice.user = "alice".into();
    let (msg, _) = alice.request("MESSAGE", "carol", "", "from alice");
    alice.send(&msg).await;
    let got = carol.recv_request("MESSAGE").await;
    assert_eq!(&got.body[..], b"from alice");
    let ok = carol.response(&got, 200, "", "");
    carol.send(&ok).await;
    assert_eq!(alice.recv_final().await.status, 200);
    assert!(s.metric(routed).await > before);

    // The control API shows whose flow it is and that the listener holds it to that.
    let flows = s.admin_request("GET", "/flows").await;
    let list: serde_json::Value = serde_json::from_slice(&flows.body).unwrap();
    let flow = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["identity"] == serde_json::json!([["user", "alice"]]))
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(flow["identity_enforced"], true, "{flow}");
    assert!(
        s.logs().contains("identity=user=alice enforced=true"),
        "{}",
        s.logs()
    );
}

#[tokio::test]
async fn a_domain_in_the_identity_binds_the_host_part_too() {
    let s = server();
    let mut other = Ua::ws_at(s.ws3, "/as?dave@example.org", "dave").await;
    let r = other.register(600).await;
    assert_eq!(
        r.status, 403,
        "sip:dave@localhost is not dave@example.org: {r:?}"
    );
    let mut here = Ua::ws_at(s.ws3, "/as?dave@LOCALHOST", "dave").await;
    assert_eq!(here.register(600).await.status, 200);
}

#[tokio::test]
async fn an_upgrade_without_a_user_is_refused_where_identity_is_enforced() {
    let s = server();
    let refused = ws_connect_path(s.ws3, "/anonymous").await.map(|_| ());
    let err = refused.expect_err("no flow without a user");
    assert!(err.contains("500"), "{err}");
    assert!(
        s.wait_for_log("the listener enforces identity and the plugin attached no `user`")
            .await
    );
    // Where it is only attached, anyone may be anyone (the routing plugin decides).
    let mut anon = Ua::ws_at(s.ws2, "/anonymous", "erin").await;
    assert_eq!(anon.register(600).await.status, 200);
    let mut as_alice = Ua::ws_at(s.ws2, "/as?alice", "frank").await;
    assert_eq!(as_alice.register(600).await.status, 200);
    assert_eq!(
        s.metric("sipwasm_sip_refused_total{reason=\"identity\"}")
            .await,
        0
    );
}

#[test]
fn identity_enforcement_needs_a_websocket_listener() {
    let err = refused_config(
        r#"
[server]
data-dir = "{data}"

[[listen]]
transport = "udp"
address = "127.0.0.1:{sip}"
identity = "enforce"
"#,
    );
    assert!(err.contains("listen[0].identity"), "{err}");
    assert!(err.contains("only ws and wss listeners"), "{err}");
}

/// The standard server with `ws3` served by the token-login at `path` (granted
/// `[keys.login]`, which the server makes in its data directory) with its identity
/// enforced, and `ws2` by the same plugin without the grant.
fn token_server(path: &str) -> Server {
    let template = STANDARD.replace(
        "address = \"127.0.0.1:{ws3}\"\nplugin = \"welcome\"",
        "address = \"127.0.0.1:{ws3}\"\nplugin = \"token\"\nidentity = \"enforce\"",
    );
    let template = template.replace(
        "address = \"127.0.0.1:{ws2}\"\nplugin = \"misbehave\"",
        "address = \"127.0.0.1:{ws2}\"\nplugin = \"ungranted\"",
    );
    // The Python interpreter needs more than the default 32 MiB; a debug build under
    // parallel tests more than 50 ms (see the seed plugin in `STANDARD`).
    let limits = "deadline = \"2s\"\nmemory-limit = \"96MiB\"";
    Server::start(&format!(
        r#"{template}
[keys.login]

[plugins.token]
path = "{path}"
keys = ["login"]
{limits}

[plugins.ungranted]
path = "{path}"
{limits}
"#
    ))
}

/// A token as an operator's web application mints one: `EXPIRY:USER:` and the
/// unpadded base64url HMAC-SHA-256 of `EXPIRY:USER` under the key file's bytes.
fn mint(s: &Server, user: &str, expiry: u64) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let hex = std::fs::read_to_string(s.data_dir.path().join("keys/login.key")).unwrap();
    let key: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    let signed = format!("{expiry}:{user}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}:{mac}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The handshake's answer for `?token=…` (percent-encoded as a browser's URL would).
async fn upgrade_with(addr: std::net::SocketAddr, token: &str) -> HttpReply {
    let q: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let raw = handshake("localhost", "").replacen("GET / ", &format!("GET /?token={q} "), 1);
    http_once(addr, raw.as_bytes()).await
}

/// What every token-login (Rust, JavaScript, Python) must do: let in the user a valid
/// token names, held to that user, and no one else, saying why.
async fn token_login_table(path: &str) {
    let s = token_server(path);
    let token = mint(&s, "alice", now() + 300);
    let r = upgrade_with(s.ws3, &token).await;
    assert_eq!(r.status, 101, "{r:?}\n{}", s.logs());

    // Logged in as alice, held to alice.
    let q = token.replace(':', "%3A");
    let mut alice = Ua::ws_at(s.ws3, &format!("/?token={q}"), "alice").await;
    assert_eq!(alice.register(600).await.status, 200);
    alice.user = "bob".into();
    assert_eq!(alice.register(600).await.status, 403);
    let flows = s.admin_request("GET", "/flows").await;
    let text = String::from_utf8_lossy(&flows.body);
    assert!(
        text.contains(r#"["user","alice"],["login","token"]"#),
        "{text}"
    );

    // Refused, each with what is wrong in words.
    let (_, alice_mac) = token.rsplit_once(':').unwrap();
    let expiry = now() + 300;
    for (token, body) in [
        (String::new(), "Token Required"),
        (format!("{expiry}:bob:{alice_mac}"), "Invalid Token"),
        (mint(&s, "alice", now() - 1), "Token Expired"),
        (mint(&s, "alice", now() + 3 * 86_400), "Invalid Token"),
        (format!("{expiry}:alice:not*base64"), "Invalid Token"),
        ("alice".to_string(), "Invalid Token"),
        (format!("soon:alice:{alice_mac}"), "Invalid Token"),
    ] {
        let r = upgrade_with(s.ws3, &token).await;
        assert_eq!(r.status, 403, "{token}: {r:?}");
        assert_eq!(String::from_utf8_lossy(&r.body).trim(), body, "{token}");
    }
    // A tampered MAC (one bit) is as good as none.
    let mut flipped = token.into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let r = upgrade_with(s.ws3, &String::from_utf8(flipped).unwrap()).await;
    assert_eq!(r.status, 403);

    // The same plugin without the key granted lets no one in, even with a good token.
    let good = mint(&s, "alice", now() + 300);
    let r = upgrade_with(s.ws2, &good).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.body).trim(), "Invalid Token");
}

#[tokio::test]
async fn token_login_in_rust() {
    token_login_table("{plugins}/token_login.wasm").await;
}

#[tokio::test]
async fn token_login_in_javascript() {
    token_login_table("{foreign}/token_login_js.wasm").await;
}

#[tokio::test]
async fn token_login_in_python() {
    token_login_table("{foreign}/token_login_py.wasm").await;
}

#[test]
fn keys_are_checked_at_start() {
    let err = refused_config(
        r#"
[server]
data-dir = "{data}"

[[listen]]
transport = "ws"
address = "127.0.0.1:{ws}"
plugin = "p"

[plugins.p]
builtin = "seed-policy"
keys = ["login"]
"#,
    );
    assert!(err.contains("plugins.p.keys"), "{err}");
    assert!(err.contains("no key named \"login\""), "{err}");

    let err = refused_config(
        r#"
[server]
data-dir = "{data}"

[[listen]]
transport = "udp"
address = "127.0.0.1:{sip}"

[keys.login]
file = "{data}/nonesuch.key"
"#,
    );
    assert!(err.contains("keys.login.file"), "{err}");
    assert!(err.contains("nonesuch.key"), "{err}");
}
