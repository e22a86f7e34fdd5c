//! Bounded, printable text: how the host shortens and shows strings that
//! came from a guest or a manifest before they reach a log, an error or a row.

use std::borrow::Cow;

/// How much of a guest's name (a task, a function) an error message quotes.
pub const MAX_QUOTED_NAME_BYTES: usize = 128;

/// How much of a malformed id an error message quotes.
pub const MAX_QUOTED_ID_BYTES: usize = 64;

/// How much of a description or toast message is kept.
pub const MAX_SHOWN_TEXT_BYTES: usize = 1024;

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

/// `s` with control characters escaped, so a guest cannot forge log lines.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().flat_map(char::escape_default).collect::<String>())
}

/// Whether `c` reorders or hides text (bidi embeddings, overrides,
/// isolates and marks, zero-width characters): shown escaped, so text
/// from a module cannot pass for something else.
pub fn is_format_control(c: char) -> bool {
    is_bidi_control(c)
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2065}' | '\u{061C}' | '\u{FEFF}')
}

/// Whether `c` is a bidi embedding, override or isolate: it reorders the
/// text around it, so a key or label could read as another.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` made safe to print on a terminal: control characters (escape
/// sequences among them) and format controls escaped, newlines kept.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    escaped(s, |c| (c.is_control() && c != '\n') || is_format_control(c))
}

/// `s` with each character `unsafe_char` picks written `\u{..}`.
fn escaped(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A value as the audit trail keeps it: whole (the trail caps its own
/// fields), with control and format characters escaped so a record reads
/// as what it is.
pub fn recorded(value: &str) -> String {
    escaped(value, |c| c.is_control() || is_format_control(c)).into_owned()
}

/// The longest value echoed in an error message; longer ones are cut.
pub const MAX_SHOWN_CHARS: usize = 80;

/// A value as it appears inside an error message: control characters
/// escaped so the message stays on one line, and cut when long.
pub fn shown(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_escapes_escape_sequences_and_bidi_overrides_but_keeps_newlines() {
        assert_eq!(terminal_safe("a\nb"), "a\nb");
        assert_eq!(
            terminal_safe("\u{1b}[2Jx\u{202E}y"),
            "\\u{1b}[2Jx\\u{202e}y"
        );
    }

    #[test]
    fn truncate_cuts_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn control_characters_in_messages_are_escaped() {
        assert_eq!(escape_controls("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
