//! Which language runtime a component carries, read from the names of the
//! core modules inside it or from its producers: what `check` needs to tell an import the
//! module's author chose from one every module of that language has.

use wasmparser::{KnownCustom, Name, Parser, Payload};

/// A language runtime a component is built around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// CPython, as componentize-py links it (`libpython3.*.so`). Its
    /// standard library imports `wasi:sockets` whether the module uses the
    /// network or not.
    CPython,
    /// StarlingMonkey, the JavaScript engine componentize-js builds around
    /// (its producers section names componentize-js).
    StarlingMonkey,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::CPython => "CPython",
            Runtime::StarlingMonkey => "StarlingMonkey",
        }
    }

    fn of_module(name: &str) -> Option<Runtime> {
        name.starts_with("libpython3.").then_some(Runtime::CPython)
    }

    /// The world of this runtime's SDK that brings `wasi:http` whether the
    /// module sends requests or not (its toolchain keeps every import of
    /// the world).
    pub fn http_world(self) -> &'static str {
        match self {
            Runtime::CPython => "the Python SDK's module-http world",
            Runtime::StarlingMonkey => "the JavaScript SDK's module-http world",
        }
    }
}

/// The runtime the component `bytes` carries, if it is one this host knows.
pub fn runtime_of(bytes: &[u8]) -> Option<Runtime> {
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        match section.as_known() {
            KnownCustom::Name(names) => {
                for name in names.into_iter().flatten() {
                    if let Name::Module { name, .. } = name
                        && let Some(runtime) = Runtime::of_module(name)
                    {
                        return Some(runtime);
                    }
                }
            }
            // componentize-js leaves no module names; its producers say it.
            KnownCustom::Producers(fields) => {
                for field in fields.into_iter().flatten() {
                    let by_componentize_js = field.name == "processed-by"
                        && field
                            .values
                            .into_iter()
                            .flatten()
                            .any(|v| v.name == "ComponentizeJS");
                    if by_componentize_js {
                        return Some(Runtime::StarlingMonkey);
                    }
                }
            }
            _ => {}
        }
    }
    None
}
