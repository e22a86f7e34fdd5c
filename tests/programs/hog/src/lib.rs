//! A guest that allocates as much memory as it is asked for, to test memory
//! limits.

use module_sdk::prelude::*;
use module_sdk::serde_json::json;

module_sdk::module! {
    actions: {
        "grow" => grow: "Allocate and touch `mib` MiB",
        "ok" => ok: "Return at once",
    },
}

#[derive(Deserialize)]
struct GrowArgs {
    mib: usize,
}

fn grow(args: GrowArgs) -> Result<ActionResult> {
    let len = args
        .mib
        .checked_mul(1 << 20)
        .ok_or_else(|| Error::invalid_input("`mib` is too large"))?;
    let mut buf = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        buf[i] = 1;
    }
    let buf = std::hint::black_box(buf);
    ActionResult::data(&json!({ "len": buf.len() }))
}

fn ok() -> Result<ActionResult> {
    ActionResult::data(&json!({ "ok": true }))
}
