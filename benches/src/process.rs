//! The servers under test: starting sipwasm and Kamailio on free ports, placing them
//! on CPUs, waiting for them to listen, their memory; stopped by their own pid when
//! dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::TcpStream;

/// A server under test.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) child: Child,
    /// Its data directory (removed when it stops).
    pub(crate) dir: tempfile::TempDir,
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
pub(crate) struct Placement {
    pub(crate) server_cores: usize,
    pub(crate) cpus: usize,
}

impl Placement {
    pub(crate) fn new(server_cores: usize) -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism()?.get();
        if server_cores == 0 || server_cores >= cpus {
            bail!("--server-cores must leave the load generator at least one of the {cpus} CPUs");
        }
        Ok(Self { server_cores, cpus })
    }

    pub(crate) fn server_cpus(self) -> String {
        format!("0-{}", self.server_cores - 1)
    }

    pub(crate) fn load_cpus(self) -> String {
        format!("{}-{}", self.server_cores, self.cpus - 1)
    }

    /// `program`, run on the server CPUs when placed.
    pub(crate) fn command(place: Option<Self>, program: impl AsRef<std::ffi::OsStr>) -> Command {
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
    pub(crate) fn pin_load_generator(self) -> anyhow::Result<()> {
        move_self_to(&self.load_cpus())
    }

    /// Lets this process use every CPU again.
    pub(crate) fn unpin_load_generator(self) -> anyhow::Result<()> {
        move_self_to(&format!("0-{}", self.cpus - 1))
    }
}

/// `taskset -a -p -c cpus <this process>`: every thread, and what they start later.
pub(crate) fn move_self_to(cpus: &str) -> anyhow::Result<()> {
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn wait_until_listening(
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
pub(crate) async fn start_sipwasm(
    bin: &Path,
    instances: &str,
    udp: bool,
) -> anyhow::Result<(Target, SocketAddr)> {
    start_sipwasm_with(bin, instances, udp, "", None).await
}

/// [`start_sipwasm`] with `extra` TOML appended to the configuration.
pub(crate) async fn start_sipwasm_with(
    bin: &Path,
    instances: &str,
    udp: bool,
    extra: &str,
    place: Option<Placement>,
) -> anyhow::Result<(Target, SocketAddr)> {
    let (port, udp_port) = (free_port(), free_port());
    let udp_listen = if udp {
        format!("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{udp_port}\"\n")
    } else {
        String::new()
    };
    let body = format!(
        "[[listen]]\ntransport = \"ws\"\naddress = \"127.0.0.1:{port}\"\n\
         plugin = \"seed-policy\"\n{udp_listen}[plugins.seed-policy]\nbuiltin = \"seed-policy\"\n\
         instances = \"{instances}\"\n[plugins.seed-policy.config]\nweb-ports = [{port}]\n{extra}\n"
    );
    let name = format!("sipwasm ({instances} instances)");
    let target = start_sipwasm_config(bin, &name, port, &body, place).await?;
    Ok((target, SocketAddr::from(([127, 0, 0, 1], udp_port))))
}

/// Starts sipwasm with `body` as its configuration after a `[server]` table naming a
/// fresh data directory; it is up once its ws listener on `port` accepts.
pub(crate) async fn start_sipwasm_config(
    bin: &Path,
    name: &str,
    port: u16,
    body: &str,
    place: Option<Placement>,
) -> anyhow::Result<Target> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    start_sipwasm_at(bin, name, addr, body, place).await
}

/// [`start_sipwasm_config`] for a server whose ws listener is `addr` (another loopback
/// address: a node of a cluster).
pub(crate) async fn start_sipwasm_at(
    bin: &Path,
    name: &str,
    addr: SocketAddr,
    body: &str,
    place: Option<Placement>,
) -> anyhow::Result<Target> {
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p sipwasm` first",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let config = format!("[server]\ndata-dir = \"{}\"\n{body}", dir.path().display());
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
    wait_until_listening(addr, &mut child, "sipwasm").await?;
    Ok(Target {
        name: name.into(),
        addr,
        child,
        dir,
    })
}

pub(crate) async fn start_kamailio(cfg: &Path, shm_mb: usize) -> anyhow::Result<Target> {
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
        dir,
    })
}

// ---------------------------------------------------------------- handshakes

/// Proportional set size of a process and its descendants, in KiB (from
/// /proc/PID/smaps_rollup), so forked workers and shared memory are counted once.
pub(crate) fn pss_kib(pid: u32) -> anyhow::Result<u64> {
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
pub(crate) fn process_tree(pid: u32) -> Vec<u32> {
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

pub(crate) async fn start_kamailio_sip(
    cfg: &Path,
    place: Option<Placement>,
) -> anyhow::Result<(Target, SocketAddr)> {
    start_kamailio_sip_with(cfg, place, &[]).await
}

/// [`start_kamailio_sip`] with more `-A NAME=VALUE` preprocessor definitions.
pub(crate) async fn start_kamailio_sip_with(
    cfg: &Path,
    place: Option<Placement>,
    defines: &[String],
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
        .args(defines.iter().flat_map(|d| ["-A", d.as_str()]))
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
            dir,
        },
        SocketAddr::from(([127, 0, 0, 1], udp)),
    ))
}
