//! Python's text semantics where the original's bytes are a contract: its
//! universal-newline reading, `str.splitlines()` and `str.strip()`.

/// Python's text-mode reading: every CRLF and every lone CR becomes LF.
pub fn universal_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Python's `str.splitlines()`: splits at every Unicode line boundary Python
/// knows and drops a trailing empty piece.
pub fn splitlines(s: &str) -> Vec<&str> {
    let is_break = |c: char| {
        matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    };
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_break(c) {
            lines.push(&s[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && matches!(chars.peek(), Some((_, '\n'))) {
                chars.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// Python's `str.strip()` with no argument: Python's whitespace set, which
/// also holds the separators U+001C..U+001F that Rust's `trim` keeps.
pub fn strip(s: &str) -> &str {
    let is_space = |c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c);
    s.trim_matches(is_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_is_pythons() {
        // Values from Python: "a\r\nb\rc\nd\x1ce\u2028f".splitlines()
        assert_eq!(
            splitlines("a\r\nb\rc\nd\x1ce\u{2028}f"),
            ["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(splitlines("a\n"), ["a"]);
        assert_eq!(splitlines("a\n\nb"), ["a", "", "b"]);
        assert_eq!(splitlines("\r\n"), [""]);
        assert!(splitlines("").is_empty());
    }

    #[test]
    fn universal_newlines_and_strip_are_pythons() {
        assert_eq!(universal_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(strip(" \t\x0b\x0c\x1c a b \u{85}\u{3000}"), "a b");
    }
}
