//! The user store: who may log in, as HA1 digests per realm, never passwords. One line
//! per user and realm, in the format of Apache's `htdigest` files with an optional
//! fourth field for SHA-256 (an `htdigest` file works as it is, MD5 only):
//!
//! ```text
//! # user:realm:MD5(user:realm:password)[:SHA-256(user:realm:password)]
//! alice:localhost:6f1ed002ab5595859014ebf0951522d9:5f1a4b…
//! ```
//!
//! `sipwasm user add NAME` writes it; the server reads it at start and again whenever
//! it changes (looked at most once a second), so an added user can log in at once.
//! A malformed file is refused naming its line: at start the server does not start;
//! later the previous contents stay in use and the error is logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use crate::hex::hex;

/// A user's HA1 digests in one realm, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha1 {
    /// `MD5(user:realm:password)`.
    pub md5: String,
    /// `SHA-256(user:realm:password)`, when the line has it.
    pub sha256: Option<String>,
}

impl Ha1 {
    /// The digests of a password.
    pub fn of(user: &str, realm: &str, password: &str) -> Self {
        let text = format!("{user}:{realm}:{password}");
        Self {
            md5: hex(&<md5::Md5 as md5::Digest>::digest(text.as_bytes())),
            sha256: Some(hex(&<sha2::Sha256 as sha2::Digest>::digest(
                text.as_bytes(),
            ))),
        }
    }

    /// The HA1 for a Digest `algorithm` (`MD5` or `SHA-256`), if the line has it.
    pub fn for_algorithm(&self, algorithm: &str) -> Option<&str> {
        if algorithm.eq_ignore_ascii_case("MD5") {
            Some(&self.md5)
        } else if algorithm.eq_ignore_ascii_case("SHA-256") {
            self.sha256.as_deref()
        } else {
            None
        }
    }

    /// Whether `password` is the one these digests were made from (SHA-256 when the
    /// line has it, else MD5), compared in constant time.
    pub fn matches(&self, user: &str, realm: &str, password: &str) -> bool {
        self.matches_digests(&Self::of(user, realm, password))
    }

    /// Whether `given` (the digests of a password, [`Ha1::of`]) are these.
    pub fn matches_digests(&self, given: &Self) -> bool {
        match (&self.sha256, &given.sha256) {
            (Some(s), Some(g)) => crate::auth::same(s.as_bytes(), g.as_bytes()),
            _ => crate::auth::same(self.md5.as_bytes(), given.md5.as_bytes()),
        }
    }
}

/// The parsed contents of a store file.
pub type Users = HashMap<(String, String), Ha1>;

/// Whether `s` may be a user or realm in the file: 1 to 256 bytes, no `:`, no control
/// characters (the separator and the line end).
pub fn name_is_valid(s: &str) -> bool {
    (1..=256).contains(&s.len()) && !s.contains(':') && !s.chars().any(char::is_control)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses a store file's text; an error names the file and line.
pub fn parse(text: &str, file: &Path) -> Result<Users, String> {
    let mut users = Users::new();
    let mut lines_of: HashMap<(String, String), usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let at = |why: &str| format!("{} line {n}: {why}", file.display());
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let (user, realm, md5, sha256) = match fields.as_slice() {
            [u, r, m] => (*u, *r, *m, None),
            [u, r, m, s] => (*u, *r, *m, Some(*s)),
            _ => {
                return Err(at(
                    "expected user:realm:md5-ha1 or user:realm:md5-ha1:sha256-ha1",
                ));
            }
        };
        if !name_is_valid(user) || !name_is_valid(realm) {
            return Err(at("empty or overlong user or realm"));
        }
        if !is_hex(md5, 32) {
            return Err(at("the MD5 HA1 is not 32 hex digits"));
        }
        if sha256.is_some_and(|s| !is_hex(s, 64)) {
            return Err(at("the SHA-256 HA1 is not 64 hex digits"));
        }
        let key = (user.to_string(), realm.to_string());
        if let Some(first) = lines_of.insert(key.clone(), n) {
            return Err(at(&format!(
                "{user} in realm {realm} again (first on line {first})"
            )));
        }
        users.insert(
            key,
            Ha1 {
                md5: md5.to_ascii_lowercase(),
                sha256: sha256.map(str::to_ascii_lowercase),
            },
        );
    }
    Ok(users)
}

/// Reads a store file; a missing file is an empty store.
pub fn read(path: &Path) -> Result<Users, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// How often the file's modification time is looked at, at most.
const LOOK_EVERY: Duration = Duration::from_secs(1);

struct Loaded {
    users: Users,
    /// The file's [`stamp`] when read (`None`: no file).
    stamp: Option<(u64, SystemTime, u64)>,
    looked: Instant,
}

/// The store the server checks logins against, read again when its file changes.
pub struct UserStore {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What tells a new version of the file: its inode (every `write` renames a new file
/// into place, so even a same-size change within one clock tick is seen), modification
/// time and length (an editor that rewrites in place).
fn stamp(path: &Path) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?, m.len()))
}

impl UserStore {
    /// Opens the store at `path` (which need not exist yet); a malformed file is an
    /// error naming its line.
    pub fn open(path: &Path) -> Result<Self, String> {
        let stamp = stamp(path);
        let users = read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                users,
                stamp,
                looked: Instant::now(),
            }),
        })
    }

    /// An empty store with no file (tools, tests).
    pub fn empty() -> Self {
        Self {
            path: PathBuf::new(),
            loaded: RwLock::new(Loaded {
                users: Users::new(),
                stamp: None,
                looked: Instant::now(),
            }),
        }
    }

    /// Reads the file again if it changed since it was last read (looked at most once
    /// a second). A malformed new version is logged; the previous one stays in use.
    fn refresh(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        {
            let l = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if l.looked.elapsed() < LOOK_EVERY {
                return;
            }
        }
        let mut l = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        if l.looked.elapsed() < LOOK_EVERY {
            return;
        }
        l.looked = Instant::now();
        let now = stamp(&self.path);
        if now == l.stamp {
            return;
        }
        match read(&self.path) {
            Ok(users) => {
                tracing::info!(file = %self.path.display(), users = users.len(), "user store read");
                l.users = users;
                l.stamp = now;
            }
            Err(e) => {
                // Logged once per change of the file.
                l.stamp = now;
                tracing::error!(
                    "user store not read again, the previous version stays in use: {e}"
                );
            }
        }
    }

    /// The digests of `user` in `realm`, if the store has them.
    pub fn lookup(&self, realm: &str, user: &str) -> Option<Ha1> {
        self.refresh();
        let l = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        l.users.get(&(user.to_string(), realm.to_string())).cloned()
    }

    /// Whether any user of `realm` is in the store now.
    pub fn has_users(&self, realm: &str) -> bool {
        self.refresh();
        let l = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        l.users.keys().any(|(_, r)| r == realm)
    }

    /// Users in the store now.
    pub fn len(&self) -> usize {
        self.refresh();
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .len()
    }

    /// Whether the store has no users.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes `users` to `path` in place of what it held: a temporary file (mode 0600)
/// renamed over it, so a reader sees the old or the new version, never half of one.
pub fn write(path: &Path, users: &Users) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut lines: Vec<String> = users
        .iter()
        .map(|((user, realm), h)| match &h.sha256 {
            Some(s) => format!("{user}:{realm}:{}:{s}", h.md5),
            None => format!("{user}:{realm}:{}", h.md5),
        })
        .collect();
    lines.sort();
    let mut text = String::from(
        "# sipwasm users: user:realm:MD5(user:realm:password):SHA-256(user:realm:password)\n\
         # Written by `sipwasm user`; an htdigest file works too (MD5 only).\n",
    );
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    // One temporary file per process: two writers never share one.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

/// `sipwasm user add`: sets `user`'s password in `realm` (both digests), adding the
/// user or replacing the old password. True when it replaced one.
pub fn add(path: &Path, user: &str, realm: &str, password: &str) -> Result<bool, String> {
    if !name_is_valid(user) {
        return Err(format!(
            "{user:?}: a user name is 1 to 256 characters, no `:` and no control characters"
        ));
    }
    if !name_is_valid(realm) {
        return Err(format!(
            "{realm:?}: a realm is 1 to 256 characters, no `:` and no control characters"
        ));
    }
    if password.is_empty() {
        return Err("an empty password".into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        crate::files::create_private_dir(dir).map_err(|e| format!("{e:#}"))?;
    }
    let _lock = Lock::take(path)?;
    let mut users = read(path)?;
    let replaced = users
        .insert(
            (user.to_string(), realm.to_string()),
            Ha1::of(user, realm, password),
        )
        .is_some();
    write(path, &users)?;
    Ok(replaced)
}

/// `sipwasm user remove`: removes `user` from `realm`. False when it was not there.
pub fn remove(path: &Path, user: &str, realm: &str) -> Result<bool, String> {
    let _lock = Lock::take(path)?;
    let mut users = read(path)?;
    let removed = users
        .remove(&(user.to_string(), realm.to_string()))
        .is_some();
    if removed {
        write(path, &users)?;
    }
    Ok(removed)
}

/// `sipwasm user list`: `user realm digests` lines, sorted.
pub fn list(path: &Path) -> Result<Vec<String>, String> {
    let users = read(path)?;
    let mut out: Vec<String> = users
        .iter()
        .map(|((u, r), h)| {
            let digests = if h.sha256.is_some() {
                "MD5, SHA-256"
            } else {
                "MD5"
            };
            format!("{u}\t{r}\t{digests}")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// An exclusive lock on `<store>.lock` while a `sipwasm user` command reads, changes
/// and writes the store: two at once would lose one's change.
struct Lock {
    /// Held open: the lock goes when it closes.
    _file: std::fs::File,
}

impl Lock {
    #[allow(unsafe_code, reason = "flock, which std does not wrap")]
    fn take(path: &Path) -> Result<Self, String> {
        use std::os::fd::AsRawFd as _;
        let lock = path.with_extension("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|e| format!("cannot open {}: {e}", lock.display()))?;
        // SAFETY: flock on a descriptor this File owns; released when it closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                lock.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self { _file: f })
    }
}

/// A password from the terminal with echo off (asked twice), or the first line of
/// standard input when it is not a terminal (scripts: `echo secret | sipwasm user add
/// alice`).
pub fn read_password(prompt: &str) -> Result<String, String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> Result<String, String> {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let echo = Echo::off();
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        drop(echo);
        eprintln!();
        read.map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask(prompt)?;
    let again = ask("Again: ")?;
    if first != again {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

/// The terminal's echo, off while this lives.
struct Echo(Option<libc::termios>);

impl Echo {
    #[allow(unsafe_code, reason = "tcgetattr/tcsetattr, which std does not wrap")]
    fn off() -> Self {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 or fails, and
        // tcsetattr only reads it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Self(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Self(Some(saved))
        }
    }
}

impl Drop for Echo {
    #[allow(unsafe_code, reason = "tcsetattr, which std does not wrap")]
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings tcgetattr gave for the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_as_rfc_2617_and_7616_make_it() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let h = Ha1::of("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(h.md5, "939e7578ed9e3c518a452acee763bce9");
        // RFC 7616 section 3.9.1: http-auth@example.org, SHA-256.
        let h = Ha1::of("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            h.sha256.as_deref(),
            Some("7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232")
        );
        assert!(h.matches("Mufasa", "http-auth@example.org", "Circle of Life"));
        assert!(!h.matches("Mufasa", "http-auth@example.org", "circle of life"));
        let md5_only = Ha1 {
            md5: h.md5.clone(),
            sha256: None,
        };
        assert!(md5_only.matches("Mufasa", "http-auth@example.org", "Circle of Life"));
        assert_eq!(md5_only.for_algorithm("sha-256"), None);
        assert_eq!(md5_only.for_algorithm("md5"), Some(h.md5.as_str()));
    }

    #[test]
    fn a_malformed_file_is_refused_naming_its_line() {
        let f = Path::new("/etc/users");
        let good = Ha1::of("alice", "r", "pw");
        let line = format!("alice:r:{}:{}", good.md5, good.sha256.clone().unwrap());
        let users = parse(&format!("# comment\n\n{line}\nbob:r:{}\n", good.md5), f).unwrap();
        assert_eq!(users.len(), 2);
        for (text, why) in [
            ("alice:r\n", "line 1: expected user:realm"),
            (
                &format!("# x\nalice:r:{}x\n", &good.md5[..31]),
                "line 2: the MD5 HA1",
            ),
            (&format!(":r:{}\n", good.md5), "line 1: empty or overlong"),
            (
                &format!("a:r:{}:abc\n", good.md5),
                "line 1: the SHA-256 HA1",
            ),
            (
                &format!("{line}\n{line}\n"),
                "line 2: alice in realm r again (first on line 1)",
            ),
        ] {
            let err = parse(text, f).unwrap_err();
            assert!(err.starts_with("/etc/users line"), "{err}");
            assert!(err.contains(why), "{err} / {why}");
        }
    }

    #[test]
    fn the_store_follows_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let store = UserStore::open(&path).unwrap();
        assert!(store.lookup("r", "alice").is_none(), "no file: no users");
        let mut users = Users::new();
        users.insert(("alice".into(), "r".into()), Ha1::of("alice", "r", "pw"));
        write(&path, &users).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Looked at again once a second at most.
        store.loaded.write().unwrap().looked = Instant::now() - LOOK_EVERY;
        assert!(
            store
                .lookup("r", "alice")
                .unwrap()
                .matches("alice", "r", "pw")
        );
        // A new password (a line of the same length) written at once is seen too.
        users.insert(("alice".into(), "r".into()), Ha1::of("alice", "r", "p2"));
        write(&path, &users).unwrap();
        store.loaded.write().unwrap().looked = Instant::now() - LOOK_EVERY;
        assert!(
            store
                .lookup("r", "alice")
                .unwrap()
                .matches("alice", "r", "p2")
        );
        // A broken version leaves the last good one in use.
        std::fs::write(&path, "broken\n").unwrap();
        store.loaded.write().unwrap().looked = Instant::now() - LOOK_EVERY;
        assert!(
            store
                .lookup("r", "alice")
                .unwrap()
                .matches("alice", "r", "p2")
        );
        assert!(UserStore::open(&path).unwrap_err().contains("line 1"));
    }
}
