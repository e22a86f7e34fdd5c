//! The commands that talk to a running server: `call` (without `--user`),
//! `tasks`, `audit`, `events`. They print text for people, `--json` for
//! scripts, and exit with a code that tells success, a failed task and a
//! usage or auth error apart (see `EXIT_CODES` in `main.rs`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use modhost::client::{Client, ClientError, ServerEvent, terminal_safe};
use serde_json::Value;

use super::Server;

/// A command's failure, with the exit code it stands for.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

const FAILED: u8 = 1;
const USAGE: u8 = 2;
const AUTH: u8 = 3;
const UNAVAILABLE: u8 = 4;

/// A usage error (exit code 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Failure {
        code: USAGE,
        message: message.into(),
    }
    .into()
}

/// The exit code of an action refused in-process with `status`: bad input
/// or a refusal (2, 3), or a failure of the work (1).
pub fn exit_for_status(status: u16) -> ExitCode {
    ExitCode::from(if status < 500 {
        code_for_status(status)
    } else {
        FAILED
    })
}

fn code_for_status(status: u16) -> u8 {
    match status {
        401 | 403 => AUTH,
        400..=428 => USAGE,
        _ => UNAVAILABLE,
    }
}

fn failure(e: ClientError) -> anyhow::Error {
    let code = match &e {
        ClientError::Url(_) => USAGE,
        ClientError::Api { status, .. } => code_for_status(*status),
        ClientError::Unreachable { .. } | ClientError::Protocol(_) => UNAVAILABLE,
    };
    Failure {
        code,
        message: e.to_string(),
    }
    .into()
}

/// A refused action: a trap, an internal error or a deadline of the module
/// is a failure of the work (1), not of the server.
fn work_failure(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { status, code, .. }
            if *status >= 500
                && matches!(code.as_str(), "trap" | "internal" | "limit-exceeded") =>
        {
            Failure {
                code: FAILED,
                message: e.to_string(),
            }
            .into()
        }
        _ => failure(e),
    }
}

fn client(server: &Server) -> anyhow::Result<Client> {
    let token = server.token.as_deref().ok_or_else(|| Failure {
        code: AUTH,
        message: "no token: pass --token or set MODHOST_TOKEN (`modhost token create` makes one)"
            .into(),
    })?;
    Client::new(&server.url, token).map_err(failure)
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Text from the server, safe for a terminal.
fn t(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => terminal_safe(s).into_owned(),
        other => terminal_safe(&other.to_string()).into_owned(),
    }
}

/// Module text inside a question, each line behind a margin, so it cannot
/// pass for the host's own header or choices.
fn quoted(v: &Value) -> String {
    t(v).lines()
        .map(|l| format!("│ {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module text that must stay on one line (a label).
fn one_line(v: &Value) -> String {
    t(v).replace('\n', "\\n")
}

fn time(ms: &Value) -> String {
    let Some(ms) = ms.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "interrupted")
}

fn outcome_code(status: &str) -> ExitCode {
    if status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    }
}

#[derive(Subcommand, Debug)]
pub enum TasksCommand {
    /// Your tasks across modules, newest first (an admin: --org for the
    /// organization's).
    #[command(
        after_help = "Examples:\n  modhost tasks list --status running,waiting-confirmation\n  modhost tasks list --module reports --limit 5 --json"
    )]
    List {
        #[arg(long)]
        module: Option<String>,
        /// Comma-separated statuses.
        #[arg(long)]
        status: Option<String>,
        /// Task name.
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        key_prefix: Option<String>,
        /// 1..=200.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Every user's tasks of your organization (admins).
        #[arg(long)]
        org: bool,
        #[arg(long)]
        json: bool,
    },
    /// One task: status, progress, checkpoint, result, its question, timeline.
    #[command(
        after_help = "Examples:\n  modhost tasks show 01a2...\n  modhost tasks show 01a2... --follow"
    )]
    Show {
        id: String,
        /// Follow it live until it ends.
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a pending or running task.
    #[command(after_help = "Example:\n  modhost tasks cancel 01a2...")]
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Answer the question a task waits for (asked in the terminal without
    /// --button).
    #[command(
        after_help = "Examples:\n  modhost tasks confirm 01a2... --button yes\n  modhost tasks confirm 01a2... --button ok --values '{\"drafts\": [\"a\"]}'\n  modhost tasks confirm 01a2...   # shows the question and asks"
    )]
    Confirm {
        id: String,
        /// The id of the button to press.
        #[arg(long)]
        button: Option<String>,
        /// Picked choices, as JSON: {"<choices name>": ["<choice id>", ...]}.
        #[arg(long, default_value = "{}")]
        values: String,
        /// The `asked_at` of the question you mean (from `tasks show
        /// --json`): refused if the task asked again since. Without it, the
        /// open question is answered.
        #[arg(long)]
        asked_at: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[arg(long)]
    module: Option<String>,
    /// subprocess, http, filesystem, task or confirmation.
    #[arg(long)]
    capability: Option<String>,
    /// allowed, denied, invalid or limited.
    #[arg(long)]
    decision: Option<String>,
    /// Another user's records (admins).
    #[arg(long)]
    user: Option<String>,
    /// The `next_before` of the previous page.
    #[arg(long)]
    before: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this task's events.
    #[arg(long)]
    task: Option<String>,
    /// Only this module's events.
    #[arg(long)]
    module: Option<String>,
    /// Every user's events of your organization (admins).
    #[arg(long)]
    org: bool,
    /// Resume after this event id.
    #[arg(long)]
    after: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn push(q: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<String>) {
    if let Some(v) = v {
        q.push((key, v));
    }
}

/// `modhost call` against a server.
pub async fn call(
    server: &Server,
    module: &str,
    action: &str,
    args: &str,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    serde_json::from_str::<Value>(args)
        .map_err(|e| usage(format!("--json is not valid JSON: {e}")))?;
    let c = client(server)?;
    let out = c
        .call_action(module, action, args)
        .await
        .map_err(work_failure)?;
    if !follow {
        print_json(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let task = out["effects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["type"] == "show-task")
        .and_then(|e| e["task_id"].as_str())
        .or_else(|| out["data"]["id"].as_str())
        .map(str::to_owned);
    let Some(task) = task else {
        print_json(&out)?;
        return Err(usage("--follow: the action started no task"));
    };
    eprintln!("following task {task}");
    follow_task(&c, &task).await
}

/// `modhost tasks ...`.
pub async fn tasks(server: &Server, command: TasksCommand) -> anyhow::Result<ExitCode> {
    let c = client(server)?;
    match command {
        TasksCommand::List {
            module,
            status,
            task,
            key_prefix,
            limit,
            cursor,
            org,
            json,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            push(&mut q, "module", module);
            push(&mut q, "status", status);
            push(&mut q, "task", task);
            push(&mut q, "key_prefix", key_prefix);
            push(&mut q, "cursor", cursor);
            if org {
                q.push(("scope", "organization".into()));
            }
            let page = c.tasks(&q).await.map_err(failure)?;
            if json {
                print_json(&page)?;
            } else {
                print_task_list(&page);
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Show { id, follow, json } => {
            if follow {
                return follow_task(&c, &id).await;
            }
            let task = c.task(&id).await.map_err(failure)?;
            if json {
                print_json(&task)?;
            } else {
                print_task(&task);
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Cancel { id, json } => {
            let out = c.cancel(&id).await.map_err(failure)?;
            if json {
                print_json(&out)?;
            } else {
                println!("cancelled {}", t(&out["id"]));
            }
            Ok(ExitCode::SUCCESS)
        }
        TasksCommand::Confirm {
            id,
            button,
            values,
            asked_at: meant,
            json,
        } => {
            let task = c.task(&id).await.map_err(failure)?;
            let confirmation = &task["confirmation"];
            if task["status"] != "waiting-confirmation" || confirmation.is_null() {
                return Err(usage(format!(
                    "task {id} is {} and asks nothing",
                    t(&task["status"])
                )));
            }
            let asked_at = meant.or(confirmation["asked_at"].as_i64());
            let (button, values) = match button {
                Some(b) => {
                    let v = serde_json::from_str(&values)
                        .map_err(|e| usage(format!("--values is not valid JSON: {e}")))?;
                    (b, v)
                }
                None => ask_in_terminal(&task, &confirmation["surface"])?,
            };
            let out = c
                .confirm(&id, &button, values, asked_at)
                .await
                .map_err(failure)?;
            if json {
                print_json(&out)?;
            } else {
                println!(
                    "answered {id} ({}): {}",
                    one_line(&confirmation["surface"]["title"]),
                    one_line(&Value::from(button))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_task_list(page: &Value) {
    let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
    if tasks.is_empty() {
        println!("no tasks");
    }
    for task in &tasks {
        let name = if task["title"].is_null() {
            &task["task_name"]
        } else {
            &task["title"]
        };
        let pct = task["progress"].as_f64().unwrap_or(0.0) * 100.0;
        println!(
            "{}  {:<20} {:<21} {pct:>3.0}%  {}{}",
            t(&task["id"]),
            t(&task["module"]),
            t(&task["status"]),
            t(name),
            match t(&task["label"]) {
                l if l.is_empty() => String::new(),
                l => format!(" — {l}"),
            }
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        println!("more: --cursor {}", terminal_safe(next));
    }
}

fn print_task(task: &Value) {
    let line = |k: &str, v: String| {
        if !v.is_empty() {
            println!("{k:<12} {v}");
        }
    };
    line("id", t(&task["id"]));
    line("title", t(&task["title"]));
    line(
        "task",
        format!("{} · {}", t(&task["module"]), t(&task["task_name"])),
    );
    line("status", t(&task["status"]));
    line(
        "progress",
        format!(
            "{:.0}% {}",
            task["progress"].as_f64().unwrap_or(0.0) * 100.0,
            t(&task["label"])
        ),
    );
    line(
        "owner",
        format!("{}@{}", t(&task["user_id"]), t(&task["organization_id"])),
    );
    line("key", t(&task["task_key"]));
    for field in ["checkpoint", "result"] {
        if !task[field].is_null() {
            line(field, t(&task[field]));
        }
    }
    if !task["failure"].is_null() {
        line(
            "failure",
            format!(
                "{}: {}",
                t(&task["failure"]["kind"]),
                t(&task["failure"]["message"])
            ),
        );
    }
    if !task["confirmation"].is_null() {
        line("question", t(&task["confirmation"]["surface"]["title"]));
    }
    println!("timeline");
    for m in task["timeline"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<22} {}",
            time(&m["at"]),
            t(&m["event"]),
            t(&m["detail"])
        );
    }
}

/// Shows a question and reads the answer: a button by number or id, and
/// for each set of choices the picked option ids.
fn ask_in_terminal(task: &Value, surface: &Value) -> anyhow::Result<(String, Value)> {
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "the task asks a question and stdin is not a terminal: pass --button",
        ));
    }
    let mut err = std::io::stderr();
    writeln!(
        err,
        "\n── modhost: module `{}` asks ──",
        one_line(&task["module"])
    )?;
    writeln!(err, "{}", quoted(&surface["title"]))?;
    let mut buttons = Vec::new();
    let mut choices = Vec::new();
    for c in surface["components"].as_array().into_iter().flatten() {
        match c["type"].as_str().unwrap_or("") {
            "text" => writeln!(err, "{}", quoted(&c["text"]))?,
            "markdown" => writeln!(err, "{}", quoted(&c["markdown"]))?,
            "key-value" => {
                for pair in c["pairs"].as_array().into_iter().flatten() {
                    writeln!(err, "│   {}: {}", one_line(&pair[0]), one_line(&pair[1]))?;
                }
            }
            "divider" => writeln!(err, "│ ────")?,
            "task-card" => writeln!(err, "│ (task {})", one_line(&c["task_id"]))?,
            "buttons" => buttons.extend(c["buttons"].as_array().cloned().unwrap_or_default()),
            "choices" => choices.push(c.clone()),
            _ => {}
        }
    }
    let stdin = std::io::stdin();
    let mut read = |prompt: &str| -> anyhow::Result<String> {
        write!(err, "{prompt}")?;
        err.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Err(usage("no answer: stdin ended"));
        }
        Ok(line.trim().to_owned())
    };
    let mut values = serde_json::Map::new();
    for c in &choices {
        let options = c["options"].as_array().cloned().unwrap_or_default();
        eprintln!("{}:", one_line(&c["name"]));
        for (i, o) in options.iter().enumerate() {
            eprintln!("  {}) {}", i + 1, one_line(&o["label"]));
        }
        let picked = read(if c["multiple"] == true {
            "pick (numbers, comma-separated): "
        } else {
            "pick (a number): "
        })?;
        let ids: Vec<Value> = picked
            .split(',')
            .filter_map(|n| n.trim().parse::<usize>().ok())
            .filter_map(|n| options.get(n.wrapping_sub(1)))
            .map(|o| o["id"].clone())
            .collect();
        values.insert(
            c["name"].as_str().unwrap_or("").to_owned(),
            Value::Array(ids),
        );
    }
    if buttons.is_empty() {
        buttons.push(serde_json::json!({"id": "ok", "label": "OK"}));
    }
    for (i, b) in buttons.iter().enumerate() {
        eprintln!("  {}) {}", i + 1, one_line(&b["label"]));
    }
    loop {
        let answer = read("answer (a number): ")?;
        let pressed = answer
            .parse::<usize>()
            .ok()
            .and_then(|n| buttons.get(n.wrapping_sub(1)))
            .or_else(|| buttons.iter().find(|b| b["id"] == answer.as_str()));
        if let Some(b) = pressed {
            return Ok((
                b["id"].as_str().unwrap_or("").to_owned(),
                Value::Object(values),
            ));
        }
        eprintln!("no such button");
    }
}

/// Follows a task with a progress bar until it ends; asks its questions in
/// the terminal; prints the final task as JSON and exits with its outcome.
async fn follow_task(c: &Client, id: &str) -> anyhow::Result<ExitCode> {
    // Subscribe first, then read the task: nothing that happens in between
    // is missed. An admin following another user's task watches with the
    // organization's scope (the task read says whose it is).
    let me = c.whoami().await.map_err(failure)?;
    let owner = c.task(id).await.map_err(failure)?["user_id"].clone();
    let mut query = vec![("task", id.to_owned())];
    if me["role"] == "admin" && owner != me["user_id"] {
        query.push(("scope", "organization".to_owned()));
    }
    let mut stream = c.events(&query, None).await.map_err(failure)?;
    let mut task = c.task(id).await.map_err(failure)?;
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let show = |task: &Value| {
        set_progress(&bar, task["progress"].as_f64(), &task["label"]);
        bar.set_prefix(t(&task["status"]));
    };
    show(&task);
    let mut asked: Option<i64> = None;
    let mut last_id = None;
    loop {
        let status = task["status"].as_str().unwrap_or("").to_owned();
        if is_final(&status) {
            break;
        }
        if status == "waiting-confirmation" {
            let at = task["confirmation"]["asked_at"].as_i64();
            if at.is_some() && asked != at {
                asked = at;
                answer_live(c, &bar, id, &task).await?;
            }
        }
        let next = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
        match next {
            // No event in a while: read the task again (the stream may have
            // been cut by a proxy without us noticing).
            Err(_) => task = c.task(id).await.map_err(failure)?,
            Ok(Ok(Some(event))) => {
                last_id = event.id.or(last_id);
                if apply(&bar, &event) {
                    task = c.task(id).await.map_err(failure)?;
                    show(&task);
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                stream = c.events(&query, last_id).await.map_err(failure)?;
                task = c.task(id).await.map_err(failure)?;
                show(&task);
            }
        }
    }
    let status = task["status"].as_str().unwrap_or("").to_owned();
    set_progress(&bar, task["progress"].as_f64(), &task["label"]);
    bar.finish_with_message(format!("{status} {}", t(&task["label"])));
    print_json(&task)?;
    Ok(outcome_code(&status))
}

fn set_progress(bar: &ProgressBar, progress: Option<f64>, label: &Value) {
    if let Some(p) = progress {
        let pos = (p.clamp(0.0, 1.0) * 1000.0).round();
        // 0..=1000 after the clamp.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to 0..=1000"
        )]
        bar.set_position(pos as u64);
    }
    if !label.is_null() {
        bar.set_message(t(label));
    }
}

/// Moves the bar for one event; true when the task should be read again
/// (its status changed or it asks something).
fn apply(bar: &ProgressBar, event: &ServerEvent) -> bool {
    match event.event.as_str() {
        "progress" => {
            set_progress(bar, event.data["progress"].as_f64(), &event.data["label"]);
            false
        }
        "status"
        | "confirmation-asked"
        | "confirmation-answered"
        | "confirmation-timed-out"
        | "reload" => true,
        _ => false,
    }
}

async fn answer_live(c: &Client, bar: &ProgressBar, id: &str, task: &Value) -> anyhow::Result<()> {
    let surface = task["confirmation"]["surface"].clone();
    if !std::io::stdin().is_terminal() {
        bar.suspend(|| {
            eprintln!(
                "the task asks: {} — answer with `modhost tasks confirm {id} --button ...`",
                t(&surface["title"])
            );
        });
        return Ok(());
    }
    let answer = bar.suspend(|| ask_in_terminal(task, &surface))?;
    let asked_at = task["confirmation"]["asked_at"].as_i64();
    if let Err(e) = c.confirm(id, &answer.0, answer.1, asked_at).await {
        bar.suspend(|| eprintln!("the answer was refused: {}", terminal_safe(&e.to_string())));
    }
    Ok(())
}

/// `modhost audit`.
pub async fn audit(server: &Server, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let c = client(server)?;
    let mut q = vec![("limit", a.limit.to_string())];
    push(&mut q, "module", a.module);
    push(&mut q, "capability", a.capability);
    push(&mut q, "decision", a.decision);
    push(&mut q, "user", a.user);
    push(&mut q, "before", a.before);
    let page = c.audit(&q).await.map_err(failure)?;
    if a.json {
        print_json(&page)?;
        return Ok(ExitCode::SUCCESS);
    }
    let records = page["records"].as_array().cloned().unwrap_or_default();
    if records.is_empty() {
        println!("no records");
    }
    for r in &records {
        println!(
            "{}  {:<12} {:<12} {:<12} {:<8} {}{}",
            time(&r["at"]),
            t(&r["module"]),
            t(&r["user_id"]),
            t(&r["capability"]),
            t(&r["decision"]),
            audited_what(r),
            match t(&r["reason"]) {
                s if s.is_empty() => String::new(),
                s => format!("  ({s})"),
            }
        );
    }
    if let Some(next) = page["next_before"].as_str() {
        println!("more: --before {}", terminal_safe(next));
    }
    Ok(ExitCode::SUCCESS)
}

/// The most records `manifest suggest` reads: the newest, which say what
/// the module does now.
const MAX_SUGGEST_RECORDS: usize = 20_000;

/// `modhost manifest suggest`: the module's records, newest first, page by
/// page, then the grants they need.
pub async fn suggest(
    server: &Server,
    module: &str,
    dir: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let c = client(server)?;
    let mut records = Vec::new();
    let mut before: Option<String> = None;
    while records.len() < MAX_SUGGEST_RECORDS {
        let mut q = vec![("module", module.to_owned()), ("limit", "500".to_owned())];
        push(&mut q, "before", before.take());
        let page = c.audit(&q).await.map_err(failure)?;
        for r in page["records"].as_array().into_iter().flatten() {
            // A record of a kind this client does not know is skipped.
            if let Ok(r) = serde_json::from_value::<modhost::audit::AuditRecord>(r.clone()) {
                records.push(r);
            }
        }
        match page["next_before"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    let suggestion = modhost::learn::suggest(&records);
    let changes = match dir {
        Some(dir) => {
            let manifest =
                modhost::manifest::load_dir(dir, &modhost::manifest::LoadEnv::host_default())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            suggestion.changes(&records, &manifest.policy)
        }
        None => Vec::new(),
    };
    if json {
        print_json(&serde_json::json!({
            "records": records.len(),
            "toml": suggestion.to_toml(),
            "skipped": suggestion.skipped,
            "changes": changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "# the grants {} of `{module}`'s audit records need",
        records.len()
    );
    // TOML with every control and format character escaped.
    print!("{}", suggestion.to_toml());
    if suggestion.skipped > 0 {
        println!(
            "# {} subprocess records not learned from: an argument the grammar cannot hold as a literal",
            suggestion.skipped
        );
    }
    if dir.is_some() {
        println!();
        if changes.is_empty() {
            println!("# the manifest grants exactly this");
        }
        for change in &changes {
            println!("{}", terminal_safe(&change.to_string()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an audit record was about, in one line: a subprocess's argv, an
/// HTTP request's method, URL and status, a file operation and its path,
/// a task's name and key, a confirmation's button.
fn audited_what(r: &Value) -> String {
    let d = &r["detail"];
    let subject = t(&r["subject"]);
    match r["capability"].as_str().unwrap_or("") {
        "subprocess" => std::iter::once(subject)
            .chain(d["args"].as_array().into_iter().flatten().map(t))
            .collect::<Vec<_>>()
            .join(" "),
        "http" => {
            let status = d["status"]
                .as_u64()
                .map(|s| format!(" → {s}"))
                .unwrap_or_default();
            format!("{} {subject}{status}", t(&d["method"]))
        }
        "filesystem" => format!("{} {subject} ({})", t(&d["operation"]), t(&d["error"])),
        "task" => match d["task_key"].as_str() {
            Some(key) => format!("{subject} key {}", terminal_safe(key)),
            None => subject,
        },
        "confirmation" => format!("{subject}: {}", t(&d["answer"])),
        _ => subject,
    }
}

/// `modhost events`: until interrupted; reconnects after the last id.
pub async fn events(server: &Server, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let c = client(server)?;
    let mut q = Vec::new();
    push(&mut q, "task", a.task);
    push(&mut q, "module", a.module);
    if a.org {
        q.push(("scope", "organization".into()));
    }
    let mut last = a.after;
    let mut stream = c.events(&q, last).await.map_err(failure)?;
    loop {
        match stream.next().await {
            Ok(Some(e)) => {
                last = e.id.or(last);
                if a.json {
                    println!("{}", e.data);
                } else {
                    println!(
                        "{} {:<22} {}",
                        e.id.map_or_else(|| "-".into(), |i| i.to_string()),
                        terminal_safe(&e.event),
                        summary(&e.data)
                    );
                }
            }
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(err) => {
                eprintln!(
                    "stream interrupted ({}); reconnecting",
                    terminal_safe(&err.to_string())
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                stream = c.events(&q, last).await.map_err(failure)?;
            }
        }
    }
}

fn summary(d: &Value) -> String {
    let who = format!(
        "{}@{} {}",
        t(&d["user_id"]),
        t(&d["organization_id"]),
        t(&d["module"])
    );
    let task = t(&d["task_id"]);
    let what = match d["type"].as_str().unwrap_or("") {
        "task-created" => format!("created {}", t(&d["task_name"])),
        "status" => t(&d["status"]),
        "progress" => format!(
            "{:.0}% {}",
            d["progress"].as_f64().unwrap_or(0.0) * 100.0,
            t(&d["label"])
        ),
        "confirmation-asked" => format!("asks: {}", t(&d["title"])),
        "confirmation-answered" => {
            format!("answered {} by {}", t(&d["button"]), t(&d["answered_by"]))
        }
        "confirmation-timed-out" => "question timed out".into(),
        "subprocess" => format!(
            "{} {} {}",
            t(&d["decision"]),
            t(&d["program"]),
            t(&d["reason"])
        ),
        "reload" => t(&d["reason"]),
        _ => t(d),
    };
    format!("{task} {who}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(time(&Value::from(0)), "1970-01-01 00:00:00Z");
        assert_eq!(
            time(&Value::from(1_764_590_400_000_i64)),
            "2025-12-01 12:00:00Z"
        );
    }

    #[test]
    fn refusals_map_to_exit_codes_that_tell_usage_auth_and_server_apart() {
        assert_eq!(code_for_status(400), USAGE);
        assert_eq!(code_for_status(404), USAGE);
        assert_eq!(code_for_status(401), AUTH);
        assert_eq!(code_for_status(403), AUTH);
        assert_eq!(code_for_status(429), UNAVAILABLE);
        assert_eq!(code_for_status(500), UNAVAILABLE);
    }
}
