//! Adversarial file access from a real guest (`files`): a corpus of paths
//! that try to leave the module's data directory — climbing, absolute,
//! encoded, through planted symlinks, by hard link or rename, with very
//! long names — tried as reads, writes, directory creation, listings, links
//! and renames. Nothing outside the caller's own organization directory may
//! be read, and nothing outside it may be created or changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use modhost_tests::*;
use serde_json::{Value, json};

/// Text of files the guest must never see.
const HOST_SECRET: &str = "the host's own secret";
const TENANT_SECRET: &str = "globex's own notes";

/// Paths that lead, or try to lead, out of `/data`.
fn escapes() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/self/root/etc/passwd",
        "/",
        "/tmp",
        "/data/..",
        "/data/../..",
        "/data/../../..",
        "/data/../secret",
        "/data/../../secret",
        "/data/../../../secret",
        "/data/../../modhost.db",
        "/data/../../../modhost.db",
        "/data/../org-globex/notes.txt",
        "/data/./../org-globex/notes.txt",
        "/data//../org-globex/notes.txt",
        "/data/a/../../org-globex/notes.txt",
        "/data/../../../../../../../../../../etc/passwd",
        "//data/../secret",
        "/./data/../secret",
        "/data/./././../secret",
        "/data/%2e%2e/secret",
        "/data/..%2f..%2fsecret",
        "/data/..\\..\\secret",
        "/data/\u{2025}/secret",
        "/data/\u{ff0e}\u{ff0e}/secret",
        "/data/..\u{2215}..\u{2215}secret",
        "/data/up/secret",
        "/data/up/data/files/org-globex/notes.txt",
        "/data/up/modhost.db",
        "/data/root/etc/passwd",
        "/data/root/proc/self/environ",
        "/data/tenant/notes.txt",
        "/data/loop/x",
        "/data/chain/secret",
        "/data/dangling",
        "..",
        "../secret",
        "../org-globex/notes.txt",
        "data/../../secret",
        "secret",
        "org-globex/notes.txt",
        "/DATA/../secret",
        "/data\u{0}/../secret",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    paths.push(format!("/data/{}", "x".repeat(300)));
    paths.push(format!("/data/{}secret", "../".repeat(64)));
    paths.push(format!("/data/{}", "a/".repeat(2048)));
    paths
}

/// The files guest, with the traps an attacker's earlier child could have
/// left in its data directory, and the files it must not reach.
async fn setup() -> (TestHost, PathBuf) {
    let t = TestHost::with("files", FILES, "[filesystem]\ndata = true").await;
    let state = t.state.path().to_path_buf();
    std::fs::write(state.join("secret"), HOST_SECRET).unwrap();
    let module = state.join("data").join("files");
    let (acme, globex) = (module.join("org-acme"), module.join("org-globex"));
    std::fs::create_dir_all(&acme).unwrap();
    std::fs::create_dir_all(&globex).unwrap();
    std::fs::write(globex.join("notes.txt"), TENANT_SECRET).unwrap();
    let link = |to: &str, name: &str| std::os::unix::fs::symlink(to, acme.join(name)).unwrap();
    link("../../..", "up");
    link("/", "root");
    link("../org-globex", "tenant");
    link("loop", "loop");
    link("up/secret", "chain");
    link("nowhere/at/all", "dangling");
    (t, acme)
}

async fn try_ops(t: &TestHost, ops: Vec<Value>) -> Vec<Value> {
    try_files(t, &principal("alice", "acme"), ops).await
}

/// Every file under `root` with its contents (symlinks as their target),
/// skipping the caller's own organization directory.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            // The database changes under the host's own writes.
            let db = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("modhost.db"));
            if path == skip || db {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                out.insert(path, "<dir>".into());
            } else if meta.file_type().is_symlink() {
                let to = std::fs::read_link(&path).unwrap();
                out.insert(path, format!("-> {}", to.display()));
            } else {
                let text = std::fs::read(&path).unwrap();
                out.insert(path, format!("{} bytes {:x}", text.len(), fxhash(&text)));
            }
        }
    }
    out
}

fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn leaked(outcomes: &[Value]) -> Vec<String> {
    outcomes
        .iter()
        .map(Value::to_string)
        .filter(|o| o.contains(HOST_SECRET) || o.contains(TENANT_SECRET) || o.contains("root:"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_reads_what_lies_outside_the_callers_own_directory() {
    let (t, _) = setup().await;
    let ops: Vec<Value> = escapes()
        .iter()
        .flat_map(|p| ["read", "list", "stat", "readlink"].map(|op| json!({ "op": op, "path": p })))
        .collect();
    let outcomes = try_ops(&t, ops).await;
    assert_eq!(outcomes.len(), escapes().len() * 4);
    assert_eq!(leaked(&outcomes), Vec::<String>::new());
    // Listing the parent of /data would name the other organization.
    for o in &outcomes {
        assert!(!o.to_string().contains("org-globex\""), "{o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_creates_or_changes_anything_outside_the_callers_own_directory() {
    let (t, acme) = setup().await;
    let root = t.state.path().to_path_buf();
    let before = snapshot(&root, &acme);
    let mut ops = Vec::new();
    for p in escapes() {
        ops.push(json!({ "op": "write", "path": p, "text": "owned" }));
        ops.push(json!({ "op": "mkdir", "path": format!("{p}/made") }));
        ops.push(json!({ "op": "remove", "path": p }));
    }
    let outside = [
        "/data/up/secret",
        "/data/tenant/notes.txt",
        "/data/../secret",
        "/data/chain",
        "/data/root/etc/passwd",
        "/data/../org-globex/notes.txt",
    ];
    for from in outside {
        ops.push(json!({ "op": "hardlink", "path": from, "to": "/data/stolen" }));
        ops.push(json!({ "op": "rename", "path": from, "to": "/data/taken" }));
    }
    std::fs::write(acme.join("mine.txt"), "mine").unwrap();
    for to in outside {
        ops.push(json!({ "op": "hardlink", "path": "/data/mine.txt", "to": to }));
        ops.push(json!({ "op": "rename", "path": "/data/mine.txt", "to": to }));
    }
    let outcomes = try_ops(&t, ops).await;
    assert_eq!(leaked(&outcomes), Vec::<String>::new());
    assert_eq!(snapshot(&root, &acme), before);
    // A link or rename may have moved one of the planted symlinks (it is
    // inside); no file's contents came in from outside.
    for name in ["stolen", "taken"] {
        let p = acme.join(name);
        let is_file = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file());
        if is_file {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                !text.contains(HOST_SECRET) && !text.contains(TENANT_SECRET),
                "{name}: {text}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(root.join("secret")).unwrap(),
        HOST_SECRET
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_appends_land_where_the_guest_put_them() {
    let (t, acme) = setup().await;
    let big = "0123456789abcdef".repeat(10_000);
    let outcomes = try_ops(
        &t,
        vec![
            json!({ "op": "write", "path": "/data/log.txt", "text": "one\n" }),
            json!({ "op": "append", "path": "/data/log.txt", "text": "two\n" }),
            json!({ "op": "append", "path": "/data/log.txt", "text": big }),
            json!({ "op": "append", "path": "/data/log.txt", "text": "three\n" }),
            json!({ "op": "write", "path": "/data/big.txt", "text": big }),
        ],
    )
    .await;
    assert!(outcomes.iter().all(|o| o["ok"] == true), "{outcomes:?}");
    assert_eq!(
        std::fs::read_to_string(acme.join("log.txt")).unwrap(),
        format!("one\ntwo\n{big}three\n")
    );
    assert_eq!(std::fs::read_to_string(acme.join("big.txt")).unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_directory_stays_fully_usable() {
    let (t, acme) = setup().await;
    let outcomes = try_ops(
        &t,
        vec![
            json!({ "op": "mkdir", "path": "/data/a/b" }),
            json!({ "op": "write", "path": "/data/a/b/c.txt", "text": "hello" }),
            json!({ "op": "read", "path": "/data/a/b/c.txt" }),
            json!({ "op": "hardlink", "path": "/data/a/b/c.txt", "to": "/data/a/d.txt" }),
            json!({ "op": "rename", "path": "/data/a/d.txt", "to": "/data/e.txt" }),
            json!({ "op": "list", "path": "/data/a" }),
            json!({ "op": "remove", "path": "/data/e.txt" }),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        vec![
            json!({ "ok": true }),
            json!({ "ok": true }),
            json!({ "ok": "hello" }),
            json!({ "ok": true }),
            json!({ "ok": true }),
            json!({ "ok": ["b"] }),
            json!({ "ok": true }),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(acme.join("a/b/c.txt")).unwrap(),
        "hello"
    );
}
