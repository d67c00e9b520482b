//! `seed-policy`: the WebSocket admission policy from Kamailio's websocket module
//! announcement, as a sipwasm plugin (written with the `sipwasm-plugin` SDK).
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

use serde::Deserialize;
use sipwasm_plugin::{Decision, HttpRequest, RequestExt, Websocket, reply, upgrade};

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

fn refuse(why: &str) -> Decision {
    sipwasm_plugin::warn(why);
    reply(403).close().into()
}

/// Decides a request.
fn decide(req: HttpRequest, settings: &Settings) -> Decision {
    if !settings.web_ports.contains(&req.peer.local_port) {
        return refuse(&format!(
            "HTTP request received on port {}",
            req.peer.local_port
        ));
    }
    if matches!(req.websocket, Websocket::None) {
        return reply(404).text("Not Found\n").into();
    }
    // A missing Host is a handshake error: the host answers 400.
    if let Some(host) = req.header("Host")
        && !req.host_is_ours()
    {
        return refuse(&format!("bad Host {host:?}"));
    }
    let origin = req.header("Origin");
    if !settings.allowed_origins.is_empty() {
        match origin {
            Some(o)
                if settings
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o)) => {}
            Some(o) => return refuse(&format!("Origin {o:?} not allowed")),
            None => return refuse("no Origin"),
        }
    }
    match origin {
        Some(o) => upgrade().identity("origin", o).into(),
        None => upgrade().into(),
    }
}

sipwasm_plugin::http_plugin!(decide, config = Settings);
