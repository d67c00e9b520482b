//! Which connections may open: at most `limits.max-connections` in all (accepted and
//! outgoing, so file descriptors never run out under a flood), and at most
//! `limits.connections-per-source` from one source (an IPv4 address, an IPv6 /64;
//! trusted peers and `limits.exempt` spared). A connection past either is closed at
//! once, counted, and logged at most once a minute per source.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use foldhash::{HashMap, HashMapExt as _};

use crate::core::limits::{LogGate, source_key};
use crate::core::peers::TrustedPeers;
use crate::metrics::{ConnLimit, Metrics};

/// Counts open connections and admits new ones.
#[derive(Debug)]
pub(crate) struct Admission {
    cap: AtomicUsize,
    per_source: AtomicUsize,
    exempt: TrustedPeers,
    open: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, u32>>,
    log: Mutex<LogGate>,
    metrics: Arc<Metrics>,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    /// The source it counts against (none: outgoing or exempt).
    source: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.admission;
        a.open.fetch_sub(1, Ordering::Relaxed);
        a.metrics.connections_open(-1);
        if let Some(key) = self.source {
            let mut by = a.by_source.lock().expect("admission lock");
            if let Some(n) = by.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    by.remove(&key);
                }
            }
        }
    }
}

impl Admission {
    /// At most `cap` connections, `per_source` from one source (0: no such limit).
    pub(crate) fn new(
        cap: usize,
        per_source: usize,
        exempt: TrustedPeers,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cap: AtomicUsize::new(cap),
            per_source: AtomicUsize::new(per_source),
            exempt,
            open: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            log: Mutex::new(LogGate::new()),
            metrics,
        }
    }

    /// New caps (a configuration reload): connections open past them stay.
    pub(crate) fn reconfigure(&self, cap: usize, per_source: usize) {
        self.cap.store(cap, Ordering::Relaxed);
        self.per_source.store(per_source, Ordering::Relaxed);
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a place for an outgoing connection, if the cap allows.
    pub(crate) fn outgoing(self: &Arc<Self>) -> Option<Ticket> {
        if !self.take_global() {
            self.refused(ConnLimit::Total, None);
            return None;
        }
        Some(self.ticket(None))
    }

    /// Takes a place for a connection accepted from `ip`, if both limits allow.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        if !self.take_global() {
            self.refused(ConnLimit::Total, Some(ip));
            return None;
        }
        let per_source = self.per_source.load(Ordering::Relaxed);
        if per_source == 0 || self.exempt.contains(ip) {
            return Some(self.ticket(None));
        }
        let key = source_key(ip);
        let mut by = self.by_source.lock().expect("admission lock");
        let n = by.entry(key).or_insert(0);
        if *n as usize >= per_source {
            drop(by);
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused(ConnLimit::PerSource, Some(ip));
            return None;
        }
        *n += 1;
        drop(by);
        Some(self.ticket(Some(key)))
    }

    fn take_global(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .is_ok()
    }

    fn ticket(self: &Arc<Self>, source: Option<IpAddr>) -> Ticket {
        self.metrics.connections_open(1);
        Ticket {
            admission: self.clone(),
            source,
        }
    }

    /// Counts a hit of `what` from `ip`; whether its log line may go out now.
    fn hit(&self, what: ConnLimit, ip: IpAddr) -> bool {
        self.metrics.conn_limit(what);
        self.log
            .lock()
            .expect("admission lock")
            .allow(what.as_str(), ip, Instant::now())
    }

    fn refused(&self, what: ConnLimit, ip: Option<IpAddr>) {
        if self.hit(what, ip.unwrap_or(IpAddr::from([0, 0, 0, 0]))) {
            match (what, ip) {
                (ConnLimit::PerSource, Some(ip)) => tracing::warn!(
                    source = %ip,
                    limit = self.per_source.load(Ordering::Relaxed),
                    "connection closed at accept: limits.connections-per-source open from this source (logged at most once a minute per source)"
                ),
                (_, ip) => tracing::warn!(
                    source = ?ip,
                    limit = self.cap.load(Ordering::Relaxed),
                    "connection closed: limits.max-connections open (logged at most once a minute per source)"
                ),
            }
        }
    }

    /// Logs (rate-limited per source) that `what` closed a connection from `ip`, and
    /// counts it.
    pub(crate) fn timed_out(&self, what: ConnLimit, ip: IpAddr) {
        if self.hit(what, ip) {
            let why = match what {
                ConnLimit::WsPartial => {
                    "WebSocket connection closed: a frame or message left unfinished for limits.ws-partial-timeout"
                }
                _ => {
                    "connection closed: no complete SIP message within limits.first-message-timeout"
                }
            };
            tracing::warn!(source = %ip, "{why} (logged at most once a minute per source)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_and_total_caps_free_their_places_on_drop() {
        let exempt = TrustedPeers::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let a = Arc::new(Admission::new(5, 2, exempt, Arc::default()));
        let t1 = a.admit(ip("2001:db8::1")).unwrap();
        let _t2 = a.admit(ip("2001:db8::2")).unwrap();
        assert!(a.admit(ip("2001:db8::ffff")).is_none(), "same /64");
        let _other = a.admit(ip("2001:db8:0:1::1")).expect("another /64");
        assert_eq!(a.metrics.conn_limits(ConnLimit::PerSource), 1);
        drop(t1);
        let _t3 = a.admit(ip("2001:db8::3")).unwrap();
        // Exempt sources only count toward the total.
        let _e1 = a.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(a.open(), 4);
        let _o = a.outgoing().unwrap();
        assert!(a.admit(ip("127.0.0.1")).is_none(), "total reached");
        assert!(a.outgoing().is_none());
        assert_eq!(a.metrics.conn_limits(ConnLimit::Total), 2);
        assert_eq!(a.open(), 5);
    }
}
