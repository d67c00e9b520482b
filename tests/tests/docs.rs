//! The documentation says what the server does: the README's example plugin is the
//! one in `plugins/origin-gate` and behaves as described, and the configuration table
//! of `docs/configuration.md` lists every key the server reads and no other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sipwasm::config::Config;
use sipwasm_tests::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_readme_plugin_is_the_origin_gate_plugin() {
    let readme = read("README.md");
    let section = readme
        .split("## A plugin in")
        .nth(1)
        .expect("the README shows a plugin");
    let shown = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("in a rust block");
    let source = read("plugins/origin-gate/src/lib.rs");
    let code = &source[source.find("use sipwasm_plugin").expect("a use line")..];
    assert_eq!(
        shown, code,
        "README.md and plugins/origin-gate/src/lib.rs differ"
    );
}

#[tokio::test]
async fn the_readme_plugin_gates_websockets_by_origin() {
    let config = STANDARD.replace("plugin = \"welcome\"", "plugin = \"gate\"")
        + "\n[plugins.gate]\npath = \"{plugins}/origin_gate.wasm\"\n";
    let s = Server::start(&config);
    let from = |origin: &str| handshake("localhost", &format!("Origin: {origin}\r\n"));
    let up = http_once(s.ws3, from("https://app.example.org").as_bytes()).await;
    assert_eq!(up.status, 101);
    let other = http_once(s.ws3, from("https://evil.example").as_bytes()).await;
    assert_eq!(other.status, 403);
    let none = http_once(s.ws3, handshake("localhost", "").as_bytes()).await;
    assert_eq!(none.status, 403);
    let foreign_host = http_once(
        s.ws3,
        handshake("evil.example", "Origin: https://app.example.org\r\n").as_bytes(),
    )
    .await;
    assert_eq!(foreign_host.status, 403);
    let page = http_once(s.ws3, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(
        (page.status, page.body.as_slice()),
        (404, &b"Not Found\n"[..])
    );
}

/// The error the server gives for `text`, or "" if it takes it.
fn config_error(text: &str) -> String {
    match Config::parse(text, "probe.toml", Path::new("/")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

/// The fields the server accepts where `table` puts a probe key (`None`: the error
/// names no list of fields there).
fn accepted_fields(table: &str) -> Option<BTreeSet<String>> {
    let e = config_error(&format!("{table}__probe = 1\n"));
    // serde says "expected one of `a`, `b`, `c`", "expected `a` or `b`" or "expected
    // `a)`": the code spans of the rest of that line.
    let list = e.split("unknown field `__probe`, expected ").nth(1)?;
    let line = list.lines().next().unwrap_or("");
    Some(
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Where a key of `section` goes in a probe file.
fn table_of(section: &str) -> String {
    match section {
        "" => String::new(),
        "listen" => "[[listen]]\n".into(),
        "gateways" => "[[gateways]]\n".into(),
        "plugins" => "[plugins.probe]\n".into(),
        "keys" => "[keys.probe]\n".into(),
        s => format!("[{s}]\n"),
    }
}

/// Every `section.key` the server reads, found by asking it: each table's
/// deny-unknown-fields error lists the fields it takes.
fn server_keys() -> BTreeSet<String> {
    let top = accepted_fields("").expect("the top level lists its tables");
    let mut keys = BTreeSet::new();
    for section in top {
        let fields = accepted_fields(&table_of(&section))
            .unwrap_or_else(|| panic!("[{section}] lists no fields"));
        for f in fields {
            keys.insert(format!("{section}.{f}"));
        }
    }
    keys
}

/// The keys of the table in `docs/configuration.md`: the first column's code spans,
/// `sip.t1`, `t2` (the section carries over), `[[listen]] tls-cert`, `[[gateways]] name`,
/// `plugins.NAME.path` / `builtin`.
fn documented_keys() -> BTreeSet<String> {
    let doc = read("docs/configuration.md");
    let mut keys = BTreeSet::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        let spans: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        let mut section = String::new();
        for (i, span) in spans.iter().enumerate() {
            let key = if let Some((table, k)) = span
                .strip_prefix("[[")
                .and_then(|rest| rest.split_once("]] "))
            {
                section = table.into();
                k
            } else if i == 0 {
                let (s, k) = span.rsplit_once('.').expect("a first key names its table");
                section = s.replace(".NAME", "");
                k
            } else {
                span
            };
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn the_configuration_table_lists_every_key_and_no_other() {
    let server = server_keys();
    let documented = documented_keys();
    assert!(
        server.len() > 60,
        "only {} keys found: {server:?}",
        server.len()
    );
    let missing: Vec<_> = server.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&server).collect();
    assert!(
        stale.is_empty(),
        "keys in docs/configuration.md the server does not read: {stale:?}"
    );
    // And each documented key, set to a value of the wrong kind (a list of lists:
    // no key, scalar, list or table, takes one), is refused for its value, not as
    // unknown (the probe above read the lists; this reads the keys).
    for key in &documented {
        let (section, field) = key.rsplit_once('.').unwrap();
        let e = config_error(&format!("{}{field} = [[1]]\n", table_of(section)));
        assert!(!e.contains("unknown field"), "{key}: {e}");
    }
}
