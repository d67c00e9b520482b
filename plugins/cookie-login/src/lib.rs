//! `cookie-login`: a login form and a signed session cookie, checked at the WebSocket
//! upgrade (RFC 7118 section 7: the browser sends its cookies with the handshake).
//!
//! ```text
//! GET  /login        -> the form
//! POST /login        -> user and password checked against the server's user store:
//!                       303 to `next` (a path of ours, default /) with the session
//!                       cookie; 403 and the form again otherwise
//! GET|POST /logout   -> 303 to /login, the cookie cleared
//! GET  /login/session -> 200 {"user": …, "domain": …} with a valid cookie, else 401
//!                       (what a page of ours asks before it opens its WebSocket)
//! WebSocket upgrade  -> with a valid cookie: identity user=USER, login=cookie;
//!                       else 403 (Host not ours, Origin not allowed: 403 too)
//! anything else      -> 404
//! ```
//!
//! The cookie is `EXPIRY.USER.MAC` (USER in base64url, MAC the base64url HMAC-SHA-256
//! of `cookie:EXPIRY:USER` under the granted key): `HttpOnly`, `SameSite=Strict`,
//! `Path=/`, `Secure` on https. The plugin holds no key and no password: the host
//! signs and checks (`keys`), and checks passwords against its store (`credentials`),
//! with the password-guessing limits of SIP Digest.
//!
//! A form POST whose `Origin` is not this server's (nor an allowed origin) is refused:
//! another site cannot log a visitor in as someone else (login CSRF).
//!
//! Plugin configuration (the plugin's `keys` setting must grant the key):
//!
//! ```toml
//! key = "login"                                 # [keys.login]; default "login"
//! realm = "localhost"                           # the store's realm; default "localhost"
//! session-lifetime = 43200                      # seconds; default 12 hours
//! cookie = "sipwasm_session"                    # the cookie's name
//! domain = "example.org"                        # identity domain; default: any of ours
//! allowed-origins = ["https://app.example.org"] # other origins whose pages may log in
//! ```

use serde::Deserialize;
use sipwasm_plugin::{
    Decision, HttpRequest, RequestExt, Transport, base64url, credentials, keys, reply, upgrade,
};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_lifetime")]
    session_lifetime: u64,
    #[serde(default = "default_cookie")]
    cookie: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    open_on_loopback: bool,
}

fn default_key() -> String {
    "login".into()
}
fn default_realm() -> String {
    "localhost".into()
}
fn default_lifetime() -> u64 {
    12 * 3600
}
fn default_cookie() -> String {
    "sipwasm_session".into()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the MAC covers: `cookie:` first, so that a token of token-login under the
/// same key is never a cookie.
fn signed(expiry: u64, user: &str) -> String {
    format!("cookie:{expiry}:{user}")
}

/// A session cookie's value for `user`, valid until `expiry`.
fn mint(settings: &Settings, user: &str, expiry: u64) -> Result<String, String> {
    let mac = keys::hmac_sign(&settings.key, signed(expiry, user).as_bytes())?;
    Ok(format!(
        "{expiry}.{}.{}",
        base64url::encode(user.as_bytes()),
        base64url::encode(&mac)
    ))
}

/// The user a cookie value names, if it is valid at `now`.
fn check(value: &str, settings: &Settings, now: u64) -> Option<String> {
    let mut parts = value.split('.');
    let (expiry, user, mac) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let expiry: u64 = expiry.parse().ok()?;
    let user = String::from_utf8(base64url::decode(user)?).ok()?;
    let mac = base64url::decode(mac)?;
    (keys::hmac_verify(&settings.key, signed(expiry, &user).as_bytes(), &mac)
        && expiry > now
        && expiry - now <= settings.session_lifetime)
        .then_some(user)
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A path of ours to go to after login: it starts with one `/` and holds only what a
/// path and query may hold as they are (no white space or control character, which
/// browsers strip from a `Location`: `/\t/evil` would become `//evil`; no `\`).
fn safe_next(next: Option<String>) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._~!$&'()*+,;=:@%?-".contains(&b);
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && n.bytes().all(plain) => n,
        _ => "/".into(),
    }
}

fn form_page(status: u16, message: &str, next: &str, open: bool) -> Decision {
    let mut note = if message.is_empty() {
        String::new()
    } else {
        format!("<p role=\"alert\">{}</p>", escape_html(message))
    };
    if open {
        note.push_str(
            "<p>Try-it mode on this machine: any name logs in, the password is not \
             checked.</p>",
        );
    }
    let required = if open { "" } else { " required" };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Log in</title></head><body><main><h1>Log in</h1>{note}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><label>User <input name=\"user\" autocomplete=\"username\" required></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"{required}></label></p>\
         <p><button type=\"submit\">Log in</button></p></form></main></body></html>\n",
        escape_html(next)
    );
    reply(status)
        .header("Cache-Control", "no-store")
        .header(
            "Content-Security-Policy",
            "default-src 'none'; form-action 'self'",
        )
        .html(&html)
        .into()
}

/// Whether a request from a page comes from ours (or an allowed origin): its `Origin`,
/// when the browser sent one, names this server or an allowed one.
fn same_origin(req: &HttpRequest, settings: &Settings) -> bool {
    let Some(origin) = req.header("Origin") else {
        // Browsers send Origin on every cross-site POST; none: not a cross-site form.
        return true;
    };
    if settings
        .allowed_origins
        .iter()
        .any(|a| a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    host.is_some_and(|h| {
        req.header("Host")
            .is_some_and(|ours| ours.eq_ignore_ascii_case(h))
    })
}

/// Whether the client is on this machine (127.0.0.0/8, ::1, or v4-mapped loopback)
/// and not behind a reverse proxy there: a request that carries `Forwarded`,
/// `X-Forwarded-For` or `X-Real-IP` came from elsewhere, whatever the peer address.
fn on_loopback(req: &HttpRequest) -> bool {
    let proxied = ["Forwarded", "X-Forwarded-For", "X-Real-IP"]
        .iter()
        .any(|h| req.header(h).is_some());
    !proxied
        && req
            .peer
            .remote_addr
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| match ip {
                std::net::IpAddr::V4(v4) => v4.is_loopback(),
                std::net::IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            })
}

/// Whether the try-it mode lets this client in without a password: `open-on-loopback`,
/// a client on loopback not through a proxy, and no user of the realm in the store
/// yet (an operator who adds users turns it off).
fn open_login(req: &HttpRequest, settings: &Settings) -> bool {
    settings.open_on_loopback && on_loopback(req) && !credentials::has_users(&settings.realm)
}

fn cookie_header(settings: &Settings, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        settings.cookie,
        if secure { "; Secure" } else { "" }
    )
}

fn log_in(req: &HttpRequest, settings: &Settings) -> Decision {
    let next = safe_next(req.form("next"));
    if !same_origin(req, settings) {
        sipwasm_plugin::warn(&format!(
            "login form posted from another origin ({:?}) refused",
            req.header("Origin").unwrap_or("")
        ));
        return reply(403).text("Forbidden\n").close().into();
    }
    let open = open_login(req, settings);
    let (Some(user), Some(password)) = (req.form("user"), req.form("password")) else {
        return form_page(400, "Enter a user and a password.", &next, open);
    };
    // A name a SIP URI's user part can carry as it is (the page registers with it).
    let usable = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c);
    if user.is_empty() || user.len() > 64 || !user.chars().all(usable) {
        return form_page(
            403,
            "Wrong user or password (a name is letters, digits and -_.!~*'()&=+$,;?/).",
            &next,
            open,
        );
    }
    if !open && !credentials::check_password(&settings.realm, &user, &password) {
        sipwasm_plugin::warn(&format!(
            "login refused for {user:?} from {}",
            req.peer.remote_addr
        ));
        return form_page(403, "Wrong user or password.", &next, open);
    }
    let expiry = now() + settings.session_lifetime;
    let value = match mint(settings, &user, expiry) {
        Ok(v) => v,
        Err(e) => {
            sipwasm_plugin::error(&format!("cannot sign the session cookie: {e}"));
            return reply(500).close().into();
        }
    };
    let secure = req.peer.transport == Transport::Tls;
    sipwasm_plugin::info(&format!("{user} logged in from {}", req.peer.remote_addr));
    reply(303)
        .header("Location", &next)
        .header(
            "Set-Cookie",
            &cookie_header(settings, &value, settings.session_lifetime, secure),
        )
        .header("Cache-Control", "no-store")
        .into()
}

/// Who the cookie says the visitor is, for a page of ours: `{"user", "domain"}` (the
/// domain configured, else the host the page was loaded from), or 401.
fn session(req: &HttpRequest, settings: &Settings) -> Decision {
    let user = req
        .cookie(&settings.cookie)
        .and_then(|v| check(v, settings, now()));
    let Some(user) = user else {
        return reply(401)
            .header("Cache-Control", "no-store")
            .json(&serde_json::json!({ "error": "not logged in" }))
            .into();
    };
    let domain = settings.domain.clone().unwrap_or_else(|| {
        let host = req.header("Host").unwrap_or("localhost");
        // `[::1]:8080` -> `[::1]`, `example.org:8080` -> `example.org`.
        match host.rfind(':') {
            Some(i) if !host[i..].contains(']') => host[..i].to_string(),
            _ => host.to_string(),
        }
    });
    reply(200)
        .header("Cache-Control", "no-store")
        .json(&serde_json::json!({ "user": user, "domain": domain }))
        .into()
}

/// Decides a request.
fn decide(req: HttpRequest, settings: &Settings) -> Decision {
    if let Some(host) = req.header("Host")
        && !req.host_is_ours()
    {
        sipwasm_plugin::warn(&format!("bad Host {host:?}"));
        return reply(403).close().into();
    }
    if req.is_websocket() {
        if !settings.allowed_origins.is_empty() || req.header("Origin").is_some() {
            // A page elsewhere may not use the visitor's cookie (cross-site
            // WebSocket hijacking): its Origin must be ours or allowed.
            if !same_origin(&req, settings) {
                sipwasm_plugin::warn("WebSocket from another origin refused");
                return reply(403).close().into();
            }
        }
        return match req
            .cookie(&settings.cookie)
            .and_then(|v| check(v, settings, now()))
        {
            Some(user) => {
                let mut up = upgrade()
                    .identity("user", &user)
                    .identity("login", "cookie");
                if let Some(d) = &settings.domain {
                    up = up.identity("domain", d);
                }
                up.into()
            }
            None => reply(403)
                .reason("Login Required")
                .text("Login Required\n")
                .close()
                .into(),
        };
    }
    match (req.method.as_str(), req.path()) {
        ("GET" | "HEAD", "/login") => form_page(
            200,
            "",
            &safe_next(req.query("next")),
            open_login(&req, settings),
        ),
        ("GET", "/login/session") => session(&req, settings),
        ("POST", "/login") => log_in(&req, settings),
        ("GET" | "POST", "/logout") => {
            let secure = req.peer.transport == Transport::Tls;
            reply(303)
                .header("Location", "/login")
                .header("Set-Cookie", &cookie_header(settings, "", 0, secure))
                .header("Cache-Control", "no-store")
                .into()
        }
        _ => reply(404).text("Not Found\n").into(),
    }
}

sipwasm_plugin::http_plugin!(decide, config = Settings);
