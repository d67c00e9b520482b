//! Named secret keys (`[keys.NAME]` in the configuration) that plugins sign and check
//! with, by name, without ever holding them (the `keys` import): a login plugin checks
//! a token an operator's web application minted, or signs the session cookie it sets.
//! HMAC-SHA-256 (RFC 2104); a plugin reaches only the keys its `keys` setting grants.
//!
//! A key is at least 32 bytes, written as hex in a file: the one `file` names, or one
//! the server makes on first start (`keys/NAME.key` in the data directory, mode 0600,
//! 32 random bytes), where the web application that mints tokens reads it too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fewest bytes a key may have (HMAC-SHA-256's output: RFC 2104 section 3).
pub const MIN_KEY_BYTES: usize = 32;
/// The most bytes a key file may hold, decoded.
pub const MAX_KEY_BYTES: usize = 1024;
/// The most data one sign or verify call takes.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// The shortest MAC `verify` compares: a truncated one down to 16 bytes
/// (RFC 2104 section 5 allows no less than half the output).
pub const MIN_MAC_BYTES: usize = 16;

/// The keys of the server, or those one plugin is granted.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, Arc<[u8]>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a key never reaches a log.
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

/// Why a key could not be loaded: the configuration key it comes from, and what went
/// wrong.
#[derive(Debug)]
pub struct KeyError {
    /// `keys.NAME.file` or `keys.NAME`.
    pub key: String,
    /// The file and what is wrong with it.
    pub message: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

/// Whether `name` may name a key (it becomes a file name): 1 to 64 letters, digits,
/// `-` and `_`.
pub fn name_is_valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyRing {
    /// Loads each configured key from its file, or from `data_dir/keys/NAME.key`,
    /// making that one when it does not exist yet.
    pub fn load<'a>(
        configured: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>,
        data_dir: &Path,
    ) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for (name, file) in configured {
            let key = match file {
                Some(path) => read_key(path).map_err(|message| KeyError {
                    key: format!("keys.{name}.file"),
                    message,
                })?,
                None => {
                    let path = data_dir.join("keys").join(format!("{name}.key"));
                    load_or_make(&path).map_err(|message| KeyError {
                        key: format!("keys.{name}"),
                        message,
                    })?
                }
            };
            keys.insert(name.to_string(), Arc::from(key));
        }
        Ok(Self { keys })
    }

    /// A ring of the given keys (tests, tools).
    pub fn from_keys(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self {
            keys: keys.into_iter().map(|(n, k)| (n, Arc::from(k))).collect(),
        }
    }

    /// The keys among `names` (what one plugin is granted).
    pub fn granted(&self, names: &[String]) -> Self {
        Self {
            keys: self
                .keys
                .iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(n, k)| (n.clone(), k.clone()))
                .collect(),
        }
    }

    /// The key names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    fn mac(&self, key: &str) -> Option<Hmac<Sha256>> {
        let k = self.keys.get(key)?;
        Some(Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes keys of any length"))
    }

    /// HMAC-SHA-256 of `data` under `key`, or why not.
    pub fn sign(&self, key: &str, data: &[u8]) -> Result<[u8; 32], String> {
        if data.len() > MAX_DATA_BYTES {
            return Err(format!(
                "data of {} bytes is longer than {MAX_DATA_BYTES}",
                data.len()
            ));
        }
        let mut mac = self
            .mac(key)
            .ok_or_else(|| format!("no key {key:?} granted to this plugin"))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().into())
    }

    /// Whether `mac` is the HMAC-SHA-256 of `data` under `key`, whole or its first
    /// [`MIN_MAC_BYTES`] or more bytes; compared in constant time.
    pub fn verify(&self, key: &str, data: &[u8], mac: &[u8]) -> bool {
        if data.len() > MAX_DATA_BYTES || !(MIN_MAC_BYTES..=32).contains(&mac.len()) {
            return false;
        }
        let Some(mut m) = self.mac(key) else {
            return false;
        };
        m.update(data);
        m.verify_truncated_left(mac).is_ok()
    }
}

/// A key file's bytes: hex (surrounding white space ignored).
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(text.trim()).map_err(|why| format!("{}: {why}", path.display()))
}

fn decode(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not a key in hex (an even number of 0-9, a-f)".into());
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16).expect("checked hex") as u8;
            digit(pair[0]) << 4 | digit(pair[1])
        })
        .collect();
    if bytes.len() < MIN_KEY_BYTES {
        return Err(format!(
            "a key of {} bytes; at least {MIN_KEY_BYTES} (64 hex digits)",
            bytes.len()
        ));
    }
    if bytes.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key of {} bytes; at most {MAX_KEY_BYTES}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The key in `path`, made (32 random bytes, mode 0600) when there is none.
fn load_or_make(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::metadata(path) {
        Ok(_) => read_key(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().expect("keys/NAME.key has a parent");
            crate::files::create_private_dir(dir).map_err(|e| format!("{e:#}"))?;
            let mut key = [0u8; MIN_KEY_BYTES];
            getrandom::fill(&mut key).map_err(|e| format!("no randomness for a key: {e}"))?;
            crate::files::create_private_file(path, crate::hex::hex(&key).as_bytes())
                .map_err(|e| format!("{e:#}"))?;
            tracing::info!(file = %path.display(), "key made");
            Ok(key.to_vec())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::from_keys([("login".to_string(), vec![7u8; 32])])
    }

    #[test]
    fn sign_and_verify_whole_or_truncated() {
        let r = ring();
        let mac = r.sign("login", b"1700000000:alice").unwrap();
        assert!(r.verify("login", b"1700000000:alice", &mac));
        assert!(r.verify("login", b"1700000000:alice", &mac[..16]));
        assert!(!r.verify("login", b"1700000000:alice", &mac[..15]));
        assert!(!r.verify("login", b"1700000000:mallory", &mac));
        let mut bad = mac;
        bad[31] ^= 1;
        assert!(!r.verify("login", b"1700000000:alice", &bad));
        // RFC 4231 test case 2 (a key shorter than ours, through the same HMAC).
        let short = KeyRing::from_keys([("k".to_string(), b"Jefe".to_vec())]);
        let mac = short.sign("k", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            crate::hex::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_key_not_granted_signs_and_verifies_nothing() {
        let r = ring().granted(&["other".to_string()]);
        assert!(r.sign("login", b"x").is_err());
        let mac = ring().sign("login", b"x").unwrap();
        assert!(!r.verify("login", b"x", &mac));
        assert_eq!(ring().granted(&["login".into()]).names().count(), 1);
        assert_eq!(format!("{:?}", ring()), "{\"login\"}");
    }

    #[test]
    fn data_over_the_bound_is_refused() {
        let big = vec![0u8; MAX_DATA_BYTES + 1];
        assert!(ring().sign("login", &big).is_err());
        let mac = ring().sign("login", &big[..MAX_DATA_BYTES]).unwrap();
        assert!(!ring().verify("login", &big, &mac));
    }

    #[test]
    fn key_files_are_hex_of_32_bytes_or_more() {
        assert!(decode(&"ab".repeat(32)).is_ok());
        assert!(
            decode(&"ab".repeat(31))
                .unwrap_err()
                .contains("at least 32")
        );
        assert!(decode("zz").unwrap_err().contains("hex"));
        assert!(decode("abc").unwrap_err().contains("hex"));
        assert!(decode(&"ab".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn a_missing_key_is_made_private_and_then_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cfg = [("login", None)];
        let first = KeyRing::load(cfg, dir.path()).unwrap();
        let path = dir.path().join("keys/login.key");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = KeyRing::load(cfg, dir.path()).unwrap();
        assert_eq!(first.keys["login"], again.keys["login"]);
        // A broken file is named with its configuration key.
        std::fs::write(&path, "not hex").unwrap();
        let err = KeyRing::load(cfg, dir.path()).unwrap_err();
        assert_eq!(err.key, "keys.login");
        assert!(err.message.contains("login.key"), "{err}");
    }
}
