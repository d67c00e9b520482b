//! The on-disk location store: bindings reached over UDP survive a restart (bindings
//! on connections die with them and are never stored). SQLite in the data directory,
//! written by one thread so the core driver never waits on the disk.

use std::hash::BuildHasher;
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
pub(crate) struct Store {
    /// To the writer; `None` once [`Store::close`] ran.
    tx: Option<mpsc::Sender<Op>>,
    /// The writer thread, joined by [`Store::close`].
    writer: Option<std::thread::JoinHandle<()>>,
    /// What was last sent for writing, per binding: a hash of (AoR, contact) to a hash
    /// of the other stored fields and the expiry written.
    written: crate::core::sharded::Sharded<u64, (u64, u64)>,
    /// Bindings removed so far (every 4,096, `written` gives back spare room).
    removals: u64,
    /// Seeded per process.
    hasher: foldhash::quality::RandomState,
}

/// A refresh that changes nothing stored but moves the expiry by less than this is
/// not written: clients refreshing in a tight loop cost no disk writes, and a restart
/// restores such a binding at most this much early.
const EXPIRY_SLACK_SECS: u64 = 5;

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
    params TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, contact)
)";

/// Columns added since the first schema, with their definitions: added to a store
/// written by an older version when it is opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[("params", "TEXT NOT NULL DEFAULT ''")];

/// Adds the [`ADDED_COLUMNS`] a store made by an older version lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('bindings')")?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            have.push(name?);
        }
    }
    for (name, definition) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE bindings ADD COLUMN {name} {definition}"
            ))?;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating) `dir/location.sqlite`; returns the store and the bindings it
    /// holds that have not expired, with their expiry mapped onto `now`.
    ///
    /// A file that is not a database, or a corrupt one, is moved aside
    /// (`location.sqlite.corrupt-<unix time>`, with its journal files) with an error
    /// naming both paths, and the server starts with an empty store: a damaged disk
    /// file costs the registrations it held, not the service.
    pub(crate) fn open(dir: &Path, now: Instant) -> anyhow::Result<(Self, Vec<Binding>)> {
        let path = dir.join("location.sqlite");
        let conn = match prepare(&path) {
            Ok(conn) => conn,
            Err(e) if is_corrupt(&e) => {
                let aside = dir.join(format!("location.sqlite.corrupt-{}", unix_now()));
                for suffix in ["", "-wal", "-shm"] {
                    let from = dir.join(format!("location.sqlite{suffix}"));
                    let to = std::path::PathBuf::from(format!("{}{suffix}", aside.display()));
                    if from.exists() {
                        std::fs::rename(&from, &to).with_context(|| {
                            format!("cannot move the corrupt {} aside", from.display())
                        })?;
                    }
                }
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    "the location store is corrupt ({e:#}): moved aside, starting with no stored registrations"
                );
                prepare(&path)?
            }
            Err(e) => return Err(e),
        };
        let wall = unix_now();
        conn.execute(
            "DELETE FROM bindings WHERE expires_unix <= ?1",
            params![wall as i64],
        )?;
        let mut loaded = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT aor, contact, q, expires_unix, call_id, cseq, instance, reg_id, path, local, remote, \
                 temp_gruu, user_agent, params FROM bindings",
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
                    r.get::<_, String>(13)?,
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
                    contact_params,
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
                    params: contact_params,
                    reach: Reach::Udp { local, remote },
                    transport: Transport::Udp,
                    temp_gruu,
                    user_agent: ua,
                });
            }
        }
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = std::thread::Builder::new()
            .name("sipwasm-store".into())
            .spawn(move || writer(conn, rx))
            .context("cannot start the store thread")?;
        Ok((
            Self {
                tx: Some(tx),
                writer: Some(writer),
                written: Default::default(),
                removals: 0,
                hasher: foldhash::quality::RandomState::default(),
            },
            loaded,
        ))
    }

    /// Records a saved binding (UDP ones only; others live and die with their flow).
    pub(crate) fn saved(&mut self, b: &Binding, now: Instant) {
        if !matches!(b.reach, Reach::Udp { .. }) {
            return;
        }
        let expires_unix = unix_now() + b.expires_at.saturating_duration_since(now).as_secs();
        if !self.changed(b, expires_unix) {
            return;
        }
        self.send(Op::Save(Box::new(b.clone()), expires_unix));
    }

    fn send(&self, op: Op) {
        match &self.tx {
            Some(tx) => {
                let _ = tx.send(op);
            }
            None => tracing::debug!("location store closed: a change after shutdown not written"),
        }
    }

    /// Writes everything queued and stops the writer (at shutdown): every answered
    /// REGISTER is on disk when this returns.
    pub(crate) fn close(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("the location store writer panicked");
            } else {
                tracing::info!("location store flushed");
            }
        }
    }

    /// Whether `b` with expiry `expires_unix` differs from what was last sent for
    /// writing (beyond [`EXPIRY_SLACK_SECS`] of expiry); remembers it if so.
    fn changed(&mut self, b: &Binding, expires_unix: u64) -> bool {
        let (key, fields) = hashes(&self.hasher, b);
        match self.written.get_mut(&key) {
            Some((f, exp)) if *f == fields && expires_unix.abs_diff(*exp) < EXPIRY_SLACK_SECS => {
                false
            }
            Some(entry) => {
                *entry = (fields, expires_unix);
                true
            }
            None => {
                self.written.insert(key, (fields, expires_unix));
                true
            }
        }
    }

    /// Records a removed binding.
    pub(crate) fn removed(&mut self, b: &Binding) {
        if matches!(b.reach, Reach::Udp { .. }) {
            self.written.remove(&hashes(&self.hasher, b).0);
            // A flood's registrations expired: give back the room they took.
            self.removals += 1;
            if self.removals.is_multiple_of(4096) {
                self.written.shrink();
            }
            self.send(Op::Remove(b.aor.clone(), b.contact.clone()));
        }
    }
}

/// Hashes of a binding's identity (AoR, contact) and of the stored fields that are
/// not its expiry, CSeq or refresh time.
fn hashes(state: &foldhash::quality::RandomState, b: &Binding) -> (u64, u64) {
    let fields = (
        b.q,
        &b.call_id,
        &b.instance,
        b.reg_id,
        &b.path,
        b.reach,
        &b.temp_gruu,
        &b.user_agent,
        &b.params,
    );
    (state.hash_one((&b.aor, &b.contact)), state.hash_one(fields))
}

/// Most operations written in one SQLite transaction.
const BATCH: usize = 4096;

/// Operations written since the memory was last given back after which an idle
/// second gives it back ([`give_back`]).
const GIVE_BACK_AFTER: usize = 16_384;

fn writer(mut conn: Connection, rx: mpsc::Receiver<Op>) {
    let mut since_given_back = 0usize;
    // Block for the first operation, then take what else is queued: one transaction per
    // batch, and only the last write per binding (refresh storms coalesce).
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if since_given_back >= GIVE_BACK_AFTER {
                    give_back(&conn);
                    since_given_back = 0;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
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
        since_given_back += keep.len();
        // A failed write (disk full, locked by another process) is tried again, with
        // a growing pause, before it is given up with an error.
        for attempt in 1..=WRITE_ATTEMPTS {
            match write_batch(&mut conn, &batch, &keep) {
                Ok(()) => break,
                Err(e) if attempt < WRITE_ATTEMPTS => {
                    tracing::warn!(attempt, "location store write failed, trying again: {e}");
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                Err(e) => tracing::error!(
                    writes = keep.len(),
                    "location store write failed {WRITE_ATTEMPTS} times, these changes are not on disk: {e}"
                ),
            }
        }
    }
}

/// After a burst of writes (a REGISTER flood, a restart's refreshes), once the store
/// is idle: SQLite's page cache (up to 2 MB, on the C allocator), the C allocator's
/// free memory and this thread's Rust heap go back to the system. They stayed: 2.3 MB
/// of the 8.8 MB the server held past its idle size after the attack bench's flood.
fn give_back(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
        tracing::debug!("location store: shrink_memory failed: {e}");
    }
    crate::memory::trim_c_heap();
    crate::memory::on_thread_park();
}

/// Tries of one batch before its changes are given up (pauses 0.2, 0.4, 0.8, 1.6 s).
const WRITE_ATTEMPTS: u32 = 5;

/// Opens `path` and brings its schema up to date.
fn prepare(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; {SCHEMA};"
    ))
    .with_context(|| format!("cannot prepare {}", path.display()))?;
    add_missing_columns(&conn).with_context(|| format!("cannot upgrade {}", path.display()))?;
    // Reading the table catches a damaged file the pragma and schema did not touch.
    conn.query_row("SELECT count(*) FROM bindings", [], |r| r.get::<_, i64>(0))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(conn)
}

/// Whether `e` says the file is not a database or is damaged.
fn is_corrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            )
        })
    })
}

fn write_batch(conn: &mut Connection, batch: &[Op], keep: &[usize]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut save = tx.prepare_cached(
            "INSERT OR REPLACE INTO bindings (aor, contact, q, expires_unix, call_id, cseq, instance, reg_id, \
             path, local, remote, temp_gruu, user_agent, params) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
                        b.params,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, now: Instant) -> Binding {
        Binding {
            id: 1,
            aor: "sip:alice@localhost".into(),
            contact: contact.into(),
            q: None,
            expires_at: now + Duration::from_secs(3600),
            updated: now,
            call_id: "c1".into(),
            cseq: 1,
            instance: None,
            reg_id: None,
            path: vec![],
            params: String::new(),
            reach: Reach::Udp {
                local: "127.0.0.1:5060".parse().unwrap(),
                remote: "127.0.0.1:5070".parse().unwrap(),
            },
            transport: Transport::Udp,
            temp_gruu: None,
            user_agent: None,
        }
    }

    #[test]
    fn a_corrupt_store_is_moved_aside_and_the_server_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![0x5au8; 8192];
        std::fs::write(dir.path().join("location.sqlite"), &garbage).unwrap();
        let (mut store, loaded) = Store::open(dir.path(), Instant::now()).unwrap();
        assert!(loaded.is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("location.sqlite.corrupt-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read(aside[0].path()).unwrap(),
            garbage,
            "kept as it was"
        );
        // The new store works.
        let now = Instant::now();
        store.saved(&binding("sip:alice@127.0.0.1:5070", now), now);
        store.close();
        let (_, loaded) = Store::open(dir.path(), Instant::now()).unwrap();
        assert_eq!(loaded.len(), 1);
    }

    #[test]
    fn close_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut store, _) = Store::open(dir.path(), now).unwrap();
        for i in 0..2000 {
            store.saved(
                &binding(&format!("sip:alice@127.0.0.1:{}", 10_000 + i), now),
                now,
            );
        }
        store.close();
        // Read at once, no waiting for a writer: it is done.
        let (_, loaded) = Store::open(dir.path(), Instant::now()).unwrap();
        assert_eq!(loaded.len(), 2000);
        // After close, changes are not written (and nothing panics).
        store.saved(&binding("sip:late@127.0.0.1:5070", now), now);
    }

    #[test]
    fn refreshes_within_the_slack_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut store, _) = Store::open(dir.path(), now).unwrap();
        let mut b = binding("sip:alice@127.0.0.1:5070", now);
        assert!(store.changed(&b, 1000));
        // A quick refresh: new CSeq, expiry one second later.
        b.cseq = 2;
        assert!(!store.changed(&b, 1001));
        // The expiry moved by the slack: written.
        assert!(store.changed(&b, 1000 + EXPIRY_SLACK_SECS));
        // Another field changed: written at once.
        b.user_agent = Some("phone/2".into());
        assert!(store.changed(&b, 1000 + EXPIRY_SLACK_SECS));
        // Another contact of the same AoR is its own record.
        assert!(store.changed(&binding("sip:alice@127.0.0.1:5080", now), 1000));
        // Once removed, the same binding is written again.
        store.removed(&b);
        assert!(store.changed(&b, 1000 + EXPIRY_SLACK_SECS));
        // So is one whose Contact parameters changed.
        b.params = ";+sip.ice".into();
        assert!(store.changed(&b, 1000 + EXPIRY_SLACK_SECS));
    }

    /// Opens the store in `dir` until it holds `n` bindings (the writer thread of the
    /// previous one may still be finishing), for at most two seconds.
    fn reopen_with(dir: &Path, n: usize) -> Vec<Binding> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (_, loaded) = Store::open(dir, Instant::now()).unwrap();
            if loaded.len() >= n || Instant::now() > deadline {
                return loaded;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn contact_parameters_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let (mut store, _) = Store::open(dir.path(), now).unwrap();
        let mut b = binding("sip:alice@127.0.0.1:5070", now);
        b.params = ";+sip.ice;+org.linphone.specs=\"lime\"".into();
        store.saved(&b, now);
        drop(store);
        let loaded = reopen_with(dir.path(), 1);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].params, b.params);
    }

    #[test]
    fn a_store_from_before_contact_parameters_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("location.sqlite")).unwrap();
        // The first schema, without `params`, holding one binding.
        conn.execute_batch(
            "CREATE TABLE bindings (aor TEXT NOT NULL, contact TEXT NOT NULL, q INTEGER, \
             expires_unix INTEGER NOT NULL, call_id TEXT NOT NULL, cseq INTEGER NOT NULL, \
             instance TEXT, reg_id INTEGER, path TEXT NOT NULL, local TEXT NOT NULL, \
             remote TEXT NOT NULL, temp_gruu TEXT, user_agent TEXT, PRIMARY KEY (aor, contact))",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bindings VALUES ('sip:bob@localhost', 'sip:bob@127.0.0.1:5070', NULL, ?1, \
             'c', 1, NULL, NULL, '[]', '127.0.0.1:5060', '127.0.0.1:5070', NULL, NULL)",
            params![unix_now() as i64 + 600],
        )
        .unwrap();
        drop(conn);
        let (mut store, loaded) = Store::open(dir.path(), Instant::now()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].contact, "sip:bob@127.0.0.1:5070");
        assert_eq!(loaded[0].params, "");
        // And it takes bindings with parameters from now on.
        let mut b = binding("sip:alice@127.0.0.1:5080", Instant::now());
        b.params = ";video".into();
        store.saved(&b, Instant::now());
        drop(store);
        let loaded = reopen_with(dir.path(), 2);
        let alice = loaded
            .iter()
            .find(|b| b.contact == "sip:alice@127.0.0.1:5080");
        assert_eq!(alice.map(|b| b.params.as_str()), Some(";video"));
    }
}
