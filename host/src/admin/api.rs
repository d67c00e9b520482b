//! The admin listener: `GET /metrics` (Prometheus text) and `GET /flows` (JSON list of
//! live flows with their identity). Meant for loopback or a management network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::http::head::HeadLimits;
use crate::http::reader::read_request;
use crate::http::response::Response;
use crate::transport::FlowTable;

/// What the admin API serves.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Live flows.
    pub flows: Arc<FlowTable>,
    /// Plugins (for reload).
    pub plugins: crate::plugin::Plugins,
    /// `Server` header.
    pub server: String,
}

/// Serves the admin API until shutdown.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move { handle(stream, peer, &state).await });
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
        max_body_bytes: 0,
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
    let resp = match (req.head.method.as_str(), path) {
        ("GET", "/metrics") => ok(
            "text/plain; version=0.0.4",
            state.metrics.render().into_bytes(),
        ),
        ("GET", "/flows") => ok("application/json", flows_json(&state.flows).into_bytes()),
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
    };
    let bytes = resp.serialize(&state.server, SystemTime::now(), false, false, false);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
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

fn flows_json(flows: &FlowTable) -> String {
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
                "opened_unix": opened,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}
