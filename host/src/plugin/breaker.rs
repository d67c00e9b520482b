//! Suspending a plugin whose calls keep running into their deadline, sans-IO.
//!
//! A call that hits its deadline held an instance, a plugin-runtime thread and the
//! request for the whole deadline, to end in the failure policy anyway. When nearly
//! every call of a plugin does (the plugin waits on a service that is down, or a new
//! version loops), the [`Breaker`] suspends the plugin: its calls get the failure
//! policy at once (503 with `Retry-After` for `closed`, the built-in behaviour for
//! `open`) instead of after the deadline, and take no instance. After the suspension
//! one call goes through as a probe: in time, the plugin is back; at its deadline
//! again, the next suspension is twice as long (at most [`MAX_SUSPENSION`]).
//!
//! Only deadlines count: a trap or an invalid decision fails at once and costs
//! nothing to wait for. And one client cannot suspend a plugin for everyone with
//! requests crafted to be slow: it takes `suspend-after` calls at their deadline
//! within [`WINDOW`], from at least [`SOURCES`] source addresses (IPv6 per /64), and
//! nine in ten of all the plugin's calls finished in that window.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window the deadlines are counted in.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Source addresses (IPv4, IPv6 /64) the calls at their deadline must come from.
pub const SOURCES: usize = 4;
pub use crate::config::MAX_SUSPENSION;

/// Whether a call may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Run,
    /// Yes, as the probe after a suspension.
    Probe,
    /// No: the plugin is suspended for this long still.
    Suspended(Duration),
}

/// What a finished call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The plugin is suspended now, for this long.
    Suspended(Duration),
    /// The probe was in time: the plugin is back.
    Resumed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Serving,
    /// Suspended until `until`; the next suspension lasts `next`.
    Suspended {
        until: Instant,
        next: Duration,
    },
    /// A probe was let through at `since`.
    Probing {
        since: Instant,
        next: Duration,
    },
}

/// One plugin's record of its recent calls and whether it is suspended.
#[derive(Debug)]
pub struct Breaker {
    /// Calls at their deadline in one window that suspend the plugin (0: never).
    after: u32,
    /// The first suspension's length.
    first: Duration,
    /// How long a probe may take before another one is let through (the deadline,
    /// the time to wait for an instance and the outer grace, with room).
    probe_patience: Duration,
    state: State,
    window_start: Option<Instant>,
    finished: u32,
    timed_out: u32,
    sources: Vec<IpAddr>,
}

impl Breaker {
    /// Suspends for `first` after `after` calls at their deadline (0: never); a call
    /// takes at most `deadline` to run and as long again to wait for an instance.
    pub fn new(after: u32, first: Duration, deadline: Duration) -> Self {
        Self {
            after,
            first,
            probe_patience: deadline * 3 + Duration::from_secs(1),
            state: State::Serving,
            window_start: None,
            finished: 0,
            timed_out: 0,
            sources: Vec::with_capacity(SOURCES),
        }
    }

    /// Whether a call may run at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Serving => Admit::Run,
            State::Suspended { until, next } => {
                if now < until {
                    Admit::Suspended(until - now)
                } else {
                    self.state = State::Probing { since: now, next };
                    Admit::Probe
                }
            }
            State::Probing { since, next } => {
                if now.duration_since(since) >= self.probe_patience {
                    // The probe never reported (its caller went away): another one.
                    self.state = State::Probing { since: now, next };
                    Admit::Probe
                } else {
                    // Until the probe is back, the others are answered at once.
                    Admit::Suspended(Duration::from_secs(1))
                }
            }
        }
    }

    /// How long the plugin stays suspended still at `now`, if it is (while a probe is
    /// in flight: a second, an estimate).
    pub fn suspended_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Serving => None,
            State::Suspended { until, .. } => (now < until).then(|| until - now),
            State::Probing { .. } => Some(Duration::from_secs(1)),
        }
    }

    /// The probe let through at `now` will not run after all (no place for it): the
    /// next call to ask is the probe.
    pub fn cancel_probe(&mut self, now: Instant) {
        if let State::Probing { next, .. } = self.state {
            self.state = State::Suspended { until: now, next };
        }
    }

    /// A call that ran finished at `now`, at its deadline or not, for `source`.
    pub fn finished(
        &mut self,
        now: Instant,
        timed_out: bool,
        source: Option<IpAddr>,
    ) -> Option<Change> {
        if self.after == 0 {
            return None;
        }
        match self.state {
            State::Probing { next, .. } => {
                // The probe, or a call from before the suspension: either tells.
                self.reset_window(now);
                if timed_out {
                    self.state = State::Suspended {
                        until: now + next,
                        next: (next * 2).min(MAX_SUSPENSION),
                    };
                    return Some(Change::Suspended(next));
                }
                self.state = State::Serving;
                return Some(Change::Resumed);
            }
            // Calls that were running when the plugin was suspended.
            State::Suspended { .. } => return None,
            State::Serving => {}
        }
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            self.reset_window(now);
        }
        self.finished += 1;
        if !timed_out {
            return None;
        }
        self.timed_out += 1;
        if let Some(ip) = source {
            let key = crate::core::limits::source_key(ip);
            if self.sources.len() < SOURCES && !self.sources.contains(&key) {
                self.sources.push(key);
            }
        }
        let most = u64::from(self.timed_out) * 10 >= u64::from(self.finished) * 9;
        if self.timed_out >= self.after && most && self.sources.len() >= SOURCES {
            self.reset_window(now);
            self.state = State::Suspended {
                until: now + self.first,
                next: (self.first * 2).min(MAX_SUSPENSION),
            };
            return Some(Change::Suspended(self.first));
        }
        None
    }

    fn reset_window(&mut self, now: Instant) {
        self.window_start = Some(now);
        self.finished = 0;
        self.timed_out = 0;
        self.sources.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(50);

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    /// `n` calls at their deadline from `sources` addresses in turn, 1 ms apart.
    fn time_out(b: &mut Breaker, t: &mut Instant, n: u32, sources: u8) -> Option<Change> {
        let mut last = None;
        for i in 0..n {
            *t += Duration::from_millis(1);
            assert_ne!(b.admit(*t), Admit::Probe);
            if let Some(c) = b.finished(*t, true, ip((i % u32::from(sources)) as u8 + 1)) {
                last = Some(c);
            }
        }
        last
    }

    #[test]
    fn a_plugin_at_its_deadline_on_every_call_is_suspended_then_probed() {
        let mut b = Breaker::new(20, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        assert_eq!(time_out(&mut b, &mut t, 19, 8), None, "19 are not enough");
        assert_eq!(
            time_out(&mut b, &mut t, 1, 8),
            Some(Change::Suspended(Duration::from_secs(5)))
        );
        assert_eq!(b.suspended_for(t), Some(Duration::from_secs(5)));
        assert_eq!(b.admit(t), Admit::Suspended(Duration::from_secs(5)));
        t += Duration::from_secs(5);
        assert_eq!(b.admit(t), Admit::Probe);
        assert!(
            matches!(b.admit(t), Admit::Suspended(_)),
            "one probe at a time"
        );
        // The probe hits its deadline again: twice as long.
        t += DEADLINE;
        assert_eq!(
            b.finished(t, true, ip(1)),
            Some(Change::Suspended(Duration::from_secs(10)))
        );
        t += Duration::from_secs(5);
        assert!(matches!(b.admit(t), Admit::Suspended(_)));
        t += Duration::from_secs(5);
        assert_eq!(b.admit(t), Admit::Probe);
        t += DEADLINE;
        assert_eq!(
            b.finished(t, true, ip(1)),
            Some(Change::Suspended(Duration::from_secs(20)))
        );
        // ... and in time: back, and the next suspension is the first's length again.
        t += Duration::from_secs(20);
        assert_eq!(b.admit(t), Admit::Probe);
        assert_eq!(b.finished(t, false, ip(1)), Some(Change::Resumed));
        assert_eq!(b.admit(t), Admit::Run);
        assert_eq!(b.suspended_for(t), None);
        t += WINDOW;
        assert_eq!(
            time_out(&mut b, &mut t, 20, 8),
            Some(Change::Suspended(Duration::from_secs(5)))
        );
    }

    #[test]
    fn suspensions_double_up_to_a_minute() {
        let mut b = Breaker::new(1, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        time_out(&mut b, &mut t, 4, 4);
        let mut lengths = Vec::new();
        for _ in 0..6 {
            t += MAX_SUSPENSION;
            assert_eq!(b.admit(t), Admit::Probe);
            match b.finished(t, true, ip(1)) {
                Some(Change::Suspended(d)) => lengths.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(lengths, [10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn one_source_cannot_suspend_a_plugin_for_everyone() {
        let mut b = Breaker::new(20, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        assert_eq!(time_out(&mut b, &mut t, 500, 1), None);
        // Three addresses are not enough either, nor one IPv6 /64.
        assert_eq!(time_out(&mut b, &mut t, 500, 3), None);
        for i in 0..500u16 {
            t += Duration::from_millis(1);
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]);
            assert_eq!(b.finished(t, true, Some(ip)), None);
        }
        assert_eq!(b.admit(t), Admit::Run);
    }

    #[test]
    fn a_plugin_in_time_for_more_than_one_call_in_ten_is_not_suspended() {
        let mut b = Breaker::new(20, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        for i in 0..1000u32 {
            t += Duration::from_millis(1);
            // Four in five at the deadline, from many addresses.
            let slow = i % 5 != 0;
            assert_eq!(b.finished(t, slow, ip((i % 200) as u8)), None, "call {i}");
        }
        assert_eq!(b.admit(t), Admit::Run);
    }

    #[test]
    fn deadlines_spread_over_more_than_a_window_do_not_add_up() {
        let mut b = Breaker::new(20, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        for i in 0..100u32 {
            // One every 100 ms: 10 a window.
            t += Duration::from_millis(100);
            assert_eq!(b.finished(t, true, ip((i % 8) as u8)), None, "call {i}");
        }
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let mut b = Breaker::new(1, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        time_out(&mut b, &mut t, 4, 4);
        t += Duration::from_secs(5);
        assert_eq!(b.admit(t), Admit::Probe);
        t += Duration::from_millis(500);
        assert!(matches!(b.admit(t), Admit::Suspended(_)));
        t += Duration::from_secs(1);
        assert_eq!(b.admit(t), Admit::Probe);
        // One that could not run is handed on to the next call at once.
        b.cancel_probe(t);
        assert_eq!(b.admit(t), Admit::Probe);
    }

    #[test]
    fn zero_never_suspends() {
        let mut b = Breaker::new(0, Duration::from_secs(5), DEADLINE);
        let mut t = Instant::now();
        assert_eq!(time_out(&mut b, &mut t, 1000, 50), None);
        assert_eq!(b.admit(t), Admit::Run);
    }
}
