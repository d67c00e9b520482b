//! `POST /api/v1/reload` and SIGHUP: reads the configuration file again and applies what can
//! change without a restart — every plugin loaded from a file (the routing plugin
//! included) is compiled again and swapped in, a plugin whose settings changed
//! (`[plugins.NAME]`, its `config` table: a router's blocked list or relay prefixes)
//! is built again with them, and `limits.rate`, `rate-burst`,
//! `rate-ban`, `max-connections`, `connections-per-source` and `max-transactions` take
//! their new values. Any other change is named in `restart_needed` and left alone
//! until the next start; a file that does not validate changes nothing (422, its error
//! naming file and key).

use serde_json::{Value, json};

use std::sync::Arc;

use crate::config::Config;
use crate::core::limits::RateConfig;
use crate::transport::Shared;

/// What a reload reads and changes.
#[derive(Debug, Clone)]
pub(crate) struct Reloader {
    /// The limits and the core it changes.
    pub shared: Arc<Shared>,
    /// The plugins it compiles again.
    pub plugins: crate::plugin::Plugins,
    /// The configuration file (none: the embedded default).
    pub config_path: Option<std::path::PathBuf>,
    /// The configuration as it runs (a reload changes what it applies).
    pub config: Arc<tokio::sync::Mutex<Config>>,
    /// The open-files limit, for `limits.max-connections = 0`.
    pub nofile: u64,
    /// One reload at a time (the API, SIGHUP and the plugin file watch): each
    /// reads, compiles and commits without another in between.
    pub serial: Arc<tokio::sync::Mutex<()>>,
}

/// The sections (or keys) of `new` that differ from `old` and need a restart.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    let mut check = |name: &'static str, changed: bool| {
        if changed {
            out.push(name);
        }
    };
    check("server", differ(&old.server, &new.server));
    check("listen", differ(&old.listen, &new.listen));
    check("http", differ(&old.http, &new.http));
    check("websocket", differ(&old.websocket, &new.websocket));
    check("sip", differ(&old.sip, &new.sip));
    let (ol, nl) = (&old.limits, &new.limits);
    check(
        "limits.first-message-timeout",
        ol.first_message_timeout != nl.first_message_timeout,
    );
    check(
        "limits.ws-partial-timeout",
        ol.ws_partial_timeout != nl.ws_partial_timeout,
    );
    check("limits.exempt", differ(&ol.exempt, &nl.exempt));
    check(
        "plugin-runtime",
        differ(&old.plugin_runtime, &new.plugin_runtime),
    );
    check("admin", differ(&old.admin, &new.admin));
    check("media", differ(&old.media, &new.media));
    check("keys", differ(&old.keys, &new.keys));
    check("users", differ(&old.users, &new.users));
    check("dns", differ(&old.dns, &new.dns));
    check("tls-client", differ(&old.tls_client, &new.tls_client));
    check("gateways", differ(&old.gateways, &new.gateways));
    check("cluster", differ(&old.cluster, &new.cluster));
    check("capture", differ(&old.capture, &new.capture));
    out
}

/// The limits a reload changes, as `key: old -> new`.
fn limit_changes(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.limits, &new.limits);
    let mut out = Vec::new();
    let mut note = |key: &str, a: String, b: String| {
        if a != b {
            out.push(format!("limits.{key}: {a} -> {b}"));
        }
    };
    note("rate", o.rate.to_string(), n.rate.to_string());
    note(
        "rate-burst",
        o.rate_burst.to_string(),
        n.rate_burst.to_string(),
    );
    note(
        "rate-ban",
        format!("{:?}", o.rate_ban),
        format!("{:?}", n.rate_ban),
    );
    note(
        "max-connections",
        o.max_connections.to_string(),
        n.max_connections.to_string(),
    );
    note(
        "connections-per-source",
        o.connections_per_source.to_string(),
        n.connections_per_source.to_string(),
    );
    note(
        "max-transactions",
        o.max_transactions.to_string(),
        n.max_transactions.to_string(),
    );
    out
}

/// Reads the file again and applies what can change; the answer's status and body
/// (logged either way).
pub(crate) async fn reload(state: &Reloader) -> (u16, Value) {
    let _one_at_a_time = state.serial.lock().await;
    let fresh = match &state.config_path {
        Some(path) => {
            let path = path.clone();
            match tokio::task::spawn_blocking(move || Config::load(&path)).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::error!("configuration reload refused, nothing changed: {e}");
                    return (422, json!({ "error": e.to_string() }));
                }
                Err(_) => return (500, json!({ "error": "the reload task failed" })),
            }
        }
        // The embedded default cannot change; plugins loaded from files still can.
        None => None,
    };
    // New settings first (those plugins are built with them), then every plugin file
    // read again.
    let plugins = state.plugins.clone();
    let new_plugins = fresh.as_ref().map(|c| c.plugins.clone());
    let compiled = tokio::task::spawn_blocking(move || {
        let (rebuilt, restart) = match &new_plugins {
            Some(p) => plugins.reconfigure(p),
            None => (Vec::new(), Vec::new()),
        };
        (rebuilt, restart, plugins.reload_all())
    })
    .await;
    let Ok((rebuilt, plugin_restart, mut results)) = compiled else {
        return (500, json!({ "error": "the reload task failed" }));
    };
    for (name, outcome) in &rebuilt {
        match results.iter_mut().find(|(n, _)| n == name) {
            Some(r) => {
                if outcome.is_err() {
                    r.1 = outcome.clone();
                }
            }
            None => results.push((name.clone(), outcome.clone())),
        }
    }
    let plugin_results: serde_json::Map<String, Value> = results
        .iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(()) => json!({ "reloaded": true }),
                Err(e) => json!({ "reloaded": false, "error": e }),
            };
            (name.clone(), v)
        })
        .collect();
    let plugins_failed = results.iter().any(|(_, r)| r.is_err());
    let (changed, restart) = match fresh {
        None => (Vec::new(), Vec::new()),
        Some(new) => {
            let mut running = state.config.lock().await;
            let mut changed = limit_changes(&running, &new);
            let mut restart: Vec<String> = restart_needed(&running, &new)
                .into_iter()
                .map(str::to_string)
                .collect();
            restart.extend(plugin_restart.iter().map(|n| format!("plugins.{n}")));
            for (name, outcome) in &rebuilt {
                if outcome.is_ok()
                    && let Some(cfg) = new.plugins.get(name)
                {
                    changed.push(format!("plugins.{name}: new settings"));
                    running.plugins.insert(name.clone(), cfg.clone());
                }
            }
            let l = &new.limits;
            state.shared.gate.reconfigure(RateConfig {
                per_second: l.rate,
                burst: l.rate_burst,
                ban: l.rate_ban,
            });
            state
                .shared
                .admission
                .reconfigure(l.connection_cap(state.nofile), l.connections_per_source);
            let max_tx = l.max_transactions;
            if state
                .shared
                .core
                .call(move |core, _| core.set_max_transactions(max_tx))
                .await
                .is_none()
            {
                return (503, json!({ "error": "the SIP core did not answer" }));
            }
            // What was applied is now the running configuration; what needs a restart
            // stays as it runs (and is named again at the next reload).
            running.limits.rate = l.rate;
            running.limits.rate_burst = l.rate_burst;
            running.limits.rate_ban = l.rate_ban;
            running.limits.max_connections = l.max_connections;
            running.limits.connections_per_source = l.connections_per_source;
            running.limits.max_transactions = l.max_transactions;
            (changed, restart)
        }
    };
    for c in &changed {
        tracing::info!("configuration reload: {c}");
    }
    if !restart.is_empty() {
        tracing::warn!(
            "configuration reload: changes to {} take effect at the next start",
            restart.join(", ")
        );
    }
    let status = if plugins_failed { 422 } else { 200 };
    (
        status,
        json!({
            "plugins": plugin_results,
            "changed": changed,
            "restart_needed": restart,
        }),
    )
}
