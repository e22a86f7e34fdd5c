//! {{name}}: a modhost module. `greet` answers at once; `start` runs
//! `count` in the background, with progress and a checkpoint it resumes
//! from after a host restart.

use module_sdk::prelude::*;
use module_sdk::serde_json::{Value, json};

module_sdk::module! {
    actions: {
        "greet" => greet: "Say hello to the caller",
        "start" => start: "Count to `to` in the background: {\"to\": 5}",
    },
    tasks: {
        "count" => count: "Count, storing each step",
    },
}

#[derive(Deserialize, Serialize)]
struct Count {
    to: u32,
}

#[derive(Deserialize, Serialize, Default)]
struct Done {
    n: u32,
}

fn greet() -> Result<ActionResult> {
    ActionResult::data(&json!({ "hello": context::current().user_id }))
}

fn start(args: Count) -> Result<ActionResult> {
    if args.to < 1 {
        return Err(Error::invalid_input("`to` must be at least 1"));
    }
    let opts = BackgroundOptions::new().key("count").resumable(true);
    let id = tasks::run_background("count", &args, opts)?;
    Ok(ActionResult::data(&json!({ "id": id }))?.show_task(id))
}

fn count(args: Count) -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let done: Done = context::checkpoint()?.unwrap_or_default();
    for n in done.n + 1..=args.to {
        let label = format!("step {n} of {}", args.to);
        tasks::update_progress(&id, f64::from(n) / f64::from(args.to), Some(&label), Some(&Done { n }))?;
    }
    Ok(json!({ "from": done.n, "to": args.to }))
}
