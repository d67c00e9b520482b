//! Which plugin decides a request on a web listener: `routes` by path prefix, then the
//! listener's `plugin`.

use std::sync::Arc;

use super::registry::{PluginSlot, Plugins};

/// Which plugin decides a request on a web listener: by the longest matching path
/// prefix, else the listener's default plugin.
#[derive(Debug)]
pub struct PluginRouter {
    default: Option<Arc<PluginSlot>>,
    /// Longest prefix first.
    routes: Vec<(String, Arc<PluginSlot>)>,
    /// The listener's `identity = "enforce"`.
    enforce_identity: bool,
    /// Log lines for upgrades refused for want of a `user`, once a minute per source.
    unproven_log: std::sync::Mutex<crate::core::limits::LogGate>,
}

impl PluginRouter {
    /// A router from a listener's `plugin` and `routes`.
    pub fn new(
        plugins: &Plugins,
        default: Option<&str>,
        routes: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let mut routes: Vec<(String, Arc<PluginSlot>)> = routes
            .iter()
            .map(|(prefix, name)| {
                (
                    prefix.clone(),
                    plugins.slot(name).expect("validated: route plugins exist"),
                )
            })
            .collect();
        routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Self {
            default: default.map(|d| plugins.slot(d).expect("validated: listener plugins exist")),
            routes,
            enforce_identity: false,
            unproven_log: std::sync::Mutex::new(crate::core::limits::LogGate::new()),
        }
    }

    /// The same, for a listener that enforces the identity its plugins attach.
    #[must_use]
    pub fn enforcing_identity(mut self, enforce: bool) -> Self {
        self.enforce_identity = enforce;
        self
    }

    /// Whether the listener enforces the identity its plugins attach at upgrade.
    pub fn enforces_identity(&self) -> bool {
        self.enforce_identity
    }

    /// Whether to log now that an upgrade from `peer` named no user (at most once a
    /// minute per source).
    pub fn log_unproven(&self, peer: std::net::IpAddr) -> bool {
        self.unproven_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow("unproven", peer, std::time::Instant::now())
    }

    /// The plugin for a request target (`/ws?x=1`), if any.
    pub fn route(&self, target: &str) -> Option<&Arc<PluginSlot>> {
        let path = target.split(['?', '#']).next().unwrap_or("");
        self.routes
            .iter()
            .find(|(prefix, _)| {
                path == prefix
                    || prefix.ends_with('/') && path.starts_with(prefix.as_str())
                    || path.starts_with(prefix.as_str())
                        && path.as_bytes().get(prefix.len()) == Some(&b'/')
            })
            .map(|(_, slot)| slot)
            .or(self.default.as_ref())
    }

    /// The names of the plugins it can pick, for the log.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .routes
            .iter()
            .map(|(p, s)| format!("{p} -> {}", s.name()))
            .collect();
        if let Some(d) = &self.default {
            parts.push(format!("* -> {}", d.name()));
        }
        if self.enforce_identity {
            parts.push("identity enforced".into());
        }
        parts.join(", ")
    }
}
