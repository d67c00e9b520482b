//! The command line: configuration errors are refused at start with the file, the key
//! and the reason; the embedded default is printable and valid.

use std::process::Command;

fn sipwasm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sipwasm"))
}

fn run_with_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = sipwasm()
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = r#"
[[listen]]
transport = "ws"
address = "127.0.0.1:0"
plugin = "seed"

[plugins.seed]
builtin = "seed-policy"
"#;

#[test]
fn invalid_configs_are_refused_naming_file_and_key() {
    let cases = [
        (
            VALID.replace("127.0.0.1:0", "127.0.0.1"),
            "listen[0].address",
        ),
        (
            VALID.replace("\"ws\"", "\"carrier-pigeon\""),
            "listen[0].transport",
        ),
        (
            VALID.replace("plugin = \"seed\"", "plugin = \"nope\""),
            "listen[0].plugin",
        ),
        (
            format!("{VALID}deadline = \"soon\"\n"),
            "plugins.seed.deadline",
        ),
        (
            format!("{VALID}memory-limit = \"12 bananas\"\n"),
            "plugins.seed.memory-limit",
        ),
        (
            format!("{VALID}[http]\nmax-head-bytes = 10\n"),
            "http.max-head-bytes",
        ),
        (
            format!("{VALID}[websocket]\ncolour = 1\n"),
            "websocket.colour",
        ),
        (
            format!("{VALID}[media]\nengines = [\"127.0.0.1:2223\"]\n"),
            "media.engines[0]",
        ),
        (
            format!(
                "{VALID}[media]\nengines = [{{ address = \"udp:127.0.0.1:2223\", weight = 0 }}]\n"
            ),
            "media.engines[0].weight",
        ),
        (format!("{VALID}[media]\nmode = \"always\"\n"), "media.mode"),
        (
            format!(
                "{VALID}[media]\nengines = [\"udp:127.0.0.1:2223\"]\n[media.toward-webrtc]\nice = \"forced\"\n"
            ),
            "media.toward-webrtc.ice",
        ),
        (
            format!(
                "{VALID}[media]\nengines = [\"udp:127.0.0.1:2223\"]\n[media.toward-plain]\nrtcp-mux = [\"demux\", \"sometimes\"]\n"
            ),
            "media.toward-plain.rtcp-mux[1]",
        ),
        (
            VALID.replace("seed-policy", "no-such-builtin"),
            "plugins.seed.builtin",
        ),
        ("[[listen]\n".to_string(), "(file)"),
        (
            VALID.replace("plugin = \"seed\"", "routes = { \"ws\" = \"seed\" }"),
            "listen[0].routes",
        ),
        (
            VALID.replace("plugin = \"seed\"", "routes = { \"/ws\" = \"nope\" }"),
            "listen[0].routes",
        ),
        (VALID.replace("plugin = \"seed\"", ""), "listen[0].plugin"),
    ];
    for (text, key) in cases {
        let (code, stderr) = run_with_config(&text);
        assert_eq!(code, 2, "{key}: {stderr}");
        assert!(stderr.contains("bad.toml: "), "names the file: {stderr}");
        assert!(
            stderr.contains(&format!(": {key}: ")),
            "names {key}: {stderr}"
        );
    }
}

#[test]
fn missing_plugin_file_is_refused_with_its_path() {
    let text = VALID.replace(
        "builtin = \"seed-policy\"",
        "path = \"does-not-exist.wasm\"",
    );
    let (code, stderr) = run_with_config(&text);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("plugin seed") && stderr.contains("does-not-exist.wasm"),
        "{stderr}"
    );
}

#[test]
fn not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"\0asm junk").unwrap();
    let text = VALID.replace("builtin = \"seed-policy\"", "path = \"junk.wasm\"");
    std::fs::write(dir.path().join("c.toml"), text).unwrap();
    let out = sipwasm()
        .args(["--check", "--config"])
        .arg(dir.path().join("c.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a valid component"), "{stderr}");
}

#[test]
fn default_config_prints_and_checks() {
    let out = sipwasm().arg("--print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[plugins.seed-policy]"));
    // The printed default, with ports that are free, passes --check.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, text.replace(":8080", ":0").replace(":8443", ":0")).unwrap();
    let out = sipwasm()
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("tls/localhost.crt").exists(),
        "self-signed certificate generated"
    );
    assert!(dir.path().join("secret.key").exists());
}

fn builtin_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, sipwasm::builtin::bytes(name).unwrap()).unwrap();
    path
}

#[test]
fn plugin_check_reports_the_world_and_refuses_junk() {
    let dir = tempfile::tempdir().unwrap();
    let welcome = builtin_file(dir.path(), "welcome");
    let out = sipwasm()
        .args(["plugin", "check"])
        .arg(&welcome)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("on-http-request (function)"), "{text}");
    assert!(
        text.contains("sipwasm:plugin/types@0.2.1 (interface)"),
        "{text}"
    );
    assert!(text.contains("this host can run it"), "{text}");

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let out = sipwasm()
        .args(["plugin", "check"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn plugin_run_prints_what_the_host_would_send() {
    let dir = tempfile::tempdir().unwrap();
    let seed = builtin_file(dir.path(), "seed-policy");
    let request = dir.path().join("ws.http");
    std::fs::write(
        &request,
        "GET / HTTP/1.1\nHost: localhost:8080\nUpgrade: websocket\nConnection: Upgrade\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\nSec-WebSocket-Protocol: sip\n\n",
    )
    .unwrap();
    let run = |config: &str| {
        let out = sipwasm()
            .args(["plugin", "run"])
            .arg(&seed)
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
    let up = run("web-ports = [8080]");
    assert!(
        up.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{up}"
    );
    assert!(up.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(up.contains("then: the connection becomes a SIP-over-WebSocket flow"));
    let refused = run("web-ports = [443]");
    assert!(
        refused.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{refused}"
    );
    assert!(refused.contains("then: the connection is closed"));
    // A config the plugin cannot read makes it answer 500.
    let bad = run("web-ports = \"lots\"");
    assert!(bad.starts_with("HTTP/1.1 500 "), "{bad}");
}

#[test]
fn compiled_plugins_are_cached_and_only_our_own_files_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, VALID).unwrap();
    let check = || {
        let out = sipwasm()
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(check().contains("from_cache=false"));
    assert!(check().contains("from_cache=true"));
    // A file in the cache that this server did not write (bad MAC) is not used.
    let cache = dir.path().join("cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        let file = entry.unwrap().path();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
    }
    let log = check();
    assert!(
        log.contains("cached plugin with a bad MAC ignored"),
        "{log}"
    );
    assert!(log.contains("from_cache=false"), "{log}");
}

#[test]
fn the_version_names_the_commit_built() {
    let out = sipwasm().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text,
        format!("sipwasm {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}
