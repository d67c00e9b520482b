//! `misbehave`: a test-only plugin that fails in the ways a buggy or hostile plugin can,
//! chosen by the request path, so that one test server can exercise every failure and
//! then show that the next request still works.
//!
//! ```text
//! /trap          panics (a Wasm trap)
//! /loop          spins forever (hits the epoch deadline)
//! /bomb          allocates until the memory cap stops it
//! /crlf          replies with a header value containing CR LF
//! /owned         replies with a Content-Length header (owned by the host)
//! /wrong-proto   upgrades with a subprotocol the client did not offer
//! /status-101    replies with status 101 (reserved to the host)
//! /challenge     asks for Digest authentication in realm "test"
//! /verify?PW     replies 200 with what `digest.verify("test", PW)` says of the request's
//!                credentials (valid, stale, invalid, missing)
//! /config        replies 200 with plugin-config() as the body
//! /myself?H      replies 200 "yes" or "no" for is-myself(H)
//! /echo          replies 200 with the request as JSON-ish text (method, target, headers, body)
//! /stderr        prints to stdout and stderr, then replies 200
//! /throw         prints an error to stderr, then traps
//! /denied        calls `wasi:keyvalue/store.get`, which the host does not grant
//! /as?U[@D]      upgrades WebSocket requests with identity user=U (and domain=D)
//! /anonymous     upgrades WebSocket requests with no identity
//! anything else  upgrades WebSocket requests (identity user=test), else 200 "ok"
//! ```

// The world adds an import the host does not grant (a WASI interface beyond what the
// host links), to show that such a component loads and fails closed when it calls it.
wit_bindgen::generate!({
    inline: r#"
        package sipwasm:misbehave;

        world misbehave {
            include sipwasm:plugin/http-handler@0.2.1;
            import wasi:keyvalue/store@0.2.0-draft;
        }

        package wasi:keyvalue@0.2.0-draft {
            interface store {
                get: func(key: string) -> option<string>;
            }
        }
    "#,
    path: "../../../wit",
    world: "sipwasm:misbehave/misbehave",
    generate_all,
});

use sipwasm::plugin::host::{self, Level};
use sipwasm::plugin::types::{Challenge, Response, Upgrade, Websocket};

fn ok(body: impl Into<Vec<u8>>) -> Decision {
    reply(200, vec![], body.into())
}

fn reply(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Decision {
    Decision::Reply(Response {
        status,
        reason: None,
        headers,
        body,
        close: false,
    })
}

struct Misbehave;

impl Guest for Misbehave {
    fn on_http_request(req: HttpRequest) -> Decision {
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (req.target.as_str(), ""),
        };
        match path {
            "/trap" => panic!("misbehave: asked to trap"),
            "/stderr" => {
                println!("misbehave: a line on stdout");
                eprintln!("misbehave: a line on stderr");
                ok("printed")
            }
            "/throw" => {
                eprintln!("Error: misbehave threw");
                std::process::abort()
            }
            "/denied" => {
                let v = wasi::keyvalue::store::get("k");
                ok(v.unwrap_or_default())
            }
            "/loop" => {
                host::log(Level::Info, "misbehave: looping forever");
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Each MiB grows linear memory (the cap is enforced on growth);
                    // not writing it keeps the bomb fast on a loaded machine, so it
                    // meets the cap long before the deadline.
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "/crlf" => reply(
                200,
                vec![("X-Test".into(), "a\r\nInjected: yes".into())],
                vec![],
            ),
            "/owned" => reply(200, vec![("Content-Length".into(), "5".into())], vec![]),
            "/wrong-proto" => Decision::Upgrade(Upgrade {
                subprotocol: "not-offered".into(),
                headers: vec![],
                identity: vec![],
            }),
            "/status-101" => reply(101, vec![], vec![]),
            "/as" => {
                let mut identity = Vec::new();
                let (user, domain) = query.split_once('@').unwrap_or((query, ""));
                identity.push(("user".to_string(), user.to_string()));
                if !domain.is_empty() {
                    identity.push(("domain".to_string(), domain.to_string()));
                }
                Decision::Upgrade(Upgrade {
                    subprotocol: "sip".into(),
                    headers: vec![],
                    identity,
                })
            }
            "/anonymous" => Decision::Upgrade(Upgrade {
                subprotocol: "sip".into(),
                headers: vec![],
                identity: vec![],
            }),
            "/challenge" => Decision::Challenge(Challenge {
                realm: "test".into(),
            }),
            "/verify" => ok(match sipwasm::plugin::digest::verify("test", query) {
                sipwasm::plugin::digest::Verdict::Valid => "valid",
                sipwasm::plugin::digest::Verdict::Stale => "stale",
                sipwasm::plugin::digest::Verdict::Invalid => "invalid",
                sipwasm::plugin::digest::Verdict::Missing => "missing",
            }),
            "/config" => ok(host::plugin_config()),
            "/myself" => ok(if host::is_myself(query) { "yes" } else { "no" }),
            "/echo" => {
                let mut text = format!("{} {} {}\n", req.method, req.target, req.version);
                for (n, v) in &req.headers {
                    text.push_str(&format!("{n}: {v}\n"));
                }
                text.push_str(&format!(
                    "peer: {}:{} -> {}:{} {:?}\n",
                    req.peer.remote_addr,
                    req.peer.remote_port,
                    req.peer.local_addr,
                    req.peer.local_port,
                    req.peer.transport
                ));
                text.push_str(&format!("connection-id: {}\n", req.connection_id));
                text.push_str(&format!("websocket: {:?}\n", req.websocket));
                text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&req.body)));
                ok(text)
            }
            _ => match req.websocket {
                Websocket::None => ok("ok"),
                _ => Decision::Upgrade(Upgrade {
                    subprotocol: "sip".into(),
                    headers: vec![("Set-Cookie".into(), "session=test; HttpOnly".into())],
                    identity: vec![("user".into(), "test".into())],
                }),
            },
        }
    }
}

export!(Misbehave);
