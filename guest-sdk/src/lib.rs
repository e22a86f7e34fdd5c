//! Write modhost modules in Rust.
//!
//! A module is a WebAssembly component targeting the `modhost:sdk/module`
//! world (see `wit/world.wit`). This crate hides the generated bindings behind
//! plain Rust types and functions:
//!
//! - [`module!`] registers a module's actions, background tasks and blocking
//!   functions, and exports them;
//! - [`context`] reads who is calling, [`log`] writes to the host's log;
//! - [`tasks`] starts background, blocking and subprocess work and reports
//!   progress; [`background_tasks`] is the richer read model of tasks;
//! - [`ui`] builds confirmation surfaces and the effects an action returns;
//! - [`http`] sends outbound requests to the hosts `[network]` allows.
//!
//! The crate is not on a registry: a module outside the modhost repository
//! depends on it by path (`module-sdk = { path = ".../guest-sdk" }`) and is
//! built for `wasm32-wasip2` with Rust 1.95 or newer. A module granted
//! `[filesystem] data = true` finds its organization's data directory at
//! `/data`; what it prints reaches the host's log. `docs/authoring.md` in
//! the repository is the author's guide, with every manifest key.
//!
//! A complete module:
//!
//! ```no_run
//! use module_sdk::prelude::*;
//!
//! module_sdk::module! {
//!     actions: {
//!         "greet" => greet: "Say hello to the caller",
//!     },
//!     tasks: {
//!         "reports.monthly" => monthly: "Build the monthly report",
//!     },
//! }
//!
//! #[derive(Deserialize)]
//! struct ReportArgs { month: u32 }
//!
//! fn greet(_: ()) -> Result<ActionResult> {
//!     let me = context::current();
//!     ActionResult::data(&format!("Hello, {}!", me.user_id))
//!         .map(|r| r.toast(ToastLevel::Success, "greeted"))
//! }
//!
//! fn monthly(args: ReportArgs) -> Result<String> {
//!     log::info(format!("building the report of month {}", args.month));
//!     Ok(format!("report {}", args.month))
//! }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the output
//! `.wasm` is a component. The crate also compiles for native targets (so a
//! workspace can check it), but its host calls only work inside modhost.

extern crate self as module_sdk;

pub mod background_tasks;
pub mod context;
mod error;
mod export;
pub mod http;
mod ids;
pub mod log;
pub mod tasks;
pub mod ui;

pub use error::{Error, Result};
pub use ids::{TaskId, Timestamp};
pub use serde_json;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod __private {
    pub use crate::export::*;
}

/// The generated bindings of the `modhost:sdk/module` world. Not part of the
/// API: use the typed modules of this crate instead.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "modhost:sdk/module",
        pub_export_macro: true,
        export_macro_name: "__export_module",
        default_bindings_module: "module_sdk::__bindings",
        runtime_path: "module_sdk::__wit_bindgen::rt",
    });
}

/// What most modules need: `use module_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::tasks::{BackgroundOptions, TaskStatus, TaskSummary};
    pub use crate::ui::{ActionResult, ToastLevel};
    pub use crate::{Error, Result, TaskId, background_tasks, context, log, tasks, ui};
    pub use serde::{Deserialize, Serialize};
}
