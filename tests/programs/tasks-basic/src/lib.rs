//! Background tasks end to end: submission with keys, results, failures,
//! progress, the lookups, and a blocking function.

use module_sdk::prelude::*;
use serde_json::{Value, json};

module_sdk::module! {
    actions: {
        "submit" => submit: "Start a task: {task, args, key?, resumable?, title?, pad?}",
        "by_key" => by_key: "Tasks with this key: {key}",
        "by_prefix" => by_prefix: "Tasks whose key starts with: {prefix, limit?}",
        "list_mine" => list_mine: "The caller's tasks: {limit?}",
        "blocking" => blocking: "Call the `double` blocking function: {n}",
        "blocking_sleep" => blocking_sleep_action: "Call the `sleep` blocking function, which stays an hour",
        "progress_of" => progress_of: "Update the progress of a task by id: {id, label?, progress?, checkpoint?}",
        "view" => view: "The read-model view of a task by id: {id}",
        "list" => list: "One page of the read model: {limit?, cursor?, prefix?, statuses?}",
        "list_of" => list_of: "Tasks of another user: {user}",
    },
    tasks: {
        "noop" => noop: "Return null",
        "echo" => echo: "Return the arguments",
        "fail" => fail: "Fail with an internal error",
        "panic" => panic_task: "Print a line, then panic",
        "progress" => progress: "Report progress a few times",
        "sleep" => sleep: "Stay active for an hour (until cancelled)",
        "burst" => burst: "Store progress n times, flat out or with a pause between: {n, pause_ms?}",
        "count" => count: "Count to `to` from the checkpoint, storing each step: {to, pause_ms?}",
        "blocking_sleep" => blocking_sleep: "Call the `sleep` blocking function, which stays an hour",
        "spawn" => spawn: "Start a `noop` task and return its id",
    },
    blocking: {
        "double" => double: "Twice an integer",
        "sleep" => sleep: "Stay an hour (until stopped)",
    },
}

fn noop() -> Result<()> {
    Ok(())
}

fn spawn() -> Result<String> {
    tasks::run_background("noop", &Value::Null, BackgroundOptions::new()).map(|id| id.to_string())
}

fn echo(args: Value) -> Result<Value> {
    Ok(args)
}

fn fail() -> Result<()> {
    Err(Error::internal("boom"))
}

fn panic_task() -> Result<()> {
    println!("about to give up");
    panic!("the task panics on purpose")
}

fn sleep() -> Result<()> {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    Ok(())
}

/// Says "calling" in its progress label first when it runs as a task.
fn blocking_sleep() -> Result<()> {
    if let Some(id) = context::current_task() {
        tasks::set_progress(&id, 0.5, Some("calling"))?;
    }
    tasks::run_blocking("sleep", &Value::Null)
}

fn blocking_sleep_action() -> Result<ActionResult> {
    blocking_sleep()?;
    Ok(ActionResult::empty())
}

fn progress() -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    tasks::set_progress(&id, 0.25, Some("quarter"))?;
    tasks::update_progress(&id, 0.5, Some("half"), Some(&json!({ "step": 2 })))?;
    tasks::emit_progress(&id, Some(0.75), None)?;
    tasks::set_progress(&id, 1.0, Some("done"))?;
    Ok(json!({ "steps": 4 }))
}

#[derive(Deserialize)]
struct Burst {
    n: u32,
    /// A pause between updates, for a steady rate.
    #[serde(default)]
    pause_ms: u64,
}

fn burst(b: Burst) -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    for i in 1..=b.n {
        tasks::set_progress(&id, f64::from(i) / f64::from(b.n), None)?;
        if b.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(b.pause_ms));
        }
    }
    Ok(json!({ "updates": b.n }))
}

#[derive(Deserialize)]
struct Count {
    to: u32,
    #[serde(default)]
    pause_ms: u64,
}

#[derive(Deserialize, Serialize)]
struct Counted {
    n: u32,
}

/// Counts on from where the last run's stored checkpoint left off; says
/// where this run started.
fn count(c: Count) -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let from = context::checkpoint::<Counted>()?.map_or(0, |c| c.n);
    for n in from + 1..=c.to {
        let progress = f64::from(n) / f64::from(c.to.max(1));
        tasks::update_progress(&id, progress, None, Some(&Counted { n }))?;
        if c.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(c.pause_ms));
        }
    }
    Ok(json!({ "from": from, "to": c.to }))
}

fn double(n: i64) -> Result<i64> {
    n.checked_mul(2)
        .ok_or_else(|| Error::invalid_input("overflow"))
}

#[derive(Deserialize)]
struct Submit {
    task: String,
    #[serde(default)]
    args: Value,
    key: Option<String>,
    #[serde(default)]
    resumable: bool,
    title: Option<String>,
    /// Replaces `args` with a string of this many bytes, made here: the
    /// action's own arguments cannot carry an oversize host call.
    pad: Option<usize>,
}

fn submit(s: Submit) -> Result<ActionResult> {
    let mut opts = BackgroundOptions::new().resumable(s.resumable);
    if let Some(key) = s.key {
        opts = opts.key(key);
    }
    if let Some(title) = s.title {
        opts = opts.title(title);
    }
    let args = match s.pad {
        Some(n) => Value::String("x".repeat(n)),
        None => s.args,
    };
    let id = tasks::run_background(&s.task, &args, opts)?;
    ActionResult::data(&json!({ "id": id })).map(|r| r.show_task(id))
}

#[derive(Deserialize)]
struct ById {
    id: String,
    label: Option<String>,
    /// A number, or text such as `NaN` or `-inf` that JSON cannot carry.
    progress: Option<Value>,
    checkpoint: Option<Value>,
    /// Makes the checkpoint a string of this many bytes.
    checkpoint_pad: Option<usize>,
}

fn progress_of(a: ById) -> Result<ActionResult> {
    let progress = match &a.progress {
        None => 0.5,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| Error::invalid_input("`progress` is not a number"))?,
        Some(_) => return Err(Error::invalid_input("`progress` is not a number")),
    };
    let checkpoint = match a.checkpoint_pad {
        Some(n) => Some(Value::String("x".repeat(n))),
        None => a.checkpoint,
    };
    tasks::update_progress(
        &TaskId::from(a.id),
        progress,
        a.label.as_deref(),
        checkpoint.as_ref(),
    )?;
    Ok(ActionResult::empty())
}

fn view(a: ById) -> Result<ActionResult> {
    ActionResult::data(&module_sdk::background_tasks::get(&TaskId::from(a.id))?)
}

#[derive(Deserialize)]
struct ListArgs {
    limit: Option<u32>,
    cursor: Option<String>,
    prefix: Option<String>,
    #[serde(default)]
    statuses: Vec<module_sdk::tasks::TaskStatus>,
}

fn list(a: ListArgs) -> Result<ActionResult> {
    let filter = module_sdk::background_tasks::TaskFilter {
        key_prefix: a.prefix,
        statuses: a.statuses,
        ..Default::default()
    };
    let cursor = a.cursor.map(module_sdk::background_tasks::Cursor::new);
    ActionResult::data(&module_sdk::background_tasks::list(
        filter,
        cursor,
        a.limit.unwrap_or(10),
    )?)
}

#[derive(Deserialize)]
struct Of {
    user: String,
}

fn list_of(a: Of) -> Result<ActionResult> {
    ActionResult::data(&tasks::list_tasks_of(&a.user, None, 100)?)
}

#[derive(Deserialize)]
struct Lookup {
    key: Option<String>,
    prefix: Option<String>,
    limit: Option<u32>,
    n: Option<i64>,
}

fn by_key(a: Lookup) -> Result<ActionResult> {
    ActionResult::data(&tasks::get_tasks_by_key(&a.key.unwrap_or_default())?)
}

fn by_prefix(a: Lookup) -> Result<ActionResult> {
    let prefix = a.prefix.unwrap_or_default();
    ActionResult::data(&tasks::get_tasks_by_key_prefix(
        &prefix,
        a.limit.unwrap_or(100),
    )?)
}

fn list_mine(a: Lookup) -> Result<ActionResult> {
    ActionResult::data(&tasks::list_user_tasks(a.limit.unwrap_or(100))?)
}

fn blocking(a: Lookup) -> Result<ActionResult> {
    let out: i64 = tasks::run_blocking("double", &a.n)?;
    ActionResult::data(&out)
}
