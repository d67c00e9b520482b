//! `limits.rate` at the door: every request is counted against its source before it is
//! parsed, on every transport, so a source past its rate (or banned for it) costs a
//! look-up per message, not a parse and a place in the core's queue, and a flood of
//! malformed requests is limited like any other. Over UDP a refused request is dropped
//! (an answer would feed the flood, or a spoofed victim); on a connection it gets a 503
//! with `Retry-After`, built from its head without parsing it. Responses are not
//! counted (the core drops those that match nothing).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::core::limits::{LogGate, RateConfig, RateLimiter, Verdict};
use crate::core::peers::TrustedPeers;
use crate::metrics::Metrics;
use crate::sip::HeaderName;

/// How long a connection pauses after each request refused for its source's rate
/// before its next message is read: a banned source's connection is served at most
/// 100 messages a second (TCP's flow control holds the rest back on its side), so a
/// source that keeps sending past its ban costs little, however fast it sends.
pub(crate) const REFUSED_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// A request counts against `limits.rate` once per started this many bytes: framing,
/// parsing and handling a message cost roughly in proportion to its size, so a burst
/// of 64 KB worst cases is as long as a burst of ordinary requests, not sixteen times
/// longer (64 sources' bursts of torture messages held both CPUs for 0.6 s). Requests
/// of phones and browsers, WebRTC offers included, are under it.
pub(crate) const BYTES_PER_REQUEST: usize = 4096;

/// The per-source request rate limit shared by every listener.
#[derive(Debug)]
pub(crate) struct SourceGate {
    on: std::sync::atomic::AtomicBool,
    exempt: TrustedPeers,
    limiter: Mutex<RateLimiter>,
    log: Mutex<LogGate>,
    metrics: Arc<Metrics>,
}

/// What the gate says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go on: parse it and hand it to the core.
    Pass,
    /// Refused: the source is banned for this many more seconds (at least 1).
    Refused {
        /// Whole seconds until the ban ends.
        retry_after: u32,
    },
}

impl SourceGate {
    /// A gate for `cfg` (`per_second` 0: off); `exempt` (trusted peers and
    /// `limits.exempt`) are never limited.
    pub(crate) fn new(cfg: RateConfig, exempt: TrustedPeers, metrics: Arc<Metrics>) -> Self {
        Self {
            on: std::sync::atomic::AtomicBool::new(cfg.per_second > 0),
            limiter: Mutex::new(RateLimiter::new(cfg, exempt.clone())),
            exempt,
            log: Mutex::new(LogGate::new()),
            metrics,
        }
    }

    /// New rates (a configuration reload): sources' counts and bans so far stay.
    pub(crate) fn reconfigure(&self, cfg: RateConfig) {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set_config(cfg);
        self.on
            .store(cfg.per_second > 0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `ip` is never limited (a trusted peer, or in `limits.exempt`).
    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.contains(ip)
    }

    /// Counts the message `data` from `ip` if it is a request (CRLF keepalives are
    /// taken out before this; responses pass uncounted). A refusal is counted in
    /// `/metrics` and logged at most once a minute per source.
    pub(crate) fn admit(&self, ip: IpAddr, data: &[u8]) -> Admit {
        if !self.on.load(std::sync::atomic::Ordering::Relaxed)
            || is_response(data)
            || self.exempt.contains(ip)
        {
            return Admit::Pass;
        }
        let now = Instant::now();
        let verdict = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check_weighted(ip, now, weight(data.len()));
        let Verdict::Banned { retry_after, .. } = verdict else {
            return Admit::Pass;
        };
        self.metrics.sip_rate_limited();
        if self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow("rate-limit", ip, now)
        {
            tracing::warn!(
                source = %ip,
                "source past limits.rate: banned (503 on connections, ignored over UDP; logged at most once a minute per source)"
            );
        }
        Admit::Refused { retry_after }
    }

    /// [`Self::admit`] for a message that came on a connection: the 503 to send back
    /// when it is refused (`None` when it passes, and when a refused message gets no
    /// answer: an ACK, or a request without the lines to copy).
    pub(crate) fn admit_on_connection(
        &self,
        ip: IpAddr,
        data: &[u8],
        server: &str,
    ) -> Result<(), Option<Vec<u8>>> {
        match self.admit(ip, data) {
            Admit::Pass => Ok(()),
            Admit::Refused { retry_after } => Err(crate::sip::refusal_response(
                data,
                503,
                "Service Unavailable",
                &[(HeaderName::RetryAfter, retry_after.to_string())],
                server,
            )),
        }
    }
}

/// Whether `data` is a SIP response (its first line, after any CRLF, starts `SIP/`).
fn is_response(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    data[start..].starts_with(b"SIP/")
}

/// What a message of `len` bytes counts as against the rate: one request per started
/// [`BYTES_PER_REQUEST`].
fn weight(len: usize) -> u32 {
    u32::try_from(len.div_ceil(BYTES_PER_REQUEST).max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OPTIONS: &[u8] = b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP x.invalid;branch=z9hG4bK1\r\n\
        From: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: r1\r\nCSeq: 1 OPTIONS\r\n\r\n";

    fn gate(exempt: &str) -> SourceGate {
        let cfg = RateConfig {
            per_second: 5,
            burst: 10,
            ban: Duration::from_secs(30),
        };
        SourceGate::new(
            cfg,
            TrustedPeers::new(vec![exempt.parse().unwrap()]),
            Arc::default(),
        )
    }

    #[test]
    fn past_the_burst_a_source_is_refused_with_a_503_built_from_the_head() {
        let g = gate("127.0.0.2");
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(g.admit_on_connection(ip, OPTIONS, "sipwasm"), Ok(()));
        }
        let refused = g
            .admit_on_connection(ip, OPTIONS, "sipwasm")
            .unwrap_err()
            .expect("an answer");
        let text = String::from_utf8(refused).unwrap();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 30\r\n"), "{text}");
        assert!(
            text.contains("\r\nTo: <sip:localhost>;tag=refused\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nCall-ID: r1\r\n"), "{text}");
        // Malformed requests count too, and are refused the same way (no parse).
        assert!(matches!(
            g.admit(ip, b"INVITE garbage\r\n\r\n"),
            Admit::Refused { .. }
        ));
        // An ACK is refused with no answer; a response is never counted.
        let ack = b"ACK sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK2\r\nCSeq: 1 ACK\r\n\r\n";
        assert_eq!(g.admit_on_connection(ip, ack, "s"), Err(None));
        assert_eq!(g.admit(ip, b"SIP/2.0 200 OK\r\n\r\n"), Admit::Pass);
        assert_eq!(g.metrics.sip_rate_limited_count(), 3);
        // Another source, and an exempt one, are served.
        assert_eq!(g.admit("192.0.2.8".parse().unwrap(), OPTIONS), Admit::Pass);
        let edge: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..50 {
            assert_eq!(g.admit(edge, OPTIONS), Admit::Pass);
        }
    }

    /// A large request counts once per started 4 KB: a 16 KB one as four of the burst
    /// of ten, 4,097 bytes as two; anything up to 4 KB as one; one larger than the whole burst still
    /// passes a fresh bucket (as one burst).
    #[test]
    fn a_large_request_counts_once_per_started_four_kilobytes() {
        let g = gate("127.0.0.2");
        let big = |len: usize| {
            let mut m = OPTIONS.to_vec();
            m.resize(len, b' ');
            m
        };
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // 4 + 1 + 2 + 3 = 10.
        assert_eq!(g.admit(ip, &big(16 * 1024)), Admit::Pass);
        assert_eq!(g.admit(ip, &big(4096)), Admit::Pass);
        assert_eq!(g.admit(ip, &big(4097)), Admit::Pass);
        assert_eq!(g.admit(ip, &big(12 * 1024)), Admit::Pass);
        assert!(matches!(g.admit(ip, OPTIONS), Admit::Refused { .. }));
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(g.admit(other, &big(4096)), Admit::Pass);
        }
        assert!(matches!(g.admit(other, OPTIONS), Admit::Refused { .. }));
        let third: IpAddr = "192.0.2.11".parse().unwrap();
        assert_eq!(g.admit(third, &big(64 * 1024)), Admit::Pass);
        assert!(matches!(g.admit(third, OPTIONS), Admit::Refused { .. }));
    }

    #[test]
    fn off_when_the_rate_is_zero() {
        let g = SourceGate::new(
            RateConfig {
                per_second: 0,
                burst: 0,
                ban: Duration::from_secs(60),
            },
            TrustedPeers::default(),
            Arc::default(),
        );
        for _ in 0..1000 {
            assert_eq!(g.admit("192.0.2.9".parse().unwrap(), OPTIONS), Admit::Pass);
        }
    }
}
