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
        }
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
        parts.join(", ")
    }
}
