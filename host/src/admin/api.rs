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

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    flows: Arc<FlowTable>,
    server: String,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (metrics, flows, server) = (metrics.clone(), flows.clone(), server.clone());
                tokio::spawn(async move { handle(stream, peer, &metrics, &flows, &server).await });
            }
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    metrics: &Metrics,
    flows: &FlowTable,
    server: &str,
) {
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
        ("GET", "/metrics") => ok("text/plain; version=0.0.4", metrics.render().into_bytes()),
        ("GET", "/flows") => ok("application/json", flows_json(flows).into_bytes()),
        ("GET", _) => Response::error(404, ""),
        _ => {
            let mut r = Response::error(405, "");
            r.headers.push(("Allow".into(), "GET".into()));
            r
        }
    };
    let bytes = resp.serialize(server, SystemTime::now(), false, false, false);
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
