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
            .args([
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-s",
                run.service,
                "-t",
                run.transport,
            ])
            .args([
                "-nostdin",
                "-timeout",
                "15s",
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
        }
    }

    /// Waits for sipp to finish; panics with its error log unless the call succeeded.
    pub async fn success(mut self) {
        let status = match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!("{}: sipp did not finish within 30 s", self.name),
        };
        if !status.success() {
            let errors =
                std::fs::read_to_string(self.dir.path().join("errors.log")).unwrap_or_default();
            panic!("{}: sipp failed with {status}:\n{errors}", self.name);
        }
    }
}
