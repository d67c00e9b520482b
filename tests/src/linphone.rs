//! Linphone (Debian `linphone-cli`, liblinphone 5.1), a second real phone as a test peer,
//! driven through `linphonec`'s command line on its stdin and the lines it prints.
//!
//! Linphone differs from baresip where a proxy can get it wrong: it registers with
//! `+sip.instance` and `gruu`, then uses its public GRUU (`sip:user@localhost;gr=...`) as
//! the Contact of its calls and messages, so requests in its dialogs reach it only
//! through the registrar's GRUU lookup or a flow token; it sends IMDN delivery reports
//! back for each MESSAGE.
//!
//! Traffic stays on loopback: its account's outbound proxy and route are the server's
//! loopback listener, SDP carries 127.0.0.1. linphonec binds its SIP and RTP sockets on
//! the wildcard address (it has no setting for that), and learns its default source
//! address by `connect`ing a UDP socket to a public address and reading it back, which
//! sends nothing; checked with strace, every packet it sends goes to 127.0.0.1.
//! Audio uses files (`soundcard use files`), so no sound hardware is needed.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::phone::Transport;
use crate::{Server, free_port};

/// A running linphonec with one account, `sip:<user>@localhost`.
pub struct Linphone {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    dir: tempfile::TempDir,
    /// Its user name.
    pub user: String,
    /// Lines printed while waiting for others, for failure messages.
    seen: Vec<String>,
}

/// The linphonec binary; a clear panic when it is missing.
fn linphonec_bin() -> &'static str {
    const BIN: &str = "/usr/bin/linphonec";
    assert!(
        Path::new(BIN).exists(),
        "linphonec is not installed: run ./tests/run-all.sh (it installs Debian's linphone-cli)"
    );
    BIN
}

impl Linphone {
    /// Starts linphonec for `user`, registering over `transport` with the server as its
    /// proxy and route, and waits until it says it is registered. Over TLS it does not
    /// verify the server's certificate (the test server's is self-signed).
    pub async fn start(server: &Server, user: &str, transport: Transport) -> Self {
        Self::start_with(server, user, transport, None).await
    }

    /// [`Linphone::start`] with a Digest password for its account (username `user`).
    pub async fn start_with(
        server: &Server,
        user: &str,
        transport: Transport,
        password: Option<&str>,
    ) -> Self {
        // -1: a port of linphonec's own choosing; 0: off.
        let (param, udp_port, tcp_port, tls_port) = match transport {
            Transport::Udp => ("udp", free_port(), 0, 0),
            Transport::Tcp => ("tcp", 0, -1, 0),
            Transport::Tls => ("tls", 0, 0, -1),
        };
        let proxy = match transport {
            Transport::Tls => server.tls,
            Transport::Udp | Transport::Tcp => server.sip,
        };
        let dir = tempfile::tempdir().unwrap();
        // liblinphone keeps its databases under $HOME.
        std::fs::create_dir_all(dir.path().join(".local/share/linphone")).unwrap();
        std::fs::create_dir_all(dir.path().join(".config/linphone")).unwrap();
        let rtp = free_port();
        let rc = format!(
            "[sip]\n\
             sip_port={udp_port}\n\
             sip_tcp_port={tcp_port}\n\
             sip_tls_port={tls_port}\n\
             verify_server_certs=0\n\
             default_proxy=0\n\
             register_only_when_network_is_up=0\n\
             [net]\n\
             ipv6_enabled=0\n\
             [rtp]\n\
             audio_rtp_port={rtp}\n\
             video_rtp_port=0\n\
             text_rtp_port=0\n\
             [video]\n\
             enabled=0\n\
             capture=0\n\
             display=0\n\
             [proxy_0]\n\
             reg_proxy=<sip:{proxy};transport={param}>\n\
             reg_route=<sip:{proxy};transport={param};lr>\n\
             reg_identity=sip:{user}@localhost\n\
             reg_expires=600\n\
             reg_sendregister=1\n\
             publish=0\n"
        );
        let auth = password.map_or(String::new(), |p| {
            format!("[auth_info_0]\nusername={user}\npasswd={p}\ndomain=localhost\n")
        });
        let rc_path = dir.path().join("linphonerc");
        std::fs::write(&rc_path, rc + &auth).unwrap();
        let mut child = Command::new(linphonec_bin())
            .arg("-c")
            .arg(&rc_path)
            .arg("-d")
            .arg("6")
            .arg("-l")
            .arg(dir.path().join("linphone.log"))
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start linphonec");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                // Its prompt has no newline and so starts the next line.
                let line = line.trim_start_matches("linphonec> ").trim().to_string();
                if !line.is_empty() && tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut phone = Self {
            child,
            stdin,
            lines,
            dir,
            user: user.into(),
            seen: Vec::new(),
        };
        phone.cmd("soundcard use files").await;
        phone.expect("Using wav files").await;
        // linphonec prints nothing when the registration completes; ask until it says so
        // (bounded: 50 tries, 200 ms apart).
        for _ in 0..50 {
            phone.cmd("status register").await;
            let status = phone.expect("registered").await;
            if status.starts_with("registered, identity=") {
                return phone;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!(
            "{user}: linphonec did not register; its log:\n{}",
            phone.log_tail()
        );
    }

    /// Sends one command line (`call sip:...`, `answer`, `terminate`, `chat ...`).
    pub async fn cmd(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for a printed line containing `needle` (others are kept for the failure
    /// message) and returns it.
    pub async fn expect(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(crate::WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
                self.seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "{}: linphonec exited while waiting for {needle:?}; printed {:?}; log:\n{}",
                self.user,
                self.seen,
                self.log_tail()
            ),
            Err(_) => panic!(
                "{}: no line with {needle:?} within {:?}; printed {:?}; log:\n{}",
                self.user,
                crate::WAIT,
                self.seen,
                self.log_tail()
            ),
        }
    }

    /// Calls `user@localhost`.
    pub async fn call(&mut self, user: &str) {
        self.cmd(&format!("call sip:{user}@localhost")).await;
    }

    /// Waits for a call from `caller@localhost` and answers it.
    pub async fn answer_from(&mut self, caller: &str) {
        self.expect(&format!(
            "Receiving new incoming call from sip:{caller}@localhost"
        ))
        .await;
        self.cmd("answer").await;
    }

    /// Whether a line of its log (which has every SIP message it sent or received)
    /// matches `pred`.
    pub fn logged(&self, pred: impl Fn(&str) -> bool) -> bool {
        std::fs::read_to_string(self.dir.path().join("linphone.log"))
            .is_ok_and(|log| log.lines().any(pred))
    }

    /// The last 40 request, status and error lines of its log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("linphone.log")).unwrap_or_default();
        let sip: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("SIP/2.0 ") || l.ends_with(" SIP/2.0") || l.contains("error"))
            .collect();
        sip[sip.len().saturating_sub(40)..].join("\n")
    }

    /// Quits linphonec the orderly way (it unregisters).
    pub async fn quit(mut self) {
        self.cmd("quit").await;
        let _ = crate::within(&format!("{}: linphonec exit", self.user), self.child.wait()).await;
    }
}
