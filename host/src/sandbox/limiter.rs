//! The per-store memory limit from the manifest's `limits.memory-mib`.

use wasmtime::ResourceLimiter;

/// Most table elements a guest may have: far beyond what compiled code needs,
/// small enough that tables cannot be used to exhaust host memory.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The guest was refused memory beyond its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub struct MemoryLimitExceeded(pub u64);

/// Refuses growth past the limit by trapping at once (rather than letting the
/// guest's allocator fail obscurely later) and remembers that it did, so the
/// trap is reported as `limit-exceeded`.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    /// Bytes of all linear memories of the store.
    used: u64,
    exceeded: bool,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            used: 0,
            exceeded: false,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        let total = self.used.saturating_add(grow);
        if total > self.limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded(self.limit).into());
        }
        self.used = total;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_traps_and_is_remembered() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!l.exceeded());
        assert!(l.memory_growing(1 << 20, (1 << 20) + 65536, None).is_err());
        assert!(l.exceeded());
    }

    #[test]
    fn the_limit_covers_all_memories_of_a_store_together() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(l.memory_growing(0, 65536, None).is_err());
    }
}
