//! What an operator sees: the hook's output of a run (`logs`, kept by a
//! reset), one audit trail across items (`history --all`), a problem that
//! stays until it is resolved, `status --check` and `watch --once` exit
//! codes for monitoring, and log lines under systemd.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::report::code_out_err;
use crate::support::sandbox::{Hold, Sandbox, git, run_bounded, wait_for};

fn logs(sb: &Sandbox, item: &str, extra: &[&str]) -> (i32, String, String) {
    let mut cmd = sb.cmd();
    cmd.args(["logs", "--repo", "orchestrator", "--work-item", item])
        .args(extra);
    code_out_err(&run_bounded(cmd, Duration::from_secs(30)))
}

/// A finalized deploy's output is shown; the reset that removes the item
/// keeps it, and `logs --dispatch` finds it.
#[test]
fn logs_show_the_hook_output_and_a_reset_keeps_it() {
    let sb = Sandbox::new();
    let item = "LOGS-1";
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    sb.wait_for_result(item);
    let (code, out, err) = logs(&sb, item, &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("hook: deploying"), "{out}");
    sb.poll_until_final(item, &[]);
    let (c, r) = sb.event_json("reset", item, &[]);
    assert_eq!(c, 0, "{r}");
    assert!(!sb.item_dir(item).exists());

    let (code, kept, err) = logs(&sb, item, &["--dispatch", &id]);
    assert_eq!((code, kept.as_str()), (0, out.as_str()), "{err}");
    // The item has no run now: said, exit 1.
    let (code, _, err) = logs(&sb, item, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no hook output"), "{err}");
    let (code, _, err) = logs(&sb, item, &["--dispatch", "0123456789abcdef"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = logs(&sb, item, &["--dispatch", "../../etc"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("invalid dispatch id"), "{err}");
}

/// `logs -f` follows the run and exits 0 once its result lands.
#[test]
fn logs_follow_until_the_result_lands() {
    let sb = Sandbox::new();
    let item = "LOGS-2";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let hook_log = sb.item_dir(item).join("hook.log");
    assert!(wait_for(Duration::from_secs(10), || hook_log.exists()));
    let mut cmd = sb.cmd();
    cmd.args(["logs", "--repo", "orchestrator", "--work-item", item, "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "-f ended while the run goes on"
    );
    hold.release();
    assert!(wait_for(Duration::from_secs(20), || child
        .try_wait()
        .unwrap()
        .is_some()));
    let out = child.wait_with_output().unwrap();
    let (code, out, err) = code_out_err(&out);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hook: deploying"), "{out}");
}

fn history_all(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let out = sb
        .cmd()
        .args(["history", "--all", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let (code, out, err) = code_out_err(&out);
    assert_eq!(code, 0, "{out} {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One trail across items, newest first, a reset item's included;
/// `--limit`, `--repo` and `--since` cut it.
#[test]
fn history_all_is_one_trail_newest_first() {
    let sb = Sandbox::new();
    sb.request_approve("AUDIT-1");
    std::thread::sleep(Duration::from_millis(1100));
    sb.request_approve("AUDIT-2");
    std::thread::sleep(Duration::from_millis(1100));
    let (c, r) = sb.event_json("reset", "AUDIT-1", &[]);
    assert_eq!(c, 0, "{r}");
    let all = history_all(&sb, &[]);
    let shown: Vec<(String, String)> = all
        .iter()
        .map(|e| {
            (
                e["work_item"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("AUDIT-1".to_owned(), "reset".to_owned()),
            ("AUDIT-2".to_owned(), "request-approve".to_owned()),
            ("AUDIT-1".to_owned(), "request-approve".to_owned()),
        ]
    );
    assert!(all.iter().all(|e| e["repo"] == "orchestrator"));
    assert_eq!(history_all(&sb, &["--limit", "1"]).len(), 1);
    assert_eq!(history_all(&sb, &["--repo", "other"]).len(), 0);
    assert_eq!(history_all(&sb, &["--since", "1h"]).len(), 3);
    assert_eq!(
        history_all(&sb, &["--since", "2000-01-01T00:00:00Z"]).len(),
        3
    );
    assert_eq!(
        history_all(&sb, &["--since", "2999-01-01T00:00:00Z"]).len(),
        0
    );
    let table = sb.run(&["history", "--all"]);
    let (code, out, _) = code_out_err(&table);
    assert_eq!(code, 0);
    assert!(out.starts_with("TIME"), "{out}");
    let bad = sb.run(&["history", "--all", "--since", "yesterday-ish"]);
    assert_eq!(code_out_err(&bad).0, 1);
}

fn status(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = sb.cmd().arg("status").args(args).output().unwrap();
    let (code, out, err) = code_out_err(&out);
    (code, format!("{out}{err}"))
}

/// A failed dispatch stays a problem after an illegal event, until the next
/// approval or reset; `status --check` exits 1 while it is there.
#[test]
fn a_failed_dispatch_stays_visible_and_check_fails_on_it() {
    let mut sb = Sandbox::new();
    sb.ssh_refused();
    let item = "SEEN-1";
    sb.request_approve(item);
    assert_eq!(status(&sb, &["--check"]).0, 0);
    let (c, r) = sb.approve(item);
    assert_eq!(r["outcome"], "dispatch_failed", "{c} {r}");
    // An illegal event since: the failure is still the problem.
    let (c, r) = sb.event_json("merge-verified", item, &["--merged", "true"]);
    assert_eq!(r["outcome"], "illegal", "{c} {r}");
    let s = sb.status_json(item);
    assert!(
        s["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("dispatch failed: ")),
        "{s}"
    );
    let (code, out) = status(&sb, &["--check"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = status(&sb, &["--check", "--json"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(status(&sb, &[]).0, 0);
    // A reset resolves it.
    let (c, r) = sb.event_json("reset", item, &[]);
    assert_eq!(c, 0, "{r}");
    let (code, out) = status(&sb, &["--check"]);
    assert_eq!(code, 0, "{out}");
}

/// A push that fails is an error of `watch --once` (exit 1); under systemd
/// its log lines carry no time of their own.
#[test]
fn watch_once_fails_on_a_failed_push_and_journal_lines_have_no_time() {
    let sb = Sandbox::new();
    let item = "PUSH-1";
    git(&sb.remote(), &["config", "receive.maxInputSize", "1"]);
    sb.approve_item(item);
    sb.wait_for_result(item);
    let (code, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (code, r["condition"].as_str()),
        (0, Some("result 0, not pushed")),
        "{r}"
    );
    let out = sb.run(&["watch", "--once"]);
    let (code, out, err) = code_out_err(&out);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("deploy log not pushed"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("20")), "{err}");
    let out = sb
        .cmd()
        .args(["watch", "--once"])
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    let (code, _, err) = code_out_err(&out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("deploy log not pushed"), "{err}");
    assert!(
        err.lines().all(|l| !l.trim_start().starts_with("20")),
        "{err}"
    );
}

/// A snapshot never copies the hook's output verbatim: a capped, redacted
/// excerpt.
#[test]
fn a_snapshot_holds_a_redacted_excerpt_of_the_hook_output() {
    let sb = Sandbox::new();
    let item = "SNAP-1";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let log = sb.item_dir(item).join("hook.log");
    let mut big = std::fs::read_to_string(&log).unwrap();
    big.push_str(&"noise line\n".repeat(5000));
    big.push_str("DB_PASSWORD=hunter2secret\n");
    std::fs::write(&log, big).unwrap();
    let out = sb.run(&["snapshot", "--repo", "orchestrator", "--work-item", item]);
    let (code, out, err) = code_out_err(&out);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2secret"), "{out}");
    assert!(out.contains("DB_PASSWORD=<redacted>"), "{out}");
    assert!(out.len() < 20_000, "{}", out.len());
}
