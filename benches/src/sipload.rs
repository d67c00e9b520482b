//! SIP load: REGISTER over WebSocket, MESSAGE relayed WebSocket to WebSocket, REGISTER
//! over UDP. Closed loop: every client sends its next request when the previous one is
//! answered, so the rate is what the server sustains and the latency is honest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Addresses of the server under test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SipTarget {
    /// WebSocket listener.
    pub(crate) ws: SocketAddr,
    /// UDP listener.
    pub(crate) udp: SocketAddr,
    /// The server's process, when known: its CPU time (and its children's) is
    /// measured over each run.
    pub(crate) pid: Option<u32>,
    /// Other processes serving with it, measured together (the other nodes of a
    /// cluster and their Redis); 0 for none.
    pub(crate) with: [u32; 4],
}

/// Rate and latency of one scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Result {
    /// Completed transactions per second.
    pub(crate) rate: f64,
    /// Median latency (µs).
    pub(crate) p50: f64,
    /// 99th percentile latency (µs).
    pub(crate) p99: f64,
    /// Requests without a success answer.
    pub(crate) errors: u64,
    /// Server CPU time per completed transaction (µs, user + system), when its process
    /// is known.
    pub(crate) server_cpu: Option<Cpu>,
    /// The load generator's own CPU time per completed transaction.
    pub(crate) load_cpu: Cpu,
    /// CPU time the whole machine (all CPUs) left idle, per completed transaction (µs).
    pub(crate) idle: f64,
}

/// CPU time per completed transaction, in µs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    /// In user space.
    pub(crate) user: f64,
    /// In the kernel.
    pub(crate) system: f64,
}

impl Cpu {
    /// User + system.
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }
}

/// `total (user + system)`, to a tenth of a µs.
impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ({:.1} + {:.1})",
            self.total(),
            self.user,
            self.system
        )
    }
}

/// User and system CPU clock ticks of processes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ticks {
    user: u64,
    system: u64,
}

/// Clock ticks per second of /proc/PID/stat's utime and stime (USER_HZ, 100 on
/// Linux for every architecture this runs on).
const USER_HZ: f64 = 100.0;

impl Ticks {
    /// The sum over processes.
    pub(crate) fn of_all(pids: &[u32]) -> Self {
        pids.iter()
            .map(|&p| Self::of(p))
            .fold(Self::default(), |a, b| Self {
                user: a.user + b.user,
                system: a.system + b.system,
            })
    }

    fn of(pid: u32) -> Self {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Self::default();
        };
        // utime and stime are fields 14 and 15; 12 and 13 after the ")" that ends
        // the command name.
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .skip(11);
        let mut next = || rest.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        Self {
            user: next(),
            system: next(),
        }
    }

    /// CPU time per unit of `count` since `since`.
    pub(crate) fn per(self, since: Self, count: usize) -> Cpu {
        let n = count.max(1) as f64;
        Cpu {
            user: (self.user.saturating_sub(since.user)) as f64 / USER_HZ * 1e6 / n,
            system: (self.system.saturating_sub(since.system)) as f64 / USER_HZ * 1e6 / n,
        }
    }
}

/// Idle (and I/O wait) clock ticks of all CPUs, from the first line of /proc/stat.
fn idle_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    // cpu  user nice system idle iowait irq softirq steal ...
    let mut f = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(4)
        .map(|v| v.parse::<u64>().unwrap_or(0));
    f.next().unwrap_or(0) + f.next().unwrap_or(0)
}

fn summarize(
    mut lat: Vec<u32>,
    elapsed: Duration,
    errors: u64,
    server_cpu: Option<Cpu>,
    load_cpu: Cpu,
    idle: f64,
) -> Result {
    lat.sort_unstable();
    let q = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            f64::from(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)])
        }
    };
    Result {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: q(0.5),
        p99: q(0.99),
        errors,
        server_cpu,
        load_cpu,
        idle,
    }
}

async fn ws_connect(addr: SocketAddr) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://localhost:{}/", addr.port()).into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse()?);
    // A SIP message fits in a few KiB: tungstenite's default read buffer (128 KiB) is
    // zeroed on every read, which cost the load generator a sixth of its CPU and so
    // took CPU from whichever server shares the cores with it.
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await?;
    Ok(ws)
}

/// The next SIP text on a WebSocket (keepalives and control frames skipped).
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() != "\r\n" => return Ok(t.to_string()),
            Some(Ok(Message::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("websocket: {e}"),
            None => bail!("websocket closed"),
        }
    }
}

pub(crate) fn register_text(
    transport: &str,
    host: &str,
    user: &str,
    call_id: &str,
    cseq: u64,
) -> String {
    let contact_tp = if transport == "WS" {
        ";transport=ws"
    } else {
        ""
    };
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/{transport} {host};branch=z9hG4bK{user}x{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@localhost>;tag=t{user}\r\nTo: <sip:{user}@localhost>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{host}{contact_tp}>;expires=3600\r\n\
         User-Agent: sipwasm-bench\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A per-run prefix so Call-IDs never repeat across runs against one server.
pub(crate) fn run_id() -> String {
    use std::sync::atomic::AtomicU64;
    static RUN: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", RUN.fetch_add(1, Ordering::Relaxed))
}

fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Copies the header lines a response needs from a request (RFC 3261 8.2.6).
pub(crate) fn ok_for(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in request.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                if !line.contains("tag=") {
                    out.push_str(";tag=bench");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// REGISTER over `conns` WebSocket connections for `seconds`.
pub(crate) async fn register_ws(
    t: SipTarget,
    conns: usize,
    seconds: u64,
) -> anyhow::Result<Result> {
    register_ws_as(t, "", conns, seconds).await
}

/// [`register_ws`] with the users' names starting with `prefix` (loads on several
/// nodes of one cluster register users of their own).
pub(crate) async fn register_ws_as(
    t: SipTarget,
    prefix: &str,
    conns: usize,
    seconds: u64,
) -> anyhow::Result<Result> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let start_gate = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let run = run_id();
    for i in 0..conns {
        let (stop, gate, run) = (stop.clone(), start_gate.clone(), run.clone());
        let user = format!("{prefix}wsreg{i}");
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_connect(t.ws).await?;
            let host = format!("{user}.invalid");
            let call_id = format!("bench-ws-{run}-{i}");
            gate.wait().await;
            let (mut lat, mut errors, mut cseq) = (Vec::with_capacity(100_000), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                cseq += 1;
                let text = register_text("WS", &host, &user, &call_id, cseq);
                let sent = Instant::now();
                ws.send(Message::text(text)).await?;
                let reply = next_text(&mut ws).await?;
                match status_of(&reply) {
                    Some(200) => lat.push(sent.elapsed().as_micros() as u32),
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    run_for(t, tasks, start_gate, stop, seconds).await
}

/// REGISTER over `socks` UDP sockets for `seconds`.
pub(crate) async fn register_udp(
    t: SipTarget,
    socks: usize,
    seconds: u64,
) -> anyhow::Result<Result> {
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Barrier::new(socks + 1));
    let mut tasks = Vec::new();
    let run = run_id();
    for i in 0..socks {
        let (stop, gate, run) = (stop.clone(), gate.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            let host = sock.local_addr()?.to_string();
            let user = format!("udpreg{i}");
            let call_id = format!("bench-udp-{run}-{i}");
            let mut buf = vec![0u8; 65536];
            gate.wait().await;
            let (mut lat, mut errors, mut cseq) = (Vec::with_capacity(100_000), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                cseq += 1;
                let text = register_text("UDP", &host, &user, &call_id, cseq);
                let sent = Instant::now();
                let marker = format!("CSeq: {cseq} REGISTER");
                match udp_final(&sock, t.udp, &text, &marker, &mut buf).await? {
                    Some(200) => lat.push(sent.elapsed().as_micros() as u32),
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    run_for(t, tasks, gate, stop, seconds).await
}

/// Sends `text` from `sock` to `to` and waits for its final response: the first
/// datagram holding `marker` that is not provisional. Its status; `None` when it is
/// unreadable or none came within 1 s of the last datagram (a lost datagram would stall
/// the client).
pub(crate) async fn udp_final(
    sock: &UdpSocket,
    to: SocketAddr,
    text: &str,
    marker: &str,
    buf: &mut [u8],
) -> anyhow::Result<Option<u16>> {
    sock.send_to(text.as_bytes(), to).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(buf)).await {
            Ok(Ok((n, _))) => {
                let reply = String::from_utf8_lossy(&buf[..n]);
                if !reply.contains(marker) {
                    continue;
                }
                match status_of(&reply) {
                    Some(s) if s < 200 => continue,
                    status => return Ok(status),
                }
            }
            _ => return Ok(None),
        }
    }
}

/// MESSAGE from `pairs` sender connections to as many registered receiver connections.
pub(crate) async fn message_ws(t: SipTarget, pairs: usize, seconds: u64) -> anyhow::Result<Result> {
    message_ws_to(t, t.ws, pairs, seconds).await
}

/// [`message_ws`] with the receivers on `receivers` (another node of a cluster), the
/// senders on `t.ws`.
pub(crate) async fn message_ws_to(
    t: SipTarget,
    receivers_at: SocketAddr,
    pairs: usize,
    seconds: u64,
) -> anyhow::Result<Result> {
    let stop = Arc::new(AtomicBool::new(false));
    // Receivers answer until every sender is done (stopping them with the senders would
    // fail the last MESSAGEs in flight with 430, rightly).
    let receivers_stop = Arc::new(AtomicBool::new(false));
    // Receivers: register, then answer every MESSAGE with 200 until the socket closes.
    let mut receivers = Vec::new();
    let run = run_id();
    for i in 0..pairs {
        let mut ws = ws_connect(receivers_at).await?;
        let user = format!("rcv{i}");
        let host = format!("{user}.invalid");
        ws.send(Message::text(register_text(
            "WS",
            &host,
            &user,
            &format!("bench-rcv-{run}-{i}"),
            1,
        )))
        .await?;
        let reply = next_text(&mut ws).await?;
        if status_of(&reply) != Some(200) {
            bail!(
                "receiver {i} could not register: {}",
                reply.lines().next().unwrap_or("")
            );
        }
        let stop = receivers_stop.clone();
        receivers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(req)) =
                    tokio::time::timeout(Duration::from_millis(200), next_text(&mut ws)).await
                else {
                    continue;
                };
                if req.starts_with("MESSAGE ") {
                    let _ = ws.send(Message::text(ok_for(&req))).await;
                }
            }
        }));
    }
    let gate = Arc::new(tokio::sync::Barrier::new(pairs + 1));
    let mut tasks = Vec::new();
    for i in 0..pairs {
        let (stop, gate, run) = (stop.clone(), gate.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_connect(t.ws).await?;
            let host = format!("snd{i}.invalid");
            gate.wait().await;
            let (mut lat, mut errors, mut n) = (Vec::with_capacity(100_000), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!(
                    "MESSAGE sip:rcv{i}@localhost SIP/2.0\r\nVia: SIP/2.0/WS {host};branch=z9hG4bKm{i}x{n};rport\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:snd{i}@localhost>;tag=s{i}\r\nTo: <sip:rcv{i}@localhost>\r\n\
                     Call-ID: bench-msg-{run}-{i}-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
                     Content-Length: 5\r\n\r\nhello"
                );
                let sent = Instant::now();
                ws.send(Message::text(text)).await?;
                loop {
                    let reply = next_text(&mut ws).await?;
                    match status_of(&reply) {
                        Some(100) => continue,
                        Some(200) => lat.push(sent.elapsed().as_micros() as u32),
                        _ => errors += 1,
                    }
                    break;
                }
            }
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    let result = run_for(t, tasks, gate, stop, seconds).await;
    receivers_stop.store(true, Ordering::Relaxed);
    for r in receivers {
        let _ = r.await;
    }
    result
}

pub(crate) type Task = tokio::task::JoinHandle<anyhow::Result<(Vec<u32>, u64)>>;

/// Lets the clients go, stops them after `seconds`, and collects what they measured,
/// with the CPU time the server and this process spent meanwhile.
pub(crate) async fn run_for(
    t: SipTarget,
    tasks: Vec<Task>,
    gate: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
    seconds: u64,
) -> anyhow::Result<Result> {
    // The server and its descendants (Kamailio forks its workers), listed once.
    let server = t.pid.map(|p| {
        let mut all = crate::process::process_tree(p);
        all.extend(t.with.iter().filter(|p| **p != 0));
        all
    });
    let server_ticks = || server.as_deref().map(Ticks::of_all);
    gate.wait().await;
    let started = Instant::now();
    let (server0, load0, idle0) = (server_ticks(), Ticks::of(std::process::id()), idle_ticks());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (server1, load1, idle1) = (server_ticks(), Ticks::of(std::process::id()), idle_ticks());
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.context("client task")??;
        lat.extend(l);
        errors += e;
    }
    // Transactions completed between the two CPU readings, near enough: all of them
    // but those still in flight at the end (one per client).
    let n = lat.len();
    let server_cpu = server0.zip(server1).map(|(a, b)| b.per(a, n));
    Ok(summarize(
        lat,
        elapsed,
        errors,
        server_cpu,
        load1.per(load0, n),
        idle1.saturating_sub(idle0) as f64 / USER_HZ * 1e6 / n.max(1) as f64,
    ))
}
