//! Hostile tests of the fixes of the first attack round (attack_17.rs): the
//! sealed intent with `history_len`, the repeats file, the late marks of
//! runs a reset kept. Each test here shows a defect, and fails until it is
//! fixed. Each names the contract section it holds the binary to.

use std::fs;
use std::path::Path;

use std::time::Duration;

use serde_json::Value;

use crate::support::record::*;
use crate::support::report::*;
use crate::support::sandbox::*;

const REPO: &str = "orchestrator";
const KEY: &str = "attack-17b-history-key-0123456789abcdef0123456789";

fn verify(sb: &Sandbox, item: &str) -> std::process::Output {
    sb.run(&["history", "--repo", REPO, "--work-item", item, "--verify"])
}

/// Contract 11: with HISTORY_HMAC_KEY the history is tamper-evident, and a
/// record planted by whoever can write beside it is never signed into the
/// chain as an event (the fix seals the intent for that). The seal covers
/// the intent's entry, but not the item it belongs to: a sealed intent of
/// item A, copied to `pending/<repo>/B.json`, is authentic for B. The next
/// event on B signs A's approval into B's history as an `approved` of B
/// (interrupted, naming A's dispatch), which B never had, and
/// `history --verify` accepts it.
///
/// To reproduce by hand: with the key set, request-approve A and B; kill -9
/// A's `approved` between its append and the clear
/// (`strace -f -e inject=unlink:signal=KILL -P .../pending/orchestrator/A.json`);
/// `cp pending/orchestrator/A.json pending/orchestrator/B.json`; any event
/// on B. Expected: recorded as untrusted (as a forged intent is), or not at
/// all; actual: an `approved` entry of B that verifies.
#[test]
fn a_sealed_intent_of_another_item_is_never_signed_into_this_one() {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    let (a, b) = ("ATK-A", "ATK-B");
    sb.request_approve(a);
    sb.request_approve(b);
    // The sealed intent of A's approval, as a kill -9 mid-launch leaves it.
    let gate = sb.root().join("gate");
    fs::write(&gate, "").unwrap();
    slow_bash(&mut sb, &gate);
    let child = spawn_approve(&sb, a);
    wait_for_ticket(&sb, a);
    let sealed = fs::read(pending(&sb, a)).unwrap();
    fs::remove_file(&gate).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        String::from_utf8_lossy(&sealed).contains("\"mac\":"),
        "the intent is sealed: {}",
        String::from_utf8_lossy(&sealed)
    );

    // Replayed by whoever can write the pending directory, without the key.
    fs::write(pending(&sb, b), &sealed).unwrap();
    let (c, r) = sb.event_json("request-approve", b, &[]);
    assert_eq!(c, 0, "{r}");

    let h = history(&sb, b);
    let replayed = h
        .iter()
        .any(|e| e["event"] == "approved" && e["actor"] == "selfdeploy");
    let verified = code(&verify(&sb, b)) == 0;
    assert!(
        !(replayed && verified),
        "item {b} was never approved, yet its signed history holds an approval (item {a}'s, replayed) and verifies: {h:#?}"
    );
}

/// Contract 11: "A deferred poll that changes nothing is recorded once per
/// state, with a count of its repeats"; the fix: "An event's entry is never
/// written twice". A poll that fails the same way again (here the deploy
/// log's directory is a symlink, contract 7) writes an intent (it planned
/// the finalize), then counts itself in `<item>.jsonl.repeats` instead of
/// appending. kill -9 between that count and the intent's clear leaves
/// both; the intent's `history_len` is the history's end, where no entry
/// of it will ever be, so the next event appends it as a second record of
/// the same poll, saying its entry "never reached the history".
///
/// To reproduce by hand: the second failing poll under
/// `strace -f -e inject=unlink:signal=KILL -P .../pending/orchestrator/W.json`,
/// then any event. Here the state such a kill leaves is rebuilt exactly:
/// the repeat counted, the intent (no key: unsealed) as the binary writes
/// it before the first effect.
#[test]
fn a_repeat_killed_before_its_intent_is_cleared_is_recorded_once() {
    let sb = Sandbox::new();
    let item = "ATK-REPEAT";
    sb.approve_item(item);
    sb.wait_for_result(item);
    let docs = sb.worktree().join("docs");
    let elsewhere = sb.root().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &docs).unwrap();
    for _ in 0..2 {
        let out = sb.event("poll", item, &[]);
        assert_eq!(code(&out), 1, "the symlink fails the poll: {out:?}");
    }
    let h = history(&sb, item);
    assert_eq!(count(&h, "poll"), 1, "{h:#?}");
    assert_eq!(h.last().unwrap()["repeats"]["count"], 1, "{h:#?}");

    // The second poll again, killed after its count, before its clear.
    let len = fs::metadata(sb.history_path(item)).unwrap().len();
    let time = h.last().unwrap()["time"].as_str().unwrap().to_owned();
    let out = sb.event("poll", item, &[]);
    assert_eq!(code(&out), 1, "{out:?}");
    fs::write(
        pending(&sb, item),
        format!(
            "{{\"entry\":{{\"time\":\"{time}\",\"actor\":\"selfdeploy\",\"event\":\"poll\",\
             \"from\":\"initiated\",\"to\":\"initiated\",\"outcome\":\"pending\",\"reason\":null,\
             \"effects\":[\"write_deploy_log\",\"write_marker\",\"git_publish\"]}},\
             \"finished\":false,\"history_len\":{len}}}\n"
        ),
    )
    .unwrap();
    let h = history(&sb, item);
    assert_eq!(h.last().unwrap()["repeats"]["count"], 2, "{h:#?}");

    fs::remove_file(&docs).unwrap();
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let h = history(&sb, item);
    let polls: Vec<&Value> = h
        .iter()
        .filter(|e| e["event"] == "poll" && e["outcome"] != "transitioned")
        .collect();
    assert_eq!(
        polls.len(),
        1,
        "three failing polls, recorded once with a count of 2, and the last one a second time as interrupted: {polls:#?}"
    );
}

/// Contract 6.5: a claimed run kept by a reset "is never forgotten": when
/// its result lands, "the history records its verdict ... and `status`
/// shows it". Whether it is recorded is read from the mark
/// `<item>.jsonl.late-<id>` alone, whatever it is and whoever wrote it. A
/// mark planted before the result lands (by whoever can write beside the
/// history, without the key; the id is in `status`) means: the verdict
/// never reaches the signed history, `status` says "recorded in the
/// history", `history --verify` passes, and the next reset deletes the
/// run's result: the fact that the run deployed is gone.
///
/// To reproduce by hand: hold the hook, approve, `reset --force`,
/// `echo -n ID > .selfdeploy/history/orchestrator/W.jsonl.late-ID`, release
/// the hook, `watch --once`, `status`, `history --verify`. Expected: the
/// late verdict in the history (the mark is checked against it, as
/// `late_result_recorded` does); actual: none, and status says it is there.
#[test]
fn a_planted_late_mark_never_hides_a_kept_runs_verdict() {
    let mut sb = Sandbox::new();
    sb.set("HISTORY_HMAC_KEY", KEY.into());
    let item = "ATK-MARK";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");

    let mut mark = sb.history_path(item).into_os_string();
    mark.push(format!(".late-{id}"));
    fs::write(&mark, &id).unwrap();
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
    assert_eq!(code(&sb.run(&["watch", "--once"])), 0);

    let status = sb.status_json(item);
    let h = history(&sb, item);
    let recorded = count(&h, "late-result") == 1;
    let claims_recorded = status["kept_runs"][0]["recorded"] == true;
    assert!(
        recorded || !claims_recorded,
        "dispatch {id} ended with exit code 0; status says its verdict is recorded in the history, which does not hold it (verify: {}): {status}\n{h:#?}",
        text(&verify(&sb, item).stdout)
    );
}

/// Contract 11: "Appends never fail because of what is already in the
/// file"; contract 10: `status` shows "any error that blocks progress"; the
/// code calls repeats "a courtesy: the entries are the evidence". A FIFO
/// in place of `<item>.jsonl.repeats` makes `history` exit 1 and every
/// repeated deferred poll exit 4, each naming the history file
/// `<item>.jsonl` ("it is a FIFO"), a regular file. Once a run kept by a
/// reset has its result, every event on the item fails the same way
/// (checking whether its verdict is recorded reads the repeats), and
/// `status` shows no problem.
///
/// To reproduce by hand: hold the hook, approve, `reset --force`,
/// `mkfifo .selfdeploy/history/orchestrator/W.jsonl.repeats`, release the
/// hook, `event request-approve`, `status`, `history`.
#[test]
fn a_fifo_in_place_of_the_repeats_never_blocks_the_item_unseen() {
    let sb = Sandbox::new();
    let item = "ATK-REPEATS";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");
    let mut repeats = sb.history_path(item).into_os_string();
    repeats.push(".repeats");
    mkfifo(Path::new(&repeats));
    hold.release();
    let result = sb.item_dir(item).join(format!("result-{id}"));
    assert!(wait_for(Duration::from_secs(10), || fs::read_to_string(
        &result
    )
    .is_ok_and(|s| !s.trim().is_empty())));

    let out = sb.event("request-approve", item, &[]);
    let stderr = text(&out.stderr);
    let status = sb.status_json(item);
    let shown = sb.run(&["history", "--repo", REPO, "--work-item", item]);
    assert!(
        code(&out) == 0 || (stderr.contains(".repeats") && !status["problem"].is_null()),
        "a FIFO in place of the repeats fails every event, naming the history file, and status shows no problem: {stderr}\n{status}"
    );
    assert_eq!(
        code(&shown),
        0,
        "history exits on the repeats: {}",
        text(&shown.stderr)
    );
}
