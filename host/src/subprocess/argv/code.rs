//! Programs whose arguments are code: shells, interpreters, and runners
//! that start another program.
//!
//! The rule for shells and interpreters: a shape must fix the code with a
//! literal before any placeholder: the value of a code option (`-c`, `-e`,
//! `--eval`, `-m`, ...), or the first operand (a script, which must then be
//! an absolute path: a relative one is read from the data directory, which
//! the module writes). Until then every placeholder is refused, since it
//! could be the script or the value of an option that loads code; after it,
//! a placeholder is an argument of the code, unless it is the value of a
//! code or loading option. A shape that never fixes its code, or asks for
//! it on standard input (`sh -s`, `python3 -i`, a `-` operand), is refused
//! too: the caller supplies standard input. Interpreters whose command
//! lines are not modelled take literals only.
//!
//! Runners (`env`, `timeout`, `nice`, `setsid`, ...) run the program their
//! arguments name, so a `{value}` or `{path}` anywhere in their shape is
//! refused (`{int}` is allowed: a number cannot name a program on the
//! child's search path); a literal program inside is checked as if granted
//! directly. `xargs` and `parallel` build command lines from standard input
//! and are refused in every shape. `busybox` and `toybox` are checked as
//! the applet their first argument names.

use super::words::{ArgToken, Dialect, Family, ShapeError, hits, long_option_name};
use crate::text::shown;

/// Checks the shape of a program a runner runs, as if granted directly.
pub(super) type CheckAs<'a> = &'a dyn Fn(Family, &[ArgToken]) -> Result<(), ShapeError>;

/// What a program's arguments run: shells and interpreters, runners,
/// batch runners and multi-call binaries; `None` for the rest.
pub(crate) fn classify(base: &str) -> Option<Family> {
    if SHELLS.contains(&base) {
        return Some(Family::Code(Dialect::Sh));
    }
    if base == "fish" {
        return Some(Family::Code(Dialect::Fish));
    }
    if RUNNERS.contains(&base) {
        return Some(Family::Runner);
    }
    if BATCH_RUNNERS.contains(&base) {
        return Some(Family::Batch);
    }
    if MULTI_CALL.contains(&base) {
        return Some(Family::MultiCall);
    }
    INTERPRETERS
        .iter()
        .find(|(name, _)| {
            base.strip_prefix(name)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        })
        .map(|&(_, dialect)| Family::Code(dialect))
}

/// POSIX-like shells and csh (fish has its own rules).
const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "ksh93", "yash", "csh",
    "tcsh",
];

/// Interpreters by name; a trailing version (`python3.12`, `lua5.4`) is
/// ignored.
const INTERPRETERS: &[(&str, Dialect)] = &[
    ("python", Dialect::Python),
    ("pypy", Dialect::Python),
    ("perl", Dialect::Perl),
    ("ruby", Dialect::Ruby),
    ("node", Dialect::Node),
    ("nodejs", Dialect::Node),
    ("php", Dialect::Php),
    ("lua", Dialect::Lua),
    ("luajit", Dialect::Lua),
    ("awk", Dialect::Awk),
    ("gawk", Dialect::Awk),
    ("mawk", Dialect::Awk),
    ("nawk", Dialect::Awk),
    ("irb", Dialect::Unmodeled { stdin: true }),
    ("deno", Dialect::Unmodeled { stdin: true }),
    ("bun", Dialect::Unmodeled { stdin: false }),
    ("tclsh", Dialect::Unmodeled { stdin: true }),
    ("wish", Dialect::Unmodeled { stdin: true }),
    ("expect", Dialect::Unmodeled { stdin: true }),
    ("rscript", Dialect::Unmodeled { stdin: false }),
    ("julia", Dialect::Unmodeled { stdin: true }),
    ("pwsh", Dialect::Unmodeled { stdin: true }),
    ("powershell", Dialect::Unmodeled { stdin: true }),
    ("osascript", Dialect::Unmodeled { stdin: true }),
    ("guile", Dialect::Unmodeled { stdin: true }),
    ("java", Dialect::Unmodeled { stdin: false }),
    ("jshell", Dialect::Unmodeled { stdin: true }),
];

/// Programs that run the program their arguments name.
const RUNNERS: &[&str] = &[
    "env",
    "nice",
    "nohup",
    "timeout",
    "sudo",
    "doas",
    "su",
    "runuser",
    "setsid",
    "stdbuf",
    "chroot",
    "flock",
    "watch",
    "time",
    "unshare",
    "nsenter",
    "strace",
    "ltrace",
    "script",
    "systemd-run",
    "chrt",
    "ionice",
    "taskset",
    "bwrap",
];

/// Runners whose command lines come from standard input.
const BATCH_RUNNERS: &[&str] = &["xargs", "parallel"];

/// One binary, many programs: the first argument names the applet.
const MULTI_CALL: &[&str] = &["busybox", "toybox"];

/// Options of one kind: short letters (also inside a cluster) and long
/// names (also abbreviated or with `=value`).
struct Opts {
    short: &'static [char],
    long: &'static [&'static str],
}

const NONE: Opts = Opts {
    short: &[],
    long: &[],
};

/// Where one language's command line keeps its code.
struct Rules {
    /// Whose value is code: `-c`, `-e`, `--eval` (python's `-m` too: its
    /// value is the module that runs).
    code: Opts,
    /// Whose value is a file of code (`awk -f`): a literal must be absolute.
    file: Opts,
    /// Whose value loads code beside the program: `node -r`, `perl -M`,
    /// `-I` directories, `php -d` ini settings.
    load: Opts,
    /// Whose value is data (awk's `-v` and `-F`): a placeholder may stand
    /// there.
    data: Opts,
    /// Whose separate value is something else.
    value: Opts,
    /// Letters whose value can only be attached and takes the rest of the
    /// cluster (`perl -i.bak`, `-F:`). A cluster where such a letter is
    /// followed by one that matters here is refused: which one wins
    /// depends on the letter.
    rest: &'static [char],
    /// Letters that take the digits after them (`perl -l0`, `-0777`).
    digits: &'static [char],
    /// Options after which code is read from standard input.
    stdin: Opts,
    /// Options refused outright, and why.
    refused: (Opts, &'static str),
    /// Letters that make the first operand the code (`sh -c`).
    operand_code: &'static [char],
    /// Letters that open every operand with perl's two-argument open.
    magic: &'static [char],
    /// Whether a short option's value may be attached (`-cCODE`).
    attached: bool,
    /// Whether `+` also starts options (`sh +e`).
    plus: bool,
    /// Whether the first operand is program text (awk) rather than a file.
    operand_is_text: bool,
    /// Whether, given no code, it reads code from standard input.
    stdin_default: bool,
    /// Whether a long option not listed here may take the next argument
    /// as its value, so that argument cannot settle the code.
    long_values: bool,
    /// The option under which code of the caller's choosing cannot run
    /// commands or load extensions (gawk's `--sandbox`).
    sandbox: Option<&'static str>,
}

const SH: Rules = Rules {
    code: NONE,
    file: NONE,
    load: NONE,
    data: NONE,
    value: Opts {
        short: &['o', 'O'],
        long: &["--rcfile", "--init-file", "--emulate"],
    },
    rest: &[],
    digits: &[],
    stdin: Opts {
        short: &['s', 't'],
        long: &[],
    },
    refused: (NONE, ""),
    operand_code: &['c'],
    magic: &[],
    attached: false,
    plus: true,
    operand_is_text: false,
    stdin_default: true,
    long_values: false,
    sandbox: None,
};

const FISH: Rules = Rules {
    code: Opts {
        short: &['c', 'C'],
        long: &["--command", "--init-command"],
    },
    value: Opts {
        short: &['d', 'o', 'f'],
        long: &[
            "--debug",
            "--debug-output",
            "--features",
            "--profile",
            "--profile-startup",
        ],
    },
    stdin: Opts {
        short: &['i', 's'],
        long: &["--interactive"],
    },
    operand_code: &[],
    attached: true,
    plus: false,
    ..SH
};

const PYTHON: Rules = Rules {
    code: Opts {
        short: &['c', 'm'],
        long: &[],
    },
    value: Opts {
        short: &['W', 'X'],
        long: &["--check-hash-based-pycs"],
    },
    stdin: Opts {
        short: &['i'],
        long: &[],
    },
    operand_code: &[],
    attached: true,
    plus: false,
    long_values: false,
    ..SH
};

const PERL: Rules = Rules {
    code: Opts {
        short: &['e', 'E'],
        long: &[],
    },
    load: Opts {
        short: &['I', 'M', 'm'],
        long: &[],
    },
    value: NONE,
    rest: &['i', 'F', 'x', 'C', 'd', 'D', 'V'],
    digits: &['l', '0'],
    stdin: NONE,
    magic: &['n', 'p', 'i'],
    operand_code: &[],
    attached: true,
    plus: false,
    ..SH
};

const RUBY: Rules = Rules {
    code: Opts {
        short: &['e'],
        long: &[],
    },
    load: Opts {
        short: &['r', 'I'],
        long: &["--require"],
    },
    value: Opts {
        short: &['C', 'E'],
        long: &[
            "--encoding",
            "--external-encoding",
            "--internal-encoding",
            "--enable",
            "--disable",
            "--dump",
            "--backtrace-limit",
            "--crash-report",
            "--parser",
        ],
    },
    rest: &['x', 'F', 'i', 'K', 'T', 'W'],
    digits: &['0'],
    stdin: NONE,
    operand_code: &[],
    attached: true,
    plus: false,
    ..SH
};

const NODE: Rules = Rules {
    code: Opts {
        short: &['e', 'p'],
        long: &["--eval", "--print"],
    },
    load: Opts {
        short: &['r'],
        long: &[
            "--require",
            "--import",
            "--loader",
            "--experimental-loader",
            "--env-file",
            "--env-file-if-exists",
            "--snapshot-blob",
            "--openssl-config",
            "--test-reporter",
            "--experimental-config-file",
        ],
    },
    value: Opts {
        short: &['C'],
        long: &["--conditions", "--input-type", "--title"],
    },
    stdin: Opts {
        short: &['i'],
        long: &["--interactive"],
    },
    refused: (
        Opts {
            short: &[],
            long: &["--test", "--run", "--experimental-default-config-file"],
        },
        "it runs code found in the working directory, which the module writes",
    ),
    operand_code: &[],
    attached: false,
    plus: false,
    long_values: true,
    ..SH
};

const PHP: Rules = Rules {
    code: Opts {
        short: &['r', 'B', 'R', 'E'],
        long: &[
            "--run",
            "--process-begin",
            "--process-code",
            "--process-end",
        ],
    },
    file: Opts {
        short: &['f', 'F'],
        long: &["--file", "--process-file"],
    },
    load: Opts {
        short: &['c', 'd', 'z'],
        long: &["--php-ini", "--define", "--zend-extension"],
    },
    value: Opts {
        short: &['t'],
        long: &["--docroot", "--rf", "--rc", "--re", "--rz", "--ri"],
    },
    stdin: Opts {
        short: &['a'],
        long: &["--interactive"],
    },
    refused: (
        Opts {
            short: &['S'],
            long: &["--server"],
        },
        "its web server runs the PHP files of the working directory, which the module writes",
    ),
    operand_code: &[],
    attached: true,
    plus: false,
    ..SH
};

const LUA: Rules = Rules {
    code: Opts {
        short: &['e'],
        long: &[],
    },
    load: Opts {
        short: &['l', 'j'],
        long: &[],
    },
    value: NONE,
    rest: &['O'],
    stdin: Opts {
        short: &['i'],
        long: &[],
    },
    operand_code: &[],
    attached: true,
    plus: false,
    long_values: false,
    ..SH
};

const AWK: Rules = Rules {
    code: Opts {
        short: &['e'],
        long: &["--source"],
    },
    file: Opts {
        short: &['f', 'E'],
        long: &["--file", "--exec"],
    },
    load: Opts {
        short: &['i', 'l'],
        long: &["--include", "--load"],
    },
    data: Opts {
        short: &['v', 'F'],
        long: &["--assign", "--field-separator"],
    },
    value: Opts {
        short: &['W', 'Z'],
        long: &[],
    },
    rest: &['d', 'D', 'o', 'p', 'L'],
    stdin: NONE,
    operand_code: &[],
    attached: true,
    plus: false,
    operand_is_text: true,
    stdin_default: false,
    sandbox: Some("--sandbox"),
    ..SH
};

fn rules(dialect: Dialect) -> Option<&'static Rules> {
    Some(match dialect {
        Dialect::Sh => &SH,
        Dialect::Fish => &FISH,
        Dialect::Python => &PYTHON,
        Dialect::Perl => &PERL,
        Dialect::Ruby => &RUBY,
        Dialect::Node => &NODE,
        Dialect::Php => &PHP,
        Dialect::Lua => &LUA,
        Dialect::Awk => &AWK,
        Dialect::Unmodeled { .. } => return None,
    })
}

const UNFIXED: &str = "it stands before the code is fixed, where an option may take it as its \
     value; fix the code first with a literal script (after `--` when an option precedes it) or \
     literal `-c`/`-e` code";
const SCRIPT: &str = "it is the script the program runs (its first operand)";
const SHELL_COMMAND: &str = "it is the command string the shell runs with `-c`";
const AWK_PROGRAM: &str = "it is the awk program (gawk's `--sandbox` lets the caller choose one)";
const CODE_VALUE: &str =
    "it is the value of an option whose value is code (`-c`, `-e`, `-m`, `--eval`, ...)";
const FILE_VALUE: &str = "it names the file of code the program runs";
const LOAD_VALUE: &str = "it names code the program loads (a module, library, directory or setting, as with `-r` or `-M`)";
const RELATIVE_SCRIPT: &str = "a relative script is read from the data directory, which the module \
     writes; name it by an absolute path";
const STDIN: &str =
    "the program would read its code from standard input, which the caller supplies";
const MAGIC_OPEN: &str = "with perl's `-n`, `-p` or `-i` every argument is opened with the \
     two-argument `open`, where `cmd|` runs a command";
const UNMODELED: &str = "this interpreter's command line is not modelled, so a placeholder could be \
     its code; grant literal arguments only";
const RUNNER: &str = "the program runs another program, which a placeholder could name or feed \
     code to; grant the inner program directly";
const BATCH: &str = "the program builds command lines from its standard input, which the caller \
     supplies; grant the inner program directly";
const APPLET: &str = "it names the applet the multi-call binary runs";
const VALUE_OPTIONAL: &str = "an optional flag cannot stand where an option's value goes";
const OPTIONAL_CODE: &str =
    "an optional flag cannot say where the code is: with and without it the code differs";
const AMBIGUOUS_CLUSTER: &str = "a letter that takes the rest of its cluster as a value is \
     followed by one that would change where the code is; write each option on its own";

/// The refusals of a shell, interpreter or runner shape.
pub(super) fn check(
    family: Family,
    tokens: &[ArgToken],
    check_as: CheckAs<'_>,
) -> Result<(), ShapeError> {
    let placeholder = |t: &ArgToken| matches!(t, ArgToken::Value | ArgToken::Path);
    match family {
        Family::Code(dialect) => match rules(dialect) {
            Some(rules) => check_code(rules, tokens),
            None => {
                if let Some(t) = tokens.iter().find(|t| is_placeholder(t)) {
                    return Err(refused(t, UNMODELED));
                }
                let Dialect::Unmodeled { stdin } = dialect else {
                    return Ok(());
                };
                let operand = tokens
                    .iter()
                    .any(|t| matches!(t, ArgToken::Literal(l) if !l.starts_with('-')));
                if stdin && !operand {
                    return Err(ShapeError::RefusedShape { why: STDIN });
                }
                Ok(())
            }
        },
        Family::Runner => {
            if let Some(t) = tokens.iter().find(|t| placeholder(t)) {
                return Err(refused(t, RUNNER));
            }
            // A literal program inside is held to its own rules.
            for (i, token) in tokens.iter().enumerate() {
                if let ArgToken::Literal(l) = token
                    && !l.starts_with('-')
                    && !l.contains('=')
                {
                    let inner = Family::of(l);
                    if inner != Family::Other {
                        return check_as(inner, &tokens[i + 1..]);
                    }
                }
            }
            Ok(())
        }
        Family::Batch => Err(ShapeError::RefusedShape { why: BATCH }),
        Family::MultiCall => match tokens.first() {
            Some(ArgToken::Literal(applet)) if !applet.starts_with('-') => {
                check_as(Family::of(applet), &tokens[1..])
            }
            Some(t) if is_placeholder(t) => Err(refused(t, APPLET)),
            _ => match tokens.iter().find(|t| placeholder(t)) {
                Some(t) => Err(refused(t, RUNNER)),
                None => Ok(()),
            },
        },
        _ => Ok(()),
    }
}

fn is_placeholder(t: &ArgToken) -> bool {
    matches!(t, ArgToken::Value | ArgToken::Path | ArgToken::Int)
}

fn refused(token: &ArgToken, why: &'static str) -> ShapeError {
    ShapeError::Refused {
        token: shown(&token.to_string()),
        why,
    }
}

/// What the next token is, after an option that takes a value.
#[derive(Clone, Copy)]
enum Pending {
    Code,
    File,
    Load,
    Data,
    Value,
}

/// Whether a literal names standard input as a file.
pub(super) fn is_stdin(literal: &str) -> bool {
    matches!(
        literal,
        "-" | "/dev/stdin" | "/dev/fd/0" | "/proc/self/fd/0"
    )
}

/// Where a walk over a shape stands.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct State {
    /// A literal fixed the code.
    settled: bool,
    /// `sh -c`: the first operand is the code.
    operand_code: bool,
    /// The code comes from standard input.
    from_stdin: bool,
    /// perl's `-n`, `-p` or `-i`: every operand goes through `open`.
    magic: bool,
    /// The last option may have taken the next token as its value.
    ambiguous: bool,
    /// gawk's `--sandbox` was given.
    sandboxed: bool,
}

/// Walks a shape the way the program reads its command line; see the
/// module documentation for the rule.
fn check_code(rules: &Rules, tokens: &[ArgToken]) -> Result<(), ShapeError> {
    let mut st = State::default();
    // Whether options have ended: the rest are the code's arguments.
    let mut operands = false;
    // After `--`: the next token is an operand whatever it looks like.
    let mut dashdash = false;
    let mut pending: Option<Pending> = None;

    for token in tokens {
        if let Some(kind) = pending.take() {
            match token {
                ArgToken::Optional(_) => return Err(refused(token, VALUE_OPTIONAL)),
                ArgToken::Literal(l) => {
                    settle(kind, l, &mut st).map_err(|why| ShapeError::Refused {
                        token: shown(l),
                        why,
                    })?
                }
                _ => match kind {
                    Pending::Code | Pending::File if st.sandboxed => st.settled = true,
                    Pending::Code => return Err(refused(token, CODE_VALUE)),
                    Pending::File => return Err(refused(token, FILE_VALUE)),
                    Pending::Load => return Err(refused(token, LOAD_VALUE)),
                    Pending::Data => {}
                    Pending::Value if !st.settled => return Err(refused(token, UNFIXED)),
                    Pending::Value => {}
                },
            }
            continue;
        }
        let option = match token {
            ArgToken::Literal(l) | ArgToken::Optional(l) if !operands && !dashdash => {
                let starts = l.starts_with('-') || (rules.plus && l.starts_with('+'));
                (starts && l.len() > 1).then_some(l.as_str())
            }
            _ => None,
        };
        let was_ambiguous = std::mem::take(&mut st.ambiguous);
        if let Some(option) = option {
            if option == "--" {
                dashdash = true;
                continue;
            }
            let before = st;
            pending = read_option(rules, option, &mut st)?;
            if matches!(token, ArgToken::Optional(_)) {
                if pending.is_some()
                    || st.settled != before.settled
                    || st.operand_code != before.operand_code
                {
                    return Err(refused(token, OPTIONAL_CODE));
                }
                // Only a required `--sandbox` counts.
                st.sandboxed = before.sandboxed;
            }
            continue;
        }
        dashdash = false;
        // An operand, or an argument after the options.
        match token {
            ArgToken::Literal(l) if !operands => {
                operands = true;
                if st.settled {
                    continue;
                }
                if rules.plus && l == "-" {
                    // A shell's `-` ends its options.
                    operands = false;
                    dashdash = true;
                    continue;
                }
                if is_stdin(l) && !st.operand_code && !rules.operand_is_text {
                    st.from_stdin = true;
                    st.settled = true;
                    continue;
                }
                let text = st.operand_code || rules.operand_is_text;
                if !text && !l.starts_with('/') {
                    return Err(ShapeError::Refused {
                        token: shown(l),
                        why: RELATIVE_SCRIPT,
                    });
                }
                if was_ambiguous {
                    // It may have been the value of the option before it.
                    operands = false;
                    continue;
                }
                st.settled = true;
            }
            ArgToken::Literal(_) | ArgToken::Optional(_) => {}
            _ => {
                if !st.settled {
                    // Under gawk's `--sandbox` the program may be the caller's.
                    let sandboxed_text = st.sandboxed && rules.operand_is_text && !was_ambiguous;
                    if !sandboxed_text {
                        let why = if was_ambiguous {
                            UNFIXED
                        } else if st.operand_code {
                            SHELL_COMMAND
                        } else if rules.operand_is_text {
                            AWK_PROGRAM
                        } else {
                            SCRIPT
                        };
                        return Err(refused(token, why));
                    }
                    st.settled = true;
                } else if st.magic && matches!(token, ArgToken::Value | ArgToken::Path) {
                    return Err(refused(token, MAGIC_OPEN));
                }
                operands = true;
            }
        }
    }
    if st.from_stdin || (!st.settled && rules.stdin_default) {
        return Err(ShapeError::RefusedShape { why: STDIN });
    }
    Ok(())
}

/// A literal value of an option that takes one, attached or not.
fn settle(kind: Pending, value: &str, st: &mut State) -> Result<(), &'static str> {
    match kind {
        Pending::Code => {
            st.settled = true;
            st.from_stdin |= is_stdin(value);
        }
        Pending::File => {
            if is_stdin(value) {
                st.from_stdin = true;
            } else if !value.starts_with('/') {
                return Err(RELATIVE_SCRIPT);
            }
            st.settled = true;
        }
        Pending::Load | Pending::Data | Pending::Value => {}
    }
    Ok(())
}

/// The kind of value an option takes, if it takes one.
fn kind_of(rules: &Rules, short: Option<char>, long: Option<&str>) -> Option<Pending> {
    let is = |opts: &Opts| {
        short.is_some_and(|c| opts.short.contains(&c)) || long.is_some_and(|l| hits(l, opts.long))
    };
    if is(&rules.code) {
        Some(Pending::Code)
    } else if is(&rules.file) {
        Some(Pending::File)
    } else if is(&rules.load) {
        Some(Pending::Load)
    } else if is(&rules.data) {
        Some(Pending::Data)
    } else if is(&rules.value) {
        Some(Pending::Value)
    } else {
        None
    }
}

/// Whether a short letter changes where the code is or what the operands
/// are, so that it must not hide inside another option's value.
fn matters(rules: &Rules, c: char) -> bool {
    kind_of(rules, Some(c), None).is_some()
        || rules.stdin.short.contains(&c)
        || rules.magic.contains(&c)
        || rules.operand_code.contains(&c)
        || rules.refused.0.short.contains(&c)
}

/// Reads one literal option (`-abc`, `+o`, `--long[=value]`) and says what
/// its next token is.
fn read_option(rules: &Rules, option: &str, st: &mut State) -> Result<Option<Pending>, ShapeError> {
    let refuse = |why| ShapeError::Refused {
        token: shown(option),
        why,
    };
    let lower = option.to_ascii_lowercase();
    if let Some(name) = long_option_name(&lower) {
        if hits(name, rules.refused.0.long) {
            return Err(refuse(rules.refused.1));
        }
        if hits(name, rules.stdin.long) {
            st.from_stdin = true;
            return Ok(None);
        }
        if rules.sandbox.is_some_and(|s| hits(name, &[s])) {
            st.sandboxed = true;
            return Ok(None);
        }
        let Some(kind) = kind_of(rules, None, Some(name)) else {
            st.ambiguous = rules.long_values && !option.contains('=');
            return Ok(None);
        };
        return match option.split_once('=') {
            Some((_, value)) => settle(kind, value, st).map(|()| None).map_err(refuse),
            None => Ok(Some(kind)),
        };
    }
    // A short cluster: each letter an option until one takes a value.
    let letters: Vec<char> = option[1..].chars().collect();
    let mut pending = None;
    let mut i = 0;
    while i < letters.len() {
        let c = letters[i];
        i += 1;
        if rules.refused.0.short.contains(&c) {
            return Err(refuse(rules.refused.1));
        }
        if rules.stdin.short.contains(&c) {
            st.from_stdin = true;
        }
        if rules.magic.contains(&c) {
            st.magic = true;
        }
        if rules.operand_code.contains(&c) {
            st.operand_code = true;
            continue;
        }
        if rules.digits.contains(&c) {
            while letters
                .get(i)
                .is_some_and(|d| d.is_ascii_hexdigit() || *d == 'x')
                && !letters.get(i).is_some_and(|d| matters(rules, *d))
            {
                i += 1;
            }
            continue;
        }
        if rules.rest.contains(&c) {
            if letters[i..].iter().any(|&d| matters(rules, d)) {
                return Err(refuse(AMBIGUOUS_CLUSTER));
            }
            if rules.attached {
                break;
            }
            continue;
        }
        let Some(kind) = kind_of(rules, Some(c), None) else {
            continue;
        };
        if rules.attached {
            let rest: String = letters[i..].iter().collect();
            if rest.is_empty() {
                return Ok(Some(kind));
            }
            return settle(kind, &rest, st).map(|()| None).map_err(refuse);
        }
        // Without attached values the letters after it are still read as
        // options, and the next token is the value.
        pending = Some(kind);
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::super::{ArgShape, ShapeError};

    fn refused(program: &str, tokens: &[&str]) -> bool {
        matches!(
            ArgShape::parse(program, tokens),
            Err(ShapeError::Refused { .. } | ShapeError::RefusedShape { .. })
        )
    }

    #[test]
    fn shells_and_interpreters_refuse_a_placeholder_that_could_be_their_code() {
        let cases: &[(&str, &[&str])] = &[
            ("sh", &["-c", "{value}"]),
            ("/bin/bash", &["-ec", "{value}"]),
            ("bash", &["-c", "-e", "{value}"]),
            ("sh", &["-c", "{path}", "x"]),
            ("sh", &["-o", "{value}", "-c", "true"]),
            ("sh", &["{path}"]),
            ("sh", &["+e", "{value}"]),
            ("dash", &["-x", "{int}"]),
            ("bash", &["--rcfile", "{path}", "-i"]),
            ("zsh", &["[-c]", "echo hi"]),
            ("fish", &["-c", "{value}"]),
            ("fish", &["-C", "{value}", "-c", "true"]),
            ("python3", &["{path}"]),
            ("python3", &["-c", "{value}"]),
            ("python3.12", &["-m", "{value}"]),
            ("python3", &["-Bc", "{value}"]),
            ("python3", &["-W", "{value}", "/opt/x.py"]),
            ("pypy3", &["-u", "{value}"]),
            ("perl", &["-e", "{value}"]),
            ("perl", &["-e", "print 1", "-e", "{value}"]),
            ("perl", &["-M", "{value}", "-e", "1"]),
            ("perl", &["-I", "{path}", "/opt/x.pl"]),
            ("ruby", &["-e", "{value}"]),
            ("ruby", &["-r", "{value}", "/opt/x.rb"]),
            ("ruby", &["-I", "{path}", "-e", "1"]),
            ("node", &["-e", "{value}"]),
            ("node", &["-pe", "{value}"]),
            ("nodejs", &["--eval", "{value}"]),
            ("node", &["--print", "{value}"]),
            ("node", &["-r", "{path}", "/opt/x.js"]),
            ("node", &["--import", "{value}", "/opt/x.js"]),
            ("node", &["--env-file", "{path}", "/opt/x.js"]),
            ("node", &["{path}"]),
            ("php", &["-r", "{value}"]),
            ("php", &["-f", "{path}"]),
            ("php8.2", &["-d", "{value}", "/opt/x.php"]),
            ("lua5.4", &["-e", "{value}"]),
            ("luajit", &["-l", "{value}", "/opt/x.lua"]),
            ("awk", &["{value}", "{path}"]),
            ("gawk", &["-f", "{path}"]),
            ("gawk", &["-e", "{value}"]),
            ("gawk", &["-l", "{value}", "1"]),
            ("mawk", &["-W", "{value}", "1"]),
            ("tclsh", &["/opt/x.tcl", "{path}"]),
            ("java", &["-jar", "/opt/x.jar", "{int}"]),
            ("osascript", &["-e", "{value}"]),
        ];
        for (program, tokens) in cases {
            assert!(refused(program, tokens), "{program} {tokens:?}");
        }
    }

    #[test]
    fn shells_and_interpreters_refuse_code_read_from_stdin_or_the_data_directory() {
        let cases: &[(&str, &[&str])] = &[
            ("sh", &[]),
            ("sh", &["-s", "{value}"]),
            ("bash", &["-"]),
            ("sh", &["-e"]),
            ("sh", &["run.sh", "{path}"]),
            ("bash", &["./run.sh"]),
            ("python3", &[]),
            ("python3", &["-"]),
            ("python3", &["-i", "/opt/x.py"]),
            ("python3", &["convert.py", "{path}"]),
            ("python3", &["-c"]),
            ("perl", &[]),
            ("perl", &["x.pl"]),
            ("ruby", &["-w"]),
            ("node", &["-i"]),
            ("node", &["--interactive", "/opt/x.js"]),
            ("node", &["--test"]),
            ("node", &["--run", "build"]),
            ("php", &["-a"]),
            ("php", &["-S", "localhost:8000"]),
            ("lua", &[]),
            ("lua", &["-i", "/opt/x.lua"]),
            ("awk", &["-f", "prog.awk", "{path}"]),
            ("gawk", &["-f", "-", "{path}"]),
            ("gawk", &["--file=/dev/stdin"]),
            ("tclsh", &[]),
            ("irb", &["--noecho"]),
        ];
        for (program, tokens) in cases {
            assert!(refused(program, tokens), "{program} {tokens:?}");
        }
    }

    #[test]
    fn perl_refuses_placeholder_operands_it_would_open_as_commands() {
        for tokens in [
            &["-ne", "print", "{path}"][..],
            &["-lane", "print $F[0]", "{value}"],
            &["-pi", "-e", "s/a/b/", "{path}"],
            &["-p", "-e", "1", "{value}"],
        ] {
            assert!(refused("perl", tokens), "{tokens:?}");
        }
        assert!(ArgShape::parse("perl", &["-lane", "print $F[0]", "{int}"]).is_ok());
        assert!(ArgShape::parse("perl", &["-e", "print 1", "{path}"]).is_ok());
    }

    #[test]
    fn a_letter_taking_the_rest_of_its_cluster_cannot_hide_a_code_letter() {
        // `-ie` is in-place editing with the suffix `e`, or `-i -e`.
        assert!(refused("perl", &["-ie", "print", "{path}"]));
        assert!(refused("ruby", &["-Fe", "puts 1"]));
        assert!(ArgShape::parse("perl", &["-i.bak", "-pe", "s/a/b/", "{int}"]).is_ok());
        assert!(ArgShape::parse("perl", &["-F:", "-ane", "print $F[0]", "{int}"]).is_ok());
    }

    #[test]
    fn literal_code_and_absolute_scripts_stay_allowed_with_placeholder_arguments() {
        let cases: &[(&str, &[&str])] = &[
            ("sh", &["-c", "echo made > made.txt; cat made.txt"]),
            ("sh", &["-c", "printf %s \"$1\"", "sh", "{value}"]),
            ("sh", &["-ec", "true", "{path}"]),
            ("sh", &["-o", "pipefail", "-c", "true", "{value}"]),
            ("sh", &["/opt/tools/run.sh", "{path}"]),
            ("sh", &["--", "/opt/tools/run.sh", "{value}"]),
            ("bash", &["--norc", "-c", "true", "{value}"]),
            ("bash", &["-", "/opt/tools/run.sh", "{value}"]),
            ("fish", &["-c", "echo $argv", "{value}"]),
            ("python3", &["/opt/tools/convert.py", "{path}"]),
            ("python3", &["-c", "import sys; print(sys.argv)", "{value}"]),
            ("python3", &["-I", "-m", "json.tool", "{path}"]),
            ("python3", &["-mjson.tool", "{path}"]),
            ("python3", &["-W", "ignore", "/opt/x.py", "{value}"]),
            ("python3", &["-Wignore", "-u", "/opt/x.py", "{int}"]),
            ("python3", &["-c", "1", "-W", "{value}"]),
            ("perl", &["/opt/x.pl", "{path}"]),
            ("perl", &["-e", "print 1", "{value}"]),
            ("ruby", &["/opt/x.rb", "{path}"]),
            ("ruby", &["-e", "puts 1", "{value}"]),
            ("node", &["/opt/x.js", "{path}"]),
            ("node", &["-e", "console.log(1)", "{value}"]),
            ("node", &["--no-warnings", "--", "/opt/x.js", "{path}"]),
            ("node", &["--title", "t", "/opt/x.js", "{value}"]),
            ("php", &["/opt/x.php", "{value}"]),
            ("php", &["-r", "echo 1;", "{value}"]),
            ("lua", &["/opt/x.lua", "{path}"]),
            ("lua", &["-e", "print(1)", "{value}"]),
            ("awk", &["{print $1}", "{path}"]),
            ("awk", &["-F", "{value}", "{print $1}", "{path}"]),
            ("gawk", &["-f", "/opt/x.awk", "{path}"]),
            ("gawk", &["--sandbox", "{value}", "{path}"]),
            ("gawk", &["--sandbox", "-f", "{path}", "{path}"]),
            ("tclsh", &["/opt/x.tcl"]),
            ("java", &["-version"]),
        ];
        for (program, tokens) in cases {
            assert!(
                ArgShape::parse(program, tokens).is_ok(),
                "{program} {tokens:?}: {:?}",
                ArgShape::parse(program, tokens)
            );
        }
    }

    #[test]
    fn an_unlisted_long_option_of_node_may_take_the_next_argument() {
        // `--foo /opt/x.js`: a value, or the script; read as a value, the
        // next argument is the script, or standard input is.
        assert!(refused("node", &["--no-warnings", "/opt/x.js", "{path}"]));
        assert!(refused("node", &["--no-warnings", "x.js", "/opt/x.js"]));
        assert!(refused("node", &["--no-warnings", "/opt/x.js"]));
        assert!(ArgShape::parse("node", &["--no-warnings", "--", "/opt/x.js"]).is_ok());
    }

    #[test]
    fn runners_refuse_placeholders_and_check_the_literal_program_they_run() {
        let cases: &[(&str, &[&str])] = &[
            ("env", &["{value}"]),
            ("env", &["FOO=1", "{value}"]),
            ("env", &["-i", "{path}"]),
            ("timeout", &["{int}", "{value}"]),
            ("setsid", &["{value}"]),
            ("nohup", &["/usr/bin/git", "log", "{value}"]),
            ("sudo", &["-u", "{value}", "true"]),
            ("nice", &["-n", "5", "python3"]),
            ("timeout", &["5", "sh"]),
            ("env", &["/bin/sh", "-s"]),
            ("env", &["git", "-c", "core.pager=sh", "log"]),
            ("stdbuf", &["-oL", "tar", "--to-command=sh", "-xf", "a.tar"]),
            ("xargs", &["-0", "rm", "--"]),
            ("parallel", &[]),
            ("/usr/bin/xargs", &["{path}"]),
            ("busybox", &["sh", "-c", "{value}"]),
            ("busybox", &["{value}", "x"]),
            ("toybox", &["sed", "{value}", "{path}"]),
            ("busybox", &["env", "{value}"]),
        ];
        for (program, tokens) in cases {
            assert!(refused(program, tokens), "{program} {tokens:?}");
        }
        let fine: &[(&str, &[&str])] = &[
            ("env", &["-0"]),
            ("env", &["LANG=C", "/usr/bin/sort", "-n"]),
            ("timeout", &["{int}", "/usr/bin/git", "log", "-n", "{int}"]),
            ("nice", &["-n", "{int}", "tar", "-tf", "a.tar"]),
            ("timeout", &["5", "sh", "-c", "true"]),
            ("busybox", &["ls", "{path}"]),
            ("busybox", &["sed", "-n", "1p", "{path}"]),
        ];
        for (program, tokens) in fine {
            assert!(
                ArgShape::parse(program, tokens).is_ok(),
                "{program} {tokens:?}: {:?}",
                ArgShape::parse(program, tokens)
            );
        }
        assert_eq!(
            ArgShape::parse("busybox", &["tar", "{path}"]),
            Err(ShapeError::TarLeadingPlaceholder)
        );
    }

    #[test]
    fn a_refusal_names_the_placeholder_and_says_why() {
        assert_eq!(
            ArgShape::parse("sh", &["-c", "{value}"])
                .unwrap_err()
                .to_string(),
            "argument `{value}` is refused: it is the command string the shell runs with `-c`"
        );
        assert_eq!(
            ArgShape::parse("python3", &["-c", "{value}"])
                .unwrap_err()
                .to_string(),
            "argument `{value}` is refused: it is the value of an option whose value is code \
             (`-c`, `-e`, `-m`, `--eval`, ...)"
        );
        assert_eq!(
            ArgShape::parse("env", &["{value}"])
                .unwrap_err()
                .to_string(),
            "argument `{value}` is refused: the program runs another program, which a placeholder \
             could name or feed code to; grant the inner program directly"
        );
    }
}
