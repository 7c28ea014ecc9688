//! A history that was damaged, tampered with or re-keyed, through the binary
//! (contract section 11): appends never fail on the file's content, damaged
//! lines are shown, never fatal, and `history --verify` names the first entry
//! that is not authentic with exit 1, or passes with exit 0 (and a warning
//! for entries written before signing began).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::process::Command;

use serde_json::Value;

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";
const KEY: &str = "history-damage-key-one-0f3c2a91-5e8b7d2c4a6f1e3b";
const KEY2: &str = "history-damage-key-two-7d41e0b6-a2c9f4e81b07d635";

/// A `selfdeploy` command with exactly these history keys (none else from
/// the caller's environment).
fn with_keys(sb: &Sandbox, key: Option<&str>, previous: Option<&str>) -> Command {
    let mut cmd = sb.cmd();
    cmd.env_remove("HISTORY_HMAC_KEY")
        .env_remove("HISTORY_HMAC_PREVIOUS_KEYS");
    if let Some(k) = key {
        cmd.env("HISTORY_HMAC_KEY", k);
    }
    if let Some(p) = previous {
        cmd.env("HISTORY_HMAC_PREVIOUS_KEYS", p);
    }
    cmd
}

/// Delivers an event with the keys given; returns its JSON report.
fn event(sb: &Sandbox, name: &str, key: Option<&str>, previous: Option<&str>) -> Value {
    let out = with_keys(sb, key, previous)
        .args(["event", name, "--repo", REPO, "--work-item", ITEM, "--json"])
        .output()
        .unwrap();
    let (code, _, stderr) = code_out_err(&out);
    let r = parse_json(&out);
    assert_eq!(code, 0, "{name}: {r} {stderr}");
    assert_eq!(r["outcome"], "transitioned", "{r}");
    r
}

/// `n` entries: request-approve and reset in turn (no hook, no git).
fn entries(sb: &Sandbox, n: usize, key: Option<&str>, previous: Option<&str>) {
    for _ in 0..n {
        let requested = sb.item_dir(ITEM).join("approve-requested").exists();
        let name = if requested {
            "reset"
        } else {
            "request-approve"
        };
        event(sb, name, key, previous);
    }
}

/// Runs `history` with `extra` and the keys; returns (exit, stdout) and
/// checks that stderr is empty.
fn history(
    sb: &Sandbox,
    extra: &[&str],
    key: Option<&str>,
    previous: Option<&str>,
) -> (i32, String) {
    let out = with_keys(sb, key, previous)
        .args(["history", "--repo", REPO, "--work-item", ITEM])
        .args(extra)
        .output()
        .unwrap();
    let (code, stdout, stderr) = code_out_err(&out);
    assert_eq!(stderr, "", "history {extra:?}");
    (code, stdout)
}

/// `history --verify` as text and as JSON: the exit code, the message, and
/// the JSON object (checked to be one line carrying the same message).
fn verify(sb: &Sandbox, key: Option<&str>, previous: Option<&str>) -> (i32, String, Value) {
    let (code, text) = history(sb, &["--verify"], key, previous);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    let (json_code, json) = history(sb, &["--verify", "--json"], key, previous);
    assert_eq!(json_code, code, "same exit as text");
    assert_eq!(json.lines().count(), 1, "one JSON object: {json}");
    let v: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["item"], format!("{REPO}/{ITEM}"), "{v}");
    assert_eq!(v["message"].as_str(), Some(text.trim_end()), "{v}");
    (code, text.trim_end().to_owned(), v)
}

fn lines(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.history_path(ITEM))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(sb: &Sandbox, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(sb.history_path(ITEM), text).unwrap();
}

fn append_bytes(sb: &Sandbox, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(sb.history_path(ITEM))
        .unwrap();
    f.write_all(bytes).unwrap();
}

fn torn_path(sb: &Sandbox) -> std::path::PathBuf {
    let mut p = sb.history_path(ITEM).into_os_string();
    p.push(".torn");
    p.into()
}

fn torn_note(sb: &Sandbox, bytes: usize) -> String {
    format!(
        "the history's last line was torn (a crash mid-append): its {bytes} bytes were moved to {}",
        torn_path(sb).display()
    )
}

/// Every line of the file is an entry (nothing damaged).
fn all_entries(sb: &Sandbox) -> usize {
    let lines = lines(sb);
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["event"].is_string(), "{l}");
    }
    lines.len()
}

#[test]
fn a_torn_last_line_is_moved_aside_reported_and_the_append_goes_on() {
    for key in [None, Some(KEY)] {
        let sb = Sandbox::new();
        entries(&sb, 2, key, None);
        let torn = br#"{"time":"2026-01-01T00:00:00Z","actor":"crash"#;
        append_bytes(&sb, torn);

        let r = event(&sb, "request-approve", key, None);
        assert_eq!(
            r["notes"],
            serde_json::json!([torn_note(&sb, torn.len())]),
            "{r}"
        );
        let mut aside = torn.to_vec();
        aside.push(b'\n');
        assert_eq!(fs::read(torn_path(&sb)).unwrap(), aside);
        assert_eq!(all_entries(&sb), 3, "the torn bytes left the history");
        let (code, table) = history(&sb, &[], key, None);
        assert_eq!(code, 0);
        assert!(!table.contains("DAMAGED"), "{table}");
        if key.is_some() {
            assert_eq!(
                verify(&sb, key, None).1,
                format!("history of {REPO}/{ITEM}: 3 entries, chain valid")
            );
        }

        // Torn again, reported in the human report too; the aside file keeps both.
        let torn2 = b"\xff\xfe{\"half";
        append_bytes(&sb, torn2);
        let out = with_keys(&sb, key, None)
            .args(["event", "reset", "--repo", REPO, "--work-item", ITEM])
            .output()
            .unwrap();
        let (code, stdout, _) = code_out_err(&out);
        assert_eq!(code, 0, "{stdout}");
        assert!(
            stdout.contains(&format!("  note: {}\n", torn_note(&sb, torn2.len()))),
            "{stdout}"
        );
        aside.extend_from_slice(torn2);
        aside.push(b'\n');
        assert_eq!(fs::read(torn_path(&sb)).unwrap(), aside);
        assert_eq!(all_entries(&sb), 4);
        if key.is_some() {
            assert_eq!(verify(&sb, key, None).0, 0);
        }
    }
}

#[test]
fn a_history_that_is_only_a_torn_line_still_takes_the_append() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.history_path(ITEM).parent().unwrap()).unwrap();
    fs::write(sb.history_path(ITEM), b"{\"time\":").unwrap();
    let r = event(&sb, "request-approve", Some(KEY), None);
    assert_eq!(r["notes"], serde_json::json!([torn_note(&sb, 8)]), "{r}");
    assert_eq!(all_entries(&sb), 1);
    assert_eq!(verify(&sb, Some(KEY), None).0, 0);
}

#[test]
fn undecodable_and_edited_lines_stay_and_show_as_damaged() {
    for key in [None, Some(KEY)] {
        let sb = Sandbox::new();
        entries(&sb, 1, key, None);
        append_bytes(&sb, b"garbage \xff\xfe \xc3\x28 bytes\n");
        append_bytes(&sb, b"an edit, not JSON\n");
        let r = event(&sb, "reset", key, None);
        assert_eq!(r["notes"], serde_json::json!([]), "nothing torn: {r}");

        // The table shows them and exits 0.
        let (code, table) = history(&sb, &[], key, None);
        assert_eq!(code, 0, "{table}");
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert_eq!(rows.len(), 4, "{table}");
        for (row, entry, text) in [
            (rows[1], 2, "\"garbage \u{fffd}\u{fffd} \u{fffd}( bytes\""),
            (rows[2], 3, "\"an edit, not JSON\""),
        ] {
            assert!(row.starts_with("DAMAGED "), "{row}");
            assert!(
                row.ends_with(&format!("entry {entry} is not a history entry: {text}")),
                "{row}"
            );
        }
        assert!(rows[3].contains("reset"), "{table}");

        // As JSON: one object per line, the damaged ones as {entry, damaged}.
        let (code, json) = history(&sb, &["--json"], key, None);
        assert_eq!(code, 0);
        let objects: Vec<Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objects.len(), 4, "{json}");
        assert_eq!(objects[0]["event"], "request-approve");
        assert_eq!(
            objects[1],
            serde_json::json!({"entry": 2, "damaged": "garbage \u{fffd}\u{fffd} \u{fffd}( bytes"})
        );
        assert_eq!(
            objects[2],
            serde_json::json!({"entry": 3, "damaged": "an edit, not JSON"})
        );
        assert_eq!(objects[3]["event"], "reset");

        // The bytes are still there, untouched.
        let raw = fs::read(sb.history_path(ITEM)).unwrap();
        assert!(
            raw.windows(4).any(|w| w == b"\xff\xfe \xc3"),
            "kept as written"
        );

        // Signed: verify names the first damaged entry.
        if key.is_some() {
            let (code, msg, v) = verify(&sb, key, None);
            assert_eq!(code, 1, "{msg}");
            assert_eq!(
                msg,
                format!(
                    "history of {REPO}/{ITEM}: entry 2 is not authentic: it is damaged: not a history entry"
                )
            );
            assert_eq!(
                (v["verdict"].as_str(), v["entry"].as_u64()),
                (Some("broken"), Some(2))
            );
        }
    }
}

#[test]
fn tampering_names_the_first_bad_entry_and_exits_1() {
    let sb = Sandbox::new();
    entries(&sb, 5, Some(KEY), None);
    let orig = lines(&sb);
    let head = fs::read(sb.history_head_path(ITEM)).unwrap();
    let (code, msg, v) = verify(&sb, Some(KEY), None);
    assert_eq!(
        (code, msg.as_str()),
        (0, "history of orchestrator/ORCH-7: 5 entries, chain valid")
    );
    assert_eq!(v["verdict"], "valid");
    assert_eq!(v["entries"], 5);

    let mut forged = orig.clone();
    forged[2] = forged[2].replacen("\"actor\":\"", "\"actor\":\"mallory-", 1);
    assert_ne!(forged[2], orig[2]);
    let mut reordered = orig.clone();
    reordered.swap(1, 3);
    let mut dropped = orig.clone();
    dropped.remove(1);
    let cases: [(&str, Vec<String>, usize, &str); 5] = [
        ("forged entry 3", forged, 3, "its MAC does not match"),
        (
            "entries 2 and 4 swapped",
            reordered,
            2,
            "its MAC does not match",
        ),
        ("entry 2 dropped", dropped, 2, "its MAC does not match"),
        (
            "last entry dropped",
            orig[..4].to_vec(),
            5,
            "it is missing: the head records 5 entries but the history has 4",
        ),
        (
            "every entry dropped",
            Vec::new(),
            1,
            "it is missing: the head records 5 entries but the history has 0",
        ),
    ];
    for (what, text, entry, why) in cases {
        write_lines(&sb, &text);
        fs::write(sb.history_head_path(ITEM), &head).unwrap();
        let (code, msg, v) = verify(&sb, Some(KEY), None);
        assert_eq!(code, 1, "{what}: {msg}");
        let want = format!("history of {REPO}/{ITEM}: entry {entry} is not authentic: {why}");
        assert!(msg.starts_with(&want), "{what}: {msg}");
        assert_eq!(v["verdict"], "broken", "{what}: {v}");
        assert_eq!(v["entry"], entry, "{what}: {v}");
        // Reading is never stopped by it.
        assert_eq!(history(&sb, &[], Some(KEY), None).0, 0, "{what}");
    }
    // Truncated together with its head: the head file gone is named too.
    write_lines(&sb, &orig[..4]);
    fs::remove_file(sb.history_head_path(ITEM)).unwrap();
    let (code, msg, _) = verify(&sb, Some(KEY), None);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.starts_with(&format!(
            "history of {REPO}/{ITEM}: entry 4 is not authentic: the head file "
        )) && msg.contains("is missing"),
        "{msg}"
    );
    // Restored: valid again.
    write_lines(&sb, &orig);
    fs::write(sb.history_head_path(ITEM), &head).unwrap();
    assert_eq!(verify(&sb, Some(KEY), None).0, 0);
}

#[test]
fn a_key_turned_on_mid_history_reports_the_earlier_entries_as_unsigned() {
    let sb = Sandbox::new();
    entries(&sb, 2, None, None);
    let (code, msg, v) = verify(&sb, None, None);
    assert_eq!(
        (code, msg.as_str()),
        (
            0,
            "history of orchestrator/ORCH-7 is unsigned: set HISTORY_HMAC_KEY to sign new entries"
        )
    );
    assert_eq!(v["verdict"], "unsigned");

    entries(&sb, 3, Some(KEY), None);
    let (code, msg, v) = verify(&sb, Some(KEY), None);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(
        msg,
        "history of orchestrator/ORCH-7: 5 entries, chain valid from entry 3; warning: entries 1 to 2 were written before signing was turned on and are unsigned"
    );
    assert_eq!(
        (
            v["verdict"].as_str(),
            v["entries"].as_u64(),
            v["unsigned"].as_u64()
        ),
        (Some("valid"), Some(5), Some(2)),
        "{v}"
    );
    // Without the key, no event extends the signed history.
    let out = with_keys(&sb, None, None)
        .args(["event", "reset", "--repo", REPO, "--work-item", ITEM])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (code, msg, _) = verify(&sb, Some(KEY), None);
    assert_eq!(code, 0, "{msg}");
    // An unsigned entry after signing began (an earlier release's) breaks
    // the chain there.
    let path = sb
        .state_root()
        .join(".selfdeploy/history")
        .join(REPO)
        .join(format!("{ITEM}.jsonl"));
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(
        r#"{"time":"2026-01-01T00:00:00Z","actor":"old","event":"reset","from":"approve_requested","to":"idle","outcome":"transitioned","reason":null,"effects":["remove_state_dir"]}"#,
    );
    text.push('\n');
    fs::write(&path, text).unwrap();
    let (code, msg, _) = verify(&sb, Some(KEY), None);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.starts_with(
            "history of orchestrator/ORCH-7: entry 6 is not authentic: it is unsigned, after signing began"
        ),
        "{msg}"
    );
}

#[test]
fn a_rotated_key_verifies_with_the_previous_key_and_names_entry_1_without_it() {
    let sb = Sandbox::new();
    entries(&sb, 2, Some(KEY), None);
    entries(&sb, 2, Some(KEY2), Some(KEY));
    let ids: Vec<String> = lines(&sb)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["key_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let (old_id, new_id) = (ids[0].clone(), ids[3].clone());
    assert_eq!(ids, [&*old_id, &old_id, &new_id, &new_id]);
    assert_ne!(old_id, new_id);

    let valid = "history of orchestrator/ORCH-7: 4 entries, chain valid";
    for previous in [KEY.to_owned(), format!("some-other-key,{KEY}")] {
        let (code, msg, v) = verify(&sb, Some(KEY2), Some(&previous));
        assert_eq!((code, msg.as_str()), (0, valid));
        assert_eq!(v["verdict"], "valid");
    }
    let unknown = |entry: usize, id: &str| {
        format!(
            "history of orchestrator/ORCH-7: entry {entry} is not authentic: it is signed by key id {id}, which is neither HISTORY_HMAC_KEY nor in HISTORY_HMAC_PREVIOUS_KEYS"
        )
    };
    // Without the old key: entry 1 is signed by a key nobody named.
    let (code, msg, v) = verify(&sb, Some(KEY2), None);
    assert_eq!((code, msg), (1, unknown(1, &old_id)));
    assert_eq!(
        (v["verdict"].as_str(), v["entry"].as_u64()),
        (Some("broken"), Some(1))
    );
    // The old key alone: the first entry under the new key is named.
    let (code, msg, _) = verify(&sb, Some(KEY), None);
    assert_eq!((code, msg), (1, unknown(3, &new_id)));
    // A third key after a second rotation, both old keys listed.
    entries(
        &sb,
        1,
        Some("history-damage-key-three-93b1e07c5d2a8f46e1c9"),
        Some(&format!("{KEY2},{KEY}")),
    );
    let (code, msg, _) = verify(
        &sb,
        Some("history-damage-key-three-93b1e07c5d2a8f46e1c9"),
        Some(&format!("{KEY},{KEY2}")),
    );
    assert_eq!(
        (code, msg.as_str()),
        (0, "history of orchestrator/ORCH-7: 5 entries, chain valid")
    );
}

#[test]
fn verifying_a_signed_history_with_no_key_is_an_error() {
    let sb = Sandbox::new();
    entries(&sb, 2, Some(KEY), None);
    let first: Value = serde_json::from_str(&lines(&sb)[0]).unwrap();
    let id = first["key_id"].as_str().unwrap();
    let (code, msg, v) = verify(&sb, None, None);
    assert_eq!(code, 1, "{msg}");
    assert_eq!(
        msg,
        format!(
            "history of orchestrator/ORCH-7 is signed (key id {id}) but HISTORY_HMAC_KEY is not set: nothing can be verified; set the key"
        )
    );
    assert_eq!(v["verdict"], "no_key", "{v}");
    // An empty key is no key.
    let (code, _, v) = verify(&sb, Some(""), None);
    assert_eq!((code, v["verdict"].as_str()), (1, Some("no_key")));
    // Reading it is still fine.
    assert_eq!(history(&sb, &[], None, None).0, 0);
}

/// The history is on the shared mount, like the state files: a symbolic link
/// in its place is never followed. Here it points at a file outside REPOS_DIR
/// whose last line has no line end: the event must leave that file as it was
/// (no entry appended to it, and above all no "torn" line cut off it).
#[test]
fn an_event_never_writes_through_a_history_that_is_a_symlink() {
    let sb = Sandbox::new();
    let outside = sb.root().join("outside.txt");
    let original = b"first line\nlast line without a line end".to_vec();
    fs::write(&outside, &original).unwrap();
    let history = sb.history_path(ITEM);
    fs::create_dir_all(history.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &history).unwrap();

    let out = sb.event("request-approve", ITEM, &[]);
    let (code, stdout, stderr) = code_out_err(&out);
    assert!(code == 0 || code == 1, "exit {code}: {stdout} {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&fs::read(&outside).unwrap()),
        String::from_utf8_lossy(&original),
        "the file the history's symlink points to was written through it: {stdout} {stderr}"
    );
}

/// An actor is recorded as given (JSON keeps it whole), but the `history`
/// table is for a human: a line break in an actor (from --actor, or
/// $SUDO_USER) must not start a line of its own that reads as another entry.
#[test]
fn an_actor_with_a_line_break_cannot_forge_a_row_of_the_history_table() {
    let sb = Sandbox::new();
    let forged =
        "2020-01-01T00:00:00Z  alice  approved  approve_requested  initiated  transitioned";
    let out = sb.event(
        "request-approve",
        ITEM,
        &["--actor", &format!("mallory\n{forged}")],
    );
    assert_eq!(code(&out), 0, "{out:?}");
    let out = sb
        .cmd()
        .env("SUDO_USER", format!("eve\r{forged}"))
        .args(["event", "reset", "--repo", REPO, "--work-item", ITEM])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{out:?}");

    // The JSON keeps each actor whole.
    let out = sb.run(&["history", "--repo", REPO, "--work-item", ITEM, "--json"]);
    let actors: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["actor"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actors,
        [format!("mallory\n{forged}"), format!("eve\r{forged}")]
    );

    let out = sb.run(&["history", "--repo", REPO, "--work-item", ITEM]);
    let (code, table, stderr) = code_out_err(&out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        table.lines().count(),
        3,
        "a header and one line per entry:\n{table}"
    );
    assert!(
        !table.contains('\r') && !table.lines().any(|l| l.starts_with("2020-01-01")),
        "an actor's line break reads as a forged entry:\n{table}"
    );
}
