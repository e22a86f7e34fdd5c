//! What `interface tasks` accepts, checked before anything is stored.
//!
//! Plain functions over plain values, so every refusal is unit-tested
//! without wasm. Each limit is a named constant.

use crate::error::SdkError;
use crate::identity::Principal;
use crate::manifest::ReadScope;
use crate::text::{is_bidi_control, is_format_control};

/// Largest JSON argument accepted for a call: parsed on the host before a
/// module sees it.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

/// Longest task key: long enough for hierarchical keys
/// (`system.engine.install.openai.12`), short enough to index cheaply.
pub const MAX_TASK_KEY_BYTES: usize = 256;
/// Longest task title.
pub const MAX_TITLE_BYTES: usize = 256;
/// Longest progress label.
pub const MAX_LABEL_BYTES: usize = 256;
/// Largest checkpoint: state to resume from, not a data store.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;
/// Largest task result stored with the task.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
pub use super::store::{MAX_LOOKUP_LIMIT, MAX_PAGE_LIMIT};

/// Longest confirmation timeout a task may ask for: a week.
pub const MAX_CONFIRMATION_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;

/// How long a confirmation may wait, as asked by the guest: the longest
/// allowed when it names none.
pub fn confirmation_timeout(ms: Option<u64>) -> Result<std::time::Duration, SdkError> {
    match ms {
        None => Ok(std::time::Duration::from_millis(
            MAX_CONFIRMATION_TIMEOUT_MS,
        )),
        Some(0) => Err(SdkError::invalid("confirmation timeout must be positive")),
        Some(ms) if ms > MAX_CONFIRMATION_TIMEOUT_MS => Err(SdkError::invalid(format!(
            "confirmation timeout of {ms} ms is over the limit of {MAX_CONFIRMATION_TIMEOUT_MS} ms"
        ))),
        Some(ms) => Ok(std::time::Duration::from_millis(ms)),
    }
}

/// Arguments of a call: JSON of bounded size.
pub fn args(args_json: &str) -> Result<&str, SdkError> {
    if args_json.len() > MAX_ARGS_BYTES {
        return Err(SdkError::invalid(format!(
            "arguments are {} bytes; the limit is {MAX_ARGS_BYTES}",
            args_json.len()
        )));
    }
    readable_json(args_json)
        .map_err(|e| SdkError::invalid(format!("arguments are not JSON: {e}")))?;
    Ok(args_json)
}

/// Parses `text` the way stored JSON is read back later (as a
/// `serde_json::Value`), so what could not be read then — nesting past
/// serde_json's 128 levels, a number past `f64` — is refused now instead of
/// being stored and shown as `null`.
fn readable_json(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde_json::Value>(text).map(drop)
}

/// A task key: 1..=256 bytes, no control characters, and no invisible
/// format characters (bidi controls, zero-width spaces and joiners, the
/// BOM): two keys that look the same are the same key.
pub fn task_key(key: &str) -> Result<&str, SdkError> {
    if key.is_empty() {
        return Err(SdkError::invalid("task key is empty"));
    }
    if key.len() > MAX_TASK_KEY_BYTES {
        return Err(SdkError::invalid(format!(
            "task key is {} bytes; the limit is {MAX_TASK_KEY_BYTES}",
            key.len()
        )));
    }
    if key.chars().any(|c| c.is_control() || is_format_control(c)) {
        return Err(SdkError::invalid(
            "task key contains a control character or an invisible format character",
        ));
    }
    Ok(key)
}

/// A key prefix for lookups: like a key, but may be empty (every keyed task).
pub fn key_prefix(prefix: &str) -> Result<&str, SdkError> {
    if prefix.is_empty() {
        return Ok(prefix);
    }
    task_key(prefix).map_err(|e| match e {
        SdkError::InvalidInput(m) => {
            SdkError::InvalidInput(m.replacen("task key", "key prefix", 1))
        }
        other => other,
    })
}

/// A title or label: bounded, no control characters but tab.
pub fn short_text<'a>(what: &str, text: &'a str, max: usize) -> Result<&'a str, SdkError> {
    if text.len() > max {
        return Err(SdkError::invalid(format!(
            "{what} is {} bytes; the limit is {max}",
            text.len()
        )));
    }
    if text
        .chars()
        .any(|c| (c.is_control() && c != '\t') || is_bidi_control(c))
    {
        return Err(SdkError::invalid(format!(
            "{what} contains a control character"
        )));
    }
    Ok(text)
}

/// Progress clamped to 0..=1; NaN and infinities are refused.
pub fn progress(p: f64) -> Result<f64, SdkError> {
    if !p.is_finite() {
        return Err(SdkError::invalid(format!(
            "progress must be a finite number, got {p}"
        )));
    }
    Ok(p.clamp(0.0, 1.0))
}

/// JSON text of bounded size.
pub fn json_text<'a>(what: &str, text: &'a str, max: usize) -> Result<&'a str, SdkError> {
    if text.len() > max {
        return Err(SdkError::invalid(format!(
            "{what} is {} bytes; the limit is {max}",
            text.len()
        )));
    }
    readable_json(text).map_err(|e| SdkError::invalid(format!("{what} is not JSON: {e}")))?;
    Ok(text)
}

/// A task id as a guest passes it: a UUID, returned in canonical form.
pub fn task_id(id: &str) -> Result<String, SdkError> {
    crate::identity::canonical_uuid("task id", id)
}

/// A lookup limit: 0 means the default, anything above the cap is the cap.
pub fn limit(requested: u32, default: u32, max: u32) -> u32 {
    match requested {
        0 => default,
        n => n.min(max),
    }
}

/// Whether `caller` may see the tasks of `user` in `organization`: never
/// another organization's, another user's only when the manifest grants
/// `read = "organization"`.
pub fn may_read_tasks_of(
    read: ReadScope,
    caller: &Principal,
    user: &str,
    organization: &str,
) -> bool {
    organization == caller.organization_id.as_str()
        && (user == caller.user_id.as_str() || read == ReadScope::Organization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_look_like_another_are_refused() {
        for key in [
            "job\u{200b}.1",
            "job.1\u{feff}",
            "\u{2060}job",
            "job\u{202e}1",
            "a\u{200d}b",
        ] {
            assert!(
                matches!(task_key(key), Err(SdkError::InvalidInput(_))),
                "{key:?}"
            );
            assert!(
                matches!(key_prefix(key), Err(SdkError::InvalidInput(_))),
                "{key:?}"
            );
        }
        assert_eq!(task_key("job.1"), Ok("job.1"));
        assert_eq!(task_key("rapport.été"), Ok("rapport.été"));
    }

    #[test]
    fn json_the_host_could_not_read_back_is_refused_when_given() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let huge = "9".repeat(400);
        for text in [deep.as_str(), huge.as_str()] {
            assert!(matches!(args(text), Err(SdkError::InvalidInput(_))));
            assert!(matches!(
                json_text("checkpoint", text, MAX_CHECKPOINT_BYTES),
                Err(SdkError::InvalidInput(_))
            ));
        }
        let nested_enough = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(args(&nested_enough).is_ok());
    }

    #[test]
    fn task_key_refuses_empty_oversize_and_control_characters() {
        assert!(task_key("system.engine.install.openai.12").is_ok());
        assert!(task_key("with%and_and\\").is_ok());
        assert!(task_key("").is_err());
        assert!(task_key(&"k".repeat(MAX_TASK_KEY_BYTES + 1)).is_err());
        assert!(task_key("a\u{0}b").is_err());
        assert!(task_key("a\nb").is_err());
    }

    #[test]
    fn empty_prefix_is_allowed_but_control_characters_are_not() {
        assert_eq!(key_prefix(""), Ok(""));
        assert!(
            matches!(key_prefix("a\tb"), Err(SdkError::InvalidInput(m)) if m.starts_with("key prefix"))
        );
    }

    #[test]
    fn progress_is_clamped_and_nan_or_infinity_is_refused() {
        assert_eq!(progress(-0.5), Ok(0.0));
        assert_eq!(progress(1.5), Ok(1.0));
        assert_eq!(progress(0.25), Ok(0.25));
        assert!(progress(f64::NAN).is_err());
        assert!(progress(f64::INFINITY).is_err());
        assert!(progress(f64::NEG_INFINITY).is_err());
    }

    #[test]
    fn checkpoint_must_be_json_under_the_cap() {
        assert!(json_text("checkpoint", r#"{"page": 3}"#, MAX_CHECKPOINT_BYTES).is_ok());
        assert!(json_text("checkpoint", "{", MAX_CHECKPOINT_BYTES).is_err());
        let big = format!("\"{}\"", "x".repeat(MAX_CHECKPOINT_BYTES));
        assert!(json_text("checkpoint", &big, MAX_CHECKPOINT_BYTES).is_err());
    }

    #[test]
    fn task_ids_must_be_uuids_and_are_canonicalised() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(task_id(&id.to_uppercase()).unwrap(), id);
        assert!(task_id("42").is_err());
        assert!(task_id("../etc").is_err());
    }

    #[test]
    fn keys_titles_and_labels_refuse_bidi_overrides() {
        assert!(task_key("report\u{202E}fdp.exe").is_err());
        assert!(short_text("label", "done \u{2066}x\u{2069}", MAX_LABEL_BYTES).is_err());
        assert!(short_text("title", "Rapport für März", MAX_TITLE_BYTES).is_ok());
    }

    #[test]
    fn labels_refuse_newlines_but_keep_tabs() {
        assert!(short_text("label", "a\tb", MAX_LABEL_BYTES).is_ok());
        assert!(short_text("label", "a\nb", MAX_LABEL_BYTES).is_err());
        assert!(short_text("label", &"x".repeat(MAX_LABEL_BYTES + 1), MAX_LABEL_BYTES).is_err());
    }

    #[test]
    fn limits_default_on_zero_and_are_capped() {
        assert_eq!(limit(0, 50, 500), 50);
        assert_eq!(limit(10_000, 50, 500), 500);
        assert_eq!(limit(7, 50, 500), 7);
    }
}
