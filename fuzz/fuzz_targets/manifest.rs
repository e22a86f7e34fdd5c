//! Any text as `module.toml`: parsed into a typed manifest or refused with
//! a `ManifestError`, never a panic; what parses explains itself and its
//! warnings without a panic too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modhost::kit::PolicyKit;

fuzz_target!(|text: &str| {
    if let Ok(kit) = PolicyKit::parse(text) {
        let _ = kit.explain();
        let _ = kit.manifest().warnings();
    }
});
