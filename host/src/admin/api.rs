//! The control API, `/api/v1/…`: JSON in and out, described by `docs/admin-api.json`
//! (OpenAPI 3.0; a test checks the real answers against it). Errors are
//! `{"error": "…"}` with a 4xx or 5xx status.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::AdminState;
use crate::core::location::{Binding, Reach};
use crate::core::operate::BindingFilter;
use crate::http::response::Response;

/// Most items one listing returns (`limit` is capped to it).
pub(crate) const MAX_LIMIT: usize = 10_000;

/// Items a listing returns without `limit`.
const DEFAULT_LIMIT: usize = 1_000;

/// A JSON answer.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    Response {
        status,
        reason: None,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: body.to_string().into_bytes(),
        close: true,
    }
}

fn error(status: u16, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = error(405, &format!("allowed: {allow}"));
    r.headers.push(("Allow".into(), allow.into()));
    r
}

/// Decodes `%XX` escapes (`+` stays: a space is `%20`); `None` when an escape is
/// malformed or the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The query's parameters (decoded; the last of a repeated name wins).
fn query(target: &str) -> Result<BTreeMap<String, String>, Response> {
    let mut out = BTreeMap::new();
    let Some((_, q)) = target.split_once('?') else {
        return Ok(out);
    };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // `+` stays `+` (an E.164 number in an AoR); a space is %20.
        match (percent_decode(k), percent_decode(v)) {
            (Some(k), Some(v)) => {
                out.insert(k, v);
            }
            _ => return Err(error(400, "malformed query: bad percent-encoding")),
        }
    }
    Ok(out)
}

fn limit_of(q: &BTreeMap<String, String>) -> Result<usize, Response> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(MAX_LIMIT)),
            _ => Err(error(400, "limit: a whole number from 1")),
        },
    }
}

/// The body as a JSON object (an empty body is `{}`).
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(400, "the body must be a JSON object")),
        Err(e) => Err(error(400, &format!("the body is not JSON: {e}"))),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Runs `f` on the core in its turn ([`crate::driver::CoreCell::call`]); 503 when the
/// core did not answer (it panicked on the way).
async fn in_core<R: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&mut crate::core::Core, std::time::Instant) -> R + Send + 'static,
) -> Result<R, Response> {
    state
        .shared
        .core
        .call(f)
        .await
        .ok_or_else(|| error(503, "the SIP core did not answer"))
}

/// Answers `/api/v1/…` (`path` without the prefix).
pub(crate) async fn route(
    method: &str,
    path: &str,
    target: &str,
    body: &[u8],
    state: &AdminState,
) -> Response {
    let q = match query(target) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let segments: Vec<String> = match path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect::<Option<Vec<_>>>()
    {
        Some(s) => s,
        None => return error(400, "malformed path: bad percent-encoding"),
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, seg.as_slice()) {
        ("GET", ["status"]) => json_response(200, &status(state).await),
        ("GET", ["version"]) => json_response(200, &version(state)),
        (_, ["status" | "version"]) => method_not_allowed("GET"),
        ("GET", ["registrations"]) => registrations(state, &q).await,
        (_, ["registrations"]) => method_not_allowed("GET"),
        ("GET", ["registrations", aor]) => registration(state, aor).await,
        ("DELETE", ["registrations", aor]) => remove(state, aor, None).await,
        (_, ["registrations", _]) => method_not_allowed("GET, DELETE"),
        ("DELETE", ["registrations", aor, "bindings", id]) => match id.parse::<u64>() {
            Ok(id) => remove(state, aor, Some(id)).await,
            Err(_) => error(400, "binding id: a whole number"),
        },
        (_, ["registrations", _, "bindings", _]) => method_not_allowed("DELETE"),
        ("GET", ["flows"]) => flows(state, &q),
        (_, ["flows"]) => method_not_allowed("GET"),
        ("POST", ["flows", id, "close"]) => close_flow(state, id, body),
        (_, ["flows", _, "close"]) => method_not_allowed("POST"),
        ("GET", ["transactions"]) => transactions(state, &q).await,
        (_, ["transactions"]) => method_not_allowed("GET"),
        ("GET", ["dialogs"]) => dialogs(state, &q).await,
        (_, ["dialogs"]) => method_not_allowed("GET"),
        ("GET", ["plugins"]) => json_response(200, &plugins(state)),
        (_, ["plugins"]) => method_not_allowed("GET"),
        ("POST", ["plugins", name, "reload"]) => reload_plugin(state, name).await,
        (_, ["plugins", _, "reload"]) => method_not_allowed("POST"),
        ("GET", ["drain"]) => drain_state(state).await,
        ("POST", ["drain"]) => drain(state, body).await,
        ("DELETE", ["drain"]) => undrain(state).await,
        (_, ["drain"]) => method_not_allowed("GET, POST, DELETE"),
        ("POST", ["reload"]) => {
            let (status, v) = super::reload::reload(&state.reloader).await;
            json_response(status, &v)
        }
        (_, ["reload"]) => method_not_allowed("POST"),
        _ => error(404, "no such endpoint (see docs/admin-api.json)"),
    }
}

fn version(state: &AdminState) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": super::COMMIT,
        "node": state.node,
    })
}

async fn status(state: &AdminState) -> Value {
    let m = &state.shared.metrics;
    let (server_tx, client_tx, dialogs, bindings, aors) = m.core_counts();
    let mut requests: BTreeMap<&str, u64> = BTreeMap::new();
    let mut responses: BTreeMap<&str, u64> = BTreeMap::new();
    for (method, class, n) in m.sip_finals() {
        *requests.entry(method).or_default() += n;
        *responses.entry(class).or_default() += n;
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": super::COMMIT,
        "node": state.node,
        "started_unix": unix(state.started),
        "uptime_seconds": state.started_at.elapsed().as_secs(),
        "draining": state.shared.drain.draining(),
        "flows": state.shared.flows.len(),
        "registrations": { "aors": aors, "bindings": bindings },
        "transactions": { "server": server_tx, "client": client_tx },
        "dialogs": dialogs,
        "counters": {
            "sip_in": m.sip_in_count(),
            "sip_out": m.sip_out_count(),
            "requests": requests,
            "responses": responses,
        },
    })
}

/// A binding as listed; `remaining` its seconds left.
fn binding_json(state: &AdminState, b: &Binding, remaining: u64) -> Value {
    let (reach, flow, source) = match b.reach {
        Reach::Flow(f) => (
            "flow",
            Some(f),
            state.shared.flows.get(f).map(|i| i.remote.to_string()),
        ),
        Reach::Udp { remote, .. } => ("udp", None, Some(remote.to_string())),
        Reach::Node => ("node", None, None),
    };
    json!({
        "id": b.id,
        "contact": b.contact,
        "expires_in": remaining,
        "q": b.q.map(|q| f64::from(q) / 1000.0),
        "transport": b.transport.via_token(),
        "reach": reach,
        "flow": flow,
        "source": source,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "call_id": b.call_id,
        "cseq": b.cseq,
        "user_agent": b.user_agent,
        "path": b.path,
        "node": state.node,
    })
}

/// A registration's bindings with their seconds left.
type Listed = Vec<(String, Vec<(Binding, u64)>)>;

/// The bindings `filter` selects (at most `limit`) with their seconds left, read in
/// the core's turn, and how many it selects in all.
async fn selected(
    state: &AdminState,
    filter: BindingFilter,
    limit: usize,
) -> Result<(usize, Listed), Response> {
    in_core(state, move |core, now| {
        let (total, list) = core.registrations(&filter, limit);
        let list = list
            .into_iter()
            .map(|(aor, bs)| {
                let bs = bs
                    .into_iter()
                    .map(|b| {
                        let left = b.remaining(now);
                        (b, left)
                    })
                    .collect();
                (aor, bs)
            })
            .collect();
        (total, list)
    })
    .await
}

/// A registration as listed.
fn registration_json(state: &AdminState, aor: &str, bs: &[(Binding, u64)]) -> Value {
    json!({
        "aor": aor,
        "bindings": bs.iter().map(|(b, left)| binding_json(state, b, *left)).collect::<Vec<_>>(),
    })
}

async fn registrations(state: &AdminState, q: &BTreeMap<String, String>) -> Response {
    let limit = match limit_of(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let filter = BindingFilter {
        aor: q.get("aor").cloned(),
        prefix: q.get("prefix").cloned(),
    };
    // Each node lists the bindings it holds; another node's name selects none here.
    if let Some(node) = q.get("node")
        && state.node.as_deref() != Some(node.as_str())
    {
        return json_response(
            200,
            &json!({ "total": 0, "truncated": false, "registrations": [] }),
        );
    }
    let (total, list) = match selected(state, filter, limit).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let shown: usize = list.iter().map(|(_, b)| b.len()).sum();
    let regs: Vec<Value> = list
        .iter()
        .map(|(aor, bs)| registration_json(state, aor, bs))
        .collect();
    json_response(
        200,
        &json!({ "total": total, "truncated": shown < total, "registrations": regs }),
    )
}

async fn registration(state: &AdminState, aor: &str) -> Response {
    let filter = BindingFilter {
        aor: Some(aor.to_string()),
        prefix: None,
    };
    match selected(state, filter, MAX_LIMIT).await {
        Err(r) => r,
        Ok((_, list)) => match list.first() {
            None => error(404, "no bindings for this address-of-record here"),
            Some((aor, bs)) => json_response(200, &registration_json(state, aor, bs)),
        },
    }
}

async fn remove(state: &AdminState, aor: &str, id: Option<u64>) -> Response {
    let aor_owned = aor.to_string();
    match in_core(state, move |core, now| {
        core.remove_bindings(now, &aor_owned, id)
    })
    .await
    {
        Err(r) => r,
        Ok(0) => error(
            404,
            match id {
                Some(_) => "no such binding of this address-of-record here",
                None => "no bindings for this address-of-record here",
            },
        ),
        Ok(n) => {
            tracing::info!(aor, binding = ?id, removed = n, "bindings removed by the operator");
            json_response(200, &json!({ "removed": n }))
        }
    }
}

/// Flows as listed (the dashboard's table and `sipwasm ctl flows`): those of
/// `transport` if given, by id, at most `limit`, and how many there are.
fn flows_value(state: &AdminState, transport: Option<&str>, limit: usize) -> Value {
    let now = SystemTime::now();
    let all = state.shared.flows.list_with_counts();
    let selected: Vec<_> = all
        .iter()
        .filter(|(f, _)| transport.is_none_or(|t| f.transport.via_token().eq_ignore_ascii_case(t)))
        .collect();
    let total = selected.len();
    let list: Vec<Value> = selected
        .iter()
        .take(limit)
        .map(|(f, ctl)| {
            use std::sync::atomic::Ordering::Relaxed;
            let identity: serde_json::Map<String, Value> = f
                .identity
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({
                "id": f.id,
                "transport": f.transport.via_token(),
                "remote": f.remote.to_string(),
                "local": f.local.to_string(),
                "identity": identity,
                "identity_enforced": f.enforced,
                "outgoing": f.outgoing.is_some(),
                "opened_unix": unix(f.opened),
                "age_seconds": now.duration_since(f.opened).unwrap_or_default().as_secs(),
                "bytes_in": ctl.bytes_in.load(Relaxed),
                "bytes_out": ctl.bytes_out.load(Relaxed),
                "messages_in": ctl.messages_in.load(Relaxed),
                "messages_out": ctl.messages_out.load(Relaxed),
            })
        })
        .collect();
    json!({ "total": total, "truncated": list.len() < total, "flows": list })
}

fn flows(state: &AdminState, q: &BTreeMap<String, String>) -> Response {
    let limit = match limit_of(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    json_response(
        200,
        &flows_value(state, q.get("transport").map(String::as_str), limit),
    )
}

fn close_flow(state: &AdminState, id: &str, body: &[u8]) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(400, "flow id: a whole number");
    };
    let body = match body_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => "closed by the operator".to_string(),
        Some(Value::String(s)) if s.len() <= 123 && !s.chars().any(char::is_control) => s.clone(),
        Some(_) => {
            return error(
                400,
                "reason: a string of at most 123 bytes without control characters",
            );
        }
    };
    if state.shared.flows.close(id, &reason) {
        tracing::info!(flow = id, reason = %reason, "flow close asked by the operator");
        json_response(200, &json!({ "closed": id, "reason": reason }))
    } else {
        error(404, "no such flow")
    }
}

async fn transactions(state: &AdminState, q: &BTreeMap<String, String>) -> Response {
    let limit = match limit_of(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (stats, list) = match in_core(state, move |core, now| {
        (core.stats(), core.transactions(now, limit))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list: Vec<Value> = list
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "kind": t.kind,
                "method": t.method,
                "call_id": t.call_id,
                "state": t.state,
                "age_ms": u64::try_from(t.age.as_millis()).unwrap_or(u64::MAX),
                "peer": t.peer,
            })
        })
        .collect();
    json_response(
        200,
        &json!({
            "server": stats.server_transactions,
            "client": stats.client_transactions,
            "proxied": stats.proxied,
            "transactions": list,
        }),
    )
}

async fn dialogs(state: &AdminState, q: &BTreeMap<String, String>) -> Response {
    let limit = match limit_of(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (count, list) = match in_core(state, move |core, now| {
        (core.dialog_count(), core.dialogs(now, limit))
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list: Vec<Value> = list
        .iter()
        .map(|d| {
            json!({
                "call_id": d.call_id,
                "from": d.from,
                "to": d.to,
                "caller": d.caller,
                "callee": d.callee,
                "age_seconds": d.age.as_secs(),
            })
        })
        .collect();
    json_response(200, &json!({ "count": count, "dialogs": list }))
}

/// A plugin as listed.
fn plugin_json(state: &AdminState, name: &str) -> Option<Value> {
    let slot = state.plugins.slot(name)?;
    let p = slot.current();
    let v = p.version();
    let (calls, failures) = state.shared.metrics.plugin_totals(name);
    let ms = |q: f64| p.timer().quantile(q).map(|s| (s * 1e6).round() / 1e3);
    Some(json!({
        "name": name,
        "world": slot.world().name(),
        "source": v.source,
        "hash": v.hash,
        "loaded_unix": unix(v.loaded),
        "calls": calls,
        "failures": failures,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "suspended": p.suspended(),
    }))
}

fn plugins(state: &AdminState) -> Value {
    let mut names = state.plugins.names();
    names.sort();
    let list: Vec<Value> = names.iter().filter_map(|n| plugin_json(state, n)).collect();
    json!({ "plugins": list })
}

async fn reload_plugin(state: &AdminState, name: &str) -> Response {
    let Some(slot) = state.plugins.slot(name) else {
        return error(404, "no such plugin");
    };
    if slot.current().version().source.starts_with("builtin:") {
        return error(
            409,
            "a built-in plugin is part of the binary: nothing to reload",
        );
    }
    let (plugins, owned) = (state.plugins.clone(), name.to_string());
    let result = tokio::task::spawn_blocking(move || plugins.reload(&owned)).await;
    match result {
        Ok(Ok(())) => {
            let mut v = plugin_json(state, name).unwrap_or_else(|| json!({}));
            v["reloaded"] = Value::Bool(true);
            json_response(200, &v)
        }
        Ok(Err(e)) => {
            tracing::error!(
                plugin = name,
                "reload rejected, the old version stays: {e:#}"
            );
            json_response(
                422,
                &json!({ "name": name, "reloaded": false, "error": format!("{e:#}") }),
            )
        }
        Err(_) => error(500, "the reload task failed"),
    }
}

/// The drain state with what is left: transactions at work (not those only absorbing
/// retransmissions) and dialogs.
async fn drain_state(state: &AdminState) -> Response {
    let d = &state.shared.drain;
    let (transactions, dialogs) = match in_core(state, |core, now| core.in_progress(now)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    json_response(
        200,
        &json!({
            "draining": d.draining(),
            "since_unix": d.since(),
            "exit_when_empty": d.exit_when_empty(),
        "exit_by_unix": d.exit_by(),
            "flows": state.shared.flows.len(),
            "dialogs": dialogs,
            "transactions": transactions,
            "refused_connections": d.refused(),
            "empty": d.draining() && dialogs == 0 && transactions == 0,
        }),
    )
}

async fn drain(state: &AdminState, body: &[u8]) -> Response {
    let body = match body_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let exit = match body.get("exit") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return error(400, "exit: true or false"),
    };
    let within = match body.get("exit_after") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(s) => Some(s),
            None => return error(400, "exit_after: whole seconds"),
        },
    };
    if let Err(r) = in_core(state, |core, _| core.set_draining(true)).await {
        return r;
    }
    state.shared.drain.start(exit, within);
    tracing::warn!(
        exit = state.shared.drain.exit_when_empty(),
        "draining: new connections and new dialogs are refused, those in progress go on"
    );
    drain_state(state).await
}

async fn undrain(state: &AdminState) -> Response {
    if let Err(r) = in_core(state, |core, _| core.set_draining(false)).await {
        return r;
    }
    state.shared.drain.stop();
    tracing::warn!("drain mode off: new connections and dialogs are taken again");
    drain_state(state).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("sip%3Aalice%40example.com").as_deref(),
            Some("sip:alice@example.com")
        );
        assert_eq!(percent_decode("a+b%20c").as_deref(), Some("a+b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn queries() {
        let q = query("/x?aor=sip%3A%2B1%40b&prefix=sip:+44&limit=5&&flag").unwrap();
        assert_eq!(q.get("prefix").map(String::as_str), Some("sip:+44"));
        assert_eq!(q.get("aor").map(String::as_str), Some("sip:+1@b"));
        assert_eq!(q.get("limit").map(String::as_str), Some("5"));
        assert_eq!(q.get("flag").map(String::as_str), Some(""));
        assert_eq!(limit_of(&q).unwrap(), 5);
        assert!(query("/x?a=%g0").is_err());
        let big = query("/x?limit=99999999").unwrap();
        assert_eq!(limit_of(&big).unwrap(), MAX_LIMIT);
        assert!(limit_of(&query("/x?limit=0").unwrap()).is_err());
    }
}
