//! baresip (Debian `baresip-core`), a real SIP phone, as a test peer: registered over
//! UDP, TCP or TLS through sipwasm as its outbound proxy, driven through its `ctrl_tcp`
//! module (netstring-framed JSON commands and events on a loopback TCP port).
//!
//! Traffic stays on loopback: SIP, RTP (`net_interface 127.0.0.1`, or `::1`, puts that
//! address in its SDP) and the control port. baresip 1.0 binds its RTP sockets (and an unused DNS
//! client socket) on the wildcard address, which it has no setting for; nothing is sent
//! anywhere but 127.0.0.1 (checked with strace). Audio is a short generated WAV file
//! played into the call and a bridge device as the player, so no sound hardware is
//! needed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{Server, free_port, within};

/// The transport a phone registers and calls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SIP over UDP to the server's `sip` port.
    Udp,
    /// SIP over TCP to the server's `sip` port.
    Tcp,
    /// SIP over TLS to the server's `tls` port.
    Tls,
}

impl Transport {
    fn param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// A running baresip with one account, `sip:<user>@localhost`.
pub struct Phone {
    child: Child,
    ctrl: TcpStream,
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
    /// Its user name.
    pub user: String,
    /// Events seen while waiting for others, in order, for failure messages.
    seen: Vec<String>,
}

/// The baresip binary; a clear panic when it is missing.
fn baresip_bin() -> PathBuf {
    for p in ["/usr/bin/baresip", "/usr/local/bin/baresip"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("baresip is not installed: run ./tests/run-all.sh (it installs Debian's baresip-core)");
}

/// A port `p` where `p` (UDP and TCP) and `p + 1` (TCP, baresip's TLS listener) are free
/// on `local`.
fn sip_ports(local: &str) -> u16 {
    for _ in 0..50 {
        let p = free_port();
        let free = |port: u16| {
            TcpListener::bind((local, port)).is_ok()
                && std::net::UdpSocket::bind((local, port)).is_ok()
        };
        if p < u16::MAX && free(p) && free(p + 1) {
            return p;
        }
    }
    panic!("no free pair of loopback ports for baresip");
}

/// `secs` seconds of a 440 Hz tone, 8 kHz mono 16-bit PCM, as a WAV file. (baresip's
/// `aufile` source ends the call when its file ends: a phone plays 30 s.)
pub fn tone_wav(secs: u32) -> Vec<u8> {
    let samples: Vec<i16> = (0..8000 * secs)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    w.extend_from_slice(&2u16.to_le_bytes()); // block align
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

impl Phone {
    /// Starts baresip for `user` over `transport`, adds its account (which registers)
    /// and waits for the registrar's 200.
    pub async fn start(server: &Server, user: &str, transport: Transport) -> Self {
        let proxy = match transport {
            Transport::Tls => server.tls,
            Transport::Udp | Transport::Tcp => server.sip,
        };
        Self::start_via(proxy, user, transport).await
    }

    /// [`Phone::start`] with `proxy` (the server's listener for `transport`) as its
    /// outbound proxy; an IPv6 `proxy` puts the phone on `::1`.
    pub async fn start_via(proxy: SocketAddr, user: &str, transport: Transport) -> Self {
        let local = if proxy.is_ipv6() { "::1" } else { "127.0.0.1" };
        let bin = baresip_bin();
        let dir = tempfile::tempdir().unwrap();
        let sip_port = sip_ports(local);
        let ctrl_port = free_port();
        let tone = dir.path().join("tone.wav");
        std::fs::write(&tone, tone_wav(30)).unwrap();
        let config = format!(
            "poll_method epoll\n\
             net_interface {local}\n\
             sip_listen {}\n\
             audio_player aubridge,{user}\n\
             audio_alert aubridge,{user}-alert\n\
             audio_source aufile,{tone}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aubridge.so\n\
             module aufile.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
            SocketAddr::new(local.parse().unwrap(), sip_port),
            tone = tone.display(),
        );
        std::fs::write(dir.path().join("config"), config).unwrap();
        // No account at start: it is added once the control connection is up, so the
        // registration's outcome arrives there as an event.
        std::fs::write(dir.path().join("accounts"), "").unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start baresip");
        let ctrl = within(&format!("{user}: baresip control port"), async {
            loop {
                match TcpStream::connect(("127.0.0.1", ctrl_port)).await {
                    Ok(c) => return c,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        let mut phone = Self {
            child,
            ctrl,
            buf: Vec::new(),
            _dir: dir,
            user: user.into(),
            seen: Vec::new(),
        };
        phone
            .cmd(
                "uanew",
                &format!(
                    "<sip:{user}@localhost>;outbound=\"sip:{proxy};transport={}\";regint=600;answermode=manual",
                    transport.param()
                ),
            )
            .await;
        let ev = phone.expect_any(&["REGISTER_OK", "REGISTER_FAIL"]).await;
        assert_eq!(
            ev["type"], "REGISTER_OK",
            "{user}: registration failed: {ev}"
        );
        phone
    }

    /// Sends a command (`dial`, `accept`, `hangup`...). Its response is read as events
    /// are, in order.
    pub async fn cmd(&mut self, command: &str, params: &str) {
        let body = json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl.write_all(frame.as_bytes()).await.unwrap();
    }

    /// The next netstring from the control connection, parsed.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{}: bad netstring {:?}", self.user, self.buf));
                let end = colon + 1 + len;
                if self.buf.len() > end {
                    let body = self.buf[colon + 1..end].to_vec();
                    assert_eq!(self.buf[end], b',', "{}: netstring without ','", self.user);
                    self.buf.drain(..=end);
                    return serde_json::from_slice(&body).unwrap_or_else(|e| {
                        panic!(
                            "{}: bad JSON ({e}): {}",
                            self.user,
                            String::from_utf8_lossy(&body)
                        )
                    });
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.ctrl.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "{}: baresip closed its control connection",
                self.user
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for an event whose `type` is one of `types` (others are skipped) and
    /// returns it.
    pub async fn expect_any(&mut self, types: &[&str]) -> Value {
        let found = tokio::time::timeout(crate::WAIT, async {
            loop {
                let v = self.next().await;
                if v["event"] == true {
                    let ty = v["type"].as_str().unwrap_or_default().to_string();
                    if types.contains(&ty.as_str()) {
                        return v;
                    }
                    self.seen.push(ty);
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "{}: no event {types:?} within {:?}; saw {:?}",
                self.user,
                crate::WAIT,
                self.seen
            )
        })
    }

    /// Waits for event `ty` and returns it.
    pub async fn expect(&mut self, ty: &str) -> Value {
        self.expect_any(&[ty]).await
    }

    /// Dials `user@localhost`.
    pub async fn dial(&mut self, user: &str) {
        self.cmd("dial", &format!("sip:{user}@localhost")).await;
    }

    /// Stops baresip without unregistering (power cut, cable pulled).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Quits baresip the orderly way: it unregisters first.
    pub async fn quit(mut self) {
        self.cmd("quit", "").await;
        let _ = within(&format!("{}: baresip exit", self.user), self.child.wait()).await;
    }
}
