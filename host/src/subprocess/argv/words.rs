//! The words of the argument grammar, shared by the shape parser
//! ([`super`]) and the rules for programs whose arguments are code
//! ([`super::code`]): tokens, the error a refused shape gets, the program
//! families, and how long options are read.

/// The most tokens in one shape: real command lines are far shorter, and the
/// matcher's work grows with it.
pub const MAX_SHAPE_TOKENS: usize = 64;

/// The longest literal token in a manifest.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// One token of an [`ArgShape`](super::ArgShape).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArgToken {
    /// Matches exactly this argument.
    Literal(String),
    /// `[--flag]`: this literal flag, zero or one time.
    Optional(String),
    /// `{value}`: non-empty, no NUL, not starting with `-`, not a transport
    /// address such as `ext::sh -c x`.
    Value,
    /// `{int}`: an unsigned decimal of 1 to 19 digits.
    Int,
    /// `{path}`: a relative path with no `..` component, not starting with
    /// `-`. The subprocess gate resolves it inside the data directory; this
    /// is only the syntactic check.
    Path,
}

/// Why a shape in a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("argument {position} is empty")]
    EmptyToken { position: usize },
    #[error("argument {position} contains NUL")]
    Nul { position: usize },
    #[error("argument {position} is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong { position: usize },
    #[error("a shape has at most {MAX_SHAPE_TOKENS} arguments")]
    TooManyTokens,
    #[error(
        "`{token}` is not a placeholder; the placeholders are `{{value}}`, `{{int}}` and `{{path}}`"
    )]
    UnknownPlaceholder { token: String },
    #[error("`{token}` embeds a placeholder; a placeholder must be a whole argument")]
    EmbeddedPlaceholder { token: String },
    #[error(
        "`{token}` is not an optional flag; write one literal flag in brackets, as in `[--oneline]`"
    )]
    BadOptional { token: String },
    #[error("argument `{token}` is refused: {why}")]
    Refused { token: String, why: &'static str },
    #[error(
        "a placeholder cannot be tar's first argument: tar reads it as an old-style option cluster"
    )]
    TarLeadingPlaceholder,
    #[error("the shape is refused: {why}")]
    RefusedShape { why: &'static str },
}

/// Programs whose literal arguments get extra scrutiny, named by the last
/// path component of the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Git,
    Tar,
    Find,
    Rsync,
    Ssh,
    /// `scp`: ssh's rules, and `-D` runs a local program.
    Scp,
    /// `sftp`: scp's rules, and it reads commands (`!cmd` among them) from
    /// standard input unless `-b` names a batch file.
    Sftp,
    Zip,
    Sed,
    Curl,
    /// `ffmpeg`, `ffprobe`, `ffplay`: a file name may be a protocol URL.
    Ffmpeg,
    /// A shell or an interpreter: its arguments can be code.
    Code(Dialect),
    /// Runs the program its arguments name (`env`, `timeout`, ...).
    Runner,
    /// Builds command lines from standard input (`xargs`, `parallel`).
    Batch,
    /// `busybox`, `toybox`: the first argument names the applet.
    MultiCall,
    Other,
}

/// How a shell or interpreter reads its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// POSIX shells and csh: `-c` makes the first operand the code.
    Sh,
    Fish,
    Python,
    Perl,
    Ruby,
    Node,
    Php,
    Lua,
    Awk,
    /// A command line this grammar does not model: literals only.
    Unmodeled {
        /// Whether it reads code from standard input when given none.
        stdin: bool,
    },
}

/// The option name of a `--long[=value]` token.
pub(super) fn long_option_name(token: &str) -> Option<&str> {
    let name = token.split('=').next().unwrap_or(token);
    (name.starts_with("--") && name.len() > 2).then_some(name)
}

/// Whether a long option name is one of `options`, has one as a prefix
/// (`--exec-path`), or abbreviates one (`--upload`, which getopt-style
/// parsers accept when unambiguous).
pub(super) fn hits(name: &str, options: &[&str]) -> bool {
    options
        .iter()
        .any(|o| name.starts_with(o) || o.starts_with(name))
}
