//! A guest that never returns, to test deadlines and epoch interruption.

use module_sdk::prelude::*;
use module_sdk::serde_json::json;

module_sdk::module! {
    actions: {
        "loop" => spin_forever: "Loop forever",
        "ok" => ok: "Return at once",
    },
}

fn spin_forever() -> Result<ActionResult> {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn ok() -> Result<ActionResult> {
    ActionResult::data(&json!({ "ok": true }))
}
