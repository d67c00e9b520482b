//! SIP routing plugins (world `sip-router`): the bindings, request helpers and
//! decision builders. A router is a `cdylib` that implements [`Guest`] and calls
//! [`export!`](crate::sip::export):
//!
//! ```ignore
//! use sipwasm_plugin::sip::{ClosedFlow, Guest, SipDecision, SipRequest, SipRequestExt, reply};
//!
//! struct Router;
//!
//! impl Guest for Router {
//!     fn on_sip_request(req: SipRequest) -> SipDecision {
//!         if req.method == "INVITE" && req.ruri_user() == Some("666") {
//!             return reply(403).reason("Blocked").into();
//!         }
//!         SipDecision::Continue
//!     }
//!     fn on_flow_closed(_flow: ClosedFlow) {}
//! }
//!
//! sipwasm_plugin::sip::export!(Router with_types_in sipwasm_plugin::sip::bindings);
//! ```

/// The generated bindings of the `sip-router` world; the interfaces it shares with
/// `http-handler` are those of [`crate::bindings`].
pub mod bindings {
    // wit-bindgen passes each field of a record such as `flow` as an argument.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({
        world: "sip-router",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "sipwasm_plugin::sip::bindings",
        with: {
            "sipwasm:plugin/host@0.1.0": crate::bindings::sipwasm::plugin::host,
            "sipwasm:plugin/types@0.1.0": crate::bindings::sipwasm::plugin::types,
        },
    });
}

pub use bindings::sipwasm::plugin::digest::{self, Verdict};
pub use bindings::sipwasm::plugin::registrar::{self, lookup};
pub use bindings::sipwasm::plugin::sip_types::{
    ClosedFlow, Contact, Flow, SipDecision, SipReply, SipRequest, SipTransport,
};
pub use bindings::{Guest, export};

use crate::host;

/// The user part of a SIP URI (`sip:+1555@host;x=y` → `+1555`), without a password;
/// `None` for a URI without one. Accepts a name-addr (`"A" <sip:a@b>;tag=1`).
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = strip_scheme(uri)?;
    let end = rest.find(['@', ';', '?', '>']).unwrap_or(rest.len());
    if rest.as_bytes().get(end) != Some(&b'@') {
        return None;
    }
    let user = &rest[..end];
    Some(user.split(':').next().unwrap_or(user))
}

/// The host part of a SIP URI, without user, port and parameters (IPv6 keeps its
/// brackets).
pub fn uri_host(uri: &str) -> Option<&str> {
    let rest = strip_scheme(uri)?;
    let rest = match rest.find(['@']) {
        Some(at) if rest[..at].find(['>', ';', '?']).is_none() => &rest[at + 1..],
        _ => rest,
    };
    let end = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find([':', ';', '?', '>']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

fn strip_scheme(uri: &str) -> Option<&str> {
    let start = uri.find("sip:").or_else(|| uri.find("sips:"))?;
    let rest = &uri[start..];
    rest.strip_prefix("sip:")
        .or_else(|| rest.strip_prefix("sips:"))
}

/// Helpers on a SIP request.
pub trait SipRequestExt {
    /// The first value of header `name` (case-insensitive; standard headers arrive in
    /// their long form), trimmed.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every value of header `name`, in order, splitting comma-separated lists.
    fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str>;
    /// The user part of the Request-URI (the number dialled).
    fn ruri_user(&self) -> Option<&str>;
    /// Whether the Request-URI's host names this server (`is-myself`).
    fn ruri_is_ours(&self) -> bool;
    /// The user part of the From URI (the caller as it claims to be).
    fn user_in_from(&self) -> Option<&str>;
    /// The user part of the To URI (for REGISTER, the address-of-record's user).
    fn user_in_to(&self) -> Option<&str>;
    /// An identity attribute the http-handler plugin attached to the WebSocket flow.
    fn identity(&self, key: &str) -> Option<&str>;
}

impl SipRequestExt for SipRequest {
    fn header(&self, name: &str) -> Option<&str> {
        crate::first_header(&self.headers, name)
    }

    fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        crate::header_list(&self.headers, name)
    }

    fn ruri_user(&self) -> Option<&str> {
        uri_user(&self.request_uri)
    }

    fn ruri_is_ours(&self) -> bool {
        uri_host(&self.request_uri).is_some_and(host::is_myself)
    }

    fn user_in_from(&self) -> Option<&str> {
        self.header("From").and_then(uri_user)
    }

    fn user_in_to(&self) -> Option<&str> {
        self.header("To").and_then(uri_user)
    }

    fn identity(&self, key: &str) -> Option<&str> {
        self.source
            .identity
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Builds a `reply` decision: `reply(403).reason("Blocked").into()`.
#[derive(Debug, Clone)]
pub struct SipReplyBuilder(SipReply);

/// A final response (200..=699); the host adds Via, From, To with a tag, Call-ID,
/// CSeq, Server and Content-Length.
pub fn reply(status: u16) -> SipReplyBuilder {
    SipReplyBuilder(SipReply {
        status,
        reason: None,
        headers: Vec::new(),
    })
}

impl SipReplyBuilder {
    /// Its reason phrase (the standard one otherwise).
    pub fn reason(mut self, reason: &str) -> Self {
        self.0.reason = Some(reason.to_string());
        self
    }

    /// An extra header (`Contact` in a 3xx, `Retry-After`, `Warning`...).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push((name.to_string(), value.to_string()));
        self
    }
}

impl From<SipReplyBuilder> for SipDecision {
    fn from(b: SipReplyBuilder) -> Self {
        SipDecision::Reply(b.0)
    }
}

/// Forward statefully to `uri`, which becomes the Request-URI.
pub fn relay(uri: impl Into<String>) -> SipDecision {
    SipDecision::Relay(uri.into())
}

/// Ask for Digest credentials in `realm` (401 for REGISTER, 407 otherwise).
pub fn challenge(realm: &str) -> SipDecision {
    SipDecision::Challenge(realm.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parts() {
        assert_eq!(uri_user("sip:+1555@example.org;user=phone"), Some("+1555"));
        assert_eq!(uri_user("sips:alice:pw@example.org"), Some("alice"));
        assert_eq!(uri_user("\"Bob\" <sip:bob@example.org>;tag=1"), Some("bob"));
        assert_eq!(uri_user("sip:example.org;transport=tcp"), None);
        assert_eq!(uri_user("tel:+1555"), None);
        assert_eq!(uri_host("sip:bob@Example.org:5060;x"), Some("Example.org"));
        assert_eq!(uri_host("<sip:[::1]:5060>"), Some("[::1]"));
        assert_eq!(uri_host("sip:example.org"), Some("example.org"));
    }
}
