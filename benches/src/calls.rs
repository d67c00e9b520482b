//! Calls through the proxy: a sipp phone calls another one, both over UDP and
//! registered with the server under test (INVITE, 100, 180, 200, ACK, 200 ms of call,
//! BYE, 200: seven messages into the proxy and seven out per call), at a fixed rate.
//! Both servers keep up at the rates measured, so the figure that tells them apart is
//! the server's CPU time per call; calls that did not complete are counted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::process::{process_tree, start_kamailio_sip, start_sipwasm};
use crate::sipload::{Cpu, Ticks};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    /// Calls that completed (200 to the BYE).
    pub(crate) ok: u64,
    /// Calls that failed or timed out.
    pub(crate) failed: u64,
    /// Server CPU time per completed call.
    pub(crate) cpu: Cpu,
    /// INVITE to 200 as the caller saw it, ms: median and 99th percentile.
    pub(crate) setup_ms: (f64, f64),
}

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sipp")
}

fn sipp() -> anyhow::Result<PathBuf> {
    ["/usr/bin/sipp", "/usr/local/bin/sipp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("sipp is not installed (apt-get install sip-tester; benches/run.sh does)")
}

/// One sipp run against `server`; returns its exit status and its screen dump.
async fn run_sipp(
    server: SocketAddr,
    scenario: &str,
    args: &[String],
    wait: Duration,
    dir: &Path,
) -> anyhow::Result<(bool, String)> {
    let screen = dir.join(format!("{scenario}.screen"));
    let mut child = Command::new(sipp()?)
        .arg(server.to_string())
        .arg("-sf")
        .arg(scenarios().join(scenario))
        // Big socket buffers: sipp's default (64 KiB) drops datagrams in bursts at
        // these rates, which would count as the server's failures.
        .args([
            "-i",
            "127.0.0.1",
            "-t",
            "u1",
            "-nostdin",
            "-buff_size",
            "4194304",
        ])
        .args(["-trace_screen", "-trace_rtt", "-rtt_freq", "1"])
        .arg("-screen_file")
        .arg(&screen)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start sipp")?;
    let status = match tokio::time::timeout(wait, child.wait()).await {
        Ok(s) => s?,
        Err(_) => {
            let _ = child.kill().await;
            bail!("sipp {scenario} did not finish within {} s", wait.as_secs());
        }
    };
    Ok((
        status.success(),
        std::fs::read_to_string(&screen).unwrap_or_default(),
    ))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The cumulative count of a row of sipp's statistics screen ("Successful call").
fn screen_count(screen: &str, row: &str) -> u64 {
    screen
        .lines()
        .rfind(|l| l.trim_start().starts_with(row))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `rate` calls per second for `seconds` through the server at `udp`, whose processes
/// are `pids`.
pub(crate) async fn run(
    udp: SocketAddr,
    pids: &[u32],
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let calls = u64::from(rate) * seconds;
    let port = crate::process::free_port().to_string();
    // The callee registers, then answers every call.
    let (registered, _) = run_sipp(
        udp,
        "register.xml",
        &strings(&[
            "-m", "1", "-p", &port, "-s", "callee", "-key", "expires", "600",
        ]),
        Duration::from_secs(10),
        dir.path(),
    )
    .await?;
    if !registered {
        bail!("the callee could not register");
    }
    let callee = {
        let (udp, dir, port, n) = (udp, dir.path().to_owned(), port.clone(), calls.to_string());
        tokio::spawn(async move {
            run_sipp(
                udp,
                "uas_answer.xml",
                &strings(&["-m", &n, "-p", &port, "-s", "callee"]),
                Duration::from_secs(seconds + 60),
                &dir,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Ticks::of_all(pids);
    let (_, screen) = run_sipp(
        udp,
        "uac_call.xml",
        &strings(&[
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            &(rate * 2).to_string(),
            "-s",
            "callee",
        ]),
        Duration::from_secs(seconds + 60),
        dir.path(),
    )
    .await?;
    let after = Ticks::of_all(pids);
    let setup_ms = setup_times(dir.path());
    let ok = screen_count(&screen, "Successful call");
    let failed = screen_count(&screen, "Failed call");
    // The callee ends once it has answered as many calls; when some failed it waits
    // for calls that never come: stop it.
    callee.abort();
    if ok == 0 {
        bail!("no call completed ({failed} failed)");
    }
    Ok(Outcome {
        ok,
        failed,
        cpu: after.per(before, ok as usize),
        setup_ms,
    })
}

/// The caller's INVITE → 200 times (sipp's `-trace_rtt` file, `uac_call_<pid>_rtt.csv`:
/// `date_ms;response_time_ms;rtd_no` per call): median and 99th percentile, ms.
fn setup_times(dir: &Path) -> (f64, f64) {
    let mut times: Vec<f64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("uac_call_") && name.ends_with("_rtt.csv")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    if times.is_empty() {
        return (0.0, 0.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

pub(crate) async fn calls(
    bin: &Path,
    kamailio: Option<&Path>,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let ours = {
        let (t, udp) = start_sipwasm(bin, "reuse", true).await?;
        run(udp, &process_tree(t.child.id()), rate, seconds).await?
    };
    let theirs = match kamailio {
        Some(cfg) => {
            let (t, udp) = start_kamailio_sip(cfg, None).await?;
            Some(run(udp, &process_tree(t.child.id()), rate, seconds).await?)
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

// ---------------------------------------------------------------- media relay

/// A userspace rtpengine on loopback for the media bench, killed on drop.
struct Rtpengine {
    child: tokio::process::Child,
    ng: SocketAddr,
}

impl Rtpengine {
    async fn start() -> anyhow::Result<Self> {
        let bin = ["/usr/bin/rtpengine", "/usr/local/bin/rtpengine"]
            .iter()
            .find(|p| Path::new(p).exists())
            .context("rtpengine is not installed (apt-get install rtpengine-daemon; benches/run.sh does)")?;
        let ng = SocketAddr::from(([127, 0, 0, 1], crate::process::free_port()));
        let child = Command::new(bin)
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=3",
                "--table=-1",
                "--interface=127.0.0.1",
                "--delete-delay=0",
                "--port-min=40000",
                "--port-max=49999",
            ])
            .arg(format!("--listen-ng={ng}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start rtpengine")?;
        let me = Self { child, ng };
        // Up when it answers a ping.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        for i in 0..100 {
            let ping = sipwasm::media::ng::Command::Ping.datagram(&format!("bench{i}"));
            sock.send_to(&ping, ng).await?;
            let mut buf = [0u8; 512];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await
                && buf[..n].ends_with(b"d6:result4:ponge")
            {
                return Ok(me);
            }
        }
        bail!("rtpengine did not answer a ping within 10 s")
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Calls through the proxy with their media relayed by rtpengine (every call:
/// `media.mode = "always"`), beside the same calls without it and, with `kamailio`,
/// beside Kamailio driving the same rtpengine with its rtpengine module.
pub(crate) async fn media(
    bin: &Path,
    kamailio: Option<&Path>,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let engine = Rtpengine::start().await?;
    let with_engine = |pids: Vec<u32>| {
        let mut all = pids;
        all.push(engine.pid());
        all
    };
    let direct = {
        let (t, udp) = start_sipwasm(bin, "reuse", true).await?;
        run(udp, &process_tree(t.child.id()), rate, seconds).await?
    };
    let relayed = {
        let admin = SocketAddr::from(([127, 0, 0, 1], crate::process::free_port()));
        let extra = format!(
            "[media]\nengines = [\"udp:{}\"]\nmode = \"always\"\n[admin]\nlisten = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n",
            engine.ng
        );
        let (t, udp) = crate::process::start_sipwasm_with(bin, "reuse", true, &extra, None).await?;
        let server = process_tree(t.child.id());
        let both = with_engine(server.clone());
        let before = Ticks::of_all(&server);
        let o = run(udp, &both, rate, seconds).await?;
        let server_cpu = Ticks::of_all(&server).per(before, o.ok as usize);
        let ng = ng_round_trips(admin).await.unwrap_or_default();
        (o, server_cpu, ng)
    };
    let theirs = match kamailio {
        Some(cfg) => {
            let define = format!("RTPENGINE=\"udp:{}\"", engine.ng);
            let (t, udp) = crate::process::start_kamailio_sip_with(cfg, None, &[define]).await?;
            let server = process_tree(t.child.id());
            let before = Ticks::of_all(&server);
            let o = run(udp, &with_engine(server.clone()), rate, seconds).await?;
            let server_cpu = Ticks::of_all(&server).per(before, o.ok as usize);
            Some((o, server_cpu))
        }
        None => None,
    };
    println!(
        "## Calls with their media through rtpengine ({rate} calls/s for {seconds} s, sipp to sipp over UDP; every call relayed)\n"
    );
    println!(
        "| server | calls completed | failed | server CPU µs per call | server + rtpengine CPU µs per call | INVITE → 200 p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| sipwasm, no relay | {} | {} | {} | - | {:.2} | {:.2} |",
        direct.ok, direct.failed, direct.cpu, direct.setup_ms.0, direct.setup_ms.1
    );
    let (o, cpu, ng) = relayed;
    println!(
        "| sipwasm + rtpengine | {} | {} | {cpu} | {} | {:.2} | {:.2} |",
        o.ok, o.failed, o.cpu, o.setup_ms.0, o.setup_ms.1
    );
    if let Some((k, kcpu)) = theirs {
        println!(
            "| kamailio 5.6 + rtpengine module | {} | {} | {kcpu} | {} | {:.2} | {:.2} |",
            k.ok, k.failed, k.cpu, k.setup_ms.0, k.setup_ms.1
        );
        if cpu.total() > 0.0 {
            println!(
                "\nKamailio ÷ sipwasm, server CPU per relayed call: {:.2}x",
                kcpu.total() / cpu.total()
            );
        }
    }
    println!(
        "\nsipp times INVITE → 200 in whole milliseconds. The ng round trips as sipwasm \
         measured them ({} requests, `sipwasm_media_request_seconds`): p50 ≤ {} ms, p99 ≤ {} ms \
         each; a call setup waits for two (offer, answer).",
        ng.0, ng.1, ng.2
    );
    println!();
    Ok(())
}

/// The admin token of the media bench's sipwasm.
const ADMIN_TOKEN: &str = "bench-media-token-0123456789abcdef";

/// The ng round trips sipwasm measured (`sipwasm_media_request_seconds`): how many, and
/// the upper bounds (ms) of the buckets holding the median and the 99th percentile.
async fn ng_round_trips(admin: SocketAddr) -> anyhow::Result<(u64, String, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    let buckets: Vec<(String, u64)> = text
        .lines()
        .filter(|l| l.starts_with("sipwasm_media_request_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect();
    let total = buckets.last().map_or(0, |(_, n)| *n);
    let bound = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(le, _)| {
                le.parse::<f64>()
                    .map(|s| format!("{}", s * 1000.0))
                    .unwrap_or_else(|_| le.clone())
            })
            .unwrap_or_else(|| "?".into())
    };
    Ok((total, bound(0.5), bound(0.99)))
}
