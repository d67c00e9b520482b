//! Runs sipp (Debian `sip-tester`) scenarios from `tests/data/sipp/` against the server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Server;

/// A sipp run in progress.
pub struct Sipp {
    child: Child,
    dir: tempfile::TempDir,
    name: String,
    /// How long to wait for it to finish.
    wait: Duration,
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sipp")
}

/// The sipp binary; a clear panic when it is missing.
fn sipp_bin() -> PathBuf {
    for p in ["/usr/bin/sipp", "/usr/local/bin/sipp"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("sipp is not installed: run ./tests/run-all.sh (it installs Debian's sip-tester)");
}

/// Options of one sipp run.
pub struct SippRun<'a> {
    /// Scenario file in `tests/data/sipp/`.
    pub scenario: &'a str,
    /// `[service]`: the user called or registered.
    pub service: &'a str,
    /// `u1` (UDP) or `t1` (TCP).
    pub transport: &'a str,
    /// Local port (`-p`); 0 lets sipp choose.
    pub port: u16,
    /// `@NAME@` placeholders to fill in the scenario.
    pub fill: &'a [(&'a str, &'a str)],
    /// `-key` values.
    pub keys: &'a [(&'a str, &'a str)],
    /// Many calls instead of one.
    pub load: Option<Load>,
}

/// A run of many calls.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Calls in all (`-m`).
    pub calls: u32,
    /// New calls per second (`-r`); 0 for a callee.
    pub rate: u32,
    /// Calls open at once at most (`-l`); 0 for a callee.
    pub limit: u32,
}

/// How long a run of `load` may take: sipp's own `-timeout`, and the wait for it.
fn run_time(load: Option<Load>) -> Duration {
    match load {
        None => Duration::from_secs(15),
        Some(l) => Duration::from_secs(30 + u64::from(l.calls / l.rate.max(10))),
    }
}

impl Sipp {
    /// Starts sipp against the server's UDP/TCP listener.
    pub fn start(server: &Server, run: SippRun<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut text = std::fs::read_to_string(scenario_dir().join(run.scenario)).unwrap();
        for (k, v) in run.fill {
            text = text.replace(&format!("@{k}@"), v);
        }
        let file = dir.path().join(run.scenario);
        std::fs::write(&file, text).unwrap();
        let mut cmd = Command::new(sipp_bin());
        cmd.arg(server.sip.to_string())
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-s", run.service, "-t", run.transport])
            .args([
                "-nostdin",
                "-timeout",
                &format!("{}s", run_time(run.load).as_secs()),
                "-timeout_error",
                "-trace_err",
                "-error_file",
            ])
            .arg(dir.path().join("errors.log"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match run.load {
            None => {
                cmd.args(["-m", "1"]);
            }
            Some(l) => {
                cmd.args(["-m", &l.calls.to_string()]);
                if l.rate > 0 {
                    cmd.args(["-r", &l.rate.to_string(), "-l", &l.limit.to_string()]);
                }
            }
        }
        if run.port != 0 {
            cmd.args(["-p", &run.port.to_string()]);
        }
        for (k, v) in run.keys {
            cmd.args(["-key", k, v]);
        }
        let child = cmd.spawn().expect("start sipp");
        Self {
            child,
            dir,
            name: format!("{} ({})", run.scenario, run.service),
            wait: run_time(run.load) + Duration::from_secs(15),
        }
    }

    /// Waits for sipp to finish; panics with its error log unless the call succeeded.
    pub async fn success(mut self) {
        let status = match tokio::time::timeout(self.wait, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "{}: sipp did not finish within {} s",
                self.name,
                self.wait.as_secs()
            ),
        };
        if !status.success() {
            let errors =
                std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
            // A run of many calls can log a lot: the start says what went wrong.
            let shown: String = errors.chars().take(6000).collect();
            panic!("{}: sipp failed with {status}:\n{shown}", self.name);
        }
    }
}
