//! `sipwasm-bench cluster`: three nodes sharing one location service on Redis
//! (Debian's redis-server, started here on a free port) beside one node alone, in
//! alternating rounds with the same load tool: REGISTER over WebSocket spread over the
//! nodes, MESSAGE from WebSocket clients on one node to WebSocket clients on another,
//! and Redis's memory per binding. Server CPU is that of every node and Redis.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::UdpSocket;

use crate::process::{Target, free_port, start_sipwasm_at};
use crate::sipload::{self, SipTarget, register_text};

/// Debian's redis-server, stopped by its pid when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    async fn start() -> anyhow::Result<Self> {
        let bin = "/usr/bin/redis-server";
        if !Path::new(bin).exists() {
            bail!("{bin} not found: apt-get install -y redis-server");
        }
        let port = free_port();
        let child = Command::new(bin)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--logfile", "", "--port"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server")?;
        let me = Self { child, port };
        for _ in 0..200 {
            if me.cli(&["PING"]).is_ok_and(|r| r.trim() == "PONG") {
                return Ok(me);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not answer within 10 s")
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("/usr/bin/redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .context("redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `used_memory` of `INFO memory`, bytes.
    fn used_memory(&self) -> anyhow::Result<u64> {
        let info = self.cli(&["INFO", "memory"])?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no used_memory in INFO memory")
    }
}

/// The listeners of one server on `ip`: ws (seed-policy), udp and tcp on one port.
fn body(ip: [u8; 4], ws: u16, sip: u16, cluster: &str) -> String {
    let ip = std::net::Ipv4Addr::from(ip);
    format!(
        "domains = [\"localhost\"]\n\
         [[listen]]\ntransport = \"ws\"\naddress = \"{ip}:{ws}\"\nplugin = \"seed-policy\"\n\
         [[listen]]\ntransport = \"udp\"\naddress = \"{ip}:{sip}\"\n\
         [[listen]]\ntransport = \"tcp\"\naddress = \"{ip}:{sip}\"\n\
         [plugins.seed-policy]\nbuiltin = \"seed-policy\"\n\
         [plugins.seed-policy.config]\nweb-ports = [{ws}]\n{cluster}"
    )
}

struct Server {
    target: Target,
    ws: SocketAddr,
    udp: SocketAddr,
}

async fn start(bin: &Path, ip: [u8; 4], cluster: Option<(&str, u16)>) -> anyhow::Result<Server> {
    let (ws, sip) = (free_port(), free_port());
    let ipv4 = std::net::Ipv4Addr::from(ip);
    let cluster = match cluster {
        Some((id, redis)) => format!(
            "[cluster]\nnode-id = \"{id}\"\nredis = \"redis://127.0.0.1:{redis}\"\n\
             address = \"{ipv4}:{sip}\"\npeers = [\"127.0.0.0/8\"]\n"
        ),
        None => String::new(),
    };
    let ws_addr = SocketAddr::from((ip, ws));
    let name = cluster_name(cluster.is_empty());
    let target = start_sipwasm_at(bin, name, ws_addr, &body(ip, ws, sip, &cluster), None).await?;
    Ok(Server {
        target,
        ws: ws_addr,
        udp: SocketAddr::from((ip, sip)),
    })
}

fn cluster_name(alone: bool) -> &'static str {
    if alone { "one node" } else { "cluster node" }
}

/// REGISTERs of `n` distinct AoRs over UDP (one socket, one at a time).
async fn fill(udp: SocketAddr, n: usize) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let host = sock.local_addr()?.to_string();
    let mut buf = vec![0u8; 65536];
    for i in 0..n {
        let user = format!("mem{i}");
        let text = register_text("UDP", &host, &user, &format!("mem-{i}"), 1);
        let marker = format!("mem-{i}");
        match sipload::udp_final(&sock, udp, &text, &marker, &mut buf).await? {
            Some(200) => {}
            other => bail!("REGISTER {i}: {other:?}"),
        }
    }
    Ok(())
}

fn line(what: &str, r: &sipload::Result) {
    let cpu = r
        .server_cpu
        .map_or_else(|| "-".to_string(), |c| format!("{:.1}", c.total()));
    println!(
        "{what:<44} {:>9.0}/s  p50 {:>6.0} µs  p99 {:>6.0} µs  errors {:>4}  server CPU {:>6} µs",
        r.rate, r.p50, r.p99, r.errors, cpu
    );
}

pub(crate) async fn cluster(
    bin: &Path,
    seconds: u64,
    rounds: usize,
    clients: usize,
    bindings: usize,
) -> anyhow::Result<()> {
    let redis = Redis::start().await?;
    let nodes = [
        start(bin, [127, 0, 0, 2], Some(("a", redis.port))).await?,
        start(bin, [127, 0, 0, 3], Some(("b", redis.port))).await?,
        start(bin, [127, 0, 0, 4], Some(("c", redis.port))).await?,
    ];
    let alone = start(bin, [127, 0, 0, 1], None).await?;
    // Every node's heartbeat in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = |s: &Server| s.target.child.id();
    // Measured: this node, the others and Redis.
    let cluster_target = |s: &Server| {
        let mut with = [0; 4];
        let others = nodes.iter().map(pid).filter(|p| *p != pid(s));
        for (slot, p) in with.iter_mut().zip(others.chain([redis.child.id()])) {
            *slot = p;
        }
        SipTarget {
            ws: s.ws,
            udp: s.udp,
            pid: Some(pid(s)),
            with,
        }
    };
    let alone_target = SipTarget {
        ws: alone.ws,
        udp: alone.udp,
        pid: Some(pid(&alone)),
        with: [0; 4],
    };
    println!(
        "three nodes (127.0.0.2-4) + Redis against one node alone (127.0.0.1), {rounds} \
         alternating rounds of {seconds} s, {clients} clients"
    );
    for round in 1..=rounds {
        println!("round {round}");
        let r = sipload::register_ws(alone_target, clients, seconds).await?;
        line("REGISTER over WS, one node", &r);
        let redis0 = sipload::Ticks::of_all(&[redis.child.id()]);
        let r = register_spread(&nodes, &cluster_target, clients, seconds).await?;
        line("REGISTER over WS, three nodes + Redis", &r);
        redis_share(&r, redis0, redis.child.id(), seconds);
        let r = sipload::message_ws(alone_target, clients / 2, seconds).await?;
        line("MESSAGE WS → WS, one node", &r);
        let redis0 = sipload::Ticks::of_all(&[redis.child.id()]);
        let r =
            sipload::message_ws_to(cluster_target(&nodes[0]), nodes[2].ws, clients / 2, seconds)
                .await?;
        line("MESSAGE WS → WS, node A → node C", &r);
        redis_share(&r, redis0, redis.child.id(), seconds);
    }
    let before = redis.used_memory()?;
    fill(nodes[1].udp, bindings).await?;
    let after = redis.used_memory()?;
    println!(
        "Redis memory: {} bytes for {bindings} more bindings (UDP phones, one AoR each): \
         {:.0} bytes per binding",
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / bindings as f64
    );
    Ok(())
}

/// Prints Redis's part of the server CPU of run `r` (its ticks since `since`, over
/// the transactions the run completed).
fn redis_share(r: &sipload::Result, since: sipload::Ticks, pid: u32, seconds: u64) {
    let n = (r.rate * seconds as f64) as usize;
    let cpu = sipload::Ticks::of_all(&[pid]).per(since, n);
    println!("{:<44} of which Redis {:.1} µs", "", cpu.total());
}

/// The same target, its CPU not measured (another run measures every process).
fn unmeasured(t: SipTarget) -> SipTarget {
    SipTarget { pid: None, ..t }
}

/// REGISTER over WS with the clients spread over the nodes (a third each), CPU of all
/// nodes and Redis.
async fn register_spread(
    nodes: &[Server; 3],
    target: &dyn Fn(&Server) -> SipTarget,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<sipload::Result> {
    let each = (clients / 3).max(1);
    let (a, b, c) = tokio::join!(
        sipload::register_ws_as(target(&nodes[0]), "a", each, seconds),
        sipload::register_ws_as(unmeasured(target(&nodes[1])), "b", each, seconds),
        sipload::register_ws_as(unmeasured(target(&nodes[2])), "c", each, seconds),
    );
    let (mut a, b, c) = (a?, b?, c?);
    // The first run measured every process over the same interval; its rate is its
    // own third: the total is the sum.
    let total = a.rate + b.rate + c.rate;
    let cpu_scale = a.rate / total;
    a.server_cpu = a.server_cpu.map(|c| sipload::Cpu {
        user: c.user * cpu_scale,
        system: c.system * cpu_scale,
    });
    a.rate = total;
    a.errors += b.errors + c.errors;
    Ok(a)
}
