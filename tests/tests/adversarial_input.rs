//! Bad input never panics and always gets a typed error: properties over
//! manifest text and mutations of a valid manifest, argument shapes and
//! argv against a realistic grant, the pure checks of `interface tasks`,
//! and — end to end through real guests — the arguments of the `tasks`
//! host functions and of `run-subprocess`.
//!
//! Each property states what a refusal looks like (a `ManifestError` that
//! stays one bounded line, a `ShapeError`, a `Verdict`, an
//! `SdkError::InvalidInput`, a typed `CallError::Guest`) and what anything
//! accepted must satisfy, so a check that let bad input through would fail
//! here, not only one that panicked. Failures print the shrunk input; no
//! regression files are written.
//!
//! `{value}` is not a path: it may start with `/` or hold `..` (a URL, a
//! remote, a name), and only a leading `-` is refused there; Landlock bounds
//! what a child can open (see `adversarial_subprocess.rs` and
//! `subprocess.rs`).

use modhost::identity::RequestMeta;
use modhost::kit::{PolicyKit, Verdict};
use modhost::manifest::{self, LoadEnv, Setting};
use modhost::subprocess::argv::{ArgShape, ArgToken, MAX_SHAPE_TOKENS, MAX_TOKEN_BYTES};
use modhost::subprocess::gate::Request;
use modhost::tasks::policy;
use modhost::tasks::store::Status;
use modhost::{CallError, SdkError};
use modhost_tests::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Cases of each pure property: cheap, so many.
const PURE_CASES: u32 = 1024;

/// Cases of each end-to-end property: each one instantiates a component.
const GUEST_CASES: u32 = 128;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    }
}

/// The longest refusal message: one that quotes hostile input must cut it.
const MAX_MESSAGE_BYTES: usize = 2048;

/// What hostile input is made of: traversal, options, NUL and other
/// controls, bidi overrides and zero-width characters, placeholders, shell,
/// TOML and JSON syntax, transports, multi-byte characters.
const PIECES: &[&str] = &[
    "..",
    "/",
    "./",
    "-",
    "--",
    "-c",
    "\0",
    "\n",
    "\r",
    "\t",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{202e}",
    "\u{2066}",
    "\u{200b}",
    "\u{feff}",
    "{path}",
    "{value}",
    "{int}",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    "\\",
    "#",
    "::",
    ":",
    "ext::",
    "%",
    "_",
    "$(id)",
    "`id`",
    "~",
    "*",
    ";",
    "|",
    " ",
    "a",
    "Z",
    "0",
    "9",
    "é",
    "\u{1d54f}",
    "\u{ff0e}",
    "null",
    "true",
];

/// Text made of [`PIECES`], arbitrary Unicode, printable ASCII, or one
/// piece repeated.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|p| p.concat()),
        2 => any::<String>(),
        1 => "[ -~]{0,64}",
        1 => (prop::sample::select(PIECES), 1usize..600).prop_map(|(p, n)| p.repeat(n)),
    ]
}

/// Text of about `n` bytes around the limits (256 bytes, 64 KiB), of one
/// repeated piece, cut at a character boundary.
fn sized(lengths: &'static [usize]) -> impl Strategy<Value = String> {
    (prop::sample::select(PIECES), prop::sample::select(lengths)).prop_map(|(piece, n)| {
        let mut s = piece.repeat(n / piece.len().max(1) + 1);
        let mut end = n.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s
    })
}

const SHORT_LENGTHS: &[usize] = &[0, 1, 255, 256, 257, 1024];
const CHECKPOINT_LENGTHS: &[usize] = &[65_533, 65_534, 65_535, 65_536, 65_537];

/// Whether `c` is a bidi embedding, override or isolate, as the host's
/// checks define it.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is an invisible format character (bidi controls, zero-width
/// spaces and joiners, the BOM), which a key may not hold.
fn is_invisible(c: char) -> bool {
    is_bidi(c)
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2065}' | '\u{061C}' | '\u{FEFF}')
}

/// A refusal message a terminal or a log can show as it is.
fn readable(message: &str) -> Result<(), TestCaseError> {
    prop_assert!(!message.is_empty());
    prop_assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "a message of {} bytes: {}…",
        message.len(),
        message.chars().take(200).collect::<String>()
    );
    prop_assert!(
        !message.chars().any(char::is_control),
        "a control character in {message:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------- manifests

/// A string in TOML's basic-string syntax.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The kind of a TOML value, to know when a mutation changed a key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Str,
    Bool,
    Date,
    Array,
    Table,
    /// Text that may not be a value at all.
    Raw,
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "255",
    "256",
    "257",
    "1024",
    "1025",
    "10000",
    "10001",
    "1000000",
    "1000001",
    "86400000",
    "86400001",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999",
    "0x7fffffff",
    "0o777",
    "0b1",
    "1_000",
    "+5",
];

const FLOATS: &[&str] = &["1.5", "1e308", "-0.0", "nan", "inf", "-inf", "1e-400"];

/// A TOML value of any kind, scalar or nested, tagged with its kind.
fn toml_value() -> impl Strategy<Value = (Kind, String)> {
    let scalar = prop_oneof![
        prop::sample::select(NUMBERS).prop_map(|n| (Kind::Int, n.to_owned())),
        any::<i64>().prop_map(|n| (Kind::Int, n.to_string())),
        prop::sample::select(FLOATS).prop_map(|f| (Kind::Float, f.to_owned())),
        hostile().prop_map(|s| (Kind::Str, toml_string(&s))),
        sized(&[1024, 1025, 4096, 4097, 60_000]).prop_map(|s| (Kind::Str, toml_string(&s))),
        any::<bool>().prop_map(|b| (Kind::Bool, b.to_string())),
        Just((Kind::Date, "1979-05-27T07:32:00Z".to_owned())),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => prop::collection::vec(scalar.clone(), 0..6).prop_map(|v| {
            let items: Vec<String> = v.into_iter().map(|(_, s)| s).collect();
            (Kind::Array, format!("[{}]", items.join(", ")))
        }),
        1 => (1usize..2000, scalar.clone()).prop_map(|(depth, (_, s))| {
            (Kind::Array, format!("{}{s}{}", "[".repeat(depth), "]".repeat(depth)))
        }),
        1 => (1usize..2000, scalar).prop_map(|(depth, (_, s))| {
            (Kind::Table, format!("{}{s}{}", "{ a = ".repeat(depth), " }".repeat(depth)))
        }),
        1 => hostile().prop_map(|s| (Kind::Raw, s)),
    ]
}

/// Sections and keys of a manifest, valid and not.
const HEADERS: &[&str] = &[
    "[tasks]",
    "[limits]",
    "[subprocess]",
    "[[subprocess.programs]]",
    "[network]",
    "[filesystem]",
    "[build]",
    "[tasks.more]",
    "[[tasks]]",
    "[limits.memory-mib]",
    "[]",
    "[[]]",
];

const KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "component",
    "max-active-per-user",
    "max-active-per-module",
    "max-concurrent",
    "read",
    "memory-mib",
    "call-deadline-ms",
    "task-deadline-ms",
    "blocking-deadline-ms",
    "timeout-ms",
    "max-output-bytes",
    "network",
    "env",
    "programs",
    "program",
    "args",
    "allow",
    "data",
    "command",
    "workdir",
];

/// The sections, which are keys of the root table too.
const SECTIONS: &[&str] = &[
    "build",
    "filesystem",
    "network",
    "tasks",
    "limits",
    "subprocess",
];

const BASE_HEADER: &str = "name = \"probe\"\nversion = \"0.1.0\"\ncomponent = \"probe.wasm\"\n";

/// TOML-ish text: headers, `key = value` lines and raw lines, with or
/// without the keys a manifest needs.
fn toml_ish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => hostile().prop_map(|k| toml_string(&k)),
        1 => "[a-z-]{1,24}",
    ];
    let line = prop_oneof![
        2 => prop::sample::select(HEADERS).prop_map(str::to_owned),
        6 => (key, toml_value()).prop_map(|(k, (_, v))| format!("{k} = {v}")),
        1 => hostile(),
    ];
    (any::<bool>(), prop::collection::vec(line, 0..24)).prop_map(|(base, lines)| {
        let body = lines.join("\n");
        if base {
            format!("{BASE_HEADER}{body}\n")
        } else {
            body
        }
    })
}

/// What a parse must give: a manifest within its documented ranges, or a
/// refusal that names the file and stays one bounded line.
fn parses_or_refuses(text: &str) -> Result<Option<manifest::Manifest>, TestCaseError> {
    match manifest::parse(text, &LoadEnv::host_default()) {
        Ok(m) => {
            let (tasks, limits) = (&m.policy.tasks, &m.policy.limits);
            let within = |s: Setting, v: u64| (s.min..=s.max).contains(&v);
            prop_assert!(within(
                manifest::MAX_ACTIVE_PER_USER,
                tasks.max_active_per_user.into()
            ));
            prop_assert!(within(
                manifest::MAX_ACTIVE_PER_MODULE,
                tasks.max_active_per_module.into()
            ));
            prop_assert!(tasks.max_active_per_module >= tasks.max_active_per_user);
            prop_assert!(within(
                manifest::MAX_CONCURRENT_TASKS,
                tasks.max_concurrent.into()
            ));
            prop_assert!(within(manifest::MEMORY_MIB, limits.memory_bytes >> 20));
            let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap();
            prop_assert!(within(manifest::CALL_DEADLINE_MS, ms(limits.call_deadline)));
            prop_assert!(within(manifest::TASK_DEADLINE_MS, ms(limits.task_deadline)));
            prop_assert!(within(
                manifest::BLOCKING_DEADLINE_MS,
                ms(limits.blocking_deadline)
            ));
            prop_assert!(
                m.description
                    .as_ref()
                    .is_none_or(|d| d.len() <= manifest::MAX_DESCRIPTION_BYTES)
            );
            Ok(Some(m))
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.starts_with("module.toml"), "{message}");
            readable(&message)?;
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    #[test]
    fn any_manifest_text_loads_within_its_ranges_or_gives_a_one_line_manifest_error(
        text in prop_oneof![any::<String>(), toml_ish()],
    ) {
        parses_or_refuses(&text)?;
    }
}

/// A valid manifest as (section, key, value) entries: every section a
/// manifest has. `[[subprocess.programs]]` is written `*programs`.
fn base_entries() -> Vec<(&'static str, &'static str, Kind, String)> {
    [
        ("", "name", Kind::Str, "\"probe\""),
        ("", "version", Kind::Str, "\"0.1.0\""),
        ("", "description", Kind::Str, "\"A probe\""),
        ("", "component", Kind::Str, "\"probe.wasm\""),
        ("build", "command", Kind::Array, "[\"cargo\", \"build\"]"),
        ("build", "workdir", Kind::Str, "\"src\""),
        ("filesystem", "data", Kind::Bool, "true"),
        ("network", "allow", Kind::Array, "[\"example.org:443\"]"),
        ("tasks", "max-active-per-user", Kind::Int, "16"),
        ("tasks", "max-active-per-module", Kind::Int, "1000"),
        ("tasks", "max-concurrent", Kind::Int, "4"),
        ("tasks", "read", Kind::Str, "\"own\""),
        ("limits", "memory-mib", Kind::Int, "64"),
        ("limits", "call-deadline-ms", Kind::Int, "10000"),
        ("limits", "task-deadline-ms", Kind::Int, "3600000"),
        ("limits", "blocking-deadline-ms", Kind::Int, "60000"),
        ("subprocess", "max-concurrent", Kind::Int, "2"),
        ("subprocess", "timeout-ms", Kind::Int, "20000"),
        ("subprocess", "max-output-bytes", Kind::Int, "65536"),
        ("subprocess", "env", Kind::Array, "[\"LANG\"]"),
        ("*programs", "program", Kind::Str, "\"cat\""),
        (
            "*programs",
            "args",
            Kind::Array,
            "[[\"{path}\"], [\"-n\", \"{path}\"]]",
        ),
    ]
    .into_iter()
    .map(|(s, k, kind, v)| (s, k, kind, v.to_owned()))
    .collect()
}

/// The range of a numeric key of `[tasks]` or `[limits]`.
fn setting(section: &str, key: &str) -> Option<Setting> {
    Some(match (section, key) {
        ("tasks", "max-active-per-user") => manifest::MAX_ACTIVE_PER_USER,
        ("tasks", "max-active-per-module") => manifest::MAX_ACTIVE_PER_MODULE,
        ("tasks", "max-concurrent") => manifest::MAX_CONCURRENT_TASKS,
        ("limits", "memory-mib") => manifest::MEMORY_MIB,
        ("limits", "call-deadline-ms") => manifest::CALL_DEADLINE_MS,
        ("limits", "task-deadline-ms") => manifest::TASK_DEADLINE_MS,
        ("limits", "blocking-deadline-ms") => manifest::BLOCKING_DEADLINE_MS,
        _ => return None,
    })
}

/// One `key = value` line of a manifest under mutation.
#[derive(Debug, Clone)]
struct Entry {
    section: &'static str,
    key: String,
    /// The kind of value the key takes.
    kind: Kind,
    value: String,
    /// Added by a mutation: no section has it.
    unknown: bool,
    /// Why the current value cannot be accepted, when it cannot.
    bad: Option<String>,
}

fn render(entries: &[Entry]) -> String {
    let mut out = String::new();
    let mut sections: Vec<&str> = Vec::new();
    for e in entries {
        if !sections.contains(&e.section) {
            sections.push(e.section);
        }
    }
    sections.sort_by_key(|s| !s.is_empty());
    for section in sections {
        match section {
            "" => {}
            "*programs" => out.push_str("[[subprocess.programs]]\n"),
            s => out.push_str(&format!("[{s}]\n")),
        }
        for e in entries.iter().filter(|e| e.section == section) {
            out.push_str(&format!("{} = {}\n", e.key, e.value));
        }
    }
    out
}

/// One change to a valid manifest.
#[derive(Debug, Clone)]
enum Mutation {
    /// Entry `index` gets another value.
    Set(usize, Kind, String),
    /// A key no section knows, with any value.
    Add(usize, String, String),
    Remove(usize),
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = base_entries().len();
    let unknown = prop_oneof![
        "[a-z][a-z-]{0,30}".prop_map(|k| k),
        hostile().prop_map(|k| toml_string(&k)),
    ]
    .prop_filter("a key some section knows", |k| {
        let bare = k.trim_matches('"');
        !KEYS.contains(&bare) && !SECTIONS.contains(&bare)
    });
    prop_oneof![
        6 => (0..n, toml_value()).prop_map(|(i, (kind, v))| Mutation::Set(i, kind, v)),
        2 => (0..n, unknown, toml_value()).prop_map(|(i, k, (_, v))| Mutation::Add(i, k, v)),
        1 => (0..n).prop_map(Mutation::Remove),
        1 => (0..n).prop_map(Mutation::Duplicate),
    ]
}

/// The base manifest's entries, none changed.
fn unmutated() -> Vec<Entry> {
    base_entries()
        .into_iter()
        .map(|(section, key, kind, value)| Entry {
            section,
            key: key.to_owned(),
            kind,
            value,
            unknown: false,
            bad: None,
        })
        .collect()
}

#[test]
fn the_unmutated_manifest_of_the_mutation_property_loads() {
    let entries = unmutated();
    let text = render(&entries);
    let m = manifest::parse(&text, &LoadEnv::host_default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.policy.subprocess.programs.len(), 1);
    assert_eq!(m.policy.tasks.max_active_per_user, 16);
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Whatever is changed, the parse answers; and a change the schema
    /// cannot accept is refused: an unknown key, a missing required key, a
    /// duplicate key, a value of another type, a number out of its range.
    #[test]
    fn a_mutated_manifest_loads_or_is_refused_and_schema_violations_are_always_refused(
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut entries = unmutated();
        for m in &mutations {
            if entries.is_empty() {
                break;
            }
            match m {
                Mutation::Set(i, kind, v) => {
                    let n = entries.len();
                    let e = &mut entries[i % n];
                    let number = v.replace('_', "").parse::<i64>().ok();
                    let out_of_range = setting(e.section, &e.key).zip(number).is_some_and(|(r, n)| {
                        u64::try_from(n).map_or(true, |n| !(r.min..=r.max).contains(&n))
                    });
                    e.bad = if *kind != Kind::Raw && *kind != e.kind {
                        Some(format!("became a {kind:?}"))
                    } else if *kind == Kind::Int && out_of_range {
                        Some("out of range".to_owned())
                    } else {
                        None
                    };
                    e.value = v.clone();
                }
                Mutation::Add(i, k, v) => {
                    let section = entries[i % entries.len()].section;
                    entries.push(Entry {
                        section,
                        key: k.clone(),
                        kind: Kind::Raw,
                        value: v.clone(),
                        unknown: true,
                        bad: None,
                    });
                }
                Mutation::Remove(i) => {
                    let n = entries.len();
                    entries.remove(i % n);
                }
                Mutation::Duplicate(i) => {
                    let e = entries[i % entries.len()].clone();
                    entries.push(e);
                }
            }
        }
        let mut must_fail: Vec<String> = Vec::new();
        let has = |section: &str, key: &str| {
            entries.iter().filter(|e| e.section == section && e.key == key).count()
        };
        for e in &entries {
            let at = format!("[{}] {}", e.section, e.key);
            if e.unknown {
                must_fail.push(format!("{at} is unknown"));
            } else if let Some(why) = &e.bad {
                must_fail.push(format!("{at} {why}"));
            }
            if has(e.section, &e.key) > 1 {
                must_fail.push(format!("{at} is written twice"));
            }
        }
        for key in ["name", "version", "component"] {
            if has("", key) == 0 {
                must_fail.push(format!("{key} is missing"));
            }
        }
        for (section, key) in [("build", "command"), ("*programs", "program"), ("*programs", "args")] {
            if entries.iter().any(|e| e.section == section) && has(section, key) == 0 {
                must_fail.push(format!("[{section}] {key} is missing"));
            }
        }
        let text = render(&entries);
        let loaded = parses_or_refuses(&text)?;
        prop_assert!(
            must_fail.is_empty() || loaded.is_none(),
            "loaded although {must_fail:?}:\n{text}"
        );
    }
}

// ---------------------------------------------------- shapes and the gate

/// Programs of every family the shape checks know, named as granted or not.
const PROGRAMS: &[&str] = &[
    "git",
    "tar",
    "curl",
    "sh",
    "bash",
    "python3",
    "node",
    "find",
    "sed",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "zip",
    "ffmpeg",
    "env",
    "timeout",
    "xargs",
    "busybox",
    "cat",
    "/usr/bin/git",
    "/bin/sh",
    "GIT",
    "git.exe",
];

/// Tokens a shape is written with: placeholders, optional flags, the
/// literals the checks refuse, and anything.
const TOKENS: &[&str] = &[
    "{path}",
    "{value}",
    "{int}",
    "{nope}",
    "{path}x",
    "[--oneline]",
    "[-r]",
    "[x]",
    "[--a[b]]",
    "-c",
    "-C",
    "-e",
    "-o",
    "-I",
    "-F",
    "-K",
    "--config",
    "--upload-pack",
    "--exec",
    "-exec",
    "ext::sh",
    "config",
    "alias.x",
    "core.sshCommand",
    "log",
    "status",
    "-xf",
    "cIf",
    "--to-command=id",
    "--unix-socket",
    "-f",
    "lavfi",
    "-i",
    "-vf",
    "s/a/b/e",
    "-b",
    "/batch",
    "-D",
];

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(TOKENS).prop_map(str::to_owned),
        2 => hostile(),
        1 => sized(&[1023, 1024, 1025]),
    ]
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    #[test]
    fn argument_shapes_of_any_tokens_parse_within_the_limits_or_give_a_shape_error(
        program in prop_oneof![prop::sample::select(PROGRAMS).prop_map(str::to_owned), hostile()],
        tokens in prop::collection::vec(token(), 0..70),
    ) {
        match ArgShape::parse(&program, &tokens) {
            Ok(shape) => {
                prop_assert!(shape.tokens().len() <= MAX_SHAPE_TOKENS);
                prop_assert_eq!(shape.tokens().len(), tokens.len());
                for t in shape.tokens() {
                    if let ArgToken::Literal(l) | ArgToken::Optional(l) = t {
                        prop_assert!(!l.is_empty() && l.len() <= MAX_TOKEN_BYTES && !l.contains('\0'));
                    }
                }
            }
            Err(e) => readable(&e.to_string())?,
        }
    }
}

fn kit() -> PolicyKit {
    PolicyKit::parse(REALISTIC_GRANT).expect("the realistic grant loads")
}

/// Arguments made of the grant's own literals, typical values and anything.
fn argument() -> impl Strategy<Value = String> {
    const LIKELY: &[&str] = &[
        "-C",
        "log",
        "-1",
        "--format=%at",
        "ls-remote",
        "init",
        "-q",
        "-tf",
        "-xf",
        "-c",
        "-fsS",
        "-o",
        "-r",
        "repo",
        "a.tar",
        "out",
        "100",
        "page.html",
        "https://example.org/",
        "..",
        "/etc/passwd",
        "../x",
        "-",
        "",
    ];
    prop_oneof![
        3 => prop::sample::select(LIKELY).prop_map(str::to_owned),
        2 => hostile(),
        1 => sized(&[65_536, 65_537]),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    const GRANTED: &[&str] = &["git", "tar", "cat", "head", "curl", "sort"];
    const NAMES: &[&str] = &["LANG", "GIT_AUTHOR_NAME", "LD_PRELOAD", "PATH", "lang", ""];
    let program = prop_oneof![
        3 => prop::sample::select(GRANTED).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let name = prop_oneof![
        prop::sample::select(NAMES).prop_map(str::to_owned),
        hostile()
    ];
    (
        program,
        prop::collection::vec(argument(), 0..7),
        prop::option::of(hostile()),
        prop::collection::vec((name, hostile()), 0..3),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        prop::option::of(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()]),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(program, args, cwd, env, stdin, timeout_ms, max_output_bytes)| Request {
                program,
                args,
                cwd,
                env,
                stdin,
                timeout_ms,
                max_output_bytes,
            },
        )
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Whatever is asked, the gate decides; what it allows is a granted
    /// program by its granted name, well-formed arguments, a working
    /// directory inside and granted variables only.
    #[test]
    fn any_request_against_a_realistic_grant_gets_a_verdict_and_allowed_ones_are_well_formed(
        request in request(),
    ) {
        let kit = kit();
        match kit.request(&request) {
            Verdict::Allowed => {
                let granted = ["git", "tar", "cat", "head", "curl", "sort"];
                prop_assert!(granted.contains(&request.program.as_str()));
                prop_assert!(request.args.iter().all(|a| !a.is_empty() && !a.contains('\0')));
                if let Some(cwd) = &request.cwd {
                    prop_assert!(!cwd.is_empty() && !cwd.starts_with('/'));
                    prop_assert!(!cwd.split('/').any(|p| p == ".."));
                }
                prop_assert!(request.env.iter().all(|(k, _)| k == "LANG" || k == "GIT_AUTHOR_NAME"));
                prop_assert_ne!(request.timeout_ms, Some(0));
            }
            Verdict::Denied(reason) | Verdict::Invalid(reason) => readable(&reason)?,
        }
    }
}

/// A value that must never fill a `{path}`: a `..` component, a leading
/// `/`, or a leading `-`.
fn hostile_path() -> impl Strategy<Value = String> {
    let part = "[a-z0-9._ ]{0,8}";
    prop_oneof![
        (part, part).prop_map(|(a, b)| format!("{a}/../{b}")),
        part.prop_map(|a| format!("../{a}")),
        part.prop_map(|a| format!("{a}/..")),
        Just("..".to_owned()),
        hostile().prop_map(|s| format!("/{s}")),
        hostile().prop_map(|s| format!("-{s}")),
        hostile().prop_map(|s| format!("{s}/../{s}")),
    ]
}

/// A value that must never fill a `{value}`: a leading `-`.
fn hostile_value() -> impl Strategy<Value = String> {
    hostile().prop_map(|s| format!("-{s}"))
}

/// Every shape of the grant as (program, tokens).
fn granted_shapes() -> Vec<(String, Vec<ArgToken>)> {
    kit()
        .manifest()
        .policy
        .subprocess
        .programs
        .iter()
        .flat_map(|p| {
            p.shapes
                .iter()
                .map(|s| (p.name.clone(), s.tokens().to_vec()))
        })
        .collect()
}

/// The argv of `tokens` with benign values, optional flags given or not.
fn fill(tokens: &[ArgToken], with_optionals: bool) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|t| match t {
            ArgToken::Literal(l) => Some(l.clone()),
            ArgToken::Optional(l) => with_optionals.then(|| l.clone()),
            ArgToken::Value => Some("https://example.org/r".into()),
            ArgToken::Int => Some("1".into()),
            ArgToken::Path => Some("notes/a.txt".into()),
        })
        .collect()
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Each case fills one shape of the grant with benign values (which
    /// must be allowed, so the property is not vacuous), then puts a
    /// hostile value in one of its `{path}` or `{value}` places.
    #[test]
    fn a_climbing_absolute_or_option_argument_in_a_path_or_value_place_is_never_allowed(
        shape in prop::sample::select(granted_shapes()),
        place in any::<prop::sample::Index>(),
        with_optionals in any::<bool>(),
        path in hostile_path(),
        value in hostile_value(),
    ) {
        let kit = kit();
        let (program, tokens) = shape;
        let benign = fill(&tokens, with_optionals);
        let mut argv = vec![program.clone()];
        argv.extend(benign.iter().cloned());
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        prop_assert_eq!(kit.run(&argv_ref), Verdict::Allowed, "{:?}", argv);
        // Positions in the filled argv of each placeholder.
        let mut places = Vec::new();
        let mut at = 1;
        for t in &tokens {
            match t {
                ArgToken::Optional(_) if !with_optionals => continue,
                ArgToken::Path => places.push((at, path.clone())),
                ArgToken::Value => places.push((at, value.clone())),
                _ => {}
            }
            at += 1;
        }
        prop_assume!(!places.is_empty());
        let (i, bad) = places[place.index(places.len())].clone();
        argv[i] = bad;
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        let verdict = kit.run(&argv_ref);
        prop_assert_ne!(verdict, Verdict::Allowed, "{:?}", argv);
    }
}

// ------------------------------------------------------ the tasks checks

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1.0 + f64::EPSILON,
            -1e-300,
        ]),
        -2.0f64..3.0,
    ]
}

/// JSON text: real values (nested, long, unicode) or text that is not JSON.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        hostile().prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(hostile(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| v.to_string()),
        1 => hostile(),
        1 => (1usize..400).prop_map(|d| format!("{}1{}", "[".repeat(d), "]".repeat(d))),
        1 => sized(CHECKPOINT_LENGTHS).prop_map(|s| Value::from(s).to_string()),
    ]
}

/// A key, title or label: often well-formed, often not.
fn key_like() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => hostile(),
        1 => sized(SHORT_LENGTHS),
        2 => "[a-z]{1,8}(\\.[a-z0-9%_\\\\]{1,8}){0,4}",
        1 => "[ -~\u{a0}-\u{2fff}\t]{1,80}",
    ]
}

/// The documented rules of a key: 1 to 256 bytes, no control character,
/// no invisible format character.
fn key_rules(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= policy::MAX_TASK_KEY_BYTES
        && !k.chars().any(|c| c.is_control() || is_invisible(c))
}

/// The documented rules of a title or label: at most `max` bytes, no
/// control character but tab, no bidi control.
fn text_rules(t: &str, max: usize) -> bool {
    t.len() <= max
        && !t
            .chars()
            .any(|c| (c.is_control() && c != '\t') || is_bidi(c))
}

/// Whether text is JSON, as `serde_json::Value` (what the read model and
/// the guest SDK parse stored JSON into) tells.
enum Json {
    Yes,
    No,
    /// Valid JSON that `Value` cannot hold: nested deeper than its
    /// recursion limit (128), or a number past `f64`. The host refuses
    /// these when given: they could not be read back.
    Unreadable,
}

fn json(text: &str) -> Json {
    match serde_json::from_str::<Value>(text) {
        Ok(_) => Json::Yes,
        Err(e)
            if e.to_string().starts_with("recursion limit exceeded")
                || e.to_string().starts_with("number out of range") =>
        {
            Json::Unreadable
        }
        Err(_) => Json::No,
    }
}

fn invalid_input<T: std::fmt::Debug>(r: &Result<T, SdkError>) -> Result<(), TestCaseError> {
    match r {
        Err(SdkError::InvalidInput(m)) => readable(m),
        other => Err(TestCaseError::fail(format!(
            "expected invalid-input, got {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Each check accepts exactly what its documented rules allow, and
    /// refuses the rest as invalid input with a readable reason.
    #[test]
    fn task_inputs_are_accepted_exactly_within_their_documented_limits(
        key in key_like(),
        prefix in key_like(),
        title in key_like(),
        label in key_like(),
        progress in float(),
        checkpoint in json_text(),
        args in json_text(),
        id in prop_oneof![hostile(), "[0-9a-fA-F-]{30,40}", "\\{?[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}\\}?"],
        timeout in prop::option::of(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..700_000_000]),
        (requested, default, max) in (any::<u32>(), 1u32..1000, 1u32..1000),
    ) {
        let r = policy::task_key(&key);
        if key_rules(&key) { prop_assert_eq!(r, Ok(key.as_str())); } else { invalid_input(&r)?; }

        let r = policy::key_prefix(&prefix);
        if prefix.is_empty() || key_rules(&prefix) {
            prop_assert_eq!(r, Ok(prefix.as_str()));
        } else {
            invalid_input(&r)?;
            prop_assert!(matches!(&r, Err(SdkError::InvalidInput(m)) if m.starts_with("key prefix")));
        }

        for (what, text, max) in [("title", &title, policy::MAX_TITLE_BYTES), ("label", &label, policy::MAX_LABEL_BYTES)] {
            let r = policy::short_text(what, text, max);
            if text_rules(text, max) { prop_assert_eq!(r, Ok(text.as_str())); } else { invalid_input(&r)?; }
        }

        let r = policy::progress(progress);
        if progress.is_finite() {
            let p = r.map_err(|e| TestCaseError::fail(format!("{progress} refused: {e}")))?;
            prop_assert!((0.0..=1.0).contains(&p));
            prop_assert_eq!(p, progress.clamp(0.0, 1.0));
        } else {
            invalid_input(&r)?;
        }

        for (what, text, r, max) in [
            ("checkpoint", &checkpoint, policy::json_text("checkpoint", &checkpoint, policy::MAX_CHECKPOINT_BYTES), policy::MAX_CHECKPOINT_BYTES),
            ("args", &args, policy::args(&args), policy::MAX_ARGS_BYTES),
        ] {
            match (text.len() <= max, json(text)) {
                (true, Json::Yes) => prop_assert_eq!(r, Ok(text.as_str()), "{}", what),
                (false, _) | (_, Json::No) => invalid_input(&r)?,
                (_, Json::Unreadable) => invalid_input(&r)?,
            }
        }

        match policy::task_id(&id) {
            Ok(canonical) => {
                let parsed = canonical.parse::<uuid::Uuid>().unwrap();
                prop_assert_eq!(parsed.hyphenated().to_string(), canonical.clone());
                prop_assert_eq!(Ok(parsed), id.parse::<uuid::Uuid>());
            }
            r @ Err(_) => invalid_input(&r)?,
        }

        let r = policy::confirmation_timeout(timeout);
        match timeout {
            Some(0) => invalid_input(&r)?,
            Some(ms) if ms > policy::MAX_CONFIRMATION_TIMEOUT_MS => invalid_input(&r)?,
            Some(ms) => prop_assert_eq!(r, Ok(std::time::Duration::from_millis(ms))),
            None => prop_assert_eq!(
                r,
                Ok(std::time::Duration::from_millis(policy::MAX_CONFIRMATION_TIMEOUT_MS))
            ),
        }

        let got = policy::limit(requested, default, max);
        prop_assert_eq!(got, if requested == 0 { default } else { requested.min(max) });
    }
}

// ------------------------------------------- host functions of real guests

/// Runs `cases` of `strategy` through `check`, on `runtime`: the host is
/// built once and shared by every case.
fn run_on<S: Strategy>(
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, check) {
        panic!("{e}");
    }
}

/// A typed answer: a result, or an error the module was told, which is
/// never `internal` (that would be a host bug answering bad input).
fn typed(outcome: &Result<modhost::ui::ActionOutput, CallError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(_) => Ok(()),
        Err(CallError::Guest { error, .. }) => match error {
            SdkError::Internal(m) => Err(TestCaseError::fail(format!("internal error: {m}"))),
            SdkError::InvalidInput(m)
            | SdkError::PermissionDenied(m)
            | SdkError::LimitExceeded(m) => readable(m),
            SdkError::NotFound | SdkError::Unauthenticated => Ok(()),
        },
        // Refused by the host before the guest ran (arguments nested past
        // what the host parses): typed too.
        Err(CallError::InvalidInput(m)) => readable(m),
        Err(other) => Err(TestCaseError::fail(format!(
            "not a typed guest error: {other:?}"
        ))),
    }
}

/// The progress a guest may send: any float as a number when JSON can
/// carry it, else as text the guest parses (`NaN`, `inf`, `-inf`).
fn progress_json() -> impl Strategy<Value = Value> {
    float().prop_map(|p| {
        serde_json::Number::from_f64(p).map_or_else(|| Value::from(p.to_string()), Value::Number)
    })
}

/// One call of a `tasks-basic` action, with arguments of the caller's
/// choosing that the action forwards to a host function.
fn tasks_call(known_id: String) -> impl Strategy<Value = (&'static str, Value)> {
    let id = move || {
        prop_oneof![
            3 => Just(known_id.clone()),
            1 => hostile(),
            1 => Just("00000000-0000-7000-8000-000000000000".to_owned()),
        ]
    };
    let task = prop_oneof![
        4 => prop::sample::select(&["noop", "echo"][..]).prop_map(str::to_owned),
        1 => prop::sample::select(&["nope", "", "NOOP", "noop "][..]).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let json_value =
        || json_text().prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::from(t)));
    let limit = || prop::option::of(prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()]);
    prop_oneof![
        4 => (task, json_value(), prop::option::of(key_like()), prop::option::of(key_like()), any::<bool>())
            .prop_map(|(task, args, key, title, resumable)| {
                ("submit", json!({ "task": task, "args": args, "key": key, "title": title, "resumable": resumable }))
            }),
        1 => key_like().prop_map(|key| ("by_key", json!({ "key": key }))),
        1 => (key_like(), limit()).prop_map(|(prefix, limit)| ("by_prefix", json!({ "prefix": prefix, "limit": limit }))),
        1 => (limit(), prop::option::of(hostile()), prop::option::of(key_like()))
            .prop_map(|(limit, cursor, prefix)| ("list", json!({ "limit": limit, "cursor": cursor, "prefix": prefix }))),
        3 => (
                id(),
                prop::option::weighted(0.5, key_like()),
                prop::option::of(progress_json()),
                prop::option::weighted(0.3, json_value()),
            )
            .prop_map(|(id, label, progress, checkpoint)| {
                ("progress_of", json!({ "id": id, "label": label, "progress": progress, "checkpoint": checkpoint }))
            }),
        1 => id().prop_map(|id| ("view", json!({ "id": id }))),
        1 => hostile().prop_map(|user| ("list_of", json!({ "user": user }))),
    ]
}

#[test]
fn tasks_host_functions_answer_any_arguments_from_a_real_guest_with_a_typed_error() {
    let rt = runtime();
    let manifest = "[limits]\ntask-deadline-ms = 600000\n\
        [tasks]\nmax-active-per-user = 10000\nmax-active-per-module = 10000\nmax-concurrent = 2";
    let t = rt.block_on(TestHost::with("tb", TASKS_BASIC, manifest));
    rt.block_on(t.host.start_tasks()).unwrap();
    let who = principal("alice", "acme");
    let call = |action: &str, args: &Value| {
        rt.block_on(
            t.host
                .call_action("tb", action, &args.to_string(), &who, RequestMeta::fresh()),
        )
    };
    // A running task, for progress updates that reach the store.
    let known = call("submit", &json!({ "task": "sleep" }))
        .unwrap()
        .data
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3000 {
        if rt
            .block_on(t.host.tasks().get(&known, &who))
            .unwrap()
            .status
            == Status::Running
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        rt.block_on(t.host.tasks().get(&known, &who))
            .unwrap()
            .status,
        Status::Running
    );
    // Inputs that once drew an untyped or unreadable answer.
    for (action, args) in [
        ("submit", json!({ "task": "\0" })),
        ("submit", json!({ "task": "\u{1b}[31mnoop" })),
        ("submit", json!({ "task": "noop", "key": "a\u{202e}b" })),
        ("progress_of", json!({ "id": known, "progress": "NaN" })),
        ("progress_of", json!({ "id": known, "progress": "-inf" })),
    ] {
        let out = call(action, &args);
        assert!(
            matches!(
                &out,
                Err(CallError::Guest {
                    error: SdkError::InvalidInput(_),
                    ..
                })
            ),
            "{action} {args}: {out:?}"
        );
        typed(&out).unwrap_or_else(|e| panic!("{action} {args}: {e}"));
    }
    run_on(GUEST_CASES, tasks_call(known.clone()), |(action, args)| {
        let out = call(action, &args);
        typed(&out)?;
        if let ("submit", Ok(out)) = (action, &out) {
            // What was stored is what was asked, within the rules.
            let id = out.data.as_ref().unwrap()["id"].as_str().unwrap();
            let row = rt.block_on(t.host.tasks().get(id, &who)).unwrap();
            prop_assert_eq!(row.task_key.as_deref(), args["key"].as_str());
            prop_assert_eq!(row.title.as_deref(), args["title"].as_str());
            prop_assert!(row.task_key.as_deref().is_none_or(key_rules));
            prop_assert!(row.args_json.len() <= policy::MAX_ARGS_BYTES);
        }
        Ok(())
    });
    // The host keeps serving, and the task under fire is still whole.
    let row = rt.block_on(t.host.tasks().get(&known, &who)).unwrap();
    assert_eq!(row.status, Status::Running);
    assert!((0.0..=1.0).contains(&row.progress), "{}", row.progress);
    let out = call("submit", &json!({ "task": "echo", "key": "after.fuzz" })).unwrap();
    let id = out.data.unwrap()["id"].as_str().unwrap().to_owned();
    let found = call("by_key", &json!({ "key": "after.fuzz" }))
        .unwrap()
        .data
        .unwrap();
    assert_eq!(found[0]["id"], id.as_str(), "{found}");
}

/// A grant for the end-to-end property: programs that finish at once,
/// whatever they are given.
const RUN_GRANT: &str = r#"
[subprocess]
max-concurrent = 2
timeout-ms = 5000
max-output-bytes = 4096
env = ["LANG"]

[[subprocess.programs]]
program = "echo"
args = [["{value}"], ["-n", "{value}"], ["[-n]", "{int}"]]

[[subprocess.programs]]
program = "cat"
args = [["{path}"]]
"#;

fn run_request() -> impl Strategy<Value = Value> {
    const PROGRAMS: &[&str] = &["echo", "cat", "sh", "/bin/echo", "./echo", "ECHO", ""];
    const ARGS: &[&str] = &[
        "-n",
        "hello",
        "1",
        "a.txt",
        "..",
        "/etc/passwd",
        "-e",
        "--help",
    ];
    let program = prop_oneof![
        4 => prop::sample::select(&["echo", "cat"][..]).prop_map(str::to_owned),
        2 => prop::sample::select(PROGRAMS).prop_map(str::to_owned),
        1 => hostile(),
    ];
    let arg = prop_oneof![
        3 => prop::sample::select(ARGS).prop_map(str::to_owned),
        2 => hostile(),
    ];
    let name = prop_oneof![
        prop::sample::select(&["LANG", "LD_PRELOAD", "PATH", ""][..]).prop_map(str::to_owned),
        hostile(),
    ];
    (
        program,
        prop::collection::vec(arg, 0..4),
        prop::option::weighted(
            0.3,
            prop_oneof![
                prop::sample::select(&["sub", ".", "..", "/", "a/../.."][..])
                    .prop_map(str::to_owned),
                hostile(),
            ],
        ),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec((name, hostile()), 1..3),
        ],
        prop::option::of(hostile()),
        prop::option::weighted(
            0.3,
            prop_oneof![Just(0u64), Just(1u64), Just(u64::MAX), any::<u64>()],
        ),
        prop::option::weighted(0.3, prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()]),
    )
        .prop_map(
            |(program, args, cwd, env, stdin, timeout_ms, max_output_bytes)| {
                json!({
                    "program": program, "args": args, "cwd": cwd, "env": env, "stdin": stdin,
                    "timeout_ms": timeout_ms, "max_output_bytes": max_output_bytes,
                })
            },
        )
}

#[test]
fn run_subprocess_answers_any_request_from_a_real_guest_with_a_typed_error() {
    let rt = runtime();
    let t = rt.block_on(TestHost::with("sub", SUBPROCESS, RUN_GRANT));
    let data = t.state.path().join("data").join("sub").join("org-acme");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("a.txt"), "inside").unwrap();
    let who = principal("alice", "acme");
    let call = |args: &Value| {
        rt.block_on(
            t.host
                .call_action("sub", "run", &args.to_string(), &who, RequestMeta::fresh()),
        )
    };
    run_on(GUEST_CASES, run_request(), |request| {
        let out = call(&request);
        typed(&out)?;
        if let Ok(out) = &out {
            // Only granted programs by their granted names ever ran.
            let program = request["program"].as_str().unwrap();
            prop_assert!(program == "echo" || program == "cat", "{} ran", program);
            // `{"code": n}`, `{"signal": n}`, or `"timed-out"` when a short
            // timeout of the request ran out on a busy machine.
            let status = &out.data.as_ref().unwrap()["status"];
            prop_assert!(
                status.is_object() || status == "timed-out",
                "status {}",
                status
            );
        }
        Ok(())
    });
    // The host keeps serving.
    let out = call(&json!({ "program": "cat", "args": ["a.txt"] })).unwrap();
    assert_eq!(out.data.unwrap()["stdout"], "inside");
}
