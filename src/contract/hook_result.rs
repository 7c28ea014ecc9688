//! The hook's exit code as the host wrapper leaves it in a result file:
//! blank is not there yet, an integer is that code, anything else is code 1
//! (fail-closed); and the verdict: 0 is SUCCESS, anything else FAILED.
//! Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The exit code a deploy log shows when the hook wrote no result before the
/// result deadline: not a number, so it can never read as success.
pub const TIMEOUT_EXIT_CODE: &str = "timeout";

/// The verdict written into the deploy log's frontmatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Success,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "SUCCESS",
            Verdict::Failed => "FAILED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A present result: the exit code as the original prints it (a decimal
/// integer of any size, like Python's `int`), and the raw text when it was
/// garbage and therefore read as exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookExit {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garbage: Option<String>,
}

impl HookExit {
    pub fn verdict(&self) -> Verdict {
        if self.code == "0" {
            Verdict::Success
        } else {
            Verdict::Failed
        }
    }
}

/// Python's `int()` refuses strings longer than this many digits (3.11+);
/// the original therefore reads them as garbage, and so do we.
const MAX_DIGITS: usize = 4300;

/// Parses the content of `result`. `None`: not present yet (the finalizer
/// defers). Garbage is present with exit code 1: never advance on doubt.
pub fn parse_result(raw: &[u8]) -> Option<HookExit> {
    let garbage = |shown: &str| {
        Some(HookExit {
            code: "1".into(),
            garbage: Some(shown.chars().take(64).collect()),
        })
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return garbage(&String::from_utf8_lossy(raw));
    };
    let text = crate::contract::pytext::strip(text);
    if text.is_empty() {
        return None;
    }
    let (negative, digits) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // Python's int() also takes single underscores between digits ("1_000").
    let well_formed = !digits.is_empty()
        && digits
            .split('_')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()));
    let digits = digits.replace('_', "");
    if !well_formed || digits.len() > MAX_DIGITS {
        return garbage(text);
    }
    let digits = digits.trim_start_matches('0');
    let code = match (digits.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits.to_owned(),
    };
    Some(HookExit {
        code,
        garbage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> Option<String> {
        parse_result(raw.as_bytes()).map(|e| e.code)
    }

    #[test]
    fn missing_or_blank_is_not_present() {
        assert_eq!(code(""), None);
        assert_eq!(code(" \n\t\r\n"), None);
    }

    #[test]
    fn integers_as_python_reads_them() {
        assert_eq!(code("0\n").as_deref(), Some("0"));
        assert_eq!(code("+0").as_deref(), Some("0"));
        assert_eq!(code("-0").as_deref(), Some("0"));
        assert_eq!(code("  2 ").as_deref(), Some("2"));
        assert_eq!(code("007").as_deref(), Some("7"));
        assert_eq!(code("-3").as_deref(), Some("-3"));
        assert_eq!(code("255").as_deref(), Some("255"));
        assert_eq!(code("1_0").as_deref(), Some("10"));
        assert_eq!(
            code("0\x1c").as_deref(),
            Some("0"),
            "Python strips U+001C..U+001F"
        );
        let huge = "9".repeat(40);
        assert_eq!(code(&huge).as_deref(), Some(huge.as_str()));
    }

    #[test]
    fn garbage_is_present_with_exit_code_one() {
        for raw in [
            "1.5",
            "abc",
            "0x1",
            "--1",
            "+",
            "1 2",
            "１",
            "_1",
            "1_",
            "1__0",
            &"1".repeat(MAX_DIGITS + 1),
        ] {
            let exit = parse_result(raw.as_bytes()).unwrap();
            assert_eq!(exit.code, "1", "{raw:?}");
            assert!(exit.garbage.is_some(), "{raw:?}");
        }
        let exit = parse_result(&[0xff, 0xfe, b'0']).unwrap();
        assert_eq!(exit.code, "1");
    }

    #[test]
    fn verdict_is_success_only_for_zero() {
        let v = |raw: &str| parse_result(raw.as_bytes()).unwrap().verdict();
        assert_eq!(v("0"), Verdict::Success);
        assert_eq!(v("+0"), Verdict::Success);
        for raw in ["1", "2", "-1", "137", "garbage", "0.0"] {
            assert_eq!(v(raw), Verdict::Failed, "{raw}");
        }
    }

    #[test]
    fn a_sign_is_kept_and_a_negative_code_is_not_garbage() {
        let minus = parse_result(b"-1\n").unwrap();
        assert_eq!(
            (minus.code.as_str(), minus.garbage.as_deref()),
            ("-1", None)
        );
        assert_eq!(minus.verdict(), Verdict::Failed);
        let zero = parse_result(b"-0").unwrap();
        assert_eq!((zero.code.as_str(), zero.garbage.as_deref()), ("0", None));
    }

    #[test]
    fn as_many_digits_as_python_reads_and_not_one_more() {
        let longest = format!("1{}", "0".repeat(MAX_DIGITS - 1));
        let read = parse_result(longest.as_bytes()).unwrap();
        assert_eq!(
            (read.code.len(), read.garbage.as_deref()),
            (MAX_DIGITS, None)
        );
        let too_long = format!("1{}", "0".repeat(MAX_DIGITS));
        let read = parse_result(too_long.as_bytes()).unwrap();
        assert_eq!(read.code, "1");
        assert!(read.garbage.is_some());
    }
}
