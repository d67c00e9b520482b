//! `origin-gate`: the example plugin of the README ("A plugin in 15 lines"), which
//! shows this file from its first `use` on (a test keeps the two the same). Upgrades
//! WebSocket requests for our host from the web origin `https://app.example.org`,
//! refuses other WebSocket requests with 403, answers anything else 404.

use sipwasm_plugin::{Decision, HttpRequest, RequestExt, reply, upgrade};

fn decide(req: HttpRequest) -> Decision {
    if !req.is_websocket() {
        return reply(404).text("Not Found\n").into();
    }
    match req.header("Origin") {
        Some(origin) if origin == "https://app.example.org" && req.host_is_ours() => {
            upgrade().identity("origin", origin).into()
        }
        _ => reply(403).close().into(),
    }
}

sipwasm_plugin::http_plugin!(decide);
