//! Downloads a file in a background task: the body streams into the
//! organization's data directory through the SDK's `http` client, with
//! persisted progress, and is checked against a SHA-256 when one is given.

use module_sdk::http;
use module_sdk::prelude::*;
use sha2::{Digest, Sha256};

module_sdk::module! {
    actions: {
        "download" => download: "Start downloading {url, name, sha256?} into downloads/NAME; returns the task id",
    },
    tasks: {
        "download" => run: "Download a file, with progress, and check its SHA-256",
    },
}

/// Progress is persisted at most this often: every 2% of a file whose
/// length is known.
const STEPS: u64 = 50;

#[derive(Debug, Serialize, Deserialize)]
struct Download {
    url: String,
    /// The file name under `downloads/`: letters, digits, `.`, `-`, `_`.
    name: String,
    /// The expected SHA-256, in hex; a mismatch removes the file.
    sha256: Option<String>,
}

#[derive(Debug, Serialize)]
struct Downloaded {
    path: String,
    bytes: u64,
    sha256: String,
}

fn checked_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid_input(
            "name: 1 to 128 letters, digits, `.`, `-` or `_`, not starting with `.`",
        ))
    }
}

fn download(d: Download) -> Result<ActionResult> {
    checked_name(&d.name)?;
    let options = BackgroundOptions::new()
        .key(format!("download:{}", d.name))
        .title(format!("Download {}", d.name));
    let id = tasks::run_background("download", &d, options)?;
    ActionResult::data(&module_sdk::serde_json::json!({ "task_id": id }))
        .map(|r| r.toast(ToastLevel::Info, format!("downloading {}", d.name)))
}

fn run(d: Download) -> Result<Downloaded> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let name = checked_name(&d.name)?;
    std::fs::create_dir_all("/data/downloads")?;
    let path = format!("/data/downloads/{name}");
    let response = http::get(d.url.as_str()).send()?;
    if response.status() != 200 {
        return Err(Error::internal(format!(
            "{} answered {}",
            response.url(),
            response.status()
        )));
    }
    let mut hasher = Sha256::new();
    let mut next = 0u64;
    let bytes = response.save(&path, |p: http::Progress| {
        hasher.update(p.chunk);
        if let Some(total) = p.total.filter(|t| *t > 0)
            && p.done >= next
        {
            next = p.done + total / STEPS;
            let label = format!("{} of {} MiB", p.done >> 20, total >> 20);
            let fraction = p.done as f64 / total as f64;
            let _ = tasks::update_progress::<()>(&id, fraction.min(1.0), Some(&label), None);
        }
    })?;
    let sha256 = hex::encode(hasher.finalize());
    if let Some(expected) = &d.sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        let _ = std::fs::remove_file(&path);
        return Err(Error::invalid_input(format!(
            "the SHA-256 of {} is {sha256}, not {expected}: the file was removed",
            d.url
        )));
    }
    Ok(Downloaded {
        path: format!("downloads/{name}"),
        bytes,
        sha256,
    })
}
