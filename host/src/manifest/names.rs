//! Names a manifest declares: the module name, its version, and the
//! environment variable names a subprocess request may set.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::text::shown;

/// The longest module name: it becomes a directory name, a database key and
/// part of every log line, so it stays short and filesystem-safe.
pub const MAX_MODULE_NAME_BYTES: usize = 63;

/// The longest version string: `MAJOR.MINOR.PATCH-prerelease` never needs more.
pub const MAX_VERSION_BYTES: usize = 64;

/// The longest environment variable name a grant may list; real names are
/// far shorter, and the name is echoed in errors and audit records.
pub const MAX_ENV_NAME_BYTES: usize = 128;

/// A module's name: `^[a-z][a-z0-9-]{0,62}$`, without a trailing `-` or a
/// `--`. Valid by construction: every way to build one checks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ModuleName(String);

/// Why a string is not a [`ModuleName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidModuleName {
    #[error("a module name cannot be empty")]
    Empty,
    #[error("a module name must be at most {MAX_MODULE_NAME_BYTES} characters long")]
    TooLong,
    #[error("a module name must start with a lowercase ASCII letter")]
    BadStart,
    #[error("a module name may contain only lowercase ASCII letters, digits and `-`")]
    BadCharacter,
    #[error("a module name must not end with `-`")]
    TrailingHyphen,
    #[error("a module name must not contain `--`")]
    DoubleHyphen,
}

impl ModuleName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidModuleName> {
        let name = name.into();
        check_module_name(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_module_name(name: &str) -> Result<(), InvalidModuleName> {
    let Some(first) = name.chars().next() else {
        return Err(InvalidModuleName::Empty);
    };
    if name.len() > MAX_MODULE_NAME_BYTES {
        return Err(InvalidModuleName::TooLong);
    }
    if !first.is_ascii_lowercase() {
        return Err(InvalidModuleName::BadStart);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(InvalidModuleName::BadCharacter);
    }
    if name.ends_with('-') {
        return Err(InvalidModuleName::TrailingHyphen);
    }
    if name.contains("--") {
        return Err(InvalidModuleName::DoubleHyphen);
    }
    Ok(())
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for ModuleName {
    type Err = InvalidModuleName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ModuleName {
    type Error = InvalidModuleName;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for ModuleName {
    type Error = InvalidModuleName;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for ModuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw.as_str()).map_err(|reason| {
            serde::de::Error::custom(format_args!(
                "invalid module name `{}`: {reason}",
                shown(&raw)
            ))
        })
    }
}

/// Checks a semantic version `MAJOR.MINOR.PATCH` with an optional
/// `-prerelease`, by the rules of semver.org (no leading zeros, no empty
/// identifiers). Build metadata (`+...`) is not accepted.
pub(crate) fn check_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("a version must not be empty");
    }
    if version.len() > MAX_VERSION_BYTES {
        return Err("a version must be at most 64 characters long");
    }
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return Err("a version must be MAJOR.MINOR.PATCH, as in `0.1.0`");
    }
    for part in parts {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("MAJOR, MINOR and PATCH must be decimal numbers");
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err("MAJOR, MINOR and PATCH must not have leading zeros");
        }
        if part.parse::<u64>().is_err() {
            return Err("MAJOR, MINOR and PATCH must fit in 64 bits");
        }
    }
    if let Some(pre) = pre {
        for ident in pre.split('.') {
            if ident.is_empty() {
                return Err("a prerelease must not have empty identifiers");
            }
            if !ident
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err("a prerelease may contain only ASCII letters, digits, `-` and `.`");
            }
            if ident.len() > 1
                && ident.starts_with('0')
                && ident.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("a numeric prerelease identifier must not have leading zeros");
            }
        }
    }
    Ok(())
}

/// The name of an environment variable that a subprocess request may set:
/// `^[A-Za-z_][A-Za-z0-9_]*$`, and none of the names that change which code
/// runs (loader, shell startup, git, interpreters) or that the host injects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

/// Why a string may not be granted as an [`EnvName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEnvName {
    #[error("a variable name must not be empty")]
    Empty,
    #[error("a variable name must be at most {MAX_ENV_NAME_BYTES} characters long")]
    TooLong,
    #[error(
        "a variable name may contain only ASCII letters, digits and `_`, and must not start with a digit"
    )]
    BadCharacter,
    #[error("{0}")]
    Refused(&'static str),
}

const LOADER: &str = "it changes which code the dynamic loader runs";
const SHELL: &str = "it makes a shell run code at startup";
const GIT: &str = "it makes git run a command or read injected configuration";
const INTERPRETER: &str = "it makes an interpreter load code at startup";
const SEARCH: &str = "it changes where programs and libraries are looked up";
const RESERVED: &str = "`MODHOST_*` names are reserved for the identity the host injects";
const CONFIG_HOME: &str = "it points programs at configuration the module can write";
const COMMAND: &str = "it names a command that programs run";
const PROXY: &str = "it sends a program's connections through a proxy of the caller's choosing";
const AGENT: &str = "it hands a program a socket to an agent outside the box";

/// Prefixes refused whatever follows (compared in upper case).
const REFUSED_ENV_PREFIXES: &[(&str, &str)] = &[
    ("LD_", LOADER),
    ("DYLD_", LOADER),
    ("GIT_CONFIG", GIT),
    ("MODHOST_", RESERVED),
];

/// Whole names refused (compared in upper case).
const REFUSED_ENV_NAMES: &[(&str, &str)] = &[
    ("BASH_ENV", SHELL),
    ("ENV", SHELL),
    ("SHELLOPTS", SHELL),
    ("BASHOPTS", SHELL),
    ("PS4", SHELL),
    ("PROMPT_COMMAND", SHELL),
    ("IFS", SHELL),
    ("CDPATH", SHELL),
    ("GIT_SSH_COMMAND", GIT),
    ("GIT_SSH", GIT),
    ("GIT_EXEC_PATH", GIT),
    ("GIT_PROXY_COMMAND", GIT),
    ("GIT_ASKPASS", GIT),
    ("GIT_EDITOR", GIT),
    ("GIT_PAGER", GIT),
    ("GIT_EXTERNAL_DIFF", GIT),
    ("GIT_TEMPLATE_DIR", GIT),
    // A repository or work tree elsewhere brings its own config and hooks.
    ("GIT_DIR", GIT),
    ("GIT_WORK_TREE", GIT),
    ("GIT_COMMON_DIR", GIT),
    ("ZDOTDIR", SHELL),
    ("OPENSSL_CONF", CONFIG_HOME),
    ("OPENSSL_ENGINES", LOADER),
    ("OPENSSL_MODULES", LOADER),
    ("CURL_HOME", CONFIG_HOME),
    ("WGETRC", CONFIG_HOME),
    ("SSH_AUTH_SOCK", AGENT),
    ("GPG_AGENT_INFO", AGENT),
    ("LUA_INIT", INTERPRETER),
    ("LUA_PATH", INTERPRETER),
    ("LUA_CPATH", INTERPRETER),
    ("SSH_ASKPASS", COMMAND),
    ("EDITOR", COMMAND),
    ("VISUAL", COMMAND),
    ("PAGER", COMMAND),
    ("BROWSER", COMMAND),
    ("LESSOPEN", COMMAND),
    ("LESSCLOSE", COMMAND),
    ("TAR_OPTIONS", COMMAND),
    ("RSYNC_RSH", COMMAND),
    ("RSYNC_CONNECT_PROG", COMMAND),
    ("GIT_SEQUENCE_EDITOR", GIT),
    ("MANPAGER", COMMAND),
    ("SYSTEMD_PAGER", COMMAND),
    ("SUDO_ASKPASS", COMMAND),
    ("PYTHONBREAKPOINT", INTERPRETER),
    ("PERL5DB", INTERPRETER),
    ("PHPRC", CONFIG_HOME),
    ("PHP_INI_SCAN_DIR", CONFIG_HOME),
    ("NODE_OPTIONS", INTERPRETER),
    ("NODE_PATH", INTERPRETER),
    ("PYTHONPATH", INTERPRETER),
    ("PYTHONSTARTUP", INTERPRETER),
    ("PYTHONHOME", INTERPRETER),
    ("PERL5OPT", INTERPRETER),
    ("PERL5LIB", INTERPRETER),
    ("PERLLIB", INTERPRETER),
    ("RUBYOPT", INTERPRETER),
    ("RUBYLIB", INTERPRETER),
    ("JAVA_TOOL_OPTIONS", INTERPRETER),
    ("_JAVA_OPTIONS", INTERPRETER),
    ("PATH", SEARCH),
    ("GCONV_PATH", LOADER),
    ("GLIBC_TUNABLES", LOADER),
    ("HOSTALIASES", SEARCH),
    ("HOME", CONFIG_HOME),
    ("XDG_CONFIG_HOME", CONFIG_HOME),
    ("XDG_CONFIG_DIRS", CONFIG_HOME),
];

impl EnvName {
    /// Checks `name` (syntax, then the refusal lists) and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidEnvName> {
        let name = name.into();
        check_env_name(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_env_name(name: &str) -> Result<(), InvalidEnvName> {
    let Some(first) = name.bytes().next() else {
        return Err(InvalidEnvName::Empty);
    };
    if name.len() > MAX_ENV_NAME_BYTES {
        return Err(InvalidEnvName::TooLong);
    }
    if first.is_ascii_digit() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(InvalidEnvName::BadCharacter);
    }
    // Compared in upper case: harmless to over-refuse, and some platforms
    // look these up case-insensitively.
    let upper = name.to_ascii_uppercase();
    if let Some((_, why)) = REFUSED_ENV_PREFIXES
        .iter()
        .find(|(prefix, _)| upper.starts_with(prefix))
    {
        return Err(InvalidEnvName::Refused(why));
    }
    if let Some((_, why)) = REFUSED_ENV_NAMES.iter().find(|(n, _)| upper == *n) {
        return Err(InvalidEnvName::Refused(why));
    }
    // `http_proxy`, `HTTPS_PROXY`, `ALL_PROXY`, `GIT_PROXY_...`: curl, git
    // and most libraries read them.
    if upper.ends_with("_PROXY") || upper == "NO_PROXY" {
        return Err(InvalidEnvName::Refused(PROXY));
    }
    Ok(())
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EnvName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for EnvName {
    type Err = InvalidEnvName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for EnvName {
    type Error = InvalidEnvName;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw.as_str()).map_err(|reason| {
            serde::de::Error::custom(format_args!(
                "invalid variable name `{}`: {reason}",
                shown(&raw)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_that_reconfigure_programs_or_route_their_connections_are_refused() {
        for name in [
            "OPENSSL_CONF",
            "GIT_DIR",
            "git_work_tree",
            "ZDOTDIR",
            "LUA_INIT",
            "http_proxy",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "no_proxy",
            "SSH_AUTH_SOCK",
            "CURL_HOME",
            "RSYNC_RSH",
            "rsync_connect_prog",
            "GIT_SEQUENCE_EDITOR",
            "PYTHONBREAKPOINT",
            "PHPRC",
        ] {
            assert!(
                matches!(EnvName::new(name), Err(InvalidEnvName::Refused(_))),
                "{name}"
            );
        }
        for name in ["GIT_AUTHOR_NAME", "LANG", "TZ", "PROXY_PORT_NUMBER"] {
            assert!(EnvName::new(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn module_name_accepts_lowercase_words_with_single_hyphens() {
        for ok in ["a", "git-stats", "m2", "a-b-c9"] {
            assert!(ModuleName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(ModuleName::new("x".repeat(63)).unwrap().as_str().len(), 63);
    }

    #[test]
    fn module_name_refuses_each_bad_shape_with_its_reason() {
        let cases = [
            ("", InvalidModuleName::Empty),
            ("Git", InvalidModuleName::BadStart),
            ("9lives", InvalidModuleName::BadStart),
            ("-a", InvalidModuleName::BadStart),
            ("git_stats", InvalidModuleName::BadCharacter),
            ("gitStats", InvalidModuleName::BadCharacter),
            ("git-", InvalidModuleName::TrailingHyphen),
            ("git--stats", InvalidModuleName::DoubleHyphen),
        ];
        for (name, reason) in cases {
            assert_eq!(ModuleName::new(name), Err(reason), "{name:?}");
        }
        assert_eq!(
            ModuleName::new("x".repeat(64)),
            Err(InvalidModuleName::TooLong)
        );
    }

    #[test]
    fn module_name_deserialization_validates() {
        #[derive(Deserialize)]
        struct Doc {
            #[expect(dead_code, reason = "only deserialization is under test")]
            name: ModuleName,
        }
        let err = toml::from_str::<Doc>("name = \"Bad\"")
            .err()
            .expect("uppercase refused");
        assert!(err.message().contains("invalid module name `Bad`"), "{err}");
    }

    #[test]
    fn version_accepts_semver_with_prerelease() {
        for ok in [
            "0.1.0",
            "10.20.30",
            "1.0.0-alpha.1",
            "1.0.0-0.3.7",
            "1.0.0-x-y",
        ] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn version_refuses_partial_padded_or_decorated_versions() {
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.0.x",
            "v1.0.0",
            "1.0.0-",
            "1.0.0-a..b",
            "1.0.0-01",
            "1.0.0+build",
            "1.0.0-a_b",
        ] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_name_refuses_loader_git_and_reserved_names_in_any_case() {
        for bad in [
            "LD_PRELOAD",
            "ld_library_path",
            "DYLD_INSERT_LIBRARIES",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_KEY_0",
            "GIT_SSH_COMMAND",
            "MODHOST_USER_ID",
            "PATH",
            "BASH_ENV",
            "NODE_OPTIONS",
        ] {
            assert!(
                matches!(EnvName::new(bad), Err(InvalidEnvName::Refused(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn env_name_refuses_malformed_names() {
        for bad in ["", "A=B", "1A", "A B", "A\0", "É"] {
            assert!(EnvName::new(bad).is_err(), "{bad:?}");
        }
        assert!(EnvName::new("LANG").is_ok());
        assert!(EnvName::new("_private9").is_ok());
    }

    #[test]
    fn shown_escapes_newlines_and_cuts_long_values() {
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = shown(&"x".repeat(100));
        assert_eq!(long.chars().count(), crate::text::MAX_SHOWN_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
