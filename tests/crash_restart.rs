//! A fresh process resumes correctly from every state a crash (or the
//! original engine) can leave on disk. Each state is laid down by hand, then
//! a new `selfdeploy` process is run on it.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::sandbox::*;

const ITEM: &str = "ORCH-7";

/// `status --repo orchestrator --work-item W --json`, parsed.
fn status(sb: &Sandbox, work_item: &str) -> Value {
    let out = sb.run(&["status", "--repo", REPO, "--work-item", work_item, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_json(&out)
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn wt_args(sb: &Sandbox) -> Vec<String> {
    vec![
        "--worktree".into(),
        sb.worktree().to_str().unwrap().into(),
        "--branch".into(),
        BRANCH.into(),
    ]
}

fn event(sb: &Sandbox, event: &str, work_item: &str, extra: &[String]) -> (i32, Value) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    sb.event_json(event, work_item, &extra)
}

fn outcome(r: &Value) -> &str {
    r["outcome"].as_str().unwrap_or("<none>")
}

/// The finalizer's commits on the remote branch.
fn finalizer_commits(sb: &Sandbox) -> usize {
    git(&sb.remote(), &["log", "--format=%an", BRANCH])
        .lines()
        .filter(|l| *l == "deploy-finalizer")
        .count()
}

/// Waits (bounded) until the host wrapper has written a non-blank `result`.
fn wait_for_result(sb: &Sandbox, work_item: &str) {
    let path = sb.item_dir(work_item).join("result");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs::read_to_string(&path).map_or(true, |s| s.trim().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "no result in 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn approve_requested_left_empty_by_the_original_resumes() {
    let sb = Sandbox::new();
    // The original wrote the sentinel with no content; other content is ours
    // to not understand either.
    for (item, content) in [
        ("ORCH-7", &b""[..]),
        ("ORCH-8", &b"approval requested\n"[..]),
    ] {
        write(&sb.item_dir(item).join("approve-requested"), content);
        let s = status(&sb, item);
        assert_eq!(s["state"], "approve_requested", "{s}");
        assert_eq!(s["files"], serde_json::json!(["approve-requested"]), "{s}");
    }

    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["from"], "approve_requested");
    assert_eq!(r["to"], "initiated");
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1, "dispatched exactly once");

    // Delivering `approved` again after the fact dispatches nothing more.
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!(code, 3, "approved is illegal once finalized: {r}");
    assert_eq!(sb.hook_runs(), 1);
}

/// A real `initiated` record from a dispatched run (in a throwaway sandbox),
/// with its dispatch status set back to `pending` and pointed at `sb`: what a
/// crash between writing `initiated` and launching ssh leaves.
fn pending_initiated_record(sb: &Sandbox) -> Vec<u8> {
    let donor = Sandbox::new();
    let wt = donor.worktree();
    let wt = wt.to_str().unwrap();
    donor.event_json("request-approve", ITEM, &[]);
    let (code, r) = donor.event_json("approved", ITEM, &["--worktree", wt, "--branch", BRANCH]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let raw = fs::read(donor.item_dir(ITEM).join("initiated")).unwrap();
    let mut record: Value = serde_json::from_slice(&raw).expect("initiated holds JSON");
    assert_eq!(record["dispatch"], "confirmed", "{record}");
    record["dispatch"] = "pending".into();
    record["worktree"] = sb.worktree().to_str().unwrap().into();
    record["revision"] = sb.tip().into();
    let mut bytes = serde_json::to_vec(&record).unwrap();
    bytes.push(b'\n');
    // Let the donor's hook finish before its sandbox is dropped.
    donor.poll_until_final(ITEM, &[]);
    bytes
}

#[test]
fn pending_dispatch_is_unconfirmed_and_never_dispatched_again() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("approve-requested"), b"");
    let initiated = pending_initiated_record(&sb);
    write(&dir.join("initiated"), &initiated);

    let s = status(&sb, ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(s["dispatch"], "unconfirmed", "{s}");
    let note = s["note"].as_str().unwrap_or_default();
    assert!(note.contains("unconfirmed"), "note: {note:?}");
    assert!(note.contains("reset --force"), "note: {note:?}");
    let human = sb.run(&["status", "--repo", REPO, "--work-item", ITEM]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("dispatch unconfirmed"), "{human}");

    // `approved` again: accepted as a no-op, nothing launched, nothing written.
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(fs::read(dir.join("initiated")).unwrap(), initiated);
    assert_eq!(sb.hook_runs(), 0);

    // Poll defers (no result) and does not dispatch either.
    let (code, r) = event(&sb, "poll", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "deferred"), "{r}");

    // Reset needs --force: a deploy may be in flight.
    let (code, r) = event(&sb, "reset", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert!(dir.join("initiated").is_file());
    let (code, r) = event(&sb, "reset", ITEM, &["--force".into()]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "idle");
    assert!(!dir.exists(), "reset --force removes the state directory");
    assert_eq!(status(&sb, ITEM)["state"], "idle");
    assert_eq!(sb.hook_runs(), 0);

    // And the item starts over normally.
    let (code, r) = event(&sb, "request-approve", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1);
}

#[test]
fn empty_initiated_from_the_original_with_a_result_finalizes() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("approve-requested"), b"");
    write(&dir.join("initiated"), b"");
    // The host wrapper wrote the result while no engine ran.
    write(&dir.join("result"), b"0\n");

    let s = status(&sb, ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(s["dispatch"], "unknown", "not our marker: {s}");
    assert_eq!(s["result"], "0", "{s}");

    // Unknown dispatch: `approved` must not launch a second deploy.
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(sb.hook_runs(), 0);

    let (code, r) = event(&sb, "poll", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "finalized_success");
    sb.assert_deploy_log(ITEM, "SUCCESS", "0");
    assert!(dir.join("finalized").is_file());
    assert_eq!(finalizer_commits(&sb), 1);
    assert_eq!(status(&sb, ITEM)["state"], "finalized_success");
    assert_eq!(sb.hook_runs(), 0, "the finalizer never dispatches");
}

#[test]
fn result_without_initiated_reads_as_initiated_and_finalizes() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("result"), b"2\n");

    let s = status(&sb, ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(s["files"], serde_json::json!(["result"]), "{s}");

    let (code, r) = event(&sb, "poll", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["from"], "initiated");
    assert_eq!(r["to"], "finalized_failed");
    sb.assert_deploy_log(ITEM, "FAILED", "2");
    assert_eq!(status(&sb, ITEM)["state"], "finalized_failed");
}

#[test]
fn finalized_marker_makes_poll_a_no_op() {
    let sb = Sandbox::new();
    // A real finalized deploy...
    event(&sb, "request-approve", ITEM, &[]);
    event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!(sb.poll_until_final(ITEM, &[])["to"], "finalized_success");
    let before = sb.disk();
    let (code, r) = event(&sb, "poll", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(r["to"], "finalized_success");
    assert_eq!(r["effects"], serde_json::json!([]));
    assert_eq!(without_journal(before), without_journal(sb.disk()));

    // ...and a finalized marker we cannot read (fail closed: FAILED), even
    // with a result saying 0: poll leaves it alone.
    let other = "ORCH-9";
    let dir = sb.item_dir(other);
    write(&dir.join("initiated"), b"");
    write(&dir.join("result"), b"0\n");
    write(&dir.join("finalized"), b"");
    assert_eq!(status(&sb, other)["state"], "finalized_failed");
    let before = sb.disk();
    let (code, r) = event(&sb, "poll", other, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(without_journal(before), without_journal(sb.disk()));
    assert!(!sb.deploy_log(other).exists(), "no deploy log written");
    assert_eq!(finalizer_commits(&sb), 1);
}

/// The disk without the history and the locks (which every event may touch).
fn without_journal(
    disk: std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    disk.into_iter()
        .filter(|(p, _)| !p.to_string_lossy().contains("/.selfdeploy"))
        .collect()
}

/// Sleeps until the wall clock enters the next second (the engine's clock
/// resolution), so that a timestamp in a rewritten file would differ.
fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let left = std::time::Duration::from_secs(1)
        - std::time::Duration::from_nanos(now.subsec_nanos().into());
    std::thread::sleep(left + std::time::Duration::from_millis(5));
}

#[test]
fn engine_died_after_the_log_before_finalized_refinalizes_identically() {
    let sb = Sandbox::new();
    event(&sb, "request-approve", ITEM, &[]);
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    wait_for_result(&sb, ITEM);
    let out = sb.event("poll", ITEM, &[]);
    assert_eq!(parse_json(&out)["to"], "finalized_success");
    let log = fs::read(sb.deploy_log(ITEM)).unwrap();
    assert_eq!(finalizer_commits(&sb), 1);

    // The crash: the log is written (and committed), `finalized` is not.
    fs::remove_file(sb.item_dir(ITEM).join("finalized")).unwrap();
    assert_eq!(status(&sb, ITEM)["state"], "initiated");

    // Another second and another caller: neither may show in the log.
    next_second();
    let out = sb.event("poll", ITEM, &["--actor", "someone-else"]);
    let r = parse_json(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(outcome(&r), "transitioned", "{r}");
    assert_eq!(r["to"], "finalized_success");
    assert!(
        out.stderr.is_empty(),
        "no error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(sb.deploy_log(ITEM)).unwrap(),
        log,
        "log rewritten byte for byte"
    );
    assert!(sb.item_dir(ITEM).join("finalized").is_file());
    assert_eq!(status(&sb, ITEM)["state"], "finalized_success");
    assert_eq!(
        finalizer_commits(&sb),
        1,
        "an identical log is no new commit"
    );
    assert_eq!(sb.hook_runs(), 1);
}
