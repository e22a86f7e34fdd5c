//! modhost: a host for third-party modules compiled to WebAssembly components.
//!
//! A module only ever *asks*; the host decides, records and enforces. The
//! rooms, from the top down (each points only down):
//!
//! - [`host`]: [`Host`], what an embedder holds and the composition root:
//!   it builds every service, loads modules and runs calls.
//! - [`http`], [`check`], [`auth`], [`client`]: the HTTP API (a `Router`:
//!   the JSON API, the event stream, the dashboard), `modhost check`, bearer
//!   tokens, and a client of a running server's API; the CLI (`main.rs`,
//!   `cli/`) only calls these. [`kit`]: the policy test kit, the host's own
//!   checks asked without a server.
//! - [`wit`]: one room per WIT interface (`context`, `log`, `tasks`,
//!   `background-tasks`, `ui`), each a thin `Host` impl on a view of the call
//!   that holds only its own capability; [`wit::bindings`] is the one
//!   `bindgen!` site.
//! - [`modules`] and the sandbox: loading modules, the one `invoke` path,
//!   and the per-call store (identity, deadline, memory, deny-by-default
//!   WASI, one context per capability). [`engine`]: wasmtime and the
//!   compiled-component cache.
//! - [`tasks`]: the task service (submit, lookups, progress, confirmation,
//!   scheduler, blocking pool, events) and its store; it starts wasm only
//!   through [`tasks::TaskRunner`], which [`Host`] implements.
//! - [`subprocess`]: `run-subprocess` as a room of its own: grant and argv
//!   grammar, gate, confinement, spawn, process tree.
//! - [`network`]: `wasi:http/outgoing-handler` as a room of its own: each
//!   request decided against the `[network]` grant, resolved and connected
//!   by the host (no internal address through a granted name), capped.
//! - [`audit`]: the one audit trail every room that decides writes to
//!   (subprocesses, outbound HTTP, refused file operations, submissions,
//!   answers), on SQLite or the shared PostgreSQL, read scoped by role.
//! - [`learn`]: the minimal grants a module needs, from its records on
//!   the trail (`modhost manifest suggest`).
//! - [`retention`]: deleting finished tasks and audit records past their
//!   retention, in batches through the stores. [`data_quota`]: the measured
//!   size of each module's data directory per organization, against its
//!   quota.
//! - [`manifest`], [`identity`], [`error`], [`db`], [`ui`], [`cancel`],
//!   [`events`]: the typed policy, who is calling, errors, the SQLite file
//!   (per-owner migrations, group-commit writer), UI values, cancel and
//!   deadline, and the event hub tasks and subprocess calls publish to.

pub mod audit;
pub mod auth;
pub mod cancel;
pub mod check;
pub mod client;
pub mod columns;
pub mod data_quota;
pub mod db;
pub mod engine;
pub mod error;
pub mod events;
pub mod host;
pub mod http;
pub mod identity;
pub mod kit;
pub mod learn;
pub mod manifest;
pub mod modules;
pub mod network;
pub mod pg;
pub mod retention;
mod sandbox;
pub mod scaffold;
mod share;
pub mod subprocess;
pub mod tasks;
mod text;
pub mod ui;
pub mod wit;

pub use error::{CallError, SdkError};
pub use host::{Host, HostOptions, LoadDirError, StartError};
pub use identity::{Identity, Principal, RequestMeta, Role};
