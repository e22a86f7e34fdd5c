//! The one place where the `modhost:sdk` world becomes Rust.
//!
//! Every import is async (host functions may wait on the task store) and
//! trappable; the WIT `error` variant maps to [`HostError`], so host functions
//! return typed errors and only a host bug becomes a trap.

use crate::error::SdkError;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "modhost:sdk/module",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "modhost:sdk/types.error" => HostError,
    },
});

pub use self::modhost::sdk::{background_tasks, context, log, tasks, types, ui};

/// What a host function returns on failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Returned to the guest as the WIT `error` variant.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// Traps the guest: a host bug or guest abuse, never a normal refusal.
    #[error("host fault: {0}")]
    Trap(wasmtime::Error),
}

impl From<wasmtime::Error> for HostError {
    fn from(e: wasmtime::Error) -> Self {
        HostError::Trap(e)
    }
}

impl From<types::Error> for SdkError {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::NotFound => SdkError::NotFound,
            types::Error::PermissionDenied(s) => SdkError::PermissionDenied(s),
            types::Error::InvalidInput(s) => SdkError::InvalidInput(s),
            types::Error::Unauthenticated => SdkError::Unauthenticated,
            types::Error::LimitExceeded(s) => SdkError::LimitExceeded(s),
            types::Error::Internal(s) => SdkError::Internal(s),
        }
    }
}

impl From<SdkError> for types::Error {
    fn from(e: SdkError) -> Self {
        match e {
            SdkError::NotFound => types::Error::NotFound,
            SdkError::PermissionDenied(s) => types::Error::PermissionDenied(s),
            SdkError::InvalidInput(s) => types::Error::InvalidInput(s),
            SdkError::Unauthenticated => types::Error::Unauthenticated,
            SdkError::LimitExceeded(s) => types::Error::LimitExceeded(s),
            SdkError::Internal(s) => types::Error::Internal(s),
        }
    }
}

/// A host function's error as the guest sees it: the WIT variant, or a trap
/// for a host fault.
pub(crate) fn convert_error(err: HostError) -> wasmtime::Result<types::Error> {
    match err {
        HostError::Sdk(e) => Ok(e.into()),
        HostError::Trap(e) => Err(e),
    }
}
