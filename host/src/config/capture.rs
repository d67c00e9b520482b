//! `[capture]`: SIP messages copied to Homer-compatible collectors (HEPv3 over UDP).

use std::net::SocketAddr;

use serde::Deserialize;

use super::validate::Invalid;

/// `[capture]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaptureConfig {
    /// Collectors (`"udp:IP:PORT"`: Homer, heplify-server, sngrep `-L`); none: off.
    #[serde(default)]
    pub hep: Vec<String>,
    /// The share of dialogs captured, 0 to 1, by their Call-ID.
    #[serde(default = "default_sample")]
    pub sample: f64,
    /// The capture agent id in every packet (tells collectors which server sent it).
    #[serde(default)]
    pub agent_id: u32,
    /// The HEP password (auth key chunk) some collectors ask for.
    #[serde(default)]
    pub password: Option<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            hep: Vec::new(),
            sample: default_sample(),
            agent_id: 0,
            password: None,
        }
    }
}

fn default_sample() -> f64 {
    1.0
}

/// `udp:IP:PORT`.
fn collector(s: &str) -> Option<SocketAddr> {
    s.strip_prefix("udp:")?.parse().ok()
}

impl CaptureConfig {
    /// The collectors' addresses (checked).
    pub fn collectors(&self) -> Vec<SocketAddr> {
        self.hep.iter().filter_map(|s| collector(s)).collect()
    }

    /// The checks of `[capture]`.
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(bad) = self.hep.iter().find(|s| collector(s).is_none()) {
            return Err(("capture.hep".into(), format!("`{bad}` is not udp:IP:PORT")));
        }
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(("capture.sample".into(), "must be between 0 and 1".into()));
        }
        Ok(())
    }
}
