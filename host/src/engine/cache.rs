//! On-disk cache of compiled components.
//!
//! A file is named by the SHA-256 of the component's bytes and of the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! change of either compiles anew. Files are written to a temporary name and
//! renamed, so a reader never sees half a file.

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
}

impl ComponentCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::Cache {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut h = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            dir: dir.to_owned(),
            engine_key: h.0.finalize().into(),
        })
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
                Ok(c) => return Ok((c, true)),
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
