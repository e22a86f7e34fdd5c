//! A guest that never returns, to test deadlines, epoch interruption and
//! cancellation of actions, background tasks and blocking calls: `loop`
//! runs in wasm, `sleep` waits inside a host call (a WASI sleep of an hour),
//! where the epoch callback never runs.

use module_sdk::prelude::*;
use module_sdk::serde_json::json;

module_sdk::module! {
    actions: {
        "loop" => spin_action: "Loop forever",
        "sleep" => sleep_action: "Sleep for an hour",
        "ok" => ok: "Return at once",
    },
    tasks: {
        "loop" => spin_forever: "Loop forever",
        "sleep" => sleep_long: "Sleep for an hour",
        "noop" => noop: "Return at once",
    },
    blocking: {
        "loop" => spin_forever: "Loop forever",
        "sleep" => sleep_long: "Sleep for an hour",
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

fn sleep_long() -> Result<()> {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Ok(())
}

fn sleep_action() -> Result<ActionResult> {
    sleep_long().map(|()| ActionResult::empty())
}

fn noop() -> Result<()> {
    Ok(())
}

fn ok() -> Result<ActionResult> {
    ActionResult::data(&json!({ "ok": true }))
}
