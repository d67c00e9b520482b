//! HTTP/SIP Digest challenges (RFC 7616, RFC 3261 section 22): nonces made and checked
//! by the host with a secret key, so no per-nonce state is kept (sans-IO: the caller
//! passes the time); and [`guess_guard`], which throttles password guessing. Used by
//! the plugin host (web logins, the SIP router's challenges) and the HTTP answers;
//! the SIP core knows nothing of credentials.

pub mod guess_guard;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hex::hex;

type HmacSha256 = Hmac<Sha256>;

/// Length of each of a nonce's two MACs.
const MAC_LEN: usize = 8;

/// What a nonce says before its MACs: when it was issued and its serial number.
const HEAD: usize = 16;

/// Nonces whose use is remembered at once (their highest `nc`); past it the oldest are
/// forgotten and every nonce issued before the last one forgotten counts as stale, so
/// that a forgotten nonce is never accepted again (about 100 bytes each: ~3 MB).
const TRACKED_NONCES: usize = 32_768;

/// Issues and checks nonces: `base64url(issued_at_u64_be || serial_u64_be || MAC(head ||
/// realm)[..8] || MAC(head || realm || peer address)[..8])`, `head` the first 16 bytes. The first MAC says the nonce is
/// ours; the second that it was given to the address the response comes from (a
/// credential sniffed and sent from elsewhere proves nothing, and a response to a nonce
/// the sender never got cannot count as a failed guess against someone else). What
/// each nonce was used for is remembered (bounded), so a response cannot be replayed.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    uses: std::sync::Arc<std::sync::Mutex<NonceUses>>,
    /// Keys the hash of a request's identity kept per nonce (unknown to clients, so
    /// none can make another request's hash collide with a victim's).
    txn_keys: foldhash::quality::FixedState,
    /// Numbers the nonces, so that two challenges in the same second to the same
    /// address differ (each nonce's counts are its own).
    serial: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// A nonce's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Made by us for this realm and this address, and still fresh.
    Valid,
    /// Made by us but older than the allowed age: challenge again with `stale=true`.
    Stale,
    /// Made by us for this realm, but given to another address.
    Foreign,
    /// Not made by us (or for another realm).
    Invalid,
}

/// The request Digest credentials came with.
#[derive(Debug, Clone, Copy)]
pub struct DigestRequest<'a> {
    /// Its method (part of the response).
    pub method: &'a str,
    /// Its Request-URI (SIP) or target (HTTP) as received: the credentials' `uri` must
    /// name it (RFC 7616 3.4.6, RFC 3261 22.4), so they are for this request only.
    pub uri: &'a str,
    /// Where it came from: the nonce must have been given to this address.
    pub peer: Option<IpAddr>,
    /// What a retransmission of the same request shares (Call-ID and CSeq): it may
    /// repeat an `nc`; any other request must raise it.
    pub txn: &'a str,
}

/// The use of each nonce seen in a valid response: the highest `nc` and the request it
/// came with. Bounded by [`TRACKED_NONCES`].
#[derive(Debug, Default)]
struct NonceUses {
    /// nonce -> (issued at, highest nc, hash of that request's txn).
    seen: foldhash::HashMap<String, (u64, u32, u64)>,
    /// Nonces in the order they were first used.
    order: std::collections::VecDeque<(u64, String)>,
    /// Nonces issued at or before this are stale unless still remembered.
    floor: u64,
}

/// What a valid response's `nc` is to the nonce's use so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// A higher `nc` (or the first use): accepted.
    Fresh,
    /// The same `nc` for the same request: a retransmission.
    Again,
    /// Not higher, for another request, or forgotten: a replay (or too old to tell).
    Replayed,
}

impl NonceUses {
    fn record(
        &mut self,
        nonce: &str,
        issued_at: u64,
        nc: u32,
        txn: u64,
        now: u64,
        max_age: u64,
    ) -> Use {
        // Forget what is stale anyway (its nonce would be refused by age).
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) <= max_age {
                break;
            }
            let (_, old) = self.order.pop_front().expect("front exists");
            self.seen.remove(&old);
        }
        match self.seen.get_mut(nonce) {
            Some((_, seen_nc, seen_txn)) => {
                if nc > *seen_nc {
                    (*seen_nc, *seen_txn) = (nc, txn);
                    Use::Fresh
                } else if nc == *seen_nc && txn == *seen_txn {
                    Use::Again
                } else {
                    Use::Replayed
                }
            }
            None if issued_at <= self.floor => Use::Replayed,
            None => {
                if self.order.len() >= TRACKED_NONCES
                    && let Some((at, old)) = self.order.pop_front()
                {
                    self.seen.remove(&old);
                    self.floor = self.floor.max(at);
                    if issued_at <= self.floor {
                        return Use::Replayed;
                    }
                }
                self.seen.insert(nonce.to_string(), (issued_at, nc, txn));
                self.order.push_back((issued_at, nonce.to_string()));
                Use::Fresh
            }
        }
    }
}

impl NonceKey {
    /// A key from 32 secret bytes (persisted in the data directory).
    pub fn new(secret: [u8; 32]) -> Self {
        let mut m = HmacSha256::new_from_slice(&secret).expect("HMAC takes any key length");
        m.update(b"nonce-use");
        let seed = m.finalize().into_bytes();
        Self {
            secret,
            uses: Default::default(),
            txn_keys: foldhash::quality::FixedState::with_seed(u64::from_be_bytes(
                seed[..8].try_into().expect("eight bytes"),
            )),
            serial: Default::default(),
        }
    }

    fn mac(&self, head: &[u8], realm: &str, peer: Option<Option<IpAddr>>) -> [u8; MAC_LEN] {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(head);
        m.update(&(realm.len() as u64).to_be_bytes());
        m.update(realm.as_bytes());
        // The second MAC also covers the address (none: a caller that has none).
        match peer {
            None => {}
            Some(None) => m.update(b"-"),
            Some(Some(IpAddr::V4(a))) => m.update(&a.octets()),
            Some(Some(IpAddr::V6(a))) => m.update(&a.octets()),
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A nonce for `realm` issued at `now_unix` (seconds) to `peer`.
    pub fn issue(&self, realm: &str, now_unix: u64, peer: Option<IpAddr>) -> String {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut raw = Vec::with_capacity(HEAD + 2 * MAC_LEN);
        raw.extend_from_slice(&now_unix.to_be_bytes());
        raw.extend_from_slice(&serial.to_be_bytes());
        let (mac, bound) = (
            self.mac(&raw[..HEAD], realm, None),
            self.mac(&raw[..HEAD], realm, Some(peer)),
        );
        raw.extend_from_slice(&mac);
        raw.extend_from_slice(&bound);
        B64.encode(raw)
    }

    /// Checks a nonce presented for `realm` by `peer` at `now_unix`; older than
    /// `max_age_secs` is stale.
    pub fn check(
        &self,
        nonce: &str,
        realm: &str,
        now_unix: u64,
        max_age_secs: u64,
        peer: Option<IpAddr>,
    ) -> NonceCheck {
        self.checked(nonce, realm, now_unix, max_age_secs, peer).0
    }

    /// [`NonceKey::check`], with when the nonce was issued (0 when it is not ours).
    fn checked(
        &self,
        nonce: &str,
        realm: &str,
        now_unix: u64,
        max_age_secs: u64,
        peer: Option<IpAddr>,
    ) -> (NonceCheck, u64) {
        let Ok(raw) = B64.decode(nonce) else {
            return (NonceCheck::Invalid, 0);
        };
        if raw.len() != HEAD + 2 * MAC_LEN {
            return (NonceCheck::Invalid, 0);
        }
        let issued_at = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let head = &raw[..HEAD];
        if !same(&self.mac(head, realm, None), &raw[HEAD..HEAD + MAC_LEN])
            || issued_at > now_unix.saturating_add(5)
        {
            return (NonceCheck::Invalid, 0);
        }
        let check = if !same(&self.mac(head, realm, Some(peer)), &raw[HEAD + MAC_LEN..]) {
            NonceCheck::Foreign
        } else if now_unix - issued_at.min(now_unix) > max_age_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        };
        (check, issued_at)
    }

    /// The `WWW-Authenticate` values for a challenge to `peer`: SHA-256 first, then MD5
    /// for clients that only know RFC 2617 (both with qop=auth).
    pub fn challenge_headers(
        &self,
        realm: &str,
        now_unix: u64,
        stale: bool,
        peer: Option<IpAddr>,
    ) -> Vec<String> {
        let nonce = self.issue(realm, now_unix, peer);
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

/// Equal bytes, compared in constant time.
/// Whether `a` and `b` are equal, compared in constant time (for equal lengths).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the credentials' `uri` names the request's: the same text, or SIP URIs with
/// the same scheme, user, host and port (a port only one gives is not compared). URI
/// parameters are left out: clients write them differently (Linphone's TCP REGISTER
/// has `;transport=tcp` in `uri` and not in its Request-URI), and what binds the
/// credentials to one request is whom it is for.
fn uri_matches(given: &str, request: &str) -> bool {
    use crate::sip::uri::Uri;
    if given == request {
        return true;
    }
    let (Ok(Uri::Sip(a)), Ok(Uri::Sip(b))) = (Uri::parse(given), Uri::parse(request)) else {
        return false;
    };
    let user = |u: &Option<String>| {
        u.as_deref().map(|s| {
            let mut out = String::with_capacity(s.len());
            crate::sip::uri::push_canonical_user(&mut out, s);
            out
        })
    };
    let host = |h: &crate::sip::uri::Host| h.to_string().to_ascii_lowercase();
    a.secure == b.secure
        && user(&a.user) == user(&b.user)
        && host(&a.host) == host(&b.host)
        && (a.port.is_none() || b.port.is_none() || a.port == b.port)
}

impl NonceKey {
    /// The challenge header values for SIP (RFC 3261 section 22, RFC 8760) to `peer`,
    /// one per algorithm in `algorithms` (`MD5`, `SHA-256`), in that order. JsSIP and
    /// many phones know MD5 alone and give up on a challenge list they misread, hence
    /// the server's default of MD5 only (`sip.digest-algorithms`).
    pub fn sip_challenge_headers(
        &self,
        realm: &str,
        now_unix: u64,
        stale: bool,
        algorithms: &[String],
        peer: Option<IpAddr>,
    ) -> Vec<String> {
        let nonce = self.issue(realm, now_unix, peer);
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

    /// Checks Digest credentials (`Authorization` / `Proxy-Authorization` values) of
    /// `req` for `realm` against `password`. Only a wrong response to a fresh nonce we
    /// gave this address, for this request, is [`DigestVerdict::Invalid`] (a failed
    /// guess); a nonce not ours, or credentials for another request, are
    /// [`DigestVerdict::Unproven`]; a nonce that is old or was given to another
    /// address is [`DigestVerdict::Stale`] before the response is looked at (no
    /// oracle for uncounted guesses), and so is a right response that repeats an
    /// earlier request's `nc` (challenge again).
    pub fn verify<'a>(
        &self,
        credentials: impl IntoIterator<Item = &'a str>,
        req: &DigestRequest<'_>,
        realm: &str,
        password: &str,
        now_unix: u64,
        max_age_secs: u64,
    ) -> DigestVerdict {
        self.verify_with(
            credentials,
            req,
            realm,
            Secret::Password(password),
            now_unix,
            max_age_secs,
        )
    }

    /// [`NonceKey::verify`] against a password or a stored HA1 ([`Secret`]); an HA1
    /// for another algorithm than the credentials' is [`DigestVerdict::Unproven`].
    pub fn verify_with<'a>(
        &self,
        credentials: impl IntoIterator<Item = &'a str>,
        req: &DigestRequest<'_>,
        realm: &str,
        secret: Secret<'_>,
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
            return DigestVerdict::Unproven;
        };
        let (check, issued_at) = self.checked(&nonce, realm, now_unix, max_age_secs, req.peer);
        match check {
            NonceCheck::Valid => {}
            NonceCheck::Invalid => return DigestVerdict::Unproven,
            // Old, or given to another address: a new challenge, whatever the response
            // says. Checking it first would tell right from wrong (stale against
            // refused) for guesses that are never counted: an oracle.
            NonceCheck::Stale | NonceCheck::Foreign => return DigestVerdict::Stale,
        }
        if !uri_matches(&uri, req.uri) {
            return DigestVerdict::Unproven;
        }
        let algorithm = field("algorithm").unwrap_or_else(|| "MD5".into());
        let hash: fn(&str) -> String = if algorithm.eq_ignore_ascii_case("MD5") {
            |s| hex(&<md5::Md5 as md5::Digest>::digest(s.as_bytes()))
        } else if algorithm.eq_ignore_ascii_case("SHA-256") {
            |s| hex(&<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()))
        } else {
            return DigestVerdict::Unproven;
        };
        let ha1 = match secret {
            Secret::Password(password) => hash(&format!("{username}:{realm}:{password}")),
            Secret::Ha1 { md5, sha256 } => {
                let stored = if algorithm.eq_ignore_ascii_case("MD5") {
                    Some(md5)
                } else {
                    sha256
                };
                match stored {
                    Some(h) => h.to_ascii_lowercase(),
                    None => return DigestVerdict::Unproven,
                }
            }
        };
        let ha2 = hash(&format!("{}:{uri}", req.method));
        let (expected, nc) = match field("qop") {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (field("nc"), field("cnonce")) else {
                    return DigestVerdict::Unproven;
                };
                let Ok(count) = u32::from_str_radix(&nc, 16) else {
                    return DigestVerdict::Unproven;
                };
                (
                    hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
                    count,
                )
            }
            Some(_) => return DigestVerdict::Unproven,
            // Without qop there is no count: the nonce is good for one request.
            None => (hash(&format!("{ha1}:{nonce}:{ha2}")), 0),
        };
        if !same(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            // A wrong answer to a fresh nonce this very address was given: a guess.
            return DigestVerdict::Invalid;
        }
        let txn = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = self.txn_keys.build_hasher();
            h.write(req.method.as_bytes());
            h.write_u8(0);
            h.write(req.txn.as_bytes());
            h.finish()
        };
        let used = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(&nonce, issued_at, nc, txn, now_unix, max_age_secs);
        match used {
            Use::Fresh | Use::Again => DigestVerdict::Valid,
            Use::Replayed => DigestVerdict::Stale,
        }
    }
}

/// What a Digest response is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    /// The password itself.
    Password(&'a str),
    /// `H(username:realm:password)` as a user store keeps it, in hex: MD5, and SHA-256
    /// when stored.
    Ha1 {
        /// MD5.
        md5: &'a str,
        /// SHA-256.
        sha256: Option<&'a str>,
    },
}

/// What Digest credentials say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestVerdict {
    /// Correct for the password, with a fresh nonce of ours for this address, for this
    /// request, not seen before.
    Valid,
    /// Correct, but the nonce has expired, was given to another address, or its count
    /// was used by another request: challenge again with `stale=true`.
    Stale,
    /// Wrong for the password, answering a fresh nonce we gave this address for this
    /// request: a failed guess (counted against the source).
    Invalid,
    /// Not evidence of anything: a nonce not ours or not given to this address, another
    /// request's `uri`, missing fields, an unknown algorithm. Refused like a wrong
    /// password, never counted as a guess (a spoofed source could otherwise lock out
    /// the address it forges).
    Unproven,
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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn nonce_life() {
        let k = NonceKey::new([7; 32]);
        let alice = ip("192.0.2.1");
        let n = k.issue("sip", 1_000, alice);
        assert_eq!(k.check(&n, "sip", 1_010, 300, alice), NonceCheck::Valid);
        assert_eq!(k.check(&n, "sip", 1_400, 300, alice), NonceCheck::Stale);
        assert_eq!(
            k.check(&n, "sip", 1_010, 300, ip("192.0.2.2")),
            NonceCheck::Foreign
        );
        assert_eq!(k.check(&n, "sip", 1_010, 300, None), NonceCheck::Foreign);
        assert_eq!(k.check(&n, "other", 1_010, 300, alice), NonceCheck::Invalid);
        assert_eq!(
            NonceKey::new([8; 32]).check(&n, "sip", 1_010, 300, alice),
            NonceCheck::Invalid
        );
        assert_eq!(
            k.check("garbage", "sip", 1_010, 300, alice),
            NonceCheck::Invalid
        );
        let mut tampered = n.into_bytes();
        tampered[3] ^= 1;
        assert_ne!(
            k.check(
                std::str::from_utf8(&tampered).unwrap(),
                "sip",
                1_010,
                300,
                alice
            ),
            NonceCheck::Valid
        );
    }

    fn md5(s: &str) -> String {
        hex(&<md5::Md5 as md5::Digest>::digest(s.as_bytes()))
    }

    /// Credentials of alice (password `secret`) for `method uri` with `nonce` and `nc`.
    fn creds(method: &str, uri: &str, nonce: &str, nc: u32) -> String {
        let ha1 = md5("alice:sipwasm:secret");
        let ha2 = md5(&format!("{method}:{uri}"));
        let response = md5(&format!("{ha1}:{nonce}:{nc:08x}:0a4f113b:auth:{ha2}"));
        format!(
            "Digest username=\"alice\", realm=\"sipwasm\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce=\"0a4f113b\""
        )
    }

    #[test]
    fn a_stored_ha1_verifies_as_the_password_does() {
        let k = NonceKey::new([9; 32]);
        let alice = ip("192.0.2.1");
        let req = DigestRequest {
            method: "REGISTER",
            uri: "sip:localhost",
            peer: alice,
            txn: "c1 1",
        };
        let ha1 = md5("alice:sipwasm:secret");
        let stored = Secret::Ha1 {
            md5: &ha1,
            sha256: None,
        };
        let nonce = k.issue("sipwasm", 1_000, alice);
        let c = creds("REGISTER", "sip:localhost", &nonce, 1);
        assert_eq!(
            k.verify_with([c.as_str()], &req, "sipwasm", stored, 1_010, 300),
            DigestVerdict::Valid
        );
        let wrong = md5("alice:sipwasm:guess");
        let nonce = k.issue("sipwasm", 1_000, alice);
        let c = creds("REGISTER", "sip:localhost", &nonce, 1);
        let guessed = Secret::Ha1 {
            md5: &wrong,
            sha256: None,
        };
        assert_eq!(
            k.verify_with([c.as_str()], &req, "sipwasm", guessed, 1_010, 300),
            DigestVerdict::Invalid
        );
        // SHA-256 credentials against a store line with MD5 only: not evidence.
        let sha = c.replace("algorithm=MD5", "algorithm=SHA-256");
        assert_eq!(
            k.verify_with([sha.as_str()], &req, "sipwasm", stored, 1_010, 300),
            DigestVerdict::Unproven
        );
    }

    /// RFC 2617 section 3.5's example, adapted to a nonce of ours.
    #[test]
    fn digest_responses_are_verified() {
        let k = NonceKey::new([9; 32]);
        let alice = ip("192.0.2.1");
        let nonce = k.issue("sipwasm", 1_000, alice);
        let req = DigestRequest {
            method: "REGISTER",
            uri: "sip:localhost",
            peer: alice,
            txn: "c1 1",
        };
        let creds = creds("REGISTER", "sip:localhost", &nonce, 1);
        let v = |c: &str, pw: &str, now| k.verify([c], &req, "sipwasm", pw, now, 300);
        assert_eq!(v(&creds, "wrong", 1_010), DigestVerdict::Invalid);
        assert_eq!(v(&creds, "secret", 1_010), DigestVerdict::Valid);
        assert_eq!(v(&creds, "secret", 2_000), DigestVerdict::Stale);
        let invite = DigestRequest {
            method: "INVITE",
            ..req
        };
        assert_eq!(
            k.verify([creds.as_str()], &invite, "sipwasm", "secret", 1_010, 300),
            DigestVerdict::Invalid,
            "the method is part of the digest"
        );
        assert_eq!(
            k.verify([creds.as_str()], &req, "other", "secret", 1_010, 300),
            DigestVerdict::Missing
        );
        let forged = creds.replace(&nonce, &"A".repeat(nonce.len()));
        assert_eq!(v(&forged, "secret", 1_010), DigestVerdict::Unproven);
        // SHA-256 and no qop (RFC 2069 style): good for one request.
        let nonce = k.issue("sipwasm", 1_001, alice);
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
        let next = DigestRequest { txn: "c1 2", ..req };
        assert_eq!(
            k.verify([creds.as_str()], &next, "sipwasm", "secret", 1_010, 300),
            DigestVerdict::Stale,
            "the same nonce without a count for another request"
        );
        assert_eq!(
            v("Basic YWxpY2U6c2VjcmV0", "secret", 1_010),
            DigestVerdict::Missing
        );
    }

    /// Issue 18, item 6: a sniffed credential works for nothing but its own request.
    #[test]
    fn credentials_are_bound_to_their_request_count_and_address() {
        let k = NonceKey::new([9; 32]);
        let alice = ip("192.0.2.1");
        let nonce = k.issue("sipwasm", 1_000, alice);
        let to_bob = DigestRequest {
            method: "MESSAGE",
            uri: "sip:bob@localhost",
            peer: alice,
            txn: "m1 1",
        };
        let c1 = creds("MESSAGE", "sip:bob@localhost", &nonce, 1);
        let v = |c: &str, r: &DigestRequest<'_>| k.verify([c], r, "sipwasm", "secret", 1_010, 300);
        assert_eq!(v(&c1, &to_bob), DigestVerdict::Valid);
        assert_eq!(v(&c1, &to_bob), DigestVerdict::Valid, "a retransmission");
        // The same credentials on a MESSAGE to carol: another uri.
        let to_carol = DigestRequest {
            uri: "sip:carol@localhost",
            txn: "m2 1",
            ..to_bob
        };
        assert_eq!(v(&c1, &to_carol), DigestVerdict::Unproven);
        // Again to bob on a new Call-ID with the same count: a replay.
        let again = DigestRequest {
            txn: "m3 1",
            ..to_bob
        };
        assert_eq!(v(&c1, &again), DigestVerdict::Stale);
        // The client's next request raises the count: fine.
        let c2 = creds("MESSAGE", "sip:bob@localhost", &nonce, 2);
        assert_eq!(v(&c2, &again), DigestVerdict::Valid);
        // From another address: right, but not its nonce (challenge again); wrong from
        // there is no failed guess of alice's.
        let elsewhere = DigestRequest {
            peer: ip("203.0.113.7"),
            txn: "m4 1",
            ..to_bob
        };
        let c3 = creds("MESSAGE", "sip:bob@localhost", &nonce, 3);
        assert_eq!(v(&c3, &elsewhere), DigestVerdict::Stale);
        assert_eq!(
            k.verify([c3.as_str()], &elsewhere, "sipwasm", "guess", 1_010, 300),
            DigestVerdict::Stale,
            "no oracle: right and wrong look the same from another address"
        );
        // The uri as the client wrote it may differ in form from the parsed one.
        let upper = DigestRequest {
            uri: "sip:bob@LOCALHOST",
            txn: "m5 1",
            ..to_bob
        };
        let c4 = creds("MESSAGE", "sip:bob@localhost", &nonce, 4);
        assert_eq!(v(&c4, &upper), DigestVerdict::Valid);
        let with_params = DigestRequest {
            uri: "sip:bob@localhost;transport=tcp",
            txn: "m6 1",
            ..to_bob
        };
        let c5 = creds("MESSAGE", "sip:bob@localhost", &nonce, 5);
        assert_eq!(v(&c5, &with_params), DigestVerdict::Valid);
    }

    #[test]
    fn nonce_uses_are_bounded_and_forgetting_one_never_revives_it() {
        let mut uses = NonceUses::default();
        for i in 0..TRACKED_NONCES as u64 + 10 {
            assert_eq!(
                uses.record(&format!("n{i}"), 1_000 + i / 1000, 1, 7, 1_000, 300),
                Use::Fresh
            );
        }
        assert!(uses.seen.len() <= TRACKED_NONCES);
        assert_eq!(uses.seen.len(), uses.order.len());
        // The first nonce was forgotten: it is not accepted as new.
        assert_eq!(uses.record("n0", 1_000, 1, 7, 1_000, 300), Use::Replayed);
        // Past their age, nonces are forgotten on the next use.
        assert_eq!(uses.record("late", 2_000, 1, 7, 2_000, 300), Use::Fresh);
        assert_eq!(uses.seen.len(), 1);
    }

    #[test]
    fn sip_challenges_follow_the_configured_algorithms() {
        let k = NonceKey::new([1; 32]);
        let h = k.sip_challenge_headers("r", 5, true, &["MD5".into()], None);
        assert_eq!(h.len(), 1);
        assert!(
            h[0].contains("algorithm=MD5") && h[0].contains("stale=true"),
            "{h:?}"
        );
        let h = k.sip_challenge_headers("r", 5, false, &["SHA-256".into(), "MD5".into()], None);
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
        let h = k.challenge_headers("a \"b\"", 5, false, None);
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
