//! The host's rooms point down only: no two files of `host/src` import each
//! other, directly or around a circle, and the services below the WIT rooms
//! do not know wasmtime.
//!
//! An import is any `crate::`, `super::` or `self::` path outside comments
//! and `#[cfg(test)]` modules, and any `use` of a child module, resolved to
//! the deepest file that defines it (`crate::tasks::TaskService` is
//! `tasks/mod.rs`, which re-exports it; `crate::tasks::service::X` is
//! `tasks/service.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rooms that hold logic below the WIT rooms: none of them may name
/// wasmtime.
const WASM_FREE: &[&str] = &[
    "tasks",
    "subprocess",
    "network",
    "audit",
    "learn.rs",
    "db",
    "manifest",
    "identity.rs",
    "error.rs",
    "cancel.rs",
    "text.rs",
    "share.rs",
    "retention.rs",
    "data_quota.rs",
];

/// Rooms that hold wasm: the engine, the per-call store, the loaded modules,
/// the WIT rooms, and the composition root.
const WASM_ROOMS: &[&str] = &["engine", "sandbox", "modules", "wit", "host.rs"];

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src")
}

/// Every file of the library, by its module path (`["tasks", "service"]`).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let name = rel.file_name().unwrap().to_str().unwrap();
            // The binary is its own crate; test modules may reach anywhere.
            if rel == Path::new("main.rs") || name == "tests.rs" || !name.ends_with(".rs") {
                continue;
            }
            let mut segments: Vec<String> = rel
                .parent()
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                .collect();
            let stem = name.trim_end_matches(".rs");
            if stem != "mod" && stem != "lib" {
                segments.push(stem.to_owned());
            }
            out.insert(segments, path);
        }
    }
    out
}

/// The file's code without comments and without its `#[cfg(test)]` test
/// module (an inline `mod tests { .. }` is skipped to its closing brace; a
/// `mod tests;` line only declares one).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    let mut skipping: Option<i64> = None;
    while let Some(line) = lines.next() {
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        if let Some(depth) = skipping.as_mut() {
            *depth += braces(line);
            if *depth <= 0 {
                skipping = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && let Some(next) = lines.peek()
        {
            let next = next.trim_start();
            if next.starts_with("mod tests;") {
                lines.next();
                continue;
            }
            if next.starts_with("mod tests") {
                let opened = braces(next);
                lines.next();
                if opened > 0 {
                    skipping = Some(opened);
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Braces a line opens, less those it closes.
fn braces(line: &str) -> i64 {
    let count = |c| i64::try_from(line.matches(c).count()).unwrap_or(i64::MAX);
    count('{') - count('}')
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `use` tree in `code`, expanded to plain paths.
fn use_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + 4..];
        if before.is_some_and(is_ident) {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        expand(&rest[..end], &mut Vec::new(), &mut out);
        rest = &rest[end..];
    }
    out
}

/// Expands `a::{b, c::{d, e}}` under `prefix` into full paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = without_renames(tree);
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let (head, group) = match tree.find('{') {
        Some(i) => (&tree[..i], Some(&tree[i + 1..tree.len() - 1])),
        None => (tree.as_str(), None),
    };
    let segments: Vec<String> = head
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let depth = prefix.len();
    prefix.extend(segments);
    match group {
        None => out.push(prefix.clone()),
        Some(group) => {
            let mut level = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        expand(&group[start..i], prefix, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            if start < group.len() {
                expand(&group[start..], prefix, out);
            }
        }
    }
    prefix.truncate(depth);
}

/// `tree` without its `as name` renames.
fn without_renames(tree: &str) -> String {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "as" && i + 1 < words.len() {
            // Keep the separator glued to the renamed name (`x as y,`).
            out.extend(words[i + 1].chars().filter(|c| !is_ident(*c)));
            i += 2;
            continue;
        }
        out.push_str(words[i]);
        out.push(' ');
        i += 1;
    }
    out
}

/// `crate::`, `super::` and `self::` paths written inline in code, and
/// paths into the file's own child modules (`tasks::list`) or through a
/// name a `use` brought in (`subprocess::audit::X` after `use
/// crate::subprocess::{self}`), which [`graph`] resolves through `aliases`.
fn inline_paths(code: &str, kids: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let roots = ["crate", "super", "self"]
        .into_iter()
        .map(str::to_owned)
        .chain(kids.iter().cloned())
        .chain(aliases(code).into_keys());
    for root in roots {
        let root = format!("{root}::");
        let mut rest = code;
        while let Some(i) = rest.find(root.as_str()) {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            rest = &rest[i + root.len()..];
            // `$crate::name!` in a macro names a macro exported at the crate
            // root, not the root module.
            if before.is_some_and(|c| is_ident(c) || c == ':' || c == '$') {
                continue;
            }
            let path: Vec<String> = tail
                .split("::")
                .map_while(|s| {
                    let ident: String = s.chars().take_while(|c| is_ident(*c)).collect();
                    (!ident.is_empty()).then_some((ident.len() == s.len(), ident))
                })
                .scan(true, |go_on, (whole, ident)| {
                    let keep = *go_on;
                    *go_on = whole;
                    keep.then_some(ident)
                })
                .collect();
            // A bare root is the start of a `use` group, read by `use_paths`.
            if path.len() > 1 {
                out.push(path);
            }
        }
    }
    out
}

/// Names a file's `use` declarations bring in, with the path each stands
/// for (`use crate::subprocess::{self, Caller}` brings in `subprocess` and
/// `Caller`).
fn aliases(code: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for mut path in use_paths(code) {
        if path.last().is_some_and(|s| s == "self") {
            path.pop();
        }
        let Some(first) = path.first() else { continue };
        if !["crate", "super", "self"].contains(&first.as_str()) || path.len() < 2 {
            continue;
        }
        if let Some(name) = path.last() {
            out.insert(name.clone(), path.clone());
        }
    }
    out
}

/// The child modules a file declares (`mod x;`, `pub mod x;`).
fn children(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The absolute module path of `path`, written in the module `here`.
fn absolute(here: &[String], path: &[String], kids: &BTreeSet<String>) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    // `super` and `self` of a `foo.rs` are taken from its module, like rustc.
    let base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let mut b = here.to_vec();
            b.pop()?;
            b
        }
        name if kids.contains(name) => {
            let mut b = here.to_vec();
            b.push(name.to_owned());
            return Some(b.into_iter().chain(rest.iter().cloned()).collect());
        }
        _ => return None,
    };
    let mut abs = base;
    let mut rest = rest;
    while let Some((s, tail)) = rest.split_first() {
        if s == "super" {
            abs.pop()?;
            rest = tail;
        } else {
            break;
        }
    }
    abs.extend(rest.iter().cloned());
    Some(abs)
}

/// The imports of each file, as edges to other files.
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = host_src();
    let files = modules(&src);
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (here, file) in &files {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let kids = children(&code);
        let names = aliases(&code);
        let mut targets = BTreeSet::new();
        for path in use_paths(&code)
            .into_iter()
            .chain(inline_paths(&code, &kids))
        {
            // A path through an imported name continues that name's path.
            let path = match path.split_first() {
                Some((first, rest)) if !kids.contains(first) && names.contains_key(first) => {
                    names[first].iter().chain(rest).cloned().collect()
                }
                _ => path,
            };
            let Some(abs) = absolute(here, &path, &kids) else {
                continue;
            };
            // The deepest prefix of the path that is a file.
            let target = (0..=abs.len())
                .rev()
                .find_map(|n| files.get(&abs[..n]))
                .cloned();
            if let Some(t) = target
                && &t != file
                && !abs.is_empty()
            {
                targets.insert(t);
            }
        }
        edges.insert(file.clone(), targets);
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a PathBuf) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        for t in &w.edges[v] {
            if !w.index.contains_key(t) {
                visit(w, t);
                let low = w.low[t].min(w.low[v]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(t) {
                let low = w.index[t].min(w.low[v]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(x) = w.stack.pop() {
                w.on_stack.remove(x);
                component.push(x.clone());
                if x == v {
                    break;
                }
            }
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn no_two_host_files_import_each_other_around_a_circle() {
    let edges = graph();
    assert!(edges.len() > 40, "found only {} files", edges.len());
    let src = host_src();
    let shown: Vec<Vec<String>> = circles(&edges)
        .into_iter()
        .map(|c| {
            c.iter()
                .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
                .collect()
        })
        .collect();
    assert!(shown.is_empty(), "import circles: {shown:#?}");
}

#[test]
fn the_checker_sees_a_circle_between_a_parent_and_a_child() {
    let a = PathBuf::from("a/mod.rs");
    let b = PathBuf::from("a/b.rs");
    let edges = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(circles(&edges).len(), 1);
    let here = vec!["a".to_owned(), "b".to_owned()];
    let kids = BTreeSet::new();
    let path = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        absolute(&here, &path("super::X"), &kids),
        Some(path("a::X"))
    );
    assert_eq!(
        use_paths("use super::{x::Y, z as w};"),
        vec![path("super::x::Y"), path("super::z")]
    );
    assert_eq!(
        inline_paths(
            "let v = crate::text::shown(x); get(tasks::list)",
            &BTreeSet::from(["tasks".to_owned()])
        ),
        vec![path("crate::text::shown"), path("tasks::list")]
    );
}

#[test]
fn the_services_below_the_wit_rooms_do_not_know_wasmtime() {
    let src = host_src();
    let edges = graph();
    let rel = |p: &PathBuf| p.strip_prefix(&src).unwrap().display().to_string();
    let room = |p: &PathBuf| rel(p).split('/').next().unwrap().to_owned();
    let mut offenders = Vec::new();
    for file in edges.keys() {
        if !WASM_FREE.contains(&room(file).as_str()) {
            continue;
        }
        let code = code(&std::fs::read_to_string(file).unwrap());
        if code.contains("wasmtime") {
            offenders.push(format!("{} names wasmtime", rel(file)));
        }
        // Nothing it reaches, however indirectly, may be wasm's.
        let mut seen = BTreeSet::new();
        let mut stack = vec![file.clone()];
        while let Some(f) = stack.pop() {
            for t in &edges[&f] {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        for t in seen {
            if WASM_ROOMS.contains(&room(&t).as_str()) {
                offenders.push(format!("{} reaches {}", rel(file), rel(&t)));
            }
        }
    }
    assert!(offenders.is_empty(), "these know wasm: {offenders:#?}");
}
