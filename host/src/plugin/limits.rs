//! Per-store limits: the memory cap and the per-call deadline.

use std::time::Instant;

use wasmtime::ResourceLimiter;

/// Caps linear memory growth of one store and remembers that the cap was hit, so a
/// failure can be reported as "out of memory" rather than as a generic trap.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    limit: usize,
    pub(crate) hit: bool,
}

impl MemoryCap {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, hit: false }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// Most table elements a plugin may grow a table to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            // An error (not `Ok(false)`) traps at once: a plugin that ignores a failed
            // `memory.grow` must not go on running.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached (wanted {desired})",
                self.limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The wall-clock deadline of the call under way, checked at every epoch tick.
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    pub(crate) at: Option<Instant>,
    pub(crate) expired: bool,
}
