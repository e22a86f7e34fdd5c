//! Adversarial requests to `run-subprocess`, decided through the policy
//! kit exactly as the host decides them at the call: a realistic grant
//! (the programs modules ask for), then tables of hostile requests —
//! programs named another way, arguments that are options or transports,
//! paths that climb out, variables that reconfigure programs, working
//! directories outside, limits past their ceilings. Every one must be
//! refused with the right kind of error; the granted controls must pass,
//! so a table that refuses everything would fail here too.
//!
//! What the kernel enforces on a child that did start (sockets, system
//! calls, the child user, cgroups, symlinks planted under a `{path}`) is
//! tried with real children in `subprocess.rs`.

use modhost::kit::{PolicyKit, Verdict};
use modhost::subprocess::gate::Request;
use modhost_tests::REALISTIC_GRANT;

fn kit() -> PolicyKit {
    PolicyKit::parse(REALISTIC_GRANT).expect("the realistic grant loads")
}

/// Requests the grant allows: the tables below are not refusing everything.
#[test]
fn granted_requests_are_allowed() {
    let kit = kit();
    for argv in [
        &["git", "-C", "repo", "log", "-1", "--format=%at"][..],
        &["git", "ls-remote", "https://example.org/r.git"],
        &["git", "init", "-q", "repo"],
        &["tar", "-tf", "a.tar"],
        &["tar", "-xf", "in/a.tar", "-C", "out"],
        &["cat", "notes/today.txt"],
        &["head", "-c", "100", "big.bin"],
        &["curl", "-fsS", "-o", "page.html", "https://example.org/"],
        &["sort", "list.txt"],
        &["sort", "-r", "list.txt"],
    ] {
        let verdict = kit.run(argv);
        assert_eq!(verdict, Verdict::Allowed, "{argv:?}");
    }
}

/// Programs that are not granted, or granted programs named another way.
const PROGRAMS: &[&str] = &[
    "sh",
    "bash",
    "/bin/sh",
    "python3",
    "env",
    "id",
    "/usr/bin/git",
    "./git",
    "../git",
    "git ",
    " git",
    "GIT",
    "git\n",
    "git;id",
    "git|id",
    "$(id)",
    "`id`",
    "/proc/self/exe",
    "/data/git",
    "data/git",
    "~/git",
    "git.exe",
    "cat\u{202e}",
    "ca\u{200b}t",
    "\u{ff43}at",
    "*",
    "?at",
    "c*",
];

#[test]
fn programs_not_granted_as_named_are_denied() {
    let kit = kit();
    for program in PROGRAMS {
        kit.run(&[program, "x"])
            .assert_denied("[[subprocess.programs]]");
    }
}

/// Arguments for shapes that are granted, each of which makes the granted
/// program do something else: options in a `{value}` or `{path}`,
/// transports, absolute and climbing paths, shell syntax (harmless without
/// a shell, and still not the granted shape where it matters).
const ARGVS: &[&[&str]] = &[
    // Options where a value or path is granted.
    &["git", "ls-remote", "--upload-pack=touch /tmp/x"],
    &["git", "ls-remote", "--upload-pack", "id"],
    &["git", "ls-remote", "-u", "id"],
    &["git", "ls-remote", "--exec=id"],
    &["git", "ls-remote", "-c", "core.sshCommand=id"],
    &["git", "ls-remote", "--config-env=core.pager=X"],
    &["git", "-C", "--git-dir=/etc", "log", "-1", "--format=%at"],
    &["git", "init", "-q", "--template=/tmp/t"],
    &["git", "init", "-q", "--separate-git-dir=/tmp/g"],
    &["tar", "-tf", "--to-command=id"],
    &["tar", "-tf", "--checkpoint-action=exec=id"],
    &["tar", "-tf", "--use-compress-program=id"],
    &["tar", "-tf", "-I", "id"],
    &["tar", "-xf", "a.tar", "-C", "--to-command=id"],
    &["cat", "--help"],
    &["cat", "-"],
    &["cat", "-n"],
    &["head", "-c", "-1", "x"],
    &["head", "-c", "+1", "x"],
    &["head", "-c", "1k", "x"],
    &["head", "-c", "0x10", "x"],
    &["head", "-c", "1e3", "x"],
    &["head", "-c", "99999999999999999999", "x"],
    &["head", "-c", " 1", "x"],
    &["head", "-c", "1 ", "x"],
    &["head", "-c", "١٢", "x"],
    &[
        "curl",
        "-fsS",
        "-o",
        "/etc/cron.d/x",
        "https://example.org/",
    ],
    &["curl", "-fsS", "-o", "page.html", "-K"],
    &["curl", "-fsS", "-o", "page.html", "--config"],
    &["curl", "-fsS", "-o", "page.html", "-o/tmp/x"],
    &["curl", "-fsS", "-o", "page.html", "--output=/tmp/x"],
    &["curl", "-fsS", "-o", "-", "https://example.org/"],
    &["curl", "-fsS", "-o", "page.html", "-T/etc/passwd"],
    &["curl", "-fsS", "-o", "page.html", "file:///etc/passwd"],
    &[
        "curl",
        "-fsS",
        "-o",
        "page.html",
        "dict://127.0.0.1:11211/stats",
    ],
    &[
        "curl",
        "-fsS",
        "-o",
        "page.html",
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ],
    &[
        "curl",
        "-fsS",
        "-o",
        "page.html",
        "--upload-file=/etc/passwd",
    ],
    &["sort", "-o", "/tmp/x"],
    &["sort", "--compress-program=id"],
    &["sort", "-r", "-r", "x"],
    &["sort", "-rr", "x"],
    // Transports.
    &["git", "ls-remote", "ext::sh -c id"],
    &["git", "ls-remote", "fd::3"],
    &["git", "ls-remote", "EXT::sh -c id"],
    &["git", "ls-remote", "x-y.z+w::anything"],
    &["tar", "-tf", "host:/etc/passwd"],
    &["tar", "-tf", "user@host:a.tar"],
    // Paths that climb out or start at the root.
    &["cat", "/etc/passwd"],
    &["cat", "/etc/shadow"],
    &["cat", "/proc/self/environ"],
    &["cat", "/proc/1/root/etc/shadow"],
    &["cat", "../secret"],
    &["cat", "../../modhost.db"],
    &["cat", "a/../../b"],
    &["cat", "a/b/../../../c"],
    &["cat", ".."],
    &["cat", "./.."],
    &["cat", "x/.."],
    &["cat", "//etc/passwd"],
    &["cat", "/data/../x"],
    &["git", "-C", "/", "log", "-1", "--format=%at"],
    &["git", "-C", "..", "log", "-1", "--format=%at"],
    &["git", "init", "-q", "/tmp/repo"],
    &["git", "init", "-q", "../repo"],
    &["tar", "-xf", "a.tar", "-C", "/"],
    &["tar", "-xf", "a.tar", "-C", "../../"],
    &["tar", "-xf", "/etc/a.tar", "-C", "out"],
    &["head", "-c", "1", "/dev/sda"],
    &["head", "-c", "1", "../x"],
    &["sort", "/etc/passwd"],
    &["sort", "-r", "../../x"],
    // Extra, missing or reordered arguments.
    &["cat"],
    &["cat", "a", "b"],
    &["cat", "a", "/etc/passwd"],
    &["git"],
    &["git", "log"],
    &["git", "ls-remote"],
    &["git", "ls-remote", "u", "extra"],
    &["git", "log", "-1", "--format=%at", "-C", "repo"],
    &[
        "git",
        "-C",
        "repo",
        "log",
        "-1",
        "--format=%at",
        "--output=/tmp/x",
    ],
    &["git", "-C", "repo", "log", "-1", "--format=%H"],
    &["git", "-C", "repo", "log", "-2", "--format=%at"],
    &["tar", "-tf"],
    &["tar", "-xf", "a.tar"],
    &["tar", "-xf", "a.tar", "-C"],
    &["tar", "-xvf", "a.tar", "-C", "out"],
    &["tar", "-cf", "a.tar", "out"],
    &["head", "-c", "1"],
    &["head", "-n", "1", "x"],
    &["curl", "https://example.org/"],
    &["curl", "-fsS", "-o", "page.html"],
    &["sort"],
    &["sort", "-r"],
    &["sort", "-R", "x"],
];

#[test]
fn arguments_outside_the_granted_shapes_are_denied() {
    let kit = kit();
    let allowed: Vec<_> = ARGVS
        .iter()
        .filter(|argv| kit.run(argv) == Verdict::Allowed)
        .collect();
    assert!(allowed.is_empty(), "allowed: {allowed:?}");
}

/// Without a shell nothing expands: these are plain names of files in the
/// data directory, where the child's working directory is.
#[test]
fn shell_syntax_in_a_path_argument_is_a_plain_name_inside_the_data_directory() {
    let kit = kit();
    for name in [
        "~/.ssh/id_rsa",
        "~root/x",
        "$HOME",
        "`id`",
        "$(id)",
        "*",
        "a;b",
        "a|b",
        "a b",
    ] {
        assert_eq!(kit.run(&["cat", name]), Verdict::Allowed, "{name}");
    }
}

/// Malformed arguments: refused as invalid input whatever is granted.
#[test]
fn malformed_arguments_are_invalid_input() {
    let kit = kit();
    let long = "a".repeat(2 * 1024 * 1024);
    for (argv, reason) in [
        (vec!["cat", ""], "empty"),
        (vec!["cat", "a\0b"], "NUL"),
        (vec!["", "x"], "empty"),
        (vec!["ca\0t", "x"], "NUL"),
        (vec!["cat", long.as_str()], "bytes"),
    ] {
        kit.run(&argv).assert_invalid(reason);
    }
}

/// Variables a request may not set: not granted, or never grantable
/// because they reconfigure what a program loads or runs.
const ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "PATH",
    "HOME",
    "SHELL",
    "BASH_ENV",
    "ENV",
    "IFS",
    "PS4",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "PERL5OPT",
    "RUBYOPT",
    "GIT_DIR",
    "GIT_EXEC_PATH",
    "GIT_SSH_COMMAND",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_GLOBAL",
    "GIT_ASKPASS",
    "GIT_PAGER",
    "GIT_EDITOR",
    "GIT_PROXY_COMMAND",
    "GIT_TEMPLATE_DIR",
    "EDITOR",
    "PAGER",
    "OPENSSL_CONF",
    "SSL_CERT_FILE",
    "CURL_HOME",
    "http_proxy",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "SSH_AUTH_SOCK",
    "TAR_OPTIONS",
    "MODHOST_USER_ID",
    "MODHOST_ORGANIZATION_ID",
    "MODHOST_TASK_ID",
    "lang",
    "LANG ",
    "LANG\u{202e}",
];

#[test]
fn variables_that_are_not_granted_or_never_grantable_are_refused() {
    let kit = kit();
    for name in ENV {
        let verdict = kit.request(&Request {
            program: "cat".into(),
            args: vec!["x".into()],
            env: vec![((*name).to_owned(), "v".into())],
            ..Request::default()
        });
        assert_ne!(verdict, Verdict::Allowed, "{name:?}");
    }
    for bad in ["", "A=B", "A\0"] {
        let verdict = kit.request(&Request {
            program: "cat".into(),
            args: vec!["x".into()],
            env: vec![(bad.to_owned(), "v".into())],
            ..Request::default()
        });
        verdict.assert_invalid("name");
    }
    let granted = kit.request(&Request {
        program: "cat".into(),
        args: vec!["x".into()],
        env: vec![("LANG".into(), "C.UTF-8".into())],
        ..Request::default()
    });
    assert_eq!(granted, Verdict::Allowed);
}

/// Working directories outside the data directory.
const CWDS: &[&str] = &[
    "/",
    "/tmp",
    "..",
    "../org-globex",
    "a/../..",
    "a/../../b",
    "./..",
    "/data",
    "//",
    "../../..",
];

#[test]
fn working_directories_outside_the_data_directory_are_denied() {
    let kit = kit();
    for cwd in CWDS {
        let verdict = kit.request(&Request {
            program: "cat".into(),
            args: vec!["x".into()],
            cwd: Some((*cwd).to_owned()),
            ..Request::default()
        });
        verdict.assert_denied("outside the module's data directory");
    }
    for (cwd, reason) in [("", "empty"), ("a\0b", "NUL")] {
        let verdict = kit.request(&Request {
            program: "cat".into(),
            args: vec!["x".into()],
            cwd: Some(cwd.to_owned()),
            ..Request::default()
        });
        verdict.assert_invalid(reason);
    }
}

#[test]
fn limits_past_their_ceilings_are_invalid_or_clamped() {
    let kit = kit();
    let zero = kit.request(&Request {
        program: "cat".into(),
        args: vec!["x".into()],
        timeout_ms: Some(0),
        ..Request::default()
    });
    zero.assert_invalid("timeout");
    let stdin = kit.request(&Request {
        program: "cat".into(),
        args: vec!["x".into()],
        stdin: Some(vec![0; 16 * 1024 * 1024 + 1]),
        ..Request::default()
    });
    stdin.assert_invalid("stdin");
    // A huge timeout or output cap is clamped to the grant, not refused.
    let huge = kit.request(&Request {
        program: "cat".into(),
        args: vec!["x".into()],
        timeout_ms: Some(u64::MAX),
        max_output_bytes: Some(u64::MAX),
        ..Request::default()
    });
    assert_eq!(huge, Verdict::Allowed);
}
