//! Redis (Debian's `redis-server` 7.0) as the shared store of a cluster test: on a
//! free loopback port, persistence off, stopped by its own pid when dropped. It can be
//! stopped, restarted empty on the same port, and paused (`SIGSTOP`) as a hung store.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::free_port;

const BIN: &str = "/usr/bin/redis-server";
const CLI: &str = "/usr/bin/redis-cli";

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    /// Arguments besides the standard ones (cluster mode, replication, sentinel).
    extra: Vec<String>,
    /// A directory of its own (a cluster node's or a Sentinel's config file).
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(|_, _| Vec::new())
    }

    /// [`Redis::start`] with more arguments, made from its port and its directory.
    pub fn start_with(extra: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: run ./tests/run-all.sh (it installs Debian's redis-server)"
        );
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(addr.port(), dir.path());
        let mut me = Self {
            child: None,
            addr,
            logs: Arc::default(),
            extra,
            dir,
        };
        me.spawn();
        me
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            // A Sentinel's config file comes first.
            .args(self.extra.iter().take_while(|a| !a.starts_with("--")))
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(self.extra.iter().skip_while(|a| !a.starts_with("--")))
            .args([
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                "",
            ])
            .arg("--port")
            .arg(self.addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {BIN}: {e}"));
        // redis-server logs to stdout with `--logfile ""`.
        self.logs = crate::capture_lines(child.stdout.take().expect("piped"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pings() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 20 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// What it logged (since it last started).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Stops it (SIGKILL): the port refuses connections until [`Redis::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Pauses it (`SIGSTOP`): connections are accepted by the kernel but nothing
    /// answers, as a hung store.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Resumes it after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid}");
    }

    /// Runs one command with `redis-cli` (`--raw` output, one value a line).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(CLI)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "--raw",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{CLI}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The fields of the AoR's bindings hash other than its version (their store keys:
    /// Contact, and `#reg-id`).
    pub fn binding_keys(&self, aor: &str) -> Vec<String> {
        self.cli(&["HKEYS", &format!("sw:{{{aor}}}:b")])
            .lines()
            .filter(|k| !k.is_empty() && *k != "#v")
            .map(str::to_string)
            .collect()
    }

    /// The binding records of the AoR (JSON), by store key.
    pub fn bindings(&self, aor: &str) -> Vec<(String, serde_json::Value)> {
        self.binding_keys(aor)
            .into_iter()
            .map(|k| {
                let v = self.cli(&["HGET", &format!("sw:{{{aor}}}:b"), &k]);
                (k, serde_json::from_str(v.trim()).unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas), made with `redis-cli --cluster
/// create`; ready once every node says `cluster_state:ok`.
pub struct RedisCluster {
    /// Its nodes.
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts it.
    pub fn start() -> Self {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                Redis::start_with(|port, _| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(String::from)
                    .to_vec()
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let out = Command::new(CLI)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("{CLI} --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    /// The nodes' URLs, as `cluster.redis` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// The fields of the AoR's bindings hash (on whichever node holds its slot).
    pub fn binding_keys(&self, aor: &str) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                let key = format!("sw:{{{aor}}}:b");
                // A node that does not hold the slot answers MOVED (not a list).
                let out = n.cli(&["HKEYS", &key]);
                if out.starts_with("MOVED") {
                    Vec::new()
                } else {
                    out.lines()
                        .filter(|k| !k.is_empty() && *k != "#v")
                        .map(str::to_string)
                        .collect()
                }
            })
            .collect()
    }
}

/// A master, its replica and one Sentinel watching them as `mymaster` (quorum 1, down
/// after 1 s): killing the master promotes the replica within seconds.
pub struct RedisSentinel {
    /// The master at start.
    pub master: Redis,
    /// Its replica.
    pub replica: Redis,
    /// The Sentinel.
    pub sentinel: Redis,
}

impl RedisSentinel {
    /// Starts them; ready once the Sentinel knows the replica.
    pub fn start() -> Self {
        let master = Redis::start();
        let m = master.addr.port();
        let replica =
            Redis::start_with(|_, _| vec!["--replicaof".into(), format!("127.0.0.1 {m}")]);
        let sentinel = Redis::start_with(|port, dir| {
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {m} 1\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n"
                ),
            )
            .unwrap();
            vec![conf.display().to_string(), "--sentinel".into()]
        });
        let me = Self {
            master,
            replica,
            sentinel,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me
            .sentinel
            .cli(&["SENTINEL", "REPLICAS", "mymaster"])
            .contains(&me.replica.addr.port().to_string())
        {
            assert!(
                Instant::now() < deadline,
                "the Sentinel did not find the replica within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// The Sentinel's URL, as `cluster.redis` gives it.
    pub fn url(&self) -> String {
        self.sentinel.url()
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> u16 {
        self.sentinel
            .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}
