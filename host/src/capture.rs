//! SIP capture for Homer-compatible tools: every SIP message in and out, encapsulated
//! in HEPv3 (the HEP/EEP protocol of Homer, sngrep and Kamailio's `siptrace`) and sent
//! by UDP to the collectors of `[capture] hep`, sampled by Call-ID (a dialog is
//! captured whole or not at all).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::CaptureConfig;
use crate::core::Transport;

/// Where captured messages go.
#[derive(Debug)]
pub(crate) struct Capture {
    /// Sends to every collector (non-blocking: a message that does not fit the
    /// socket's buffer is not captured, the SIP traffic never waits).
    socket: UdpSocket,
    collectors: Vec<SocketAddr>,
    /// A Call-ID whose hash is at most this is captured.
    threshold: u64,
    agent_id: u32,
    password: Option<String>,
}

/// HEP chunk types (vendor 0, the generic ones).
mod chunk {
    pub(super) const FAMILY: u16 = 0x0001;
    pub(super) const PROTOCOL: u16 = 0x0002;
    pub(super) const SRC_V4: u16 = 0x0003;
    pub(super) const DST_V4: u16 = 0x0004;
    pub(super) const SRC_V6: u16 = 0x0005;
    pub(super) const DST_V6: u16 = 0x0006;
    pub(super) const SRC_PORT: u16 = 0x0007;
    pub(super) const DST_PORT: u16 = 0x0008;
    pub(super) const SECONDS: u16 = 0x0009;
    pub(super) const MICROS: u16 = 0x000a;
    pub(super) const PROTO_TYPE: u16 = 0x000b;
    pub(super) const AGENT_ID: u16 = 0x000c;
    pub(super) const PASSWORD: u16 = 0x000e;
    pub(super) const PAYLOAD: u16 = 0x000f;
    pub(super) const CORRELATION: u16 = 0x0011;
}

impl Capture {
    /// The capture `cfg` asks for; `None` without collectors.
    pub(crate) fn open(cfg: &CaptureConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if cfg.hep.is_empty() {
            return Ok(None);
        }
        let collectors = cfg.collectors();
        let any_v6 = collectors.iter().any(SocketAddr::is_ipv6);
        let socket = UdpSocket::bind(if any_v6 { "[::]:0" } else { "0.0.0.0:0" })
            .map_err(|e| anyhow::anyhow!("capture.hep: no UDP socket: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| anyhow::anyhow!("capture.hep: {e}"))?;
        let threshold = if cfg.sample >= 1.0 {
            u64::MAX
        } else {
            (cfg.sample * u64::MAX as f64) as u64
        };
        Ok(Some(Arc::new(Self {
            socket,
            collectors,
            threshold,
            agent_id: cfg.agent_id,
            password: cfg.password.clone(),
        })))
    }

    /// Captures one SIP message that went from `src` to `dst` over `transport`.
    pub(crate) fn message(
        &self,
        transport: Transport,
        src: SocketAddr,
        dst: SocketAddr,
        sip: &[u8],
    ) {
        let call_id = call_id(sip);
        if self.threshold != u64::MAX && call_id.is_none_or(|c| fnv(c) > self.threshold) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let packet = encode(&Hep {
            transport,
            src,
            dst,
            seconds: u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
            micros: now.subsec_micros(),
            agent_id: self.agent_id,
            password: self.password.as_deref(),
            call_id,
            payload: sip,
        });
        for c in &self.collectors {
            let _ = self.socket.send_to(&packet, c);
        }
    }
}

/// One captured message.
struct Hep<'a> {
    transport: Transport,
    src: SocketAddr,
    dst: SocketAddr,
    seconds: u32,
    micros: u32,
    agent_id: u32,
    password: Option<&'a str>,
    call_id: Option<&'a [u8]>,
    payload: &'a [u8],
}

/// The HEPv3 packet: `HEP3`, its total length, then chunks (vendor, type, length
/// with its 6-byte header, value), all in network order.
fn encode(h: &Hep<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.payload.len() + 128);
    out.extend_from_slice(b"HEP3\0\0");
    let mut put = |kind: u16, value: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        let len = u16::try_from(value.len() + 6).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&value[..usize::from(len) - 6]);
    };
    let (family, src_kind, dst_kind) = match h.src.ip() {
        IpAddr::V4(_) => (2u8, chunk::SRC_V4, chunk::DST_V4),
        IpAddr::V6(_) => (10u8, chunk::SRC_V6, chunk::DST_V6),
    };
    put(chunk::FAMILY, &[family]);
    let protocol: u8 = if h.transport == Transport::Udp { 17 } else { 6 };
    put(chunk::PROTOCOL, &[protocol]);
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let dst_ip = match (h.src.ip(), h.dst.ip()) {
        // A v4 source with a v6 destination (or the other way) cannot be written in
        // one family: the destination as the source's family sees it.
        (IpAddr::V4(_), IpAddr::V6(v6)) => {
            v6.to_ipv4_mapped().map_or(IpAddr::V4(0.into()), IpAddr::V4)
        }
        (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        (_, d) => d,
    };
    put(src_kind, &octets(h.src.ip()));
    put(dst_kind, &octets(dst_ip));
    put(chunk::SRC_PORT, &h.src.port().to_be_bytes());
    put(chunk::DST_PORT, &h.dst.port().to_be_bytes());
    put(chunk::SECONDS, &h.seconds.to_be_bytes());
    put(chunk::MICROS, &h.micros.to_be_bytes());
    put(chunk::PROTO_TYPE, &[1]);
    put(chunk::AGENT_ID, &h.agent_id.to_be_bytes());
    if let Some(p) = h.password {
        put(chunk::PASSWORD, p.as_bytes());
    }
    if let Some(c) = h.call_id {
        put(chunk::CORRELATION, c);
    }
    // A payload past what one chunk holds is cut (UDP could not carry it anyway).
    put(chunk::PAYLOAD, h.payload);
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&total.to_be_bytes());
    out
}

/// The Call-ID header's value (`Call-ID:` or its compact form `i:`), trimmed.
fn call_id(sip: &[u8]) -> Option<&[u8]> {
    let head_end = memchr::memmem::find(sip, b"\r\n\r\n").unwrap_or(sip.len());
    let head = &sip[..head_end];
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// FNV-1a: a hash every node computes alike, so that one dialog's messages are
/// sampled alike wherever they pass.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_hep3_with_its_chunks_and_the_call_id() {
        let sip = b"REGISTER sip:x SIP/2.0\r\ni: abc@host \r\nCSeq: 1 REGISTER\r\n\r\n";
        let h = Hep {
            transport: Transport::Udp,
            src: "127.0.0.1:5070".parse().unwrap(),
            dst: "127.0.0.2:5060".parse().unwrap(),
            seconds: 7,
            micros: 9,
            agent_id: 2001,
            password: None,
            call_id: call_id(sip),
            payload: sip,
        };
        let p = encode(&h);
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len());
        // Walk the chunks: each is whole, and the payload is the message.
        let (mut at, mut kinds, mut payload, mut corr) = (6, Vec::new(), None, None);
        while at < p.len() {
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
            let value = &p[at + 6..at + len];
            match kind {
                chunk::PAYLOAD => payload = Some(value.to_vec()),
                chunk::CORRELATION => corr = Some(value.to_vec()),
                chunk::SRC_V4 => assert_eq!(value, [127, 0, 0, 1]),
                chunk::DST_PORT => assert_eq!(value, 5060u16.to_be_bytes()),
                chunk::PROTOCOL => assert_eq!(value, [17]),
                _ => {}
            }
            kinds.push(kind);
            at += len;
        }
        assert_eq!(at, p.len());
        assert_eq!(payload.as_deref(), Some(&sip[..]));
        assert_eq!(corr.as_deref(), Some(&b"abc@host"[..]));
        assert!(kinds.contains(&chunk::AGENT_ID) && kinds.contains(&chunk::SECONDS));
    }

    #[test]
    fn a_sample_takes_about_its_share_of_call_ids_and_all_of_one_dialog() {
        let cfg = CaptureConfig {
            hep: vec!["udp:127.0.0.1:9".into()],
            sample: 0.25,
            ..CaptureConfig::default()
        };
        let c = Capture::open(&cfg).unwrap().unwrap();
        let taken = (0..4000)
            .filter(|i| fnv(format!("call-{i}@host").as_bytes()) <= c.threshold)
            .count();
        // 1000 expected; 4 standard deviations is 110.
        assert!((890..=1110).contains(&taken), "{taken}");
        let all = Capture::open(&CaptureConfig { sample: 1.0, ..cfg })
            .unwrap()
            .unwrap();
        assert_eq!(all.threshold, u64::MAX);
    }

    #[test]
    fn the_call_id_is_found_in_either_form_and_only_in_the_head() {
        assert_eq!(call_id(b"X\r\nCALL-ID:  a1 \r\n\r\n"), Some(&b"a1"[..]));
        assert_eq!(call_id(b"X\r\nTo: <sip:i@x>\r\n\r\nCall-ID: body"), None);
    }
}
