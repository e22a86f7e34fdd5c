//! The one place where the `modhost:sdk` world becomes Rust.
//!
//! Every import is async (host functions may wait on the task store) and
//! trappable; the WIT `error` variant maps to [`HostError`], so host functions
//! return typed errors and only a host bug becomes a trap.

use crate::error::HostError;

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
