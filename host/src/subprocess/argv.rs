//! Argument shapes of a subprocess grant, and the pure matcher the
//! subprocess gate asks before it launches anything.
//!
//! A shape is a list of tokens: a literal (exact match), `{value}`, `{int}`,
//! `{path}`, or `[--flag]` (the literal flag, zero or one time). Shapes
//! through which a granted program runs a command of the caller's choosing
//! are refused when the manifest loads, so they cannot be granted by
//! accident: literals such as `git -c`, `tar --to-command` or `ext::`
//! transports, placeholders where a program reads code or a command
//! (`git config {value} ...`, `ssh -o {value}`, a sed script; shells,
//! interpreters and runners in `argv/code.rs`), with short options read inside
//! clusters. Placeholders never accept a value that starts with `-`, so a
//! guest cannot smuggle an option in, and some programs refuse more at the
//! call (tar's `host:file`, ffmpeg's protocol URLs). The README lists the
//! refusals per program.

use std::fmt;

use crate::text::shown;

mod code;
mod words;

pub use words::{ArgToken, MAX_SHAPE_TOKENS, MAX_TOKEN_BYTES, ShapeError};
pub(crate) use words::{Dialect, Family};
use words::{hits, long_option_name};

/// The longest argument a placeholder accepts: anything longer is data, not a
/// parameter (and Linux refuses single arguments over 128 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The most digits `{int}` accepts: 19 digits always fit in a `u64`.
pub const MAX_INT_DIGITS: usize = 19;

/// How many shapes a denial lists before it says "and N more".
const MAX_SHAPES_IN_DENIAL: usize = 4;

/// One argument list a program may take (after the program itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArgShape {
    tokens: Vec<ArgToken>,
}

/// Why an argument list was not allowed for a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{program}` may not run with these arguments: {reason}")]
pub struct ArgvDenied {
    /// The program as granted.
    pub program: String,
    pub reason: String,
}

impl Family {
    pub(crate) fn of(program: &str) -> Self {
        let base = program.rsplit('/').next().unwrap_or(program);
        let base = base.to_ascii_lowercase();
        if let Some(family) = code::classify(&base) {
            return family;
        }
        match base.as_str() {
            "git" => Self::Git,
            "tar" | "gtar" | "bsdtar" => Self::Tar,
            "find" | "gfind" => Self::Find,
            "rsync" => Self::Rsync,
            "ssh" => Self::Ssh,
            "scp" => Self::Scp,
            "sftp" => Self::Sftp,
            "zip" => Self::Zip,
            "sed" | "gsed" => Self::Sed,
            "curl" => Self::Curl,
            "ffmpeg" | "ffprobe" | "ffplay" => Self::Ffmpeg,
            _ => Self::Other,
        }
    }
}

const TRANSPORT: &str =
    "`::` selects a transport helper, which can run a command (as in `ext::sh -c ...`)";
const TAR_COMMAND: &str = "it names a command or script for tar to run";
const GIT_CONFIG_KEY: &str = "it sets a git configuration key that runs a command";
const GIT_OPTION: &str = "it makes git run a program or read injected configuration";
const SSH_COMMAND: &str = "it makes ssh run a local command, load a library, or read a config file";
const SCP_SERVER: &str = "it names a local sftp server program to run";
const SFTP_STDIN: &str = "without `-b` naming a batch file by an absolute path, sftp reads its \
     commands from standard input, which the caller supplies, and `!command` runs a local shell";
const FIND_EXEC: &str = "it makes find run a command";
const RSYNC_COMMAND: &str = "it names a command for rsync to run";
const RSYNC_DAEMON: &str =
    "it runs rsync's daemon, whose configuration (`pre-xfer exec`, ...) runs commands";
const CURL_UNIX_SOCKET: &str = "it lets the caller connect to any unix socket of the host, which \
     the confinement does not cover on every kernel";
const FFMPEG_FILTER: &str = "it is a filtergraph, a format or an option file of the caller's \
     choosing: filters load shared libraries (`ladspa`, `frei0r`) and open any URL (`movie`)";
const ZIP_COMMAND: &str = "it names a command for zip to run";
const GIT_RUNS_FILTERS: &str = "it runs shell filters over every commit";
const GIT_RUNS_COMMAND: &str = "it makes git run a command of the caller's choosing";
const GIT_CONFIG_CALLER_KEY: &str = "it is the key `git config` sets: the caller could set one that \
     runs a command (`alias.*`, `core.sshCommand`, `filter.*.clean`, `include.path`, ...)";
const GIT_SUBCOMMAND: &str = "it is git's subcommand: the rules for git's arguments (`config` \
     keys, `submodule foreach`, `filter-branch`, ...) hold only for a literal one";
const SSH_ANY_OPTION: &str =
    "it lets the caller set any ssh option, `ProxyCommand=` (a local command) among them";
const CURL_CONFIG: &str = "it reads curl options (any of them) from a file the module can write";
const SED_SCRIPT_FILE: &str = "it reads the sed script from a file the module can write";
const SED_COMMAND: &str = "the script runs a shell command (`e`) or writes a file (`w`)";
const SED_CALLER_SCRIPT: &str =
    "a sed script of the caller's choosing can run commands (`e`) and write files (`w`)";

/// tar options whose value is a command; refused as the start of a literal
/// for every program, since a wrapper may pass them on to tar.
const TAR_COMMAND_OPTIONS: &[&str] = &[
    "--checkpoint-action",
    "--to-command",
    "--use-compress-program",
    "--rsh-command",
    "--rmt-command",
    "--info-script",
    "--new-volume-script",
];

/// Exact tar options that happen to be prefixes of one above.
const TAR_EXACT_OPTIONS: &[&str] = &["--checkpoint"];

/// git configuration keys that name a command (lower case).
const GIT_COMMAND_KEYS: &[&str] = &[
    "core.sshcommand",
    "core.gitproxy",
    "core.fsmonitor",
    "core.hookspath",
    "core.pager",
    "core.editor",
    "core.askpass",
    "sequence.editor",
    "diff.external",
    "uploadpack.packobjectshook",
    "credential.helper",
    "protocol.allow",
    "protocol.ext.allow",
];

/// More git configuration keys that run a command or read configuration
/// that may, beside [`GIT_COMMAND_KEYS`]: `section.name`, `section.*.name`
/// (any subsection) or `section.*` (any key of the section), in lower case.
/// Matched, with those, at the key position of `git config`.
const GIT_COMMAND_KEY_PATTERNS: &[&str] = &[
    "core.alternaterefscommand",
    "diff.*.textconv",
    "diff.*.command",
    "merge.*.driver",
    "filter.*.*",
    "difftool.*.cmd",
    "difftool.*.path",
    "mergetool.*.cmd",
    "mergetool.*.path",
    "man.*.cmd",
    "man.*.path",
    "browser.*.cmd",
    "browser.*.path",
    "guitool.*.cmd",
    "pager.*",
    "alias.*",
    "include.path",
    "includeif.*.path",
    "remote.*.uploadpack",
    "remote.*.receivepack",
    "remote.*.vcs",
    "credential.*.helper",
    "gpg.program",
    "gpg.*.program",
    "gpg.ssh.defaultkeycommand",
    "protocol.*.allow",
    "submodule.*.update",
    "trailer.*.command",
    "trailer.*.cmd",
    "hook.*.command",
    "tar.*.command",
    "interactive.difffilter",
    "imap.tunnel",
    "sendemail.smtpserver",
    "sendemail.*.smtpserver",
    "sendemail.sendmailcmd",
    "sendemail.*.sendmailcmd",
    "sendemail.tocmd",
    "sendemail.cccmd",
    "sendemail.headercmd",
    "instaweb.httpd",
];

/// Whether a git configuration key (`section[.subsection].name`) is one
/// of [`GIT_COMMAND_KEYS`] or [`GIT_COMMAND_KEY_PATTERNS`].
fn git_command_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let Some((section, rest)) = key.split_once('.') else {
        return false;
    };
    let (subsection, name) = match rest.rsplit_once('.') {
        Some((sub, name)) => (Some(sub), name),
        None => (None, rest),
    };
    let mut patterns = GIT_COMMAND_KEYS.iter().chain(GIT_COMMAND_KEY_PATTERNS);
    patterns.any(|pattern| {
        let parts: Vec<&str> = pattern.split('.').collect();
        match parts[..] {
            [s, "*"] => s == section,
            [s, n] => s == section && subsection.is_none() && n == name,
            [s, "*", n] => s == section && subsection.is_some() && (n == "*" || n == name),
            _ => false,
        }
    })
}

/// git's options before the subcommand that take the next argument.
const GIT_GLOBAL_VALUE_OPTIONS: &[&str] = &[
    "-C",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--super-prefix",
    "--attr-source",
];

/// `git config` options that take the next argument.
const GIT_CONFIG_VALUE_OPTIONS: &[&str] = &[
    "-f",
    "--file",
    "--blob",
    "--type",
    "--default",
    "--comment",
    "--value",
    "--url",
];

/// `git config` options and subcommands that only read.
const GIT_CONFIG_READS: &[&str] = &[
    "--get",
    "--get-all",
    "--get-regexp",
    "--get-urlmatch",
    "--get-color",
    "--get-colorbool",
    "-l",
    "--list",
    "get",
    "list",
];

/// `git config` options and subcommands that write.
const GIT_CONFIG_WRITES: &[&str] = &[
    "--add",
    "--replace-all",
    "--unset",
    "--unset-all",
    "--rename-section",
    "--remove-section",
    "-e",
    "--edit",
    "set",
    "unset",
    "rename-section",
    "remove-section",
    "edit",
];

/// The index of git's subcommand in a shape: the first token that is not
/// a global option or its value.
fn git_subcommand(tokens: &[ArgToken]) -> Option<usize> {
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        match token {
            ArgToken::Literal(l) | ArgToken::Optional(l) if l.starts_with('-') => {
                if GIT_GLOBAL_VALUE_OPTIONS.contains(&l.as_str()) {
                    i += 1;
                }
                i += 1;
            }
            _ => return Some(i),
        }
    }
    None
}

/// Why a `git config` shape (the tokens after `config`) may not be
/// granted: a placeholder key in a mode that writes, or a literal key that
/// runs a command.
fn git_config_refusal(tokens: &[ArgToken]) -> Option<(String, &'static str)> {
    let mut read = false;
    let mut write = false;
    let mut operands: Vec<&ArgToken> = Vec::new();
    let mut dashdash = false;
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        i += 1;
        match token {
            ArgToken::Literal(l) | ArgToken::Optional(l) if l.starts_with('-') && !dashdash => {
                if l == "--" {
                    dashdash = true;
                    continue;
                }
                let name = l.split('=').next().unwrap_or(l);
                if GIT_CONFIG_VALUE_OPTIONS.contains(&name) && !l.contains('=') {
                    i += 1;
                }
                // An optional mode may be absent: only a required one reads.
                read |= matches!(token, ArgToken::Literal(_)) && GIT_CONFIG_READS.contains(&name);
                write |= GIT_CONFIG_WRITES.contains(&name);
            }
            ArgToken::Literal(l)
                if operands.is_empty()
                    && !dashdash
                    && (GIT_CONFIG_READS.contains(&l.as_str())
                        || GIT_CONFIG_WRITES.contains(&l.as_str())) =>
            {
                read |= GIT_CONFIG_READS.contains(&l.as_str());
                write |= GIT_CONFIG_WRITES.contains(&l.as_str());
            }
            other => operands.push(other),
        }
    }
    // `git config KEY` alone reads it.
    let reads = !write && (read || operands.len() == 1);
    for (n, operand) in operands.iter().enumerate() {
        match operand {
            ArgToken::Literal(key) if n == 0 && git_command_key(key) => {
                return Some((shown(key), GIT_CONFIG_KEY));
            }
            ArgToken::Value | ArgToken::Path if n == 0 && !reads => {
                return Some((operand.to_string(), GIT_CONFIG_CALLER_KEY));
            }
            // `--rename-section OLD NEW`: the new name is a key prefix too.
            ArgToken::Value | ArgToken::Path
                if n == 1 && tokens.iter().any(|t| matches!(t, ArgToken::Literal(l) | ArgToken::Optional(l) if l.contains("rename-section"))) =>
            {
                return Some((operand.to_string(), GIT_CONFIG_CALLER_KEY));
            }
            _ => {}
        }
    }
    None
}

/// git options that run a program or inject configuration (long forms).
const GIT_LONG_OPTIONS: &[&str] = &[
    "--config",
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--template",
    // difftool's and send-email's commands.
    "--extcmd",
    "--sendmail-cmd",
    "--smtp-server",
    "--to-cmd",
    "--cc-cmd",
    "--header-cmd",
];

/// ssh options that run a command, matched anywhere in a literal.
const SSH_COMMAND_KEYS: &[&str] = &[
    "proxycommand",
    "localcommand",
    "knownhostscommand",
    // Shared libraries ssh loads, and a control socket another ssh serves.
    "pkcs11provider",
    "securitykeyprovider",
    "controlpath",
];

/// Why the literal `token` may never be granted to `family`, if it may not.
/// `maybe_first` says it could be the first argument (tar reads a first
/// argument without `-` as an old-style option cluster).
fn refusal(family: Family, token: &str, maybe_first: bool) -> Option<&'static str> {
    let lower = token.to_ascii_lowercase();
    if token.contains("::") {
        return Some(TRANSPORT);
    }
    if TAR_COMMAND_OPTIONS.iter().any(|o| lower.starts_with(o)) {
        return Some(TAR_COMMAND);
    }
    if GIT_COMMAND_KEYS.iter().any(|k| lower.contains(k)) {
        return Some(GIT_CONFIG_KEY);
    }
    if SSH_COMMAND_KEYS.iter().any(|k| lower.contains(k)) {
        return Some(SSH_COMMAND);
    }
    let long = long_option_name(&lower);
    let short = short_cluster(token);
    let short_has = |letters: &[char]| short.is_some_and(|s| s.contains(letters));
    match family {
        Family::Git => {
            if token == "-c" || short_has(&['u']) || long.is_some_and(|l| hits(l, GIT_LONG_OPTIONS))
            {
                return Some(GIT_OPTION);
            }
        }
        Family::Tar => {
            // tar reads a first argument without `-` as options, digits
            // (a tape density) and all.
            let old_style = maybe_first && !token.starts_with('-');
            let cluster = if old_style { Some(token) } else { short };
            if cluster.is_some_and(|s| s.contains(['I', 'F']))
                || long.is_some_and(|l| {
                    !TAR_EXACT_OPTIONS.contains(&l) && hits(l, TAR_COMMAND_OPTIONS)
                })
            {
                return Some(TAR_COMMAND);
            }
        }
        Family::Find => {
            if ["-exec", "-execdir", "-ok", "-okdir"].contains(&lower.as_str()) {
                return Some(FIND_EXEC);
            }
        }
        Family::Rsync => {
            if short_has(&['e']) || long.is_some_and(|l| hits(l, &["--rsh", "--rsync-path"])) {
                return Some(RSYNC_COMMAND);
            }
            if long.is_some_and(|l| hits(l, &["--daemon", "--config", "--dparam"])) {
                return Some(RSYNC_DAEMON);
            }
        }
        Family::Ssh | Family::Scp | Family::Sftp => {
            // -F config file, -S control socket (scp, sftp: the ssh
            // program), -I PKCS#11 library.
            if short_has(&['F', 'S', 'I']) {
                return Some(SSH_COMMAND);
            }
            if family != Family::Ssh && short_has(&['D']) {
                return Some(SCP_SERVER);
            }
        }
        Family::Zip => {
            // zip reads `-TT cmd`, `-TT=cmd` and `-TTcmd`, in a cluster too.
            if short.is_some_and(|s| s.contains("TT"))
                || long.is_some_and(|l| hits(l, &["--unzip-command"]))
            {
                return Some(ZIP_COMMAND);
            }
        }
        Family::Sed => {
            if long.is_some_and(|l| hits(l, &["--file"])) {
                return Some(SED_SCRIPT_FILE);
            }
            if let Some(cluster) = short {
                match sed_cluster(cluster) {
                    SedCluster::File => return Some(SED_SCRIPT_FILE),
                    SedCluster::Script(script) if sed_runs_or_writes(script) => {
                        return Some(SED_COMMAND);
                    }
                    _ => {}
                }
            }
            if let Some((name, script)) = token.split_once('=')
                && long_option_name(name).is_some_and(|n| hits(n, &["--expression"]))
                && sed_runs_or_writes(script)
            {
                return Some(SED_COMMAND);
            }
        }
        Family::Curl => {
            if token == "-K" || short_has(&['K']) || long.is_some_and(|l| hits(l, &["--config"])) {
                return Some(CURL_CONFIG);
            }
        }
        Family::Ffmpeg
        | Family::Code(_)
        | Family::Runner
        | Family::Batch
        | Family::MultiCall
        | Family::Other => {}
    }
    None
}

/// Whether an ffmpeg option takes a filtergraph, a format, or (`-/opt`)
/// reads its value from a file.
fn ffmpeg_graph_option(option: &str) -> bool {
    let Some(name) = option.strip_prefix('-') else {
        return false;
    };
    let name = name.split(':').next().unwrap_or(name);
    name.starts_with('/')
        || [
            "vf",
            "af",
            "filter",
            "filter_complex",
            "lavfi",
            "filter_script",
            "filter_complex_script",
            "f",
            "protocol_whitelist",
            "protocol_blacklist",
        ]
        .contains(&name)
}

/// The protocol ffmpeg reads a file name as: letters, digits, `+`, `-` and
/// `.` up to a `:` or `,`, starting with a letter.
fn ffmpeg_protocol(value: &str) -> Option<&str> {
    let end = value
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(value.len());
    let scheme = &value[..end];
    let opens = value[end..].starts_with([':', ',']);
    (opens && scheme.starts_with(|c: char| c.is_ascii_alphabetic())).then_some(scheme)
}

/// What one short-option cluster of sed holds.
#[derive(Debug, PartialEq, Eq)]
enum SedCluster<'a> {
    /// `-f`: the script is read from a file.
    File,
    /// `-eSCRIPT`: the script is the rest of the cluster.
    Script(&'a str),
    /// `-e` last: the next argument is the script.
    ScriptNext,
    /// `-l` last: the next argument is its value.
    ValueNext,
    Flags,
}

/// Reads a sed cluster (`-ne`, `-i.bak`, `-e1d`) the way GNU getopt does:
/// `e`, `f` and `l` take the rest or the next argument, `i` takes the rest
/// as its suffix.
fn sed_cluster(cluster: &str) -> SedCluster<'_> {
    for (i, c) in cluster.char_indices() {
        let rest = &cluster[i + c.len_utf8()..];
        match c {
            'f' => return SedCluster::File,
            'e' if rest.is_empty() => return SedCluster::ScriptNext,
            'e' => return SedCluster::Script(rest),
            'l' if rest.is_empty() => return SedCluster::ValueNext,
            'l' | 'i' => return SedCluster::Flags,
            _ => {}
        }
    }
    SedCluster::Flags
}

/// Why a sed shape may not be granted: a script that is a placeholder, or
/// a literal script that runs or writes. The script is each `-e` value, or,
/// with no required `-e` before the operands, the first operand. `--sandbox` makes GNU sed refuse `e`, `w` and `r`,
/// so then a placeholder script is allowed.
fn sed_refusal(tokens: &[ArgToken]) -> Option<(String, &'static str)> {
    let sandbox = tokens
        .iter()
        .any(|t| matches!(t, ArgToken::Literal(l) if l == "--sandbox"));
    let mut required_e = false;
    let mut first_operand: Option<&ArgToken> = None;
    let mut next = SedCluster::Flags;
    let mut dashdash = false;
    for token in tokens {
        match std::mem::replace(&mut next, SedCluster::Flags) {
            SedCluster::ScriptNext => {
                match token {
                    ArgToken::Value | ArgToken::Path | ArgToken::Int if !sandbox => {
                        return Some((token.to_string(), SED_CALLER_SCRIPT));
                    }
                    ArgToken::Literal(l) if sed_runs_or_writes(l) => {
                        return Some((shown(l), SED_COMMAND));
                    }
                    _ => {}
                }
                continue;
            }
            SedCluster::ValueNext => continue,
            _ => {}
        }
        match token {
            ArgToken::Literal(l) | ArgToken::Optional(l) if l.starts_with('-') && !dashdash => {
                // Only an `-e` before the operands counts: without argument
                // permutation (POSIXLY_CORRECT, other seds) the first
                // operand is the script.
                let required = matches!(token, ArgToken::Literal(_)) && first_operand.is_none();
                if l == "--" {
                    dashdash = true;
                } else if let Some(name) = long_option_name(l) {
                    let attached = l.contains('=');
                    if hits(name, &["--expression"]) {
                        required_e |= required;
                        if !attached {
                            next = SedCluster::ScriptNext;
                        }
                    } else if hits(name, &["--line-length"]) && !attached {
                        next = SedCluster::ValueNext;
                    }
                } else if let Some(cluster) = short_cluster(l) {
                    next = sed_cluster(cluster);
                    if matches!(next, SedCluster::Script(_) | SedCluster::ScriptNext) {
                        required_e |= required;
                    }
                }
            }
            _ if first_operand.is_none() => first_operand = Some(token),
            _ => {}
        }
    }
    if required_e {
        return None;
    }
    match first_operand? {
        ArgToken::Literal(l) if sed_runs_or_writes(l) => Some((shown(l), SED_COMMAND)),
        ArgToken::Literal(_) => None,
        _ if sandbox => None,
        other => Some((other.to_string(), SED_CALLER_SCRIPT)),
    }
}

/// Whether a literal sed script has a command that runs a shell (`e`, the
/// `e` flag of `s`) or writes a file (`w`, `W`, the `w` flag of `s`).
fn sed_runs_or_writes(script: &str) -> bool {
    script.split([';', '\n']).any(|command| {
        let command = command
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit() || "$,!~ ".contains(c));
        let mut chars = command.chars();
        match chars.next() {
            Some('e' | 'w' | 'W') => true,
            Some('s') => {
                let Some(delimiter) = chars.next() else {
                    return false;
                };
                // After the pattern and the replacement come the flags.
                let mut seen = 0;
                let mut escaped = false;
                let mut flags = String::new();
                for c in chars {
                    if seen == 2 {
                        flags.push(c);
                    } else if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == delimiter {
                        seen += 1;
                    }
                }
                flags.contains(['e', 'w'])
            }
            _ => false,
        }
    })
}

/// Why a whole shape may not be granted, when each token alone may: a git
/// subcommand whose arguments name a command to run, an ssh option the
/// caller chooses, a sed script the caller chooses.
fn shape_refusal(family: Family, tokens: &[ArgToken]) -> Option<(String, &'static str)> {
    fn literal(t: &ArgToken) -> Option<&str> {
        match t {
            ArgToken::Literal(l) | ArgToken::Optional(l) => Some(l.as_str()),
            _ => None,
        }
    }
    let has = |word: &str| tokens.iter().any(|t| literal(t) == Some(word));
    let after = |first: &str, then: &str| {
        tokens
            .iter()
            .position(|t| literal(t) == Some(first))
            .is_some_and(|i| tokens[i + 1..].iter().any(|t| literal(t) == Some(then)))
    };
    match family {
        Family::Git => {
            if let Some(i) = git_subcommand(tokens) {
                match &tokens[i] {
                    ArgToken::Value | ArgToken::Path => {
                        return Some((tokens[i].to_string(), GIT_SUBCOMMAND));
                    }
                    ArgToken::Literal(sub) if sub == "config" => {
                        if let Some(refusal) = git_config_refusal(&tokens[i + 1..]) {
                            return Some(refusal);
                        }
                    }
                    // `git clone -qc key=value`: `-c` sets configuration.
                    ArgToken::Literal(sub) if sub == "clone" => {
                        let sets_config = tokens[i + 1..].iter().any(|t| {
                            literal(t)
                                .is_some_and(|l| short_cluster(l).is_some_and(|c| c.contains('c')))
                        });
                        if sets_config {
                            return Some(("clone -c".into(), GIT_OPTION));
                        }
                    }
                    _ => {}
                }
            }
            if has("filter-branch") {
                return Some(("filter-branch".into(), GIT_RUNS_FILTERS));
            }
            for (sub, word) in [("submodule", "foreach"), ("bisect", "run")] {
                if after(sub, word) {
                    return Some((format!("{sub} {word}"), GIT_RUNS_COMMAND));
                }
            }
            for sub in ["rebase", "difftool", "mergetool"] {
                if has(sub)
                    && tokens.iter().any(|t| {
                        literal(t)
                            .is_some_and(|l| short_cluster(l).is_some_and(|c| c.contains('x')))
                    })
                {
                    return Some((format!("{sub} -x"), GIT_RUNS_COMMAND));
                }
            }
        }
        Family::Ssh | Family::Scp | Family::Sftp => {
            let option_then_placeholder = tokens.windows(2).any(|w| {
                literal(&w[0]).is_some_and(|l| {
                    l == "-o" || short_cluster(l).is_some_and(|c| c.ends_with('o'))
                }) && matches!(w[1], ArgToken::Value | ArgToken::Path)
            });
            if option_then_placeholder {
                return Some(("-o {value}".into(), SSH_ANY_OPTION));
            }
        }
        Family::Sed => return sed_refusal(tokens),
        Family::Ffmpeg => {
            let mut lavfi = false;
            for w in tokens.windows(2) {
                let option = literal(&w[0]);
                let placeholder = matches!(w[1], ArgToken::Value | ArgToken::Path);
                if option.is_some_and(ffmpeg_graph_option) && placeholder {
                    return Some((format!("{} {}", w[0], w[1]), FFMPEG_FILTER));
                }
                // `-f lavfi -i GRAPH`: the input is a filtergraph.
                lavfi |= option == Some("-f") && literal(&w[1]) == Some("lavfi");
                if lavfi && option == Some("-i") && placeholder {
                    return Some((format!("-f lavfi -i {}", w[1]), FFMPEG_FILTER));
                }
            }
        }
        Family::Curl => {
            let socket_of_choice = tokens.windows(2).any(|w| {
                literal(&w[0])
                    .and_then(long_option_name)
                    .is_some_and(|l| hits(l, &["--unix-socket", "--abstract-unix-socket"]))
                    && matches!(w[1], ArgToken::Value)
            });
            if socket_of_choice {
                return Some(("--unix-socket {value}".into(), CURL_UNIX_SOCKET));
            }
        }
        _ => {}
    }
    None
}

/// Whether an sftp shape lacks a batch file named by an absolute literal
/// (`-b /path`, `-b/path`), so that sftp reads its commands from stdin.
fn sftp_reads_stdin(tokens: &[ArgToken]) -> bool {
    let batch = tokens.iter().enumerate().find_map(|(i, t)| {
        let ArgToken::Literal(l) = t else {
            return None;
        };
        let cluster = short_cluster(l)?;
        // The letters before `b` may be flags; `b` takes the rest or the next.
        let at = cluster.find('b')?;
        let rest = &cluster[at + 1..];
        if rest.is_empty() {
            match tokens.get(i + 1) {
                Some(ArgToken::Literal(file)) => Some(file.as_str()),
                _ => Some(""),
            }
        } else {
            Some(rest)
        }
    });
    !batch.is_some_and(|file| file.starts_with('/') && !code::is_stdin(file))
}

/// The letters of a `-abc` short-option cluster.
fn short_cluster(token: &str) -> Option<&str> {
    token
        .strip_prefix('-')
        .filter(|rest| !rest.is_empty() && !rest.starts_with('-'))
}

/// Whether `[user@]host:path` names a host that starts with `-`.
fn remote_host_is_option(value: &str) -> bool {
    let Some((host, _)) = value.split_once(':') else {
        return false;
    };
    if host.contains('/') {
        return false;
    }
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.starts_with('-')
}

/// A placeholder value that the program would read as a transport address,
/// as in `ext::sh -c x` or `fd::3`.
fn looks_like_transport(value: &str) -> bool {
    value.split_once("::").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
    })
}

impl ArgShape {
    /// Parses and checks one shape granted to `program` (as written in the
    /// manifest: a bare name or an absolute path).
    pub fn parse<S: AsRef<str>>(program: &str, tokens: &[S]) -> Result<Self, ShapeError> {
        if tokens.len() > MAX_SHAPE_TOKENS {
            return Err(ShapeError::TooManyTokens);
        }
        let mut parsed = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            parsed.push(parse_token(i + 1, token.as_ref())?);
        }
        check_as(Family::of(program), &parsed)?;
        Ok(Self { tokens: parsed })
    }

    pub fn tokens(&self) -> &[ArgToken] {
        &self.tokens
    }

    /// Whether `args` (without the program) fit this shape, with the value
    /// rules of `family`. Optional flags make it a small NFA: the set of
    /// argument positions reachable after each token.
    #[cfg(test)]
    fn fits<S: AsRef<str>>(&self, family: Family, args: &[S]) -> bool {
        self.reach(family, args).is_some()
    }

    /// The positions of `args` that some accepting alignment with this shape
    /// reads as a `{path}`, or `None` when the shape does not fit.
    fn path_positions<S: AsRef<str>>(&self, family: Family, args: &[S]) -> Option<Vec<usize>> {
        let table = self.reach(family, args)?;
        let n = args.len();
        // Walk back from the accepting end: `live[i]` is true when an
        // accepting alignment passes position `i` after token `t`.
        let mut live = vec![false; n + 1];
        live[n] = true;
        let mut paths = Vec::new();
        for (t, token) in self.tokens.iter().enumerate().rev() {
            let before = &table[t];
            let mut prev = vec![false; n + 1];
            for i in (0..=n).filter(|&i| before[i]) {
                let arg: Option<&str> = args.get(i).map(|a| a.as_ref());
                match token {
                    ArgToken::Optional(flag) => {
                        if live[i] || (arg == Some(flag.as_str()) && live[i + 1]) {
                            prev[i] = true;
                        }
                    }
                    other => {
                        if live.get(i + 1) == Some(&true)
                            && arg.is_some_and(|a| accepts(other, family, a))
                        {
                            prev[i] = true;
                            if *other == ArgToken::Path && !paths.contains(&i) {
                                paths.push(i);
                            }
                        }
                    }
                }
            }
            live = prev;
        }
        paths.sort_unstable();
        Some(paths)
    }

    /// The matcher's table: `table[t][i]` is true when the first `t` tokens
    /// can consume exactly the first `i` arguments; `None` when the whole
    /// shape cannot consume all of them.
    fn reach<S: AsRef<str>>(&self, family: Family, args: &[S]) -> Option<Vec<Vec<bool>>> {
        let required = self
            .tokens
            .iter()
            .filter(|t| !matches!(t, ArgToken::Optional(_)))
            .count();
        if args.len() < required || args.len() > self.tokens.len() {
            return None;
        }
        let n = args.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        let mut table = Vec::with_capacity(self.tokens.len() + 1);
        for token in &self.tokens {
            let mut next = vec![false; n + 1];
            for i in (0..=n).filter(|&i| reach[i]) {
                let arg: Option<&str> = args.get(i).map(|a| a.as_ref());
                match token {
                    ArgToken::Optional(flag) => {
                        next[i] = true;
                        if arg == Some(flag.as_str()) {
                            next[i + 1] = true;
                        }
                    }
                    other => {
                        if arg.is_some_and(|a| accepts(other, family, a)) {
                            next[i + 1] = true;
                        }
                    }
                }
            }
            if !next.contains(&true) {
                return None;
            }
            table.push(std::mem::replace(&mut reach, next));
        }
        let fits = reach[n];
        table.push(reach);
        fits.then_some(table)
    }
}

/// One token's syntax: a placeholder, an optional flag or a literal.
fn parse_token(position: usize, token: &str) -> Result<ArgToken, ShapeError> {
    if token.is_empty() {
        return Err(ShapeError::EmptyToken { position });
    }
    if token.contains('\0') {
        return Err(ShapeError::Nul { position });
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ShapeError::TooLong { position });
    }
    match token {
        "{value}" => return Ok(ArgToken::Value),
        "{int}" => return Ok(ArgToken::Int),
        "{path}" => return Ok(ArgToken::Path),
        _ => {}
    }
    if let Some(inner) = token.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
        && !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ShapeError::UnknownPlaceholder {
            token: shown(token),
        });
    }
    if let Some(inner) = token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if !inner.starts_with('-') || inner.contains(['[', ']', '{', '}']) {
            return Err(ShapeError::BadOptional {
                token: shown(token),
            });
        }
        return Ok(ArgToken::Optional(inner.to_owned()));
    }
    if ["{value}", "{int}", "{path}"]
        .iter()
        .any(|p| token.contains(p))
    {
        return Err(ShapeError::EmbeddedPlaceholder {
            token: shown(token),
        });
    }
    Ok(ArgToken::Literal(token.to_owned()))
}

/// The refusals of `family` over parsed tokens: each literal alone, then
/// the shape as a whole. A runner or multi-call binary checks the program
/// it runs with this too.
fn check_as(family: Family, tokens: &[ArgToken]) -> Result<(), ShapeError> {
    // Until the first non-optional token, a token may be argv[1].
    let mut maybe_first = true;
    for token in tokens {
        let (literal, first) = match token {
            ArgToken::Literal(l) => (Some(l), maybe_first),
            ArgToken::Optional(l) => (Some(l), false),
            _ => (None, false),
        };
        if let Some(l) = literal
            && let Some(why) = refusal(family, l, first)
        {
            return Err(ShapeError::Refused {
                token: shown(l),
                why,
            });
        }
        if !matches!(token, ArgToken::Optional(_)) {
            if maybe_first && family == Family::Tar && literal.is_none() {
                return Err(ShapeError::TarLeadingPlaceholder);
            }
            maybe_first = false;
        }
    }
    if let Some((token, why)) = shape_refusal(family, tokens) {
        return Err(ShapeError::Refused { token, why });
    }
    if family == Family::Sftp && sftp_reads_stdin(tokens) {
        return Err(ShapeError::RefusedShape { why: SFTP_STDIN });
    }
    code::check(family, tokens, &check_as)
}

/// Whether one argument fits a non-optional token.
fn accepts(token: &ArgToken, family: Family, arg: &str) -> bool {
    match token {
        ArgToken::Literal(literal) => arg == literal,
        ArgToken::Optional(_) => false,
        ArgToken::Int => {
            !arg.is_empty()
                && arg.len() <= MAX_INT_DIGITS
                && arg.bytes().all(|b| b.is_ascii_digit())
        }
        ArgToken::Value => placeholder_ok(family, arg) && !looks_like_transport(arg),
        ArgToken::Path => {
            placeholder_ok(family, arg)
                && !looks_like_transport(arg)
                && (family != Family::Ffmpeg || ffmpeg_protocol(arg).is_none())
                && !arg.starts_with('/')
                && !arg.split('/').any(|part| part == "..")
        }
    }
}

/// The rules every placeholder value follows, plus those of its program.
fn placeholder_ok(family: Family, arg: &str) -> bool {
    let common = !arg.is_empty()
        && arg.len() <= MAX_VALUE_BYTES
        && !arg.starts_with('-')
        && !arg.contains('\0');
    common
        && match family {
            // A value could name a configuration key through `git config`.
            Family::Git => {
                let lower = arg.to_ascii_lowercase();
                !GIT_COMMAND_KEYS.iter().any(|k| lower.contains(k))
            }
            // tar reads `host:file` as a remote archive and runs rsh for it.
            Family::Tar => !arg.contains(':'),
            // `user@-oProxyCommand=...:file`: rsync and scp pass the host
            // on to ssh, which would read it as an option.
            Family::Rsync | Family::Scp | Family::Sftp => !remote_host_is_option(arg),
            // ffmpeg opens `udp:`, `unix:`, `pipe:`, `concat:`, `file:/abs`
            // ... wherever a file name goes; only http(s) stays open, and
            // only to `{value}` (see `accepts`).
            Family::Ffmpeg => ffmpeg_protocol(arg)
                .is_none_or(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https")),
            // curl reads local files through `file://` and speaks `dict:`,
            // `gopher:`, `telnet:`, `smb:`, `tftp:` ...: only web and ftp
            // URLs stay open.
            Family::Curl => url_scheme(arg).is_none_or(|s| {
                CURL_SCHEMES
                    .iter()
                    .any(|allowed| s.eq_ignore_ascii_case(allowed))
            }),
            _ => true,
        }
}

/// The URL schemes a curl `{value}` may name.
const CURL_SCHEMES: &[&str] = &["http", "https", "ftp", "ftps"];

/// The scheme of `scheme:rest`, if `arg` starts with one.
fn url_scheme(arg: &str) -> Option<&str> {
    let (scheme, _) = arg.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then_some(scheme)
}

impl fmt::Display for ArgToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(s) => f.write_str(s),
            Self::Optional(s) => write!(f, "[{s}]"),
            Self::Value => f.write_str("{value}"),
            Self::Int => f.write_str("{int}"),
            Self::Path => f.write_str("{path}"),
        }
    }
}

impl fmt::Display for ArgShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tokens.is_empty() {
            return f.write_str("(no arguments)");
        }
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{token}")?;
        }
        Ok(())
    }
}

/// find primaries that delete or write files.
const FIND_WRITES: &[&str] = &["-delete", "-fprint", "-fprint0", "-fprintf", "-fls"];

/// What an operator should know about a shape that is allowed but risky:
/// `find` deleting or writing files (Landlock keeps both inside the data
/// directory, which the module can change anyway).
pub(crate) fn shape_warning(program: &str, shape: &ArgShape) -> Option<String> {
    if Family::of(program) != Family::Find {
        return None;
    }
    let writes: Vec<&str> = shape
        .tokens
        .iter()
        .filter_map(|t| match t {
            ArgToken::Literal(l) | ArgToken::Optional(l) if FIND_WRITES.contains(&l.as_str()) => {
                Some(l.as_str())
            }
            _ => None,
        })
        .collect();
    (!writes.is_empty()).then(|| {
        format!(
            "subprocess grant `{program}` shape `{shape}` deletes or writes files ({}): only \
             inside the data directory, where Landlock confines it",
            writes.join(", ")
        )
    })
}

/// Ok when any of `shapes` fits `args`; otherwise a short denial naming the
/// shapes that were tried.
pub(crate) fn match_shapes<S: AsRef<str>>(
    program: &str,
    shapes: &[ArgShape],
    args: &[S],
) -> Result<Vec<usize>, ArgvDenied> {
    let deny = |reason: String| ArgvDenied {
        program: program.to_owned(),
        reason,
    };
    if let Some(i) = args.iter().position(|a| a.as_ref().contains('\0')) {
        return Err(deny(format!("argument {} contains NUL", i + 1)));
    }
    let family = Family::of(program);
    let mut fitted = false;
    let mut paths = Vec::new();
    for shape in shapes {
        if let Some(found) = shape.path_positions(family, args) {
            fitted = true;
            paths.extend(found);
        }
    }
    if fitted {
        paths.sort_unstable();
        paths.dedup();
        return Ok(paths);
    }
    let mut granted: Vec<String> = shapes
        .iter()
        .take(MAX_SHAPES_IN_DENIAL)
        .map(|s| format!("`{s}`"))
        .collect();
    if shapes.len() > MAX_SHAPES_IN_DENIAL {
        granted.push(format!("and {} more", shapes.len() - MAX_SHAPES_IN_DENIAL));
    }
    Err(deny(format!(
        "no granted shape matches (granted: {})",
        granted.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(program: &str, tokens: &[&str]) -> ArgShape {
        ArgShape::parse(program, tokens).unwrap()
    }

    fn fits(program: &str, tokens: &[&str], args: &[&str]) -> bool {
        shape(program, tokens).fits(Family::of(program), args)
    }

    fn refused(program: &str, tokens: &[&str]) -> ShapeError {
        ArgShape::parse(program, tokens).unwrap_err()
    }

    #[test]
    fn literal_shape_matches_only_the_exact_arguments() {
        let s = ["log", "-1", "--format=%at"];
        assert!(fits("git", &s, &["log", "-1", "--format=%at"]));
        assert!(!fits("git", &s, &["log", "-1"]));
        assert!(!fits("git", &s, &["log", "-1", "--format=%at", "x"]));
        assert!(!fits("git", &s, &["log", "-2", "--format=%at"]));
    }

    #[test]
    fn value_placeholder_refuses_option_like_token() {
        let s = ["rev-parse", "{value}"];
        assert!(fits("git", &s, &["rev-parse", "HEAD"]));
        assert!(!fits("git", &s, &["rev-parse", "--upload-pack=sh"]));
        assert!(!fits("git", &s, &["rev-parse", "-c"]));
        assert!(!fits("git", &s, &["rev-parse", ""]));
    }

    #[test]
    fn value_placeholder_refuses_transport_addresses() {
        let s = ["ls-remote", "{value}"];
        assert!(!fits("git", &s, &["ls-remote", "ext::sh -c touch% /tmp/x"]));
        assert!(!fits("git", &s, &["ls-remote", "fd::3"]));
        assert!(fits("git", &s, &["ls-remote", "https://example.com/r.git"]));
        assert!(fits("cat", &["{value}"], &["see a::b"]));
        assert!(!fits("cat", &["{value}"], &["std::vec"]));
    }

    #[test]
    fn git_value_cannot_name_a_command_configuration_key() {
        let s = ["config", "--get", "{value}"];
        assert!(fits("git", &s, &["config", "--get", "user.name"]));
        assert!(!fits("git", &s, &["config", "--get", "core.sshCommand"]));
        assert!(!fits(
            "/usr/bin/git",
            &s,
            &["config", "--get", "Core.FsMonitor"]
        ));
    }

    #[test]
    fn int_placeholder_takes_unsigned_decimals_up_to_nineteen_digits() {
        let s = ["-n", "{int}"];
        assert!(fits("head", &s, &["-n", "0"]));
        assert!(fits("head", &s, &["-n", &"9".repeat(19)]));
        assert!(!fits("head", &s, &["-n", &"9".repeat(20)]));
        assert!(!fits("head", &s, &["-n", "-1"]));
        assert!(!fits("head", &s, &["-n", "+1"]));
        assert!(!fits("head", &s, &["-n", "1e3"]));
        assert!(!fits("head", &s, &["-n", ""]));
    }

    #[test]
    fn path_placeholder_takes_only_relative_paths_without_parent_steps() {
        let s = ["{path}"];
        assert!(fits("cat", &s, &["notes/today.txt"]));
        assert!(fits("cat", &s, &["./a..b"]));
        assert!(!fits("cat", &s, &["/etc/passwd"]));
        assert!(!fits("cat", &s, &["../secret"]));
        assert!(!fits("cat", &s, &["a/../../b"]));
        assert!(!fits("cat", &s, &["-n"]));
        assert!(!fits("cat", &s, &[""]));
    }

    #[test]
    fn tar_placeholders_refuse_remote_archive_names() {
        let s = ["-t", "-f", "{path}"];
        assert!(fits("tar", &s, &["-t", "-f", "a.tar"]));
        assert!(!fits("tar", &s, &["-t", "-f", "host:a.tar"]));
    }

    #[test]
    fn optional_flag_matches_zero_or_one_time() {
        let s = ["log", "[--oneline]", "-n", "{int}"];
        assert!(fits("git", &s, &["log", "-n", "5"]));
        assert!(fits("git", &s, &["log", "--oneline", "-n", "5"]));
        assert!(!fits(
            "git",
            &s,
            &["log", "--oneline", "--oneline", "-n", "5"]
        ));
        assert!(!fits("git", &s, &["log", "--stat", "-n", "5"]));
    }

    #[test]
    fn optional_flag_backtracks_when_a_value_could_take_its_place() {
        // `[-v]` then a literal `-v`: the matcher must try skipping the option.
        let s = ["[-v]", "-v", "{value}"];
        assert!(fits("tool", &s, &["-v", "x"]));
        assert!(fits("tool", &s, &["-v", "-v", "x"]));
        assert!(!fits("tool", &s, &["x"]));
    }

    #[test]
    fn many_optional_flags_match_in_linear_time() {
        let tokens: Vec<String> = (0..60).map(|i| format!("[--f{i}]")).collect();
        let s = ArgShape::parse("tool", &tokens).unwrap();
        let args: Vec<String> = (0..30).map(|i| format!("--f{}", i * 2)).collect();
        assert!(s.fits(Family::Other, &args));
        let wrong = vec!["--f1".to_owned(), "--f0".to_owned()];
        assert!(!s.fits(Family::Other, &wrong));
    }

    #[test]
    fn empty_shape_matches_only_no_arguments() {
        assert!(fits("true", &[], &[]));
        assert!(!fits("true", &[], &["x"]));
    }

    #[test]
    fn shapes_through_which_a_granted_program_runs_a_command_are_refused() {
        let cases: &[(&str, &[&str])] = &[
            ("git", &["rebase", "-x", "{value}", "main"]),
            ("git", &["rebase", "[-x]", "main"]),
            ("git", &["difftool", "-x", "{value}"]),
            ("git", &["difftool", "--extcmd", "{value}"]),
            ("git", &["mergetool", "-x"]),
            ("git", &["submodule", "foreach", "{value}"]),
            ("git", &["submodule", "--quiet", "foreach", "true"]),
            ("git", &["bisect", "run", "{value}"]),
            ("git", &["filter-branch", "--tree-filter", "{value}"]),
            (
                "git",
                &["send-email", "--sendmail-cmd", "{value}", "{path}"],
            ),
            ("git", &["send-email", "--smtp-server", "{value}"]),
            ("ssh", &["-o", "{value}", "host"]),
            ("/usr/bin/ssh", &["-qo", "{value}", "host", "true"]),
            ("sed", &["{value}", "{path}"]),
            ("sed", &["-n", "-e", "{value}", "{path}"]),
            ("sed", &["-f", "{path}"]),
            ("sed", &["--file=script.sed", "{path}"]),
            ("sed", &["1e id", "{path}"]),
            ("sed", &["s/x/id/e", "{path}"]),
            ("sed", &["-n", "s|a|b|w out", "{path}"]),
            ("sed", &["$w loot", "{path}"]),
            ("curl", &["-K", "{path}"]),
            ("curl", &["-sK", "{path}"]),
            ("curl", &["--config", "{path}"]),
        ];
        for (program, tokens) in cases {
            assert!(
                matches!(
                    ArgShape::parse(program, tokens),
                    Err(ShapeError::Refused { .. })
                ),
                "{program} {tokens:?}"
            );
        }
        let fine: &[(&str, &[&str])] = &[
            ("git", &["cherry-pick", "-x", "{value}"]),
            ("git", &["log", "-1", "--format=%at"]),
            ("git", &["submodule", "update", "--init"]),
            ("ssh", &["-p", "{int}", "host", "uptime"]),
            ("sed", &["-n", "1p", "{path}"]),
            ("sed", &["s/hello/bye/g", "{path}"]),
            ("sed", &["-i", "s/a\\/e/b/", "{path}"]),
            ("curl", &["-fsS", "{value}"]),
        ];
        for (program, tokens) in fine {
            assert!(
                ArgShape::parse(program, tokens).is_ok(),
                "{program} {tokens:?}"
            );
        }
    }

    #[test]
    fn git_config_refuses_a_caller_chosen_key_where_it_writes() {
        for tokens in [
            &["config", "{value}", "{value}"][..],
            &["config", "set", "{value}", "x"],
            &["config", "--add", "{value}", "{value}"],
            &["config", "--unset", "{value}"],
            &["config", "unset", "{value}"],
            &["-C", "{path}", "config", "--global", "{value}", "{value}"],
            &["config", "--file", "{path}", "{value}", "{value}"],
            &["config", "-f", "x", "--type", "bool", "{path}", "true"],
            &["config", "[--get]", "{value}", "x"],
            &["config", "--rename-section", "old", "{value}"],
            &["--git-dir", "{path}", "config", "{value}", "1"],
        ] {
            assert!(
                matches!(refused("git", tokens), ShapeError::Refused { .. }),
                "{tokens:?}"
            );
        }
        for tokens in [
            &["config", "user.name", "{value}"][..],
            &["config", "--get", "{value}"],
            &["config", "get", "{value}"],
            &["config", "{value}"],
            &["config", "--get-regexp", "{value}"],
            &["-C", "{path}", "config", "user.email", "{value}"],
            &["config", "--file", "{path}", "user.name", "{value}"],
            &["-C", "{path}", "log", "--", "config"],
        ] {
            assert!(
                ArgShape::parse("git", tokens).is_ok(),
                "{tokens:?}: {:?}",
                ArgShape::parse("git", tokens)
            );
        }
    }

    #[test]
    fn git_config_refuses_literal_keys_that_run_commands() {
        for key in [
            "alias.st",
            "remote.origin.uploadpack",
            "remote.origin.receivePack",
            "Filter.lfs.clean",
            "filter.x.smudge",
            "filter.x.process",
            "diff.pdf.textconv",
            "merge.ours.driver",
            "include.path",
            "includeIf.gitdir:/x/.path",
            "gpg.program",
            "gpg.ssh.program",
            "credential.https://example.com.helper",
            "core.sshCommand",
            "pager.log",
            "submodule.lib.update",
            "difftool.x.cmd",
        ] {
            assert!(
                matches!(
                    refused("git", &["config", key, "{value}"]),
                    ShapeError::Refused { .. }
                ),
                "{key}"
            );
        }
        for key in [
            "user.name",
            "remote.origin.url",
            "diff.renames",
            "core.autocrlf",
        ] {
            assert!(
                ArgShape::parse("git", &["config", key, "{value}"]).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn git_refuses_a_placeholder_subcommand_and_clone_configuration() {
        for tokens in [
            &["{value}", "x"][..],
            &["-C", "{path}", "{value}"],
            &["clone", "-qc", "core.bare=true", "{value}"],
            &["clone", "-ccore.bare=true", "{value}"],
            &["--config-env", "core.pager=X", "log"],
            &["--config-env=core.pager=X", "log"],
        ] {
            assert!(
                matches!(refused("git", tokens), ShapeError::Refused { .. }),
                "{tokens:?}"
            );
        }
        assert!(ArgShape::parse("git", &["clone", "-q", "{value}", "{path}"]).is_ok());
    }

    #[test]
    fn a_value_taking_letter_is_caught_anywhere_in_a_cluster_and_with_its_value_attached() {
        let cases: &[(&str, &[&str])] = &[
            ("rsync", &["-avze", "ssh", "{path}", "{path}"]),
            ("rsync", &["-essh", "{path}", "{path}"]),
            ("rsync", &["-aqe", "{value}"]),
            ("tar", &["-xvIf", "zstd", "{path}"]),
            ("tar", &["-Izstd", "-xf", "{path}"]),
            ("tar", &["-xF", "{path}"]),
            ("tar", &["xIf0", "sh"]),
            ("tar", &["c9If", "sh"]),
            ("curl", &["-sK", "{path}"]),
            ("curl", &["-Kcurlrc", "{value}"]),
            ("curl", &["-sSLK", "x", "{value}"]),
            ("ssh", &["-vF", "{path}", "host"]),
            ("ssh", &["-Fcfg", "host"]),
            ("ssh", &["-oProxyCommand=sh", "host"]),
            ("ssh", &["-o", "LocalCommand id", "host"]),
            ("ssh", &["-vvo", "{value}", "host"]),
            ("ssh", &["-I", "{path}", "host"]),
            ("ssh", &["-qI/usr/lib/p11.so", "host"]),
            ("ssh", &["-oPKCS11Provider=/x.so", "host"]),
            ("ssh", &["-S", "{path}", "host"]),
            ("scp", &["-S", "{path}", "a", "b"]),
            ("scp", &["-qSx", "a", "b"]),
            ("scp", &["-D", "/usr/lib/sftp-server", "a", "b"]),
            ("scp", &["-o", "{value}", "a", "b"]),
            ("sftp", &["host"]),
            ("sftp", &["-q", "-b", "{path}", "host"]),
            ("sftp", &["-b", "cmds", "host"]),
            ("sftp", &["-b", "-", "host"]),
            ("sftp", &["-qb/dev/stdin", "host"]),
            ("git", &["rebase", "-ix", "make"]),
            ("git", &["rebase", "-xmake"]),
            ("git", &["clone", "-qc", "a.b=c", "{value}"]),
            ("git", &["fetch", "-qu", "x", "{value}"]),
            ("sed", &["-nf", "{path}", "{path}"]),
            ("sed", &["-fscript.sed", "{path}"]),
            ("sed", &["-n", "-e", "1e id", "{path}"]),
            ("sed", &["-ne1e id", "{path}"]),
            ("sed", &["-ne", "{value}", "{path}"]),
            ("sed", &["--expression=1e id", "{path}"]),
            ("sed", &["--expr", "{value}", "{path}"]),
            ("sed", &["{path}", "{path}"]),
            ("sed", &["-n", "{path}"]),
            ("sed", &["-s", "[-e]", "{value}"]),
            ("sed", &["-l", "5", "{value}", "{path}"]),
            ("sed", &["{value}", "-e", "1p"]),
            ("zip", &["-qTT", "sh", "a.zip", "b"]),
            ("zip", &["-TT=sh", "a.zip"]),
            ("zip", &["-TTsh", "a.zip"]),
        ];
        for (program, tokens) in cases {
            assert!(
                matches!(
                    ArgShape::parse(program, tokens),
                    Err(ShapeError::Refused { .. } | ShapeError::RefusedShape { .. })
                ),
                "{program} {tokens:?}: {:?}",
                ArgShape::parse(program, tokens)
            );
        }
        let fine: &[(&str, &[&str])] = &[
            ("rsync", &["-avz", "{path}", "{path}"]),
            ("tar", &["-czf", "{path}", "{path}"]),
            ("tar", &["czf", "{path}", "{path}"]),
            ("curl", &["-sSfL", "{value}"]),
            ("curl", &["-o", "{path}", "{value}"]),
            ("ssh", &["-p", "{int}", "host", "uptime"]),
            ("ssh", &["-vo", "BatchMode=yes", "host", "true"]),
            ("ssh", &["-D", "{int}", "host"]),
            ("scp", &["-q", "{path}", "host:/srv/x"]),
            ("sftp", &["-b", "/etc/modhost/batch", "host"]),
            ("sftp", &["-qb/etc/modhost/batch", "host"]),
            ("sed", &["-e", "1p", "{value}"]),
            ("sed", &["-n", "1p", "{path}"]),
            ("sed", &["-n", "1p", "words.txt"]),
            ("sed", &["-i.bak", "s/a/b/", "{path}"]),
            ("sed", &["-if", "s/a/b/", "{path}"]),
            ("sed", &["-l", "5", "l", "{path}"]),
            ("sed", &["--sandbox", "{value}", "{path}"]),
            ("sed", &["--sandbox", "-e", "{value}", "{path}"]),
            ("zip", &["-qr", "{path}", "{path}"]),
        ];
        for (program, tokens) in fine {
            assert!(
                ArgShape::parse(program, tokens).is_ok(),
                "{program} {tokens:?}: {:?}",
                ArgShape::parse(program, tokens)
            );
        }
    }

    #[test]
    fn rsync_and_scp_placeholders_refuse_a_remote_host_that_is_an_option() {
        let s = ["-a", "{value}", "{path}"];
        assert!(fits("rsync", &s, &["-a", "backup:/srv/x", "out"]));
        assert!(!fits("rsync", &s, &["-a", "x@-oProxyCommand=id:f", "out"]));
        assert!(!fits("rsync", &s, &["-a", "-oProxyCommand=id:f", "out"]));
        let s = ["{value}", "{path}"];
        assert!(fits("scp", &s, &["host:/srv/x", "out"]));
        assert!(!fits("scp", &s, &["u@-oProxyCommand=id:x", "out"]));
        assert!(fits("scp", &s, &["./a-b:c", "out"]));
    }

    #[test]
    fn ffmpeg_refuses_caller_filtergraphs_formats_and_protocol_urls() {
        for tokens in [
            &["-i", "{path}", "-vf", "{value}", "{path}"][..],
            &["-i", "{path}", "-filter:v", "{value}", "{path}"],
            &["-i", "{path}", "-filter_complex", "{value}", "{path}"],
            &["-i", "{path}", "-af", "{path}", "{path}"],
            &["-f", "{value}", "-i", "{path}", "{path}"],
            &["-f", "lavfi", "-i", "{value}", "{path}"],
            &["-i", "{path}", "-/vf", "{path}", "{path}"],
            &["-protocol_whitelist", "{value}", "-i", "{value}"],
        ] {
            assert!(
                matches!(refused("ffmpeg", tokens), ShapeError::Refused { .. }),
                "{tokens:?}"
            );
        }
        let s = ["-i", "{value}", "-ss", "{value}", "{path}"];
        assert!(fits(
            "ffmpeg",
            &s,
            &["-i", "in.mp4", "-ss", "00:01:00", "out.webm"]
        ));
        assert!(fits(
            "ffmpeg",
            &s,
            &["-i", "https://x/a.mp4", "-ss", "1", "o.mp4"]
        ));
        for url in [
            "udp://10.0.0.1:9",
            "unix:/run/docker.sock",
            "pipe:0",
            "concat:a.mp4|/etc/passwd",
            "subfile,,start,0,end,9,,:a.mp4",
            "file:/etc/passwd",
            "tee:a.mp4|b.mp4",
            "data:text/plain,x",
        ] {
            assert!(!fits("ffprobe", &["{value}"], &[url]), "{url}");
        }
        assert!(!fits(
            "ffmpeg",
            &["-i", "in.mp4", "{path}"],
            &["-i", "in.mp4", "file:out"]
        ));
        assert!(!fits(
            "ffmpeg",
            &["-i", "in.mp4", "{path}"],
            &["-i", "in.mp4", "http:out"]
        ));
        assert!(fits(
            "ffmpeg",
            &["-i", "in.mp4", "{path}"],
            &["-i", "in.mp4", "out/a.mp4"]
        ));
    }

    #[test]
    fn curl_values_open_only_web_and_ftp_urls() {
        let curl = ["-fsS", "-o", "{path}", "{value}"];
        for url in [
            "https://example.org/a",
            "HTTP://example.org",
            "ftp://example.org/f",
            "example.org/a",
        ] {
            assert!(fits("curl", &curl, &["-fsS", "-o", "out", url]), "{url}");
        }
        for url in [
            "file:///etc/passwd",
            "FILE:///etc/passwd",
            "dict://localhost:11211/stats",
            "gopher://127.0.0.1:6379/_INFO",
            "telnet://host",
            "smb://host/share",
            "tftp://host/f",
            "ldap://host",
            "localhost:8080/x",
        ] {
            assert!(!fits("curl", &curl, &["-fsS", "-o", "out", url]), "{url}");
        }
    }

    #[test]
    fn rsync_daemon_and_curl_socket_of_the_callers_choosing_are_refused() {
        for tokens in [
            &["--daemon", "--config", "{path}"][..],
            &["--daemon"],
            &["--dparam=pre-xfer exec=id", "{path}", "{path}"],
        ] {
            assert!(
                matches!(refused("rsync", tokens), ShapeError::Refused { .. }),
                "{tokens:?}"
            );
        }
        assert!(matches!(
            refused("curl", &["--unix-socket", "{value}", "http://x/"]),
            ShapeError::Refused { .. }
        ));
        assert!(ArgShape::parse("curl", &["--unix-socket", "{path}", "http://x/"]).is_ok());
        assert!(ArgShape::parse("curl", &["-fsS", "-o", "{value}", "{value}"]).is_ok());
        assert!(ArgShape::parse("rsync", &["-a", "--delete", "{path}", "{path}"]).is_ok());
    }

    #[test]
    fn find_shapes_that_delete_or_write_files_load_with_a_warning() {
        let s = shape("find", &["{path}", "-name", "*.tmp", "-delete"]);
        assert_eq!(
            shape_warning("find", &s).unwrap(),
            "subprocess grant `find` shape `{path} -name *.tmp -delete` deletes or writes files \
             (-delete): only inside the data directory, where Landlock confines it"
        );
        let s = shape("find", &["{path}", "-fprint", "list.txt"]);
        assert!(shape_warning("find", &s).is_some());
        assert!(shape_warning("find", &shape("find", &["{path}", "-print"])).is_none());
    }

    #[test]
    fn git_injection_literals_are_refused_by_program_name() {
        for token in [
            "-c",
            "--config",
            "--config-env=core.pager=X",
            "--upload-pack=sh",
            "--upload",
            "--receive-pack",
            "--exec=sh",
            "--exec-path",
            "-u",
            "-usomething",
            "--template=hooks",
        ] {
            assert!(
                matches!(refused("git", &[token]), ShapeError::Refused { .. }),
                "{token}"
            );
            assert!(
                matches!(
                    refused("/usr/bin/git", &["x", token]),
                    ShapeError::Refused { .. }
                ),
                "{token}"
            );
        }
        assert!(ArgShape::parse("git", &["log", "-C", "--oneline", "--", "-1"]).is_ok());
        assert!(ArgShape::parse("grep", &["-c", "-u"]).is_ok());
    }

    #[test]
    fn tar_command_options_are_refused_for_every_program() {
        for token in [
            "--to-command=sh",
            "--checkpoint-action=exec=sh",
            "--USE-COMPRESS-PROGRAM=x",
            "--rsh-command=/bin/sh",
            "--info-script=x",
            "--new-volume-script=x",
        ] {
            assert!(
                matches!(refused("anything", &[token]), ShapeError::Refused { .. }),
                "{token}"
            );
        }
    }

    #[test]
    fn tar_abbreviations_short_options_and_old_style_clusters_are_refused() {
        for tokens in [
            &["-c", "--to-c=sh"][..],
            &["-c", "--use=sh"],
            &["-cI", "sh"],
            &["-F", "x"],
            &["cIf", "sh"],
        ] {
            assert!(
                matches!(refused("tar", tokens), ShapeError::Refused { .. }),
                "{tokens:?}"
            );
        }
        assert!(ArgShape::parse("tar", &["-czf", "{path}", "--checkpoint=100"]).is_ok());
        assert!(ArgShape::parse("tar", &["tzf", "{path}"]).is_ok());
        assert_eq!(
            refused("tar", &["[-v]", "{value}"]),
            ShapeError::TarLeadingPlaceholder
        );
    }

    #[test]
    fn transport_and_command_keys_are_refused_in_any_literal() {
        assert!(matches!(
            refused("cat", &["ext::sh"]),
            ShapeError::Refused { .. }
        ));
        assert!(matches!(
            refused("git", &["config", "core.sshCommand", "x"]),
            ShapeError::Refused { .. }
        ));
        assert!(matches!(
            refused("ssh", &["-o", "ProxyCommand=sh"]),
            ShapeError::Refused { .. }
        ));
        assert!(matches!(
            refused("find", &[".", "-exec"]),
            ShapeError::Refused { .. }
        ));
        assert!(matches!(
            refused("rsync", &["-ave"]),
            ShapeError::Refused { .. }
        ));
    }

    #[test]
    fn malformed_tokens_are_refused_with_their_position() {
        assert_eq!(
            refused("cat", &["a", ""]),
            ShapeError::EmptyToken { position: 2 }
        );
        assert_eq!(refused("cat", &["a\0"]), ShapeError::Nul { position: 1 });
        assert!(matches!(
            refused("cat", &["{file}"]),
            ShapeError::UnknownPlaceholder { .. }
        ));
        assert!(matches!(
            refused("cat", &["--out={path}"]),
            ShapeError::EmbeddedPlaceholder { .. }
        ));
        assert!(matches!(
            refused("cat", &["[x]"]),
            ShapeError::BadOptional { .. }
        ));
        assert!(matches!(
            refused("cat", &["[{value}]"]),
            ShapeError::BadOptional { .. }
        ));
        assert!(ArgShape::parse("git", &["HEAD@{1}"]).is_ok());
    }

    #[test]
    fn denial_names_the_shapes_tried() {
        let shapes: Vec<ArgShape> = (0..6)
            .map(|i| shape("git", &["log", &format!("-{i}")]))
            .collect();
        let err = match_shapes("git", &shapes, &["status"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`git` may not run with these arguments: no granted shape matches \
             (granted: `log -0`, `log -1`, `log -2`, `log -3`, and 2 more)"
        );
        let err = match_shapes("git", &shapes, &["log\0"]).unwrap_err();
        assert_eq!(err.reason, "argument 1 contains NUL");
        assert!(match_shapes("git", &shapes, &["log", "-5"]).is_ok());
    }

    #[test]
    fn shapes_display_as_written() {
        let s = shape(
            "git",
            &["log", "[--oneline]", "-n", "{int}", "{path}", "{value}"],
        );
        assert_eq!(s.to_string(), "log [--oneline] -n {int} {path} {value}");
        assert_eq!(shape("true", &[]).to_string(), "(no arguments)");
    }
}
