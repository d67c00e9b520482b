//! Browser login end to end: the identity a plugin proves at the WebSocket upgrade,
//! enforced on the flow's SIP by the host (`[[listen]] identity = "enforce"`).

use sipwasm::sip::headers::HeaderName;
use sipwasm_tests::sip::Ua;
use sipwasm_tests::*;

/// `STANDARD` with its `ws3` listener served by `plugin` with its identity enforced
/// (instead of welcome), then `extra`.
fn standard_with_ws3(plugin: &str, extra: &str) -> String {
    let template = STANDARD.replace(
        "address = \"127.0.0.1:{ws3}\"\nplugin = \"welcome\"",
        &format!("address = \"127.0.0.1:{{ws3}}\"\nplugin = \"{plugin}\"\nidentity = \"enforce\""),
    );
    assert_ne!(template, STANDARD, "the ws3 listener is in STANDARD");
    format!("{template}\n{extra}")
}

/// The routing plugin of these tests: call-policy, with `extra` settings lines.
fn call_policy_router(extra: &str) -> String {
    format!(
        r#"
[sip]
router = "router"

[plugins.router]
path = "{{plugins}}/call_policy.wasm"
# A debug build under parallel tests: see the seed plugin in `STANDARD`.
deadline = "2s"
{extra}
"#
    )
}

/// The standard server with its `ws3` listener served by `misbehave` (whose `/as?U`
/// logs the connection in as U) with its identity enforced, `ws2` the same plugin
/// with the identity only attached, and call-policy as the routing plugin.
fn server() -> Server {
    Server::start(&standard_with_ws3("misbehave", &call_policy_router("")))
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
    // Nor as alice of a domain that is not ours.
    alice.user = "alice".into();
    let (msg, _) = alice.request("MESSAGE", "carol", "", "from elsewhere");
    let msg = msg.replace(
        "From: <sip:alice@localhost>",
        "From: <sip:alice@other.example>",
    );
    assert!(msg.contains("From: <sip:alice@other.example>"), "{msg}");
    alice.send(&msg).await;
    let r = alice.recv_final().await;
    assert_eq!(r.status, 403, "{r:?}");
    alice.user = "bob".into();
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
        3
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
    let template = standard_with_ws3(
        "token",
        &format!(
            r#"
[keys.login]

[plugins.token]
path = "{path}"
keys = ["login"]
{LIMITS}

[plugins.ungranted]
path = "{path}"
{LIMITS}
"#
        ),
    );
    Server::start(&template.replace(
        "address = \"127.0.0.1:{ws2}\"\nplugin = \"misbehave\"",
        "address = \"127.0.0.1:{ws2}\"\nplugin = \"ungranted\"",
    ))
}

/// The Python interpreter needs more than the default 32 MiB; a debug build under
/// parallel tests more than 50 ms (see the seed plugin in `STANDARD`).
const LIMITS: &str = "deadline = \"2s\"\nmemory-limit = \"96MiB\"";

/// The server's generated `[keys.login]`, from its data directory.
fn login_key(s: &Server) -> Vec<u8> {
    let hex = std::fs::read_to_string(s.data_dir.path().join("keys/login.key")).unwrap();
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Unpadded base64url of HMAC-SHA-256(`key`, `text`).
fn mac_b64(key: &[u8], text: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A token as an operator's web application mints one: `EXPIRY:USER:` and the
/// unpadded base64url HMAC-SHA-256 of `EXPIRY:USER` under the key file's bytes.
fn mint(s: &Server, user: &str, expiry: u64) -> String {
    let signed = format!("{expiry}:{user}");
    format!("{signed}:{}", mac_b64(&login_key(s), &signed))
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

/// Runs `sipwasm --config CONFIG user ARGS` with `stdin` as its input.
fn user_cmd(config: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(sipwasm_bin())
        .arg("--config")
        .arg(config)
        .arg("user")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` answer to a challenge (RFC 2617, qop=auth, MD5).
fn digest_answer(challenge: &str, user: &str, password: &str, nc: u32) -> String {
    let realm = param(challenge, "realm");
    digest_answer_ha1(
        challenge,
        user,
        &md5_hex(&format!("{user}:{realm}:{password}")),
        nc,
    )
}

/// A parameter of a challenge value.
fn param(challenge: &str, name: &str) -> String {
    let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    challenge[start..][..challenge[start..].find('"').unwrap()].to_string()
}

/// [`digest_answer`] from a given HA1 (what a client that knows it, or guesses it,
/// can answer).
fn digest_answer_ha1(challenge: &str, user: &str, ha1: &str, nc: u32) -> String {
    let (realm, nonce) = (param(challenge, "realm"), param(challenge, "nonce"));
    let ha2 = md5_hex("REGISTER:sip:localhost");
    let nc = format!("{nc:08x}");
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:localhost\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\""
    )
}

#[tokio::test]
async fn sip_digest_is_checked_against_the_user_store() {
    // call-policy's [auth] without `users`: the store decides.
    let s = Server::standard(&call_policy_router(
        "[plugins.router.config.auth]\nrealm = \"localhost\"\nmethods = [\"REGISTER\"]",
    ));
    // Added while the server runs: picked up within a second.
    let (ok, _, err) = user_cmd(&s.config_path, &["add", "alice"], "alice-secret\n");
    assert!(ok, "{err}");
    assert!(err.contains("alice in realm localhost: added"), "{err}");
    let store = std::fs::read_to_string(s.data_dir.path().join("users")).unwrap();
    assert!(
        !store.contains("alice-secret"),
        "no password in the store: {store}"
    );
    assert!(
        store.contains(&format!(
            "alice:localhost:{}:",
            md5_hex("alice:localhost:alice-secret")
        )),
        "{store}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let mut alice = Ua::udp(&s, "alice").await;
    let register = |ua: &mut Ua, auth: &str| {
        ua.register_text(600).replace(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
        )
    };
    let r = alice.register(600).await;
    assert_eq!(r.status, 401, "{r:?}");
    let challenge = r
        .headers
        .get(&HeaderName::WwwAuthenticate)
        .unwrap()
        .to_string();
    let text = register(&mut alice, &digest_answer(&challenge, "alice", "guess", 1));
    alice.send(&text).await;
    let r = alice.recv_final().await;
    assert_eq!((r.status, r.reason.as_str()), (403, "Wrong Credentials"));
    let text = register(
        &mut alice,
        &digest_answer(&challenge, "alice", "alice-secret", 2),
    );
    alice.send(&text).await;
    assert_eq!(alice.recv_final().await.status, 200);
    // Someone the store does not know: refused as a wrong password is.
    let mut zed = Ua::udp(&s, "zed").await;
    let text = register(&mut zed, &digest_answer(&challenge, "zed", "whatever", 3));
    zed.send(&text).await;
    let r = zed.recv_final().await;
    assert_eq!((r.status, r.reason.as_str()), (403, "Wrong Credentials"));
    // Nor does any HA1 an attacker may guess the host uses for unknown users.
    for (i, ha1) in ["-", "", "0"].into_iter().enumerate() {
        let mut ghost = Ua::udp(&s, "ghost").await;
        let text = register(
            &mut ghost,
            &digest_answer_ha1(&challenge, "ghost", ha1, 4 + i as u32),
        );
        ghost.send(&text).await;
        let r = ghost.recv_final().await;
        assert_eq!(r.status, 403, "HA1 {ha1:?}: {r:?}");
    }

    // A new password replaces the old; removing the user ends it.
    let (ok, _, err) = user_cmd(&s.config_path, &["add", "alice"], "new-secret\n");
    assert!(ok && err.contains("password changed"), "{err}");
    let (ok, out, _) = user_cmd(&s.config_path, &["list"], "");
    assert!(
        ok && out.contains("alice\tlocalhost\tMD5, SHA-256"),
        "{out}"
    );
    let (ok, _, err) = user_cmd(&s.config_path, &["remove", "alice"], "");
    assert!(ok, "{err}");
    let (ok, _, err) = user_cmd(&s.config_path, &["remove", "alice"], "");
    assert!(
        !ok && err.contains("no user alice in realm localhost"),
        "{err}"
    );
    let (ok, _, err) = user_cmd(&s.config_path, &["add", "a:b"], "pw\n");
    assert!(!ok && err.contains("no `:`"), "{err}");
}

#[test]
fn a_malformed_user_store_is_refused_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "# ok\nalice:localhost:{}\nbob:localhost:nothex\n",
            md5_hex("alice:localhost:pw")
        ),
    )
    .unwrap();
    let err = refused_config(&format!(
        r#"
[server]
data-dir = "{{data}}"

[[listen]]
transport = "udp"
address = "127.0.0.1:{{sip}}"

[users]
file = "{}"
"#,
        users.display()
    ));
    assert!(err.contains("users.file"), "{err}");
    assert!(
        err.contains("users line 3: the MD5 HA1 is not 32 hex digits"),
        "{err}"
    );
}

/// The standard server with `ws3` served by cookie-login (granted `[keys.login]`)
/// with its identity enforced, and alice (password `alice-secret`) in the user store.
async fn cookie_server() -> Server {
    // The wss listener too, for the cookie's `Secure` over https.
    let with_wss = |t: String| {
        t.replace(
            "address = \"127.0.0.1:{wss}\"\nplugin = \"seed\"",
            "address = \"127.0.0.1:{wss}\"\nplugin = \"cookie\"\nidentity = \"enforce\"",
        )
    };
    let s = Server::start(&with_wss(standard_with_ws3(
        "cookie",
        r#"
[keys.login]

[plugins.cookie]
path = "{plugins}/cookie_login.wasm"
keys = ["login"]
deadline = "2s"
"#,
    )));
    let (ok, _, err) = user_cmd(&s.config_path, &["add", "alice"], "alice-secret\n");
    assert!(ok, "{err}");
    // The store is looked at again once a second at most.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s
}

/// A plain HTTP request to `addr` with `Host: localhost:PORT` and `extra` header lines.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> HttpReply {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    http_once(addr, raw.as_bytes()).await
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";

/// A session cookie value as cookie-login makes one, under the server's key.
fn session_cookie(s: &Server, user: &str, expiry: u64) -> String {
    use base64::Engine as _;
    let mac = mac_b64(&login_key(s), &format!("cookie:{expiry}:{user}"));
    let user = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user);
    format!("{expiry}.{user}.{mac}")
}

#[tokio::test]
async fn cookie_login_through_the_form_then_the_websocket() {
    let s = cookie_server().await;
    let origin = format!("Origin: http://localhost:{}\r\n", s.ws3.port());

    let form = http(s.ws3, "GET", "/login?next=/phone", "", "").await;
    assert_eq!(form.status, 200, "{form:?}");
    let page = String::from_utf8_lossy(&form.body).into_owned();
    assert!(
        page.contains("<form method=\"post\" action=\"/login\">"),
        "{page}"
    );
    assert!(page.contains("value=\"/phone\""), "{page}");

    // Wrong password, unknown user: the form again, no cookie.
    for body in ["user=alice&password=guess", "user=nobody&password=x"] {
        let r = http(s.ws3, "POST", "/login", &format!("{FORM}{origin}"), body).await;
        assert_eq!(r.status, 403, "{body}: {r:?}");
        assert!(String::from_utf8_lossy(&r.body).contains("Wrong user or password."));
        assert!(r.header("Set-Cookie").is_none());
    }
    // Another site's page posting the form: refused (login CSRF).
    let r = http(
        s.ws3,
        "POST",
        "/login",
        &format!("{FORM}Origin: http://evil.example\r\n"),
        "user=alice&password=alice-secret",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");

    // The right password: to `next`, with the session cookie.
    let r = http(
        s.ws3,
        "POST",
        "/login",
        &format!("{FORM}{origin}"),
        "user=alice&password=alice-secret&next=%2Fphone",
    )
    .await;
    assert_eq!(r.status, 303, "{r:?}\n{}", s.logs());
    assert_eq!(r.header("Location"), Some("/phone"));
    let set = r.header("Set-Cookie").unwrap().to_string();
    for attr in ["Path=/", "Max-Age=43200", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("sipwasm_session="), "{cookie}");
    // `next` stays on this server: no `//host`, and no tab a browser would strip from
    // the Location to make one.
    for next in [
        "%2F%2Fevil.example",
        "%2F%09%2Fevil.example",
        "%2F%5C%2Fevil.example",
    ] {
        let r = http(
            s.ws3,
            "POST",
            "/login",
            FORM,
            &format!("user=alice&password=alice-secret&next={next}"),
        )
        .await;
        assert_eq!(r.header("Location"), Some("/"), "{next}");
    }

    // The WebSocket with the cookie is alice's, held to alice.
    let mut alice = Ua::ws_with(s.ws3, "/", &[("Cookie", &cookie)], "alice").await;
    assert_eq!(alice.register(600).await.status, 200);
    alice.user = "bob".into();
    assert_eq!(alice.register(600).await.status, 403);
    let flows = String::from_utf8_lossy(&s.admin_request("GET", "/flows").await.body).into_owned();
    assert!(
        flows.contains(r#"["user","alice"],["login","cookie"]"#),
        "{flows}"
    );

    // Without it, with a tampered or an expired one, or from another site's page: 403.
    let value = cookie.trim_start_matches("sipwasm_session=");
    let tampered = format!("sipwasm_session={}", value.replacen("YWxpY2U", "Ym9i", 1));
    assert_ne!(tampered, cookie, "the user part is alice's");
    let expired = format!("sipwasm_session={}", session_cookie(&s, "alice", now() - 1));
    let forged_life = format!(
        "sipwasm_session={}",
        session_cookie(&s, "alice", now() + 86_400 * 30)
    );
    let good_again = format!(
        "sipwasm_session={}",
        session_cookie(&s, "alice", now() + 60)
    );
    for (headers, status) in [
        (vec![], 403),
        (vec![("Cookie", tampered.as_str())], 403),
        (vec![("Cookie", expired.as_str())], 403),
        (vec![("Cookie", forged_life.as_str())], 403),
        (
            vec![
                ("Cookie", cookie.as_str()),
                ("Origin", "http://evil.example"),
            ],
            403,
        ),
        (vec![("Cookie", good_again.as_str())], 101),
    ] {
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let raw = handshake(&format!("localhost:{}", s.ws3.port()), &extra);
        let r = http_once(s.ws3, raw.as_bytes()).await;
        assert_eq!(r.status, status, "{headers:?}: {r:?}");
    }

    // Over https the cookie is `Secure` too.
    let mut tls = HttpConn::over(tls_connect(s.wss, &s.certificate()).await);
    let body = "user=alice&password=alice-secret";
    tls.send(
        format!(
            "POST /login HTTP/1.1\r\nHost: localhost:{}\r\n{FORM}Content-Length: {}\r\n\r\n{body}",
            s.wss.port(),
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let r = tls.response().await.expect("an answer over https");
    assert_eq!(r.status, 303, "{r:?}");
    let secure = r.header("Set-Cookie").unwrap();
    assert!(secure.contains("; Secure"), "{secure}");

    // Logging out clears the cookie.
    let r = http(
        s.ws3,
        "POST",
        "/logout",
        &format!("Cookie: {cookie}\r\n"),
        "",
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("Location"), Some("/login"));
    let cleared = r.header("Set-Cookie").unwrap();
    assert!(
        cleared.starts_with("sipwasm_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// The README's first command's server (the embedded default, on free ports), as a
/// newcomer tries it: two visitors in headless Chromium open the page, log in through
/// the form, register, message and call each other with audio both ways
/// (`tests/js/tryit.mjs`).
#[tokio::test]
async fn the_try_it_page_on_the_embedded_default() {
    let out = std::process::Command::new(sipwasm_bin())
        .arg("--print-default-config")
        .output()
        .unwrap();
    let default = String::from_utf8(out.stdout).unwrap();
    let template = default
        .replace("127.0.0.1:8080", "127.0.0.1:{ws}")
        .replace("127.0.0.1:8443", "127.0.0.1:{wss}")
        .replace("127.0.0.1:5060", "127.0.0.1:{sip}")
        .replace("127.0.0.1:5061", "127.0.0.1:{tls}")
        .replacen("[server]\n", "[server]\ndata-dir = \"{data}\"\n", 1);
    assert!(
        template.contains("{ws}") && template.contains("{data}"),
        "{template}"
    );
    let s = Server::start(&template);
    let port = s.ws.port();
    // Any name logs in from this machine, but not through a reverse proxy here.
    let open = http(s.ws, "POST", "/login", FORM, "user=zoe&password=").await;
    assert_eq!(open.status, 303, "{open:?}");
    let proxied = http(
        s.ws,
        "POST",
        "/login",
        &format!("{FORM}X-Forwarded-For: 203.0.113.9\r\n"),
        "user=zoe&password=",
    )
    .await;
    assert_eq!(proxied.status, 403, "{proxied:?}");
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    let run = tokio::process::Command::new("node")
        .arg(js.join("tryit.mjs"))
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(["--other-url", &format!("http://localhost:{port}")])
        .args(["--chromium", "/usr/bin/chromium"])
        .current_dir(&js)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the try-it run ends within 3 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(r#"{"ev":"done"}"#),
        "{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    for step in [
        "registered",
        "message",
        "call_connected",
        "audio",
        "hung_up",
        "impersonation_refused",
    ] {
        assert!(
            stdout.contains(&format!("\"ev\":\"{step}\"")),
            "{step}: {stdout}"
        );
    }

    // Once the store has a user of the realm, the try-it mode is over: names need
    // their password, even from this machine.
    let (ok, _, err) = user_cmd(&s.config_path, &["add", "admin"], "admin-secret\n");
    assert!(ok, "{err}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let closed = http(s.ws, "POST", "/login", FORM, "user=zoe&password=").await;
    assert_eq!(closed.status, 403, "{closed:?}");
    let admin = http(
        s.ws,
        "POST",
        "/login",
        FORM,
        "user=admin&password=admin-secret",
    )
    .await;
    assert_eq!(admin.status, 303, "{admin:?}");
}

/// A request on a connection the host holds to its user needs no Digest: call-policy
/// with [auth] asks `digest.proven-user` first. Elsewhere the challenge stands.
#[tokio::test]
async fn an_enforced_login_needs_no_digest() {
    let s = Server::start(&standard_with_ws3(
        "misbehave",
        &call_policy_router(
            "[plugins.router.config.auth]\nrealm = \"localhost\"\nmethods = [\"REGISTER\", \"MESSAGE\"]",
        ),
    ));
    let mut held = Ua::ws_at(s.ws3, "/as?alice", "alice").await;
    assert_eq!(
        held.register(600).await.status,
        200,
        "no challenge on a held connection"
    );
    let mut attached = Ua::ws_at(s.ws2, "/as?alice", "alice").await;
    assert_eq!(
        attached.register(600).await.status,
        401,
        "identity only attached: challenged"
    );
    let mut phone = Ua::udp(&s, "alice").await;
    assert_eq!(phone.register(600).await.status, 401);
}
