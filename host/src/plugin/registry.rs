//! Loading plugins: bytes (a file or a built-in), compilation (through the compile
//! cache, `cache.rs`), checking against the world each is used as (`http-handler` by
//! listeners, `sip-router` by `sip.router`), reloads, and the by-name table listeners
//! (`routes.rs`) and the SIP driver use.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::Component;

use super::cache::CompileCache;
use super::registrar_view::RegistrarView;
use super::{Plugin, Pre, World, bindings, engine, linker, world_of};
use crate::config::Config;
use crate::core::Myself;
use crate::metrics::Metrics;

/// What the host functions of every plugin reach.
#[derive(Debug, Clone)]
pub(crate) struct HostContext {
    pub(crate) myself: Arc<Myself>,
    /// The registrar's bindings as `lookup` sees them.
    pub(crate) registrar: Arc<RegistrarView>,
    /// Digest nonces: keyed with the server secret (the compile cache's), so the
    /// challenges the SIP driver makes verify here.
    pub(crate) nonce: crate::auth::NonceKey,
    /// Counts failed Digest responses and refuses their sources past the limits.
    pub(crate) guess_guard: Arc<crate::auth::guess_guard::GuessGuard>,
    /// Every key of `[keys]`; each plugin gets those it is granted.
    pub(crate) keys: crate::keys::KeyRing,
    /// The user store.
    pub(crate) users: Arc<crate::users::UserStore>,
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone)]
enum ComponentSource {
    File(std::path::PathBuf),
    Builtin(String),
}

impl ComponentSource {
    fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Builtin(b) => format!("builtin:{b}"),
        }
    }
}

/// One configured plugin: the version serving now, swapped atomically on reload.
/// Requests hold the `Arc<Plugin>` they started with, so in-flight calls finish on the
/// old version; WebSocket flows never touch plugins after their upgrade.
#[derive(Debug)]
pub struct PluginSlot {
    name: String,
    source: ComponentSource,
    /// The world every version must implement.
    world: World,
    current: std::sync::RwLock<Arc<Plugin>>,
    /// The file's (modified time, length) when last loaded, and the last one seen
    /// (a change is taken once it holds still for one poll).
    file_state: std::sync::Mutex<(Option<FileState>, Option<FileState>)>,
}

impl PluginSlot {
    /// The version serving now.
    pub fn current(&self) -> Arc<Plugin> {
        self.current.read().expect("plugin slot lock").clone()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.world
    }
}

/// A file's modified time and length.
type FileState = (std::time::SystemTime, u64);

fn file_state(path: &std::path::Path) -> Option<FileState> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Inner {
    engine: wasmtime::Engine,
    http_linker: wasmtime::component::Linker<super::host_impl::HostState>,
    sip_linker: wasmtime::component::Linker<super::host_impl::HostState>,
    cache: Option<CompileCache>,
    context: HostContext,
    /// The plugin named by `sip.router`.
    router: Option<String>,
    metrics: Arc<Metrics>,
    epoch_tick: std::time::Duration,
    /// Each plugin's settings; a configuration reload replaces them
    /// ([`Plugins::reconfigure`]).
    configs: std::sync::RwLock<HashMap<String, crate::config::PluginConfig>>,
    /// The largest `memory-limit` the engine was built for.
    max_memory: usize,
    slots: HashMap<String, Arc<PluginSlot>>,
}

/// Per plugin, whether it was built (or why not).
pub(crate) type Outcomes = Vec<(String, Result<(), String>)>;

/// Every configured plugin, by name, with the engine that runs them.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("plugins", &self.inner.slots.keys())
            .finish()
    }
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
        keys: &crate::keys::KeyRing,
        users: Arc<crate::users::UserStore>,
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
        let link = |world| {
            linker(&engine, world).map_err(|e| anyhow::anyhow!("cannot link host functions: {e:#}"))
        };
        let (http_linker, sip_linker) = (link(World::HttpHandler)?, link(World::SipRouter)?);
        // The world each plugin is used as, and the config key that uses it that way.
        let mut uses: HashMap<&str, (World, String)> = HashMap::new();
        let mut used_as = |name: &str, world: World, key: String| -> anyhow::Result<()> {
            if let Some((w, k)) = uses.get(name)
                && *w != world
            {
                anyhow::bail!(
                    "{key}: plugin {name} is used as {} there but as {} by {k}; one plugin \
                     implements one world",
                    world.name(),
                    w.name()
                );
            }
            uses.insert(
                config
                    .plugins
                    .get_key_value(name)
                    .map_or("", |(k, _)| k.as_str()),
                (world, key),
            );
            Ok(())
        };
        for (i, l) in config.listen.iter().enumerate() {
            if let Some(p) = &l.plugin {
                used_as(p, World::HttpHandler, format!("listen[{i}].plugin"))?;
            }
            for p in l.routes.values() {
                used_as(p, World::HttpHandler, format!("listen[{i}].routes"))?;
            }
        }
        if let Some(r) = &config.sip.router {
            used_as(r, World::SipRouter, "sip.router".into())?;
        }
        let mut inner = Inner {
            engine,
            http_linker,
            sip_linker,
            cache: cache.cloned(),
            context: HostContext {
                myself,
                registrar: Arc::new(RegistrarView::default()),
                nonce: crate::auth::NonceKey::new(match cache {
                    Some(c) => c.secret,
                    None => {
                        let mut s = [0u8; 32];
                        getrandom::fill(&mut s)
                            .map_err(|e| anyhow::anyhow!("no randomness for nonces: {e}"))?;
                        s
                    }
                }),
                keys: keys.clone(),
                users,
                guess_guard: Arc::new(crate::auth::guess_guard::GuessGuard::new(
                    crate::auth::guess_guard::GuessLimits {
                        per_user: config.sip.auth_failures_per_user,
                        per_address: config.sip.auth_failures_per_address,
                        window: config.sip.auth_failure_window,
                        ban: config.sip.auth_ban,
                    },
                )),
            },
            router: config.sip.router.clone(),
            metrics,
            epoch_tick: config.plugin_runtime.epoch_tick,
            configs: std::sync::RwLock::new(
                config
                    .plugins
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            max_memory,
            slots: HashMap::new(),
        };
        for (name, cfg) in &config.plugins {
            let source = match (&cfg.path, &cfg.builtin) {
                (Some(path), _) => ComponentSource::File(path.clone()),
                (None, Some(b)) => ComponentSource::Builtin(b.clone()),
                (None, None) => anyhow::bail!("plugin {name}: neither path nor builtin"),
            };
            let state = match &source {
                ComponentSource::File(p) => file_state(p),
                ComponentSource::Builtin(_) => None,
            };
            let wanted = uses.get(name.as_str());
            let plugin = inner
                .compile(name, &source, wanted.map(|(w, _)| *w))
                .map_err(|e| match wanted {
                    Some((_, key)) => anyhow::anyhow!("{e:#} (used by {key})"),
                    None => e,
                })?;
            let slot = PluginSlot {
                name: name.clone(),
                world: plugin.world(),
                source,
                current: std::sync::RwLock::new(Arc::new(plugin)),
                file_state: std::sync::Mutex::new((state, state)),
            };
            inner.slots.insert(name.clone(), Arc::new(slot));
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The slot of plugin `name` (listeners keep it and take the current version per
    /// request).
    pub fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.inner.slots.get(name).cloned()
    }

    /// The `sip.router` plugin, if one is configured.
    pub fn router(&self) -> Option<Arc<PluginSlot>> {
        self.inner.router.as_deref().and_then(|r| self.slot(r))
    }

    /// The key of the Digest nonces plugins verify (challenges must use it).
    pub fn nonce_key(&self) -> crate::auth::NonceKey {
        self.inner.context.nonce.clone()
    }

    /// The registrar's bindings as plugins' `lookup` sees them; the SIP driver keeps
    /// it up to date.
    pub fn registrar_view(&self) -> Arc<RegistrarView> {
        self.inner.context.registrar.clone()
    }

    /// The names of every configured plugin.
    pub fn names(&self) -> Vec<String> {
        self.inner.slots.keys().cloned().collect()
    }

    /// The version of plugin `name` serving now.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.slot(name).map(|s| s.current())
    }

    /// Recompiles plugin `name` from its file and swaps it in. On any error the old
    /// version stays and the error is returned. Blocking (compiles).
    pub fn reload(&self, name: &str) -> anyhow::Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| anyhow::anyhow!("no plugin named {name}"))?;
        let state = match &slot.source {
            ComponentSource::File(p) => file_state(p),
            ComponentSource::Builtin(_) => return Ok(()),
        };
        let plugin = self.inner.compile(name, &slot.source, Some(slot.world))?;
        let old = std::mem::replace(
            &mut *slot.current.write().expect("plugin slot lock"),
            Arc::new(plugin),
        );
        old.clear_idle();
        *slot.file_state.lock().expect("plugin file state") = (state, state);
        tracing::info!(
            plugin = name,
            source = slot.source.describe(),
            "plugin reloaded"
        );
        Ok(())
    }

    /// Applies new settings of configured plugins (a configuration reload): each
    /// plugin whose `[plugins.NAME]` changed but not its component (`path` /
    /// `builtin`) is built again with them and swapped in (its old version and
    /// settings stay when that fails). Returns those rebuilt with the outcome, and the
    /// names whose change needs a restart (added, removed, another component, a
    /// memory limit past what the engine was built for).
    pub fn reconfigure(
        &self,
        new: &std::collections::BTreeMap<String, crate::config::PluginConfig>,
    ) -> (Outcomes, Vec<String>) {
        let old = self
            .inner
            .configs
            .read()
            .expect("plugin configs lock")
            .clone();
        let mut rebuilt = Vec::new();
        let mut restart: Vec<String> = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .chain(new.keys().filter(|n| !old.contains_key(*n)))
            .cloned()
            .collect();
        for (name, cfg) in new {
            let Some(was) = old.get(name) else { continue };
            if format!("{was:?}") == format!("{cfg:?}") {
                continue;
            }
            if was.path != cfg.path
                || was.builtin != cfg.builtin
                || was.keys != cfg.keys
                || was.max_instances != cfg.max_instances
                || cfg.memory_limit > self.inner.max_memory
            {
                restart.push(name.clone());
                continue;
            }
            self.inner
                .configs
                .write()
                .expect("plugin configs lock")
                .insert(name.clone(), cfg.clone());
            let outcome = self.rebuild(name).map_err(|e| format!("{e:#}"));
            if let Err(e) = &outcome {
                tracing::error!(
                    plugin = name.as_str(),
                    "new settings rejected, the old version and settings stay: {e}"
                );
                self.inner
                    .configs
                    .write()
                    .expect("plugin configs lock")
                    .insert(name.clone(), was.clone());
            } else {
                tracing::info!(
                    plugin = name.as_str(),
                    "plugin rebuilt with its new settings"
                );
            }
            rebuilt.push((name.clone(), outcome));
        }
        restart.sort();
        (rebuilt, restart)
    }

    /// Builds plugin `name` again from its component (a file read again, or the
    /// builtin) with its current settings and swaps it in.
    fn rebuild(&self, name: &str) -> anyhow::Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| anyhow::anyhow!("no plugin named {name}"))?;
        let plugin = self.inner.compile(name, &slot.source, Some(slot.world))?;
        let old = std::mem::replace(
            &mut *slot.current.write().expect("plugin slot lock"),
            Arc::new(plugin),
        );
        old.clear_idle();
        Ok(())
    }

    /// Reloads every plugin loaded from a file (SIGHUP, the admin API). Failures are
    /// logged; the old versions stay.
    pub fn reload_all(&self) -> Outcomes {
        let mut out = Vec::new();
        for (name, slot) in &self.inner.slots {
            if matches!(slot.source, ComponentSource::File(_)) {
                let r = self.reload(name).map_err(|e| format!("{e:#}"));
                if let Err(e) = &r {
                    tracing::error!(
                        plugin = name.as_str(),
                        "reload rejected, the old version stays: {e}"
                    );
                }
                out.push((name.clone(), r));
            }
        }
        out
    }

    /// Reloads plugins whose file changed and then held still for one poll. Call
    /// periodically (blocking: it may compile).
    pub fn reload_changed(&self) {
        for (name, slot) in &self.inner.slots {
            let ComponentSource::File(path) = &slot.source else {
                continue;
            };
            let now = file_state(path);
            let take = {
                let mut st = slot.file_state.lock().expect("plugin file state");
                let (loaded, seen) = *st;
                st.1 = now;
                now.is_some() && now != loaded && now == seen
            };
            if take && let Err(e) = self.reload(name) {
                tracing::error!(
                    plugin = name.as_str(),
                    "reload rejected, the old version stays: {e:#}"
                );
                // Do not retry the same broken file at every poll.
                slot.file_state.lock().expect("plugin file state").0 = now;
            }
        }
    }
}

impl Inner {
    /// Reads, compiles (or takes from the cache) and checks one plugin against the
    /// world it must implement (`None`: whichever its exports say).
    fn compile(
        &self,
        name: &str,
        source: &ComponentSource,
        wanted: Option<World>,
    ) -> anyhow::Result<Plugin> {
        let described = source.describe();
        let bytes: std::borrow::Cow<'static, [u8]> = match source {
            ComponentSource::File(path) => std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("plugin {name}: cannot read {}: {e}", path.display()))?
                .into(),
            ComponentSource::Builtin(b) => crate::builtin::bytes(b)
                .ok_or_else(|| anyhow::anyhow!("plugin {name}: unknown builtin {b:?}"))?
                .into(),
        };
        let started = std::time::Instant::now();
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &bytes));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, &bytes).map_err(|e| {
                    anyhow::anyhow!("plugin {name} ({described}): not a valid component: {e:#}")
                })?;
                if let Some(cache) = &self.cache {
                    cache.store(&self.engine, &bytes, &c);
                }
                c
            }
        };
        let world = wanted.unwrap_or_else(|| world_of(&self.engine, &component));
        let linker = match world {
            World::HttpHandler => &self.http_linker,
            World::SipRouter => &self.sip_linker,
        };
        let prepared = super::prepare(linker, &self.engine, &component)
            .map_err(|e| anyhow::anyhow!("plugin {name} ({described}): {e:#}"))?;
        let not_world = |e: wasmtime::Error| {
            anyhow::anyhow!(
                "plugin {name} ({described}): does not implement the {} world: {e:#}",
                world.name()
            )
        };
        let pre = match world {
            World::HttpHandler => {
                Pre::Http(bindings::HttpHandlerPre::new(prepared.pre).map_err(not_world)?)
            }
            World::SipRouter => {
                Pre::Sip(bindings::SipRouterPre::new(prepared.pre).map_err(not_world)?)
            }
        };
        if !prepared.denied.is_empty() {
            tracing::info!(
                plugin = name,
                "imports not granted to plugins, calls to them fail: {}",
                prepared.denied.join(", ")
            );
        }
        tracing::info!(
            plugin = name,
            source = described,
            bytes = bytes.len(),
            compile_ms = started.elapsed().as_millis() as u64,
            from_cache,
            world = world.name(),
            "plugin loaded"
        );
        let cfg = self
            .configs
            .read()
            .expect("plugin configs lock")
            .get(name)
            .cloned()
            .expect("configured plugin");
        let cfg = &cfg;
        let hash = {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&bytes);
            crate::hex::hex(&digest[..8])
        };
        Ok(Plugin::new(
            name,
            super::Version {
                source: described,
                hash,
                loaded: std::time::SystemTime::now(),
            },
            cfg,
            pre,
            &self.context,
            self.epoch_tick,
            self.metrics.clone(),
        ))
    }
}
