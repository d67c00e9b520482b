//! The on-disk location store: bindings reached over UDP survive a restart (bindings
//! on connections die with them and are never stored). SQLite in the data directory,
//! written by one thread so the core driver never waits on the disk.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rusqlite::{Connection, params};

use crate::core::Transport;
use crate::core::location::{Binding, Reach};

/// A write for the store thread.
enum Op {
    Save(Box<Binding>, u64),
    Remove(String, String),
}

/// Writes bindings to SQLite on its own thread.
#[derive(Debug)]
pub struct Store {
    tx: mpsc::Sender<Op>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    q INTEGER,
    expires_unix INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    path TEXT NOT NULL,
    local TEXT NOT NULL,
    remote TEXT NOT NULL,
    temp_gruu TEXT,
    user_agent TEXT,
    PRIMARY KEY (aor, contact)
)";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating) `dir/location.sqlite`; returns the store and the bindings it
    /// holds that have not expired, with their expiry mapped onto `now`.
    pub fn open(dir: &Path, now: Instant) -> anyhow::Result<(Self, Vec<Binding>)> {
        let path = dir.join("location.sqlite");
        let conn =
            Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; {SCHEMA};"
        ))
        .with_context(|| format!("cannot prepare {}", path.display()))?;
        let wall = unix_now();
        conn.execute(
            "DELETE FROM bindings WHERE expires_unix <= ?1",
            params![wall as i64],
        )?;
        let mut loaded = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT aor, contact, q, expires_unix, call_id, cseq, instance, reg_id, path, local, remote, \
                 temp_gruu, user_agent FROM bindings",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                ))
            })?;
            for row in rows {
                let (
                    aor,
                    contact,
                    q,
                    exp,
                    call_id,
                    cseq,
                    instance,
                    reg_id,
                    path,
                    local,
                    remote,
                    temp_gruu,
                    ua,
                ) = row?;
                let (Ok(local), Ok(remote)) =
                    (local.parse::<SocketAddr>(), remote.parse::<SocketAddr>())
                else {
                    tracing::warn!(%aor, "stored binding with a bad address skipped");
                    continue;
                };
                let left = (exp as u64).saturating_sub(wall);
                loaded.push(Binding {
                    id: 0,
                    aor,
                    contact,
                    q: q.map(|q| q.clamp(0, 1000) as u16),
                    expires_at: now + Duration::from_secs(left),
                    updated: now,
                    call_id,
                    cseq: cseq.clamp(0, i64::from(u32::MAX)) as u32,
                    instance,
                    reg_id: reg_id.map(|r| r.clamp(0, i64::from(u32::MAX)) as u32),
                    path: serde_json::from_str(&path).unwrap_or_default(),
                    reach: Reach::Udp { local, remote },
                    transport: Transport::Udp,
                    temp_gruu,
                    user_agent: ua,
                });
            }
        }
        let (tx, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("sipwasm-store".into())
            .spawn(move || writer(conn, rx))
            .context("cannot start the store thread")?;
        Ok((Self { tx }, loaded))
    }

    /// Records a saved binding (UDP ones only; others live and die with their flow).
    pub fn saved(&self, b: &Binding, now: Instant) {
        if matches!(b.reach, Reach::Udp { .. }) {
            let expires_unix = unix_now() + b.expires_at.saturating_duration_since(now).as_secs();
            let _ = self.tx.send(Op::Save(Box::new(b.clone()), expires_unix));
        }
    }

    /// Records a removed binding.
    pub fn removed(&self, b: &Binding) {
        if matches!(b.reach, Reach::Udp { .. }) {
            let _ = self.tx.send(Op::Remove(b.aor.clone(), b.contact.clone()));
        }
    }
}

/// Most operations written in one SQLite transaction.
const BATCH: usize = 4096;

fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    // Block for the first operation, then take what else is queued: one transaction per
    // batch, and only the last write per binding (refresh storms coalesce).
    while let Ok(first) = rx.recv() {
        let mut batch: Vec<Op> = vec![first];
        batch.extend(rx.try_iter().take(BATCH));
        let mut last: std::collections::HashMap<(String, String), usize> =
            std::collections::HashMap::new();
        for (i, op) in batch.iter().enumerate() {
            let key = match op {
                Op::Save(b, _) => (b.aor.clone(), b.contact.clone()),
                Op::Remove(aor, contact) => (aor.clone(), contact.clone()),
            };
            last.insert(key, i);
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        if let Err(e) = write_batch(&mut conn, &batch, &keep) {
            tracing::error!("location store write failed: {e}");
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &[Op], keep: &[usize]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut save = tx.prepare_cached(
            "INSERT OR REPLACE INTO bindings (aor, contact, q, expires_unix, call_id, cseq, instance, reg_id, \
             path, local, remote, temp_gruu, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut remove =
            tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?;
        for &i in keep {
            match &batch[i] {
                Op::Save(b, expires_unix) => {
                    let Reach::Udp { local, remote } = b.reach else {
                        continue;
                    };
                    save.execute(params![
                        b.aor,
                        b.contact,
                        b.q.map(i64::from),
                        *expires_unix as i64,
                        b.call_id,
                        i64::from(b.cseq),
                        b.instance,
                        b.reg_id.map(i64::from),
                        serde_json::to_string(&b.path).unwrap_or_else(|_| "[]".into()),
                        local.to_string(),
                        remote.to_string(),
                        b.temp_gruu,
                        b.user_agent,
                    ])?;
                }
                Op::Remove(aor, contact) => {
                    remove.execute(params![aor, contact])?;
                }
            }
        }
    }
    tx.commit()
}
