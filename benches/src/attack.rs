//! `sipwasm-bench attack`: the attack campaign. Each attack runs against a fresh server
//! on its defaults (loopback is not exempted from the per-source limits here) while a
//! legitimate WebSocket client (from 127.0.0.2) and a legitimate UDP phone (from
//! 127.0.0.3), registered before, exchange a MESSAGE every 100 ms each and refresh
//! their registrations every 10 s. Reported per attack: the legitimate requests
//! answered 200 and their p99 latency during the attack, the server's peak RSS and CPU,
//! and its RSS before and `after` seconds after the attack.
//!
//! Every loop here is bounded in count and in time; attackers bind 127.0.x.y source
//! addresses (all of 127.0.0.0/8 is loopback on Linux).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The attacks, in the order they run.
pub(crate) const ATTACKS: &[(&str, &str)] = &[
    (
        "slowloris",
        "15,000 idle TCP/WS connections from one address",
    ),
    (
        "register-flood",
        "REGISTER flood: 1,000,000 distinct AoRs from 4,064 addresses",
    ),
    (
        "invite-flood",
        "INVITE flood to a user who never answers (1,016 addresses)",
    ),
    (
        "torture",
        "RFC 4475 torture + 64 KB worst cases over UDP, TCP and WS (64 addresses)",
    ),
    (
        "handshakes",
        "broken handshakes, half-sent frames, silent heads (256 addresses)",
    ),
    (
        "slow-router",
        "a routing plugin at its deadline on every call, under load (254 addresses)",
    ),
];

const TOKEN: &str = "attack-bench-admin-token-0123456789abcdef";
const SLOW_ROUTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/slow_router.wasm"));

/// The server under attack.
struct Server {
    child: Child,
    udp: SocketAddr,
    ws: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(bin: &Path, router: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (sip, ws, admin) = (
            crate::process::free_port(),
            crate::process::free_port(),
            crate::process::free_port(),
        );
        let routing = if router {
            let wasm = dir.path().join("slow_router.wasm");
            std::fs::write(&wasm, SLOW_ROUTER)?;
            format!(
                "router = \"slow\"\n[plugins.slow]\npath = \"{}\"\ndeadline = \"50ms\"\n\
                 [plugins.slow.config]\nalways-ms = 1500\n",
                wasm.display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "[server]\ndata-dir = \"{data}\"\ndomains = [\"localhost\", \"127.0.0.1\"]\n\
             [[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{sip}\"\n\
             [[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{sip}\"\n\
             [[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:{ws}\"\nplugin = \"seed-policy\"\n\
             [plugins.seed-policy]\nbuiltin = \"seed-policy\"\n\
             [plugins.seed-policy.config]\nweb-ports = [{ws}]\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             [limits]\nexempt = []\n\
             [sip]\n{routing}",
            data = dir.path().display(),
        );
        let path = dir.path().join("attack.toml");
        std::fs::write(&path, config)?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .args(["--log", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let ws_addr = SocketAddr::from(([127, 0, 0, 1], ws));
        crate::process::wait_until_listening(ws_addr, &mut child, "sipwasm").await?;
        Ok(Self {
            child,
            udp: SocketAddr::from(([127, 0, 0, 1], sip)),
            ws: ws_addr,
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `/metrics` lines starting with `prefix`, summed.
    async fn metric(&self, prefix: &str) -> u64 {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(self.admin)).await
        else {
            return 0;
        };
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
            self.admin
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            return 0;
        }
        let mut body = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut body)).await;
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------ legitimate clients

/// One legitimate transaction: when it was sent, its final status and how long that
/// took (`None`: no final answer within 4 s).
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Instant,
    answer: Option<(u16, Duration)>,
    /// Sent by the UDP phone (else by the WebSocket client).
    udp: bool,
}

#[derive(Default)]
struct Legit {
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
}

impl Legit {
    fn record(&self, sent: Instant, answer: Option<(u16, Duration)>, udp: bool) {
        self.samples
            .lock()
            .expect("samples")
            .push(Sample { sent, answer, udp });
    }

    /// Answered / sent within `from..to`, by the WebSocket client and by the UDP phone.
    fn by_client(&self, from: Instant, to: Instant) -> String {
        let s = self.samples.lock().expect("samples");
        let count = |udp: bool| {
            let w: Vec<&Sample> = s
                .iter()
                .filter(|x| x.udp == udp && x.sent >= from && x.sent < to)
                .collect();
            let mut times: Vec<Duration> = w.iter().filter_map(|x| x.answer.map(|a| a.1)).collect();
            times.sort();
            let idx = ((w.len() as f64 * 0.99).ceil() as usize).saturating_sub(1);
            let p99 = times
                .get(idx)
                .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3);
            (
                w.iter().filter(|x| x.answer.is_some()).count(),
                w.len(),
                p99,
            )
        };
        let (ws, udp) = (count(false), count(true));
        format!(
            "WS {}/{} p99 {:.0} ms, UDP {}/{} p99 {:.0} ms",
            ws.0, ws.1, ws.2, udp.0, udp.1, udp.2
        )
    }

    /// Of the transactions sent within `from..to`: (answered 200, answered at all,
    /// sent, p99 ms of the time to the final answer; unanswered ones count as slowest).
    fn between(&self, from: Instant, to: Instant) -> (usize, usize, usize, f64) {
        let s = self.samples.lock().expect("samples");
        let window: Vec<&Sample> = s.iter().filter(|x| x.sent >= from && x.sent < to).collect();
        let mut answered: Vec<Duration> = window
            .iter()
            .filter_map(|x| x.answer.map(|a| a.1))
            .collect();
        answered.sort();
        let ok = window
            .iter()
            .filter(|x| x.answer.is_some_and(|a| a.0 == 200))
            .count();
        let p99 = if window.is_empty() {
            0.0
        } else {
            let idx = ((window.len() as f64 * 0.99).ceil() as usize).saturating_sub(1);
            answered
                .get(idx)
                .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1e3)
        };
        (ok, answered.len(), window.len(), p99)
    }
}

const LEGIT_TIMEOUT: Duration = Duration::from_secs(4);

fn message_text(from: &str, to: &str, via: &str, id: u64) -> String {
    format!(
        "MESSAGE sip:{to}@localhost SIP/2.0\r\nVia: {via};branch=z9hG4bKlg{from}{id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}@localhost>;tag=l{from}\r\nTo: <sip:{to}@localhost>\r\n\
         Call-ID: lg-{from}-{id}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
         Content-Length: 5\r\n\r\nhello"
    )
}

fn register_text(user: &str, via: &str, contact: &str, cseq: u64) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: {via};branch=z9hG4bKlr{user}{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=r{user}\r\nTo: <sip:{user}@localhost>\r\n\
         Call-ID: lr-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>;expires=300\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// What a legitimate client has sent and waits for: Call-ID to (first sent, text, last
/// sent, sends).
type Pending = HashMap<String, (Instant, String, Instant, u32)>;

/// Handles one message a legitimate client received; returns the answer to send back
/// (for a request).
fn on_received(text: &str, pending: &mut Pending, legit: &Legit, udp: bool) -> Option<String> {
    if let Some(status) = status_of(text) {
        if status < 200 {
            return None;
        }
        if let Some(call_id) = header(text, "Call-ID")
            && let Some((sent, ..)) = pending.remove(call_id)
        {
            legit.record(sent, Some((status, sent.elapsed())), udp);
        }
        return None;
    }
    text.starts_with("MESSAGE ")
        .then(|| crate::sipload::ok_for(text))
}

/// Fails what waited too long; returns what to retransmit (UDP only).
fn expire(pending: &mut Pending, legit: &Legit, retransmit: bool) -> Vec<String> {
    let udp = retransmit;
    let now = Instant::now();
    let mut again = Vec::new();
    pending.retain(|_, (sent, text, last, sends)| {
        if now.duration_since(*sent) > LEGIT_TIMEOUT {
            legit.record(*sent, None, udp);
            return false;
        }
        // Timer E as a phone does it: 0.5 s, then doubling.
        if retransmit
            && now.duration_since(*last) >= Duration::from_millis(500 << (*sends - 1).min(3))
        {
            *last = now;
            *sends += 1;
            again.push(text.clone());
        }
        true
    });
    again
}

async fn legit_ws(server: SocketAddr, legit: Arc<Legit>) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://localhost:{}/", server.port()).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    let via = "SIP/2.0/WS legit-ws.invalid";
    let contact = "sip:legit-ws@legit-ws.invalid;transport=ws";
    let mut pending = Pending::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    let mut cseq = 1;
    let first = register_text("legit-ws", via, contact, cseq);
    pending.insert(
        "lr-legit-ws".into(),
        (Instant::now(), first.clone(), Instant::now(), 1),
    );
    ws.send(Message::text(first)).await?;
    while !legit.stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                let text = if n.is_multiple_of(100) {
                    cseq += 1;
                    register_text("legit-ws", via, contact, cseq)
                } else {
                    message_text("legit-ws", "legit-udp", via, n)
                };
                let call_id = header(&text, "Call-ID").unwrap_or_default().to_string();
                pending.insert(call_id, (Instant::now(), text.clone(), Instant::now(), 1));
                if ws.send(Message::text(text)).await.is_err() {
                    bail!("the legitimate WebSocket client was disconnected");
                }
                expire(&mut pending, &legit, false);
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(_)) => continue,
                    _ => bail!("the legitimate WebSocket client was disconnected"),
                };
                if let Some(answer) = on_received(&text, &mut pending, &legit, false) {
                    ws.send(Message::text(answer)).await?;
                }
            }
        }
    }
    Ok(())
}

async fn legit_udp(server: SocketAddr, legit: Arc<Legit>) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.3:0").await?;
    let me = socket.local_addr()?;
    let via = format!("SIP/2.0/UDP {me}");
    let contact = format!("sip:legit-udp@{me}");
    let mut pending = Pending::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    let mut cseq = 1;
    let first = register_text("legit-udp", &via, &contact, cseq);
    pending.insert(
        "lr-legit-udp".into(),
        (Instant::now(), first.clone(), Instant::now(), 1),
    );
    socket.send_to(first.as_bytes(), server).await?;
    let mut buf = vec![0u8; 65_536];
    while !legit.stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                let text = if n % 100 == 50 {
                    cseq += 1;
                    register_text("legit-udp", &via, &contact, cseq)
                } else {
                    message_text("legit-udp", "legit-ws", &via, n)
                };
                let call_id = header(&text, "Call-ID").unwrap_or_default().to_string();
                pending.insert(call_id, (Instant::now(), text.clone(), Instant::now(), 1));
                socket.send_to(text.as_bytes(), server).await?;
                for again in expire(&mut pending, &legit, true) {
                    socket.send_to(again.as_bytes(), server).await?;
                }
            }
            r = socket.recv_from(&mut buf) => {
                let (len, from) = r?;
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                if let Some(answer) = on_received(&text, &mut pending, &legit, true) {
                    socket.send_to(answer.as_bytes(), from).await?;
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------ attackers

/// What an attacker did.
#[derive(Debug, Default)]
struct Done {
    sent: AtomicU64,
}

fn source(third: u8, fourth: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, third, fourth))
}

async fn bound_udp(ip: IpAddr) -> anyhow::Result<UdpSocket> {
    Ok(UdpSocket::bind(SocketAddr::new(ip, 0)).await?)
}

async fn connect_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(ip, 0))?;
    tokio::time::timeout(Duration::from_secs(2), s.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// 1. Slowloris: up to 15,000 connections from 127.0.0.10 to the SIP TCP and WS
///    listeners, each sending nothing; closed ones are opened again.
async fn slowloris(server: &Server, until: Instant, done: &Done) {
    let ip = source(0, 10);
    let live = Arc::new(AtomicUsize::new(0));
    let mut i = 0u64;
    while Instant::now() < until {
        if live.load(Ordering::Relaxed) >= 15_000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let to = if i.is_multiple_of(2) {
            server.udp
        } else {
            server.ws
        };
        i += 1;
        let Ok(mut s) = connect_from(ip, to).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        done.sent.fetch_add(1, Ordering::Relaxed);
        live.fetch_add(1, Ordering::Relaxed);
        let live = live.clone();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            let left = until.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, s.read(&mut b)).await;
            live.fetch_sub(1, Ordering::Relaxed);
        });
        // Refused at once (past the per-source cap): do not spin on it.
        if i.is_multiple_of(1000) {
            tokio::task::yield_now().await;
        }
    }
}

/// 2. REGISTER flood: up to 1,000,000 distinct AoRs (Expires 60), paced at about
///    34,000 a second, round robin over 4,064 source addresses (127.0.1-16.1-254).
async fn register_flood(server: &Server, until: Instant, done: &Done) -> anyhow::Result<()> {
    let mut sockets = Vec::new();
    for third in 1..=16u8 {
        for fourth in 1..=254u8 {
            sockets.push(bound_udp(source(third, fourth)).await?);
        }
    }
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until && n < 1_000_000 {
        // Pacing: 340 every 10 ms.
        let due = started + Duration::from_millis(n / 340 * 10);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        for _ in 0..340 {
            let s = &sockets[(n as usize) % sockets.len()];
            let me = s.local_addr()?;
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKf{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:f{n}@localhost>;tag=f\r\nTo: <sip:f{n}@localhost>\r\n\
                 Call-ID: f-{n}\r\nCSeq: 1 REGISTER\r\nContact: <sip:f{n}@{me}>;expires=60\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let _ = s.try_send_to(text.as_bytes(), server.udp);
            n += 1;
        }
        done.sent.store(n, Ordering::Relaxed);
    }
    Ok(())
}

/// 3. INVITE flood: a phone (127.0.0.4) registers and then never answers; INVITEs to it
///    at about 5,000 a second from 1,016 source addresses (127.0.20-23.1-254).
async fn invite_flood(server: &Server, until: Instant, done: &Done) -> anyhow::Result<()> {
    let sink = Arc::new(bound_udp(source(0, 4)).await?);
    let me = sink.local_addr()?;
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsink;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:sink@localhost>;tag=s\r\nTo: <sip:sink@localhost>\r\n\
         Call-ID: sink\r\nCSeq: 1 REGISTER\r\nContact: <sip:sink@{me}>;expires=600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sink.send_to(reg.as_bytes(), server.udp).await?;
    // The sink reads (so its socket does not fill) and never answers INVITEs.
    let reader = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut b = vec![0u8; 65_536];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(300), sink.recv_from(&mut b)).await
            {
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sockets = Vec::new();
    for third in 20..=23u8 {
        for fourth in 1..=254u8 {
            sockets.push(bound_udp(source(third, fourth)).await?);
        }
    }
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        let due = started + Duration::from_millis(n / 50 * 10);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        for _ in 0..50 {
            let s = &sockets[(n as usize) % sockets.len()];
            let from = s.local_addr()?;
            let text = format!(
                "INVITE sip:sink@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKi{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:x{n}@localhost>;tag=i{n}\r\nTo: <sip:sink@localhost>\r\n\
                 Call-ID: i-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{from}>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
            );
            let _ = s.try_send_to(text.as_bytes(), server.udp);
            n += 1;
        }
        done.sent.store(n, Ordering::Relaxed);
    }
    // Drain the answers the attack sockets got, so they are not counted as load later.
    drop(sockets);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        reader.abort();
    });
    Ok(())
}

/// The RFC 4475/5118 torture messages (checked in under tests/data/torture) and the
/// 64 KB worst case of each shape.
fn torture_messages() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("tests/data/torture") {
        for e in dir.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push(b);
            }
        }
    }
    for case in sipwasm::core::worst::cases() {
        out.push(case.message.1.into_bytes());
    }
    out
}

/// 4. Torture and worst-case messages in a loop over UDP, TCP and WS, from 64 source
///    addresses (127.0.30.1-64), as fast as the server takes them.
async fn torture(server: &Server, until: Instant, done: &Arc<Done>) -> anyhow::Result<()> {
    let messages: Arc<Vec<Vec<u8>>> = Arc::new(torture_messages());
    if messages.is_empty() {
        bail!("no torture messages: run from the repository root");
    }
    let mut tasks = Vec::new();
    for fourth in 1..=64u8 {
        let ip = source(30, fourth);
        let (messages, done) = (messages.clone(), done.clone());
        let (udp, ws) = (server.udp, server.ws);
        tasks.push(tokio::spawn(async move {
            let Ok(u) = bound_udp(ip).await else { return };
            let mut i = fourth as usize;
            let mut tcp: Option<TcpStream> = None;
            let mut wsc: Option<crate::sipload::Ws> = None;
            while Instant::now() < until {
                let m = &messages[i % messages.len()];
                i += 1;
                match i % 3 {
                    0 => {
                        let _ = u.try_send_to(m, udp);
                    }
                    1 => {
                        if tcp.is_none() {
                            tcp = connect_from(ip, udp).await.ok();
                        }
                        if let Some(s) = &mut tcp
                            && tokio::time::timeout(Duration::from_millis(500), s.write_all(m))
                                .await
                                .map_or(true, |r| r.is_err())
                        {
                            tcp = None;
                        }
                    }
                    _ => {
                        if wsc.is_none() {
                            wsc = ws_from(ip, ws).await.ok();
                        }
                        if let Some(w) = &mut wsc {
                            let msg = Message::Binary(m.clone().into());
                            if tokio::time::timeout(Duration::from_millis(500), w.send(msg))
                                .await
                                .map_or(true, |r| r.is_err())
                            {
                                wsc = None;
                            }
                        }
                    }
                }
                done.sent.fetch_add(1, Ordering::Relaxed);
                // Nothing read back: whatever the server answers piles up in the
                // kernel buffers and then the connection is dropped and opened again.
                if i.is_multiple_of(16) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn ws_from(ip: IpAddr, server: SocketAddr) -> anyhow::Result<crate::sipload::Ws> {
    let stream = connect_from(ip, server).await?;
    let mut req = format!("ws://localhost:{}/", server.port()).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse()?);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_tungstenite::client_async(req, stream),
    )
    .await??;
    Ok(ws)
}

/// 5. Handshake floods from 256 addresses (127.0.40.x), up to 4,000 connections at a
///    time: garbage instead of HTTP, a handshake with a wrong version, a head sent
///    halfway and then nothing, and upgraded connections that send half a frame.
async fn handshakes(server: &Server, until: Instant, done: &Arc<Done>) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut n = 0u64;
    let port = server.ws.port();
    while Instant::now() < until {
        if live.load(Ordering::Relaxed) >= 4_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let ip = source(40, (n % 254) as u8 + 1);
        let kind = n % 4;
        n += 1;
        let (live, done, ws) = (live.clone(), done.clone(), server.ws);
        live.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Ok(mut s) = connect_from(ip, ws).await {
                done.sent.fetch_add(1, Ordering::Relaxed);
                let head = |version: &str| {
                    format!(
                        "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
                    )
                };
                let bytes: Vec<u8> = match kind {
                    0 => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
                    1 => head("8").into_bytes(),
                    2 => head("13").into_bytes()[..40].to_vec(),
                    _ => {
                        let mut b = head("13").into_bytes();
                        // A masked text frame header promising 1,000 bytes, 10 sent.
                        b.extend_from_slice(&[0x81, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4]);
                        b.extend_from_slice(b"OPTIONS si");
                        b
                    }
                };
                let _ = s.write_all(&bytes).await;
                // Hold it (reading whatever comes) until the server closes it.
                let mut buf = [0u8; 1024];
                let left = until.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
                let _ = tokio::time::timeout(left, async {
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            live.fetch_sub(1, Ordering::Relaxed);
        });
        if n.is_multiple_of(64) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// 6. A routing plugin that hits its deadline (50 ms) on every call, the legitimate
///    clients' included, under load: OPTIONS at about 500 a second from 254 addresses
///    (127.0.50.x). Every request must still be answered (500 or 503 from the failure
///    policy), none left to time out.
async fn slow_router(server: &Server, until: Instant, done: &Done) -> anyhow::Result<()> {
    let mut sockets = Vec::new();
    for fourth in 1..=254u8 {
        sockets.push(bound_udp(source(50, fourth)).await?);
    }
    let started = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        let due = started + Duration::from_millis(n * 2);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let s = &sockets[(n as usize) % sockets.len()];
        let me = s.local_addr()?;
        let text = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKr{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:r@localhost>;tag=r{n}\r\nTo: <sip:127.0.0.1>\r\n\
             Call-ID: r-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = s.try_send_to(text.as_bytes(), server.udp);
        n += 1;
        done.sent.store(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The server's memory by kind (`ATTACK_STATE=1`): resident anonymous and file-backed
/// pages, from `/proc/PID/smaps_rollup`, and the largest anonymous mappings.
fn print_memory(pid: u32, when: &str) {
    let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return;
    };
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    eprintln!(
        "memory {when}: Rss {}, Anonymous {}, file-backed (Pss_File) {}",
        field("Rss:"),
        field("Anonymous:"),
        field("Pss_File:")
    );
    // The largest anonymous mappings: allocator arenas, thread stacks, plugin pools.
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut maps: Vec<(u64, u64, String)> = Vec::new();
    let mut current: Option<(String, u64)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let mut parts = line.split_whitespace();
            let range = parts.next().unwrap_or("").to_string();
            let name = parts.nth(4).unwrap_or("[anon]").to_string();
            let size = range
                .split_once('-')
                .and_then(|(a, b)| {
                    Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                })
                .unwrap_or(0);
            current = Some((format!("{range} {name}"), size / 1024));
        } else if let Some(kib) = line.strip_prefix("Anonymous:")
            && let Some((name, size)) = &current
        {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if kib > 0 {
                maps.push((kib, *size, name.clone()));
            }
        }
    }
    maps.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, size, name) in maps.iter().take(10) {
        eprintln!("  {kib:>8} kB anonymous of {size:>10} kB  {name}");
    }
}

// ------------------------------------------------------------ the campaign

/// One attack's figures.
struct Row {
    name: &'static str,
    sent: u64,
    legit_ok: usize,
    legit_answered: usize,
    legit_sent: usize,
    clients: String,
    p99_ms: f64,
    rss_before: u64,
    rss_peak: u64,
    rss_after: u64,
    rss_settled: u64,
    cpu_percent: f64,
    survived: bool,
    refused: String,
}

pub(crate) async fn campaign(
    bin: &Path,
    seconds: u64,
    after: u64,
    settle: u64,
    only: Option<&str>,
) -> anyhow::Result<()> {
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p sipwasm` first",
            bin.display()
        );
    }
    let mut rows = Vec::new();
    for (name, what) in ATTACKS {
        if only.is_some_and(|o| o != *name) {
            continue;
        }
        eprintln!("attack {name}: {what} for {seconds} s, then {settle} s of quiet");
        rows.push(one(bin, name, seconds, after, settle).await?);
    }
    println!(
        "## Attack campaign ({seconds} s each; legitimate WS + UDP clients, a MESSAGE every 100 ms each)\n"
    );
    println!(
        "| attack | attack messages/connections | legitimate answered | of which 200 | legitimate p99 | server peak RSS | server CPU | RSS before → {after} s → {settle} s after | refused (metrics) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {}/{} ({:.1}%; {}) | {} | {:.1} ms | {:.0} MiB | {:.0}% | {:.0} → {:.0} → {:.0} MiB{} | {} |",
            r.name,
            r.sent,
            r.legit_answered,
            r.legit_sent,
            100.0 * r.legit_answered as f64 / r.legit_sent.max(1) as f64,
            r.clients,
            r.legit_ok,
            r.p99_ms,
            r.rss_peak as f64 / 1024.0,
            r.cpu_percent,
            r.rss_before as f64 / 1024.0,
            r.rss_after as f64 / 1024.0,
            r.rss_settled as f64 / 1024.0,
            if r.survived { "" } else { " (CRASHED)" },
            r.refused
        );
    }
    Ok(())
}

async fn one(
    bin: &Path,
    name: &'static str,
    seconds: u64,
    after: u64,
    settle: u64,
) -> anyhow::Result<Row> {
    let mut server = Server::start(bin, name == "slow-router").await?;
    let pid = server.pid();
    let legit = Arc::new(Legit::default());
    let ws_task = tokio::spawn(legit_ws(server.ws, legit.clone()));
    let udp_task = tokio::spawn(legit_udp(server.udp, legit.clone()));
    // Registered and warm before the attack.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = rss_kib(pid);
    if std::env::var_os("ATTACK_STATE").is_some() {
        print_memory(pid, "before the attack");
    }
    let cpu_before = cpu_ticks(pid);
    let attack_start = Instant::now();
    let until = attack_start + Duration::from_secs(seconds);
    let done = Arc::new(Done::default());
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while Instant::now() < until + Duration::from_secs(2) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let attack = async {
        match name {
            "slowloris" => {
                slowloris(&server, until, &done).await;
                Ok(())
            }
            "register-flood" => register_flood(&server, until, &done).await,
            "invite-flood" => invite_flood(&server, until, &done).await,
            "torture" => torture(&server, until, &done).await,
            "handshakes" => {
                handshakes(&server, until, &done).await;
                Ok(())
            }
            "slow-router" => slow_router(&server, until, &done).await,
            other => bail!("unknown attack {other}"),
        }
    };
    attack.await?;
    let attack_end = Instant::now().max(until);
    let cpu_after = cpu_ticks(pid);
    let _ = sampler.await;
    let (legit_ok, legit_answered, legit_sent, p99_ms) = legit.between(attack_start, attack_end);
    let clients = legit.by_client(attack_start, attack_end);
    if let Ok(path) = std::env::var("ATTACK_TRACE") {
        // Every legitimate transaction: seconds since the attack began (negative
        // before), 1 for the UDP phone (0 for the WebSocket client), milliseconds to
        // its answer (-1: none). Where the p99 comes from: a stall or a queue.
        let s = legit.samples.lock().expect("samples");
        let mut out = String::new();
        for x in s.iter() {
            let t = if x.sent >= attack_start {
                x.sent.duration_since(attack_start).as_secs_f64()
            } else {
                -attack_start.duration_since(x.sent).as_secs_f64()
            };
            let ms = x.answer.map_or(-1.0, |a| a.1.as_secs_f64() * 1e3);
            out += &format!("{t:.3} {} {ms:.1}\n", u8::from(x.udp));
        }
        std::fs::write(&path, out).with_context(|| format!("writing {path}"))?;
    }
    // Quiet: the timers run (connections closed, registrations expired, transactions
    // ended); the legitimate clients go on.
    tokio::time::sleep(Duration::from_secs(after)).await;
    let rss_after = rss_kib(pid);
    // Every timer has run by then: registrations (60 s) expired, transactions (64×T1)
    // ended, connections closed.
    tokio::time::sleep(Duration::from_secs(settle.saturating_sub(after))).await;
    let rss_settled = rss_kib(pid);
    if std::env::var_os("ATTACK_STATE").is_some() {
        // What the server still holds once the timers ran: its gauges, and its memory
        // by kind.
        for gauge in [
            "sipwasm_sip_transactions",
            "sipwasm_proxy_requests",
            "sipwasm_sip_timers",
            "sipwasm_registrar_bindings",
            "sipwasm_flows_open",
        ] {
            eprintln!("{gauge} {}", server.metric(gauge).await);
        }
        print_memory(pid, "once the timers ran");
    }
    let refused = [
        ("conn", "sipwasm_connections_refused_total"),
        ("timeouts", "sipwasm_connections_timed_out_total"),
        ("sip", "sipwasm_sip_refused_total"),
        ("plugin", "sipwasm_plugin_failures_total"),
    ];
    let mut parts = Vec::new();
    for (label, metric) in refused {
        let n = server.metric(metric).await;
        if n > 0 {
            parts.push(format!("{label} {n}"));
        }
    }
    legit.stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(2), ws_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), udp_task).await;
    let survived = server.alive();
    let secs = attack_end.duration_since(attack_start).as_secs_f64();
    Ok(Row {
        name,
        sent: done.sent.load(Ordering::Relaxed),
        legit_ok,
        legit_answered,
        legit_sent,
        clients,
        p99_ms,
        rss_before,
        rss_peak: peak.load(Ordering::Relaxed),
        rss_after,
        rss_settled,
        cpu_percent: (cpu_after - cpu_before) as f64 / secs,
        survived,
        refused: parts.join(", "),
    })
}
