//! The admin listener: the control API (`/api/v1/…`, [`api`]), the dashboard (`/ui/`,
//! [`ui`]), `GET /metrics` (Prometheus text), and the first endpoints kept as they were
//! (`GET /flows`, `GET /gateways`, `POST /plugins/reload`). Meant for loopback or a
//! management network, and guarded on either: the `Host` must be the listener's own
//! address or a configured name (no DNS rebinding from a web page), and every endpoint
//! but `/metrics` on loopback and the dashboard's static files needs
//! `Authorization: Bearer <token>` (no cross-site requests, no other local user's
//! browser tab; the dashboard asks for the token and sends it itself).

mod api;
pub(crate) mod reload;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::head::HeadLimits;
use crate::http::reader::read_request;
use crate::http::response::Response;
use crate::transport::Shared;

/// The commit this binary was built from (`sipwasm --version`).
pub(crate) const COMMIT: &str = env!("SIPWASM_COMMIT");

/// What the admin API serves.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// The server's shared state: flows, the core, counters, limits, drain mode.
    pub shared: Arc<Shared>,
    /// Plugins (for reload).
    pub plugins: crate::plugin::Plugins,
    /// The cluster node's id, when there is a cluster.
    pub node: Option<String>,
    /// When the server started (wall clock, and monotonic for the uptime).
    pub started: SystemTime,
    /// The same, monotonic.
    pub started_at: Instant,
    /// `POST /api/v1/reload` (the same as SIGHUP).
    pub reloader: reload::Reloader,
    /// `Server` header.
    pub server: String,
    /// The bearer token.
    pub token: Arc<str>,
    /// Names the `Host` header may give besides the listen address.
    pub hosts: Arc<[String]>,
}

/// Whether `host` (a `Host` header value) names the admin listener at `local`: its own
/// address (port optional), `localhost` on loopback, or one of `names` (port optional).
fn host_allowed(host: &str, local: SocketAddr, names: &[String]) -> bool {
    let host = host.trim();
    // Split off a port (a bracketed IPv6 reference keeps its colons).
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.is_empty() && (!n.contains(':') || n.ends_with(']')) => (n, Some(p)),
        _ => (host, None),
    };
    if port.is_some_and(|p| p.parse::<u16>() != Ok(local.port())) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == local.ip())
    {
        return true;
    }
    (local.ip().is_loopback() && name.eq_ignore_ascii_case("localhost"))
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn bearer_ok(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .filter_map(|(_, v)| {
            let (scheme, cred) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(cred.trim())
        })
        .any(|cred| {
            cred.len() == token.len()
                && cred
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        })
}

/// Admin connections served at once; past it a new one is closed at accept (a
/// management listener needs no more, and a flood of them must not hold memory).
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Serves the admin API until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "admin connection closed at accept: {MAX_ADMIN_CONNECTIONS} served already");
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    handle(stream, peer, &state).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, state: &AdminState) {
    let limits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 50,
        max_body_bytes: 16 * 1024,
    };
    let mut buf = Vec::new();
    let timeout = Duration::from_secs(10);
    let req = match read_request(
        &mut stream,
        &mut buf,
        &limits,
        Instant::now() + timeout,
        timeout,
        None,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, "admin request: {e}");
            return;
        }
    };
    let path = req.head.target.split('?').next().unwrap_or("");
    let local = stream.local_addr().unwrap_or(peer);
    let host = req
        .head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.as_str());
    let open = (path == "/metrics" && local.ip().is_loopback()) || ui::is_static(path);
    let resp = if !host.is_some_and(|h| host_allowed(h, local, &state.hosts)) {
        // Another name for this address: a page that rebinds its own name here.
        tracing::info!(%peer, host = host.unwrap_or(""), "admin request for a foreign Host refused");
        Response::error(421, "this Host is not the admin listener")
    } else if !open && !bearer_ok(&req.head.headers, &state.token) {
        let mut r = Response::error(401, "Authorization: Bearer <admin token> needed");
        r.headers.push((
            "WWW-Authenticate".into(),
            "Bearer realm=\"sipwasm-admin\"".into(),
        ));
        r
    } else {
        route(&req.head.method, path, &req.head.target, &req.body, state).await
    };
    let bytes = resp.serialize(&state.server, SystemTime::now(), false, false, false);
    // A client that does not read gives its place back all the same.
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// The answer to an admitted request.
async fn route(
    method: &str,
    path: &str,
    target: &str,
    body: &[u8],
    state: &AdminState,
) -> Response {
    if let Some(rest) = path.strip_prefix("/api/v1/") {
        return api::route(method, rest, target, body, state).await;
    }
    if ui::is_static(path) {
        return ui::serve(method, path);
    }
    match (method, path) {
        ("GET", "/metrics") => ok(
            "text/plain; version=0.0.4",
            state.shared.metrics.render().into_bytes(),
        ),
        ("GET", "/flows") => ok(
            "application/json",
            flows_json(&state.shared.flows).into_bytes(),
        ),
        ("GET", "/gateways") => {
            let list: Vec<serde_json::Value> = state
                .shared
                .metrics
                .gateways()
                .into_iter()
                .map(
                    |(set, target, up)| serde_json::json!({"set": set, "target": target, "up": up}),
                )
                .collect();
            ok(
                "application/json",
                serde_json::Value::Array(list).to_string().into_bytes(),
            )
        }
        ("POST", "/plugins/reload") => {
            let plugins = state.plugins.clone();
            match tokio::task::spawn_blocking(move || plugins.reload_all()).await {
                Ok(results) => {
                    let failed = results.iter().any(|(_, r)| r.is_err());
                    let json: serde_json::Map<String, serde_json::Value> = results
                        .into_iter()
                        .map(|(name, r)| {
                            let v = match r {
                                Ok(()) => serde_json::json!({"reloaded": true}),
                                Err(e) => serde_json::json!({"reloaded": false, "error": e}),
                            };
                            (name, v)
                        })
                        .collect();
                    let mut r = ok(
                        "application/json",
                        serde_json::Value::Object(json).to_string().into_bytes(),
                    );
                    if failed {
                        r.status = 422;
                    }
                    r
                }
                Err(_) => Response::error(500, "reload task failed"),
            }
        }
        ("GET", "/plugins/reload") => {
            let mut r = Response::error(405, "");
            r.headers.push(("Allow".into(), "POST".into()));
            r
        }
        ("GET", _) => Response::error(404, ""),
        _ => {
            let mut r = Response::error(405, "");
            r.headers.push(("Allow".into(), "GET".into()));
            r
        }
    }
}

fn ok(content_type: &str, body: Vec<u8>) -> Response {
    Response {
        status: 200,
        reason: None,
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
        close: true,
    }
}

fn flows_json(flows: &crate::driver::flow::FlowTable) -> String {
    let list: Vec<serde_json::Value> = flows
        .list()
        .iter()
        .map(|f| {
            let opened = f
                .opened
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            serde_json::json!({
                "id": f.id,
                "transport": format!("{:?}", f.transport).to_uppercase(),
                "remote": f.remote.to_string(),
                "local": f.local.to_string(),
                "identity": f.identity.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
                "identity_enforced": f.enforced,
                "opened_unix": opened,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listeners_own_names_are_hosts() {
        let lo: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let names = ["admin.example".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "localhost",
            "LOCALHOST:9090",
            "admin.example:9090",
        ] {
            assert!(host_allowed(ok, lo, &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1:80",
            "127.0.0.2:9090",
            "localhost.evil.example",
            "",
        ] {
            assert!(!host_allowed(bad, lo, &names), "{bad}");
        }
        let v6: SocketAddr = "[::1]:9090".parse().unwrap();
        assert!(host_allowed("[::1]:9090", v6, &[]));
        assert!(host_allowed("[::1]", v6, &[]));
        let public: SocketAddr = "192.0.2.5:9090".parse().unwrap();
        assert!(
            !host_allowed("localhost", public, &[]),
            "localhost only on loopback"
        );
        assert!(host_allowed("192.0.2.5:9090", public, &[]));
    }

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        let h = |v: &str| vec![("Authorization".to_string(), v.to_string())];
        assert!(bearer_ok(&h("Bearer s3cret"), "s3cret"));
        assert!(bearer_ok(&h("bearer  s3cret "), "s3cret"));
        assert!(!bearer_ok(&h("Bearer s3cre"), "s3cret"));
        assert!(!bearer_ok(&h("Basic s3cret"), "s3cret"));
        assert!(!bearer_ok(&[], "s3cret"));
    }
}
