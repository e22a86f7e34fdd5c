//! The Rust face of the WIT `error` variant (`wit/types.wit`).

use crate::__bindings::modhost::sdk::types as wit;

/// The one error of every fallible call, mirroring the WIT `error` variant.
///
/// Host calls return it, and a module's handlers return it to the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum Error {
    /// The thing named does not exist, or is not visible to the caller.
    NotFound,
    /// Not granted; the text names the missing grant.
    PermissionDenied(String),
    /// An argument was malformed or out of range; the text says which.
    InvalidInput(String),
    /// The call carries no identity.
    Unauthenticated,
    /// A quota, deadline or pool size was reached; the text names it.
    LimitExceeded(String),
    /// Something failed inside; the text is shown to the caller.
    Internal(String),
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidInput`] with this reason.
    pub fn invalid_input(reason: impl Into<String>) -> Self {
        Error::InvalidInput(reason.into())
    }

    /// An [`Error::Internal`] with this reason.
    pub fn internal(reason: impl Into<String>) -> Self {
        Error::Internal(reason.into())
    }

    /// The variant's WIT name, such as `invalid-input`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound => "not-found",
            Error::PermissionDenied(_) => "permission-denied",
            Error::InvalidInput(_) => "invalid-input",
            Error::Unauthenticated => "unauthenticated",
            Error::LimitExceeded(_) => "limit-exceeded",
            Error::Internal(_) => "internal",
        }
    }

    pub(crate) fn from_wit(e: wit::Error) -> Self {
        match e {
            wit::Error::NotFound => Error::NotFound,
            wit::Error::PermissionDenied(s) => Error::PermissionDenied(s),
            wit::Error::InvalidInput(s) => Error::InvalidInput(s),
            wit::Error::Unauthenticated => Error::Unauthenticated,
            wit::Error::LimitExceeded(s) => Error::LimitExceeded(s),
            wit::Error::Internal(s) => Error::Internal(s),
        }
    }

    pub(crate) fn into_wit(self) -> wit::Error {
        match self {
            Error::NotFound => wit::Error::NotFound,
            Error::PermissionDenied(s) => wit::Error::PermissionDenied(s),
            Error::InvalidInput(s) => wit::Error::InvalidInput(s),
            Error::Unauthenticated => wit::Error::Unauthenticated,
            Error::LimitExceeded(s) => wit::Error::LimitExceeded(s),
            Error::Internal(s) => wit::Error::Internal(s),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotFound => f.write_str("not found"),
            Error::PermissionDenied(s) => write!(f, "permission denied: {s}"),
            Error::InvalidInput(s) => write!(f, "invalid input: {s}"),
            Error::Unauthenticated => f.write_str("unauthenticated"),
            Error::LimitExceeded(s) => write!(f, "limit exceeded: {s}"),
            Error::Internal(s) => write!(f, "internal error: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// JSON that does not fit the expected shape is bad input.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

/// A failed file operation (in the module's data directory) is internal.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

/// Calls a host function and turns its WIT error into [`Error`].
pub(crate) fn host<T>(r: std::result::Result<T, wit::Error>) -> Result<T> {
    r.map_err(Error::from_wit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_wit() {
        let e = Error::LimitExceeded("tasks.max-active".into());
        assert_eq!(Error::from_wit(e.clone().into_wit()), e);
    }

    #[test]
    fn serde_error_becomes_invalid_input() {
        let e: Error = serde_json::from_str::<u32>("\"x\"").unwrap_err().into();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    }

    #[test]
    fn error_serializes_like_the_host() {
        let v = serde_json::to_value(Error::invalid_input("bad")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "invalid-input", "message": "bad"})
        );
    }
}
