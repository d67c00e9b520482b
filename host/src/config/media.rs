//! `[media]`: the media relay. sipwasm drives rtpengine over its ng protocol so that a
//! browser (WebRTC: ICE, DTLS-SRTP, RTCP multiplexed) and a plain SIP phone (RTP/AVP)
//! hear each other.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::Invalid;

/// `[media]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MediaConfig {
    /// The rtpengine daemons: `"udp:IP:PORT"`, or `{ address = "udp:IP:PORT", weight = N }`
    /// (new calls are shared by weight among the engines that answer).
    #[serde(default)]
    pub engines: Vec<EngineEntry>,
    /// Which calls go through an engine: `bridge` (a browser and a phone; the default
    /// with engines), `always`, `never` (the default without).
    #[serde(default)]
    pub mode: Option<MediaMode>,
    /// How long one try of an ng request waits for its reply.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Tries of one ng request (the same cookie each time) before its engine counts
    /// as down.
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// How long an engine that did not answer gets no new calls (then a ping must
    /// answer before it gets one).
    #[serde(default = "default_disable_for", with = "duration")]
    pub disable_for: Duration,
    /// How media toward a WebSocket side is written (each key given replaces the
    /// default's).
    #[serde(default)]
    pub toward_webrtc: FlagsConfig,
    /// How media toward a UDP, TCP or TLS side is written.
    #[serde(default)]
    pub toward_plain: FlagsConfig,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            engines: Vec::new(),
            mode: None,
            timeout: default_timeout(),
            tries: default_tries(),
            disable_for: default_disable_for(),
            toward_webrtc: FlagsConfig::default(),
            toward_plain: FlagsConfig::default(),
        }
    }
}

/// `media.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    /// Relay calls between a WebSocket side and a UDP, TCP or TLS side; browser ↔
    /// browser and phone ↔ phone stay direct.
    Bridge,
    /// Relay every call.
    Always,
    /// Relay none.
    Never,
}

impl From<MediaMode> for crate::media::Mode {
    fn from(m: MediaMode) -> Self {
        match m {
            MediaMode::Bridge => Self::Bridge,
            MediaMode::Always => Self::Always,
            MediaMode::Never => Self::Never,
        }
    }
}

/// One of `media.engines`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EngineEntry {
    /// `"udp:IP:PORT"`, weight 1.
    Address(String),
    /// `{ address = "udp:IP:PORT", weight = N }`.
    Weighted {
        /// `"udp:IP:PORT"`.
        address: String,
        /// Share of new calls, 1–1000.
        weight: u32,
    },
}

/// A checked engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine {
    /// Where its ng protocol listens.
    pub address: SocketAddr,
    /// Share of new calls.
    pub weight: u32,
}

/// `media.toward-webrtc`, `media.toward-plain`: the ng keys of offers and answers whose
/// SDP goes to that kind of side. Unset keys keep the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FlagsConfig {
    /// `transport-protocol`.
    pub transport_protocol: Option<String>,
    /// `ICE` (`force`, `remove`, `default`, `optional`, `force-relay`).
    pub ice: Option<String>,
    /// `DTLS` (`off`, `passive`, `active`).
    pub dtls: Option<String>,
    /// `SDES` items.
    pub sdes: Option<Vec<String>>,
    /// `rtcp-mux` items (`offer`, `require`, `demux`, `accept`, `reject`).
    pub rtcp_mux: Option<Vec<String>>,
    /// `flags` items (`generate-mid`, `codec-strip-…`, `trust-address`…).
    pub flags: Option<Vec<String>>,
    /// `replace` items (`origin`, `session-connection`…).
    pub replace: Option<Vec<String>>,
}

const TRANSPORT_PROTOCOLS: &[&str] = &[
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
];
const ICE: &[&str] = &["force", "remove", "default", "optional", "force-relay"];
const DTLS: &[&str] = &["off", "passive", "active"];
const RTCP_MUX: &[&str] = &["offer", "require", "demux", "accept", "reject"];
const REPLACE: &[&str] = &[
    "origin",
    "session-connection",
    "SDP-version",
    "username",
    "session-name",
    "zero-address",
];

impl FlagsConfig {
    /// rtpengine takes a misspelt value without a word (it logs it and goes on), so
    /// each is checked here.
    fn check(&self, table: &str) -> Result<(), Invalid> {
        let one = |k: &str, v: &Option<String>, allowed: &[&str]| match v {
            Some(v) if !allowed.contains(&v.as_str()) => Err((
                format!("media.{table}.{k}"),
                format!("{v:?} is not one of {}", allowed.join(", ")),
            )),
            _ => Ok(()),
        };
        one(
            "transport-protocol",
            &self.transport_protocol,
            TRANSPORT_PROTOCOLS,
        )?;
        one("ice", &self.ice, ICE)?;
        one("dtls", &self.dtls, DTLS)?;
        let each = |k: &str, v: &Option<Vec<String>>, allowed: Option<&[&str]>| {
            for (i, item) in v.iter().flatten().enumerate() {
                let bad = match allowed {
                    Some(allowed) => !allowed.contains(&item.as_str()),
                    None => !crate::media::is_flag_word(item),
                };
                if bad {
                    let what = match allowed {
                        Some(allowed) => format!("is not one of {}", allowed.join(", ")),
                        None => "is not a flag (letters, digits, - _ . / =)".into(),
                    };
                    return Err((
                        format!("media.{table}.{k}[{i}]"),
                        format!("{item:?} {what}"),
                    ));
                }
            }
            Ok(())
        };
        each("rtcp-mux", &self.rtcp_mux, Some(RTCP_MUX))?;
        each("replace", &self.replace, Some(REPLACE))?;
        each("sdes", &self.sdes, None)?;
        each("flags", &self.flags, None)?;
        Ok(())
    }
}

impl MediaConfig {
    /// The mode in force: `bridge` with engines, `never` without, unless set.
    pub fn mode(&self) -> MediaMode {
        self.mode.unwrap_or(if self.engines.is_empty() {
            MediaMode::Never
        } else {
            MediaMode::Bridge
        })
    }

    /// The core's share: the mode and the flag sets, the defaults with what is set here.
    pub fn settings(&self) -> crate::media::Settings {
        crate::media::Settings {
            mode: self.mode().into(),
            toward_webrtc: self
                .toward_webrtc
                .over(crate::media::ng::Flags::toward_webrtc()),
            toward_plain: self
                .toward_plain
                .over(crate::media::ng::Flags::toward_plain()),
        }
    }

    /// The engines, checked.
    pub fn engines(&self) -> Result<Vec<Engine>, Invalid> {
        self.engines
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (address, weight, key) = match e {
                    EngineEntry::Address(a) => (a, 1, format!("media.engines[{i}]")),
                    EngineEntry::Weighted { address, weight } => {
                        (address, *weight, format!("media.engines[{i}].address"))
                    }
                };
                if !(1..=1000).contains(&weight) {
                    return Err((
                        format!("media.engines[{i}].weight"),
                        "must be between 1 and 1000".into(),
                    ));
                }
                let address = address
                    .strip_prefix("udp:")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .ok_or_else(|| {
                        (
                            key,
                            format!(
                                "{address:?} is not \"udp:IP:PORT\" (the ng protocol over UDP, \
                                 an IP address and a port)"
                            ),
                        )
                    })?;
                Ok(Engine { address, weight })
            })
            .collect()
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        let engines = self.engines()?;
        for (i, e) in engines.iter().enumerate() {
            if engines[..i].iter().any(|o| o.address == e.address) {
                return Err((
                    format!("media.engines[{i}]"),
                    format!("{} is listed twice", e.address),
                ));
            }
        }
        if self.mode.is_some_and(|m| m != MediaMode::Never) && engines.is_empty() {
            return Err((
                "media.mode".into(),
                "relaying calls needs at least one of media.engines".into(),
            ));
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(5) {
            return Err(("media.timeout".into(), "must be between 10ms and 5s".into()));
        }
        if !(1..=10).contains(&self.tries) {
            return Err(("media.tries".into(), "must be between 1 and 10".into()));
        }
        if self.disable_for < Duration::from_secs(1) || self.disable_for > Duration::from_secs(3600)
        {
            return Err((
                "media.disable-for".into(),
                "must be between 1s and 1h".into(),
            ));
        }
        self.toward_webrtc.check("toward-webrtc")?;
        self.toward_plain.check("toward-plain")?;
        Ok(())
    }
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_tries() -> u32 {
    3
}
fn default_disable_for() -> Duration {
    Duration::from_secs(60)
}

impl FlagsConfig {
    /// `base` with the keys set here replacing its own.
    pub fn over(&self, base: crate::media::ng::Flags) -> crate::media::ng::Flags {
        crate::media::ng::Flags {
            transport_protocol: self.transport_protocol.clone().or(base.transport_protocol),
            ice: self.ice.clone().or(base.ice),
            dtls: self.dtls.clone().or(base.dtls),
            sdes: self.sdes.clone().unwrap_or(base.sdes),
            rtcp_mux: self.rtcp_mux.clone().unwrap_or(base.rtcp_mux),
            flags: self.flags.clone().unwrap_or(base.flags),
            replace: self.replace.clone().unwrap_or(base.replace),
        }
    }
}
