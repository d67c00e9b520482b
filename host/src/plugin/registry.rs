//! Loading plugins: bytes (a file or a built-in), compilation, checking against the
//! `http-handler` world, and the by-name table listeners use.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::Component;

use super::{Plugin, bindings, engine, linker};
use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::core::Myself;

/// Plugins compiled into the server binary, usable as `builtin = "NAME"`.
pub const BUILTIN_NAMES: &[&str] = &["seed-policy", "welcome"];

/// The component bytes of a built-in plugin.
pub fn builtin_bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "seed-policy" => Some(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/seed_policy.wasm"
        ))),
        "welcome" => Some(include_bytes!(concat!(env!("OUT_DIR"), "/welcome.wasm"))),
        _ => None,
    }
}

/// Every configured plugin, by name.
#[derive(Debug, Clone)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
}

impl Plugins {
    /// Builds the engine, starts its epoch ticker and compiles every plugin of
    /// `config`. Errors name the plugin and its file. Compilation is CPU-heavy: call
    /// from a blocking context.
    pub fn load(
        config: &Config,
        myself: Arc<Myself>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let max_memory = config
            .plugins
            .values()
            .map(|p| p.memory_limit)
            .max()
            .unwrap_or(32 << 20);
        let engine = engine::build(&config.plugin_runtime, max_memory)
            .map_err(|e| anyhow::anyhow!("cannot build the Wasm engine: {e:#}"))?;
        engine::start_epoch_ticker(&engine, config.plugin_runtime.epoch_tick);
        let linker =
            linker(&engine).map_err(|e| anyhow::anyhow!("cannot link host functions: {e:#}"))?;
        let mut by_name = HashMap::new();
        for (name, cfg) in &config.plugins {
            let (source, bytes): (String, std::borrow::Cow<'static, [u8]>) =
                match (&cfg.path, &cfg.builtin) {
                    (Some(path), _) => (
                        path.display().to_string(),
                        std::fs::read(path)
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "plugin {name}: cannot read {}: {e}",
                                    path.display()
                                )
                            })?
                            .into(),
                    ),
                    (None, Some(b)) => (
                        format!("builtin:{b}"),
                        builtin_bytes(b)
                            .ok_or_else(|| anyhow::anyhow!("plugin {name}: unknown builtin {b:?}"))?
                            .into(),
                    ),
                    (None, None) => anyhow::bail!("plugin {name}: neither path nor builtin"),
                };
            let started = std::time::Instant::now();
            let component = Component::new(&engine, &bytes).map_err(|e| {
                anyhow::anyhow!("plugin {name} ({source}): not a valid component: {e:#}")
            })?;
            let pre = linker.instantiate_pre(&component).map_err(|e| {
                anyhow::anyhow!(
                    "plugin {name} ({source}): imports something this host does not provide: {e:#}"
                )
            })?;
            let pre = bindings::HttpHandlerPre::new(pre).map_err(|e| {
                anyhow::anyhow!(
                    "plugin {name} ({source}): does not implement the http-handler world: {e:#}"
                )
            })?;
            tracing::info!(
                plugin = name.as_str(),
                source,
                bytes = bytes.len(),
                compile_ms = started.elapsed().as_millis() as u64,
                "plugin loaded"
            );
            let plugin = Plugin::new(
                name,
                cfg,
                pre,
                myself.clone(),
                config.plugin_runtime.epoch_tick,
                metrics.clone(),
            );
            by_name.insert(name.clone(), Arc::new(plugin));
        }
        Ok(Self { by_name })
    }

    /// The plugin named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.by_name.get(name).cloned()
    }
}
