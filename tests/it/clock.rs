//! Clocks never decide a verdict: the claim timeout and the result deadline
//! count on the boot clock (`CLOCK_BOOTTIME`) on the same boot, and on the
//! wall clock only when it is consistent. Real steps of the wall clock come
//! from `faketime` (Debian package `faketime`): `approved` runs with the
//! clock an hour behind or ahead, with `DONT_FAKE_MONOTONIC=1` so that the
//! boot clock stays real, exactly as a step of the system clock leaves it.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::report::{code, parse_json};
use crate::support::sandbox::{Hold, Sandbox, wait_for, with_wall_clock};

/// `selfdeploy event approved` for `item` with the wall clock moved by
/// `offset` (a libfaketime offset: `-1h`, `+1h`); the boot clock is real.
fn approve_with_clock(sb: &Sandbox, item: &str, offset: &str) -> (i32, Value) {
    let mut cmd = with_wall_clock(sb.event_cmd("approved", item), offset);
    cmd.args(sb.approve_args());
    let out = cmd.output().expect("run selfdeploy");
    (code(&out), parse_json(&out))
}

fn record(sb: &Sandbox, item: &str) -> Value {
    serde_json::from_slice(&fs::read(sb.item_dir(item).join("initiated")).unwrap()).unwrap()
}

fn write_record(sb: &Sandbox, item: &str, record: &Value) {
    fs::write(
        sb.item_dir(item).join("initiated"),
        serde_json::to_string(record).unwrap(),
    )
    .unwrap();
}

/// How far the recorded dispatch time is from the real clock now, in
/// seconds (negative: behind).
fn recorded_offset(sb: &Sandbox, item: &str) -> i64 {
    let at = humantime::parse_rfc3339(record(sb, item)["dispatched_at"].as_str().unwrap()).unwrap();
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    }
}

fn status(sb: &Sandbox, item: &str) -> Value {
    let out = sb.run(&[
        "status",
        "--repo",
        "orchestrator",
        "--work-item",
        item,
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    parse_json(&out)
}

fn wait_claimed(sb: &Sandbox, item: &str) {
    assert!(
        wait_for(Duration::from_secs(10), || sb
            .protocol_files(item)
            .iter()
            .any(|f| f.starts_with("claimed-"))),
        "the host never claimed: {:?}",
        sb.protocol_files(item)
    );
}

/// The deploy approved with the wall clock `offset` off, polled on the real
/// clock half a second later: no verdict, a problem shown, and the hook's
/// result finalizes it.
fn approved_with_a_wrong_clock_then_polled_on_the_real_one(offset: &str, expected: i64) {
    let mut sb = Sandbox::new();
    let item = "CLOCK-1";
    let hold = Hold::hook(&sb);
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "600".into());
    sb.request_approve(item);
    let (c, r) = approve_with_clock(&sb, item, offset);
    assert_eq!((c, r["to"].as_str()), (0, Some("initiated")), "{r}");
    // faketime did move the wall clock the engine read.
    let off = recorded_offset(&sb, item);
    assert!(
        (off - expected).abs() < 60,
        "faketime {offset} had no effect: the dispatch time is {off} s off"
    );
    wait_claimed(&sb, item);
    std::thread::sleep(Duration::from_millis(500));

    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (c, r["to"].as_str(), r["outcome"].as_str()),
        (0, Some("initiated"), Some("deferred")),
        "a step of the wall clock decided a verdict: {r}"
    );
    // Measured by the boot clock recorded at the dispatch.
    assert!(
        record(&sb, item)["boot_id"].is_string(),
        "{}",
        record(&sb, item)
    );
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("clock: the wall clock disagrees with the boot clock"),
        "{r}"
    );
    let s = status(&sb, item);
    let problem = s["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("clock: the wall clock disagrees with the boot clock")
            && problem.contains("timeouts are unaffected"),
        "{s}"
    );

    hold.release();
    assert_eq!(sb.wait_for_result(item).trim(), "0");
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    sb.assert_deploy_log(item, "SUCCESS", "0");
}

#[test]
fn approved_an_hour_behind_is_no_deadline_verdict_on_the_real_clock() {
    approved_with_a_wrong_clock_then_polled_on_the_real_one("-1h", -3600);
}

#[test]
fn approved_an_hour_ahead_is_no_verdict_and_a_problem_on_the_real_clock() {
    approved_with_a_wrong_clock_then_polled_on_the_real_one("+1h", 3600);
}

/// On the same boot the boot clock still counts: a dispatch approved an
/// hour ahead is revoked once the host has not claimed it for the claim
/// timeout, not an hour later (a backward step no longer postpones it).
#[test]
fn a_backward_step_does_not_postpone_the_claim_timeout() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    let item = "CLOCK-2";
    sb.request_approve(item);
    let (c, r) = approve_with_clock(&sb, item, "+1h");
    assert_eq!((c, r["to"].as_str()), (0, Some("initiated")), "{r}");
    std::thread::sleep(Duration::from_millis(1200));
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (c, r["to"].as_str(), r["outcome"].as_str()),
        (3, Some("approve_requested"), Some("dispatch_failed")),
        "{r}"
    );
    assert_eq!(sb.hook_runs(), 0);
}

/// A dispatch time in the future, where only the wall clock can measure it
/// (the record is from another boot): a problem in `status` and `watch`,
/// and nothing is revoked or failed by it; once it is consistent, the poll
/// acts again.
#[test]
fn a_dispatch_time_in_the_future_is_a_problem_and_not_acted_upon() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "2".into());
    let item = "CLOCK-3";
    sb.approve_item(item);
    let id = sb.dispatch_id(item).unwrap();
    let original = record(&sb, item);
    let mut edited = original.clone();
    let future = SystemTime::now() + Duration::from_secs(3600);
    edited["dispatched_at"] = humantime::format_rfc3339_millis(future).to_string().into();
    edited["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
    write_record(&sb, item, &edited);
    std::thread::sleep(Duration::from_millis(2200));

    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (
            c,
            r["to"].as_str(),
            r["outcome"].as_str(),
            r["condition"].as_str()
        ),
        (
            0,
            Some("initiated"),
            Some("deferred"),
            Some("no result, dispatch time inconsistent")
        ),
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("s in the future"), "{reason}");
    assert_eq!(sb.protocol_files(item), [format!("dispatch-{id}")]);

    let s = status(&sb, item);
    let problem = s["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("clock: the dispatch time")
            && problem.contains("in the future")
            && problem.contains("no claim timeout or result deadline is applied"),
        "{s}"
    );

    let out = sb.run(&["watch", "--once"]);
    assert_eq!(code(&out), 0);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!(
            "orchestrator/{item}: PROBLEM: clock: the dispatch time"
        )),
        "{log}"
    );
    assert_eq!(sb.protocol_files(item), [format!("dispatch-{id}")], "{log}");

    // The same record, its time made consistent with the file's: the
    // overdue ticket is revoked.
    let mut fixed = edited.clone();
    fixed["dispatched_at"] = original["dispatched_at"].clone();
    write_record(&sb, item, &fixed);
    let path = sb.item_dir(item).join("initiated");
    set_mtime(
        &path,
        humantime::parse_rfc3339(original["dispatched_at"].as_str().unwrap()).unwrap(),
    );
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (c, r["to"].as_str(), r["outcome"].as_str()),
        (3, Some("approve_requested"), Some("dispatch_failed")),
        "{r}"
    );
    assert_eq!(sb.protocol_files(item), [format!("revoked-{id}")]);
}

/// A dispatch time an hour before the time the kernel gave the file, on
/// another boot: the wall age (an hour) is not believed, no deadline
/// verdict is given.
#[test]
fn a_dispatch_time_the_file_contradicts_gives_no_deadline_verdict() {
    let mut sb = Sandbox::new();
    let item = "CLOCK-4";
    let _hold = Hold::hook(&sb);
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "600".into());
    sb.approve_item(item);
    wait_claimed(&sb, item);
    let mut edited = record(&sb, item);
    let earlier = SystemTime::now() - Duration::from_secs(3600);
    edited["dispatched_at"] = humantime::format_rfc3339_millis(earlier).to_string().into();
    edited.as_object_mut().unwrap().remove("boot_id");
    write_record(&sb, item, &edited);
    let (c, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (c, r["to"].as_str(), r["condition"].as_str()),
        (
            0,
            Some("initiated"),
            Some("no result, dispatch time inconsistent")
        ),
        "{r}"
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("from the time the kernel gave the file"),
        "{r}"
    );
}

fn set_mtime(path: &Path, at: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}
