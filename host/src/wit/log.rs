//! `interface log`: leveled, structured records into the host's log.
//!
//! Each record is stamped with the caller's identity from the sandbox. Sizes
//! are truncated, never refused, and a call that logs too much is muted after
//! a budget, so logging can neither fail a module nor flood the host.

use super::bindings::log;
use crate::identity::Identity;
use crate::sandbox::{LogBudget, SandboxState};
use crate::text::{escape_controls, truncate};

/// Longest message kept; longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Most fields kept per record.
pub const MAX_FIELDS: usize = 32;
/// Longest field name or value kept.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Records one call may write before the rest are dropped (one warning says so).
pub const MAX_RECORDS_PER_CALL: u32 = 10_000;
/// Bytes (messages and fields) one call may log before the rest are dropped.
pub const MAX_BYTES_PER_CALL: u64 = 1024 * 1024;

/// Identity fields the host stamps itself; a guest field with one of these
/// names is renamed `guest.<name>` so it cannot be mistaken for the host's.
const RESERVED_FIELDS: [&str; 5] = [
    "module",
    "user_id",
    "organization_id",
    "request_id",
    "task_id",
];

/// The fields of a record as the host writes them.
pub fn sanitize_fields(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields.iter().take(MAX_FIELDS) {
        let k = truncate(k, MAX_FIELD_BYTES);
        let v = truncate(v, MAX_FIELD_BYTES);
        if !out.is_empty() {
            out.push(' ');
        }
        // Keys are words: anything else is quoted, so `x user_id` cannot pose
        // as a second field.
        let plain = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !plain || RESERVED_FIELDS.contains(&k) {
            out.push_str("guest.");
        }
        if plain {
            out.push_str(k);
        } else {
            out.push_str(&format!("{k:?}"));
        }
        out.push_str(&format!("={v:?}"));
    }
    out
}

/// What `log` sees of a call: whose records they are, and the call's budget.
pub struct LogView<'a> {
    pub identity: &'a Identity,
    pub task_id: Option<&'a str>,
    pub budget: &'a mut LogBudget,
}

impl LogView<'_> {
    /// The projection `log` is linked with.
    pub fn of(s: &mut SandboxState) -> LogView<'_> {
        LogView {
            identity: &s.identity,
            task_id: s.task.as_ref().map(|t| t.task_id()),
            budget: &mut s.log,
        }
    }

    /// Counts one more record of `bytes` and returns the call's totals.
    fn count(&mut self, bytes: u64) -> (u32, u64) {
        self.budget.records = self.budget.records.saturating_add(1);
        self.budget.bytes = self.budget.bytes.saturating_add(bytes);
        (self.budget.records, self.budget.bytes)
    }
}

impl log::Host for LogView<'_> {
    async fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let size = message.len().min(MAX_MESSAGE_BYTES)
            + fields
                .iter()
                .take(MAX_FIELDS)
                .map(|(k, v)| k.len().min(MAX_FIELD_BYTES) + v.len().min(MAX_FIELD_BYTES))
                .sum::<usize>();
        let (n, bytes) = self.count(u64::try_from(size).unwrap_or(u64::MAX));
        let over = n > MAX_RECORDS_PER_CALL || bytes > MAX_BYTES_PER_CALL;
        if over && self.budget.muted {
            return Ok(());
        }
        let id = self.identity;
        let task_id = self.task_id.unwrap_or("");
        if over {
            tracing::warn!(target: "modhost::guest", module = %id.module, request_id = %id.request_id,
                "log budget of {MAX_RECORDS_PER_CALL} records or {MAX_BYTES_PER_CALL} bytes for this call used up; muting");
            self.budget.muted = true;
            return Ok(());
        }
        let message = escape_controls(truncate(&message, MAX_MESSAGE_BYTES));
        let fields = sanitize_fields(&fields);
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "modhost::guest",
                    module = %id.module,
                    user_id = %id.principal.user_id,
                    organization_id = %id.principal.organization_id,
                    request_id = %id.request_id,
                    task_id = %task_id,
                    fields = %fields,
                    "{message}")
            };
        }
        match level {
            log::Level::Trace => emit!(trace),
            log::Level::Debug => emit!(debug),
            log::Level::Info => emit!(info),
            log::Level::Warn => emit!(warn),
            log::Level::Error => emit!(error),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_spaces_is_quoted_and_prefixed() {
        assert_eq!(
            sanitize_fields(&[("x user_id".into(), "1".into())]),
            "guest.\"x user_id\"=\"1\""
        );
    }

    #[test]
    fn guest_fields_cannot_pose_as_identity_fields() {
        let f = sanitize_fields(&[("user_id".into(), "root".into()), ("n".into(), "1".into())]);
        assert_eq!(f, "guest.user_id=\"root\" n=\"1\"");
    }
}
