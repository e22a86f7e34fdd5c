//! The wasmtime engine and the compiled-component cache.
//!
//! One [`HostEngine`] per host: component model, async, epoch interruption
//! driven by a ticker thread, and (by default) the pooling allocator, which
//! makes a fresh instance per call cheap. Components are compiled once and
//! kept on disk, keyed by the component's hash and the engine's configuration.

mod cache;
mod error;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::ComponentCache;
pub use error::EngineError;

use crate::sandbox::SandboxState;

/// How often the epoch advances. Deadlines and cancellation are checked at
/// this granularity, and a running guest yields to the scheduler this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory any module may be granted (the manifest's
/// `memory-mib` is capped at the same value); the pooling allocator reserves
/// address space for this much per slot.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Default bytes of each linear-memory slot kept resident between
/// instances. Resetting them with memset costs a single call ~20 µs, but
/// under concurrency it saves the TLB shootdown and page faults that
/// returning pages to the kernel costs every fresh instance: ~30% more
/// instances per second on 2 cores (see the `tasks` bench).
pub const KEEP_RESIDENT_MEMORY_BYTES: usize = 1 << 20;
/// Bytes of each table slot kept resident between instances.
pub const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
/// Bytes of each async stack kept resident between instances.
pub const KEEP_RESIDENT_STACK_BYTES: usize = 128 << 10;

/// The default bound of the compiled-component cache: 1 GiB, room for a
/// few dozen Python modules' compiled code.
pub const CACHE_MAX_BYTES: u64 = 1 << 30;

/// How the engine is built. Defaults suit a server.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Use the pooling allocator (fast instantiation; reserves address space
    /// up front). On by default.
    pub pooling: bool,
    /// Instances that may be alive at once with the pooling allocator.
    pub max_instances: u32,
    /// Where compiled components are cached; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the cache holds ([`CACHE_MAX_BYTES`] by default): past
    /// it, the entries used longest ago are removed.
    pub cache_max_bytes: u64,
    /// Bytes of each pooled linear memory kept resident between instances
    /// ([`KEEP_RESIDENT_MEMORY_BYTES`] by default): more favours throughput
    /// under load, 0 favours the latency of a lone call.
    pub keep_resident_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            pooling: true,
            max_instances: 1000,
            cache_dir: None,
            cache_max_bytes: CACHE_MAX_BYTES,
            keep_resident_bytes: KEEP_RESIDENT_MEMORY_BYTES,
        }
    }
}

/// The engine, the linker every module shares, and the epoch ticker.
pub struct HostEngine {
    engine: Engine,
    linker: Arc<Linker<SandboxState>>,
    cache: Option<ComponentCache>,
    ticker: Ticker,
}

impl HostEngine {
    pub fn new(options: &EngineOptions) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        if options.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(options.max_instances);
            pool.total_core_instances(options.max_instances.saturating_mul(4));
            pool.total_memories(options.max_instances.saturating_mul(2));
            pool.total_tables(options.max_instances.saturating_mul(4));
            pool.max_memories_per_component(4);
            pool.max_memory_size(MAX_MEMORY_BYTES);
            // Reset the first pages of a slot with memset instead of
            // returning them to the kernel: a fresh instance per call would
            // otherwise pay a TLB shootdown and page faults every time.
            pool.linear_memory_keep_resident(options.keep_resident_bytes);
            pool.table_keep_resident(KEEP_RESIDENT_TABLE_BYTES);
            pool.async_stack_keep_resident(KEEP_RESIDENT_STACK_BYTES);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))?;
        let mut linker = Linker::<SandboxState>::new(&engine);
        crate::wit::add_to_linker(&mut linker)
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;
        let cache = match &options.cache_dir {
            Some(dir) => Some(ComponentCache::open(dir, &engine, options.cache_max_bytes)?),
            None => None,
        };
        let ticker = Ticker::start(engine.clone());
        Ok(HostEngine {
            engine,
            linker: Arc::new(linker),
            cache,
            ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Arc<Linker<SandboxState>> {
        &self.linker
    }

    /// Compiles a component, or loads it from the cache when this engine
    /// compiled the same bytes before. Returns whether the cache was hit.
    pub fn compile(&self, bytes: &[u8], origin: &str) -> Result<(Component, bool), EngineError> {
        if let Some(cache) = &self.cache {
            return cache.get_or_compile(&self.engine, bytes, origin);
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| EngineError::Compile {
            path: origin.to_owned(),
            reason: format!("{e:#}"),
        })?;
        Ok((component, false))
    }

    /// Ticks so far, for tests that want to see the ticker run.
    pub fn ticks(&self) -> u64 {
        self.ticker.ticks()
    }
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
struct Ticker {
    stop: Arc<AtomicBool>,
    ticks: Arc<std::sync::atomic::AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handle = std::thread::Builder::new()
            .name("modhost-epoch".into())
            .spawn({
                let stop = stop.clone();
                let ticks = ticks.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Ticker {
            stop,
            ticks,
            handle: Some(handle),
        }
    }

    fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
