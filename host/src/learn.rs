//! The minimal grants a module needs, learned from the audit trail:
//! `modhost manifest suggest MODULE`. Every subprocess a module asked for
//! and every request it sent — allowed or refused — is a record; from them
//! this room writes the `module.toml` grants that would have allowed
//! exactly those, and what changes against the current manifest.
//!
//! What is learned from: records the host allowed, and refusals for want
//! of a grant (a refusal as malformed or over a cap says nothing a grant
//! could change). A suggestion is what the module asked for, so read it
//! before granting it.
//!
//! Argument lists are generalized only where the records show it: the
//! lists of one program and one length that differ in one place only (and
//! have no placeholder elsewhere) become one shape with `{int}` (every
//! value a number), `{path}` (every value a relative path without `..`) or
//! `{value}` there; a place where a value starts with `-` is never a
//! placeholder (the gate would not let an option through one). A list seen
//! once stays literal. A list with an argument the grammar cannot hold as
//! a literal (`{…}`, `[…]`, an empty one, one the trail cut) is not
//! learned from, and counted. Pure: nothing here reads a database or a
//! file.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::{AuditRecord, Decision, Detail};
use crate::manifest::{NetworkGrant, Policy};
use crate::subprocess::argv::match_shapes;
use crate::subprocess::grant::SubprocessGrant;
use crate::subprocess::learning::{generalize, plain_literal};

/// What the records show a module needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suggestion {
    /// Per program (as requested), its argument shapes, each a list of
    /// tokens in the manifest's grammar.
    pub programs: BTreeMap<String, BTreeSet<Vec<String>>>,
    /// Variables the requests set.
    pub env: BTreeSet<String>,
    /// Destinations: `scheme://host[:port]`, the port only when it is not
    /// the scheme's own.
    pub network: BTreeSet<String>,
    /// Whether the module used its data directory (a working directory, a
    /// refused file operation in it).
    pub data: bool,
    /// Subprocess records not learned from: an argument the grammar cannot
    /// hold as a literal.
    pub skipped: usize,
}

/// One line of what a suggestion changes against a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Used and not granted.
    Add(String),
    /// Granted and not used in the records read.
    Unused(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add(what) => write!(f, "+ {what}"),
            Change::Unused(what) => write!(f, "- {what} (granted, not used)"),
        }
    }
}

/// The grants `records` need. Records of other capabilities are ignored.
pub fn suggest(records: &[AuditRecord]) -> Suggestion {
    let mut out = Suggestion::default();
    let mut argvs: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for r in records {
        if !learns_from(r) {
            continue;
        }
        match &r.entry.detail {
            Detail::Subprocess(d) if !d.args.iter().all(|a| plain_literal(a)) => {
                out.skipped += 1;
            }
            Detail::Subprocess(d) => {
                argvs
                    .entry(r.entry.subject.clone())
                    .or_default()
                    .insert(d.args.clone());
                out.env.extend(d.env_names.iter().cloned());
                out.data |= d.cwd.is_some();
            }
            Detail::Http(_) => {
                if let Some(origin) = origin_of(&r.entry.subject) {
                    out.network.insert(origin);
                }
            }
            Detail::Filesystem(_) => out.data = true,
            Detail::Task(_) | Detail::Confirmation(_) => {}
        }
    }
    for (program, seen) in argvs {
        out.programs.insert(program, generalize(&seen));
    }
    out
}

/// Whether a record says what a grant needs: it was allowed, or refused
/// as not granted (an outbound refusal for an internal address or a busy
/// module is not one a grant of the name could change).
fn learns_from(r: &AuditRecord) -> bool {
    match (r.entry.decision, &r.entry.detail) {
        (Decision::Allowed, _) => true,
        (Decision::Denied, Detail::Http(_)) => r
            .entry
            .reason
            .as_deref()
            .is_some_and(|why| why.contains("[network] allow")),
        (Decision::Denied, _) => true,
        (Decision::Invalid | Decision::Limited, _) => false,
    }
}

/// `scheme://host[:port]` of a recorded URL.
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let host = uri.host()?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    Some(match uri.port_u16() {
        Some(port) if port != default => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `s` as a TOML basic string: JSON's escapes, which TOML shares, plus
/// DEL and the format controls that would reorder what a reader sees.
fn toml_str(s: &str) -> String {
    let json = serde_json::to_string(s).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '\u{7f}' || crate::text::is_format_control(c) {
            out.push_str(&format!("\\u{:04X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

impl Suggestion {
    /// The grants as `module.toml` sections.
    pub fn to_toml(&self) -> String {
        let q = toml_str;
        let mut out = String::new();
        if self.data {
            out.push_str("[filesystem]\ndata = true\n\n");
        }
        if !self.network.is_empty() {
            let allow: Vec<String> = self.network.iter().map(|h| q(h)).collect();
            out.push_str(&format!("[network]\nallow = [{}]\n\n", allow.join(", ")));
        }
        if !self.programs.is_empty() {
            out.push_str("[subprocess]\n");
            if !self.env.is_empty() {
                let env: Vec<String> = self.env.iter().map(|e| q(e)).collect();
                out.push_str(&format!("env = [{}]\n", env.join(", ")));
            }
            for (program, shapes) in &self.programs {
                out.push_str(&format!(
                    "\n[[subprocess.programs]]\nprogram = {}\nargs = [\n",
                    q(program)
                ));
                for shape in shapes {
                    let tokens: Vec<String> = shape.iter().map(|t| q(t)).collect();
                    out.push_str(&format!("    [{}],\n", tokens.join(", ")));
                }
                out.push_str("]\n");
            }
        }
        out
    }

    /// What changes against `current`: each record `records` holds that
    /// the current grants refuse, and each grant no record used.
    pub fn changes(&self, records: &[AuditRecord], current: &Policy) -> Vec<Change> {
        let mut out = Vec::new();
        let granted = &current.subprocess;
        let mut used_shapes: BTreeSet<(String, usize)> = BTreeSet::new();
        let mut used_env: BTreeSet<String> = BTreeSet::new();
        for (program, shapes) in &self.programs {
            for shape in shapes {
                let covered = covering(granted, program, shape, records);
                match covered {
                    Some(i) => {
                        used_shapes.insert((program.clone(), i));
                    }
                    None => out.push(Change::Add(format!(
                        "[[subprocess.programs]] {program} {}",
                        serde_json::to_string(shape).unwrap_or_default()
                    ))),
                }
            }
        }
        for env in &self.env {
            if granted.env.iter().any(|g| g.as_str() == env) {
                used_env.insert(env.clone());
            } else {
                out.push(Change::Add(format!("[subprocess] env {env}")));
            }
        }
        for host in &self.network {
            if !allows(&current.network, host) {
                out.push(Change::Add(format!("[network] allow {host}")));
            }
        }
        if self.data && !current.filesystem.data {
            out.push(Change::Add("[filesystem] data = true".into()));
        }
        for p in &granted.programs {
            for (i, shape) in p.shapes.iter().enumerate() {
                if !used_shapes.contains(&(p.name.clone(), i)) {
                    out.push(Change::Unused(format!(
                        "[[subprocess.programs]] {} {shape}",
                        p.name
                    )));
                }
            }
        }
        for e in &granted.env {
            if !used_env.contains(e.as_str()) {
                out.push(Change::Unused(format!("[subprocess] env {e}")));
            }
        }
        for pattern in &current.network.allow {
            let alone = NetworkGrant {
                allow: vec![pattern.clone()],
                ..current.network.clone()
            };
            if !self.network.iter().any(|h| allows(&alone, h)) {
                out.push(Change::Unused(format!("[network] allow {pattern}")));
            }
        }
        out
    }
}

/// The index of the granted shape of `program` that allows every recorded
/// argument list `shape` stands for, if one does.
fn covering(
    granted: &SubprocessGrant,
    program: &str,
    shape: &[String],
    records: &[AuditRecord],
) -> Option<usize> {
    let grant = granted.program(program)?;
    let seen: Vec<&Vec<String>> = records
        .iter()
        .filter(|r| r.entry.subject == program)
        .filter_map(|r| match &r.entry.detail {
            Detail::Subprocess(d) if fits(shape, &d.args) => Some(&d.args),
            _ => None,
        })
        .collect();
    grant.shapes.iter().position(|s| {
        !seen.is_empty()
            && seen
                .iter()
                .all(|args| match_shapes(&grant.name, std::slice::from_ref(s), args).is_ok())
    })
}

/// Whether a suggested shape stands for a recorded argument list.
fn fits(shape: &[String], args: &[String]) -> bool {
    shape.len() == args.len()
        && shape
            .iter()
            .zip(args)
            .all(|(s, a)| s == a || matches!(s.as_str(), "{value}" | "{int}" | "{path}"))
}

/// Whether `grant` lets a request reach `origin`.
fn allows(grant: &NetworkGrant, origin: &str) -> bool {
    format!("{origin}/")
        .parse::<http::Uri>()
        .is_ok_and(|uri| crate::network::decide(grant, &uri).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, HttpDetail, SubprocessDetail};

    fn run(program: &str, args: &[&str], env: &[&str]) -> AuditRecord {
        let mut entry = crate::audit::decided_at(1);
        entry.decision = Decision::Allowed;
        entry.subject = program.into();
        entry.detail = Detail::Subprocess(SubprocessDetail {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env_names: env.iter().map(|e| (*e).to_owned()).collect(),
            cwd: Some(".".into()),
            ..SubprocessDetail::default()
        });
        AuditRecord { entry, end: None }
    }

    fn get(url: &str) -> AuditRecord {
        let entry = AuditEntry {
            subject: url.into(),
            decision: Decision::Allowed,
            detail: Detail::Http(HttpDetail::default()),
            ..crate::audit::decided_at(1)
        };
        AuditRecord { entry, end: None }
    }

    #[test]
    fn lists_that_differ_in_one_place_become_one_shape_and_a_lone_list_stays_literal() {
        let s = suggest(&[
            run(
                "git",
                &["-C", "repo", "commit", "-m", "first"],
                &["GIT_AUTHOR_NAME"],
            ),
            run("git", &["-C", "repo", "commit", "-m", "second note"], &[]),
            run("git", &["-C", "repo", "log", "-1"], &[]),
            run("sleep", &["1"], &[]),
            run("sleep", &["20"], &[]),
        ]);
        let git: Vec<Vec<&str>> = s.programs["git"]
            .iter()
            .map(|v| v.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            git,
            [
                vec!["-C", "repo", "commit", "-m", "{value}"],
                vec!["-C", "repo", "log", "-1"],
            ]
        );
        let sleep: Vec<&Vec<String>> = s.programs["sleep"].iter().collect();
        assert_eq!(sleep, [&vec!["{int}".to_owned()]]);
        assert_eq!(s.env.iter().collect::<Vec<_>>(), ["GIT_AUTHOR_NAME"]);
        assert!(s.data);
    }

    #[test]
    fn an_argument_the_grammar_would_read_as_a_placeholder_is_not_learned() {
        let s = suggest(&[
            run("cat", &["{value}"], &[]),
            run("rm", &["[--force]"], &[]),
            run("ls", &["ok"], &[]),
        ]);
        assert_eq!(s.programs.keys().collect::<Vec<_>>(), ["ls"]);
        assert_eq!(s.skipped, 2);
    }

    #[test]
    fn placeholders_stay_in_one_place_and_paths_are_told_from_values() {
        let s = suggest(&[
            run("kubectl", &["get", "pods"], &[]),
            run("kubectl", &["get", "svc"], &[]),
            run("kubectl", &["delete", "pods"], &[]),
            run("cat", &["a.txt"], &[]),
            run("cat", &["notes/b.md"], &[]),
        ]);
        let kubectl = &s.programs["kubectl"];
        let covers = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            kubectl.iter().any(|shape| fits(shape, &args))
        };
        assert!(covers(&["get", "pods"]) && covers(&["get", "svc"]) && covers(&["delete", "pods"]));
        assert!(!covers(&["delete", "svc"]), "nobody ran it: {kubectl:?}");
        assert!(
            kubectl
                .iter()
                .all(|shape| shape.iter().filter(|t| t.starts_with('{')).count() <= 1)
        );
        let cat: Vec<&Vec<String>> = s.programs["cat"].iter().collect();
        assert_eq!(cat, [&vec!["{path}".to_owned()]]);
    }

    #[test]
    fn refusals_that_no_grant_would_change_teach_nothing() {
        let mut over_cap = run("sleep", &["1"], &[]);
        over_cap.entry.decision = Decision::Limited;
        let mut internal = get("http://localhost:8080/");
        internal.entry.decision = Decision::Denied;
        internal.entry.reason =
            Some("`http://localhost:8080` resolves only to internal addresses".into());
        let mut not_granted = get("https://api.example.com/");
        not_granted.entry.decision = Decision::Denied;
        not_granted.entry.reason =
            Some("`https://api.example.com` is not in the module's [network] allow".into());
        let s = suggest(&[over_cap, internal, not_granted]);
        assert!(s.programs.is_empty());
        assert_eq!(
            s.network.iter().collect::<Vec<_>>(),
            ["https://api.example.com"]
        );
    }

    #[test]
    fn an_option_is_never_widened_into_a_placeholder() {
        let s = suggest(&[run("ls", &["-l"], &[]), run("ls", &["-a"], &[])]);
        assert_eq!(s.programs["ls"].len(), 2);
    }

    #[test]
    fn destinations_keep_only_their_origin() {
        let s = suggest(&[
            get("https://api.example.com/v1/a"),
            get("https://api.example.com/v2/b"),
            get("http://10.0.0.5:9000/x"),
        ]);
        assert_eq!(
            s.network.iter().collect::<Vec<_>>(),
            ["http://10.0.0.5:9000", "https://api.example.com"]
        );
        let toml = s.to_toml();
        assert!(
            toml.contains(r#"allow = ["http://10.0.0.5:9000", "https://api.example.com"]"#),
            "{toml}"
        );
    }

    #[test]
    fn the_suggested_toml_is_a_manifest_the_host_accepts() {
        let s = suggest(&[
            run("sleep", &["1"], &["LANG"]),
            run("sleep", &["2"], &[]),
            get("https://api.example.com/"),
        ]);
        let text = format!(
            "name = \"m\"\nversion = \"0.1.0\"\ncomponent = \"m.wasm\"\n\n{}",
            s.to_toml()
        );
        let manifest = crate::manifest::parse(&text, &crate::manifest::LoadEnv::host_default())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(manifest.policy.filesystem.data);
        let records = [
            run("sleep", &["7"], &["LANG"]),
            get("https://api.example.com/x"),
        ];
        assert!(
            suggest(&records)
                .changes(&records, &manifest.policy)
                .is_empty(),
            "what it suggests covers what it saw"
        );
    }
}
