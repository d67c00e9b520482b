//! `sipwasm plugin check` and `sipwasm plugin run`: look at a component and try it on a
//! request without a server, as the host would run it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::{Plugins, World, bindings, engine, linker};
use crate::auth::NonceKey;
use crate::config::{Config, PluginRuntimeConfig};
use crate::core::Myself;
use crate::http::answer::{Answer, AnswerContext, RequestFacts, answer};
use crate::http::handshake::{self, HandshakeCheck};
use crate::http::head::{self, HeadLimits};
use crate::metrics::Metrics;

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// What `plugin check` found: the report to print and whether this host can run it.
#[derive(Debug)]
pub struct CheckReport {
    /// Human-readable report.
    pub text: String,
    /// The component implements `http-handler` and imports nothing the host lacks.
    pub runnable: bool,
}

/// Compiles `path`, lists its imports and exports, and checks it against the
/// `http-handler` world and the host's imports.
pub fn check(path: &Path) -> anyhow::Result<CheckReport> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let engine = engine::build(&PluginRuntimeConfig::default(), 64 << 20)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let started = Instant::now();
    let component = Component::new(&engine, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid WebAssembly component: {e:#}",
            path.display()
        )
    })?;
    let compile = started.elapsed();
    let ty = component.component_type();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: {} bytes, compiled in {} ms",
        path.display(),
        bytes.len(),
        compile.as_millis()
    );
    let _ = writeln!(text, "exports:");
    for (name, item) in ty.exports(&engine) {
        let _ = writeln!(text, "  {name} ({})", kind(&item.ty));
    }
    let _ = writeln!(text, "imports:");
    for (name, item) in ty.imports(&engine) {
        let _ = writeln!(text, "  {name} ({})", kind(&item.ty));
    }
    let world = super::world_of(&engine, &component);
    let linker = linker(&engine, world).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let verdict = match super::prepare(&linker, &engine, &component) {
        Err(e) => Err(format!("{e:#}")),
        Ok(prepared) => {
            let (implemented, called): (Result<(), wasmtime::Error>, &[&str]) = match world {
                World::HttpHandler => (
                    bindings::HttpHandlerPre::new(prepared.pre).map(drop),
                    &["on-http-request"],
                ),
                World::SipRouter => (
                    bindings::SipRouterPre::new(prepared.pre).map(drop),
                    &["on-sip-request", "on-flow-closed"],
                ),
            };
            match implemented {
                Ok(()) => {
                    if !prepared.denied.is_empty() {
                        let _ = writeln!(
                            text,
                            "not granted (linked as traps, a call fails the request): {}",
                            prepared.denied.join(", ")
                        );
                    }
                    let extra: Vec<String> = ty
                        .exports(&engine)
                        .map(|(n, _)| n.to_string())
                        .filter(|n| !called.contains(&n.as_str()))
                        .collect();
                    if !extra.is_empty() {
                        let _ = writeln!(text, "never called by the host: {}", extra.join(", "));
                    }
                    Ok(())
                }
                Err(e) => Err(format!(
                    "it does not implement the world {}: {e:#}",
                    world.name()
                )),
            }
        }
    };
    let runnable = verdict.is_ok();
    match verdict {
        Ok(()) => {
            let _ = writeln!(
                text,
                "world: sipwasm:plugin/{}@0.2.1 — this host can run it",
                world.name()
            );
        }
        Err(why) => {
            let _ = writeln!(text, "not runnable here: {why}");
        }
    }
    Ok(CheckReport { text, runnable })
}

/// Options of `plugin run`.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// The component.
    pub plugin: &'a Path,
    /// The raw HTTP request (LF line ends are accepted).
    pub request: &'a [u8],
    /// The plugin's `config` table, as TOML (`key = value` lines).
    pub config: Option<&'a str>,
    /// The listener port the request pretends to have reached.
    pub local_port: u16,
    /// Pretend the connection is TLS.
    pub tls: bool,
}

/// Runs the plugin on one request and returns what the host would send, followed by
/// a line saying what happens to the connection.
pub async fn run(opts: RunOptions<'_>) -> anyhow::Result<String> {
    let path = std::fs::canonicalize(opts.plugin)
        .with_context(|| format!("cannot read {}", opts.plugin.display()))?;
    let table = opts.config.unwrap_or("");
    // The plugin is not tied to a listener, so it loads as the world it implements.
    let toml = format!(
        "[server]\ndomains = [\"localhost\", \"127.0.0.1\"]\n\
         [[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:{}\"\n\
         [plugins.plugin]\npath = {:?}\n[plugins.plugin.config]\n{table}\n",
        opts.local_port,
        path.display().to_string(),
    );
    let config = Config::parse(&toml, "--config", Path::new("."))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], opts.local_port));
    let myself = Arc::new(Myself::new(&config.server.domains, &[local]));
    let plugins = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            // No keys: a plugin that signs or verifies is told it is granted none.
            let keys = crate::keys::KeyRing::default();
            // No users either: check-password is false, verify-stored invalid.
            let users = Arc::new(crate::users::UserStore::empty());
            Plugins::load(
                &config,
                myself,
                Arc::new(Metrics::default()),
                None,
                &keys,
                users,
            )
        })
        .await??
    };
    let plugin = plugins.get("plugin").expect("configured above");

    // The request: LF-only files are accepted, as people write them by hand.
    let raw: Vec<u8> = if opts.request.windows(2).any(|w| w == b"\r\n") {
        opts.request.to_vec()
    } else {
        String::from_utf8_lossy(opts.request)
            .replace('\n', "\r\n")
            .into_bytes()
    };
    if plugin.world() == World::SipRouter {
        let slot = plugins.slot("plugin").expect("configured above");
        return run_sip(slot, plugins.nonce_key(), &raw, local, opts.tls).await;
    }
    let limits = HeadLimits {
        max_head_bytes: config.http.max_head_bytes,
        max_headers: config.http.max_headers,
        max_body_bytes: config.http.max_body_bytes,
    };
    let (head, n) = match head::parse(&raw, &limits) {
        Ok(Some(h)) => h,
        Ok(None) => bail!("the request head is incomplete (it must end with an empty line)"),
        Err(e) => {
            return Ok(format!(
                "the host refuses this request before any plugin: {} {e}\n",
                e.status()
            ));
        }
    };
    let body = raw[n..]
        .iter()
        .take(head.content_length)
        .copied()
        .collect::<Vec<u8>>();
    if body.len() < head.content_length {
        bail!(
            "Content-Length is {} but the file has {} body bytes",
            head.content_length,
            body.len()
        );
    }
    let check = handshake::inspect(&head);
    let facts = RequestFacts {
        version: head.version,
        client_close: head.close,
        head: head.method == "HEAD",
    };
    let request = super::HttpRequest {
        method: head.method,
        target: head.target,
        version: head.version.as_str().to_string(),
        headers: head.headers,
        body,
        peer: super::Peer {
            remote_addr: "127.0.0.1".into(),
            remote_port: 50_000,
            local_addr: local.ip().to_string(),
            local_port: local.port(),
            transport: if opts.tls {
                super::PeerTransport::Tls
            } else {
                super::PeerTransport::Tcp
            },
        },
        connection_id: 1,
        websocket: match &check {
            HandshakeCheck::NotWebSocket => super::Websocket::None,
            HandshakeCheck::Offer(o) => super::Websocket::Offer(o.subprotocols.clone()),
            HandshakeCheck::Invalid(e) => super::Websocket::Invalid(e.to_string()),
        },
    };
    let decision = plugin.decide(request, &check).await;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let nonce = NonceKey::new(secret);
    let cx = AnswerContext {
        server: &config.server.server_header,
        date: SystemTime::now(),
        nonce: &nonce,
        peer: None,
    };
    let (bytes, then) = match answer(decision, check, facts, cx) {
        Answer::Respond { bytes, keep_alive } => (
            bytes,
            if keep_alive {
                "then: the connection stays open for the next request".to_string()
            } else {
                "then: the connection is closed".to_string()
            },
        ),
        Answer::Upgrade { bytes, identity } => (
            bytes,
            format!(
                "then: the connection becomes a SIP-over-WebSocket flow with identity {identity:?}"
            ),
        ),
        Answer::Refuse { bytes, error } => (
            bytes,
            format!("then: the connection is closed (the plugin asked to upgrade, but: {error})"),
        ),
    };
    let mut out = String::from_utf8_lossy(&bytes).into_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("---\n");
    out.push_str(&then);
    out.push('\n');
    Ok(out)
}

/// `plugin run` for a `sip-router` plugin: `raw` is a SIP request; prints what the
/// host does with the plugin's decision.
async fn run_sip(
    slot: Arc<super::PluginSlot>,
    nonce: NonceKey,
    raw: &[u8],
    local: SocketAddr,
    tls: bool,
) -> anyhow::Result<String> {
    use crate::core::{RouteDecision, Source, Transport};
    let mut message = match crate::sip::parse::parse(raw) {
        Ok(crate::sip::message::Message::Request(r)) => r,
        Ok(crate::sip::message::Message::Response(_)) => {
            bail!("the file holds a SIP response; a sip-router plugin decides requests")
        }
        Err(e) => bail!("the file is not a SIP request the host would accept: {e}"),
    };
    let transport = if tls { Transport::Tls } else { Transport::Udp };
    let source = Source {
        transport,
        local,
        remote: SocketAddr::from(([127, 0, 0, 1], 50_000)),
        flow: tls.then_some(1),
    };
    let _ = crate::core::stamp_received(&mut message, source.remote);
    let router = super::sip_router::SipRouter::new(slot, nonce, &["MD5".to_string()]);
    let decision = router
        .call(
            &source,
            &message,
            crate::plugin::sip_router::FlowFacts::default(),
        )
        .await;
    let text = match decision {
        RouteDecision::Continue(media) => format!(
            "continue: the registrar and proxy handle it as without a router{}\n",
            shown_media(media.as_deref())
        ),
        RouteDecision::Relay(uri, media) => format!(
            "relay: forwarded statefully to {uri}, its new Request-URI (Max-Forwards, loop \
             detection and Record-Route apply){}\n",
            shown_media(media.as_deref())
        ),
        RouteDecision::Reply {
            status,
            reason,
            headers,
        } => {
            let resp = shown_reply(&message, status, reason, &headers);
            let mut out = String::from_utf8_lossy(&resp.to_bytes()).into_owned();
            out.push_str("---\nthen: this response goes back on the flow the request came in on\n");
            out
        }
    };
    Ok(text)
}

/// The response the core would send for a plugin's `reply` (copied fields, the
/// plugin's header fields, Server), for the tool to show. The To tag is random here,
/// not the running server's stable one.
fn shown_reply(
    req: &crate::sip::Request,
    status: u16,
    reason: Option<String>,
    extra: &[(crate::sip::HeaderName, String)],
) -> crate::sip::Response {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    let tag = crate::hex::hex(&raw);
    let mut resp = crate::sip::Response::for_request(req, status, Some(&tag));
    for (n, v) in extra {
        resp.headers.push(n.clone(), v.as_str());
    }
    resp.headers.push(
        crate::sip::HeaderName::Server,
        format!("sipwasm/{}", env!("CARGO_PKG_VERSION")),
    );
    if let Some(reason) = reason {
        resp.reason = reason;
    }
    resp
}

/// The plugin's media choice, as `plugin run` prints it after the decision.
fn shown_media(choice: Option<&crate::media::Choice>) -> String {
    let Some(c) = choice else {
        return String::new();
    };
    let relay = match c.relay {
        Some(true) => "relayed through a media engine",
        Some(false) => "direct",
        None => "as media.mode says",
    };
    let mut out = format!("; media: {relay}");
    if !c.toward_webrtc.is_empty() {
        out.push_str(&format!(", toward WebRTC flags {:?}", c.toward_webrtc));
    }
    if !c.toward_plain.is_empty() {
        out.push_str(&format!(", toward plain RTP flags {:?}", c.toward_plain));
    }
    out
}
