//! `sipwasm-bench handshakes`: WebSocket handshakes per second through the admission
//! policy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{Target, start_kamailio, start_sipwasm};

pub(crate) fn handshake_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: sip\r\nOrigin: https://app.example.org\r\n\r\n",
        addr.port()
    )
}

/// Connects and completes a handshake; returns the open stream.
pub(crate) async fn open_ws(addr: SocketAddr, request: &[u8]) -> anyhow::Result<TcpStream> {
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

pub(crate) async fn handshake_rate(
    target: &Target,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<(f64, u64)> {
    handshake_rate_with(target, handshake_request(target.addr), seconds, concurrency).await
}

/// [`handshake_rate`] with `request` as every client's handshake.
pub(crate) async fn handshake_rate_with(
    target: &Target,
    request: String,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<(f64, u64)> {
    let request: Arc<[u8]> = request.into_bytes().into();
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

pub(crate) async fn handshakes(
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
    print_rates(
        &format!(
            "WebSocket handshakes per second ({concurrency} clients, {seconds} s, connect + policy + 101 + close)"
        ),
        "server",
        "vs sipwasm",
        &rows,
    );
    Ok(())
}

/// A table of handshake rates, each against the first row's.
pub(crate) fn print_rates(title: &str, what: &str, versus: &str, rows: &[(String, (f64, u64))]) {
    println!("## {title}\n");
    println!("| {what} | handshakes/s | errors | {versus} |");
    println!("|---|---|---|---|");
    let base = rows[0].1.0;
    for (name, (rate, errors)) in rows {
        println!("| {name} | {rate:.0} | {errors} | {:.2}x |", rate / base);
    }
    println!();
}

// ---------------------------------------------------------------- idle memory
