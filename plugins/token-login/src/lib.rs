//! `token-login`: logs a browser in at the WebSocket upgrade with a token its web
//! application minted (the TURN REST style WebRTC services use for TURN credentials):
//!
//! ```text
//! token = EXPIRY ":" USER ":" MAC
//! EXPIRY: Unix time in seconds after which the token no longer opens a connection
//! MAC:    base64url, unpadded, of HMAC-SHA-256(key, EXPIRY ":" USER)
//! ```
//!
//! carried as `?token=` on the WebSocket URL (`wss://sip.example.org/?token=…`). The
//! plugin never sees the key: the host checks the MAC with the key its `keys` setting
//! grants. A token gates the upgrade only; the connection then lives as any other.
//!
//! ```text
//! not a WebSocket handshake                 -> 404
//! Host not ours, Origin not allowed         -> 403
//! no token                                  -> 403 Token Required
//! malformed, wrong MAC, expiry too far away -> 403 Invalid Token
//! expired                                   -> 403 Token Expired
//! valid                                     -> upgrade, identity user=USER (domain=…)
//! ```
//!
//! With `identity = "enforce"` on the listener the host then holds the connection to
//! USER: a REGISTER or call as anyone else gets 403.
//!
//! Plugin configuration (the `config` table of the plugin in the server config; the
//! plugin's `keys` setting must grant the key):
//!
//! ```toml
//! key = "login"                                # [keys.login]; default "login"
//! max-lifetime = 86400                         # seconds a token may run ahead; default a day
//! domain = "example.org"                       # identity domain; default: any of ours
//! allowed-origins = ["https://app.example.org"] # default: any Origin
//! ```

use serde::Deserialize;
use sipwasm_plugin::{Decision, HttpRequest, RequestExt, base64url, keys, reply, upgrade};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_max_lifetime")]
    max_lifetime: u64,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

fn default_key() -> String {
    "login".into()
}

fn default_max_lifetime() -> u64 {
    86_400
}

/// Why a token does not log anyone in.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Missing,
    Invalid(&'static str),
    Expired,
}

/// The user a token names, if it is valid at `now` (Unix seconds).
fn check(token: &str, settings: &Settings, now: u64) -> Result<String, Refusal> {
    let (signed, mac) = token.rsplit_once(':').ok_or(Refusal::Invalid("no MAC"))?;
    let (expiry, user) = signed.split_once(':').ok_or(Refusal::Invalid("no user"))?;
    let expiry: u64 = (!expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()))
        .then(|| expiry.parse().ok())
        .flatten()
        .ok_or(Refusal::Invalid("expiry is not a number"))?;
    if user.is_empty() || user.len() > 256 || user.chars().any(char::is_control) {
        return Err(Refusal::Invalid(
            "user is empty, too long or has control characters",
        ));
    }
    let mac = base64url::decode(mac).ok_or(Refusal::Invalid("MAC is not base64url"))?;
    // The MAC first: an expiry or user an attacker made up says nothing.
    if !keys::hmac_verify(&settings.key, signed.as_bytes(), &mac) {
        return Err(Refusal::Invalid("wrong MAC"));
    }
    if expiry <= now {
        return Err(Refusal::Expired);
    }
    if expiry - now > settings.max_lifetime {
        return Err(Refusal::Invalid("expiry further away than max-lifetime"));
    }
    Ok(user.to_string())
}

fn refuse(reason: &str, why: &str, peer: &str) -> Decision {
    sipwasm_plugin::warn(&format!("login refused for {peer}: {why}"));
    reply(403)
        .reason(reason)
        .text(&format!("{reason}\n"))
        .close()
        .into()
}

/// Decides a request.
fn decide(req: HttpRequest, settings: &Settings) -> Decision {
    let peer = req.peer.remote_addr.clone();
    if !req.is_websocket() {
        return reply(404).text("Not Found\n").into();
    }
    if let Some(host) = req.header("Host")
        && !req.host_is_ours()
    {
        return refuse("Forbidden", &format!("bad Host {host:?}"), &peer);
    }
    if !settings.allowed_origins.is_empty() {
        let allowed = req.header("Origin").is_some_and(|o| {
            settings
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        });
        if !allowed {
            return refuse("Forbidden", "Origin not allowed", &peer);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = req.query("token").unwrap_or_default();
    let checked = if token.is_empty() {
        Err(Refusal::Missing)
    } else {
        check(&token, settings, now)
    };
    match checked {
        Ok(user) => {
            let mut up = upgrade().identity("user", &user).identity("login", "token");
            if let Some(d) = &settings.domain {
                up = up.identity("domain", d);
            }
            up.into()
        }
        Err(Refusal::Missing) => refuse("Token Required", "no token", &peer),
        Err(Refusal::Expired) => refuse("Token Expired", "token expired", &peer),
        Err(Refusal::Invalid(why)) => refuse("Invalid Token", why, &peer),
    }
}

sipwasm_plugin::http_plugin!(decide, config = Settings);
