//! The SIP torture test messages of RFC 4475 and RFC 5118 (`tests/data/torture/`)
//! against the parser, as a datagram or WebSocket message would reach it. What this
//! server does with each is checked in (`expected.txt`) and diffed, so any change in
//! verdict is a visible decision. `verdicts.txt` beside it says what the RFCs expect;
//! `expected.txt` notes where and why we differ.
//!
//! Verdicts: `accept` (parses), `400`/`505` (rejected and answered, the reason naming
//! the fault),
//! `drop` (rejected, not answerable: a response, or no Via/CSeq to answer to).
//! `SIPWASM_BLESS=1 cargo test --test torture` rewrites the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/torture")
}

fn verdict(bytes: &[u8]) -> String {
    match sipwasm::sip::parse(bytes) {
        Ok(_) => "accept".into(),
        Err(e) => match sipwasm::sip::error_response(bytes, &e, "t") {
            Some(resp) => {
                let text = String::from_utf8_lossy(&resp);
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("SIP/2.0 ");
                let (code, reason) = first.split_once(' ').unwrap_or((first, ""));
                format!("{code} ({reason})")
            }
            None => format!("drop ({e})"),
        },
    }
}

#[test]
fn torture_messages_get_the_checked_in_verdicts() {
    let mut actual = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sip") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            actual.insert(name, verdict(&bytes));
        }
    }
    assert!(actual.len() >= 60, "the corpus is there");
    let expected_path = dir().join("expected.txt");
    if std::env::var_os("SIPWASM_BLESS").is_some() {
        let mut text = String::new();
        for (name, v) in &actual {
            text.push_str(&format!("{name} {v}\n"));
        }
        std::fs::write(&expected_path, text).unwrap();
        return;
    }
    let expected: BTreeMap<String, String> = std::fs::read_to_string(&expected_path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, rest) = l.split_once(' ').unwrap();
            // A trailing "# why" explains a deliberate difference from the RFC.
            let v = rest.split(" # ").next().unwrap().trim().to_string();
            (name.to_string(), v)
        })
        .collect();
    let mut diffs = Vec::new();
    for (name, v) in &actual {
        match expected.get(name) {
            Some(e) if e == v => {}
            Some(e) => diffs.push(format!("{name}: expected {e}, got {v}")),
            None => diffs.push(format!("{name}: not in expected.txt (got {v})")),
        }
    }
    assert!(
        diffs.is_empty(),
        "torture verdicts changed:\n{}",
        diffs.join("\n")
    );
}
