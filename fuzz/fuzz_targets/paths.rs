//! Any request against a grant with `{path}`, `{value}` and `{int}`
//! shapes: decided without a panic, and nothing allowed puts an absolute
//! path, a `..` step or an option where a `{path}` stands, nor names a
//! working directory that is absolute or climbs.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use modhost::kit::{PolicyKit, Verdict};
use modhost::subprocess::gate::Request;

const GRANT: &str = r#"
name = "fuzz"
version = "0.1.0"
component = "fuzz.wasm"

[subprocess]
env = ["LANG"]

[[subprocess.programs]]
program = "cat"
args = [["{path}"], ["-n", "{path}", "[-s]"]]

[[subprocess.programs]]
program = "tar"
args = [["-xf", "{path}", "-C", "{path}"]]

[[subprocess.programs]]
program = "head"
args = [["-c", "{int}", "{value}"]]
"#;

#[derive(Debug, Arbitrary)]
struct Input {
    program: u8,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
}

fn kit() -> &'static PolicyKit {
    static KIT: OnceLock<PolicyKit> = OnceLock::new();
    KIT.get_or_init(|| PolicyKit::parse(GRANT).expect("the fuzz grant loads"))
}

/// A path that is absolute or climbs: out of the data directory.
fn leaves(path: &str) -> bool {
    path.starts_with('/') || path.split('/').any(|c| c == "..")
}

fuzz_target!(|input: Input| {
    let program = ["cat", "tar", "head", "sh"][usize::from(input.program % 4)];
    let request = Request {
        program: program.to_owned(),
        args: input.args.clone(),
        cwd: input.cwd.clone(),
        env: input.env,
        ..Request::default()
    };
    if kit().request(&request) != Verdict::Allowed {
        return;
    }
    if let Some(cwd) = &input.cwd {
        assert!(!leaves(cwd), "allowed cwd {cwd:?}");
    }
    let path_positions: &[usize] = match (program, input.args.len()) {
        ("cat", 1) => &[0],
        ("cat", _) => &[1],
        ("tar", _) => &[1, 3],
        _ => &[],
    };
    // A `{path}` the program would read as an option is not a path either;
    // a working directory is opened by the host, never passed as an argument.
    for &i in path_positions {
        let arg = &input.args[i];
        assert!(
            !leaves(arg) && !arg.starts_with('-'),
            "allowed {program} {:?}",
            input.args
        );
    }
});
