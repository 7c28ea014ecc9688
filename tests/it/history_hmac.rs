//! A signed history through the binary: a real deploy verifies, and every
//! kind of tampering is named by `history --verify`.

use std::fs;
use std::process::Output;

use crate::support::sandbox::*;

const KEY: &str = "489759cf3eed9c0624e0433b1b608088b256266255f273e173838963365cda23";
const ITEM: &str = "ORCH-7";

fn verify(sb: &Sandbox) -> (i32, String) {
    let out = sb.run(&["history", "--verify", "--repo", REPO, "--work-item", ITEM]);
    outcome(out)
}

fn outcome(out: Output) -> (i32, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// A whole deploy with the key set: request, approve, poll to the end.
fn signed_deploy() -> Sandbox {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    sb.approve_item(ITEM);
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    sb
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_signed_deploy_verifies_and_tampering_is_named() {
    let sb = signed_deploy();
    let path = sb.history_path(ITEM);
    let original = fs::read_to_string(&path).unwrap();
    let head = fs::read(sb.history_head_path(ITEM)).unwrap();
    let orig = lines(&original);
    let n = orig.len();
    assert!(n >= 3, "{original}");
    for line in &orig {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mac = v["mac"]
            .as_str()
            .unwrap_or_else(|| panic!("unsigned: {line}"));
        assert_eq!(mac.len(), 64, "{line}");
    }
    let head_json: serde_json::Value = serde_json::from_slice(&head).unwrap();
    assert_eq!(head_json["entries"], n);

    assert_eq!(
        verify(&sb),
        (
            0,
            format!("history of {REPO}/{ITEM}: {n} entries, chain valid\n")
        )
    );
    // The history still reads as before, as a table and as JSON.
    let out = sb.run(&["history", "--repo", REPO, "--work-item", ITEM]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("finalized_success"));
    let out = sb.run(&["history", "--repo", REPO, "--work-item", ITEM, "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n);

    let check = |what: &str, text: String, entry: usize| {
        fs::write(&path, text).unwrap();
        fs::write(sb.history_head_path(ITEM), &head).unwrap();
        let (code, stdout) = verify(&sb);
        let want = format!("history of {REPO}/{ITEM}: entry {entry} is not authentic: ");
        assert_eq!(code, 1, "{what}: {stdout}");
        assert!(stdout.starts_with(&want), "{what}: {stdout}");
        assert_eq!(stdout.lines().count(), 1, "{what}: {stdout}");
    };

    let mut forged = orig.clone();
    let v: serde_json::Value = serde_json::from_str(&forged[1]).unwrap();
    let actor = format!("\"actor\":\"{}\"", v["actor"].as_str().unwrap());
    assert!(forged[1].contains(&actor));
    forged[1] = forged[1].replace(&actor, "\"actor\":\"mallory\"");
    check("forged entry 2", join(&forged), 2);

    let mut dropped = orig.clone();
    dropped.remove(1);
    check("dropped entry 2", join(&dropped), 2);

    let mut reordered = orig.clone();
    reordered.swap(1, 2);
    check("entries 2 and 3 swapped", join(&reordered), 2);

    check("truncated tail", join(&orig[..n - 1]), n);

    // Back as it was: valid again; a wrong key breaks the first entry.
    fs::write(&path, &original).unwrap();
    fs::write(sb.history_head_path(ITEM), &head).unwrap();
    assert_eq!(verify(&sb).0, 0);
    let out = sb
        .cmd()
        .args(["history", "--verify", "--repo", REPO, "--work-item", ITEM])
        .env(
            "HISTORY_HMAC_KEY",
            "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
        )
        .output()
        .unwrap();
    let (code, stdout) = outcome(out);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "history of {REPO}/{ITEM}: entry 1 is not authentic: "
        )),
        "{stdout}"
    );
}

#[test]
fn an_unsigned_history_says_so_and_a_key_names_its_first_unsigned_entry() {
    let mut sb = Sandbox::new();
    let (code, r) = sb.event_json("request-approve", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    let text = fs::read_to_string(sb.history_path(ITEM)).unwrap();
    assert!(!text.contains("\"mac\""), "{text}");
    assert!(!sb.history_head_path(ITEM).exists());
    assert_eq!(
        verify(&sb),
        (
            0,
            format!(
                "history of {REPO}/{ITEM} is unsigned: set HISTORY_HMAC_KEY to sign new entries\n"
            )
        )
    );

    // The key is turned on from now on: the entry written before is
    // reported as unsigned, and the chain starts after it (exit 0).
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    let (code, r) = sb.event_json("reset", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    let (code, stdout) = verify(&sb);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout,
        format!(
            "history of {REPO}/{ITEM}: 2 entries, chain valid from entry 2; warning: entries 1 to 1 were written before signing was turned on and are unsigned\n"
        )
    );
    // A host without the key may not extend a signed history: the event is
    // refused before it acts (exit 1, naming the setting), nothing changes.
    sb.env.remove("HISTORY_HMAC_KEY");
    let before = sb.disk();
    let out = sb.event("request-approve", ITEM, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is signed")
            && stderr.contains("HISTORY_HMAC_KEY")
            && stderr.contains("nothing done"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(sb.disk(), before, "nothing written, the history included");
    // Reading needs no key; a dry run writes nothing and still works.
    let (code, r) = sb.event_json("request-approve", ITEM, &["--dry-run"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(sb.disk(), before);
    // A history extended unsigned by an earlier release: the break is named.
    let mut text = fs::read_to_string(sb.history_path(ITEM)).unwrap();
    text.push_str(
        r#"{"time":"2026-01-01T00:00:00Z","actor":"old","event":"request-approve","from":"idle","to":"approve_requested","outcome":"transitioned","reason":null,"effects":["write_marker"]}"#,
    );
    text.push('\n');
    fs::write(sb.history_path(ITEM), text).unwrap();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    let (code, stdout) = verify(&sb);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "history of {REPO}/{ITEM}: entry 3 is not authentic: it is unsigned, after signing began"
        )),
        "{stdout}"
    );
}

#[test]
fn verify_of_a_work_item_without_history() {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    assert_eq!(
        verify(&sb),
        (
            0,
            format!("history of {REPO}/{ITEM}: 0 entries, chain valid\n")
        )
    );
}
