//! SIP routing plugins (world `sip-router`): the bindings, request helpers and
//! decision builders. A router is a `cdylib` with a function per export, exported by
//! [`router!`](crate::sip::router):
//!
//! ```ignore
//! use sipwasm_plugin::sip::{SipDecision, SipRequest, SipRequestExt, reply};
//!
//! fn route(req: SipRequest) -> SipDecision {
//!     if req.method == "INVITE" && req.ruri_user() == Some("666") {
//!         return reply(403).reason("Blocked").into();
//!     }
//!     SipDecision::Continue
//! }
//!
//! sipwasm_plugin::sip::router!(route);
//! ```
//!
//! `router!(route, closed = on_closed, config = Settings)` adds a function for
//! connections that closed (`fn(ClosedFlow, &Settings)`) and typed configuration
//! (`fn route(SipRequest, &Settings)`), read once per instance. The request's From, To
//! and Request-URI come parsed by the host (`SipRequestExt::user_in_from`, `to_aor`...):
//! the canonical identities the registrar and the host's checks use.

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
            "sipwasm:plugin/host@0.2.1": crate::bindings::sipwasm::plugin::host,
            "sipwasm:plugin/types@0.2.1": crate::bindings::sipwasm::plugin::types,
            "sipwasm:plugin/keys@0.2.1": crate::bindings::sipwasm::plugin::keys,
            "sipwasm:plugin/credentials@0.2.1": crate::bindings::sipwasm::plugin::credentials,
        },
    });
}

pub use bindings::sipwasm::plugin::digest::{self, Verdict};
pub use bindings::sipwasm::plugin::media::{self, MediaChoice, Relay};
pub use bindings::sipwasm::plugin::registrar::{self, lookup};
pub use bindings::sipwasm::plugin::sip_types::{
    ClosedFlow, Contact, Flow, SipAddress, SipDecision, SipReply, SipRequest, SipTransport,
};
pub use bindings::{Guest, export};

use crate::host;

/// Helpers on a SIP request.
pub trait SipRequestExt {
    /// The first value of header `name` (case-insensitive; standard headers arrive in
    /// their long form), trimmed.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every value of header `name`, in order, splitting comma-separated lists.
    fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str>;
    /// The user part of the Request-URI (the number dialled), as the host parsed it.
    fn ruri_user(&self) -> Option<&str>;
    /// Whether the Request-URI's host names this server (`is-myself`).
    fn ruri_is_ours(&self) -> bool;
    /// The user part of the From URI (the caller as it claims to be), as the host
    /// parsed it: a display name never counts.
    fn user_in_from(&self) -> Option<&str>;
    /// The user part of the To URI (for REGISTER, the address-of-record's user), as the
    /// host parsed it.
    fn user_in_to(&self) -> Option<&str>;
    /// The address-of-record of the To URI (`sip:user@host`, as the registrar keys
    /// bindings): for REGISTER, the one that will be bound.
    fn to_aor(&self) -> Option<&str>;
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
        self.target.as_ref()?.user.as_deref()
    }

    fn ruri_is_ours(&self) -> bool {
        self.target
            .as_ref()
            .is_some_and(|t| host::is_myself(&t.host))
    }

    fn user_in_from(&self) -> Option<&str> {
        self.from.as_ref()?.user.as_deref()
    }

    fn user_in_to(&self) -> Option<&str> {
        self.to.as_ref()?.user.as_deref()
    }

    fn to_aor(&self) -> Option<&str> {
        self.to.as_ref()?.aor.as_deref()
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

    fn address(user: &str, host: &str) -> SipAddress {
        SipAddress {
            user: Some(user.into()),
            host: host.into(),
            port: None,
            secure: false,
            aor: Some(format!("sip:{user}@{host}")),
        }
    }

    /// The identities come from the host's parse, never from header text: a display
    /// name that looks like a URI fools nothing (issue 18, item 4).
    #[test]
    fn identities_are_the_hosts_parse() {
        let req = SipRequest {
            method: "REGISTER".into(),
            request_uri: "sip:example.org".into(),
            target: None,
            from: Some(address("mallory", "example.org")),
            to: Some(address("alice", "example.org")),
            headers: vec![(
                "To".into(),
                "\"sip:mallory@example.org\" <sip:alice@example.org>".into(),
            )],
            body: vec![],
            source: Flow {
                transport: SipTransport::Udp,
                remote_addr: "192.0.2.1".into(),
                remote_port: 5060,
                local_addr: "192.0.2.2".into(),
                local_port: 5060,
                connection_id: None,
                identity: vec![],
            },
        };
        assert_eq!(req.user_in_to(), Some("alice"));
        assert_eq!(req.to_aor(), Some("sip:alice@example.org"));
        assert_eq!(req.user_in_from(), Some("mallory"));
        assert_eq!(req.ruri_user(), None);
    }
}

/// Exports a sip-router plugin made of functions:
///
/// - `router!(route)`: `fn route(SipRequest) -> SipDecision`, connections that close
///   ignored;
/// - `router!(route, closed = on_closed)`: and `fn on_closed(ClosedFlow)`;
/// - `router!(route, config = Settings)` and `router!(route, closed = on_closed,
///   config = Settings)`: the same functions with `&Settings` last, read from the
///   plugin's `config` table once per instance (a table that does not fit is logged,
///   and requests get the plugin's failure policy through a 500).
#[macro_export]
macro_rules! __sipwasm_router {
    ($route:path) => {
        $crate::sip::router!(@export
            |req| $route(req),
            |_flow| ()
        );
    };
    ($route:path, closed = $closed:path) => {
        $crate::sip::router!(@export
            |req| $route(req),
            |flow| $closed(flow)
        );
    };
    ($route:path, config = $settings:ty) => {
        $crate::sip::router!(@with_config $settings,
            |req, s| $route(req, s),
            |_flow, _s| ()
        );
    };
    ($route:path, closed = $closed:path, config = $settings:ty) => {
        $crate::sip::router!(@with_config $settings,
            |req, s| $route(req, s),
            |flow, s| $closed(flow, s)
        );
    };
    (@with_config $settings:ty, |$req:ident, $s:ident| $on_req:expr, |$flow:ident, $s2:ident| $on_closed:expr) => {
        fn __sipwasm_settings() -> &'static ::std::result::Result<$settings, ::std::string::String> {
            // Read once per instance: the host hands every call of an instance the
            // same table.
            static SETTINGS: ::std::sync::OnceLock<
                ::std::result::Result<$settings, ::std::string::String>,
            > = ::std::sync::OnceLock::new();
            SETTINGS.get_or_init($crate::config::<$settings>)
        }
        $crate::sip::router!(@export
            |$req| match __sipwasm_settings() {
                Ok($s) => $on_req,
                Err(e) => {
                    $crate::error(&format!("bad plugin config: {e}"));
                    $crate::sip::reply(500).reason("Plugin Misconfigured").into()
                }
            },
            |$flow| match __sipwasm_settings() {
                Ok($s2) => $on_closed,
                Err(e) => $crate::error(&format!("bad plugin config: {e}")),
            }
        );
    };
    (@export |$req:ident| $on_req:expr, |$flow:ident| $on_closed:expr) => {
        struct __SipwasmRouter;

        impl $crate::sip::Guest for __SipwasmRouter {
            fn on_sip_request($req: $crate::sip::SipRequest) -> $crate::sip::SipDecision {
                $on_req
            }

            fn on_flow_closed($flow: $crate::sip::ClosedFlow) {
                $on_closed
            }
        }

        $crate::sip::export!(__SipwasmRouter with_types_in $crate::sip::bindings);
    };
}

pub use crate::__sipwasm_router as router;
