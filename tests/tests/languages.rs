//! The seed policy written in Rust, JavaScript (jco, QuickJS) and Python
//! (componentize-py), each built from `plugins/` by the test build, must pass the same
//! end-to-end handshake table through the real binary.

use sipwasm_tests::*;

/// One server per language. The same component serves three listeners with three
/// configurations (compiled once; the other two load it from the compile cache):
/// `ws` plain, `ws2` with an Origin allow-list, `ws3` with web-ports that exclude it.
fn server(file: &str, limits: &str) -> Server {
    Server::start(&format!(
        r#"
[server]
domains = ["localhost", "127.0.0.1"]
data-dir = "{{data}}"
shutdown-grace = "2s"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws}}"
plugin = "seed"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws2}}"
plugin = "seed-origins"

[[listen]]
transport = "ws"
address = "127.0.0.1:{{ws3}}"
plugin = "seed-ports"

[admin]
listen = "127.0.0.1:{{admin}}"

[plugins.seed]
path = "{file}"
{limits}
[plugins.seed.config]
web-ports = [{{ws}}]

[plugins.seed-origins]
path = "{file}"
{limits}
[plugins.seed-origins.config]
web-ports = [{{ws2}}]
allowed-origins = ["https://app.example.org", "https://other.example.org"]

[plugins.seed-ports]
path = "{file}"
{limits}
[plugins.seed-ports.config]
web-ports = [1]
"#
    ))
}

fn host(addr: std::net::SocketAddr) -> String {
    format!("localhost:{}", addr.port())
}

/// Each broken handshake and the status it must get. Host-level rules (RFC 6455 / RFC
/// 7118) are re-checked by the host whatever the plugin decides; Host, Origin and port
/// rules are the policy's.
fn failures(h: &str) -> Vec<(&'static str, String, u16)> {
    let good = handshake(h, "");
    vec![
        (
            "missing key",
            good.replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), ""),
            400,
        ),
        ("short key", good.replace(SAMPLE_KEY, "c2hvcnQ="), 400),
        (
            "key not base64",
            good.replace(SAMPLE_KEY, "!!!!!!!!!!!!!!!!!!!!!!=="),
            400,
        ),
        ("version 8", good.replace("Version: 13", "Version: 8"), 426),
        (
            "no version",
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            400,
        ),
        (
            "sip not offered",
            good.replace("Protocol: sip", "Protocol: chat, xmpp"),
            400,
        ),
        (
            "no subprotocol",
            good.replace("Sec-WebSocket-Protocol: sip\r\n", ""),
            400,
        ),
        ("POST", good.replace("GET / ", "POST / "), 400),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        ("no Host", good.replace(&format!("Host: {h}\r\n"), ""), 400),
        (
            "two Hosts",
            good.replace(
                &format!("Host: {h}\r\n"),
                &format!("Host: {h}\r\nHost: {h}\r\n"),
            ),
            400,
        ),
        (
            "no Connection: upgrade",
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (
            "no Upgrade header",
            good.replace("Upgrade: websocket\r\n", ""),
            400,
        ),
        (
            "Upgrade: h2c",
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            400,
        ),
        ("foreign Host", good.replace(h, "evil.example"), 403),
        ("our name, wrong port", good.replace(h, "localhost:1"), 403),
        (
            "Host is a name of ours in another case",
            good.replace(h, &h.replace("localhost", "LocalHost")),
            101,
        ),
    ]
}

/// The whole table against a server running one language's seed policy.
async fn seed_policy_table(s: &Server, language: &str) {
    // A valid handshake: 101 with the RFC 6455 accept key and the sip subprotocol.
    let h = host(s.ws);
    let r = http_once(s.ws, handshake(&h, "").as_bytes()).await;
    assert_eq!(r.status, 101, "{language}: {r:?}");
    assert_eq!(r.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    assert_eq!(r.header("Sec-WebSocket-Protocol"), Some("sip"));
    assert_eq!(r.header("Upgrade"), Some("websocket"));
    assert_eq!(r.header("Connection"), Some("Upgrade"));

    for (what, request, status) in failures(&h) {
        let mut c = HttpConn::connect(s.ws).await;
        c.send(request.as_bytes()).await;
        let r = c
            .response()
            .await
            .unwrap_or_else(|| panic!("{language}, {what}: no response"));
        assert_eq!(r.status, status, "{language}, {what}: {r:?}");
        if status == 101 {
            continue;
        }
        if status == 426 {
            assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"), "{what}");
        }
        assert_eq!(r.header("Connection"), Some("close"), "{language}, {what}");
        assert!(c.closed().await, "{language}, {what}: connection left open");
    }

    // Plain HTTP gets the policy's 404, and the connection stays usable.
    let mut c = HttpConn::connect(s.ws).await;
    for _ in 0..3 {
        c.send(format!("GET /index.html HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes())
            .await;
        let r = c.response().await.expect("response");
        assert_eq!(r.status, 404, "{language}: {r:?}");
        assert_eq!(r.body, b"Not Found\n", "{language}");
        assert!(r.header("Date").is_some());
        assert!(r.header("Server").unwrap().starts_with("sipwasm/"));
    }

    // The Origin allow-list: listed origins pass, others and none are refused.
    let h2 = host(s.ws2);
    for (origin, status) in [
        ("Origin: https://app.example.org\r\n", 101),
        ("Origin: https://other.example.org\r\n", 101),
        ("Origin: https://evil.example\r\n", 403),
        ("Origin: null\r\n", 403),
        ("", 403),
    ] {
        let r = http_once(s.ws2, handshake(&h2, origin).as_bytes()).await;
        assert_eq!(r.status, status, "{language}, {origin:?}: {r:?}");
    }
    assert!(
        s.wait_for_log("Origin \\\"https://evil.example\\\" not allowed")
            .await,
        "{language}: {}",
        s.logs()
    );

    // A listener on a port that is not one of the policy's web ports.
    let r = http_once(s.ws3, handshake(&host(s.ws3), "").as_bytes()).await;
    assert_eq!(r.status, 403, "{language}: {r:?}");

    // A SIP client registers over the connection the policy admitted.
    let mut ua = sipwasm_tests::sip::Ua::ws(s, "alice").await;
    let ok = ua.register(300).await;
    assert_eq!(ok.status, 200, "{language}: {ok:?}");
}

#[tokio::test]
async fn rust_seed_policy_passes_the_table() {
    let s = server(&plugin("seed_policy").display().to_string(), "");
    seed_policy_table(&s, "Rust").await;
}

/// A component built against `sipwasm:plugin@0.2.0` (the built-in seed-policy of
/// commit 2cecc01, before the `keys` and `credentials` imports were added) runs on
/// this host unchanged: the contract grew by imports only.
#[tokio::test]
async fn a_component_built_against_0_2_0_still_passes_the_table() {
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/components/seed_policy-0.2.0.wasm");
    let s = server(&old.display().to_string(), "");
    seed_policy_table(&s, "Rust, built against 0.2.0").await;
}

#[tokio::test]
async fn javascript_seed_policy_passes_the_table() {
    // A fresh QuickJS instance takes milliseconds to start: room for a loaded machine.
    let s = server("{foreign}/seed_policy_js.wasm", "deadline = \"1s\"");
    seed_policy_table(&s, "JavaScript").await;
}

/// componentize-py starts at ~12 MiB of linear memory and grows while it runs, so the
/// Python plugin gets a larger memory cap than the 32 MiB default (and, like JS, room
/// for a fresh instance to start on a loaded machine).
#[tokio::test]
async fn python_seed_policy_passes_the_table() {
    let s = server(
        "{foreign}/seed_policy_py.wasm",
        "memory-limit = \"96MiB\"\ndeadline = \"1s\"",
    );
    seed_policy_table(&s, "Python").await;
}

/// Runs `program args` in the repository root; its output on failure.
fn run_in_repo(program: &str, args: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JavaScript SDK's own tests (its host-free part, under Node).
#[test]
fn the_javascript_sdk_passes_its_tests() {
    run_in_repo("node", &["--test", "plugins/js/sipwasm/"]);
}

/// The Python SDK's own tests (its host-free part, under the machine's python3).
#[test]
fn the_python_sdk_passes_its_tests() {
    run_in_repo(
        "python3",
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "plugins/python",
            "-t",
            "plugins/python",
        ],
    );
}
