//! Bad input of every kind: a clear one-line error (or the contract's
//! outcome), the documented exit status, and nothing changed on disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";

type Disk = BTreeMap<PathBuf, Vec<u8>>;

/// The one line of stderr, checked to be exactly one line starting with
/// `selfdeploy: error:`.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stderr (exit {:?}), got: {stderr:?}",
        out.status.code()
    );
    assert!(
        lines[0].starts_with("selfdeploy: error: "),
        "stderr: {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lines[0].to_owned()
}

/// The disk without the files under `state/.selfdeploy/<sub>` for each sub
/// (and without the bare `state/.selfdeploy` directory that holds them).
fn disk_except(sb: &Sandbox, subs: &[&str]) -> Disk {
    let own = sb.state_root().join(".selfdeploy");
    let skip: Vec<PathBuf> = subs.iter().map(|s| own.join(s)).collect();
    sb.disk()
        .into_iter()
        .filter(|(p, _)| *p != own && !skip.iter().any(|s| p.starts_with(s)))
        .collect()
}

/// The disk without the history, the intents beside it and the locks, which
/// a refused or illegal event may touch.
fn disk_but_journal(sb: &Sandbox) -> Disk {
    disk_except(sb, &["history", "pending", "locks"])
}

fn wt(sb: &Sandbox) -> String {
    sb.worktree().to_str().unwrap().to_owned()
}

/// Some state on disk, so that "nothing changed" has something to compare.
fn sandbox_with_state() -> Sandbox {
    let sb = Sandbox::new();
    let (code, r) = sb.event_json("request-approve", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    sb
}

#[test]
fn bad_names_are_rejected_before_anything_is_touched() {
    let sb = sandbox_with_state();
    let long = "a".repeat(129);
    let bad = [
        "a/b", "../x", "..", ".", "a b", "-x", "déploy", &long, "", "a\tb",
    ];
    let before = sb.disk();
    for name in bad {
        let repo_arg = format!("--repo={name}");
        let item_arg = format!("--work-item={name}");
        let cases: [Vec<&str>; 4] = [
            vec!["event", "request-approve", &repo_arg, "--work-item", ITEM],
            vec![
                "event",
                "request-approve",
                "--repo",
                REPO,
                &item_arg,
                "--json",
            ],
            vec!["event", "reset", "--repo", REPO, &item_arg, "--force"],
            vec!["status", "--repo", REPO, &item_arg, "--json"],
        ];
        for args in cases {
            let out = sb.run(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let line = error_line(&out);
            assert!(
                line.contains(&format!("{name:?}")),
                "{args:?}: the error names the bad value: {line}"
            );
            let what = if args.contains(&repo_arg.as_str()) {
                "repo name"
            } else {
                "work item"
            };
            assert!(line.contains(what), "{args:?}: {line}");
        }
    }
    assert_eq!(before, sb.disk(), "nothing on disk changed");
    assert!(!sb.state_root().join(".deploy-state-a").exists());
}

#[test]
fn longest_name_is_accepted() {
    let sb = Sandbox::new();
    let name = "a".repeat(128);
    let (code, r) = sb.event_json("request-approve", &name, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert!(sb.item_dir(&name).join("approve-requested").is_file());
}

/// One work item initiated by the original engine (empty `initiated`) with
/// the given `result`, then polled.
fn poll_with_result(sb: &Sandbox, item: &str, result: &[u8]) -> (Output, Value) {
    let dir = sb.item_dir(item);
    write(&dir.join("initiated"), b"");
    write(&dir.join("result"), result);
    let out = sb.event("poll", item, &["--worktree", &wt(sb), "--branch", BRANCH]);
    let r = parse_json(&out);
    (out, r)
}

#[test]
fn result_contents_map_per_the_contract() {
    let sb = Sandbox::new();
    let huge = vec![b'0'; 2 * 1024 * 1024];
    // (work item, result bytes, expected (verdict, exit code): None = deferred)
    type Case<'a> = (&'a str, &'a [u8], Option<(&'a str, &'a str)>);
    let cases: [Case; 9] = [
        ("R-garbage", b"abc\n", Some(("FAILED", "1"))),
        ("R-fraction", b"1.5\n", Some(("FAILED", "1"))),
        ("R-empty", b"", None),
        ("R-blank", b" \n\t\r\n ", None),
        ("R-huge", &huge, Some(("FAILED", "1"))),
        (
            "R-not-utf8",
            &[0xff, 0xfe, b'0', b'\n'],
            Some(("FAILED", "1")),
        ),
        ("R-plus-zero", b" +0 \n", Some(("SUCCESS", "0"))),
        ("R-rollback", b"2\n", Some(("FAILED", "2"))),
        ("R-negative", b"-1\n", Some(("FAILED", "-1"))),
    ];
    for (item, result, expected) in cases {
        let (out, r) = poll_with_result(&sb, item, result);
        assert_eq!(out.status.code(), Some(0), "{item}: {r}");
        assert!(
            out.stderr.is_empty(),
            "{item}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let finalized = sb.item_dir(item).join("finalized");
        match expected {
            None => {
                assert_eq!(outcome(&r), "deferred", "{item}: {r}");
                assert_eq!(r["to"], "initiated", "{item}: {r}");
                assert!(!finalized.exists(), "{item}");
                assert!(!sb.deploy_log(item).exists(), "{item}");
            }
            Some((status, code)) => {
                assert_eq!(outcome(&r), "transitioned", "{item}: {r}");
                let to = format!("finalized_{}", status.to_lowercase());
                assert_eq!(r["to"], to.as_str(), "{item}: {r}");
                let log = fs::read_to_string(sb.deploy_log(item)).unwrap();
                let head = deploy_frontmatter(item, status, code);
                assert!(log.starts_with(&head), "{item}: {log}");
                assert!(finalized.is_file(), "{item}");
            }
        }
    }
}

/// More than the 16 MiB a result is read up to (sparse: no disk spent),
/// starting with a success all the same.
const OVERSIZED: u64 = 16 * 1024 * 1024 + 1;

fn oversized_result(path: &Path) {
    fs::write(path, b"0\n").unwrap();
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(OVERSIZED).unwrap();
    assert_eq!(fs::metadata(path).unwrap().len(), OVERSIZED);
}

/// A result over the read limit is present and garbage: exit code 1, FAILED,
/// never SUCCESS (fail closed), for the current dispatch's `result-<id>` and
/// for the legacy `result` of an item the original engine started.
#[test]
fn result_over_the_read_limit_is_failed_never_success() {
    let sb = Sandbox::new();
    let shown = format!("<{OVERSIZED} bytes>");

    // Ours: the hook really ran and wrote 0; its result then grows.
    let ours = "R-oversized";
    sb.approve_item(ours);
    let id = sb.dispatch_id(ours).expect("initiated is ours");
    assert_eq!(sb.wait_for_result(ours).trim(), "0");
    let result = sb.item_dir(ours).join(format!("result-{id}"));
    assert_eq!(sb.result_file(ours), result);
    oversized_result(&result);
    let st = sb.status_json(ours);
    assert_eq!(st["state"], "initiated", "{st}");
    assert_eq!(st["result"], "1", "present, read as exit code 1: {st}");
    assert_eq!(st["unreadable"], serde_json::json!([]), "{st}");

    // The legacy `result` of the original engine's item.
    let legacy = "R-oversized-legacy";
    let dir = sb.item_dir(legacy);
    write(&dir.join("initiated"), b"");
    oversized_result(&dir.join("result"));

    for item in [ours, legacy] {
        let out = sb.event("poll", item, &["--worktree", &wt(&sb), "--branch", BRANCH]);
        let r = parse_json(&out);
        assert_eq!(out.status.code(), Some(0), "{item}: {r}");
        assert_eq!(outcome(&r), "transitioned", "{item}: {r}");
        assert_eq!(r["to"], "finalized_failed", "{item}: {r}");
        let log = sb.assert_deploy_log(item, "FAILED", "1");
        assert!(log.contains(&shown), "{item}: {log}");
        let record = sb.finalized_json(item);
        assert_eq!(record["deploy_status"], "FAILED", "{item}: {record}");
        assert_eq!(record["hook_exit_code"], "1", "{item}: {record}");
    }
    assert_eq!(sb.hook_runs(), 1, "only our item's hook ran, once");
}

#[test]
fn result_that_is_a_directory_is_an_error_and_changes_nothing() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("initiated"), b"");
    fs::create_dir_all(dir.join("result")).unwrap();
    let before = disk_except(&sb, &["locks"]);
    let out = sb.event("poll", ITEM, &["--worktree", &wt(&sb), "--branch", BRANCH]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("result"), "{line}");
    assert!(line.contains("directory"), "{line}");
    assert_eq!(before, disk_except(&sb, &["locks"]));
    assert!(!dir.join("finalized").exists());
    assert!(!sb.deploy_log(ITEM).exists());
}

#[test]
fn state_directory_that_is_a_file_is_an_error() {
    let sb = Sandbox::new();
    let path = sb.item_dir(ITEM);
    write(&path, b"not a directory\n");
    let before = disk_except(&sb, &["locks"]);
    for event in ["request-approve", "approved", "poll", "reset"] {
        let out = sb.event(event, ITEM, &["--worktree", &wt(&sb), "--branch", BRANCH]);
        assert_eq!(out.status.code(), Some(1), "{event}");
        let line = error_line(&out);
        assert!(line.contains("not a directory"), "{event}: {line}");
        assert!(line.contains(path.to_str().unwrap()), "{event}: {line}");
    }
    let out = sb.run(&["status", "--repo", REPO, "--work-item", ITEM, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("not a directory"), "{line}");
    assert_eq!(before, disk_except(&sb, &["locks"]));
    assert_eq!(fs::read(&path).unwrap(), b"not a directory\n");
    sb.assert_no_hook_run("a state directory that is a file launches nothing");
}

#[test]
fn missing_worktree_at_finalize_is_an_error_and_the_next_poll_retries() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("initiated"), b"");
    write(&dir.join("result"), b"0\n");
    let missing = sb.root().join("nonexistent-dir-in-sandbox");
    let missing = missing.to_str().unwrap();
    let before = disk_but_journal(&sb);
    let out = sb.event("poll", ITEM, &["--worktree", missing, "--branch", BRANCH]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains(missing),
        "the error names the worktree: {line}"
    );
    assert_eq!(
        before,
        disk_but_journal(&sb),
        "nothing but the journal changed"
    );
    assert!(!dir.join("finalized").exists());
    assert!(!Path::new(missing).exists(), "the worktree is not invented");
    let status = sb.run(&["status", "--repo", REPO, "--work-item", ITEM, "--json"]);
    assert_eq!(parse_json(&status)["state"], "initiated");

    let (code, r) = sb.event_json("poll", ITEM, &["--worktree", &wt(&sb), "--branch", BRANCH]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "finalized_success");
    assert!(dir.join("finalized").is_file());
    let log = fs::read_to_string(sb.deploy_log(ITEM)).unwrap();
    assert!(
        log.starts_with(&deploy_frontmatter(ITEM, "SUCCESS", "0")),
        "{log}"
    );
}

#[test]
fn bad_configuration_names_the_variable_and_value_and_writes_nothing() {
    let sb = sandbox_with_state();
    let before = sb.disk();
    for (name, value) in [
        ("DEPLOY_PROD_TARGET_PORT", "http"),
        ("STAGING_PORT", "70000"),
        ("IMAGE_FRESHNESS_ENABLED", "maybe"),
    ] {
        for (event, item) in [("request-approve", "ORCH-NEW"), ("approved", ITEM)] {
            let out = sb
                .cmd()
                .env(name, value)
                .args([
                    "event",
                    event,
                    "--repo",
                    REPO,
                    "--work-item",
                    item,
                    "--json",
                ])
                .args(["--worktree", &wt(&sb), "--branch", BRANCH])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{name}={value} {event}");
            let line = error_line(&out);
            assert!(
                line.contains(name) && line.contains(value),
                "{name}={value}: {line}"
            );
        }
        let out = sb
            .cmd()
            .env(name, value)
            .args(["status", "--all", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "status with {name}={value}");
        let line = error_line(&out);
        assert!(line.contains(name) && line.contains(value), "{line}");
    }
    assert_eq!(before, sb.disk(), "nothing written");
    sb.assert_no_hook_run("bad settings launch nothing");
}

#[test]
fn staging_port_equal_to_prod_port_refuses_the_dispatch() {
    let mut sb = Sandbox::new();
    sb.set("STAGING_PORT", "9000".into());
    sb.set("DEPLOY_PROD_TARGET_PORT", "9000".into());
    let (code, r) = sb.event_json("request-approve", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let before = disk_but_journal(&sb);
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &["--worktree", &wt(&sb), "--branch", BRANCH],
    );
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert_eq!(r["to"], "approve_requested");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("STAGING_PORT"), "{reason}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(before, disk_but_journal(&sb));
    assert!(!sb.item_dir(ITEM).join("initiated").exists());
    sb.assert_no_hook_run("STAGING_PORT = DEPLOY_PROD_TARGET_PORT launches nothing");

    // With the default prod port: STAGING_PORT=8500 alone collides too.
    let mut sb = Sandbox::new();
    sb.set("STAGING_PORT", "8500".into());
    sb.event_json("request-approve", ITEM, &[]);
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &["--worktree", &wt(&sb), "--revision", "abc1234"],
    );
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert!(!sb.item_dir(ITEM).join("initiated").exists());
    sb.assert_no_hook_run("STAGING_PORT = the default prod port launches nothing");
}

#[test]
fn freshness_without_a_known_revision_refuses_then_revision_dispatches() {
    let sb = Sandbox::new();
    sb.event_json("request-approve", ITEM, &[]);
    let empty = sb.root().join("empty-worktree");
    git(sb.root(), &["init", "-q", empty.to_str().unwrap()]);
    let missing = sb.root().join("no-such-worktree");
    let missing = missing.to_str().unwrap();
    for worktree in [empty.to_str().unwrap(), missing] {
        for branch in [&["--branch", BRANCH][..], &[]] {
            let before = disk_but_journal(&sb);
            let mut args = vec!["--worktree", worktree];
            args.extend_from_slice(branch);
            let (code, r) = sb.event_json("approved", ITEM, &args);
            assert_eq!((code, outcome(&r)), (3, "refused"), "{args:?}: {r}");
            let reason = r["reason"].as_str().unwrap();
            assert!(reason.contains("freshness"), "{reason}");
            assert_eq!(r["effects"], serde_json::json!([]), "{r}");
            assert_eq!(before, disk_but_journal(&sb), "{args:?}");
        }
    }
    // A blank --revision is no revision.
    for worktree in [empty.to_str().unwrap(), missing] {
        let before = disk_but_journal(&sb);
        let (code, r) = sb.event_json(
            "approved",
            ITEM,
            &["--worktree", worktree, "--revision", " "],
        );
        assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
        assert!(r["reason"].as_str().unwrap().contains("freshness"), "{r}");
        assert_eq!(before, disk_but_journal(&sb), "{worktree}");
    }
    assert!(!sb.item_dir(ITEM).join("initiated").exists());

    // A known revision does not make a missing worktree acceptable: the
    // deploy log could not be recorded there, so nothing is dispatched.
    let before = disk_but_journal(&sb);
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &["--worktree", missing, "--revision", "abc1234"],
    );
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert_eq!(r["condition"], "no worktree", "{r}");
    assert!(r["reason"].as_str().unwrap().contains(missing), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(before, disk_but_journal(&sb));
    // Refused before anything was written or launched: no hook can run.
    assert!(!sb.item_dir(ITEM).join("initiated").exists());
    sb.assert_no_hook_run("a missing worktree launches nothing");

    // The caller's revision is used where the worktree has none to give (a
    // work tree without a commit).
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &[
            "--worktree",
            empty.to_str().unwrap(),
            "--revision",
            "abc1234",
        ],
    );
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let launch = r["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "local")
        .unwrap_or_else(|| panic!("a local launch: {r}"));
    let command = launch["argv"][2].as_str().unwrap();
    assert!(
        command.contains(" EXPECTED_REVISION=abc1234 bash hook.sh --deploy;"),
        "{command}"
    );
    let r = sb.poll_until_final(ITEM, &["--worktree", &wt(&sb), "--branch", BRANCH]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
    let runs = fs::read_to_string(sb.host_repo().join("runs")).unwrap();
    assert!(runs.contains("expected=abc"), "{runs}");
}

#[test]
fn unknown_event_is_a_usage_error() {
    let sb = sandbox_with_state();
    let before = sb.disk();
    for args in [
        &["event", "frobnicate", "--repo", REPO, "--work-item", ITEM][..],
        &["event", "Approved", "--repo", REPO, "--work-item", ITEM],
        &["event", "approved", "--repo", REPO],
        &[
            "event",
            "merge-verified",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--merged",
            "maybe",
        ],
    ] {
        let out = sb.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = error_line(&out);
        assert!(line.len() > "selfdeploy: error: ".len() + 10, "{line}");
    }
    assert_eq!(before, sb.disk());
}

#[test]
fn merge_verified_without_merged_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.event_json("request-approve", ITEM, &[]);
    sb.event_json(
        "approved",
        ITEM,
        &["--worktree", &wt(&sb), "--branch", BRANCH],
    );
    assert_eq!(sb.poll_until_final(ITEM, &[])["to"], "finalized_success");
    let before = sb.disk();
    let out = sb.event("merge-verified", ITEM, &[]);
    assert_eq!(out.status.code(), Some(2));
    let line = error_line(&out);
    assert!(line.contains("--merged"), "{line}");
    assert_eq!(before, sb.disk());
}

#[test]
fn dry_run_of_approved_prints_the_effects_and_writes_nothing() {
    let sb = sandbox_with_state();
    let before = sb.disk();
    let args = ["--worktree", &wt(&sb), "--branch", BRANCH, "--dry-run"];
    let out = sb.event("approved", ITEM, &args);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = parse_json(&out);
    assert_eq!(outcome(&r), "transitioned", "{r}");
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["to"], "initiated", "{r}");
    let launch = r["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "local")
        .unwrap_or_else(|| panic!("the launch is among the effects: {r}"))
        .clone();
    assert_eq!(launch["argv"][0], "bash");
    assert_eq!(launch["argv"][1], "-c");
    assert_eq!(
        effect_kinds(&r),
        ["write_marker", "write_ticket", "local"],
        "{r}"
    );
    let dry_id = ticket_id(&r);
    let command = launch["argv"][2].as_str().unwrap();
    let dir = sb.item_dir(ITEM);
    let dir = dir.to_str().unwrap();
    assert!(
        command.starts_with(&format!(
            "setsid bash -c 'mv {dir}/dispatch-{dry_id} {dir}/claimed-{dry_id} || exit 75; cd "
        )),
        "the wrapper claims the ticket first: {command}"
    );
    assert!(
        command.contains(&format!("EXPECTED_REVISION={}", sb.tip())),
        "{command}"
    );
    assert!(
        command.contains(&format!(
            " --deploy; echo $? > {dir}/result-{dry_id}.part && mv {dir}/result-{dry_id}.part {dir}/result-{dry_id}'"
        )),
        "{command}"
    );
    // The human form shows the argv too.
    let human = sb.run(&[
        "event",
        "approved",
        "--repo",
        REPO,
        "--work-item",
        ITEM,
        "--worktree",
        &wt(&sb),
        "--branch",
        BRANCH,
        "--dry-run",
    ]);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("dry run"), "{text}");
    assert!(
        text.contains("effect: local bash -c setsid bash -c"),
        "{text}"
    );
    // Dry runs of the other events write nothing either.
    for event in ["request-approve", "poll", "reset"] {
        let out = sb.event(event, ITEM, &["--dry-run"]);
        assert!(matches!(out.status.code(), Some(0 | 3)), "{event}");
        assert_eq!(parse_json(&out)["dry_run"], true);
    }
    let out = sb.event("request-approve", "ORCH-NEW", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));

    assert_eq!(
        before,
        sb.disk(),
        "nothing written, history and locks included"
    );
    assert!(!sb.item_dir(ITEM).join("initiated").exists());
    assert!(!sb.item_dir("ORCH-NEW").exists());
    sb.assert_no_hook_run("a dry run launches nothing");

    // The dry run showed exactly the argv a real dispatch uses, but for the
    // dispatch id: each dispatch (and each dry run) draws a fresh one.
    let (code, real) = sb.event_json("approved", ITEM, &args[..4]);
    assert_eq!((code, outcome(&real)), (0, "transitioned"), "{real}");
    assert_eq!(effect_kinds(&real), effect_kinds(&r), "{real}");
    let real_launch = real["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "local")
        .unwrap()
        .clone();
    let real_id = sb
        .dispatch_id(ITEM)
        .expect("initiated records the dispatch id");
    assert_eq!(ticket_id(&real), real_id, "{real}");
    assert_ne!(real_id, dry_id, "a fresh id for every dispatch");
    let shown = serde_json::to_string(&launch)
        .unwrap()
        .replace(&dry_id, &real_id);
    assert_eq!(serde_json::to_string(&real_launch).unwrap(), shown);
    // What the launch came to is part of what the dry run says.
    assert_eq!(
        (&r["to"], &r["condition"]),
        (&real["to"], &real["condition"]),
        "the dry run {r}\nthe event {real}"
    );

    // So is what the push came to, in a dry run of the poll that finalizes.
    sb.wait_for_result(ITEM);
    let (dry_code, dry) = sb.event_json("poll", ITEM, &["--dry-run"]);
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(
        (
            dry_code,
            &dry["outcome"],
            &dry["to"],
            &dry["condition"],
            effect_kinds(&dry)
        ),
        (
            code,
            &r["outcome"],
            &r["to"],
            &r["condition"],
            effect_kinds(&r)
        ),
        "the dry run {dry}\nthe poll {r}"
    );
    assert_eq!(sb.hook_runs(), 1);
}

#[test]
fn kill_switch_refuses_new_deploys_but_finalizes_one_in_flight() {
    let mut sb = Sandbox::new();
    // In flight before the switch is turned off: dispatched, result written.
    sb.event_json("request-approve", ITEM, &[]);
    let (code, r) = sb.event_json(
        "approved",
        ITEM,
        &["--worktree", &wt(&sb), "--branch", BRANCH],
    );
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    sb.event_json("request-approve", "ORCH-8", &[]);
    assert_eq!(sb.wait_for_result(ITEM).trim(), "0");

    sb.set("SELF_DEPLOY_ENABLED", "false".into());
    let before = disk_but_journal(&sb);
    let (code, r) = sb.event_json("request-approve", "ORCH-NEW", &[]);
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("SELF_DEPLOY_ENABLED"),
        "{r}"
    );
    let (code, r) = sb.event_json(
        "approved",
        "ORCH-8",
        &["--worktree", &wt(&sb), "--branch", BRANCH],
    );
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert_eq!(before, disk_but_journal(&sb));
    assert!(!sb.item_dir("ORCH-NEW").exists());
    assert_eq!(sb.hook_runs(), 1);

    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "finalized_success");
    assert!(sb.item_dir(ITEM).join("finalized").is_file());
}

#[test]
fn status_all_shows_an_unreadable_item_and_still_lists_the_others() {
    let sb = Sandbox::new();
    let (code, _) = sb.event_json("request-approve", "GOOD-1", &[]);
    assert_eq!(code, 0);
    let bad = sb.item_dir("BAD-1");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, "a file where a directory belongs").unwrap();
    let out = sb.run(&["status", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Sorted by last activity: BAD-1 has no history, so it comes last.
    assert_eq!(rows[0]["state"], "approve_requested");
    assert_eq!(rows[1]["work_item"], "BAD-1");
    assert!(rows[1]["state"].is_null());
    for field in ["note", "problem"] {
        assert!(
            rows[1][field]
                .as_str()
                .unwrap()
                .contains("is not a directory"),
            "{rows:?}"
        );
    }
}

#[test]
fn a_history_that_cannot_be_appended_does_not_hide_a_launched_deploy() {
    let mut sb = Sandbox::new();
    let item = "ORCH-61";
    let (code, _) = sb.event_json("request-approve", item, &[]);
    assert_eq!(code, 0);
    let history = sb
        .state_root()
        .join(".selfdeploy/history/orchestrator/ORCH-61.jsonl");
    let pending = sb
        .state_root()
        .join(".selfdeploy/pending/orchestrator/ORCH-61.json");
    // A history that cannot be written before the event: nothing is done.
    fs::remove_file(&history).unwrap();
    fs::create_dir(&history).unwrap();
    let before = sb.disk_but_own();
    let out = sb.event(
        "approved",
        item,
        &["--worktree", &wt(&sb), "--revision", "abc1234"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ORCH-61.jsonl"),
        "names the history: {stderr}"
    );
    assert_eq!(sb.disk_but_own(), before, "nothing dispatched");
    sb.assert_no_hook_run("the approval was refused");
    fs::remove_dir(&history).unwrap();

    // The history breaks while the launch runs (a `bash` first on PATH
    // makes it a directory once, then runs the real one): the deploy is
    // launched and reported, the exit is 4, and its entry waits.
    let bin = sb.root().join("bin");
    let trigger = sb.root().join("break-history");
    fs::write(&trigger, "").unwrap();
    write_script(
        &bin,
        "bash",
        &format!(
            "#!/bin/sh\nif [ -e '{t}' ]; then rm -f '{t}' '{h}'; mkdir '{h}'; fi\nexec '{bash}' \"$@\"\n",
            t = trigger.display(),
            h = history.display(),
            bash = tool("bash"),
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
    let out = sb.event(
        "approved",
        item,
        &["--worktree", &wt(&sb), "--revision", "abc1234"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("the report is printed");
    assert_eq!(
        (r["outcome"].as_str(), r["to"].as_str()),
        (Some("transitioned"), Some("initiated")),
        "{r}"
    );
    assert!(
        r["history_error"]
            .as_str()
            .unwrap()
            .starts_with("cannot append history"),
        "{r}"
    );
    assert!(
        stderr.contains("written to the history by the next event"),
        "{stderr}"
    );
    let intent: Value = serde_json::from_slice(&fs::read(&pending).unwrap()).unwrap();
    assert_eq!(intent["finished"], true, "{intent}");
    assert_eq!(intent["entry"]["outcome"], "transitioned", "{intent}");
    let start = std::time::Instant::now();
    while sb.hook_runs() == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the hook never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // While the history is still broken, no event acts.
    let out = sb.event("poll", item, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Space (here: the file) returns: the next event writes the approval's
    // entry first, then its own; the deploy is finalized exactly once.
    fs::remove_dir(&history).unwrap();
    let r = sb.poll_until_final(item, &["--branch", BRANCH]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
    assert!(!pending.exists());
    let lines: Vec<Value> = fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "approved", "{lines:?}");
    assert_eq!(lines[0]["outcome"], "transitioned", "{lines:?}");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("the history could not be written"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap()["to"],
        "finalized_success",
        "{lines:?}"
    );
}

#[test]
fn a_guard_that_refuses_runs_nothing_not_even_git() {
    let mut sb = Sandbox::new();
    let (code, _) = sb.event_json("request-approve", "ORCH-62", &[]);
    assert_eq!(code, 0);
    // A git that logs each call, first on PATH.
    let bin = sb.root().join("logging-bin");
    fs::create_dir_all(&bin).unwrap();
    let log = sb.root().join("git-calls");
    let wrapper = format!(
        "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
        log.display(),
        tool("git")
    );
    write_executable(&bin.join("git"), &wrapper);
    sb.set("PATH", path_with_first_dir(&bin));
    let wt = sb.worktree();
    let wt = wt.to_str().unwrap();
    for (name, value) in [("STAGING_PORT", "8500"), ("SELF_DEPLOY_ENABLED", "false")] {
        let out = sb
            .cmd()
            .env(name, value)
            .args([
                "event",
                "approved",
                "--repo",
                REPO,
                "--work-item",
                "ORCH-62",
            ])
            .args(["--worktree", wt, "--branch", BRANCH, "--json"])
            .output()
            .unwrap();
        let r = parse_json(&out);
        assert_eq!(
            (out.status.code(), r["outcome"].as_str()),
            (Some(3), Some("refused")),
            "{name}: {r}"
        );
        assert!(
            !log.exists(),
            "{name}: git ran: {:?}",
            fs::read_to_string(&log)
        );
    }
    // The same call with the guards passing does look the revision up.
    let (code, r) = sb.event_json(
        "approved",
        "ORCH-62",
        &["--worktree", wt, "--branch", BRANCH],
    );
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    assert!(fs::read_to_string(&log).unwrap().contains("rev-parse"));
    let r = sb.poll_until_final("ORCH-62", &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
}

#[test]
fn a_missing_repos_dir_is_not_created() {
    let mut sb = Sandbox::new();
    let missing = sb.root().join("unmounted/repos");
    sb.set("REPOS_DIR", missing.clone().into_os_string());
    let out = sb.event("request-approve", "ORCH-63", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist; mount the shared state directory"),
        "{err}"
    );
    assert!(!sb.root().join("unmounted").exists());
}

/// The per-item lock file lives on the shared mount (under
/// `.selfdeploy/locks`): a FIFO in its place must be an error within the
/// lock timeout, like a lock held too long, never a wait without end (the
/// open for writing blocks until a reader comes, before any timeout runs).
#[test]
fn an_event_never_waits_past_the_lock_timeout_on_a_lock_file_that_is_a_fifo() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_LOCK_TIMEOUT_SECS", "2".into());
    let lock = sb
        .state_root()
        .join(".selfdeploy/locks")
        .join(REPO)
        .join(format!("{ITEM}.lock"));
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&lock)
        .status()
        .unwrap();
    assert!(made.success());

    let mut child = sb
        .event_cmd("request-approve", ITEM)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_for(std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        ended,
        "request-approve still waits on the FIFO lock file 10 s later (lock timeout 2 s)"
    );
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(!sb.item_dir(ITEM).exists(), "nothing done without the lock");
}

/// A setting that reaches an argv word of docker or compose never begins
/// with `-`, and SELF_DEPLOY_REPOS holds repo names (ASCII only: a Kelvin
/// sign lower-cases to `k` in Unicode and would enable `kube`). Each is a
/// settings error for `config --check` and for every event, nothing touched.
#[test]
fn settings_that_would_become_options_or_other_repos_are_refused() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "DEPLOY_PROD_TARGET_SERVICE",
            "--build",
            "DEPLOY_PROD_TARGET_SERVICE=\"--build\" begins with '-'",
        ),
        (
            "DEPLOY_PROD_SOURCE_IMAGE",
            "-q",
            "DEPLOY_PROD_SOURCE_IMAGE=\"-q\" begins with '-'",
        ),
        (
            "DEPLOY_PROD_TARGET_IMAGE",
            " --rm",
            "DEPLOY_PROD_TARGET_IMAGE=\" --rm\" begins with '-'",
        ),
        (
            "DEPLOY_PROD_COMPOSE_PROFILE",
            "--all",
            "DEPLOY_PROD_COMPOSE_PROFILE=\"--all\" begins with '-'",
        ),
        (
            "SELF_DEPLOY_REPOS",
            "\u{212A}ube",
            "SELF_DEPLOY_REPOS: invalid repo name",
        ),
    ];
    for (name, value, said) in cases {
        let mut sb = Sandbox::new();
        sb.set(name, value.into());
        let out = sb.run(&["config", "--check"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(
            text(&out.stdout).contains(said) || text(&out.stderr).contains(said),
            "{name}: {out:?}"
        );
        let before = sb.disk();
        let out = sb.run(&[
            "event",
            "request-approve",
            "--repo",
            "kube",
            "--work-item",
            ITEM,
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(text(&out.stderr).contains(said), "{name}: {out:?}");
        assert_eq!(sb.disk(), before, "{name}: nothing touched");
    }
}

/// stdout on a full disk (`/dev/full`) after the hook was launched: no
/// panic, the documented exit code, one line on stderr, and the event is in
/// the history; a read command whose output is lost exits 1.
#[test]
fn a_full_stdout_never_panics_and_the_exit_code_stays_true() {
    let sb = Sandbox::new();
    let item = "OUT-1";
    sb.request_approve(item);
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let args = sb.approve_args();
    let out = sb
        .event_cmd("approved", item)
        .args(&args)
        .stdout(full())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot write to stdout") && stderr.contains("in its history"),
        "{stderr}"
    );
    let history = text(
        &sb.run(&[
            "history",
            "--repo",
            "orchestrator",
            "--work-item",
            item,
            "--json",
        ])
        .stdout,
    );
    assert!(
        history
            .lines()
            .any(|l| l.contains("\"event\":\"approved\"") && l.contains("transitioned")),
        "{history}"
    );
    sb.wait_for_result(item);
    let out = sb
        .cmd()
        .args(["machine", "--format", "json"])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!text(&out.stderr).contains("panicked"), "{out:?}");
}

/// A history key must hold 32 bytes of entropy (what gen-secrets writes):
/// `a`, or a short passphrase, is a settings error for config --check and
/// every event, which never shows the key; a previous key may be weak (it
/// only verifies what it signed before a rotation).
#[test]
fn a_history_key_too_weak_to_be_a_key_is_refused() {
    for (key, ok) in [
        ("a", false),
        ("abc$def", false),
        (
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
            false,
        ),
        (
            "489759cf3eed9c0624e0433b1b608088b256266255f273e173838963365cda23",
            true,
        ),
        ("Zm9yIGEga2V5IG9mIHRoaXJ0eS10d28gYnl0ZXMgb2s", true),
    ] {
        let mut sb = Sandbox::new();
        sb.set("HISTORY_HMAC_KEY", key.into());
        sb.set("HISTORY_HMAC_PREVIOUS_KEYS", "old-weak".into());
        let out = sb.run(&["config", "--check"]);
        assert_eq!(out.status.code() == Some(0), ok, "{key}: {out:?}");
        let before = sb.disk();
        let out = sb.run(&[
            "event",
            "request-approve",
            "--repo",
            "orchestrator",
            "--work-item",
            ITEM,
        ]);
        assert_eq!(out.status.code() == Some(0), ok, "{key}: {out:?}");
        if !ok {
            let stderr = text(&out.stderr);
            assert!(
                stderr.contains("HISTORY_HMAC_KEY holds at most"),
                "{stderr}"
            );
            assert!(
                key.len() < 4 || !stderr.contains(key),
                "the key is never shown: {stderr}"
            );
            assert_eq!(sb.disk(), before, "nothing touched");
        }
    }
}
