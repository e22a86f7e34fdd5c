//! Structured logging into the host's log: the WIT `log` interface
//! (`wit/log.wit`). The host stamps every record with the caller's identity
//! and truncates oversize records, so logging never fails.

use crate::__bindings::modhost::sdk::log as wit;

/// Severity of a record (WIT `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one record with key/value fields. See `log.write` in the WIT.
///
/// ```no_run
/// module_sdk::log::write(module_sdk::log::Level::Info, "report built", &[("rows", "42")]);
/// ```
pub fn write(level: Level, message: impl AsRef<str>, fields: &[(&str, &str)]) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    wit::write(level, message.as_ref(), &fields);
}

/// Writes a [`Level::Trace`] record.
pub fn trace(message: impl AsRef<str>) {
    write(Level::Trace, message, &[]);
}

/// Writes a [`Level::Debug`] record.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message, &[]);
}

/// Writes a [`Level::Info`] record.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message, &[]);
}

/// Writes a [`Level::Warn`] record.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message, &[]);
}

/// Writes a [`Level::Error`] record.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message, &[]);
}
