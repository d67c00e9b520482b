//! `sipwasm-bench`: measures sipwasm and, in the same run, Kamailio 5.6 (Debian's
//! `kamailio` + `kamailio-websocket-modules`) with the equivalent policy
//! (`benches/kamailio/ws.cfg`), and prints the figures side by side.
//!
//! ```text
//! sipwasm-bench decision                  plugin decision time, reused and fresh instances
//! sipwasm-bench handshakes [--kamailio]   WebSocket handshakes per second through the policy
//! sipwasm-bench idle [--kamailio]         memory per idle WebSocket connection
//! sipwasm-bench sip [--kamailio]          SIP load: REGISTER over WS and UDP, MESSAGE WS to WS
//! sipwasm-bench calls [--kamailio]        calls between sipp phones: server CPU per call
//! sipwasm-bench router                    what a sip-router plugin adds to a request
//! sipwasm-bench core                      the SIP core alone, in process
//! sipwasm-bench attack                    the attack campaign: six attacks, legitimate clients
//! sipwasm-bench all [--kamailio]          all of the above (but the attack campaign)
//! ```
//!
//! Servers and load share this machine's cores; this measures rates, never asserts them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

mod attack;
mod calls;
mod sipload;

/// The same allocator as the server, so in-process figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Benchmarks for sipwasm, side by side with Kamailio")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// The sipwasm binary to measure (build it with --release).
    #[arg(long, global = true, default_value = "target/release/sipwasm")]
    sipwasm: PathBuf,
    /// The Kamailio configuration used as the reference.
    #[arg(long, global = true, default_value = "benches/kamailio/ws.cfg")]
    kamailio_cfg: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Plugin decision time (seed-policy), in process.
    Decision {
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
    },
    /// WebSocket handshakes per second (connect, upgrade, close).
    Handshakes {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Measure Kamailio too.
        #[arg(long)]
        kamailio: bool,
    },
    /// Memory per idle WebSocket connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Measure Kamailio too.
        #[arg(long)]
        kamailio: bool,
    },
    /// The costliest message of each shape (64 KB of Contacts, parameters, Vias, Routes,
    /// challenges) through a SIP core, in process: the time each takes.
    Worst {
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// SIP load: REGISTER over WS, MESSAGE WS to WS, REGISTER over UDP.
    Sip {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Measure Kamailio too.
        #[arg(long)]
        kamailio: bool,
        /// Kamailio's registrar configuration.
        #[arg(long, default_value = "benches/kamailio/registrar.cfg")]
        kamailio_registrar_cfg: PathBuf,
        /// Run one scenario only: register-ws, message-ws or register-udp.
        #[arg(long)]
        only: Option<String>,
        /// Measure a server that is already running (its ws and udp listeners)
        /// instead of starting one.
        #[arg(long, requires = "udp")]
        ws: Option<SocketAddr>,
        /// With --ws: its UDP listener.
        #[arg(long)]
        udp: Option<SocketAddr>,
        /// With --ws: clients (connections or sockets) per scenario instead of the
        /// standard 50 (25 pairs for MESSAGE).
        #[arg(long, requires = "ws")]
        clients: Option<usize>,
        /// With --ws: the server's process, to measure its CPU time per transaction.
        #[arg(long, requires = "ws")]
        pid: Option<u32>,
        /// Run each server on CPUs 0..N and the load generator on the other CPUs (as
        /// when the load comes from the network), instead of all sharing every CPU.
        #[arg(long, conflicts_with = "ws")]
        server_cores: Option<usize>,
        /// Measure each server this many times, alternating (sipwasm, Kamailio,
        /// sipwasm, ...), and report each scenario's median run: on a shared or
        /// virtual machine one run can be off by 10-20%.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=15), conflicts_with = "ws")]
        rounds: u32,
    },
    /// Calls between two sipp phones over UDP through the proxy at a fixed rate: server
    /// CPU time per call (needs sipp: apt-get install sip-tester).
    Calls {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// New calls per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Measure Kamailio too.
        #[arg(long)]
        kamailio: bool,
        /// Kamailio's registrar configuration.
        #[arg(long, default_value = "benches/kamailio/registrar.cfg")]
        kamailio_registrar_cfg: PathBuf,
    },
    /// What a `sip-router` plugin (call-policy) adds to a request: the call in
    /// process, then REGISTER over UDP with and without it.
    Router {
        #[arg(long, default_value_t = 20_000)]
        iterations: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The SIP core alone, in process: parse + registrar + serialize per REGISTER.
    Core {
        #[arg(long, default_value_t = 200_000)]
        iterations: u64,
    },
    /// The attack campaign: each attack for `seconds` against a fresh server while a
    /// legitimate WebSocket client and UDP phone exchange messages; their success
    /// rate and p99, the server's peak RSS and CPU, and RSS `after` seconds later.
    /// With `ATTACK_TRACE=FILE` in the environment, every legitimate transaction's send
    /// time and latency go to FILE (the last attack run's), to tell a stall from a queue;
    /// with `ATTACK_STATE=1`, what the server still holds at the end (gauges, memory).
    Attack {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 60)]
        after: u64,
        /// Seconds after the attack of the last RSS reading (every timer has run).
        #[arg(long, default_value_t = 120)]
        settle: u64,
        /// Run one attack only (slowloris, register-flood, invite-flood, torture,
        /// handshakes, slow-router).
        #[arg(long)]
        only: Option<String>,
    },
    /// Everything.
    All {
        #[arg(long)]
        kamailio: bool,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.cmd {
            Cmd::Decision { iterations } => decision(iterations).await,
            Cmd::Calls {
                seconds,
                rate,
                kamailio,
                kamailio_registrar_cfg,
            } => {
                calls(
                    &args.sipwasm,
                    kamailio.then_some(&*kamailio_registrar_cfg),
                    rate,
                    seconds,
                )
                .await
            }
            Cmd::Core { iterations } => core_only(iterations),
            Cmd::Attack {
                seconds,
                after,
                settle,
                only,
            } => attack::campaign(&args.sipwasm, seconds, after, settle.max(after), only.as_deref()).await,
            Cmd::Worst { rounds } => worst(rounds),
            Cmd::Router {
                iterations,
                seconds,
            } => router(&args.sipwasm, iterations, seconds).await,
            Cmd::Handshakes {
                seconds,
                concurrency,
                kamailio,
            } => {
                handshakes(
                    &args.sipwasm,
                    kamailio.then_some(&*args.kamailio_cfg),
                    seconds,
                    concurrency,
                )
                .await
            }
            Cmd::Idle {
                connections,
                kamailio,
            } => {
                idle(
                    &args.sipwasm,
                    kamailio.then_some(&*args.kamailio_cfg),
                    connections,
                )
                .await
            }
            Cmd::Sip {
                seconds,
                kamailio,
                kamailio_registrar_cfg,
                only,
                ws,
                udp,
                clients,
                pid,
                server_cores,
                rounds,
            } => match (ws, udp) {
                (Some(ws), Some(udp)) => {
                    let results =
                        sip_scenarios_with(ws, udp, seconds, only.as_deref(), clients, pid)
                            .await?;
                    for ((_, name), r) in SCENARIOS.iter().zip(results) {
                        if let Some(r) = r {
                            let server = r
                                .server_cpu
                                .map(|c| {
                                    format!(
                                        " | server {:.1} µs CPU ({:.1} user + {:.1} sys)",
                                        c.total(),
                                        c.user,
                                        c.system
                                    )
                                })
                                .unwrap_or_default();
                            println!(
                                "| {name} | {:.0}/s | p50 {:.0} µs | p99 {:.0} µs | {} errors{server} | load {:.1} µs CPU | idle {:.1} µs |",
                                r.rate,
                                r.p50,
                                r.p99,
                                r.errors,
                                r.load_cpu.total(),
                                r.idle
                            );
                        }
                    }
                    Ok(())
                }
                _ => {
                    let place = server_cores.map(Placement::new).transpose()?;
                    sip(
                        &args.sipwasm,
                        kamailio.then_some(&*kamailio_registrar_cfg),
                        seconds,
                        only.as_deref(),
                        place,
                        rounds as usize,
                    )
                    .await
                }
            },
            Cmd::All {
                kamailio,
                connections,
                seconds,
            } => {
                let k = kamailio.then_some(&*args.kamailio_cfg);
                decision(20_000).await?;
                handshakes(&args.sipwasm, k, seconds, 32).await?;
                idle(&args.sipwasm, k, connections).await?;
                let reg = kamailio.then(|| PathBuf::from("benches/kamailio/registrar.cfg"));
                sip(&args.sipwasm, reg.as_deref(), seconds, None, None, 1).await?;
                // Then again with each server on a core of its own, when there are two.
                if let Ok(place) = Placement::new(1) {
                    sip(&args.sipwasm, reg.as_deref(), seconds, None, Some(place), 1).await?;
                }
                calls(&args.sipwasm, reg.as_deref(), 1000, seconds).await?;
                router(&args.sipwasm, 20_000, seconds).await
            }
        }
    })
}

// ---------------------------------------------------------------- decision time

fn sample_request(port: u16) -> sipwasm::plugin::HttpRequest {
    use sipwasm::plugin::{HttpRequest, Peer, PeerTransport, Websocket};
    HttpRequest {
        method: "GET".into(),
        target: "/".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), format!("localhost:{port}")),
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
            (
                "Sec-WebSocket-Key".into(),
                "dGhlIHNhbXBsZSBub25jZQ==".into(),
            ),
            ("Sec-WebSocket-Version".into(), "13".into()),
            ("Sec-WebSocket-Protocol".into(), "sip".into()),
            ("Origin".into(), "https://app.example.org".into()),
            (
                "User-Agent".into(),
                "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0".into(),
            ),
        ],
        body: vec![],
        peer: Peer {
            remote_addr: "127.0.0.1".into(),
            remote_port: 50000,
            local_addr: "127.0.0.1".into(),
            local_port: port,
            transport: PeerTransport::Tcp,
        },
        connection_id: 1,
        websocket: Websocket::Offer(vec!["sip".into()]),
    }
}

/// Loads the plugins of a configuration `text` in process, as a server listening on
/// `local` would.
async fn load_plugins(text: &str, local: SocketAddr) -> anyhow::Result<sipwasm::plugin::Plugins> {
    let config = sipwasm::config::Config::parse(text, "bench", Path::new("."))?;
    let myself = Arc::new(sipwasm::core::Myself::new(
        &["localhost".to_string()],
        &[local],
    ));
    let metrics = Arc::new(sipwasm::metrics::Metrics::default());
    tokio::task::spawn_blocking(move || {
        sipwasm::plugin::Plugins::load(&config, myself, metrics, None)
    })
    .await?
}

async fn decision(iterations: usize) -> anyhow::Result<()> {
    println!("## Plugin decision time (seed-policy, Rust guest, in process)\n");
    println!("| instances | calls | median µs | p99 µs | target |");
    println!("|---|---|---|---|---|");
    for (mode, n, target) in [
        ("reuse", iterations, "≤ 10 µs median"),
        ("fresh", iterations / 4, "≤ 40 µs median"),
    ] {
        let text = format!(
            "[[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:8080\"\nplugin = \"p\"\n\
             [plugins.p]\nbuiltin = \"seed-policy\"\ninstances = \"{mode}\"\n\
             [plugins.p.config]\nweb-ports = [8080]\n"
        );
        let plugins = load_plugins(&text, "127.0.0.1:8080".parse()?).await?;
        let plugin = plugins.get("p").context("plugin p")?;
        let req = sample_request(8080);
        // Warm up (first instantiation, caches).
        for _ in 0..200 {
            plugin.call(&req).await?;
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let d = plugin.call(&req).await?;
            samples.push(t.elapsed());
            assert!(matches!(d, sipwasm::plugin::Decision::Upgrade(_)));
        }
        samples.sort();
        let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "| {mode} | {n} | {:.1} | {:.1} | {target} |",
            q(0.5).as_secs_f64() * 1e6,
            q(0.99).as_secs_f64() * 1e6
        );
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------- servers

/// A server under test.
struct Target {
    name: String,
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers on CPUs `0..server_cores`, the load generator on the others (`taskset`,
/// util-linux). Child processes and threads inherit the placement.
#[derive(Debug, Clone, Copy)]
struct Placement {
    server_cores: usize,
    cpus: usize,
}

impl Placement {
    fn new(server_cores: usize) -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism()?.get();
        if server_cores == 0 || server_cores >= cpus {
            bail!("--server-cores must leave the load generator at least one of the {cpus} CPUs");
        }
        Ok(Self { server_cores, cpus })
    }

    fn server_cpus(self) -> String {
        format!("0-{}", self.server_cores - 1)
    }

    fn load_cpus(self) -> String {
        format!("{}-{}", self.server_cores, self.cpus - 1)
    }

    /// `program`, run on the server CPUs when placed.
    fn command(place: Option<Self>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match place {
            Some(p) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(p.server_cpus()).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Moves every thread of this process (the load generator) to the other CPUs.
    fn pin_load_generator(self) -> anyhow::Result<()> {
        move_self_to(&self.load_cpus())
    }

    /// Lets this process use every CPU again.
    fn unpin_load_generator(self) -> anyhow::Result<()> {
        move_self_to(&format!("0-{}", self.cpus - 1))
    }
}

/// `taskset -a -p -c cpus <this process>`: every thread, and what they start later.
fn move_self_to(cpus: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("run taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not move the load generator to CPUs {cpus}");
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until_listening(
    addr: SocketAddr,
    child: &mut Child,
    name: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited with {status} before listening");
        }
        if Instant::now() > deadline {
            bail!("{name} did not listen on {addr} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts sipwasm with a ws listener (seed-policy) and, when `udp`, a UDP listener;
/// returns it and the UDP address.
async fn start_sipwasm(
    bin: &Path,
    instances: &str,
    udp: bool,
) -> anyhow::Result<(Target, SocketAddr)> {
    start_sipwasm_with(bin, instances, udp, "", None).await
}

/// [`start_sipwasm`] with `extra` TOML appended to the configuration.
async fn start_sipwasm_with(
    bin: &Path,
    instances: &str,
    udp: bool,
    extra: &str,
    place: Option<Placement>,
) -> anyhow::Result<(Target, SocketAddr)> {
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p sipwasm` first",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let (port, udp_port) = (free_port(), free_port());
    let udp_listen = if udp {
        format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{udp_port}\"\n")
    } else {
        String::new()
    };
    let config = format!(
        "[server]\ndata-dir = \"{}\"\n[[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:{port}\"\n\
         plugin = \"seed-policy\"\n{udp_listen}[plugins.seed-policy]\nbuiltin = \"seed-policy\"\n\
         instances = \"{instances}\"\n[plugins.seed-policy.config]\nweb-ports = [{port}]\n{extra}\n",
        dir.path().display()
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config)?;
    let mut child = Placement::command(place, bin)
        .arg("--config")
        .arg(&path)
        .args(["--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_listening(addr, &mut child, "sipwasm").await?;
    let target = Target {
        name: format!("sipwasm ({instances} instances)"),
        addr,
        child,
        _dir: dir,
    };
    Ok((target, SocketAddr::from(([127, 0, 0, 1], udp_port))))
}

async fn start_kamailio(cfg: &Path, shm_mb: usize) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = std::fs::canonicalize(cfg).with_context(|| format!("{}", cfg.display()))?;
    let mut child = Command::new("kamailio")
        .arg("-f")
        .arg(&cfg)
        .args(["-DD", "-E", "-m", &shm_mb.to_string(), "-M", "8"])
        .arg("-A")
        .arg(format!("WSPORT={port}"))
        .arg("-l")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start kamailio (apt-get install kamailio kamailio-websocket-modules)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until_listening(addr, &mut child, "kamailio").await?;
    Ok(Target {
        name: "kamailio 5.6 (websocket + xhttp)".into(),
        addr,
        child,
        _dir: dir,
    })
}

// ---------------------------------------------------------------- handshakes

fn handshake_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: sip\r\nOrigin: https://app.example.org\r\n\r\n",
        addr.port()
    )
}

/// Connects and completes a handshake; returns the open stream.
async fn open_ws(addr: SocketAddr, request: &[u8]) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(request).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed during handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 8192 {
            bail!("no end of response head");
        }
    }
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!(
            "not upgraded: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        );
    }
    Ok(s)
}

async fn handshake_rate(
    target: &Target,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<(f64, u64)> {
    let request: Arc<[u8]> = handshake_request(target.addr).into_bytes().into();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Warm-up.
    for _ in 0..50 {
        drop(open_ws(target.addr, &request).await?);
    }
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (request, done, errors, stop, addr) = (
                request.clone(),
                done.clone(),
                errors.clone(),
                stop.clone(),
                target.addr,
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match open_ws(addr, &request).await {
                        Ok(s) => {
                            // Reset on close: no TIME_WAIT pile-up on the client side.
                            let _ = s.set_zero_linger();
                            drop(s);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    ))
}

async fn handshakes(
    bin: &Path,
    kamailio: Option<&Path>,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for instances in ["reuse", "fresh"] {
        let (t, _) = start_sipwasm(bin, instances, false).await?;
        rows.push((
            t.name.clone(),
            handshake_rate(&t, seconds, concurrency).await?,
        ));
    }
    if let Some(cfg) = kamailio {
        let t = start_kamailio(cfg, 256).await?;
        rows.push((
            t.name.clone(),
            handshake_rate(&t, seconds, concurrency).await?,
        ));
    }
    println!(
        "## WebSocket handshakes per second ({concurrency} clients, {seconds} s, connect + policy + 101 + close)\n"
    );
    println!("| server | handshakes/s | errors | vs sipwasm |");
    println!("|---|---|---|---|");
    let base = rows[0].1.0;
    for (name, (rate, errors)) in &rows {
        println!("| {name} | {rate:.0} | {errors} | {:.2}x |", rate / base);
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------- idle memory

/// Proportional set size of a process and its descendants, in KiB (from
/// /proc/PID/smaps_rollup), so forked workers and shared memory are counted once.
fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for p in process_tree(pid) {
        let text = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))?;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// `pid` and its descendants (from /proc).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        let Ok(dir) = std::fs::read_dir("/proc") else {
            break;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(p) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // ppid is the 2nd field after the ")" that ends the command name.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u32>().ok());
                if ppid == Some(parent) && !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
        i += 1;
    }
    pids
}

async fn idle_cost(target: &Target, connections: usize) -> anyhow::Result<(f64, u64, u64)> {
    let request: Arc<[u8]> = handshake_request(target.addr).into_bytes().into();
    // One connection first, so one-time allocations are in the baseline.
    let warm = open_ws(target.addr, &request).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = pss_kib(target.child.id())?;
    let mut open = Vec::with_capacity(connections);
    let batch = 200;
    while open.len() < connections {
        let n = batch.min(connections - open.len());
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (request, addr) = (request.clone(), target.addr);
                tokio::spawn(async move { open_ws(addr, &request).await })
            })
            .collect();
        for t in tasks {
            open.push(t.await??);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pss_kib(target.child.id())?;
    drop(open);
    drop(warm);
    Ok((
        (after.saturating_sub(before)) as f64 / connections as f64,
        before,
        after,
    ))
}

async fn idle(bin: &Path, kamailio: Option<&Path>, connections: usize) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    {
        let (t, _) = start_sipwasm(bin, "reuse", false).await?;
        rows.push((t.name.clone(), idle_cost(&t, connections).await?));
    }
    if let Some(cfg) = kamailio {
        // Kamailio keeps connections in shared memory: give it room for them.
        let t = start_kamailio(cfg, 2048).await?;
        rows.push((t.name.clone(), idle_cost(&t, connections).await?));
    }
    println!(
        "## Memory per idle WebSocket connection ({connections} connections, PSS of all server processes)\n"
    );
    println!("| server | KiB per connection | PSS before KiB | PSS after KiB | vs sipwasm |");
    println!("|---|---|---|---|---|");
    let base = rows[0].1.0;
    for (name, (per, before, after)) in &rows {
        println!(
            "| {name} | {per:.1} | {before} | {after} | {:.2}x |",
            per / base
        );
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------- SIP load

async fn start_kamailio_sip(
    cfg: &Path,
    place: Option<Placement>,
) -> anyhow::Result<(Target, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let (ws, udp) = (free_port(), free_port());
    let cfg = std::fs::canonicalize(cfg).with_context(|| format!("{}", cfg.display()))?;
    let mut child = Placement::command(place, "kamailio")
        .arg("-f")
        .arg(&cfg)
        .args(["-DD", "-E", "-m", "2048", "-M", "16"])
        .arg("-A")
        .arg(format!("WSPORT={ws}"))
        .arg("-l")
        .arg(format!("tcp:127.0.0.1:{ws}"))
        .arg("-l")
        .arg(format!("udp:127.0.0.1:{udp}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("BENCH_KAMAILIO_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .context("start kamailio (apt-get install kamailio kamailio-websocket-modules)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], ws));
    wait_until_listening(addr, &mut child, "kamailio").await?;
    Ok((
        Target {
            name: "kamailio 5.6".into(),
            addr,
            child,
            _dir: dir,
        },
        SocketAddr::from(([127, 0, 0, 1], udp)),
    ))
}

const SCENARIOS: [(&str, &str); 3] = [
    ("register-ws", "REGISTER over WS (50 connections)"),
    ("message-ws", "MESSAGE WS to WS (25 pairs)"),
    ("register-udp", "REGISTER over UDP (50 sockets)"),
];

async fn sip_scenarios(
    ws: SocketAddr,
    udp: SocketAddr,
    seconds: u64,
    only: Option<&str>,
    pid: u32,
) -> anyhow::Result<Vec<Option<sipload::Result>>> {
    sip_scenarios_with(ws, udp, seconds, only, None, Some(pid)).await
}

async fn sip_scenarios_with(
    ws: SocketAddr,
    udp: SocketAddr,
    seconds: u64,
    only: Option<&str>,
    clients: Option<usize>,
    pid: Option<u32>,
) -> anyhow::Result<Vec<Option<sipload::Result>>> {
    let n = clients.unwrap_or(50).max(1);
    let t = sipload::SipTarget { ws, udp, pid };
    // A second of warm-up first (connections, caches).
    let _ = sipload::register_ws(t, 50, 1).await?;
    let mut out = Vec::new();
    for (key, _) in SCENARIOS {
        if only.is_some_and(|o| o != key) {
            out.push(None);
            continue;
        }
        out.push(Some(match key {
            "register-ws" => sipload::register_ws(t, n, seconds).await?,
            "message-ws" => sipload::message_ws(t, n.div_ceil(2), seconds).await?,
            _ => sipload::register_udp(t, n, seconds).await?,
        }));
    }
    Ok(out)
}

/// Per scenario, the run with the median rate (the lower middle one of an even count).
fn median_runs(runs: &[Vec<Option<sipload::Result>>]) -> Vec<Option<sipload::Result>> {
    (0..SCENARIOS.len())
        .map(|i| {
            let mut of_scenario: Vec<sipload::Result> = runs.iter().filter_map(|r| r[i]).collect();
            of_scenario.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            of_scenario
                .get(of_scenario.len().saturating_sub(1) / 2)
                .copied()
        })
        .collect()
}

async fn sip(
    bin: &Path,
    kamailio: Option<&Path>,
    seconds: u64,
    only: Option<&str>,
    place: Option<Placement>,
    rounds: usize,
) -> anyhow::Result<()> {
    if let Some(p) = place {
        p.pin_load_generator()?;
    }
    let (mut our_runs, mut their_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        our_runs.push({
            let (t, udp) = start_sipwasm_with(bin, "reuse", true, "", place).await?;
            sip_scenarios(t.addr, udp, seconds, only, t.child.id()).await?
        });
        if let Some(cfg) = kamailio {
            let (t, udp) = start_kamailio_sip(cfg, place).await?;
            their_runs.push(sip_scenarios(t.addr, udp, seconds, only, t.child.id()).await?);
        }
    }
    if let Some(p) = place {
        p.unpin_load_generator()?;
    }
    let ours = median_runs(&our_runs);
    let theirs = kamailio.is_some().then(|| median_runs(&their_runs));
    if rounds > 1 {
        println!("Rates of the {rounds} rounds (/s), the median of each is reported below:\n");
        for (i, (_, name)) in SCENARIOS.iter().enumerate() {
            let rates = |runs: &[Vec<Option<sipload::Result>>]| {
                runs.iter()
                    .filter_map(|r| r[i].map(|r| format!("{:.0}", r.rate)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if ours[i].is_some() {
                let k = if theirs.is_some() {
                    format!("; kamailio {}", rates(&their_runs))
                } else {
                    String::new()
                };
                println!("- {name}: sipwasm {}{k}", rates(&our_runs));
            }
        }
        println!();
    }
    let names = SCENARIOS.map(|(_, n)| n);
    let cores = match place {
        Some(p) => format!(
            "servers on CPUs {}, load generator on CPUs {}",
            p.server_cpus(),
            p.load_cpus()
        ),
        None => "load generator on the same cores".into(),
    };
    println!("## SIP load ({seconds} s each, closed loop, {cores})\n");
    println!(
        "| scenario | sipwasm /s | p50 µs | p99 µs | errors | kamailio /s | p50 µs | p99 µs | errors | sipwasm ÷ kamailio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let Some(o) = ours[i] else { continue };
        match theirs.as_ref().and_then(|k| k[i]) {
            Some(k) => {
                println!(
                    "| {name} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2}x |",
                    o.rate,
                    o.p50,
                    o.p99,
                    o.errors,
                    k.rate,
                    k.p50,
                    k.p99,
                    k.errors,
                    o.rate / k.rate
                );
            }
            None => println!(
                "| {name} | {:.0} | {:.0} | {:.0} | {} | - | - | - | - | - |",
                o.rate, o.p50, o.p99, o.errors
            ),
        }
    }
    println!();
    // Rates on shared cores depend on what the load generator costs too; CPU time per
    // transaction is each server's own cost.
    println!("### CPU time per transaction (µs, user + system; same runs)\n");
    println!(
        "| scenario | sipwasm | kamailio (all processes) | load generator, sipwasm run | load generator, kamailio run | kamailio ÷ sipwasm |"
    );
    println!("|---|---|---|---|---|---|");
    let cpu = |c: Option<sipload::Cpu>| match c {
        Some(c) => c.to_string(),
        None => "-".into(),
    };
    for (i, name) in names.iter().enumerate() {
        let Some(o) = ours[i] else { continue };
        let k = theirs.as_ref().and_then(|k| k[i]);
        let ratio = match (o.server_cpu, k.and_then(|k| k.server_cpu)) {
            (Some(o), Some(k)) if o.total() > 0.0 => format!("{:.2}x", k.total() / o.total()),
            _ => "-".into(),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {ratio} |",
            cpu(o.server_cpu),
            cpu(k.and_then(|k| k.server_cpu)),
            cpu(Some(o.load_cpu)),
            cpu(k.map(|k| k.load_cpu)),
        );
    }
    println!();
    // Server, load generator and idle account for every CPU-µs of the machine (the
    // kernel charges interrupt work, on loopback both ends' network receive path, to
    // whichever process it interrupted), so a rate follows from the three:
    // rate ≈ CPUs ÷ (server + load + idle).
    println!("### CPU left idle per transaction (µs, all CPUs together; same runs)\n");
    println!("| scenario | sipwasm run | kamailio run |");
    println!("|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let Some(o) = ours[i] else { continue };
        let k = theirs.as_ref().and_then(|k| k[i]);
        println!(
            "| {name} | {:.1} | {} |",
            o.idle,
            k.map_or_else(|| "-".to_string(), |k| format!("{:.1}", k.idle)),
        );
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------- calls

async fn calls(bin: &Path, kamailio: Option<&Path>, rate: u32, seconds: u64) -> anyhow::Result<()> {
    let ours = {
        let (t, udp) = start_sipwasm(bin, "reuse", true).await?;
        calls::run(udp, &process_tree(t.child.id()), rate, seconds).await?
    };
    let theirs = match kamailio {
        Some(cfg) => {
            let (t, udp) = start_kamailio_sip(cfg, None).await?;
            Some(calls::run(udp, &process_tree(t.child.id()), rate, seconds).await?)
        }
        None => None,
    };
    println!(
        "## Calls through the proxy ({rate} calls/s for {seconds} s, sipp to sipp over UDP)\n"
    );
    println!("| server | calls completed | failed | server CPU µs per call (user + system) |");
    println!("|---|---|---|---|");
    for (name, o) in [("sipwasm", Some(ours)), ("kamailio 5.6", theirs)] {
        let Some(o) = o else { continue };
        println!("| {name} | {} | {} | {} |", o.ok, o.failed, o.cpu);
    }
    if let Some(k) = theirs
        && ours.cpu.total() > 0.0
    {
        println!(
            "\nKamailio ÷ sipwasm, CPU per call: {:.2}x",
            k.cpu.total() / ours.cpu.total()
        );
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------- sip-router

/// The call-policy component built by this crate's build script.
const CALL_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/call_policy.wasm"));

/// Median and p99 of samples, in µs.
fn median_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (q(0.5).as_secs_f64() * 1e6, q(0.99).as_secs_f64() * 1e6)
}

async fn router(bin: &Path, iterations: usize, seconds: u64) -> anyhow::Result<()> {
    use sipwasm::core::{RouteDecision, Source, Transport};
    let dir = tempfile::tempdir()?;
    let wasm = dir.path().join("call_policy.wasm");
    std::fs::write(&wasm, CALL_POLICY)?;
    let router_config = format!(
        "[sip]\nrouter = \"router\"\n[plugins.router]\npath = \"{}\"\n\
         [plugins.router.config]\nblocked = [\"666\"]\nrelay = {{ \"9\" = \"127.0.0.1:5070\" }}\n",
        wasm.display()
    );

    // In process: the call as the server's core task makes it (inline, no hop).
    let text =
        format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n{router_config}");
    let plugins = load_plugins(&text, "127.0.0.1:5060".parse()?).await?;
    let slot = plugins.router().context("the router plugin")?;
    let router =
        sipwasm::plugin::sip::SipRouter::new(slot, plugins.nonce_key(), &["MD5".to_string()]);
    let register = "REGISTER sip:localhost SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK776asdhds;rport=40000;received=127.0.0.1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=1928301774\r\nTo: <sip:alice@localhost>\r\n\
        Call-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 REGISTER\r\n\
        Contact: <sip:alice@127.0.0.1:40000>;expires=3600\r\nUser-Agent: bench\r\nContent-Length: 0\r\n\r\n";
    let request = match sipwasm::sip::parse::parse(register.as_bytes())? {
        sipwasm::sip::message::Message::Request(r) => r,
        _ => bail!("not a request"),
    };
    let source = Source {
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse()?,
        remote: "127.0.0.1:40000".parse()?,
        flow: None,
    };
    for _ in 0..500 {
        anyhow::ensure!(router.call(&source, &request, &[]).await == RouteDecision::Continue);
    }
    let mut call = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let d = router.call(&source, &request, &[]).await;
        call.push(t.elapsed());
        anyhow::ensure!(d == RouteDecision::Continue, "unexpected decision {d:?}");
    }
    // The same with the core idle between requests (as with one client): caches and
    // branch predictors are colder.
    let mut idle = Vec::with_capacity(iterations / 10);
    for _ in 0..iterations / 10 {
        tokio::time::sleep(Duration::from_micros(100)).await;
        let t = Instant::now();
        let d = router.call(&source, &request, &[]).await;
        idle.push(t.elapsed());
        anyhow::ensure!(d == RouteDecision::Continue, "unexpected decision {d:?}");
    }
    let (idle50, idle99) = median_p99(&mut idle);

    // The SIP core with and without the router, one REGISTER at a time with the core
    // idle in between (what one client sees, without the network).
    let core_path = async |hook: Option<sipwasm::plugin::sip::SipRouter>| {
        use sipwasm::core::*;
        let (mut core, udp) = bench_core()?;
        core.set_routing(hook.is_some());
        let mut samples = Vec::new();
        for i in 0..2_000u32 {
            let text = format!(
                "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:20000;branch=z9hG4bKi{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:one@localhost>;tag=t1\r\nTo: <sip:one@localhost>\r\n\
                 Call-ID: idle-one\r\nCSeq: {c} REGISTER\r\nContact: <sip:one@127.0.0.1:20000>;expires=3600\r\n\
                 User-Agent: bench\r\nContent-Length: 0\r\n\r\n",
                c = i + 1
            );
            tokio::time::sleep(Duration::from_micros(100)).await;
            let t = Instant::now();
            let message = sipwasm::sip::parse(text.as_bytes())?;
            let source = Source {
                transport: Transport::Udp,
                local: udp,
                remote: "127.0.0.1:20000".parse()?,
                flow: None,
            };
            core.handle(
                std::time::Instant::now(),
                Input::Message(Box::new(Incoming { source, message })),
            );
            // As the driver asks the router: in place. A call that meets an epoch
            // tick is left unfinished (the server finishes it on a task); its sample
            // is left out below.
            if let (Some(router), Some(q)) = (&hook, core.route_query()) {
                let id = q.id;
                match router.decide_in_place(q.source, q.request, &[]) {
                    Ok(d) => core.route(std::time::Instant::now(), id, d),
                    Err(_) => core.route_later(std::time::Instant::now(), id),
                }
            }
            let mut answered = false;
            while let Some(t) = core.poll_transmit() {
                answered |= t.payload.starts_with(b"SIP/2.0 200");
            }
            while core.poll_event().is_some() {}
            let took = t.elapsed();
            if answered {
                samples.push(took);
            }
        }
        anyhow::ensure!(
            samples.len() > 1_900,
            "only {} of 2000 answered",
            samples.len()
        );
        anyhow::Ok(median_p99(&mut samples))
    };
    let (bare50, bare99) = core_path(None).await?;
    let (with50, with99) = core_path(Some(router.clone())).await?;
    let (call50, call99) = median_p99(&mut call);
    println!("## sip-router plugin cost (call-policy, Rust guest, reused instance)\n");
    println!("| what | calls | median µs | p99 µs | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| on-sip-request (convert, call, check), in process | {iterations} | {call50:.1} | {call99:.1} | ≤ 10 µs median |"
    );
    println!(
        "| the same, idle 100 µs between calls | {} | {idle50:.1} | {idle99:.1} | ≤ 10 µs median |",
        iterations / 10
    );
    println!(
        "| REGISTER through the SIP core, idle between, no router | 2000 | {bare50:.1} | {bare99:.1} | |"
    );
    println!(
        "| REGISTER through the SIP core, idle between, call-policy | 2000 | {with50:.1} | {with99:.1} | added {:.1} µs median, ≤ 10 |",
        with50 - bare50
    );

    // End to end, same run: one client in a closed loop (the latency a request sees)
    // and 50 (the rate), with and without the router.
    let mut rows = Vec::new();
    for (name, extra) in [
        ("without a router", ""),
        ("with call-policy", router_config.as_str()),
    ] {
        let (t, udp) = start_sipwasm_with(bin, "reuse", true, extra, None).await?;
        let target = sipload::SipTarget {
            ws: t.addr,
            udp,
            pid: Some(t.child.id()),
        };
        let _ = sipload::register_udp(target, 50, 1).await?;
        let one = sipload::register_udp(target, 1, seconds).await?;
        let many = sipload::register_udp(target, 50, seconds).await?;
        rows.push((name, one, many));
    }
    println!();
    println!(
        "| REGISTER over UDP, {seconds} s each | 1 client /s | p50 µs | p99 µs | 50 clients /s | p50 µs | p99 µs | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, one, many) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            one.rate,
            one.p50,
            one.p99,
            many.rate,
            many.p50,
            many.p99,
            one.errors + many.errors
        );
    }
    let (_, one0, many0) = rows[0];
    let (_, one1, many1) = rows[1];
    println!(
        "\nThe router adds {:+.1} µs to the median request of one client; with 50 clients \
         it runs at {:.2}x the rate without it.\n",
        one1.p50 - one0.p50,
        many1.rate / many0.rate
    );
    Ok(())
}

// ---------------------------------------------------------------- core alone

/// A SIP core with one UDP listener on 127.0.0.1:5060 and the domain `localhost`.
fn bench_core() -> anyhow::Result<(sipwasm::core::Core, SocketAddr)> {
    use sipwasm::core::*;
    let udp: SocketAddr = "127.0.0.1:5060".parse()?;
    let core = Core::new(CoreConfig {
        myself: Arc::new(Myself::new(&["localhost".to_string()], &[udp])),
        listeners: vec![SipListener {
            transport: Transport::Udp,
            addr: udp,
        }],
        server_header: "bench".into(),
        secret: [1; 32],
        timers: transaction::TimerConfig::default(),
        registrar: registrar::RegistrarConfig::default(),
        relay: false,
        trusted: sipwasm::core::peers::TrustedPeers::default(),
        limits: sipwasm::core::CoreLimits::default(),
    });
    Ok((core, udp))
}

/// Times each of `sipwasm::core::worst::cases()` through a fresh core, `rounds` times.
fn worst(rounds: usize) -> anyhow::Result<()> {
    use sipwasm::core::worst;
    println!("## The worst message of each shape (64 KB, one datagram), through the SIP core\n");
    println!("| case | answer | median ms | max ms | target |");
    println!("|---|---|---|---|---|");
    for case in worst::cases() {
        let mut took = Vec::with_capacity(rounds);
        let mut answer = None;
        for _ in 0..rounds.max(1) {
            let (mut core, udp) = bench_core()?;
            let now = std::time::Instant::now();
            let input = worst::prepare(&mut core, &case, udp, now).map_err(anyhow::Error::msg)?;
            let t = Instant::now();
            core.handle(now, input);
            let (status, _) = worst::outcome(&mut core, udp);
            took.push(t.elapsed());
            answer = status;
        }
        took.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {:.3} | {:.3} | < 5 ms |",
            case.name,
            answer.map_or("forwarded".to_string(), |s| s.to_string()),
            ms(took[took.len() / 2]),
            ms(took[took.len() - 1])
        );
    }
    Ok(())
}

fn core_only(iterations: u64) -> anyhow::Result<()> {
    use sipwasm::core::*;
    let (mut core, udp) = bench_core()?;
    let users = 1000u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let (mut parsing, mut handling) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iterations {
        let u = i % users;
        let text = format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKc{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{u}@localhost>;tag=t{u}\r\nTo: <sip:u{u}@localhost>\r\n\
             Call-ID: core-{u}\r\nCSeq: {c} REGISTER\r\nContact: <sip:u{u}@127.0.0.1:{p}>;expires=3600\r\n\
             User-Agent: bench\r\nContent-Length: 0\r\n\r\n",
            p = 20000 + u,
            c = i / users + 1
        );
        let t0 = Instant::now();
        let message = sipwasm::sip::parse(text.as_bytes())?;
        let source = Source {
            transport: Transport::Udp,
            local: udp,
            remote: SocketAddr::from(([127, 0, 0, 1], (20000 + u) as u16)),
            flow: None,
        };
        let now = std::time::Instant::now();
        core.handle(now, Input::Message(Box::new(Incoming { source, message })));
        while let Some(t) = core.poll_transmit() {
            sent += t.payload.len() as u64;
        }
        while core.poll_event().is_some() {}
        let t2 = Instant::now();
        parsing += now - t0;
        handling += t2 - now;
        if i % 1000 == 0 {
            core.handle_timeout(now);
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!(
        "## SIP core alone (parse + registrar + response, {iterations} REGISTERs, {users} users)\n"
    );
    println!(
        "{per:.2} µs per REGISTER ({:.0} per second on one core), {sent} bytes out: \
         parsing {:.2} µs, the core {:.2} µs (the rest builds the request text)\n",
        1e6 / per,
        parsing.as_secs_f64() * 1e6 / iterations as f64,
        handling.as_secs_f64() * 1e6 / iterations as f64,
    );
    Ok(())
}
