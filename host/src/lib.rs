//! modhost: a host for third-party modules compiled to WebAssembly components.
//!
//! A module only ever *asks*; the host decides, records and enforces. The map:
//!
//! - [`bindings`]: the one `bindgen!` site for the `modhost:sdk` world (`wit/`).
//! - [`engine`]: the wasmtime engine (pooling allocator, epoch ticker) and the
//!   on-disk cache of compiled components.
//! - [`sandbox`]: the per-call store state: identity, deadline, memory limit, WASI.
//! - [`manifest`]: `module.toml` parsed once into a typed, deny-by-default `Policy`.
//! - [`modules`]: loading, building and describing the modules of a directory.
//! - [`context`], [`log`], [`tasks`], [`background_tasks`]: one room per WIT
//!   interface the host implements.
//! - [`auth`]: bearer tokens mapped to a [`identity::Principal`], stored hashed.
//! - [`store`]: the embedded SQLite database.
//! - [`http`]: the HTTP API, as a function returning a `Router`.
//! - [`check`]: `modhost check`, a module validated without running it.
//! - [`host`]: [`Host`], what an embedder holds: modules plus the means to call them.

pub mod auth;
pub mod background_tasks;
pub mod bindings;
pub mod check;
pub mod context;
pub mod engine;
pub mod error;
pub mod host;
pub mod http;
pub mod identity;
pub mod log;
pub mod manifest;
pub mod modules;
pub mod sandbox;
pub mod store;
pub mod tasks;
pub mod ui;

pub use error::{CallError, SdkError};
pub use host::{Host, HostOptions, StartError};
pub use identity::{Identity, Principal, Role};
