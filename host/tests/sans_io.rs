//! The sans-IO rule, enforced: `sip/`, `core/` and the parsing half of `http/` take
//! bytes and time and return values. They never name tokio, sockets, files, threads,
//! locks, the clock or the system's randomness (a secret comes in with the
//! configuration).

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net::TcpStream",
    "std::net::UdpSocket",
    "std::fs",
    "Instant::now",
    "SystemTime::now",
    "thread::sleep",
    "std::thread",
    "Mutex",
    "RwLock",
    "Condvar",
    "std::sync::atomic",
    "getrandom",
    "rand::",
];

fn check_dir(dir: &Path, skip: &[&str], offences: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            check_dir(&path, skip, offences);
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        // `tests.rs` files are test-only modules.
        if !name.ends_with(".rs") || name == "tests.rs" || skip.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may use whatever they like.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            for f in FORBIDDEN {
                if line.contains(f) {
                    offences.push(format!("{}:{}: {f}", path.display(), n + 1));
                }
            }
        }
    }
}

#[test]
fn sip_core_and_http_parsing_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    check_dir(&src.join("sip"), &[], &mut offences);
    check_dir(&src.join("core"), &[], &mut offences);
    check_dir(&src.join("media"), &[], &mut offences);
    check_dir(&src.join("http"), &["reader.rs"], &mut offences);
    assert!(
        offences.is_empty(),
        "I/O in sans-IO modules:\n{}",
        offences.join("\n")
    );
}
