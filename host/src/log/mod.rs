//! `interface log`: leveled, structured records into the host's log.
//!
//! Each record is stamped with the caller's identity from the sandbox. Sizes
//! are truncated, never refused, and a call that logs too much is muted after
//! a budget, so logging can neither fail a module nor flood the host.

use crate::bindings::log;
use crate::sandbox::SandboxState;

/// Longest message kept; longer ones are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Most fields kept per record.
pub const MAX_FIELDS: usize = 32;
/// Longest field name or value kept.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Records one call may write before the rest are dropped (one warning says so).
pub const MAX_RECORDS_PER_CALL: u32 = 10_000;

/// Identity fields the host stamps itself; a guest field with one of these
/// names is renamed `guest.<name>` so it cannot be mistaken for the host's.
const RESERVED_FIELDS: [&str; 5] = [
    "module",
    "user_id",
    "organization_id",
    "request_id",
    "task_id",
];

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The fields of a record as the host writes them.
pub fn sanitize_fields(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields.iter().take(MAX_FIELDS) {
        let k = truncate(k, MAX_FIELD_BYTES);
        let v = truncate(v, MAX_FIELD_BYTES);
        if !out.is_empty() {
            out.push(' ');
        }
        if RESERVED_FIELDS.contains(&k) {
            out.push_str("guest.");
        }
        out.push_str(&format!("{k}={v:?}"));
    }
    out
}

impl log::Host for SandboxState {
    async fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let n = self.count_log_record();
        if n > MAX_RECORDS_PER_CALL {
            return Ok(());
        }
        let id = self.identity();
        let task_id = self.task().map(|t| t.task_id.as_str()).unwrap_or("");
        if n == MAX_RECORDS_PER_CALL {
            tracing::warn!(target: "modhost::guest", module = %id.module, request_id = %id.request_id,
                "log budget of {MAX_RECORDS_PER_CALL} records for this call used up; muting");
            return Ok(());
        }
        let message = truncate(&message, MAX_MESSAGE_BYTES);
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
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn guest_fields_cannot_pose_as_identity_fields() {
        let f = sanitize_fields(&[("user_id".into(), "root".into()), ("n".into(), "1".into())]);
        assert_eq!(f, "guest.user_id=\"root\" n=\"1\"");
    }
}
