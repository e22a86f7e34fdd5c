//! On-disk cache of compiled components.
//!
//! A file is named by the SHA-256 of the component's bytes and of the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! change of either compiles anew. Files are written to a temporary name and
//! renamed, so a reader never sees half a file.
//!
//! The cache is bounded: each write removes the entries used longest ago
//! (a hit marks its entry used) until the rest fits, so a host that sees
//! many versions of its modules does not fill its disk with old ones.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::error::EngineError;

/// A directory of `<key>.cwasm` files produced by one engine configuration.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: [u8; 32],
    max_bytes: u64,
}

/// How old a writer's temporary file must be to count as left behind by a
/// writer that died.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

impl ComponentCache {
    /// The cache in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, engine: &Engine, max_bytes: u64) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::Cache {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut h = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            dir: dir.to_owned(),
            engine_key: h.0.finalize().into(),
            max_bytes,
        })
    }

    /// Removes the entries used longest ago until the cache holds at most
    /// its bound, never `keep` (the entry just written); and temporary
    /// files a dead writer left.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in dir.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            match path.extension().and_then(|x| x.to_str()) {
                Some("cwasm") => {
                    total += meta.len();
                    if path != keep {
                        entries.push((used, meta.len(), path));
                    }
                }
                Some(x)
                    if x.starts_with("tmp-")
                        && now
                            .duration_since(used)
                            .is_ok_and(|age| age > STALE_TEMPORARY) =>
                {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), bytes = len, "evicted a compiled component from the cache");
                total -= len;
            }
        }
    }

    /// The cache file for these component bytes.
    pub fn path_for(&self, bytes: &[u8]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.engine_key);
        h.update(bytes);
        self.dir
            .join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    pub fn get_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        origin: &str,
    ) -> Result<(Component, bool), EngineError> {
        let path = self.path_for(bytes);
        if path.exists() {
            // SAFETY: files in this directory are written only by
            // `Component::serialize` of an engine with the same compatibility
            // hash (it is part of the file name), via rename, so the bytes are
            // a complete artifact of a compatible engine. An operator who
            // writes foreign files into the cache directory is trusted like one
            // who replaces the host binary.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => {
                    // Used now: the last to be evicted.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok((c, true));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cache entry")
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| EngineError::Compile {
            path: origin.to_owned(),
            reason: format!("{e:#}"),
        })?;
        let cache_err = |e: String| EngineError::Cache {
            path: path.display().to_string(),
            reason: e,
        };
        let serialized = component
            .serialize()
            .map_err(|e| cache_err(e.to_string()))?;
        // A name of its own per writer: two loads of one component at once
        // (threads or processes) must not rename each other's file.
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let written = std::fs::write(&tmp, &serialized).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            // The component is compiled; only the next load pays again.
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write a cache entry");
        }
        self.evict(&path);
        Ok((component, false))
    }
}

/// Feeds `Hash` output into SHA-256 so the key is stable across processes
/// (std's `DefaultHasher` makes no such promise).
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_past_the_bound_removes_the_entries_used_longest_ago_and_left_over_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::open(dir.path(), &Engine::default(), 250).unwrap();
        let at = |minutes_ago: u64| {
            std::time::SystemTime::now() - std::time::Duration::from_secs(minutes_ago * 60)
        };
        let entry = |name: &str, minutes_ago: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, [0u8; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(at(minutes_ago)).unwrap();
            path
        };
        let oldest = entry("a.cwasm", 30);
        let older = entry("b.cwasm", 20);
        let recent = entry("c.cwasm", 10);
        // Just written, though the clock says otherwise: it stays.
        let written = entry("d.cwasm", 40);
        let stale = entry("e.tmp-1", 120);
        let writing = entry("f.tmp-2", 1);
        cache.evict(&written);
        let left = |p: &PathBuf| p.exists();
        assert!(!left(&oldest) && !left(&older), "evicted down to the bound");
        assert!(left(&recent) && left(&written));
        assert!(!left(&stale) && left(&writing));
    }
}
