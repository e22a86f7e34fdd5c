//! The task capability (`interface tasks` and `background-tasks`), below
//! the WIT rooms: background and blocking work, progress, confirmation and
//! lookups, with the caller's identity enforced on every call.
//!
//! - [`service`]: [`TaskService`], what the rooms call: submission,
//!   lookups, progress, the read model; its runs (`run.rs`), confirmations
//!   ([`confirm`]) and blocking pool (`blocking.rs`); and [`TaskRunner`],
//!   how it starts wasm without knowing it (the host implements it).
//! - [`scheduler`]: the queues and running slots of this host.
//! - [`policy`]: what a guest may pass, as pure checks.
//! - [`store`]: persistence ([`store::TaskStore`], SQLite by default).
//! - [`api`]: the same tasks seen by a principal (HTTP, CLI, embedders).
//!
//! Identity comes from the caller's sandbox, never from arguments: a task id
//! a guest passes is looked up inside the caller's module and organization,
//! so another module's task is indistinguishable from a missing one.

pub mod api;
mod blocking;
pub mod confirm;
pub mod policy;
mod run;
pub mod scheduler;
pub mod service;
pub mod store;
mod waits;

pub use blocking::CallerStops;
pub use confirm::{ConfirmationAnswer, Confirmed};
pub use run::BUSY_RETRY;
pub use service::{
    BlockingCall, ModuleTasks, Returned, RunFuture, SubmitOptions, TaskOptions, TaskRun,
    TaskRunner, TaskScope, TaskService, TasksCtx,
};
