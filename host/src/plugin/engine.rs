//! The one wasmtime [`Engine`] and its epoch ticker.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::PluginRuntimeConfig;

/// Core instances one component may bring (its main module plus the small shim and
/// adapter modules the component model adds). Pool slots are sized by this.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Memories and tables one component may bring.
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;

/// Builds the engine: component model, epoch interruption, pooling allocator.
///
/// `max_memory` is the largest per-plugin memory cap; every pooled memory slot can
/// grow that far (the store limiter then applies each plugin's own cap).
pub fn build(runtime: &PluginRuntimeConfig, max_memory: usize) -> wasmtime::Result<Engine> {
    let n = runtime.pool_instances;
    let mut pool = PoolingAllocationConfig::default();
    // One slot per live instance: reused instances sit in their slot between calls,
    // fresh ones take a slot for one call.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        // Each call runs on a fiber with its own stack.
        .total_stacks(n)
        .max_memory_size(max_memory)
        // Keep only a few idle "warm" slots around so that memory touched by a
        // plugin that ran once is given back.
        .max_unused_warm_slots(n.min(32));

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Deadlines: the ticker below bumps the epoch; stores trap or yield at ticks.
        .epoch_interruption(true)
        // Wasm stack per call; the fiber stack must be a little larger.
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Increments the engine's epoch every `tick` for the life of the process, on a plain
/// thread so that a blocked async runtime cannot stall plugin deadlines.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("sipwasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("spawn the epoch thread");
}
