//! `sipwasm-bench sip`: the SIP load scenarios (REGISTER over WS and UDP, MESSAGE WS
//! to WS) against sipwasm and Kamailio, rounds alternating, the median run of each.

use std::net::SocketAddr;
use std::path::Path;

use crate::process::{Placement, start_kamailio_sip, start_sipwasm_with};
use crate::sipload;

pub(crate) const SCENARIOS: [(&str, &str); 3] = [
    ("register-ws", "REGISTER over WS (50 connections)"),
    ("message-ws", "MESSAGE WS to WS (25 pairs)"),
    ("register-udp", "REGISTER over UDP (50 sockets)"),
];

pub(crate) async fn sip_scenarios(
    ws: SocketAddr,
    udp: SocketAddr,
    seconds: u64,
    only: Option<&str>,
    pid: u32,
) -> anyhow::Result<Vec<Option<sipload::Result>>> {
    sip_scenarios_with(ws, udp, seconds, only, None, Some(pid)).await
}

pub(crate) async fn sip_scenarios_with(
    ws: SocketAddr,
    udp: SocketAddr,
    seconds: u64,
    only: Option<&str>,
    clients: Option<usize>,
    pid: Option<u32>,
) -> anyhow::Result<Vec<Option<sipload::Result>>> {
    let n = clients.unwrap_or(50).max(1);
    let t = sipload::SipTarget {
        ws,
        udp,
        pid,
        with: [0; 4],
    };
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
pub(crate) fn median_runs(runs: &[Vec<Option<sipload::Result>>]) -> Vec<Option<sipload::Result>> {
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

pub(crate) async fn sip(
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
