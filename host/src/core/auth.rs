//! HTTP/SIP Digest challenges (RFC 7616, RFC 3261 section 22): nonces made and checked
//! by the host with a secret key, so no per-nonce state is kept (sans-IO: the caller
//! passes the time).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::proxy::hex;

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

impl NonceKey {
    /// The challenge header values for SIP (RFC 3261 section 22, RFC 8760), one per
    /// algorithm in `algorithms` (`MD5`, `SHA-256`), in that order. JsSIP and many
    /// phones know MD5 alone and give up on a challenge list they misread, hence the
    /// server's default of MD5 only (`sip.digest-algorithms`).
    pub fn sip_challenge_headers(
        &self,
        realm: &str,
        now_unix: u64,
        stale: bool,
        algorithms: &[String],
    ) -> Vec<String> {
        let nonce = self.issue(realm, now_unix);
        let realm = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        algorithms
            .iter()
            .map(|alg| {
                format!(
                    "Digest realm={realm}, qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\"{stale}"
                )
            })
            .collect()
    }

    /// Checks Digest credentials (`Authorization` / `Proxy-Authorization` values) of a
    /// request with `method` for `realm` against `password`.
    pub fn verify<'a>(
        &self,
        credentials: impl IntoIterator<Item = &'a str>,
        method: &str,
        realm: &str,
        password: &str,
        now_unix: u64,
        max_age_secs: u64,
    ) -> DigestVerdict {
        let Some(c) = credentials
            .into_iter()
            .find(|v| digest_param(v, "realm").as_deref() == Some(realm))
        else {
            return DigestVerdict::Missing;
        };
        let field = |name| digest_param(c, name);
        let (Some(username), Some(nonce), Some(uri), Some(response)) = (
            field("username"),
            field("nonce"),
            field("uri"),
            field("response"),
        ) else {
            return DigestVerdict::Invalid;
        };
        let fresh = match self.check(&nonce, realm, now_unix, max_age_secs) {
            NonceCheck::Invalid => return DigestVerdict::Invalid,
            NonceCheck::Stale => false,
            NonceCheck::Valid => true,
        };
        let algorithm = field("algorithm").unwrap_or_else(|| "MD5".into());
        let hash: fn(&str) -> String = if algorithm.eq_ignore_ascii_case("MD5") {
            |s| hex(&<md5::Md5 as md5::Digest>::digest(s.as_bytes()))
        } else if algorithm.eq_ignore_ascii_case("SHA-256") {
            |s| hex(&<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()))
        } else {
            return DigestVerdict::Invalid;
        };
        let ha1 = hash(&format!("{username}:{realm}:{password}"));
        let ha2 = hash(&format!("{method}:{uri}"));
        let expected = match field("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (field("nc"), field("cnonce")) else {
                    return DigestVerdict::Invalid;
                };
                hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            Some(_) => return DigestVerdict::Invalid,
            None => hash(&format!("{ha1}:{nonce}:{ha2}")),
        };
        let given = response.to_ascii_lowercase();
        let same = expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        match (same, fresh) {
            (false, _) => DigestVerdict::Invalid,
            (true, true) => DigestVerdict::Valid,
            (true, false) => DigestVerdict::Stale,
        }
    }
}

/// What Digest credentials say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestVerdict {
    /// Correct for the password, with a fresh nonce of ours.
    Valid,
    /// Correct, but the nonce has expired: challenge again with `stale=true`.
    Stale,
    /// Wrong (password, nonce not ours, unknown algorithm, missing fields).
    Invalid,
    /// No credentials for the realm.
    Missing,
}

/// A parameter of a Digest credentials value (`Digest username="a", nonce="x"`),
/// unquoted; `None` when absent or the value is not Digest.
pub fn digest_param(value: &str, name: &str) -> Option<String> {
    let rest = value.trim_start();
    let rest = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &rest[6..])?;
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let key = rest[start..i].trim();
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut val = String::new();
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let c = rest[i..].chars().next()?;
                val.push(c);
                i += c.len_utf8();
            }
            i += 1;
        } else {
            let s = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            val.push_str(rest[s..i].trim());
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(val);
        }
    }
    None
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

    /// RFC 2617 section 3.5's example, adapted to a nonce of ours.
    #[test]
    fn digest_responses_are_verified() {
        let k = NonceKey::new([9; 32]);
        let nonce = k.issue("sipwasm", 1_000);
        let md5 = |s: &str| hex(&<md5::Md5 as md5::Digest>::digest(s.as_bytes()));
        let ha1 = md5("alice:sipwasm:secret");
        let ha2 = md5("REGISTER:sip:localhost");
        let response = md5(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
        let creds = format!(
            "Digest username=\"alice\", realm=\"sipwasm\", nonce=\"{nonce}\", uri=\"sip:localhost\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\""
        );
        let v = |c: &str, pw: &str, now| k.verify([c], "REGISTER", "sipwasm", pw, now, 300);
        assert_eq!(v(&creds, "secret", 1_010), DigestVerdict::Valid);
        assert_eq!(v(&creds, "wrong", 1_010), DigestVerdict::Invalid);
        assert_eq!(v(&creds, "secret", 2_000), DigestVerdict::Stale);
        assert_eq!(
            k.verify([creds.as_str()], "INVITE", "sipwasm", "secret", 1_010, 300),
            DigestVerdict::Invalid,
            "the method is part of the digest"
        );
        assert_eq!(
            k.verify([creds.as_str()], "REGISTER", "other", "secret", 1_010, 300),
            DigestVerdict::Missing
        );
        let forged = creds.replace(&nonce, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(v(&forged, "secret", 1_010), DigestVerdict::Invalid);
        // SHA-256 and no qop (RFC 2069 style).
        let sha = |s: &str| hex(&<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()));
        let response = sha(&format!(
            "{}:{nonce}:{}",
            sha("alice:sipwasm:secret"),
            sha("REGISTER:sip:localhost")
        ));
        let creds = format!(
            "Digest username=\"alice\",realm=\"sipwasm\",nonce=\"{nonce}\",uri=\"sip:localhost\",response=\"{response}\",algorithm=SHA-256"
        );
        assert_eq!(v(&creds, "secret", 1_010), DigestVerdict::Valid);
        assert_eq!(
            v("Basic YWxpY2U6c2VjcmV0", "secret", 1_010),
            DigestVerdict::Missing
        );
    }

    #[test]
    fn sip_challenges_follow_the_configured_algorithms() {
        let k = NonceKey::new([1; 32]);
        let h = k.sip_challenge_headers("r", 5, true, &["MD5".into()]);
        assert_eq!(h.len(), 1);
        assert!(
            h[0].contains("algorithm=MD5") && h[0].contains("stale=true"),
            "{h:?}"
        );
        let h = k.sip_challenge_headers("r", 5, false, &["SHA-256".into(), "MD5".into()]);
        assert!(h[0].contains("algorithm=SHA-256") && h[1].contains("algorithm=MD5"));
    }

    #[test]
    fn digest_params() {
        let v = "Digest username=\"al\\\"ice\", realm=\"x, y\", nonce=abc, qop=auth";
        assert_eq!(digest_param(v, "username").as_deref(), Some("al\"ice"));
        assert_eq!(digest_param(v, "realm").as_deref(), Some("x, y"));
        assert_eq!(digest_param(v, "NONCE").as_deref(), Some("abc"));
        assert_eq!(digest_param(v, "qop").as_deref(), Some("auth"));
        assert_eq!(digest_param(v, "cnonce"), None);
        assert_eq!(digest_param("Basic abc", "realm"), None);
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
