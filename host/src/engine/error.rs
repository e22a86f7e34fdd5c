//! [`EngineError`]: why the engine or a component could not be set up.

/// Why the engine or a component could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot configure the wasm engine: {0}")]
    Config(String),
    #[error("cannot compile component {path}: {reason}")]
    Compile { path: String, reason: String },
    #[error("component cache at {path}: {reason}")]
    Cache { path: String, reason: String },
}
