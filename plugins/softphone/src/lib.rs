//! `softphone`: a page to try sipwasm with, in two browser tabs: log in (through the
//! login plugin at `/login`), then message and call between the tabs, with audio over
//! the browsers' own WebRTC. The page, its script and JsSIP (bundled in at build time
//! from npm, pinned) are all served from here: nothing is fetched from elsewhere.
//!
//! ```text
//! GET /                -> the page (it asks /login/session who is logged in, and
//!                         sends a visitor who is not to /login)
//! GET /softphone.js    -> its script
//! GET /softphone.css   -> its style
//! GET /jssip.js        -> JsSIP 3.13, minified, MIT licence kept
//! a WebSocket here     -> 403 (the SIP WebSocket is /ws, behind the login)
//! anything else        -> 404
//! ```
//!
//! Serve it beside a login plugin on one listener (the embedded default does):
//! `routes = { "/" = "softphone", "/login" = "login", "/logout" = "login", "/ws" = "login" }`.

use sipwasm_plugin::{Decision, HttpRequest, RequestExt, reply};

const PAGE: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/softphone.js");
const STYLE: &str = include_str!("../web/softphone.css");
const JSSIP: &str = include_str!(concat!(env!("OUT_DIR"), "/jssip.js"));

/// What the page may load and connect to: this server only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &str, cache: &str) -> Decision {
    reply(200)
        .header("Cache-Control", cache)
        .header("X-Content-Type-Options", "nosniff")
        .body(content_type, body.as_bytes())
        .into()
}

/// Serves a request.
fn serve(req: HttpRequest) -> Decision {
    if let Some(host) = req.header("Host")
        && !req.host_is_ours()
    {
        sipwasm_plugin::warn(&format!("bad Host {host:?}"));
        return reply(403).close().into();
    }
    if req.is_websocket() {
        return reply(403)
            .text("The SIP WebSocket is /ws, after logging in at /login\n")
            .close()
            .into();
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return reply(405).header("Allow", "GET, HEAD").into();
    }
    match req.path() {
        "/" | "/index.html" => reply(200)
            .header("Cache-Control", "no-store")
            .header("Content-Security-Policy", CSP)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .html(PAGE)
            .into(),
        "/softphone.js" => asset("text/javascript; charset=utf-8", SCRIPT, "no-cache"),
        "/softphone.css" => asset("text/css; charset=utf-8", STYLE, "no-cache"),
        "/jssip.js" => asset(
            "text/javascript; charset=utf-8",
            JSSIP,
            "public, max-age=86400",
        ),
        _ => reply(404).text("Not Found\n").into(),
    }
}

sipwasm_plugin::http_plugin!(serve);
