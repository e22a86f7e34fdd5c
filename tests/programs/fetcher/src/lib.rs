//! Sends whatever outbound request its caller describes through the SDK's
//! `http` client and reports what came back: the grants and attacks of the
//! network tests are requests sent through it.

use std::time::Duration;

use module_sdk::http;
use module_sdk::prelude::*;
use serde_json::{Value, json};

module_sdk::module! {
    actions: {
        "send" => send: "Send a request: {url, method?, body?, headers?, max_redirects?, timeout_ms?, stall_ms?}",
        "hold" => hold: "Open `n` requests to `url` and keep them all open; report how many were answered",
        "download" => download: "Save `url` to the data directory as `name` in a background task",
        "repeat" => repeat: "GET `url` `n` times, reading each body; report the bytes read",
        "save" => save: "Save `url` to the data directory as `name`, in the action",
    },
    tasks: {
        "download" => download_in_task: "Save a URL into the data directory, with progress",
    },
}

#[derive(Debug, Deserialize)]
struct Send {
    url: String,
    method: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    max_redirects: Option<u32>,
    timeout_ms: Option<u64>,
    stall_ms: Option<u64>,
}

fn send(r: Send) -> Result<ActionResult> {
    let mut req = http::request(r.method.as_deref().unwrap_or("GET"), r.url);
    for (k, v) in r.headers {
        req = req.header(k, v);
    }
    if let Some(b) = r.body {
        req = req.body(b);
    }
    if let Some(n) = r.max_redirects {
        req = req.max_redirects(n);
    }
    if let Some(ms) = r.timeout_ms {
        req = req.timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = r.stall_ms {
        req = req.stall_timeout(Duration::from_millis(ms));
    }
    let response = req.send()?;
    let status = response.status();
    let url = response.url();
    let kind = response.header("content-type");
    let body = response.bytes()?;
    ActionResult::data(&json!({
        "status": status,
        "url": url,
        "content_type": kind,
        "len": body.len(),
        "body": String::from_utf8_lossy(&body[..body.len().min(4096)]),
    }))
}

#[derive(Debug, Deserialize)]
struct Hold {
    url: String,
    n: u32,
}

fn hold(r: Hold) -> Result<ActionResult> {
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..r.n {
        match http::get(r.url.as_str()).send() {
            Ok(response) => open.push(response),
            Err(e) => {
                refused = Some(module_sdk::Error::from(e));
                break;
            }
        }
    }
    let answered = open.len();
    drop(open);
    // Every place is given back once the responses are dropped.
    let again = http::get(r.url.as_str()).send().is_ok();
    ActionResult::data(&json!({
        "answered": answered,
        "refused": refused.map(|e| serde_json::to_value(e).unwrap_or(Value::Null)),
        "again": again,
    }))
}

#[derive(Debug, Deserialize)]
struct Repeat {
    url: String,
    n: u32,
}

fn repeat(r: Repeat) -> Result<ActionResult> {
    let mut bytes = 0;
    for _ in 0..r.n {
        let response = http::get(r.url.as_str()).send()?;
        if response.status() != 200 {
            return Err(Error::internal(format!(
                "{} answered {}",
                r.url,
                response.status()
            )));
        }
        bytes += response.bytes()?.len();
    }
    ActionResult::data(&json!({ "n": r.n, "bytes": bytes }))
}

fn save(d: Download) -> Result<ActionResult> {
    let path = format!("/data/{}", d.name);
    let bytes = http::get(d.url.as_str()).send()?.save(&path, |_| {})?;
    ActionResult::data(&json!({ "bytes": bytes }))
}

#[derive(Debug, Serialize, Deserialize)]
struct Download {
    url: String,
    name: String,
}

fn download(d: Download) -> Result<ActionResult> {
    let id = tasks::run_background("download", &d, tasks::BackgroundOptions::default())?;
    ActionResult::data(&json!({ "task_id": id }))
}

fn download_in_task(d: Download) -> Result<Value> {
    let id = context::current_task().ok_or_else(|| Error::internal("not in a task"))?;
    let response = http::get(d.url.as_str()).send()?;
    let path = format!("/data/{}", d.name);
    let mut reported = 0u64;
    let bytes = response.save(&path, |p: http::Progress| {
        let done = p.done;
        if let Some(total) = p.total.filter(|t| *t > 0)
            && done - reported >= total / 4
        {
            reported = done;
            let fraction = done as f64 / total as f64;
            let label = format!("{done} of {total} bytes");
            let _ = tasks::update_progress::<()>(&id, fraction, Some(&label), None);
        }
    })?;
    Ok(json!({ "bytes": bytes, "path": path }))
}
