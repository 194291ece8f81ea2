//! Peer-supplied text made safe for a terminal or a line-oriented log.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character escaped (`\n` as `\n`, ESC as
/// `\u{1b}`, ...), so a file name or an ERROR message from the network can
/// neither forge a log line nor reach a terminal as an escape sequence. The
/// Unicode line and paragraph separators and the bidirectional overrides and
/// isolates (which make a log line read differently from what it holds) are
/// escaped too. Other printable text, non-ASCII included, is left as it is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_debug());
        } else if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("pxelinux.0"), "pxelinux.0");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb"), "a\\nb");
        assert_eq!(escape_controls("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape_controls("tab\there\r"), "tab\\there\\r");
        assert_eq!(
            escape_controls("ünïcode \"quotes\" \\"),
            "ünïcode \"quotes\" \\"
        );
        assert_eq!(escape_controls("\u{7f}\u{85}"), "\\u{7f}\\u{85}");
        // Bidi overrides and isolates, and the Unicode line separators.
        assert_eq!(
            escape_controls("a\u{202e}gpj.exe\u{2066}\u{2028}"),
            "a\\u{202e}gpj.exe\\u{2066}\\u{2028}"
        );
    }
}
