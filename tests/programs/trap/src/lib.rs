//! A guest that traps in the ways a real module can, to test containment.

use std::time::{Duration, Instant};

use module_sdk::prelude::*;
use module_sdk::serde_json::json;

module_sdk::module! {
    actions: {
        "panic" => panic: "Panic",
        "unreachable" => unreachable: "Execute `unreachable`",
        "ok" => ok: "Return at once",
        "slow" => slow: "Busy-wait `ms` milliseconds, then return",
    },
}

fn panic() -> Result<ActionResult> {
    panic!("the trap program panics on purpose")
}

fn unreachable() -> Result<ActionResult> {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn ok() -> Result<ActionResult> {
    ActionResult::data(&json!({ "ok": true }))
}

#[derive(Deserialize)]
struct SlowArgs {
    ms: u64,
}

fn slow(args: SlowArgs) -> Result<ActionResult> {
    let start = Instant::now();
    let wait = Duration::from_millis(args.ms);
    while start.elapsed() < wait {
        std::hint::black_box(());
    }
    ok()
}
