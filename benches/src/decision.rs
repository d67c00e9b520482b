//! `sipwasm-bench decision`: the seed-policy plugin's decision time in process, on
//! reused and fresh instances.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

pub(crate) fn sample_request(port: u16) -> sipwasm::plugin::HttpRequest {
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
pub(crate) async fn load_plugins(
    text: &str,
    local: SocketAddr,
) -> anyhow::Result<sipwasm::plugin::Plugins> {
    let config = sipwasm::config::Config::parse(text, "bench", Path::new("."))?;
    let myself = Arc::new(sipwasm::core::Myself::new(
        &["localhost".to_string()],
        &[local],
    ));
    let metrics = Arc::new(sipwasm::metrics::Metrics::default());
    tokio::task::spawn_blocking(move || {
        sipwasm::plugin::Plugins::load(
            &config,
            myself,
            metrics,
            None,
            &sipwasm::keys::KeyRing::default(),
            std::sync::Arc::new(sipwasm::users::UserStore::empty()),
        )
    })
    .await?
}

pub(crate) async fn decision(iterations: usize) -> anyhow::Result<()> {
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
