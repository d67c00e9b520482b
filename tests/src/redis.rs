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
}

impl Redis {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> Self {
        assert!(
            std::path::Path::new(BIN).exists(),
            "{BIN} is missing: run ./tests/run-all.sh (it installs Debian's redis-server)"
        );
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut me = Self {
            child: None,
            addr,
            logs: Arc::default(),
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
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
