//! Errors at the guest boundary and at the call boundary.
//!
//! [`SdkError`] is what a module is told: the Rust face of the WIT `error`
//! variant (converted at the bindgen site, `wit/bindings.rs`). [`CallError`]
//! is what the caller of a module (HTTP, CLI, task runtime) gets back.

/// The WIT `error` variant, as the host builds it. See `wit/types.wit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum SdkError {
    #[error("not found")]
    NotFound,
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unauthenticated")]
    Unauthenticated,
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SdkError {
    /// The variant's WIT name, for logs and HTTP bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            SdkError::NotFound => "not-found",
            SdkError::PermissionDenied(_) => "permission-denied",
            SdkError::InvalidInput(_) => "invalid-input",
            SdkError::Unauthenticated => "unauthenticated",
            SdkError::LimitExceeded(_) => "limit-exceeded",
            SdkError::Internal(_) => "internal",
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        SdkError::InvalidInput(reason.into())
    }

    pub fn denied(reason: impl Into<String>) -> Self {
        SdkError::PermissionDenied(reason.into())
    }
}

/// Why a call into a module did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No loaded module has that name (or the caller may not see it).
    #[error("module `{0}` not found")]
    UnknownModule(String),
    /// The module does not list that action, task or function.
    #[error("module `{module}` has no {kind} `{name}`")]
    UnknownEntry {
        module: String,
        kind: &'static str,
        name: String,
    },
    /// The arguments were refused before reaching the module.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The module answered with a typed error.
    #[error("module `{module}` returned {error}")]
    Guest { module: String, error: SdkError },
    /// The call ran past its deadline and was stopped.
    #[error("module `{module}` ran past its {deadline_ms} ms deadline and was stopped")]
    Deadline { module: String, deadline_ms: u64 },
    /// The module tried to grow its memory past its limit.
    #[error("module `{module}` exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { module: String, limit_bytes: u64 },
    /// The call was cancelled through the host's API.
    #[error("call into module `{module}` was cancelled")]
    Cancelled { module: String },
    /// The module trapped (a panic, `unreachable`, a bad access).
    #[error("module `{module}` trapped: {message}")]
    Trap { module: String, message: String },
    /// Too many concurrent calls or instances.
    #[error("limit exceeded: {0}")]
    Busy(String),
    /// A task's run gave up its instance to wait for a confirmation: the
    /// answer, or the question's expiry, runs the task again.
    #[error("a task of module `{module}` gave up its instance to wait for a confirmation")]
    Parked { module: String },
    /// The host failed; details are in its log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CallError {
    /// The error as a module calling through `tasks` would see it.
    pub fn to_sdk(&self) -> SdkError {
        match self {
            CallError::UnknownModule(_) => SdkError::NotFound,
            CallError::UnknownEntry { .. } | CallError::InvalidInput(_) => {
                SdkError::InvalidInput(self.to_string())
            }
            CallError::Guest { error, .. } => error.clone(),
            CallError::Deadline { .. } | CallError::MemoryLimit { .. } | CallError::Busy(_) => {
                SdkError::LimitExceeded(self.to_string())
            }
            CallError::Cancelled { .. }
            | CallError::Trap { .. }
            | CallError::Parked { .. }
            | CallError::Internal(_) => SdkError::Internal(self.to_string()),
        }
    }
}
