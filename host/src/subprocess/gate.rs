//! The capability check of `run-subprocess`: a request against the module's
//! [`SubprocessGrant`], before anything touches a file or a process. Pure,
//! so every refusal is unit-tested without wasm.

use std::time::Duration;

use super::grant::{ProgramGrant, SubprocessGrant};

/// Bytes a request may pipe into a child's standard input: it is copied out
/// of the guest and held by the host until the child has read it.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

/// The longest working directory a request may name (PATH_MAX on Linux).
pub const MAX_CWD_BYTES: usize = 4096;

/// The longest value of one environment variable: Linux refuses single
/// strings over 128 KiB in `execve`, and anything near that is data.
pub const MAX_ENV_VALUE_BYTES: usize = 64 * 1024;

/// The most bytes of arguments and environment one launch may pass,
/// counting each string's NUL and pointer: Linux refuses more than a
/// quarter of the stack limit (2 MiB with the usual 8 MiB) with `E2BIG`,
/// and the host adds `PATH` and the identity variables on top.
pub const MAX_EXEC_BYTES: usize = 1024 * 1024;

/// A request, as the guest sent it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub timeout_ms: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Malformed whatever the manifest says (`invalid-input`).
    #[error("{0}")]
    Invalid(String),
    /// Well formed, but not granted (`permission-denied`); the text names
    /// the missing grant.
    #[error("{0}")]
    NotGranted(String),
    /// The host failed while checking (`internal`).
    #[error("{0}")]
    Internal(String),
}

/// A request the manifest allows, with its limits settled.
#[derive(Debug, Clone)]
pub struct Approved<'g> {
    pub program: &'g ProgramGrant,
    /// Indices into the request's `args` that a granted shape reads as a
    /// `{path}`: resolved inside the working directory before launch.
    pub path_args: Vec<usize>,
    /// Relative to the data directory; `None` is the data directory itself.
    pub cwd: Option<String>,
    pub timeout: Duration,
    pub max_output_bytes: u64,
}

/// Checks `request` against `grant`. Nothing is launched or opened here;
/// what needs the filesystem (the working directory, `{path}` arguments)
/// is checked by the caller with the data directory in hand.
pub fn check<'g>(grant: &'g SubprocessGrant, request: &Request) -> Result<Approved<'g>, Denied> {
    let invalid = |s: String| Denied::Invalid(s);
    let program = request.program.as_str();
    if program.is_empty() {
        return Err(invalid("the program is empty".into()));
    }
    if program.contains('\0') {
        return Err(invalid("the program contains NUL".into()));
    }
    for (i, arg) in request.args.iter().enumerate() {
        if arg.is_empty() {
            return Err(invalid(format!("argument {} is empty", i + 1)));
        }
        if arg.contains('\0') {
            return Err(invalid(format!("argument {} contains NUL", i + 1)));
        }
    }
    let cwd = match request.cwd.as_deref() {
        None => None,
        Some(dir) => Some(check_cwd(dir)?),
    };
    check_env(grant, &request.env)?;
    let exec_bytes: usize = std::iter::once(program.len())
        .chain(request.args.iter().map(String::len))
        .chain(request.env.iter().map(|(k, v)| k.len() + 1 + v.len()))
        .map(|n| n + 1 + std::mem::size_of::<usize>())
        .sum();
    if exec_bytes > MAX_EXEC_BYTES {
        return Err(invalid(format!(
            "the arguments and environment are {exec_bytes} bytes; a launch passes at most {MAX_EXEC_BYTES}"
        )));
    }
    if request
        .stdin
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STDIN_BYTES)
    {
        return Err(invalid(format!(
            "stdin is longer than {MAX_STDIN_BYTES} bytes"
        )));
    }
    let timeout = match request.timeout_ms {
        Some(0) => return Err(invalid("timeout-ms must be at least 1".into())),
        Some(ms) => Duration::from_millis(ms).min(grant.timeout),
        None => grant.timeout,
    };
    let max_output_bytes = request
        .max_output_bytes
        .map_or(grant.max_output_bytes, |b| b.min(grant.max_output_bytes));

    let Some(granted) = grant.program(program) else {
        return Err(Denied::NotGranted(not_granted(grant, program)));
    };
    let path_args = granted
        .path_args(&request.args)
        .map_err(|denied| Denied::NotGranted(denied.to_string()))?;
    Ok(Approved {
        program: granted,
        path_args,
        cwd,
        timeout,
        max_output_bytes,
    })
}

fn not_granted(grant: &SubprocessGrant, program: &str) -> String {
    let shown = crate::text::shown(program);
    if grant.is_empty() {
        return format!("no [[subprocess.programs]] grant: `{shown}` may not be launched");
    }
    let names: Vec<&str> = grant.programs.iter().map(|p| p.name.as_str()).collect();
    let hint = if program.contains('/') && !program.starts_with('/')
        || program.starts_with('/') && grant.program(program).is_none()
    {
        " (a program is named exactly as granted, never by another path)"
    } else {
        ""
    };
    format!(
        "no [[subprocess.programs]] grant for `{shown}`{hint}; granted: {}",
        names.join(", ")
    )
}

/// A working directory is a relative path of plain components.
fn check_cwd(dir: &str) -> Result<String, Denied> {
    if dir.contains('\0') {
        return Err(Denied::Invalid("cwd contains NUL".into()));
    }
    if dir.len() > MAX_CWD_BYTES {
        return Err(Denied::Invalid(format!(
            "cwd is longer than {MAX_CWD_BYTES} bytes"
        )));
    }
    if dir.is_empty() {
        return Err(Denied::Invalid(
            "cwd is empty; leave it out to run in the data directory".into(),
        ));
    }
    let outside = || {
        Denied::NotGranted(format!(
            "cwd `{}` is outside the module's data directory: it must be a relative path without `..`",
            crate::text::shown(dir)
        ))
    };
    if dir.starts_with('/') {
        return Err(outside());
    }
    if dir.split('/').any(|part| part == "..") {
        return Err(outside());
    }
    Ok(dir.to_owned())
}

fn check_env(grant: &SubprocessGrant, env: &[(String, String)]) -> Result<(), Denied> {
    for (i, (name, value)) in env.iter().enumerate() {
        let shown = crate::text::shown(name);
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(Denied::Invalid(format!(
                "environment variable name `{shown}` is not a name"
            )));
        }
        if value.contains('\0') {
            return Err(Denied::Invalid(format!(
                "environment variable `{shown}` contains NUL"
            )));
        }
        if value.len() > MAX_ENV_VALUE_BYTES {
            return Err(Denied::Invalid(format!(
                "environment variable `{shown}` is longer than {MAX_ENV_VALUE_BYTES} bytes"
            )));
        }
        if env[..i].iter().any(|(n, _)| n == name) {
            return Err(Denied::Invalid(format!(
                "environment variable `{shown}` is set twice"
            )));
        }
        if !grant.env.iter().any(|g| g.as_str() == name) {
            return Err(Denied::NotGranted(format!(
                "[subprocess] env does not grant `{shown}`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LoadEnv, parse};

    fn grant(extra: &str) -> SubprocessGrant {
        let text = format!(
            "name = \"t\"\nversion = \"0.1.0\"\ncomponent = \"t.wasm\"\n\
             [subprocess]\nenv = [\"LANG\"]\ntimeout-ms = 5000\nmax-output-bytes = 1000\n\
             [[subprocess.programs]]\nprogram = \"sh\"\nargs = [[\"-c\", \"true\"]]\n{extra}"
        );
        parse(&text, &LoadEnv::host_default())
            .expect("test manifest is valid")
            .policy
            .subprocess
    }

    fn request(program: &str, args: &[&str]) -> Request {
        Request {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Request::default()
        }
    }

    fn denied(g: &SubprocessGrant, r: &Request) -> Denied {
        check(g, r).expect_err("request must be refused")
    }

    #[test]
    fn an_argument_list_over_the_exec_limit_is_invalid_input_not_internal() {
        let g = grant(
            "[[subprocess.programs]]\nprogram = \"echo\"\nargs = [[\"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\", \"{value}\"]]\n",
        );
        let big = "x".repeat(64 * 1024 - 1);
        let args: Vec<&str> = (0..17).map(|_| big.as_str()).collect();
        let Denied::Invalid(reason) = denied(&g, &request("echo", &args)) else {
            panic!("expected invalid-input");
        };
        assert!(reason.contains("a launch passes at most"), "{reason}");
        let fits: Vec<&str> = (0..17).map(|_| "small").collect();
        assert!(check(&g, &request("echo", &fits)).is_ok());
    }

    #[test]
    fn granted_program_with_granted_shape_is_approved_with_manifest_limits() {
        let g = grant("");
        let ok = check(&g, &request("sh", &["-c", "true"])).unwrap();
        assert_eq!(ok.program.name, "sh");
        assert_eq!(ok.timeout, Duration::from_secs(5));
        assert_eq!(ok.max_output_bytes, 1000);
        assert!(ok.path_args.is_empty());
    }

    #[test]
    fn spawn_denied_when_program_not_granted_names_the_grant() {
        let g = grant("");
        let Denied::NotGranted(reason) = denied(&g, &request("git", &["status"])) else {
            panic!("expected permission-denied");
        };
        assert!(reason.contains("[[subprocess.programs]]"), "{reason}");
        assert!(reason.contains("granted: sh"), "{reason}");
    }

    #[test]
    fn program_named_by_another_path_is_not_granted() {
        let g = grant("");
        for program in ["./sh", "/bin/sh", "/usr/bin/../bin/sh", "bin/sh"] {
            assert!(
                matches!(
                    denied(&g, &request(program, &["-c", "true"])),
                    Denied::NotGranted(_)
                ),
                "{program}"
            );
        }
    }

    #[test]
    fn empty_program_token_or_nul_is_invalid_input() {
        let g = grant("");
        assert!(matches!(denied(&g, &request("", &[])), Denied::Invalid(_)));
        assert!(matches!(
            denied(&g, &request("sh\0", &[])),
            Denied::Invalid(_)
        ));
        assert!(matches!(
            denied(&g, &request("sh", &["-c", ""])),
            Denied::Invalid(_)
        ));
        assert!(matches!(
            denied(&g, &request("sh", &["-c", "true\0; rm"])),
            Denied::Invalid(_)
        ));
    }

    #[test]
    fn arguments_outside_every_shape_are_not_granted() {
        let g = grant("");
        let Denied::NotGranted(reason) = denied(&g, &request("sh", &["-c", "id"])) else {
            panic!("expected permission-denied");
        };
        assert!(reason.contains("no granted shape"), "{reason}");
    }

    #[test]
    fn cwd_must_be_relative_without_parent_components() {
        let g = grant("");
        let with_cwd = |cwd: &str| Request {
            cwd: Some(cwd.into()),
            ..request("sh", &["-c", "true"])
        };
        for cwd in ["..", "a/../..", "/", "/etc", "a/.."] {
            assert!(
                matches!(denied(&g, &with_cwd(cwd)), Denied::NotGranted(_)),
                "{cwd}"
            );
        }
        assert!(matches!(denied(&g, &with_cwd("a\0b")), Denied::Invalid(_)));
        assert!(matches!(denied(&g, &with_cwd("")), Denied::Invalid(_)));
        assert_eq!(
            check(&g, &with_cwd("repo/sub")).unwrap().cwd.as_deref(),
            Some("repo/sub")
        );
    }

    #[test]
    fn only_granted_environment_names_pass() {
        let g = grant("");
        let with_env = |name: &str, value: &str| Request {
            env: vec![(name.into(), value.into())],
            ..request("sh", &["-c", "true"])
        };
        assert!(check(&g, &with_env("LANG", "C.UTF-8")).is_ok());
        for name in [
            "LD_PRELOAD",
            "MODHOST_USER_ID",
            "GIT_SSH_COMMAND",
            "PATH",
            "lang",
        ] {
            assert!(
                matches!(denied(&g, &with_env(name, "x")), Denied::NotGranted(_)),
                "{name}"
            );
        }
        for name in ["LANG=x", "", "A\0B"] {
            assert!(
                matches!(denied(&g, &with_env(name, "x")), Denied::Invalid(_)),
                "{name:?}"
            );
        }
        assert!(matches!(
            denied(&g, &with_env("LANG", "a\0b")),
            Denied::Invalid(_)
        ));
        let twice = Request {
            env: vec![("LANG".into(), "C".into()), ("LANG".into(), "C".into())],
            ..request("sh", &["-c", "true"])
        };
        assert!(matches!(denied(&g, &twice), Denied::Invalid(_)));
    }

    #[test]
    fn request_limits_are_capped_by_the_manifest() {
        let g = grant("");
        let r = Request {
            timeout_ms: Some(60_000),
            max_output_bytes: Some(1 << 40),
            ..request("sh", &["-c", "true"])
        };
        let ok = check(&g, &r).unwrap();
        assert_eq!(ok.timeout, Duration::from_secs(5));
        assert_eq!(ok.max_output_bytes, 1000);
        let smaller = Request {
            timeout_ms: Some(10),
            max_output_bytes: Some(3),
            ..request("sh", &["-c", "true"])
        };
        let ok = check(&g, &smaller).unwrap();
        assert_eq!(ok.timeout, Duration::from_millis(10));
        assert_eq!(ok.max_output_bytes, 3);
        let zero = Request {
            timeout_ms: Some(0),
            ..request("sh", &["-c", "true"])
        };
        assert!(matches!(denied(&g, &zero), Denied::Invalid(_)));
    }

    #[test]
    fn path_placeholders_are_reported_for_resolution() {
        let g = grant(
            "[[subprocess.programs]]\nprogram = \"cat\"\nargs = [[\"[-n]\", \"{path}\"], [\"--\", \"{path}\", \"{path}\"]]\n",
        );
        assert_eq!(
            check(&g, &request("cat", &["a.txt"])).unwrap().path_args,
            [0]
        );
        assert_eq!(
            check(&g, &request("cat", &["-n", "a.txt"]))
                .unwrap()
                .path_args,
            [1]
        );
        assert_eq!(
            check(&g, &request("cat", &["--", "a", "b"]))
                .unwrap()
                .path_args,
            [1, 2]
        );
    }

    #[test]
    fn path_placeholder_never_takes_a_transport_address() {
        let g = grant("[[subprocess.programs]]\nprogram = \"cat\"\nargs = [[\"{path}\"]]\n");
        assert!(matches!(
            denied(&g, &request("cat", &["ext::sh -c id"])),
            Denied::NotGranted(_)
        ));
        assert!(check(&g, &request("cat", &["notes.txt"])).is_ok());
    }

    #[test]
    fn oversized_stdin_is_invalid_input() {
        let g = grant("");
        let r = Request {
            stdin: Some(vec![0; MAX_STDIN_BYTES + 1]),
            ..request("sh", &["-c", "true"])
        };
        assert!(matches!(denied(&g, &r), Denied::Invalid(_)));
    }
}
