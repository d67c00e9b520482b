//! JsSIP and SIP.js (browser SIP stacks) as test peers, under Node (`tests/js/agent.mjs`)
//! or in headless Chromium (`tests/js/browser.mjs`), driven by JSON lines.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::sip::{SDP, Ua};
use crate::{Server, within};
use sipwasm::sip::message::Request;

/// Which browser stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// JsSIP 3.
    JsSip,
    /// SIP.js 0.21.
    SipJs,
}

/// A running agent.
pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its user name.
    pub user: String,
}

/// Debian's Chromium, for [`Agent::start_in_chromium`].
const CHROMIUM: &str = "/usr/bin/chromium";

fn ws_url(server: &Server) -> String {
    format!("ws://{}", server.ws)
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

impl Agent {
    /// Starts an agent for `user` on the server's `ws` listener (optionally with an
    /// RFC 5626 instance id) and waits until its WebSocket is up.
    pub async fn start(server: &Server, lib: Lib, user: &str, instance: Option<&str>) -> Self {
        Self::start_with(server, lib, user, instance, None).await
    }

    /// [`Agent::start`] with a Digest password for challenges.
    pub async fn start_with(
        server: &Server,
        lib: Lib,
        user: &str,
        instance: Option<&str>,
        password: Option<&str>,
    ) -> Self {
        let mut extra = Vec::new();
        if let Some(i) = instance {
            extra.extend(["--instance", i]);
        }
        if let Some(p) = password {
            extra.extend(["--password", p]);
        }
        Self::spawn("agent.mjs", &ws_url(server), lib, user, &extra).await
    }

    /// [`Agent::start`] for calls with phones: its SDP offers plain RTP/AVP instead of
    /// WebRTC's DTLS-SRTP profile, which a phone without DTLS-SRTP would refuse.
    pub async fn start_for_phones(server: &Server, lib: Lib, user: &str) -> Self {
        Self::spawn("agent.mjs", &ws_url(server), lib, user, &["--media", "rtp"]).await
    }

    /// The same stack inside a real headless Chromium (`tests/js/browser.mjs`): the
    /// browser's WebSocket and WebRTC, the page served from an `http://127.0.0.1` origin.
    /// `secure` connects to the `wss` listener (Chromium told to accept the server's
    /// self-signed certificate) instead of `ws`.
    pub async fn start_in_chromium(server: &Server, lib: Lib, user: &str, secure: bool) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} missing: run ./tests/run-all.sh (it installs Debian's chromium)"
        );
        let url = if secure {
            format!("wss://127.0.0.1:{}", server.wss.port())
        } else {
            ws_url(server)
        };
        Self::spawn("browser.mjs", &url, lib, user, &["--chromium", CHROMIUM]).await
    }

    /// [`Agent::start_in_chromium`] with real media: Chromium's fake microphone plays
    /// `wav`, and its peer connections may use loopback candidates (the media relay's).
    pub async fn start_in_chromium_with_audio(
        server: &Server,
        lib: Lib,
        user: &str,
        wav: &Path,
    ) -> Self {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} missing: run ./tests/run-all.sh (it installs Debian's chromium)"
        );
        let wav = wav.to_str().expect("a UTF-8 path");
        Self::spawn(
            "browser.mjs",
            &ws_url(server),
            lib,
            user,
            &["--chromium", CHROMIUM, "--audio-file", wav],
        )
        .await
    }

    async fn spawn(script: &str, url: &str, lib: Lib, user: &str, extra: &[&str]) -> Self {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/jssip").exists(),
            "tests/js/node_modules missing: run ./tests/run-all.sh (it runs npm ci)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script))
            .args(["--lib", if lib == Lib::JsSip { "jssip" } else { "sipjs" }])
            .args(["--url", url])
            .args(["--user", user])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .args(extra)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut agent = Self {
            child,
            stdin,
            lines,
            user: user.into(),
        };
        // Starting Chromium (and bundling JsSIP for its page) can take well over the
        // usual wait while the rest of the suite runs on the same two cores.
        let startup = if script == "browser.mjs" {
            std::time::Duration::from_secs(90)
        } else {
            crate::WAIT
        };
        if tokio::time::timeout(startup, agent.expect_unbounded("ready"))
            .await
            .is_err()
        {
            panic!("timed out after {startup:?}: {user}: event ready");
        }
        agent
    }

    /// Sends a command.
    pub async fn cmd(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
    }

    /// Waits for event `ev` (other events in between are skipped; errors fail).
    pub async fn expect(&mut self, ev: &str) -> Value {
        let user = self.user.clone();
        within(&format!("{user}: event {ev}"), self.expect_unbounded(ev)).await
    }

    /// [`Agent::expect`] without its time limit (the caller sets one).
    async fn expect_unbounded(&mut self, ev: &str) -> Value {
        let user = self.user.clone();
        async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{user}: agent exited while waiting for {ev}"));
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("{user}: bad line {line}"));
                if v["ev"] == "error" {
                    panic!("{user}: agent error: {}", v["message"]);
                }
                if v["ev"] == ev {
                    return v;
                }
            }
        }
        .await
    }

    /// Registers and waits for success.
    pub async fn register(&mut self) {
        self.cmd(json!({"cmd": "register"})).await;
        self.expect("registered").await;
    }

    /// Kills the process (a tab closed without unregistering).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A call from `caller` to `callee`, answered; one of them hangs up after the ACK.
pub async fn browser_call(caller: &mut Agent, callee: &mut Agent, callee_hangs_up: bool) {
    caller
        .cmd(json!({"cmd": "call", "target": callee.user}))
        .await;
    callee.expect("incoming").await;
    callee.cmd(json!({"cmd": "answer"})).await;
    caller.expect("accepted").await;
    callee.expect("accepted").await;
    // Let the ACK get through before hanging up.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (hanger, other) = if callee_hangs_up {
        (callee, caller)
    } else {
        (caller, callee)
    };
    hanger.cmd(json!({"cmd": "hangup"})).await;
    other.expect("ended").await;
    hanger.expect("ended").await;
}

/// The browser calls the phone, which rings, answers and hangs up; returns the
/// INVITE as the phone got it.
pub async fn browser_calls_phone(browser: &mut Agent, phone: &mut Ua) -> Request {
    browser
        .cmd(json!({"cmd": "call", "target": phone.user}))
        .await;
    let inv = phone.recv_request("INVITE").await;
    phone.send(&phone.response(&inv, 180, "", "")).await;
    assert_eq!(browser.expect("progress").await["status"], 180);
    phone.send(&phone.response(&inv, 200, "", SDP)).await;
    browser.expect("accepted").await;
    phone.recv_request("ACK").await;
    let mut d = phone.dialog_as_callee(&inv);
    let bye = phone.in_dialog(&mut d, "BYE", None);
    phone.send(&bye).await;
    assert_eq!(phone.recv_final().await.status, 200);
    browser.expect("ended").await;
    inv
}

/// The phone calls the browser, which answers and hangs up.
pub async fn phone_calls_browser(phone: &mut Ua, browser: &mut Agent) {
    let (invite, dialog) = phone.request("INVITE", &browser.user, "", SDP);
    phone.send(&invite).await;
    browser.expect("incoming").await;
    browser.cmd(json!({"cmd": "answer"})).await;
    let ok = phone.recv_status(200).await;
    let mut d = phone.dialog_as_caller(dialog, &ok);
    let ack = phone.in_dialog(&mut d, "ACK", Some(1));
    phone.send(&ack).await;
    browser.expect("accepted").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    browser.cmd(json!({"cmd": "hangup"})).await;
    let bye = phone.recv_request("BYE").await;
    phone.send(&phone.response(&bye, 200, "", "")).await;
    browser.expect("ended").await;
}
