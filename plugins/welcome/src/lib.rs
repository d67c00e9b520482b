//! `welcome`: serves a small HTML page at `/` and upgrades WebSocket requests to SIP.
//!
//! The page opens a WebSocket back to the server with the `sip` subprotocol, sends an
//! OPTIONS request and shows the answer: a one-click check that a deployment works.
//!
//! ```text
//! GET|HEAD /  or /index.html  -> 200 text/html
//! WebSocket request offering sip -> upgrade
//! other methods on /           -> 405 with Allow
//! anything else                -> 404
//! ```

wit_bindgen::generate!({
    world: "http-handler",
    path: "../../wit",
});

use sipwasm::plugin::types::{Response, Upgrade, Websocket};

const PAGE: &str = include_str!("index.html");

fn reply(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Decision {
    Decision::Reply(Response {
        status,
        reason: None,
        headers,
        body,
        close: false,
    })
}

struct Welcome;

impl Guest for Welcome {
    fn on_http_request(req: HttpRequest) -> Decision {
        if !matches!(req.websocket, Websocket::None) {
            return Decision::Upgrade(Upgrade {
                subprotocol: "sip".into(),
                headers: vec![],
                identity: vec![],
            });
        }
        let path = req.target.split(['?', '#']).next().unwrap_or("");
        if path != "/" && path != "/index.html" {
            return reply(
                404,
                vec![("Content-Type".into(), "text/plain".into())],
                b"Not Found\n".to_vec(),
            );
        }
        let html = vec![
            ("Content-Type".into(), "text/html; charset=utf-8".into()),
            ("Cache-Control".into(), "no-cache".into()),
        ];
        match req.method.as_str() {
            "GET" => reply(200, html, PAGE.as_bytes().to_vec()),
            // HEAD: same headers, no body (the host sends Content-Length: 0).
            "HEAD" => reply(200, html, Vec::new()),
            _ => reply(405, vec![("Allow".into(), "GET, HEAD".into())], Vec::new()),
        }
    }
}

export!(Welcome);
