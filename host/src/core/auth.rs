//! HTTP/SIP Digest challenges (RFC 7616, RFC 3261 section 22): nonces made and checked
//! by the host with a secret key, so no per-nonce state is kept (sans-IO: the caller
//! passes the time).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of a MAC kept in a nonce.
const MAC_LEN: usize = 16;

/// Issues and checks nonces: `base64url(issued_at_u64_be || HMAC(secret, issued_at || realm)[..16])`.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// A nonce's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Made by us for this realm and still fresh.
    Valid,
    /// Made by us but older than the allowed age: challenge again with `stale=true`.
    Stale,
    /// Not made by us (or for another realm).
    Invalid,
}

impl NonceKey {
    /// A key from 32 secret bytes (persisted in the data directory).
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    fn mac(&self, issued_at: u64, realm: &str) -> [u8; MAC_LEN] {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(&issued_at.to_be_bytes());
        m.update(realm.as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A nonce for `realm` issued at `now_unix` (seconds).
    pub fn issue(&self, realm: &str, now_unix: u64) -> String {
        let mut raw = Vec::with_capacity(8 + MAC_LEN);
        raw.extend_from_slice(&now_unix.to_be_bytes());
        raw.extend_from_slice(&self.mac(now_unix, realm));
        B64.encode(raw)
    }

    /// Checks a nonce presented for `realm` at `now_unix`; older than `max_age_secs` is stale.
    pub fn check(&self, nonce: &str, realm: &str, now_unix: u64, max_age_secs: u64) -> NonceCheck {
        let Ok(raw) = B64.decode(nonce) else {
            return NonceCheck::Invalid;
        };
        if raw.len() != 8 + MAC_LEN {
            return NonceCheck::Invalid;
        }
        let issued_at = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let expected = self.mac(issued_at, realm);
        // Constant-time comparison.
        let diff = expected
            .iter()
            .zip(&raw[8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || issued_at > now_unix.saturating_add(5) {
            return NonceCheck::Invalid;
        }
        if now_unix - issued_at.min(now_unix) > max_age_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    /// The `WWW-Authenticate` values for a challenge: SHA-256 first, then MD5 for
    /// clients that only know RFC 2617 (both with qop=auth).
    pub fn challenge_headers(&self, realm: &str, now_unix: u64, stale: bool) -> Vec<String> {
        let nonce = self.issue(realm, now_unix);
        let realm = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        ["SHA-256", "MD5"]
            .iter()
            .map(|alg| {
                format!(
                    "Digest realm={realm}, qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\"{stale}"
                )
            })
            .collect()
    }
}

/// Whether a realm can be put in a challenge: printable, at most 128 bytes.
pub fn realm_is_valid(realm: &str) -> bool {
    !realm.is_empty() && realm.len() <= 128 && realm.chars().all(|c| !c.is_control())
}

/// A quoted-string with `"` and `\` escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_life() {
        let k = NonceKey::new([7; 32]);
        let n = k.issue("sip", 1_000);
        assert_eq!(k.check(&n, "sip", 1_010, 300), NonceCheck::Valid);
        assert_eq!(k.check(&n, "sip", 1_400, 300), NonceCheck::Stale);
        assert_eq!(k.check(&n, "other", 1_010, 300), NonceCheck::Invalid);
        assert_eq!(
            NonceKey::new([8; 32]).check(&n, "sip", 1_010, 300),
            NonceCheck::Invalid
        );
        assert_eq!(k.check("garbage", "sip", 1_010, 300), NonceCheck::Invalid);
        let mut tampered = n.into_bytes();
        tampered[3] ^= 1;
        assert_ne!(
            k.check(std::str::from_utf8(&tampered).unwrap(), "sip", 1_010, 300),
            NonceCheck::Valid
        );
    }

    #[test]
    fn challenge_text() {
        let k = NonceKey::new([1; 32]);
        let h = k.challenge_headers("a \"b\"", 5, false);
        assert_eq!(h.len(), 2);
        assert!(h[0].starts_with(
            "Digest realm=\"a \\\"b\\\"\", qop=\"auth\", algorithm=SHA-256, nonce=\""
        ));
        assert!(h[1].contains("algorithm=MD5"));
        assert!(realm_is_valid("sipwasm"));
        assert!(!realm_is_valid("a\r\nb"));
        assert!(!realm_is_valid(""));
    }
}
