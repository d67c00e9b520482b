//! Write sipwasm policy plugins in Rust.
//!
//! The crate carries the bindings of `wit/plugin.wit` (world `http-handler`, and
//! `sip-router` in [`sip`]) and the helpers a policy reads well with: header lookup
//! (case-insensitive, every value), path, query, form and cookie parsing, the WebSocket
//! verdict, builders for the three decisions, typed configuration, base64url, and the
//! host's keys and user store. A plugin is a `cdylib` with one function, exported by
//! [`http_plugin!`]:
//!
//! ```ignore
//! use sipwasm_plugin::{Decision, HttpRequest, RequestExt, reply, upgrade};
//!
//! #[derive(serde::Deserialize)]
//! struct Settings { greeting: String }
//!
//! fn decide(req: HttpRequest, settings: &Settings) -> Decision {
//!     if req.is_websocket() && req.host_is_ours() {
//!         return upgrade().identity("origin", req.header("Origin").unwrap_or("")).into();
//!     }
//!     reply(200).text(&settings.greeting).into()
//! }
//!
//! sipwasm_plugin::http_plugin!(decide, config = Settings);
//! ```
//!
//! The configuration is read once per instance; a table that does not fit `Settings`
//! is logged and every request gets 500 (`http_plugin!(decide)` takes a function of
//! the request alone). The lower level stays available: implement [`Guest`] and call
//! [`export!`] with `with_types_in sipwasm_plugin::bindings`.

/// The generated bindings (`wit_bindgen::generate!` over the host's `wit/`).
pub mod bindings {
    wit_bindgen::generate!({
        world: "http-handler",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "sipwasm_plugin::bindings",
    });
}

pub mod base64url;
pub mod sip;

/// The server's user store (`sipwasm user add`): `check_password(realm, user,
/// password)` for a login form.
pub use bindings::sipwasm::plugin::credentials;
pub use bindings::sipwasm::plugin::host::{self, Level};
/// The server's named keys (`[keys]`), granted by `plugins.NAME.keys`: sign and verify
/// HMAC-SHA-256 without holding the key.
pub use bindings::sipwasm::plugin::keys;
pub use bindings::sipwasm::plugin::types::{
    Challenge, Decision, HttpRequest, Peer, Response, Transport, Upgrade, Websocket,
};
pub use bindings::{Guest, export};

/// Helpers on the request.
pub trait RequestExt {
    /// The first value of header `name` (case-insensitive), trimmed.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every value of header `name`, in order, splitting comma-separated lists.
    fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str>;
    /// The path of the target, without query or fragment.
    fn path(&self) -> &str;
    /// A query parameter, percent-decoded (`+` as space).
    fn query(&self, key: &str) -> Option<String>;
    /// A field of an `application/x-www-form-urlencoded` body (an HTML form's POST),
    /// percent-decoded (`+` as space); `None` for another content type.
    fn form(&self, key: &str) -> Option<String>;
    /// A cookie from the `Cookie` headers.
    fn cookie(&self, name: &str) -> Option<&str>;
    /// Whether the request is a valid WebSocket handshake (checked by the host).
    fn is_websocket(&self) -> bool;
    /// Whether the client offered subprotocol `name` (e.g. `sip`).
    fn offers(&self, name: &str) -> bool;
    /// Whether the `Host` header names this server (`is-myself`).
    fn host_is_ours(&self) -> bool;
}

/// The first value of header `name` in `headers` (case-insensitive), trimmed.
pub(crate) fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Every value of header `name` in `headers`, in order, splitting comma-separated lists.
pub(crate) fn header_list<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

impl RequestExt for HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    fn header_values<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        header_list(&self.headers, name)
    }

    fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    fn query(&self, key: &str) -> Option<String> {
        let query = self
            .target
            .split_once('?')?
            .1
            .split('#')
            .next()
            .unwrap_or("");
        field(query, key)
    }

    fn form(&self, key: &str) -> Option<String> {
        let form = self.header("Content-Type").is_some_and(|t| {
            t.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !form {
            return None;
        }
        field(std::str::from_utf8(&self.body).ok()?, key)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
    }

    fn is_websocket(&self) -> bool {
        matches!(self.websocket, Websocket::Offer(_))
    }

    fn offers(&self, name: &str) -> bool {
        matches!(&self.websocket, Websocket::Offer(p) if p.iter().any(|x| x == name))
    }

    fn host_is_ours(&self) -> bool {
        self.header("Host").is_some_and(host::is_myself)
    }
}

/// The value of `key` in `a=1&b=2` text (a query or a form body), percent-decoded.
fn field(pairs: &str, key: &str) -> Option<String> {
    pairs.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            // Two hex digits, no sign (`from_str_radix` alone takes `%+9`).
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds a `reply` decision: `reply(404).text("Not Found\n").into()`.
#[derive(Debug, Clone)]
pub struct ReplyBuilder(Response);

/// A reply with `status`, no headers, no body, keep-alive.
pub fn reply(status: u16) -> ReplyBuilder {
    ReplyBuilder(Response {
        status,
        reason: None,
        headers: Vec::new(),
        body: Vec::new(),
        close: false,
    })
}

impl ReplyBuilder {
    /// Adds a header (the host refuses headers it owns, such as Content-Length).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }

    /// A custom reason phrase.
    pub fn reason(mut self, reason: &str) -> Self {
        self.0.reason = Some(reason.into());
        self
    }

    /// A plain-text body.
    pub fn text(self, body: &str) -> Self {
        self.body("text/plain; charset=utf-8", body.as_bytes())
    }

    /// An HTML body.
    pub fn html(self, body: &str) -> Self {
        self.body("text/html; charset=utf-8", body.as_bytes())
    }

    /// A JSON body.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.body("application/json", value.to_string().as_bytes())
    }

    /// A body with its content type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.0
            .headers
            .push(("Content-Type".into(), content_type.into()));
        self.0.body = body.to_vec();
        self
    }

    /// Close the connection after the response.
    pub fn close(mut self) -> Self {
        self.0.close = true;
        self
    }
}

impl From<ReplyBuilder> for Decision {
    fn from(r: ReplyBuilder) -> Self {
        Decision::Reply(r.0)
    }
}

/// Builds an `upgrade` decision (to `sip`): `upgrade().identity("user", "alice").into()`.
#[derive(Debug, Clone)]
pub struct UpgradeBuilder(Upgrade);

/// An upgrade to the `sip` subprotocol.
pub fn upgrade() -> UpgradeBuilder {
    UpgradeBuilder(Upgrade {
        subprotocol: "sip".into(),
        headers: Vec::new(),
        identity: Vec::new(),
    })
}

impl UpgradeBuilder {
    /// An extra header for the 101 (e.g. `Set-Cookie`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }

    /// An identity attribute for the flow.
    pub fn identity(mut self, key: &str, value: &str) -> Self {
        self.0.identity.push((key.into(), value.into()));
        self
    }
}

impl From<UpgradeBuilder> for Decision {
    fn from(u: UpgradeBuilder) -> Self {
        Decision::Upgrade(u.0)
    }
}

/// A `challenge` decision: the host answers 401 with a Digest challenge for `realm`.
pub fn challenge(realm: &str) -> Decision {
    Decision::Challenge(Challenge {
        realm: realm.into(),
    })
}

/// The plugin's `config` table, read into `T` (serde).
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    serde_json::from_str(&host::plugin_config()).map_err(|e| format!("plugin config: {e}"))
}

/// Logs at info level.
pub fn info(message: &str) {
    host::log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    host::log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    host::log(Level::Error, message);
}

/// Exports an http-handler plugin made of one function: `http_plugin!(decide)` for
/// `fn decide(HttpRequest) -> Decision`, or `http_plugin!(decide, config = Settings)`
/// for `fn decide(HttpRequest, &Settings) -> Decision`, with `Settings` read from the
/// plugin's `config` table once per instance (serde; a table that does not fit is
/// logged and answered 500, closing the connection).
#[macro_export]
macro_rules! http_plugin {
    ($decide:path) => {
        struct __SipwasmHttpPlugin;

        impl $crate::Guest for __SipwasmHttpPlugin {
            fn on_http_request(req: $crate::HttpRequest) -> $crate::Decision {
                $decide(req)
            }
        }

        $crate::export!(__SipwasmHttpPlugin with_types_in $crate::bindings);
    };
    ($decide:path, config = $settings:ty) => {
        struct __SipwasmHttpPlugin;

        impl $crate::Guest for __SipwasmHttpPlugin {
            fn on_http_request(req: $crate::HttpRequest) -> $crate::Decision {
                // Read once per instance: the host hands every call of an instance
                // the same table.
                static SETTINGS: ::std::sync::OnceLock<
                    ::std::result::Result<$settings, ::std::string::String>,
                > = ::std::sync::OnceLock::new();
                match SETTINGS.get_or_init($crate::config::<$settings>) {
                    Ok(settings) => $decide(req, settings),
                    Err(e) => {
                        $crate::error(&format!("bad plugin config: {e}"));
                        $crate::reply(500).close().into()
                    }
                }
            }
        }

        $crate::export!(__SipwasmHttpPlugin with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        assert_eq!(super::percent_decode("a%20b+c%2Fd"), "a b c/d");
        // A sign is not a digit: `%+9` is no tab (the `+` is a space, as in forms).
        assert_eq!(super::percent_decode("%+9x"), "% 9x");
        assert_eq!(super::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(super::percent_decode("%E2%82%AC"), "€");
    }
}
