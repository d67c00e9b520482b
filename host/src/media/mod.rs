//! The media relay's sans-IO half: rtpengine's ng protocol ([`ng`]), which calls go
//! through an engine ([`Mode`]), which engine a new call gets ([`pick_engine`]), and the
//! requests the core makes of the engines ([`MediaRequest`]) with what comes of them
//! ([`MediaOutcome`]). The requests go out and their replies come back through the
//! driver (`driver/media.rs`), which owns the sockets, the retries and the engines'
//! health.

use std::hash::BuildHasher;

use crate::sip::headers::{HeaderName, Headers};

pub mod ng;

/// `media.mode`: which calls go through an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls between a WebSocket side and a UDP/TCP/TLS side; browser ↔ browser and
    /// phone ↔ phone stay direct.
    Bridge,
    /// Every call.
    Always,
    /// None.
    Never,
}

impl Mode {
    /// Whether a call from a side on a WebSocket (`from_web`) or not to a side on one
    /// (`to_web`) or not goes through an engine.
    pub fn relays(self, from_web: bool, to_web: bool) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::Bridge => from_web != to_web,
        }
    }
}

/// What the core needs to relay media: the mode and the flag sets by the kind of side
/// an SDP goes to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which calls.
    pub mode: Mode,
    /// Offers and answers whose SDP goes to a WebSocket side.
    pub toward_webrtc: ng::Flags,
    /// Offers and answers whose SDP goes to a UDP, TCP or TLS side.
    pub toward_plain: ng::Flags,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Never,
            toward_webrtc: ng::Flags::toward_webrtc(),
            toward_plain: ng::Flags::toward_plain(),
        }
    }
}

impl Settings {
    /// The flags for SDP going to a side on a WebSocket (`web`) or not.
    pub fn toward(&self, web: bool) -> &ng::Flags {
        if web {
            &self.toward_webrtc
        } else {
            &self.toward_plain
        }
    }
}

/// A routing plugin's choice for one call's media (`media.choose` of the plugin
/// contract).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// `Some(true)`: through an engine whatever the two sides are; `Some(false)`:
    /// direct; `None`: as [`Mode`] says.
    pub relay: Option<bool>,
    /// `flags` items added for SDP going to a WebSocket side.
    pub toward_webrtc: Vec<String>,
    /// `flags` items added for SDP going to a UDP, TCP or TLS side.
    pub toward_plain: Vec<String>,
}

impl Choice {
    /// Most flags per side.
    pub const MAX_FLAGS: usize = 16;
    /// Longest flag.
    pub const MAX_FLAG_BYTES: usize = 64;

    /// Whether `flag` is one a plugin may add: [`is_flag_word`], at most
    /// [`Choice::MAX_FLAG_BYTES`].
    pub fn is_flag(flag: &str) -> bool {
        flag.len() <= Self::MAX_FLAG_BYTES && is_flag_word(flag)
    }

    /// The extra flags for SDP going to a side on a WebSocket (`web`) or not.
    pub fn extra(&self, web: bool) -> &[String] {
        if web {
            &self.toward_webrtc
        } else {
            &self.toward_plain
        }
    }
}

/// A request of the core for engine `engine` ([`crate::core::Core::poll_media`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRequest {
    /// What the outcome comes back with (`Input::Media`); 0 when nothing waits for it
    /// (a delete).
    pub id: u64,
    /// Which engine (an index into `media.engines`).
    pub engine: usize,
    /// The ng command.
    pub command: ng::Command,
}

/// What came of a [`MediaRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOutcome {
    /// The rewritten SDP of an offer or answer.
    Sdp(Vec<u8>),
    /// The engine did not answer (it is down now), or takes no new calls.
    Unavailable(String),
    /// The engine refused (an SDP it cannot read, an unknown call).
    Refused(String),
}

/// Whether `flag` is a word rtpengine could take as a flag: letters, digits and `-_./=`,
/// not empty (the configuration's flags and a plugin's).
pub fn is_flag_word(flag: &str) -> bool {
    !flag.is_empty()
        && flag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=".contains(&b))
}

/// Whether a message's body is an SDP (`Content-Type: application/sdp`, any
/// parameters, any case) that is not empty.
pub fn has_sdp(headers: &Headers, body: &[u8]) -> bool {
    !body.is_empty()
        && headers.get(&HeaderName::ContentType).is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        })
}

/// The engine a new call with `call_id` goes to: among those with a weight (the ones
/// up) and not in `tried`, chosen by weight from a hash of the Call-ID, so the same call
/// gets the same engine while the set is the same. `None` when none is left.
pub fn pick_engine(call_id: &str, weights: &[u32], tried: &[usize]) -> Option<usize> {
    let eligible = |i: &usize| weights[*i] > 0 && !tried.contains(i);
    let total: u64 = (0..weights.len())
        .filter(eligible)
        .map(|i| u64::from(weights[i]))
        .sum();
    if total == 0 {
        return None;
    }
    let h = foldhash::fast::FixedState::with_seed(0x006d_6564_6961).hash_one(call_id);
    let mut at = h % total;
    for i in (0..weights.len()).filter(eligible) {
        let w = u64::from(weights[i]);
        if at < w {
            return Some(i);
        }
        at -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_calls_are_shared_by_weight_among_the_engines_up() {
        let mut counts = [0u32; 3];
        for n in 0..30_000 {
            let i = pick_engine(&format!("call-{n}@host"), &[1, 2, 0], &[]).unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts[2], 0, "an engine that is down gets nothing");
        let share = f64::from(counts[1]) / 30_000.0;
        assert!((0.63..0.70).contains(&share), "weight 2 of 3: {share}");
        assert_eq!(pick_engine("x", &[1, 1], &[0, 1]), None);
        assert_eq!(pick_engine("x", &[0, 0], &[]), None);
        assert_eq!(pick_engine("x", &[1, 5], &[1]), Some(0));
        assert_eq!(
            pick_engine("same", &[3, 1], &[]),
            pick_engine("same", &[3, 1], &[])
        );
    }

    #[test]
    fn bridge_relays_only_between_a_browser_and_a_phone() {
        assert!(Mode::Bridge.relays(true, false));
        assert!(Mode::Bridge.relays(false, true));
        assert!(!Mode::Bridge.relays(true, true));
        assert!(!Mode::Bridge.relays(false, false));
        assert!(Mode::Always.relays(false, false));
        assert!(!Mode::Never.relays(true, false));
    }

    #[test]
    fn sdp_is_told_by_its_content_type() {
        let mut h = Headers::new();
        assert!(!has_sdp(&h, b"v=0"));
        h.push(HeaderName::ContentType, "Application/SDP ; charset=x");
        assert!(has_sdp(&h, b"v=0"));
        assert!(!has_sdp(&h, b""));
        let mut h = Headers::new();
        h.push(HeaderName::ContentType, "multipart/mixed;boundary=x");
        assert!(!has_sdp(&h, b"v=0"));
    }
}
