//! `sipwasm-bench dns`: MESSAGEs relayed to a next hop named by DNS (SRV and A records
//! on Debian's dnsmasq, started here on a free port) against the same next hop by its
//! literal address, in alternating rounds on one server: what resolution costs once its
//! answer is cached (one lookup per TTL; each request still draws its SRV order).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;

use crate::process::{free_port, start_sipwasm_config};
use crate::sipload::{self, SipTarget, Task, ok_for, run_for, run_id, udp_final};

/// Debian's dnsmasq, stopped by its pid when dropped.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(port: u16, sink: SocketAddr) -> anyhow::Result<Dnsmasq> {
    let bin = "/usr/sbin/dnsmasq";
    if !Path::new(bin).exists() {
        bail!("{bin} not found: apt-get install -y dnsmasq-base");
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let child = Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--pid-file=",
            "--local=/bench.test/",
            "--local-ttl=300",
            "--auth-ttl=300",
        ])
        .arg(format!("--port={port}"))
        .arg(format!(
            "--srv-host=_sip._udp.bench.test,sink.bench.test,{},10,10",
            sink.port()
        ))
        .arg("--host-record=sink.bench.test,127.0.0.1")
        .arg(format!("--user={user}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start dnsmasq")?;
    Ok(Dnsmasq(child))
}

/// A next hop answering every MESSAGE with 200 until the bench ends.
async fn sink() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("MESSAGE ") {
                let _ = sock.send_to(ok_for(&text).as_bytes(), from).await;
            }
        }
    });
    Ok((addr, task))
}

/// `clients` UDP sockets sending MESSAGEs to `uri` through the server for `seconds`.
async fn relay(
    t: SipTarget,
    uri: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<sipload::Result> {
    let stop = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let run = run_id();
    let mut tasks: Vec<Task> = Vec::new();
    for i in 0..clients {
        let (stop, gate, run, uri) = (stop.clone(), gate.clone(), run.clone(), uri.to_string());
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            let host = sock.local_addr()?.to_string();
            let mut buf = vec![0u8; 65536];
            gate.wait().await;
            let (mut lat, mut errors, mut n) = (Vec::with_capacity(100_000), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!(
                    "MESSAGE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bK{run}{i}x{n};rport\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:c{i}@localhost>;tag=f{i}\r\nTo: <{uri}>\r\n\
                     Call-ID: dnsbench-{run}-{i}-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
                     Content-Length: 2\r\n\r\nhi"
                );
                let sent = Instant::now();
                let marker = format!("dnsbench-{run}-{i}-{n}");
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

pub(crate) async fn dns(
    bin: &Path,
    seconds: u64,
    rounds: usize,
    clients: usize,
) -> anyhow::Result<()> {
    let (sink_addr, sink_task) = sink().await?;
    let dns_port = free_port();
    let _dnsmasq = dnsmasq(dns_port, sink_addr)?;
    // A TCP listener to know it is up by (a ws one would need a plugin). Relayed
    // MESSAGEs over UDP keep their server transaction for Timer J (64×T1) and their
    // client one for Timer K (T4): at tens of thousands a second, with the default
    // 500 ms and 5 s, more than limits.max-transactions; on loopback, T1 = 20 ms and
    // T4 = 200 ms (both next hops alike).
    let (ws, udp) = (free_port(), free_port());
    let body = format!(
        "[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:{ws}\"\n\
         [[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{udp}\"\n\
         [dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\
         [sip]\nrelay = true\n\
         t1 = \"20ms\"\nt4 = \"200ms\"\nfailover-after = \"1s\"\n"
    );
    let server = start_sipwasm_config(bin, "sipwasm", ws, &body, None).await?;
    let t = SipTarget {
        ws: server.addr,
        udp: SocketAddr::from(([127, 0, 0, 1], udp)),
        pid: Some(server.child.id()),
        with: [0; 4],
    };
    let named = "sip:sink@bench.test".to_string();
    let literal = format!("sip:sink@{sink_addr}");
    // Warm up both (the first named request does the lookup).
    relay(t, &named, 1, 1).await?;
    relay(t, &literal, 1, 1).await?;
    let mut results: Vec<(&str, Vec<sipload::Result>)> = vec![
        ("literal address", Vec::new()),
        ("DNS name (SRV, cached)", Vec::new()),
    ];
    for _ in 0..rounds {
        for (i, uri) in [&literal, &named].into_iter().enumerate() {
            results[i].1.push(relay(t, uri, clients, seconds).await?);
        }
    }
    println!(
        "## MESSAGE relay to a next hop: literal address vs DNS name ({clients} UDP clients, {rounds} alternating rounds of {seconds} s, median)\n"
    );
    println!("| next hop | MESSAGE/s | p50 | p99 | errors | server CPU per MESSAGE |");
    println!("|---|---|---|---|---|---|");
    let mut cpu = Vec::new();
    for (name, runs) in &mut results {
        runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let r = runs[runs.len() / 2];
        let c = r.server_cpu.map(|c| c.total()).unwrap_or(f64::NAN);
        cpu.push(c);
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {} | {c:.1} µs |",
            r.rate, r.p50, r.p99, r.errors
        );
    }
    println!(
        "\nDNS name / literal, server CPU per MESSAGE: {:.3}",
        cpu[1] / cpu[0]
    );
    sink_task.abort();
    Ok(())
}
