//! The raw-wasmtime baseline benches compare the host with: the host's own
//! engine and compiled component, a bare WASI context, the modhost imports
//! defined as traps, a fresh store per call.

use modhost::wit::bindings::ModulePre;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Store data with WASI only.
pub struct Raw {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Raw {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fresh store that never hits an epoch deadline.
pub fn store(engine: &wasmtime::Engine) -> Store<Raw> {
    let mut store = Store::new(
        engine,
        Raw {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// `component` linked against WASI, every other import a trap.
pub fn pre(engine: &wasmtime::Engine, component: &Component) -> ModulePre<Raw> {
    let mut linker = Linker::<Raw>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("adding WASI");
    linker
        .define_unknown_imports_as_traps(component)
        .expect("defining trap imports");
    ModulePre::new(linker.instantiate_pre(component).expect("linking")).expect("world exports")
}
