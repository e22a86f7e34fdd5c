//! The subprocess capability (`tasks.run-subprocess`), a room of its own:
//! the grant a manifest gives ([`grant`], with its argument grammar
//! [`argv`]), the pure check of a request against it ([`gate`]), the
//! service that runs a granted request ([`service`]), the child's
//! confinement ([`confine`], [`seccomp`], [`user`], [`cgroup`]), start ([`spawn`]), life ([`launch`]) and tree
//! ([`tree`]), and the grant a learned module widens ([`learning`]). Every decision goes to the audit trail ([`crate::audit`]).
//!
//! Nothing here knows wasmtime: the WIT room `wit/tasks.rs` converts the
//! request and calls [`SubprocessService::run`].

pub mod argv;
pub mod cgroup;
pub mod confine;
pub mod gate;
pub mod grant;
mod launch;
pub mod learning;
pub mod seccomp;
pub mod service;
mod spawn;
pub mod tree;
pub mod user;

pub use grant::{ProgramGrant, SubprocessGrant};
pub use launch::{Finished, Status};
pub use service::{Caller, ModuleSubprocess, SubprocessCtx, SubprocessOptions, SubprocessService};
