//! A git repository kept in the module's data directory and driven only
//! through the command lines its manifest grants: `git init`, an empty
//! commit with a message, and two read-only queries (`log -1 --format=%at`
//! and `rev-list --count HEAD`). Every call is a `run-subprocess` the host
//! checks, confines and audits.

use module_sdk::prelude::*;
use module_sdk::tasks::{Command, Output};
use serde_json::json;

module_sdk::module! {
    actions: {
        "note" => note: "Record {message} as an empty commit (creates the repository on first use)",
        "stats" => stats: "How many commits, and when the last one was made",
    },
}

/// Runs `git` with `args` and returns its output, or an error carrying
/// git's own message.
fn git(args: &[&str]) -> Result<Output> {
    let who = context::current();
    let email = format!("{}@{}.modhost", who.user_id, who.organization_id);
    let out = Command::new("git")
        .args(args.iter().copied())
        .env("GIT_AUTHOR_NAME", who.user_id.as_str())
        .env("GIT_AUTHOR_EMAIL", email.as_str())
        .env("GIT_COMMITTER_NAME", who.user_id.as_str())
        .env("GIT_COMMITTER_EMAIL", email.as_str())
        .run()?;
    if !out.success() {
        return Err(Error::internal(format!(
            "git {} failed ({}): {}",
            args.first().copied().unwrap_or(""),
            out.status,
            out.stderr_lossy().trim()
        )));
    }
    Ok(out)
}

fn has_repo() -> bool {
    std::path::Path::new("/data/repo/.git").is_dir()
}

#[derive(Deserialize)]
struct Note {
    message: String,
}

fn note(args: Note) -> Result<ActionResult> {
    if args.message.trim().is_empty() {
        return Err(Error::invalid_input("message is empty"));
    }
    if !has_repo() {
        git(&["init", "-q", "repo"])?;
    }
    git(&["-C", "repo", "commit", "-q", "--allow-empty", "-m", &args.message])?;
    stats()
}

fn stats() -> Result<ActionResult> {
    if !has_repo() {
        return ActionResult::data(&json!({ "commits": 0, "last_commit_at": null }));
    }
    let count = git(&["-C", "repo", "rev-list", "--count", "HEAD"])?;
    let last = git(&["-C", "repo", "log", "-1", "--format=%at"])?;
    let commits: u64 = count.stdout_lossy().trim().parse().unwrap_or(0);
    let last_commit_at: Option<u64> = last.stdout_lossy().trim().parse().ok();
    ActionResult::data(&json!({ "commits": commits, "last_commit_at": last_commit_at }))
}
