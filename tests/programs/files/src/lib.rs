//! Tries file operations its caller lists, each on paths of the caller's
//! choosing, and reports what WASI answered: the filesystem attacks of the
//! adversarial tests (traversal, links, renames, long names, another
//! tenant's or the host's files) are lists sent through it.

use module_sdk::prelude::*;
use serde_json::{Value, json};

module_sdk::module! {
    actions: {
        "try" => try_ops: "Run [{op, path, to?, text?}] and return one outcome per op",
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Op {
    op: String,
    path: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ops {
    ops: Vec<Op>,
}

fn outcome(r: std::io::Result<Value>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => json!({ "error": e.kind().to_string() }),
    }
}

fn one(op: &Op) -> std::io::Result<Value> {
    let to = || {
        op.to
            .clone()
            .ok_or_else(|| std::io::Error::other("`to` is missing"))
    };
    Ok(match op.op.as_str() {
        "read" => json!(String::from_utf8_lossy(&std::fs::read(&op.path)?)),
        "write" => {
            std::fs::write(&op.path, op.text.as_deref().unwrap_or("x"))?;
            json!(true)
        }
        "append" => {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&op.path)?
                .write_all(op.text.as_deref().unwrap_or("x").as_bytes())?;
            json!(true)
        }
        "mkdir" => {
            std::fs::create_dir_all(&op.path)?;
            json!(true)
        }
        "remove" => {
            std::fs::remove_file(&op.path)?;
            json!(true)
        }
        "rename" => {
            std::fs::rename(&op.path, to()?)?;
            json!(true)
        }
        "hardlink" => {
            std::fs::hard_link(&op.path, to()?)?;
            json!(true)
        }
        "list" => {
            let mut names: Vec<String> = std::fs::read_dir(&op.path)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            json!(names)
        }
        "stat" => json!(std::fs::metadata(&op.path)?.len()),
        "readlink" => json!(std::fs::read_link(&op.path)?.display().to_string()),
        other => return Err(std::io::Error::other(format!("unknown op `{other}`"))),
    })
}

fn try_ops(ops: Ops) -> Result<ActionResult> {
    let outcomes: Vec<Value> = ops.ops.iter().map(|op| outcome(one(op))).collect();
    ActionResult::data(&outcomes)
}
