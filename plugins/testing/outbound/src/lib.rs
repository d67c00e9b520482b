//! `outbound`: a test-only plugin that fetches a URL with `wasi:http` while deciding
//! a request, as a policy checking a token against the operator's auth service would.
//!
//! ```text
//! /fetch?URL     GET URL; reply 200 with "STATUS BODY", or panic (trap) naming the
//!                error when the host refuses or the request fails
//! anything else  200 "ok"
//! ```

wit_bindgen::generate!({
    world: "http-handler",
    path: "../../../wit",
});

use sipwasm::plugin::types::Response;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

fn ok(body: impl Into<Vec<u8>>) -> Decision {
    Decision::Reply(Response {
        status: 200,
        reason: None,
        headers: vec![],
        body: body.into(),
        close: false,
    })
}

/// GET `url`: its status and body.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&Method::Get).map_err(|()| "method")?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_string()),
    };
    req.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    req.set_authority(Some(authority))
        .map_err(|()| "authority")?;
    req.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    // Bounded by the host: the plugin's deadline ends the call.
    let resp = loop {
        match pending.get() {
            Some(r) => break r,
            None => pending.subscribe().block(),
        }
    };
    let resp = resp
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.consume().map_err(|()| "body")?;
    let stream = body.stream().map_err(|()| "body stream")?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(16 * 1024) {
            Ok(chunk) => out.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body: {}", e.to_debug_string()));
            }
        }
    }
    Ok((status, out))
}

struct Outbound;

impl Guest for Outbound {
    fn on_http_request(req: HttpRequest) -> Decision {
        match req.target.split_once('?') {
            Some(("/fetch", url)) => match fetch(url) {
                Ok((status, body)) => {
                    let mut text = format!("{status} ").into_bytes();
                    text.extend(body);
                    ok(text)
                }
                Err(e) => panic!("outbound request to {url} failed: {e}"),
            },
            _ => ok("ok"),
        }
    }
}

export!(Outbound);
