//! A per-user counter kept in the module's private data directory, which the
//! host preopens at `/data` because the manifest asks for it.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;

use module_sdk::prelude::*;
use module_sdk::serde_json;

module_sdk::module! {
    actions: {
        "increment" => increment: "Add `by` (default 1) to the caller's counter",
        "get" => get: "The caller's counter",
    },
}

const COUNTS: &str = "/data/counts.json";

/// Counters by user id.
type Counts = BTreeMap<String, i64>;

#[derive(Deserialize)]
struct IncrementArgs {
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

#[derive(Serialize)]
struct Count {
    user_id: String,
    value: i64,
}

fn load() -> Result<Counts> {
    match fs::read(COUNTS) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("{COUNTS} is corrupt: {e}"))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Counts::new()),
        Err(e) => Err(e.into()),
    }
}

/// Writes to a temporary file first so a trap never leaves half a file.
fn store(counts: &Counts) -> Result<()> {
    let tmp = format!("{COUNTS}.tmp");
    fs::write(&tmp, serde_json::to_vec(counts)?)?;
    fs::rename(&tmp, COUNTS)?;
    Ok(())
}

fn increment(args: IncrementArgs) -> Result<ActionResult> {
    let user_id = context::current().user_id;
    let mut counts = load()?;
    let value = counts.entry(user_id.clone()).or_insert(0);
    *value = value
        .checked_add(args.by)
        .ok_or_else(|| Error::invalid_input("the counter would overflow"))?;
    let value = *value;
    store(&counts)?;
    ActionResult::data(&Count { user_id, value })
}

fn get() -> Result<ActionResult> {
    let user_id = context::current().user_id;
    let value = load()?.get(&user_id).copied().unwrap_or(0);
    ActionResult::data(&Count { user_id, value })
}
