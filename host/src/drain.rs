//! Drain mode: the server stops taking new connections and new dialogs, lets those in
//! progress finish, says when none is left, and stops then if asked to (the admin
//! API's `/api/v1/drain`, `sipwasm ctl drain`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use tokio::sync::Notify;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The drain state shared by the listeners, the admin API and the server's run loop.
#[derive(Debug, Default)]
pub struct Drain {
    on: AtomicBool,
    /// When draining began (Unix seconds); 0 when not draining.
    since: AtomicU64,
    exit: AtomicBool,
    /// With `exit`: stop by then (Unix seconds) even if calls are left; 0: no limit.
    exit_by: AtomicU64,
    /// New connections closed at accept while draining.
    refused: AtomicU64,
    /// Wakes the run loop's watch for the end of the drain.
    changed: Notify,
}

impl Drain {
    /// Starts draining (again: keeps the first start time); `exit`: stop the server
    /// once no dialog or transaction is left (`None`: as asked before, else no);
    /// `within`: with `exit`, stop after this many seconds even if calls are left
    /// (`None`: as asked before, else no limit).
    pub fn start(&self, exit: Option<bool>, within: Option<u64>) {
        let now = unix_now();
        if !self.on.swap(true, Relaxed) {
            self.since.store(now.max(1), Relaxed);
        }
        if let Some(exit) = exit {
            self.exit.store(exit, Relaxed);
            if !exit {
                // A later exit starts without an earlier time limit.
                self.exit_by.store(0, Relaxed);
            }
        }
        if let Some(secs) = within {
            self.exit_by.store(now.saturating_add(secs).max(1), Relaxed);
        }
        self.changed.notify_waiters();
    }

    /// When the server stops at the latest when draining to exit (Unix seconds).
    pub fn exit_by(&self) -> Option<u64> {
        Some(self.exit_by.load(Relaxed)).filter(|t| *t > 0 && self.exit_when_empty())
    }

    /// Whether a drain to exit has reached its time limit.
    pub fn out_of_time(&self) -> bool {
        self.exit_by().is_some_and(|t| unix_now() >= t)
    }

    /// Stops draining: new connections and dialogs are taken again.
    pub fn stop(&self) {
        self.on.store(false, Relaxed);
        self.exit.store(false, Relaxed);
        self.exit_by.store(0, Relaxed);
        self.since.store(0, Relaxed);
        self.changed.notify_waiters();
    }

    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Whether the server stops once drained.
    pub fn exit_when_empty(&self) -> bool {
        self.exit.load(Relaxed)
    }

    /// When draining began (Unix seconds).
    pub fn since(&self) -> Option<u64> {
        Some(self.since.load(Relaxed)).filter(|s| *s > 0)
    }

    /// Counts a connection closed at accept because the server drains.
    pub fn refused_connection(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// Connections closed at accept while draining, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Completes at the next start or stop.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
