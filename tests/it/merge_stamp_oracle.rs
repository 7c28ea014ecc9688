//! The merge stamp must equal, byte for byte, what the original produces
//! wherever the original does not corrupt the file: wherever the first `---`
//! after the opening one begins a line. The oracle is the original's algorithm
//! as the contract (section 8) states it, run by a real Python: text read with
//! universal newlines, `split("---", 2)`, `splitlines()`, `strip().lower()`,
//! `strip("\n")`. Everywhere else the oracle splits where the contract says
//! (the first later `---` that begins a line), so a value holding `---` (a
//! work item `A---B`) is never cut.

use std::io::Write;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use selfdeploy::contract::deploy_log::{Stamp, stamp_merged};

const ORACLE: &str = r#"
import io, json, sys
cases = json.load(sys.stdin)
out = []
for case in cases:
    content = io.TextIOWrapper(io.BytesIO(case["text"].encode("utf-8")), encoding="utf-8").read()
    value = "true" if case["merged"] else "false"
    if not content.startswith("---"):
        out.append(None); continue
    if case["original"]:
        parts = content.split("---", 2)
        if len(parts) < 3:
            out.append(None); continue
    else:
        close = content.find("\n---", 3)
        if close < 0:
            out.append(None); continue
        parts = ["", content[3:close + 1], content[close + 4:]]
    lines, replaced = [], False
    for ln in parts[1].splitlines():
        if ln.strip().lower().startswith("merged_to_main:"):
            lines.append("merged_to_main: " + value); replaced = True
        else:
            lines.append(ln)
    if not replaced:
        if lines and lines[0] == "":
            lines = lines[1:]
        lines.append("merged_to_main: " + value)
    out.append("---\n" + "\n".join(lines).strip("\n") + "\n---" + parts[2])
json.dump(out, sys.stdout)
"#;

fn python(cases: &[(String, bool)]) -> Vec<Option<String>> {
    let input: Vec<_> = cases
        .iter()
        .map(|(text, merged)| {
            serde_json::json!({"text": text, "merged": merged, "original": original_is_sound(text)})
        })
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the oracle test (apt-get install -y python3)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether the original splits where the contract does: the first `---`
/// after the opening one begins a line (after universal newlines).
fn original_is_sound(text: &str) -> bool {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    match text.get(3..).and_then(|rest| rest.find("---")) {
        Some(i) => text.as_bytes()[3 + i - 1] == b'\n',
        None => true,
    }
}

fn ours(text: &str, merged: bool) -> Option<String> {
    match stamp_merged(text, merged) {
        Stamp::Rewritten(s) => Some(s),
        Stamp::NoFrontmatter => None,
    }
}

/// Pieces that exercise every branch: fences, CR/CRLF, the key in odd cases
/// and spacing, blank lines, Python-only line breaks and white space.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("---".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\r".to_owned()),
        Just("merged_to_main: false".to_owned()),
        Just("  MERGED_TO_MAIN:yes ".to_owned()),
        Just("Merged_To_Main".to_owned()),
        Just("deploy_status: SUCCESS".to_owned()),
        Just("\x0c".to_owned()),
        Just("\x1c".to_owned()),
        Just("\x1f".to_owned()),
        Just("\u{2028}".to_owned()),
        Just("\u{85}".to_owned()),
        Just(" ".to_owned()),
        Just("é".to_owned()),
        "[a-z: ]{0,6}",
    ]
}

#[test]
fn fixed_cases_match_python() {
    let cases: Vec<(String, bool)> = [
        "---\ndeploy_status: SUCCESS\nwork_item: W\n---\n\nbody\n",
        "---\r\ndeploy_status: FAILED\r\nmerged_to_main: true\r\n---\r\nbody\r",
        "no frontmatter\n",
        "---\nunclosed\n",
        "------",
        "---\n\n\n---\n",
        "--- \nmerged_to_main:\n---",
        "---\nwork_item: A---B\ndeploy_status: SUCCESS\n---\n\nbody\n",
    ]
    .iter()
    .flat_map(|t| [(t.to_string(), true), (t.to_string(), false)])
    .collect();
    let expected = python(&cases);
    for ((text, merged), want) in cases.iter().zip(expected) {
        assert_eq!(ours(text, *merged), want, "{text:?}");
    }
}

#[test]
fn a_value_holding_three_dashes_stays_in_the_frontmatter() {
    let log = "---\ndeploy_status: SUCCESS\nwork_item: A---B\nhook_exit_code: 0\n---\n\nbody\n";
    assert_eq!(
        ours(log, false).unwrap(),
        "---\ndeploy_status: SUCCESS\nwork_item: A---B\nhook_exit_code: 0\nmerged_to_main: false\n---\n\nbody\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    #[test]
    fn random_documents_match_python(docs in prop::collection::vec(
        (prop::collection::vec(piece(), 0..14).prop_map(|p| format!("---{}", p.concat())), any::<bool>()),
        64,
    )) {
        let expected = python(&docs);
        for ((text, merged), want) in docs.iter().zip(expected) {
            prop_assert_eq!(ours(text, *merged), want, "{:?}", text);
        }
    }
}
