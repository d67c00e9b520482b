//! Sipwise rtpengine (Debian's `rtpengine-daemon`), run in userspace on loopback for a
//! test: its own ng port and media port range, stopped by its own pid when dropped. And
//! a small ng client (the server's own codec) to ask it about calls.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sipwasm::media::ng::{self, Command as Ng, Reply, Value};
use tokio::net::UdpSocket;

use crate::free_port;

/// A running rtpengine.
pub struct Rtpengine {
    child: Option<Child>,
    /// Where its ng protocol listens.
    pub ng: SocketAddr,
    logs: Arc<Mutex<String>>,
}

/// The daemon's binary: Debian's package installs it here.
const BIN: &str = "/usr/bin/rtpengine";

/// Media port windows, one per daemon started by this process, above the kernel's
/// ephemeral range's usual traffic and below its end.
fn port_window() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id() * 13 + NEXT.fetch_add(1, Ordering::Relaxed)) % 40;
    let min = 50_000 + (n as u16) * 200;
    (min, min + 199)
}

impl Rtpengine {
    /// Starts one, and waits until it answers a ping.
    pub async fn start() -> Self {
        let bin = if std::path::Path::new(BIN).exists() {
            BIN.to_string()
        } else {
            "rtpengine".to_string()
        };
        let port = free_port();
        let ng: SocketAddr = ([127, 0, 0, 1], port).into();
        let (min, max) = port_window();
        let mut child = Command::new(&bin)
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--no-log-timestamps",
                "--log-level=6",
                "--table=-1",
                "--interface=127.0.0.1",
                "--delete-delay=0",
                "--num-threads=2",
            ])
            .arg(format!("--listen-ng={ng}"))
            .arg(format!("--port-min={min}"))
            .arg(format!("--port-max={max}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {bin} (Debian's rtpengine-daemon; tests/run-all.sh installs it): {e}")
            });
        let logs = crate::capture_stderr(&mut child);
        let me = Self {
            child: Some(child),
            ng,
            logs,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if matches!(me.ask_once(&Ng::Ping).await, Some(Reply::Pong)) {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine did not answer a ping within 20 s:\n{}",
                me.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `media.engines` entry for it.
    pub fn engine(&self) -> String {
        format!("udp:{}", self.ng)
    }

    async fn ask_once(&self, cmd: &Ng) -> Option<Reply> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let cookie = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sock.send_to(&cmd.datagram(&cookie), self.ng).await.ok()?;
        let mut buf = vec![0u8; ng::MAX_DATAGRAM];
        let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let (c, dict) = ng::split_reply(&buf[..n]).ok()?;
        (c == cookie.as_bytes()).then(|| Reply::of(dict))
    }

    /// A command's reply (retried a few times).
    pub async fn ask(&self, cmd: &Ng) -> Reply {
        for _ in 0..5 {
            if let Some(r) = self.ask_once(cmd).await {
                return r;
            }
        }
        panic!("rtpengine did not answer {cmd:?}:\n{}", self.logs())
    }

    /// `query` of a call: its dictionary, or `None` when the engine does not know it.
    pub async fn query(&self, call_id: &str) -> Option<Value> {
        match self
            .ask(&Ng::Query {
                call_id: call_id.into(),
            })
            .await
        {
            Reply::Ok { dict, .. } => Some(dict),
            Reply::Error(e) if e.contains("Unknown call-id") => None,
            other => panic!("query {call_id}: {other:?}"),
        }
    }

    /// Waits (bounded) until the engine no longer knows `call_id`.
    pub async fn wait_gone(&self, call_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.query(call_id).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "rtpengine still holds call {call_id} 10 s on:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it (SIGKILL) now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Packets the engine received on all of a call's streams (`totals.RTP.packets`).
pub fn rtp_packets(query: &Value) -> i64 {
    query
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|r| r.get("packets"))
        .and_then(Value::as_int)
        .unwrap_or(0)
}
