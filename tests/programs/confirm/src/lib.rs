//! A resumable task that checkpoints, asks the user to confirm halfway, and
//! finishes with the answer: the confirmation and restart paths end to end.

use std::time::Duration;

use module_sdk::prelude::*;
use module_sdk::serde_json::{Value, json};
use module_sdk::tasks::Confirmation;
use module_sdk::ui::{Builder, Style};

module_sdk::module! {
    actions: {
        "start" => start: "Start the `ask` task: {key?, timeout_ms?, text?, retry_ask?, not_resumable?}",
        "ask_here" => ask_here: "Ask for a confirmation outside a task",
    },
    tasks: {
        "ask" => ask: "Checkpoint, ask, and return the answer",
    },
}

#[derive(Deserialize, Serialize, Default)]
struct Args {
    key: Option<String>,
    timeout_ms: Option<u64>,
    /// Shown in the question after its fixed text.
    text: Option<String>,
    /// Asks once more when asking fails, and says so in the result.
    #[serde(default)]
    retry_ask: bool,
    /// Asks again this many times, 100 ms apart, while asking fails; the
    /// result gives the first failure.
    #[serde(default)]
    ask_retries: u32,
    /// A pause before the first question.
    #[serde(default)]
    ask_after_ms: u64,
    /// Starts the task without `resumable`, so its wait keeps its instance.
    #[serde(default)]
    not_resumable: bool,
}

#[derive(Deserialize, Serialize)]
struct Checkpoint {
    asked: bool,
}

fn surface(extra: Option<&str>) -> module_sdk::ui::Surface {
    let mut b = Builder::new("Delete 3 files?").text("The files are gone for good.");
    if let Some(t) = extra {
        b = b.text(t);
    }
    b.button("yes", "Delete", Style::Danger)
        .button("no", "Keep", Style::Secondary)
        .build()
}

fn ask(args: Args) -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let resumed: Option<Checkpoint> = context::checkpoint()?;
    tasks::update_progress(
        &id,
        0.5,
        Some("waiting for the user"),
        Some(&Checkpoint { asked: true }),
    )?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    std::thread::sleep(Duration::from_millis(args.ask_after_ms));
    let retries = if args.retry_ask { 1 } else { args.ask_retries };
    let mut first_ask_error = None;
    let mut asked = tasks::request_confirmation(surface(args.text.as_deref()), timeout);
    for _ in 0..retries {
        let Err(e) = &asked else { break };
        first_ask_error.get_or_insert_with(|| e.to_string());
        if !args.retry_ask {
            std::thread::sleep(Duration::from_millis(100));
        }
        asked = tasks::request_confirmation(surface(args.text.as_deref()), timeout);
    }
    let outcome = asked?;
    let answer = match outcome {
        Confirmation::Answered(a) => json!({ "button": a.button, "by": a.answered_by }),
        Confirmation::TimedOut => json!("timed-out"),
    };
    tasks::set_progress(&id, 1.0, Some("done"))?;
    Ok(json!({
        "answer": answer,
        "resumed": resumed.is_some_and(|c| c.asked),
        "first_ask_failed": first_ask_error.is_some(),
        "first_ask_error": first_ask_error,
    }))
}

fn start(args: Args) -> Result<ActionResult> {
    let mut opts = BackgroundOptions::new()
        .resumable(!args.not_resumable)
        .title("Delete files");
    if let Some(k) = &args.key {
        opts = opts.key(k.clone());
    }
    let id = tasks::run_background("ask", &args, opts)?;
    ActionResult::data(&json!({ "id": id }))
}

fn ask_here() -> Result<ActionResult> {
    tasks::request_confirmation(surface(None), None)?;
    Ok(ActionResult::empty())
}
