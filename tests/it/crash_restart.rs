//! A fresh process resumes correctly from every state a crash (or the
//! original engine) can leave on disk. Each state is laid down by hand, then
//! a new `selfdeploy` process is run on it.

use std::fs;

use serde_json::Value;

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";

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
        let s = sb.status_json(item);
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

/// What `approved` writes as `initiated` for this item right now, taken from
/// a dry run in `sb` itself (so the record's argv, worktree and revision are
/// this sandbox's): `(dispatch id, content)`. Laying it down by hand is what
/// a crash right after writing `initiated` leaves.
fn initiated_as_approved_writes(sb: &Sandbox, work_item: &str) -> (String, Vec<u8>) {
    let mut args = wt_args(sb);
    args.push("--dry-run".into());
    let (code, r) = event(sb, "approved", work_item, &args);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    let effects = r["effects"].as_array().unwrap();
    let marker = effects
        .iter()
        .find(|e| e["kind"] == "write_marker" && e["marker"] == "initiated")
        .unwrap_or_else(|| panic!("the dry run writes initiated: {r}"));
    let content = marker["content"].as_str().unwrap().as_bytes().to_vec();
    let record: Value = serde_json::from_slice(&content).expect("initiated holds JSON");
    let id = record["dispatch_id"].as_str().unwrap().to_owned();
    assert!(is_dispatch_id(&id), "{record}");
    let ticket = effects
        .iter()
        .find(|e| e["kind"] == "write_ticket")
        .unwrap_or_else(|| panic!("the dry run writes the ticket: {r}"));
    assert_eq!(ticket["dispatch_id"], id.as_str(), "{r}");
    (id, content)
}

/// The launch command `initiated` records (the local transport's `bash -c`
/// argument): what the crashed engine would have launched.
fn recorded_launch(initiated: &[u8]) -> String {
    let record: Value = serde_json::from_slice(initiated).unwrap();
    assert_eq!(record["argv"][0], "bash", "{record}");
    assert_eq!(record["argv"][1], "-c", "{record}");
    record["argv"][2].as_str().unwrap().to_owned()
}

/// Runs the recorded launch late, as a host that got it after all would, and
/// waits for the detached wrapper to exit; returns the wrapper's exit code.
fn launch_late(sb: &Sandbox, initiated: &[u8]) -> Option<i32> {
    let command = format!("{} wait $!", recorded_launch(initiated));
    let out = std::process::Command::new("bash")
        .args(["-c", &command])
        .current_dir(sb.root())
        .output()
        .unwrap();
    out.status.code()
}

/// A new approval after a crash dispatches exactly once, with a new id.
fn approve_again_runs_once(sb: &Sandbox, old_id: &str) {
    let (code, r) = event(sb, "approved", ITEM, &wt_args(sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(
        effect_kinds(&r),
        ["write_marker", "write_ticket", "local"],
        "{r}"
    );
    let id = sb.dispatch_id(ITEM).expect("a new dispatch id");
    assert_ne!(id, old_id, "every dispatch has its own id");
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.hook_runs(), 1, "dispatched exactly once");
    assert!(
        sb.protocol_files(ITEM).contains(&format!("claimed-{id}")),
        "{:?}",
        sb.protocol_files(ITEM)
    );
    assert!(sb.result_file(ITEM).is_file());
}

#[test]
fn crash_after_initiated_before_the_ticket_returns_to_approval_on_the_next_poll() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    event(&sb, "request-approve", ITEM, &[]);
    let (id, initiated) = initiated_as_approved_writes(&sb, ITEM);
    write(&dir.join("initiated"), &initiated);

    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(
        s["dispatch"],
        serde_json::json!({"id": id, "ticket": "missing"}),
        "{s}"
    );
    let note = s["note"].as_str().unwrap_or_default();
    assert!(note.contains("has no ticket"), "note: {note:?}");
    assert!(note.contains("next poll"), "note: {note:?}");
    let human = sb.run(&["status", "--repo", REPO, "--work-item", ITEM]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!("dispatch {id} has no ticket")),
        "{human}"
    );

    // `approved` again: accepted as a no-op, nothing launched, nothing written.
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(fs::read(dir.join("initiated")).unwrap(), initiated);
    assert_eq!(sb.protocol_files(ITEM), Vec::<String>::new());

    // Reset needs --force: this item is initiated.
    let (code, r) = event(&sb, "reset", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert!(dir.join("initiated").is_file());

    // No ticket, so nothing can have been launched: the next poll returns
    // the item to approval at once, with no operator.
    let (code, r) = event(&sb, "poll", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (3, "dispatch_failed"), "{r}");
    assert_eq!(r["to"], "approve_requested", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("no ticket"), "{r}");
    assert_eq!(r["effects"][0]["kind"], "remove_marker", "{r}");
    assert!(!dir.join("initiated").exists());
    assert!(dir.join("approve-requested").is_file());
    assert_eq!(sb.protocol_files(ITEM), Vec::<String>::new());
    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "approve_requested", "{s}");
    assert!(s["dispatch"].is_null(), "{s}");

    // The launch the crashed engine never made cannot run late either: it
    // has no ticket to claim.
    assert_eq!(launch_late(&sb, &initiated), Some(75));
    assert!(!sb.item_dir(ITEM).join(format!("result-{id}")).exists());
    sb.assert_no_hook_run("the late launch never reached the hook");

    approve_again_runs_once(&sb, &id);
}

#[test]
fn crash_after_the_ticket_before_the_launch_is_revoked_after_the_claim_timeout() {
    let mut sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    event(&sb, "request-approve", ITEM, &[]);
    let (id, initiated) = initiated_as_approved_writes(&sb, ITEM);
    write(&dir.join("initiated"), &initiated);
    write(&dir.join(format!("dispatch-{id}")), b"");

    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(
        s["dispatch"],
        serde_json::json!({"id": id, "ticket": "sent"}),
        "{s}"
    );
    let note = s["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("not claimed by the host yet"),
        "note: {note:?}"
    );

    // `approved` again: a no-op; the ticket may still be claimed.
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(fs::read(dir.join("initiated")).unwrap(), initiated);
    assert_eq!(sb.protocol_files(ITEM), [format!("dispatch-{id}")]);

    // Within the claim timeout (the default, 120 s) a poll waits.
    let (code, r) = event(&sb, "poll", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "deferred"), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(sb.protocol_files(ITEM), [format!("dispatch-{id}")]);
    assert!(dir.join("initiated").is_file());

    // Past it, the next poll revokes the ticket: back to approval.
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, r) = event(&sb, "poll", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (3, "dispatch_failed"), "{r}");
    assert_eq!(r["to"], "approve_requested", "{r}");
    assert_eq!(effect_kinds(&r), ["revoke_ticket", "remove_marker"], "{r}");
    assert_eq!(r["effects"][0]["dispatch_id"], id.as_str(), "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains(&id) && reason.contains("claim"), "{reason}");
    assert_eq!(sb.protocol_files(ITEM), [format!("revoked-{id}")]);
    assert!(!dir.join("initiated").exists());
    assert!(dir.join("approve-requested").is_file());
    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "approve_requested", "{s}");
    assert!(s["dispatch"].is_null(), "{s}");

    // The launch arriving late loses the race it can no longer win: the
    // claim finds no ticket, the wrapper exits 75, the hook never runs.
    assert_eq!(launch_late(&sb, &initiated), Some(75));
    assert_eq!(sb.protocol_files(ITEM), [format!("revoked-{id}")]);
    sb.assert_no_hook_run("the revoked dispatch never ran");

    // A new approval dispatches exactly once.
    approve_again_runs_once(&sb, &id);
}

#[test]
fn crash_after_the_ticket_then_forced_reset_revokes_it_and_starts_over() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    event(&sb, "request-approve", ITEM, &[]);
    let (id, initiated) = initiated_as_approved_writes(&sb, ITEM);
    write(&dir.join("initiated"), &initiated);
    write(&dir.join(format!("dispatch-{id}")), b"");

    // Reset needs --force: a deploy may be in flight.
    let (code, r) = event(&sb, "reset", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (3, "refused"), "{r}");
    assert_eq!(sb.protocol_files(ITEM), [format!("dispatch-{id}")]);
    let (code, r) = event(&sb, "reset", ITEM, &["--force".into()]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "idle");
    assert_eq!(
        effect_kinds(&r),
        ["revoke_ticket", "remove_state_dir"],
        "{r}"
    );
    assert_eq!(r["effects"][0]["dispatch_id"], id.as_str(), "{r}");
    assert!(!dir.exists(), "reset --force removes the state directory");
    assert_eq!(sb.status_json(ITEM)["state"], "idle");

    // A late launch finds neither the ticket nor the directory.
    assert_ne!(launch_late(&sb, &initiated), Some(0));
    assert!(!dir.exists(), "the late launch recreated nothing");
    sb.assert_no_hook_run("a late launch after reset --force never reached the hook");

    // And the item starts over normally.
    let (code, r) = event(&sb, "request-approve", ITEM, &[]);
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    approve_again_runs_once(&sb, &id);
}

#[test]
fn empty_initiated_from_the_original_with_a_result_finalizes() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("approve-requested"), b"");
    write(&dir.join("initiated"), b"");
    // The host wrapper wrote the result while no engine ran.
    write(&dir.join("result"), b"0\n");

    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    // Not our marker: no dispatch id, no ticket; the legacy result decides.
    assert!(s["dispatch"].is_null(), "not our marker: {s}");
    assert_eq!(s["result"], "0", "{s}");
    assert_eq!(s["stale_results"], serde_json::json!([]), "{s}");
    assert_eq!(s["unreadable"], serde_json::json!([]), "{s}");
    assert!(
        s["note"].as_str().unwrap().contains("result 0 waiting"),
        "{s}"
    );
    assert_eq!(sb.result_file(ITEM), dir.join("result"));

    // Unknown dispatch: `approved` must not launch a second deploy.
    let before = without_journal(sb.disk());
    let (code, r) = event(&sb, "approved", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(r["effects"], serde_json::json!([]), "{r}");
    assert_eq!(before, without_journal(sb.disk()), "no ticket, no launch");
    sb.assert_no_hook_run("approving an item the original engine dispatched launches nothing");

    let (code, r) = event(&sb, "poll", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["to"], "finalized_success");
    sb.assert_deploy_log(ITEM, "SUCCESS", "0");
    assert!(dir.join("finalized").is_file());
    assert_eq!(sb.finalizer_commits().len(), 1);
    assert_eq!(sb.status_json(ITEM)["state"], "finalized_success");
    sb.assert_no_hook_run("the finalizer never dispatches");
}

#[test]
fn result_without_initiated_reads_as_initiated_and_finalizes() {
    let sb = Sandbox::new();
    let dir = sb.item_dir(ITEM);
    write(&dir.join("result"), b"2\n");

    let s = sb.status_json(ITEM);
    assert_eq!(s["state"], "initiated", "{s}");
    assert_eq!(s["files"], serde_json::json!(["result"]), "{s}");

    let (code, r) = event(&sb, "poll", ITEM, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "transitioned"), "{r}");
    assert_eq!(r["from"], "initiated");
    assert_eq!(r["to"], "finalized_failed");
    sb.assert_deploy_log(ITEM, "FAILED", "2");
    assert_eq!(sb.status_json(ITEM)["state"], "finalized_failed");
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
    assert_eq!(sb.status_json(other)["state"], "finalized_failed");
    let before = sb.disk();
    let (code, r) = event(&sb, "poll", other, &wt_args(&sb));
    assert_eq!((code, outcome(&r)), (0, "unchanged"), "{r}");
    assert_eq!(without_journal(before), without_journal(sb.disk()));
    assert!(!sb.deploy_log(other).exists(), "no deploy log written");
    assert_eq!(sb.finalizer_commits().len(), 1);
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
    assert_eq!(sb.wait_for_result(ITEM).trim(), "0");
    let out = sb.event("poll", ITEM, &[]);
    assert_eq!(parse_json(&out)["to"], "finalized_success");
    let log = fs::read(sb.deploy_log(ITEM)).unwrap();
    assert_eq!(sb.finalizer_commits().len(), 1);

    // The crash: the log is written (and committed), `finalized` is not.
    fs::remove_file(sb.item_dir(ITEM).join("finalized")).unwrap();
    assert_eq!(sb.status_json(ITEM)["state"], "initiated");

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
    assert_eq!(sb.status_json(ITEM)["state"], "finalized_success");
    assert_eq!(
        sb.finalizer_commits().len(),
        1,
        "an identical log is no new commit"
    );
    assert_eq!(sb.hook_runs(), 1);
}
