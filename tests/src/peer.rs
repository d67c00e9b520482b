//! A UDP peer for tests of next hops (DNS targets, gateway set members): it answers
//! every request but ACK with a fixed status (or never), and counts what reached it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sipwasm::sip::message::{Message, Response};
use tokio::net::UdpSocket;

/// What a peer saw: requests by method, and the last Request-URI of each.
#[derive(Debug, Default)]
struct Seen {
    count: HashMap<String, usize>,
    last_uri: HashMap<String, String>,
}

/// A running peer.
pub struct Peer {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    /// On a free port of 127.0.0.1.
    pub async fn udp(status: Option<u16>) -> Self {
        Self::udp_at("127.0.0.1:0".parse().unwrap(), status).await
    }

    /// On `addr`, answering with `status` (never with `None`).
    pub async fn udp_at(addr: SocketAddr, status: Option<u16>) -> Self {
        Self::try_udp_at(addr, status)
            .await
            .unwrap_or_else(|| panic!("bind {addr}"))
    }

    /// [`Peer::udp_at`], or `None` when `addr` is taken.
    pub async fn try_udp_at(addr: SocketAddr, status: Option<u16>) -> Option<Self> {
        let socket = UdpSocket::bind(addr).await.ok()?;
        let addr = socket.local_addr().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let counts = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            // Bounded: the test drops it (and aborts this) long before.
            for _ in 0..100_000 {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(Message::Request(req)) = sipwasm::sip::parse(&buf[..n]) else {
                    continue;
                };
                {
                    let mut s = counts.lock().unwrap();
                    let method = req.method.as_str().to_string();
                    *s.count.entry(method.clone()).or_default() += 1;
                    s.last_uri.insert(method, req.uri.to_string());
                }
                if let Some(status) = status
                    && req.method.as_str() != "ACK"
                {
                    let resp = Response::for_request(&req, status, Some("peer"));
                    let _ = socket.send_to(&resp.to_bytes(), from).await;
                }
            }
        });
        Some(Self { addr, seen, task })
    }

    /// Requests of `method` it got.
    pub fn got(&self, method: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .count
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// The Request-URI of the last request of `method` it got.
    pub fn last_uri(&self, method: &str) -> Option<String> {
        self.seen.lock().unwrap().last_uri.get(method).cloned()
    }

    /// Stops answering and closes its socket (the port then answers ICMP
    /// unreachable).
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `f` until it holds, for at most 15 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 15 s");
}
