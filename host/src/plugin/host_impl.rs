//! The store data of a plugin instance and the `host` interface it imports.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{HostImports, Level, TypesImports};
use super::limits::{Deadline, MemoryCap};
use crate::core::Myself;

/// Longest log line a plugin can write; the rest is cut.
const MAX_LOG_LINE: usize = 4096;
/// Most log lines per call; the rest are dropped (with one note).
const MAX_LOG_LINES_PER_CALL: u32 = 64;

/// What every instance of one plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub(crate) name: String,
    /// The plugin's `config` table as JSON.
    pub(crate) config_json: String,
    pub(crate) myself: Arc<Myself>,
}

/// The data of a plugin's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) deadline: Deadline,
    shared: Arc<PluginShared>,
    log_lines: u32,
}

impl HostState {
    pub(crate) fn new(shared: Arc<PluginShared>, memory_limit: usize) -> Self {
        // No preopened directories, no environment, no arguments, stdin closed,
        // stdout/stderr discarded, and no network at all.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_limit),
            deadline: Deadline::default(),
            shared,
            log_lines: 0,
        }
    }

    /// Prepares for a call that must end by `at`.
    pub(crate) fn begin_call(&mut self, at: std::time::Instant) {
        self.deadline = Deadline {
            at: Some(at),
            expired: false,
        };
        self.log_lines = 0;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl TypesImports for HostState {}

impl HostImports for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        let plugin = self.shared.name.as_str();
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            if self.log_lines == MAX_LOG_LINES_PER_CALL + 1 {
                tracing::warn!(
                    plugin,
                    "plugin log lines beyond {MAX_LOG_LINES_PER_CALL} in one call dropped"
                );
            }
            return;
        }
        let mut msg = message.as_str();
        if msg.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        // Debug formatting escapes control characters: a plugin cannot forge log lines.
        match level {
            Level::Trace => tracing::trace!(plugin, "{msg:?}"),
            Level::Debug => tracing::debug!(plugin, "{msg:?}"),
            Level::Info => tracing::info!(plugin, "{msg:?}"),
            Level::Warn => tracing::warn!(plugin, "{msg:?}"),
            Level::Error => tracing::error!(plugin, "{msg:?}"),
        }
    }

    fn is_myself(&mut self, host: String) -> bool {
        self.shared.myself.is_myself(&host)
    }

    fn plugin_config(&mut self) -> String {
        self.shared.config_json.clone()
    }
}
