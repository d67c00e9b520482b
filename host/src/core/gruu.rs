//! Temporary GRUUs (RFC 5627 section 3.2): every registration refresh hands out a new
//! one, and all those handed out under one Call-ID reach the instance until it
//! registers with another Call-ID. None of them may reveal the AoR, the instance, or
//! that two of them belong together.
//!
//! Nothing is stored per GRUU. The bindings of an instance share a *key*: an instance
//! part derived from the AoR and instance (which the location indexes), and a call
//! part made anew whenever the earlier GRUUs are invalidated (a REGISTER under another
//! Call-ID, or the instance registering again after its last binding went). A
//! temporary GRUU's user part is `tgruu.` + base64url(nonce ‖ key ⊕ pad(nonce) ‖
//! mac(nonce, key)): opening it finds the instance's bindings, and it reaches them
//! while their call part is the one it was issued with. The nonce is derived from the
//! key and the REGISTER's Call-ID and CSeq, so a retransmission gets the same GRUU and
//! a 200 listing another binding repeats the one that binding was last given.
//!
//! Bindings from before this scheme have keys written `tgruu.<hex>`, which were
//! handed out as the GRUU itself: such a key stays in use, as written, while its
//! binding keeps its Call-ID.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hex::hex;

/// Bytes of each half of a key (instance part, call part).
const PART: usize = 8;
const KEY_LEN: usize = 2 * PART;
const NONCE_LEN: usize = 8;
const MAC_LEN: usize = 8;
const TOKEN_LEN: usize = NONCE_LEN + KEY_LEN + MAC_LEN;
/// The user part's prefix, which tells a temporary GRUU from a user name.
pub const PREFIX: &str = "tgruu.";

/// Makes and opens temporary GRUUs under the server secret.
#[derive(Clone)]
pub struct TempGruus {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for TempGruus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TempGruus(..)")
    }
}

impl TempGruus {
    /// With the server secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            keyed: Hmac::<Sha256>::new_from_slice(secret).expect("any key length"),
        }
    }

    fn prf(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        for p in parts {
            // Length-prefixed, so no two different part lists hash alike.
            m.update(&(p.len() as u32).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A new key for the temporary GRUUs of `instance` under `aor`, made when the
    /// binding `id` registered with `call_id` starts a new set of them; as stored with
    /// the binding (hex). The instance part is the same for every key of the instance;
    /// the call part differs from the earlier ones with the Call-ID or the binding id
    /// (ids start again with the server: only the same UA registering again under the
    /// same Call-ID and given the same id after a restart would get an old set back).
    pub fn key(&self, aor: &str, instance: &str, call_id: &str, id: u64) -> String {
        let i = self.prf(&[b"tgruu-instance", aor.as_bytes(), instance.as_bytes()]);
        let c = self.prf(&[
            b"tgruu-call",
            aor.as_bytes(),
            instance.as_bytes(),
            call_id.as_bytes(),
            &id.to_be_bytes(),
        ]);
        let mut key = [0u8; KEY_LEN];
        key[..PART].copy_from_slice(&i[..PART]);
        key[PART..].copy_from_slice(&c[..PART]);
        hex(&key)
    }

    /// The temporary GRUU user part handed out for a binding with key `key` (as
    /// stored) by the REGISTER with `call_id` and CSeq `cseq`. A key from before this
    /// scheme is its own GRUU. `None` for a key that is neither (a damaged store).
    pub fn issue(&self, key: &str, call_id: &str, cseq: u32) -> Option<String> {
        if is_legacy_key(key) {
            return Some(key.to_string());
        }
        let key = key_bytes(key)?;
        let n = self.prf(&[
            b"tgruu-nonce",
            &key,
            call_id.as_bytes(),
            &cseq.to_be_bytes(),
        ]);
        let nonce = &n[..NONCE_LEN];
        let pad = self.prf(&[b"tgruu-pad", nonce]);
        let mac = self.prf(&[b"tgruu-mac", nonce, &key]);
        let mut token = [0u8; TOKEN_LEN];
        token[..NONCE_LEN].copy_from_slice(nonce);
        for (i, k) in key.iter().enumerate() {
            token[NONCE_LEN + i] = k ^ pad[i];
        }
        token[NONCE_LEN + KEY_LEN..].copy_from_slice(&mac[..MAC_LEN]);
        let mut user = String::with_capacity(PREFIX.len() + 43);
        user.push_str(PREFIX);
        B64.encode_string(token, &mut user);
        Some(user)
    }

    /// Opens a user part made by [`TempGruus::issue`] under this secret: `None` for
    /// anything else (a user name, a forgery, another server's GRUU).
    pub fn open(&self, user: &str) -> Option<Opened> {
        let body = user.strip_prefix(PREFIX)?;
        if is_legacy_key(user) {
            return Some(Opened {
                index: user.to_string(),
                call: None,
            });
        }
        let mut token = [0u8; TOKEN_LEN];
        match B64.decode_slice(body, &mut token) {
            Ok(TOKEN_LEN) => {}
            _ => return None,
        }
        let nonce = &token[..NONCE_LEN];
        let pad = self.prf(&[b"tgruu-pad", nonce]);
        let mut key = [0u8; KEY_LEN];
        for (i, k) in key.iter_mut().enumerate() {
            *k = token[NONCE_LEN + i] ^ pad[i];
        }
        let want = self.prf(&[b"tgruu-mac", nonce, &key]);
        // Compared in constant time: the MAC is what makes it unforgeable.
        let diff = want[..MAC_LEN]
            .iter()
            .zip(&token[NONCE_LEN + KEY_LEN..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return None;
        }
        let key = hex(&key);
        Some(Opened {
            index: key[..2 * PART].to_string(),
            call: Some(key[2 * PART..].to_string()),
        })
    }
}

/// A temporary GRUU of ours, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The instance it names, as the location indexes keys ([`index_key`]).
    pub index: String,
    /// The Call-ID part it was issued under (`None` for a key from before this
    /// scheme, which names one binding by itself).
    call: Option<String>,
}

impl Opened {
    /// Whether it reaches a binding of its instance whose key is `stored`: one
    /// registered under the Call-ID it was issued under.
    pub fn reaches(&self, stored: &str) -> bool {
        match &self.call {
            Some(call) => stored.len() == 2 * KEY_LEN && stored[2 * PART..] == **call,
            None => stored == self.index,
        }
    }
}

/// How the location indexes a stored key: by its instance part (a key from before
/// this scheme, whole).
pub fn index_key(stored: &str) -> &str {
    if is_legacy_key(stored) || stored.len() != 2 * KEY_LEN {
        stored
    } else {
        &stored[..2 * PART]
    }
}

/// Whether a stored key was handed out as a GRUU itself (made before this scheme:
/// `tgruu.` and 24 hex digits).
pub fn is_legacy_key(stored: &str) -> bool {
    stored
        .strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 24 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn key_bytes(stored: &str) -> Option<[u8; KEY_LEN]> {
    let h = stored.as_bytes();
    if h.len() != KEY_LEN * 2 {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, pair) in h.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gruus() -> TempGruus {
        TempGruus::new(&[7; 32])
    }

    #[test]
    fn each_refresh_gets_a_new_one_and_all_of_a_call_id_reach_the_instance() {
        let g = gruus();
        let key = g.key("sip:alice@example.com", "urn:uuid:1", "call-1", 1);
        let first = g.issue(&key, "c", 1).unwrap();
        let second = g.issue(&key, "c", 2).unwrap();
        assert_ne!(first, second, "a refresh hands out a new temporary GRUU");
        assert_eq!(
            first,
            g.issue(&key, "c", 1).unwrap(),
            "a retransmission gets the same"
        );
        let again = g.key("sip:alice@example.com", "urn:uuid:1", "call-2", 2);
        assert_eq!(
            index_key(&again),
            index_key(&key),
            "one instance, one index"
        );
        for user in [&first, &second] {
            assert!(user.starts_with(PREFIX));
            let opened = g.open(user).unwrap();
            assert_eq!(opened.index, index_key(&key));
            assert!(opened.reaches(&key));
            // The instance registered again under another Call-ID: not any more.
            assert!(!opened.reaches(&again));
        }
        // Nothing in them links them to each other, the AoR or the key.
        let body = |u: &str| B64.decode(&u[PREFIX.len()..]).unwrap();
        let (a, b) = (body(&first), body(&second));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 6, "{same} bytes in common");
        assert!(!first.contains("alice") && !first.contains(index_key(&key)));
        // Another instance or AoR has another index.
        assert_ne!(
            index_key(&g.key("sip:alice@example.com", "urn:uuid:2", "call-1", 1)),
            index_key(&key)
        );
        assert_ne!(
            index_key(&g.key("sip:bob@example.com", "urn:uuid:1", "call-1", 1)),
            index_key(&key)
        );
    }

    #[test]
    fn forged_damaged_and_foreign_ones_do_not_open() {
        let g = gruus();
        let key = g.key("sip:alice@example.com", "urn:uuid:1", "call-1", 1);
        let user = g.issue(&key, "c", 5).unwrap();
        // Each character changed in turn (nonce, encrypted key, MAC).
        for pos in PREFIX.len()..user.len() {
            let mut bytes = user.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            assert!(g.open(&forged).is_none(), "{forged}");
        }
        // Another server's secret.
        assert!(TempGruus::new(&[8; 32]).open(&user).is_none());
        for bad in [
            "alice",
            "tgruu.",
            "tgruu.!!",
            "tgruu.AAAA",
            &format!("{user}A"),
            &key,
        ] {
            assert!(g.open(bad).is_none(), "{bad}");
        }
        assert!(g.issue("damaged", "c", 1).is_none());
    }

    #[test]
    fn a_key_from_before_is_its_own_gruu() {
        let g = gruus();
        let legacy = "tgruu.0123456789abcdef01234567";
        assert!(is_legacy_key(legacy));
        assert_eq!(g.issue(legacy, "c", 9).as_deref(), Some(legacy));
        let opened = g.open(legacy).unwrap();
        assert_eq!(opened.index, index_key(legacy));
        assert!(opened.reaches(legacy));
        assert!(!opened.reaches("tgruu.0123456789abcdef01234568"));
        let key = g.key("sip:a@b", "i", "c", 1);
        assert!(!is_legacy_key(&key));
        assert!(!opened.reaches(&key));
        assert!(
            !g.open(&g.issue(&key, "c", 1).unwrap())
                .unwrap()
                .reaches(legacy)
        );
    }
}
