//! A guest that never returns, to test deadlines, epoch interruption and
//! cancellation of actions, background tasks and blocking calls.

use module_sdk::prelude::*;
use module_sdk::serde_json::json;

module_sdk::module! {
    actions: {
        "loop" => spin_action: "Loop forever",
        "ok" => ok: "Return at once",
    },
    tasks: {
        "loop" => spin_forever: "Loop forever",
        "noop" => noop: "Return at once",
    },
    blocking: {
        "loop" => spin_forever: "Loop forever",
    },
}

fn spin_forever() -> Result<()> {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn spin_action() -> Result<ActionResult> {
    spin_forever().map(|()| ActionResult::empty())
}

fn noop() -> Result<()> {
    Ok(())
}

fn ok() -> Result<ActionResult> {
    ActionResult::data(&json!({ "ok": true }))
}
