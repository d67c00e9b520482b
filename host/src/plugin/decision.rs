//! Guest decisions to host decisions: every field a plugin returns is checked here
//! before the host acts on it. A decision that breaks a rule is a plugin failure.

use super::bindings::GuestDecision;
use crate::auth::realm_is_valid;
use crate::http::answer::{Decision, Upgrade};
use crate::http::handshake::SIP_SUBPROTOCOL;
use crate::http::response::{HeaderList, Response, reason_is_valid, validate_header};

/// Largest body a plugin may reply with.
pub const MAX_BODY: usize = 4 << 20;
/// Most identity attributes on a flow, and the longest key or value.
const MAX_IDENTITY: usize = 32;
const MAX_IDENTITY_LEN: usize = 1024;
/// Most extra headers in one response.
const MAX_HEADERS: usize = 64;

/// Checks a guest decision.
pub fn validate(d: GuestDecision) -> Result<Decision, String> {
    match d {
        GuestDecision::Reply(r) => {
            if !(200..=599).contains(&r.status) {
                return Err(format!("reply status {} is outside 200..=599", r.status));
            }
            if let Some(reason) = &r.reason
                && !reason_is_valid(reason)
            {
                return Err("reply reason phrase has control characters or is too long".into());
            }
            check_headers(&r.headers)?;
            if r.body.len() > MAX_BODY {
                return Err(format!(
                    "reply body of {} bytes is larger than {MAX_BODY}",
                    r.body.len()
                ));
            }
            Ok(Decision::Reply(Response {
                status: r.status,
                reason: r.reason,
                headers: r.headers,
                body: r.body,
                close: r.close,
            }))
        }
        GuestDecision::Challenge(c) => {
            if !realm_is_valid(&c.realm) {
                return Err("challenge realm is empty, too long or has control characters".into());
            }
            Ok(Decision::Challenge { realm: c.realm })
        }
        GuestDecision::Upgrade(u) => {
            if u.subprotocol != SIP_SUBPROTOCOL {
                return Err(format!(
                    "upgrade to subprotocol {:?}: this server serves only {SIP_SUBPROTOCOL:?}",
                    truncate(&u.subprotocol)
                ));
            }
            check_headers(&u.headers)?;
            if u.identity.len() > MAX_IDENTITY {
                return Err(format!("more than {MAX_IDENTITY} identity attributes"));
            }
            for (k, v) in &u.identity {
                let bad = |s: &str| s.len() > MAX_IDENTITY_LEN || s.chars().any(char::is_control);
                if k.is_empty() || bad(k) || bad(v) {
                    return Err(format!(
                        "identity attribute {:?} is empty, too long or has control characters",
                        truncate(k)
                    ));
                }
            }
            Ok(Decision::Upgrade(Upgrade {
                subprotocol: u.subprotocol,
                headers: u.headers,
                identity: u.identity,
            }))
        }
    }
}

fn check_headers(headers: &HeaderList) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    for (n, v) in headers {
        validate_header(n, v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::{GuestChallenge, GuestResponse, GuestUpgrade};

    fn reply(status: u16, headers: HeaderList) -> GuestDecision {
        GuestDecision::Reply(GuestResponse {
            status,
            reason: None,
            headers,
            body: vec![],
            close: false,
        })
    }

    #[test]
    fn replies() {
        assert!(validate(reply(200, vec![("Set-Cookie".into(), "a=b".into())])).is_ok());
        assert!(validate(reply(101, vec![])).is_err());
        assert!(validate(reply(600, vec![])).is_err());
        assert!(validate(reply(200, vec![("X".into(), "a\r\nY: b".into())])).is_err());
        assert!(validate(reply(200, vec![("Content-Length".into(), "1".into())])).is_err());
    }

    #[test]
    fn upgrades_and_challenges() {
        let up = |p: &str| {
            GuestDecision::Upgrade(GuestUpgrade {
                subprotocol: p.into(),
                headers: vec![],
                identity: vec![("user".into(), "alice".into())],
            })
        };
        assert!(validate(up("sip")).is_ok());
        assert!(validate(up("chat")).is_err());
        let ch = |r: &str| GuestDecision::Challenge(GuestChallenge { realm: r.into() });
        assert!(validate(ch("example.org")).is_ok());
        assert!(validate(ch("a\nb")).is_err());
    }
}
