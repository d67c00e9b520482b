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

/// Where compiled plugins are kept between runs, and the key that signs them.
#[derive(Clone)]
pub struct CompileCache {
    /// The directory (inside the data directory).
    pub dir: std::path::PathBuf,
    /// The server secret: a cached file is used only if its MAC verifies, so only
    /// files this server wrote are ever deserialized.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("any key length");
        m.update(b"compiled-plugin");
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// The cache file for a component under an engine.
    fn path(&self, engine: &wasmtime::Engine, component: &[u8]) -> std::path::PathBuf {
        use sha2::Digest;
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut sha = sha2::Sha256::new();
        sha.update(h.finish().to_be_bytes());
        sha.update(env!("CARGO_PKG_VERSION").as_bytes());
        sha.update(component);
        let digest = sha.finalize();
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// A compiled component from the cache, if one this server wrote is there.
    fn load(&self, engine: &wasmtime::Engine, component: &[u8]) -> Option<Component> {
        let file = std::fs::read(self.path(engine, component)).ok()?;
        if file.len() < 32 {
            return None;
        }
        let (mac, compiled) = file.split_at(32);
        let expected = self.mac(compiled);
        if mac
            .iter()
            .zip(expected.iter())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            tracing::warn!(file = %self.path(engine, component).display(), "cached plugin with a bad MAC ignored");
            return None;
        }
        // SAFETY: wasmtime requires that deserialized bytes come from `serialize` of a
        // compatible engine. The MAC above proves this server wrote these bytes (with
        // its secret) from `Component::serialize`, and the file name includes the
        // engine's compatibility hash and this server's version.
        #[allow(
            unsafe_code,
            reason = "deserializing our own MAC-verified compiled component"
        )]
        let component = unsafe { Component::deserialize(engine, compiled) };
        component.ok()
    }

    /// Stores a compiled component (best effort: a failure only costs a recompile).
    fn store(&self, engine: &wasmtime::Engine, component_bytes: &[u8], component: &Component) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(compiled) = component.serialize() else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let path = self.path(engine, component_bytes);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&self.mac(&compiled))?;
                f.write_all(&compiled)
            });
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Every configured plugin, by name.
#[derive(Debug, Clone)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
}

impl Plugins {
    /// Builds the engine, starts its epoch ticker and compiles every plugin of
    /// `config` (or takes it from `cache`). Errors name the plugin and its file.
    /// Compilation is CPU-heavy: call from a blocking context.
    pub fn load(
        config: &Config,
        myself: Arc<Myself>,
        metrics: Arc<Metrics>,
        cache: Option<&CompileCache>,
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
            let cached = cache.and_then(|c| c.load(&engine, &bytes));
            let from_cache = cached.is_some();
            let component = match cached {
                Some(c) => c,
                None => {
                    let c = Component::new(&engine, &bytes).map_err(|e| {
                        anyhow::anyhow!("plugin {name} ({source}): not a valid component: {e:#}")
                    })?;
                    if let Some(cache) = cache {
                        cache.store(&engine, &bytes, &c);
                    }
                    c
                }
            };

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
                from_cache,
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
