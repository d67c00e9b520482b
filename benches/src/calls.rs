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
        .arg("-trace_screen")
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
    })
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
