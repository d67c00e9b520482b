//! dnsmasq (Debian's `dnsmasq-base`) as the DNS server of a test: on a free loopback
//! port, authoritative for the test's zone (`--local`: names it does not know are
//! NXDOMAIN, nothing is forwarded anywhere), with the records the test gives, stopped
//! by its own pid when dropped.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

const BIN: &str = "/usr/sbin/dnsmasq";

/// A query for `name`'s A record, id 0x5157.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x51, 0x57, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

impl Dnsmasq {
    /// Starts one for `zone` with `records` (dnsmasq options such as
    /// `--srv-host=_sip._udp.a.test,h.a.test,5060,10,50`, `--host-record=h.a.test,127.0.0.1`,
    /// `--naptr-record=...`), records' TTL `ttl` seconds; waits until it answers.
    pub fn start(zone: &str, records: &[String], ttl: u32) -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: run ./tests/run-all.sh (it installs Debian's dnsmasq-base)"
        );
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new(BIN)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--local=/{zone}/"))
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--auth-ttl={ttl}"))
            .args(records)
            // Root drops to nobody by default; stay who we are.
            .arg(format!("--user={}", whoami()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {BIN}: {e}"));
        let logs = crate::capture_stderr(&mut child);
        let mut me = Self { child, addr, logs };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 512];
        loop {
            let _ = sock.send_to(&query(&format!("probe.{zone}")), addr);
            if matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x51, 0x57])
            {
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("dnsmasq exited with {status}:\n{}", me.logs());
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer within 20 s:\n{}",
                me.logs()
            );
        }
    }

    /// What it logged (each query with `--log-queries`).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// How many queries for `name` of `kind` (`SRV`, `NAPTR`, `A`) it answered.
    pub fn queries(&self, kind: &str, name: &str) -> usize {
        let needle = format!("query[{kind}] {name} from");
        self.logs().matches(&needle).count()
    }
}

fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let out = Command::new("id").arg("-un").output().expect("id -un");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
