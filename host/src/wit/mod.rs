//! The WIT rooms: one file per interface of `modhost:sdk`, each holding only
//! its `Host` impl and the conversion of its arguments.
//!
//! - [`bindings`]: the one `bindgen!` site, and the WIT error variant.
//! - `context.rs`, `log.rs`, `tasks.rs`, `background_tasks.rs`, `ui.rs`: the
//!   rooms, each implemented on a *view* of the call's [`SandboxState`]
//!   that holds only what the interface may see.
//! - `filesystem.rs`: `wasi:filesystem/types`, wasmtime-wasi's own with
//!   each refused path operation put on the audit trail; it shadows the
//!   unaudited one [`add_to_linker`] links first.
//! - `http.rs`: `wasi:http/outgoing-handler`, the hooks of the network room
//!   (`crate::network`), linked through a view holding those hooks, its
//!   context and the resource table its bodies share with `wasi:io`.
//!
//! [`add_to_linker`] links each interface through its own projection
//! (wasmtime's `HasData`), so a host function cannot reach another
//! capability's state: `log` sees the identity and its budget, `context`
//! the identity and task, `tasks` its own context and the subprocess one
//! (`run-subprocess` is part of `interface tasks`), `background-tasks` only
//! the task context.

mod background_tasks;
pub mod bindings;
mod context;
pub(crate) mod filesystem;
pub(crate) mod http;
mod log;
mod tasks;
mod ui;

use wasmtime::component::{HasData, Linker};

use bindings::modhost::sdk;

use crate::sandbox::SandboxState;
use background_tasks::ReadView;
use context::ContextView;
use log::LogView;
use tasks::TasksView;
use ui::UiView;

/// Links WASI, `wasi:http` (the network room) and every interface of the
/// world, each with its own view.
pub(crate) fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // The audited file system replaces the one linked just above.
    linker.allow_shadowing(true);
    wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<_, Filesystem>(
        linker,
        SandboxState::filesystem_view,
    )?;
    linker.allow_shadowing(false);
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    sdk::types::add_to_linker::<_, Ui>(linker, |_| UiView)?;
    sdk::ui::add_to_linker::<_, Ui>(linker, |_| UiView)?;
    sdk::context::add_to_linker::<_, Context>(linker, ContextView::of)?;
    sdk::log::add_to_linker::<_, Log>(linker, LogView::of)?;
    sdk::tasks::add_to_linker::<_, Tasks>(linker, TasksView::of)?;
    sdk::background_tasks::add_to_linker::<_, BackgroundTasks>(linker, ReadView::of)?;
    Ok(())
}

struct Filesystem;
impl HasData for Filesystem {
    type Data<'a> = filesystem::FilesystemView<'a>;
}

struct Ui;
impl HasData for Ui {
    type Data<'a> = UiView;
}

struct Context;
impl HasData for Context {
    type Data<'a> = ContextView<'a>;
}

struct Log;
impl HasData for Log {
    type Data<'a> = LogView<'a>;
}

struct Tasks;
impl HasData for Tasks {
    type Data<'a> = TasksView<'a>;
}

struct BackgroundTasks;
impl HasData for BackgroundTasks {
    type Data<'a> = ReadView<'a>;
}
