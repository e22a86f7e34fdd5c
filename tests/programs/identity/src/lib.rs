//! Reports the identity each kind of call sees: an action, a background task
//! and a blocking function, plus a log line with guest-chosen fields, and a
//! note kept in the data directory (which organization's files a call sees).

use module_sdk::context::Identity;
use module_sdk::log::{self, Level};
use module_sdk::prelude::*;

module_sdk::module! {
    actions: {
        "whoami" => whoami_action: "The caller's identity and task",
        "log" => log_line: "Write one log line with fields",
        "spawn" => spawn: "Start the `whoami` task",
        "via_blocking" => via_blocking: "Run the `whoami` blocking function",
        "write_note" => write_note: "Write {text} to /data/note.txt",
        "read_note" => read_note: "The text of /data/note.txt, or null",
    },
    tasks: {
        "whoami" => whoami: "The identity a task sees",
    },
    blocking: {
        "whoami" => whoami: "The identity a blocking call sees",
    },
}

/// The identity's fields at the top level, plus `task_id`.
#[derive(Serialize, Deserialize)]
struct WhoAmI {
    #[serde(flatten)]
    identity: Identity,
    task_id: Option<TaskId>,
}

fn whoami() -> Result<WhoAmI> {
    Ok(WhoAmI {
        identity: context::current(),
        task_id: context::current_task(),
    })
}

fn whoami_action() -> Result<ActionResult> {
    ActionResult::data(&whoami()?)
}

#[derive(Deserialize)]
struct LogArgs {
    #[serde(default = "default_message")]
    message: String,
    #[serde(default)]
    fields: Vec<(String, String)>,
}

fn default_message() -> String {
    "hello from identity".to_owned()
}

fn log_line(args: LogArgs) -> Result<ActionResult> {
    let fields: Vec<(&str, &str)> = args
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    log::write(Level::Info, &args.message, &fields);
    ActionResult::data(&true)
}

fn spawn() -> Result<ActionResult> {
    let id = tasks::run_background("whoami", &(), BackgroundOptions::new())?;
    ActionResult::data(&serde_json::json!({ "id": id }))
}

#[derive(Deserialize)]
struct Note {
    text: String,
}

fn write_note(note: Note) -> Result<ActionResult> {
    std::fs::write("/data/note.txt", note.text)
        .map_err(|e| Error::internal(format!("cannot write the note: {e}")))?;
    ActionResult::data(&true)
}

fn read_note() -> Result<ActionResult> {
    ActionResult::data(&std::fs::read_to_string("/data/note.txt").ok())
}

fn via_blocking() -> Result<ActionResult> {
    let seen: WhoAmI = tasks::run_blocking("whoami", &())?;
    ActionResult::data(&seen)
}
