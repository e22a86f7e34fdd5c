//! Which language runtime a component carries, read from the names of the
//! core modules inside it: what `check` needs to tell an import the
//! module's author chose from one every module of that language has.

use wasmparser::{KnownCustom, Name, Parser, Payload};

/// A language runtime a component is built around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// CPython, as componentize-py links it (`libpython3.*.so`). Its
    /// standard library imports `wasi:sockets` whether the module uses the
    /// network or not.
    CPython,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::CPython => "CPython",
        }
    }

    fn of_module(name: &str) -> Option<Runtime> {
        name.starts_with("libpython3.").then_some(Runtime::CPython)
    }
}

/// The runtime the component `bytes` carries, if it is one this host knows.
pub fn runtime_of(bytes: &[u8]) -> Option<Runtime> {
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Name(names) = section.as_known() else {
            continue;
        };
        for name in names.into_iter().flatten() {
            if let Name::Module { name, .. } = name
                && let Some(runtime) = Runtime::of_module(name)
            {
                return Some(runtime);
            }
        }
    }
    None
}
