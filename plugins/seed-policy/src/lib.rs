//! `seed-policy`: the WebSocket admission policy from Kamailio's websocket module
//! announcement, as a sipwasm plugin.
//!
//! ```text
//! request on a port that is not a web port    -> 403
//! WebSocket request whose Host is not ours     -> 403
//! WebSocket request from an Origin not allowed -> 403
//! WebSocket request                            -> upgrade to `sip` (the host re-checks it)
//! anything else                                -> 404
//! ```
//!
//! Plugin configuration (the `config` table of the plugin in the server config):
//!
//! ```toml
//! web-ports = [8080, 8443]                     # default: [80, 443]
//! allowed-origins = ["https://app.example.org"] # default: any Origin
//! ```

use std::sync::OnceLock;

use serde::Deserialize;

wit_bindgen::generate!({
    world: "http-handler",
    path: "../../wit",
});

use sipwasm::plugin::host::{self, Level};
use sipwasm::plugin::types::{Response, Upgrade, Websocket};

/// The plugin's configuration.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_web_ports")]
    web_ports: Vec<u16>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

fn default_web_ports() -> Vec<u16> {
    vec![80, 443]
}

/// The configuration, read once per instance (the host hands the same table to every
/// call of an instance).
fn settings() -> Result<&'static Settings, &'static str> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            serde_json::from_str(&host::plugin_config())
                .map_err(|e| format!("seed-policy config: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The first value of header `name` (case-insensitive).
fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn refuse(status: u16, why: &str) -> Decision {
    host::log(Level::Warn, why);
    Decision::Reply(Response {
        status,
        reason: None,
        headers: vec![],
        body: vec![],
        close: true,
    })
}

struct SeedPolicy;

impl Guest for SeedPolicy {
    fn on_http_request(req: HttpRequest) -> Decision {
        let settings = match settings() {
            Ok(s) => s,
            Err(e) => {
                host::log(Level::Error, e);
                return Decision::Reply(Response {
                    status: 500,
                    reason: None,
                    headers: vec![],
                    body: vec![],
                    close: true,
                });
            }
        };
        if !settings.web_ports.contains(&req.peer.local_port) {
            return refuse(
                403,
                &format!("HTTP request received on port {}", req.peer.local_port),
            );
        }
        if matches!(req.websocket, Websocket::None) {
            return Decision::Reply(Response {
                status: 404,
                reason: None,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: b"Not Found\n".to_vec(),
                close: false,
            });
        }
        match header(&req, "Host") {
            Some(h) if host::is_myself(h) => {}
            Some(h) => return refuse(403, &format!("bad Host {h:?}")),
            // A missing Host is a handshake error: let the host answer 400.
            None => {}
        }
        let origin = header(&req, "Origin");
        if !settings.allowed_origins.is_empty() {
            match origin {
                Some(o)
                    if settings
                        .allowed_origins
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(o)) => {}
                Some(o) => return refuse(403, &format!("Origin {o:?} not allowed")),
                None => return refuse(403, "no Origin"),
            }
        }
        let identity = origin
            .map(|o| vec![("origin".to_string(), o.to_string())])
            .unwrap_or_default();
        Decision::Upgrade(Upgrade {
            subprotocol: "sip".into(),
            headers: vec![],
            identity,
        })
    }
}

export!(SeedPolicy);
