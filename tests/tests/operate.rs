//! Operating the server: what an operator's tools see of it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
