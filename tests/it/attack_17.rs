//! Hostile tests of the record (intent, kept runs, one owner, a signed
//! history): each test here shows a defect found by attacking the latest
//! changes, and fails until it is fixed. Each names the contract section it
//! holds the binary to.

use std::fs;
use std::path::PathBuf;

use std::time::Duration;

use serde_json::Value;

use crate::support::record::*;
use crate::support::report::*;
use crate::support::sandbox::*;

const REPO: &str = "orchestrator";
const KEY: &str = "attack-17-history-key-0123456789abcdef0123456789";

/// The sandbox's REPOS_DIR becomes a small tmpfs of its own (mounted on
/// it, so that every helper finds the state where it was).
fn on_tmpfs(sb: &Sandbox) -> (Tmpfs, PathBuf) {
    let state = sb.state_root();
    let mount = Tmpfs::mount(&state, "256k");
    // The mount hides the sandbox's identity: this is the share now.
    sb.init_repos_dir();
    (mount, state)
}

/// Contract 6.6: "Never two hooks at once: ... a new dispatch for the item
/// is refused while an earlier claimed run has no result, unless forced."
/// A forced reset keeps the place of a run the host claimed; the run still
/// runs. `request-approve` and `approved` (not forced) then launch a second
/// hook beside it.
#[test]
fn a_kept_run_still_running_refuses_a_new_dispatch_unless_forced() {
    let sb = Sandbox::new();
    let item = "ATK-TWO";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let first = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");
    assert!(
        sb.item_dir(item).join(format!("reset-{first}")).exists(),
        "the run's place is kept"
    );
    assert!(
        !sb.item_dir(item).join(format!("result-{first}")).exists(),
        "the kept run has no result yet: its hook is still running"
    );

    sb.request_approve(item);
    let (c, r) = sb.approve(item);
    // Give a wrongly launched second wrapper the time to start its hook.
    std::thread::sleep(Duration::from_millis(500));
    let runs = sb.hook_runs();
    hold.release();
    assert_eq!(
        (c, r["outcome"].as_str(), runs),
        (3, Some("refused"), 1),
        "a second hook was launched while kept run {first} still runs: {r}"
    );
}

/// Contract 6.6: "a claimed dispatch without a result may still be running,
/// whatever verdict a deadline gave it. Resetting such an item needs
/// `--force`". A plain `reset` of an item the result deadline finalized as
/// FAILED, whose hook still runs, transitions to idle.
#[test]
fn reset_of_a_deadline_failed_item_whose_hook_still_runs_needs_force() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "1".into());
    let item = "ATK-DEADLINE";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    std::thread::sleep(Duration::from_millis(1500));
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_failed", "{r}");
    let id = sb.dispatch_id(item).unwrap();
    assert!(!sb.item_dir(item).join(format!("result-{id}")).exists());

    let (c, r) = sb.event_json("reset", item, &[]);
    hold.release();
    assert_eq!(
        (c, r["outcome"].as_str(), r["to"].as_str()),
        (3, Some("refused"), Some("finalized_failed")),
        "an item whose claimed run has no result was reset without --force: {r}"
    );
}

/// Contract 11: every event is recorded, once. kill -9 after the event's
/// entry reached the history but before its intent was cleared (the two are
/// separate writes) leaves both; the next event appends the intent as a
/// second entry of the same event, which says the process "stopped after
/// the event began to act": an approval that finished reads as one that
/// was interrupted, and the dispatch is in the history twice.
///
/// The state such a kill leaves is rebuilt exactly: the intent, copied
/// while the launch was held, is put back once the event has finished.
#[test]
fn an_event_killed_between_its_append_and_the_intent_clear_is_recorded_once() {
    let mut sb = Sandbox::new();
    let item = "ATK-KILL";
    sb.request_approve(item);
    let gate = sb.root().join("gate");
    fs::write(&gate, "").unwrap();
    slow_bash(&mut sb, &gate);
    let child = spawn_approve(&sb, item);
    wait_for_ticket(&sb, item);
    let intent = fs::read(pending(&sb, item)).unwrap();
    fs::remove_file(&gate).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(count(&history(&sb, item), "approved"), 1);
    // kill -9 here: the entry is appended, the intent not yet cleared.
    fs::write(pending(&sb, item), &intent).unwrap();

    sb.wait_for_result(item);
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    let approved: Vec<&Value> = h.iter().filter(|e| e["event"] == "approved").collect();
    assert_eq!(
        approved.len(),
        1,
        "one approval, recorded twice (the second claims it was interrupted): {approved:#?}"
    );
    assert_eq!(approved[0]["outcome"], "transitioned");
}

/// Contract 6.5 and 11: a kept run's late verdict is recorded once. On a
/// full disk the `late-result` entry still fits in the history's last page
/// but the mark `<item>.jsonl.late-<id>` (a new file) does not: the pass
/// fails, and every later pass appends the same verdict again, until space
/// returns (then once more). One run, recorded four times.
#[test]
fn a_full_disk_at_the_late_mark_records_a_late_verdict_once() {
    let sb = Sandbox::new();
    let item = "ATK-LATE";
    let (mount, state) = on_tmpfs(&sb);
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");
    let dir = state.join(format!(".deploy-state-{REPO}/{item}"));
    hold.release();
    let result = dir.join(format!("result-{id}"));
    assert!(
        wait_for(Duration::from_secs(10), || fs::read_to_string(&result)
            .is_ok_and(|s| !s.trim().is_empty())),
        "the kept run's result landed"
    );
    wait_for_wrappers(
        &state.join(format!(".deploy-state-{REPO}")),
        Duration::from_secs(10),
    );

    let filler = mount.fill();
    for _ in 0..3 {
        // Each pass records it or reports the full disk; never twice.
        let out = sb.run(&["watch", "--once"]);
        assert!(matches!(code(&out), 0 | 1), "{out:?}");
    }
    fs::remove_file(&filler).unwrap();
    let out = sb.run(&["watch", "--once"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let h = history(&sb, item);
    assert_eq!(
        count(&h, "late-result"),
        1,
        "one late verdict, recorded once per failed pass: {h:#?}"
    );
}

/// Contract 11: "when the history cannot be appended the event says so";
/// a signed history is chained and its head rewritten after each append.
/// On a full disk the signed entry fits in the history's last page but the
/// new head file does not: the event exits 4 saying its entry could not be
/// appended although it was, and the next event appends the kept intent as
/// a second `approved` entry claiming the process stopped mid-event.
#[test]
fn a_full_disk_at_the_signed_head_neither_lies_nor_records_twice() {
    let mut sb = Sandbox::new();
    let item = "ATK-HEAD";
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    let (mount, _state) = on_tmpfs(&sb);
    // The hook waits for the space to return: its own result must land (a
    // result on a full disk is another story).
    let hold = Hold::hook(&sb);
    sb.request_approve(item);
    let gate = sb.root().join("gate");
    fs::write(&gate, "").unwrap();
    slow_bash(&mut sb, &gate);
    let child = spawn_approve(&sb, item);
    wait_for_ticket(&sb, item);
    // The disk fills while the launch runs (the hook's log, another tenant).
    let filler = mount.fill();
    fs::remove_file(&gate).unwrap();
    let out = child.wait_with_output().unwrap();
    let in_history = count(&history(&sb, item), "approved");
    fs::remove_file(&filler).unwrap();
    hold.release();
    assert!(
        !(code(&out) == 4 && in_history == 1),
        "exit 4 says the entry could not be appended, but it is in the history: {}",
        text(&out.stderr)
    );

    sb.wait_for_result(item);
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    assert_eq!(count(&h, "approved"), 1, "{h:#?}");
    let out = sb.run(&["history", "--repo", REPO, "--work-item", item, "--verify"]);
    assert_eq!(code(&out), 0, "{out:?}");
}

/// Contract 11: an intent left behind "is reconciled into the history by
/// the next event or `watch` pass". kill -9 of a `reset` after it removed
/// the state directory, before its entry was appended, leaves the intent;
/// the watch lists items by their state directory, which is gone, so no
/// pass ever records the reset (and `status` shows nothing at all).
///
/// The intent is the one such a kill leaves (its bytes as the binary
/// writes them before the removal).
#[test]
fn the_watch_records_the_intent_of_a_reset_killed_after_removing_the_item() {
    let sb = Sandbox::new();
    let item = "ATK-GONE";
    sb.request_approve(item);
    fs::remove_dir_all(sb.item_dir(item)).unwrap();
    let time = history(&sb, item)[0]["time"].as_str().unwrap().to_owned();
    fs::write(
        pending(&sb, item),
        format!(
            "{{\"entry\":{{\"time\":\"{time}\",\"actor\":\"selfdeploy\",\"event\":\"reset\",\
             \"from\":\"approve_requested\",\"to\":\"approve_requested\",\"outcome\":\"pending\",\
             \"reason\":null,\"effects\":[\"remove_state_dir\"]}},\"finished\":false}}\n"
        ),
    )
    .unwrap();

    let out = sb.run(&["watch", "--once"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let h = history(&sb, item);
    assert_eq!(
        count(&h, "reset"),
        1,
        "the watch left the reset out of the history: {h:#?}"
    );
    assert!(!pending(&sb, item).exists());
}

/// Contract 6.5 and 11: a reset `--force` killed after it wrote the kept
/// run's `reset-<id>` record but before it removed `initiated` (the code
/// says a second reset finishes it) leaves an item still `initiated` whose
/// run is also "kept". When the run's result lands, the next poll records
/// it as a `late-result` that "ran on after a reset ... the item was not
/// finalized by it", and then finalizes the item from that very result:
/// the history contradicts itself.
///
/// The state is the one such a kill leaves: `reset-<id>` holds the
/// `initiated` record, everything else is untouched.
#[test]
fn a_reset_killed_midway_never_records_the_current_run_as_a_late_result() {
    let sb = Sandbox::new();
    let item = "ATK-HALF";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb
        .item_dir(item)
        .join(format!("claimed-{id}"))
        .exists()));
    let initiated = fs::read(sb.item_dir(item).join("initiated")).unwrap();
    // kill -9 of `reset --force` here: its record written, nothing removed.
    fs::write(sb.item_dir(item).join(format!("reset-{id}")), &initiated).unwrap();
    hold.release();
    sb.wait_for_result(item);

    let r = sb.poll_until_final(item, &[]);
    let h = history(&sb, item);
    let late = count(&h, "late-result");
    let finalized = r["to"] == "finalized_success";
    assert!(
        !(late == 1 && finalized),
        "dispatch {id} is recorded as a late result that decided nothing, and it finalized the item: {h:#?}"
    );
}

/// Contract 10: `status` shows "any error that blocks progress". Something
/// that is not a regular file in place of `pending/<repo>/<item>.json` (a FIFO
/// here) makes every event on the item fail, a poll of a running deploy
/// included; the error names the history file (`<item>.jsonl ... it is a
/// FIFO`), which is a regular file, and `status` reports no problem.
#[test]
fn a_fifo_in_place_of_the_intent_is_named_and_shown() {
    let sb = Sandbox::new();
    let item = "ATK-FIFO";
    sb.request_approve(item);
    let intent = pending(&sb, item);
    mkfifo(&intent);

    let out = sb.event("request-approve", item, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("pending/{REPO}/{item}.json")),
        "the error names the file at fault: {stderr}"
    );
    let status = sb.status_json(item);
    assert!(
        !status["problem"].is_null(),
        "every event fails, and status shows no problem: {status}"
    );
}

/// Contract 11: with HISTORY_HMAC_KEY the history is tamper-evident: who
/// can write beside it but has no key cannot add an entry that verifies.
/// The intent `pending/<repo>/<item>.json` is not authenticated, and the next
/// event signs whatever it says into the chain: a forged `finished` intent
/// (an actor, an event and an outcome that never were) becomes an entry
/// that `history --verify` accepts.
#[test]
fn a_forged_intent_is_never_signed_into_the_history() {
    let mut sb = Sandbox::new();
    let item = "ATK-FORGE";
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    sb.request_approve(item);
    // Written without the key, by whoever can write the history directory.
    fs::write(
        pending(&sb, item),
        "{\"entry\":{\"time\":\"2026-01-01T00:00:00Z\",\"actor\":\"mallory\",\
         \"event\":\"merge-verified\",\"from\":\"finalized_success\",\"to\":\"finalized_success\",\
         \"outcome\":\"transitioned\",\"reason\":\"verified by hand\",\"effects\":[]},\
         \"finished\":true}\n",
    )
    .unwrap();
    let (c, r) = sb.event_json("request-approve", item, &[]);
    assert_eq!(c, 0, "{r}");

    let h = history(&sb, item);
    let forged = h.iter().any(|e| e["actor"] == "mallory");
    let out = sb.run(&["history", "--repo", REPO, "--work-item", item, "--verify"]);
    assert!(
        !(forged && code(&out) == 0),
        "a forged entry is in the signed history and verifies: {h:#?}\n{}",
        text(&out.stdout)
    );
}

/// Contract 6.5 (a claimed run's outcome "is still a fact ... it is never
/// forgotten") and 6.6 ("whatever verdict a deadline gave it"): the result
/// deadline finalizes the item as FAILED (`timeout`), then the hook ends
/// with exit code 0 after all (production may run the new version). The
/// reset counts the run as settled, "finalized by it", although its result
/// decided nothing: the reset deletes `result-<id>`, and the history never
/// held the run's exit code. The one fact that the new version went live
/// is gone.
#[test]
fn a_late_result_after_the_deadline_is_recorded_before_a_reset_removes_it() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "1".into());
    let item = "ATK-AFTER";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    std::thread::sleep(Duration::from_millis(1500));
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_failed", "{r}");
    hold.release();
    assert_eq!(sb.wait_for_result(item).trim(), "0");
    // The watch and a poll pass by; the operator resets, as the runbook says.
    assert_eq!(code(&sb.run(&["watch", "--once"])), 0);
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(c, 0, "{r}");
    let (c, r) = sb.event_json("reset", item, &[]);
    assert_eq!(c, 0, "{r}");

    let kept = sb.item_dir(item).join(format!("result-{id}")).exists();
    let h = history(&sb, item);
    let recorded = h.iter().any(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&id) && r.contains("exit code 0"))
    });
    assert!(
        kept || recorded,
        "dispatch {id} ended with exit code 0, and neither its result nor the history says so: {h:#?}"
    );
}

/// Contract 4: a result that is not an integer is read as exit code 1
/// (fail-closed), which is a verdict, not a fact about the hook. The
/// `late-result` entry of a kept run whose result is garbage says "its
/// hook ended with exit code 1", which the hook never did; the finalizer's
/// log names garbage as garbage.
#[test]
fn a_garbage_late_result_is_not_recorded_as_an_exit_code() {
    let sb = Sandbox::new();
    let item = "ATK-GARBAGE";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!(c, 0, "{r}");
    hold.release();
    let result = sb.item_dir(item).join(format!("result-{id}"));
    assert!(wait_for(Duration::from_secs(10), || fs::read_to_string(
        &result
    )
    .is_ok_and(|s| !s.trim().is_empty())));
    wait_for_wrappers(
        &sb.state_root().join(format!(".deploy-state-{REPO}")),
        Duration::from_secs(10),
    );
    fs::write(&result, "segfault\n").unwrap();
    assert_eq!(code(&sb.run(&["watch", "--once"])), 0);
    let h = history(&sb, item);
    let late: Vec<&Value> = h.iter().filter(|e| e["event"] == "late-result").collect();
    assert_eq!(late.len(), 1, "{h:#?}");
    let reason = late[0]["reason"].as_str().unwrap();
    assert!(
        !reason.contains("ended with exit code 1"),
        "the hook never exited with 1; its result was garbage: {reason}"
    );
}
