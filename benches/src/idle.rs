//! `sipwasm-bench idle`: memory per idle WebSocket connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::handshakes::{handshake_request, open_ws};
use crate::process::{Target, pss_kib, start_kamailio, start_sipwasm};

pub(crate) async fn idle_cost(
    target: &Target,
    connections: usize,
) -> anyhow::Result<(f64, u64, u64)> {
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

pub(crate) async fn idle(
    bin: &Path,
    kamailio: Option<&Path>,
    connections: usize,
) -> anyhow::Result<()> {
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
