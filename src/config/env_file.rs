//! The env file format: one grammar read the same way by selfdeploy,
//! systemd's `EnvironmentFile=` and Compose (`env_file`, and the `.env` it
//! interpolates from). Where those readers differ, the line is refused, with
//! its number and the fix, so that a value never means one thing to one of
//! them and another thing to the next. No variable is ever substituted: a
//! `$` is refused unless single-quoted, where every reader keeps it as it is.
//!
//! ```text
//! file       = line*                      (LF or CRLF line ends; no byte-order mark)
//! line       = blank | comment | assignment
//! blank      = white space only
//! comment    = white space, '#', anything
//! assignment = white space, NAME '=' value, trailing white space
//! NAME       = [A-Za-z_][A-Za-z0-9_]*    (no white space around '=')
//! value      = ''                          empty
//!            | bare                        no white space, quote, '\', '$' or '`'; not starting with '#'
//!            | "'" (any but "'")* "'"      single-quoted: taken as it is
//!            | '"' (any but '"' '\' '$' '`')* '"'   double-quoted: taken as it is
//! ```
//!
//! Pure: bytes in, entries or the first problem out. A problem names the
//! line by its number and never shows its text (it may hold a secret).

/// One `NAME=value` of a file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A line the grammar refuses: its number and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

/// Every assignment of the file, in order (a name given twice appears
/// twice: the last one is the value).
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, LineError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(LineError {
            line: 1,
            problem: "the file begins with a UTF-8 byte-order mark (BOM), which systemd and compose read as part of the first name; save the file without it".to_owned(),
        });
    }
    let mut entries = Vec::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| LineError {
            line,
            problem: "not valid UTF-8; save the file as UTF-8".to_owned(),
        })?;
        if let Some(entry) = parse_line(text).map_err(|problem| LineError { line, problem })? {
            entries.push(Entry {
                name: entry.0,
                value: entry.1,
                line,
            });
        }
    }
    Ok(entries)
}

/// White space as every reader of the file trims it.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `None` for a blank line or a comment.
fn parse_line(text: &str) -> Result<Option<(String, String)>, String> {
    let text = text.trim_start_matches(is_blank);
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    if text.contains('\0') {
        return Err("holds a NUL byte".to_owned());
    }
    if text.starts_with(';') {
        return Err(
            "a line starting with ';' is a comment to systemd but not to compose; start comments with '#'"
                .to_owned(),
        );
    }
    let Some((name, value)) = text.split_once('=') else {
        return Err("is not NAME=VALUE (no '='); comments start with '#'".to_owned());
    };
    if let Some(rest) = name.strip_prefix("export")
        && rest.starts_with(is_blank)
        && is_name(rest.trim_start_matches(is_blank))
    {
        return Err(
            "starts with 'export', which systemd's EnvironmentFile= does not understand (it skips the line); write NAME=VALUE".to_owned(),
        );
    }
    if name.ends_with(is_blank) && is_name(name.trim_end_matches(is_blank)) {
        return Err("has white space before '='; write NAME=VALUE".to_owned());
    }
    if !is_name(name) {
        return Err(
            "the name before '=' is not a variable name (ASCII letters, digits and '_', not starting with a digit)".to_owned(),
        );
    }
    Ok(Some((name.to_owned(), parse_value(value)?)))
}

fn parse_value(value: &str) -> Result<String, String> {
    if value.starts_with(is_blank) {
        return Err(
            "has white space after '='; write NAME=VALUE, and quote a value that holds white space"
                .to_owned(),
        );
    }
    let (inner, rest) = if let Some(quoted) = value.strip_prefix('\'') {
        let Some((inner, rest)) = quoted.split_once('\'') else {
            return Err(
                "has a ' that is not closed on the same line (a value is one line)".to_owned(),
            );
        };
        (inner, rest)
    } else if let Some(quoted) = value.strip_prefix('"') {
        let Some((inner, rest)) = quoted.split_once('"') else {
            return Err(
                "has a \" that is not closed on the same line (a value is one line)".to_owned(),
            );
        };
        if inner.contains(['\\', '$', '`']) {
            return Err(
                "has a '\\', '$' or '`' inside double quotes, which systemd and compose read differently (compose substitutes variables); put the value in single quotes"
                    .to_owned(),
            );
        }
        (inner, rest)
    } else {
        let bare = value.trim_end_matches(is_blank);
        if bare.contains(char::is_whitespace) {
            return Err(
                "has white space in a value that is not quoted; put the value in single quotes"
                    .to_owned(),
            );
        }
        if bare.contains(['\'', '"', '`']) {
            return Err(
                "has a quote inside a value that is not quoted; quote the whole value".to_owned(),
            );
        }
        if bare.contains(['\\', '$']) {
            return Err(
                "has a '\\' or '$' in a value that is not quoted: compose would substitute a variable and systemd would not; put the value in single quotes"
                    .to_owned(),
            );
        }
        if bare.starts_with('#') {
            return Err(
                "has a value that starts with '#', which compose reads as a comment; put the value in single quotes"
                    .to_owned(),
            );
        }
        return Ok(bare.to_owned());
    };
    if !rest.trim_start_matches(is_blank).is_empty() {
        return Err(
            "has text after the closing quote; quote the whole value, and put comments on their own line"
                .to_owned(),
        );
    }
    Ok(inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<(String, String), String> {
        match parse(line.as_bytes()) {
            Ok(e) if e.len() == 1 => Ok((e[0].name.clone(), e[0].value.clone())),
            Ok(e) => Err(format!("{} entries", e.len())),
            Err(e) => Err(e.problem),
        }
    }

    fn ok(line: &str, name: &str, value: &str) {
        assert_eq!(
            one(line),
            Ok((name.to_owned(), value.to_owned())),
            "{line:?}"
        );
    }

    fn refused(line: &str, says: &str) {
        match one(line) {
            Err(problem) => assert!(problem.contains(says), "{line:?}: {problem}"),
            Ok(e) => panic!("{line:?} was accepted: {e:?}"),
        }
    }

    #[test]
    fn what_every_reader_agrees_on_is_accepted() {
        ok("A=b", "A", "b");
        ok("A=", "A", "");
        ok("A=''", "A", "");
        ok("A=\"\"", "A", "");
        ok("  A=b  ", "A", "b");
        ok("A='two words'", "A", "two words");
        ok("A=\"two words\"", "A", "two words");
        ok("A='abc$def ${HOME} \\n \"'", "A", "abc$def ${HOME} \\n \"");
        ok("A=\"it's\"", "A", "it's");
        ok("A='x'  ", "A", "x");
        ok("_a1=b=c#d", "_a1", "b=c#d");
        ok("A={repos_dir}/x", "A", "{repos_dir}/x");
        ok("A=b\r\n", "A", "b");
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let e = parse(b"# c\n\n   \n\t# x=y\nA=1\n").unwrap();
        assert_eq!(
            e,
            [Entry {
                name: "A".into(),
                value: "1".into(),
                line: 5
            }]
        );
    }

    #[test]
    fn no_variable_is_substituted_and_a_dollar_needs_single_quotes() {
        refused("K=abc$def", "single quotes");
        refused("U=$USER", "single quotes");
        refused("U=${USER}", "single quotes");
        refused("U=\"$USER\"", "single quotes");
        refused("U=a\\b", "single quotes");
        refused("U=\"a\\\"b\"", "single quotes");
    }

    #[test]
    fn what_the_readers_differ_on_is_refused() {
        refused("export A=b", "export");
        refused("A =b", "before '='");
        refused("A= b", "after '='");
        refused("A=two words", "white space");
        refused("A=b # comment", "white space");
        refused("A=#b", "starts with '#'");
        refused("A='b", "not closed");
        refused("A=\"b", "not closed");
        refused("A='b'c", "after the closing quote");
        refused("A='b' # c", "after the closing quote");
        refused("A=b'c", "quote");
        refused("A=`b`", "quote");
        refused("; c", "';'");
        refused("A", "no '='");
        refused("1A=b", "not a variable name");
        refused("A-B=c", "not a variable name");
        refused("=b", "not a variable name");
    }

    #[test]
    fn a_problem_names_the_line_and_never_shows_it() {
        let err = parse(b"# c\nA=1\nB=s3cret words\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(!err.problem.contains("s3cret"), "{}", err.problem);
        let err = parse(b"\xEF\xBB\xBFA=1\n").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.problem.contains("byte-order mark"), "{}", err.problem);
        let err = parse(b"A=1\nB=\xff\n").unwrap_err();
        assert_eq!((err.line, err.problem.contains("UTF-8")), (2, true));
    }

    #[test]
    fn a_name_given_twice_is_kept_twice_in_order() {
        let e = parse(b"A=1\nA=2\n").unwrap();
        assert_eq!(
            e.iter()
                .map(|e| (e.line, e.value.as_str()))
                .collect::<Vec<_>>(),
            [(1, "1"), (2, "2")]
        );
    }
}
