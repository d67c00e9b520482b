//! `sipwasm-bench`: measures sipwasm and, in the same run, Kamailio 5.6 (Debian's
//! `kamailio` + `kamailio-websocket-modules`) with the equivalent policy
//! (`benches/kamailio/ws.cfg`), and prints the figures side by side.
//!
//! ```text
//! sipwasm-bench decision                  plugin decision time, reused and fresh instances
//! sipwasm-bench handshakes [--kamailio]   WebSocket handshakes per second through the policy
//! sipwasm-bench logins                    the same through token-login in Rust, JS, Python
//! sipwasm-bench idle [--kamailio]         memory per idle WebSocket connection
//! sipwasm-bench sip [--kamailio]          SIP load: REGISTER over WS and UDP, MESSAGE WS to WS
//! sipwasm-bench calls [--kamailio]        calls between sipp phones: server CPU per call
//! sipwasm-bench router                    what a sip-router plugin adds to a request
//! sipwasm-bench cluster                   three nodes on Redis beside one node
//! sipwasm-bench core                      the SIP core alone, in process
//! sipwasm-bench attack                    the attack campaign: six attacks, legitimate clients
//! sipwasm-bench all [--kamailio]          all of the above (but the attack campaign)
//! ```
//!
//! Servers and load share this machine's cores; this measures rates, never asserts them.

use std::net::SocketAddr;
use std::path::PathBuf;

mod attack;
mod calls;
mod cluster;
mod decision;
mod dns;
mod handshakes;
mod idle;
mod in_process;
mod logins;
mod process;
mod router;
mod sip;
mod sipload;

/// The same allocator as the server, so in-process figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::decision::decision;
use crate::handshakes::handshakes;
use crate::idle::idle;
use crate::in_process::{core_only, worst};
use crate::logins::logins;
use crate::process::Placement;
use crate::router::router;
use crate::sip::{SCENARIOS, sip, sip_scenarios_with};
use clap::{Parser, Subcommand};

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
    /// WebSocket handshakes per second through token-login (Rust, JavaScript,
    /// Python), each with a valid token, beside seed-policy.
    /// MESSAGE relay to a next hop named by DNS (dnsmasq, SRV) against its literal
    /// address, in alternating rounds on one server.
    Dns {
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// UDP clients, each with one MESSAGE in flight.
        #[arg(long, default_value_t = 25)]
        clients: usize,
    },
    /// Three nodes sharing one location service on Redis beside one node alone:
    /// REGISTER/s, cross-node MESSAGE/s, Redis memory per binding (needs
    /// redis-server: apt-get install redis-server).
    Cluster {
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// WebSocket clients (REGISTER), half as many MESSAGE pairs.
        #[arg(long, default_value_t = 48)]
        clients: usize,
        /// Bindings added to measure Redis's memory per binding.
        #[arg(long, default_value_t = 20_000)]
        bindings: usize,
    },
    Logins {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
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
    /// Calls with their media relayed through rtpengine (every call), beside the same
    /// calls without it and Kamailio's rtpengine module driving the same rtpengine (needs
    /// sipp and rtpengine: apt-get install sip-tester rtpengine-daemon)
    Media {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// New calls per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Measure Kamailio too.
        #[arg(long)]
        kamailio: bool,
        /// Kamailio's configuration with the rtpengine module.
        #[arg(long, default_value = "benches/kamailio/media.cfg")]
        kamailio_media_cfg: PathBuf,
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
                calls::calls(
                    &args.sipwasm,
                    kamailio.then_some(&*kamailio_registrar_cfg),
                    rate,
                    seconds,
                )
                .await
            }
            Cmd::Media {
                seconds,
                rate,
                kamailio,
                kamailio_media_cfg,
            } => {
                calls::media(
                    &args.sipwasm,
                    kamailio.then_some(&*kamailio_media_cfg),
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
            Cmd::Logins {
                seconds,
                concurrency,
            } => logins(&args.sipwasm, seconds, concurrency).await,
            Cmd::Dns {
                seconds,
                rounds,
                clients,
            } => dns::dns(&args.sipwasm, seconds, rounds, clients).await,
            Cmd::Cluster {
                seconds,
                rounds,
                clients,
                bindings,
            } => cluster::cluster(&args.sipwasm, seconds, rounds, clients, bindings).await,
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
                logins(&args.sipwasm, seconds, 32).await?;
                idle(&args.sipwasm, k, connections).await?;
                let reg = kamailio.then(|| PathBuf::from("benches/kamailio/registrar.cfg"));
                sip(&args.sipwasm, reg.as_deref(), seconds, None, None, 1).await?;
                // Then again with each server on a core of its own, when there are two.
                if let Ok(place) = Placement::new(1) {
                    sip(&args.sipwasm, reg.as_deref(), seconds, None, Some(place), 1).await?;
                }
                calls::calls(&args.sipwasm, reg.as_deref(), 1000, seconds).await?;
                let media = kamailio.then(|| PathBuf::from("benches/kamailio/media.cfg"));
                calls::media(&args.sipwasm, media.as_deref(), 600, seconds).await?;
                router(&args.sipwasm, 20_000, seconds).await
            }
        }
    })
}

// ---------------------------------------------------------------- decision time
