//! The host wrapper's write of the hook's exit code (contract sections 4, 5,
//! 6 and 9): written whole or not at all, and a write that failed is a
//! problem an operator sees, never a deploy that runs for ever.
//!
//! A full disk is real here: REPOS_DIR is a small tmpfs, filled while the
//! hook runs (the tests run as root, as CI does).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::record::*;
use crate::support::report::*;
use crate::support::sandbox::*;

const REPO: &str = "orchestrator";
const UNWRITTEN: &str = "the hook ended but its result could not be written";
const RUNNING: &str = "claimed by the host: the deploy is running";

/// Sets a file's modification time `ago` before now: the result the host
/// left has stayed so that long.
fn age(path: &Path, ago: Duration) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

fn problem(status: &Value) -> String {
    status["problem"].as_str().unwrap_or_default().to_owned()
}

/// An item approved on a small tmpfs whose hook ends while the disk is
/// full: the wrapper's write of the exit code fails. The space comes back
/// once every wrapper has ended. Returns the mount, the dispatch id and the
/// item's directory.
fn hook_ends_on_a_full_disk(sb: &Sandbox, item: &str) -> (Tmpfs, String, PathBuf) {
    let state = sb.state_root();
    let mount = Tmpfs::mount(&state, "256k");
    sb.init_repos_dir();
    let hold = Hold::hook(sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || sb.hook_runs() == 1),
        "the hook never started"
    );
    let filler = mount.fill();
    hold.release();
    wait_for_wrappers(
        &state.join(format!(".deploy-state-{REPO}")),
        Duration::from_secs(10),
    );
    fs::remove_file(&filler).unwrap();
    (mount, id, sb.item_dir(item))
}

/// Contract 4: "empty after trimming white space -> not present". The
/// wrapper wrote the exit code straight into `result-<id>`: on a full disk
/// the redirection created the file and the write failed, leaving an empty
/// result for ever, which every poll defers on and `status` calls a running
/// deploy. Written to `result-<id>.part` and renamed, a failed write leaves
/// the `.part` (the evidence) and no result; `status` and `watch` say the
/// hook ended without its result, once it has stayed so past the grace.
#[test]
fn a_result_the_full_disk_kept_from_being_written_is_a_problem_not_a_running_deploy() {
    let sb = Sandbox::new();
    let item = "RW-FULL";
    let (_mount, id, dir) = hook_ends_on_a_full_disk(&sb, item);
    let result = dir.join(format!("result-{id}"));
    let part = dir.join(format!("result-{id}.part"));
    assert!(
        !result.exists(),
        "a result-{id} the failed write left: {:?}",
        fs::read(&result)
    );
    assert_eq!(
        fs::read(&part).ok().as_deref(),
        Some(&b""[..]),
        "the failed write leaves its empty .part as evidence: {:?}",
        sb.protocol_files(item)
    );

    // Just written (a wrapper may be between its write and its rename):
    // still a running deploy, no problem yet.
    age(&part, Duration::ZERO);
    let s = sb.status_json(item);
    assert_eq!(s["problem"], Value::Null, "{s}");

    // It stays so: a problem, and never "running".
    age(&part, Duration::from_secs(60));
    let s = sb.status_json(item);
    assert!(problem(&s).contains(UNWRITTEN), "{s}");
    assert!(
        problem(&s).contains(&format!("result-{id}.part is empty")),
        "{s}"
    );
    assert!(!s["note"].as_str().unwrap().contains(RUNNING), "{s}");
    let table = sb.run(&["status", "--repo", REPO, "--work-item", item]);
    assert!(text(&table.stdout).contains(UNWRITTEN), "{table:?}");

    // A poll takes no verdict from it: it defers (the deadline decides).
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("deferred")), "{r}");
    assert_eq!(r["to"], "initiated", "{r}");

    // The watch reports it, and polls nothing.
    let out = sb.run(&["watch", "--once"]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(
        stdout.contains(&format!(
            "{REPO}/{item}: PROBLEM: dispatch {id}: {UNWRITTEN}"
        )),
        "{stdout}"
    );
    assert!(stdout.ends_with(", problems 1\n"), "{stdout}");
}

/// The same write, torn: the `.part` holds part of the code. It is never
/// read as a result (an exit code `1` of `137` would be a verdict), and the
/// problem shows what was left.
#[test]
fn a_torn_partial_result_is_never_a_verdict() {
    let sb = Sandbox::new();
    let item = "RW-TORN";
    let (_mount, id, dir) = hook_ends_on_a_full_disk(&sb, item);
    let part = dir.join(format!("result-{id}.part"));
    assert!(part.exists(), "{:?}", sb.protocol_files(item));
    fs::write(&part, "1").unwrap();
    age(&part, Duration::from_secs(60));
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("deferred")), "{r}");
    let s = sb.status_json(item);
    assert_eq!(s["result"], Value::Null, "{s}");
    assert!(
        problem(&s).contains(&format!(
            "{UNWRITTEN}: result-{id}.part holds \"1\" and was never renamed to result-{id}"
        )),
        "{s}"
    );
}

/// An empty `result-<id>` (a wrapper of an earlier release, whose write
/// failed) that stays so: the same problem; a poll defers on it, and
/// garbage is still a FAILED verdict.
#[test]
fn an_empty_result_that_stays_empty_is_a_problem_and_garbage_still_fails() {
    let sb = Sandbox::new();
    let item = "RW-EMPTY";
    let hold = Hold::hook(&sb);
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let result = sb.item_dir(item).join(format!("result-{id}"));
    fs::write(&result, " \n").unwrap();
    age(&result, Duration::from_secs(60));

    let s = sb.status_json(item);
    assert!(
        problem(&s).contains(&format!("{UNWRITTEN}: result-{id} is empty")),
        "{s}"
    );
    assert!(!s["note"].as_str().unwrap().contains(RUNNING), "{s}");
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (0, Some("deferred")), "{r}");

    fs::write(&result, "garbage").unwrap();
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_failed")), "{r}");
    sb.assert_deploy_log(item, "FAILED", "1");
    assert_eq!(sb.status_json(item)["problem"], Value::Null);
    hold.release();
}

/// Contract 5 and 6.5: with no deadline set, a result the host never
/// writes must still end. The default deadline is finite: a claimed run
/// with no result past it is finalized FAILED (`timeout`).
#[test]
fn the_default_result_deadline_is_finite() {
    let sb = Sandbox::new();
    let item = "RW-DEFAULT";
    let _hold = Hold::hook(&sb);
    sb.approve_item(item);
    assert!(wait_for(Duration::from_secs(10), || sb.hook_runs() == 1));
    let (_, r) = sb.event_json("poll", item, &[]);
    assert_eq!(r["outcome"], "deferred", "{r}");

    // The dispatch was made just over the default deadline ago.
    sb.backdate_dispatch(item, 1801);

    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!((c, r["to"].as_str()), (0, Some("finalized_failed")), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("the result deadline is 1800 s"),
        "{r}"
    );
    sb.assert_deploy_log(item, "FAILED", "timeout");
}

/// Contract 5, 6.5 and 6.6: a deploy whose result is never written is
/// finalized FAILED at the result deadline (fail-closed, `timeout`), the
/// problem stays shown, a plain reset is refused, `reset --force` keeps the
/// run's place (its `.part` too), and when the result is written at last
/// the history records it once as a late result.
#[test]
fn an_unwritten_result_fails_at_the_deadline_and_a_late_one_is_still_recorded() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "2".into());
    let item = "RW-LATE";
    let (_mount, id, dir) = hook_ends_on_a_full_disk(&sb, item);
    let part = dir.join(format!("result-{id}.part"));
    assert!(part.exists(), "{:?}", sb.protocol_files(item));
    age(&part, Duration::from_secs(60));
    assert!(problem(&sb.status_json(item)).contains(UNWRITTEN));

    // The deadline (2 s after the dispatch) passes.
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (
            Some("finalized_failed"),
            Some("no result, deadline passed, pushed")
        ),
        "{r}"
    );
    sb.assert_deploy_log(item, "FAILED", "timeout");
    let s = sb.status_json(item);
    assert!(problem(&s).contains(UNWRITTEN), "{s}");

    let (c, r) = sb.event_json("reset", item, &[]);
    assert_eq!((c, r["outcome"].as_str()), (3, Some("refused")), "{r}");
    let (c, r) = sb.event_json("reset", item, &["--force"]);
    assert_eq!((c, r["to"].as_str()), (0, Some("idle")), "{r}");
    assert!(part.exists(), "the kept run's evidence stays");
    assert!(dir.join(format!("reset-{id}")).exists());
    let s = sb.status_json(item);
    assert!(
        problem(&s).contains(&format!(
            "dispatch {id} was reset while the host ran it: {UNWRITTEN}"
        )),
        "{s}"
    );

    // The operator writes the exit code by hand, as the runbook says.
    fs::write(&part, "1\n").unwrap();
    fs::rename(&part, dir.join(format!("result-{id}"))).unwrap();
    for _ in 0..2 {
        let out = sb.run(&["watch", "--once"]);
        assert_eq!(code(&out), 0, "{out:?}");
    }
    let h = history(&sb, item);
    assert_eq!(count(&h, "late-result"), 1, "{h:#?}");
    let late = h.iter().find(|e| e["event"] == "late-result").unwrap();
    assert!(
        late["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("dispatch {id}")),
        "{late}"
    );
    assert!(
        late["reason"].as_str().unwrap().contains("exit code 1"),
        "{late}"
    );
    assert_eq!(sb.status_json(item)["problem"], Value::Null);
}
