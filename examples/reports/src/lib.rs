//! A monthly report built page by page in the background.
//!
//! `start` submits the task under the key `reports.monthly.<month>`, so a
//! second click while it runs returns the same task. The task stores a
//! checkpoint after every page and asks the user halfway whether to include
//! drafts; it is resumable, so after a host restart it continues from its
//! last page, and a confirmation answered before or after the restart is not
//! asked twice.

use std::time::Duration;

use module_sdk::prelude::*;
use module_sdk::serde_json::json;
use module_sdk::tasks::Confirmation;
use module_sdk::ui::{Builder, Style};

module_sdk::module! {
    actions: {
        "start" => start: "Build the report of a month: {month: \"2026-11\"}",
        "status" => status: "The newest report task of a month: {month}",
        "recent" => recent: "Report tasks, newest first",
    },
    tasks: {
        "reports.monthly" => monthly: "Build the monthly report",
    },
}

/// Pages in a report.
const PAGES: u32 = 10;
/// The page after which the user is asked about drafts.
const ASK_AT: u32 = 5;
/// What a page takes at least: rendering stands for real work (queries,
/// layout), so a person watching sees the report advance page by page.
const PAGE_MS: u64 = 200;

#[derive(Deserialize, Serialize)]
struct Month {
    month: String,
}

#[derive(Deserialize, Serialize, Default)]
struct Progress {
    next_page: u32,
    include_drafts: Option<bool>,
    total: u64,
}

#[derive(Serialize)]
struct Report {
    month: String,
    pages: u32,
    include_drafts: bool,
    total: u64,
}

fn key(month: &str) -> String {
    format!("reports.monthly.{month}")
}

/// Some deterministic work per page.
fn render_page(month: &str, page: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in month.bytes().chain(page.to_le_bytes()).cycle().take(2_000_000) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h % 1000
}

fn monthly(args: Month) -> Result<Report> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let mut state: Progress = context::checkpoint()?.unwrap_or_default();
    while state.next_page < PAGES {
        if state.next_page == ASK_AT && state.include_drafts.is_none() {
            let surface = Builder::new(format!("Include drafts in the {} report?", args.month))
                .text("Drafts are documents not yet approved.")
                .button("yes", "Include drafts", Style::Primary)
                .button("no", "Leave them out", Style::Secondary)
                .build();
            let include = match tasks::request_confirmation(surface, Some(Duration::from_secs(3600)))? {
                Confirmation::Answered(a) => a.button == "yes",
                Confirmation::TimedOut => false,
            };
            state.include_drafts = Some(include);
        }
        std::thread::sleep(Duration::from_millis(PAGE_MS));
        state.total += render_page(&args.month, state.next_page);
        state.next_page += 1;
        let label = format!("page {} of {PAGES}", state.next_page);
        tasks::update_progress(&id, f64::from(state.next_page) / f64::from(PAGES), Some(&label), Some(&state))?;
    }
    Ok(Report {
        month: args.month,
        pages: PAGES,
        include_drafts: state.include_drafts.unwrap_or(false),
        total: state.total,
    })
}

fn start(args: Month) -> Result<ActionResult> {
    let opts = BackgroundOptions::new()
        .key(key(&args.month))
        .title(format!("Monthly report {}", args.month))
        .resumable(true);
    let id = tasks::run_background("reports.monthly", &args, opts)?;
    Ok(ActionResult::data(&json!({ "id": id }))?.show_task(id))
}

fn status(args: Month) -> Result<ActionResult> {
    let newest = tasks::get_tasks_by_key(&key(&args.month))?.into_iter().next();
    ActionResult::data(&newest)
}

fn recent() -> Result<ActionResult> {
    ActionResult::data(&tasks::get_tasks_by_key_prefix("reports.monthly.", 20)?)
}
