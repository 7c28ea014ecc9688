//! Hostile clocks and hostile dispatch records: a clock or a file time
//! outside what a timestamp can show (before 1970, after 9999), a record
//! edited into nonsense. Nothing panics, nothing is decided by them, and
//! the problem is shown.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::report::{code, parse_json};
use crate::support::sandbox::{Sandbox, with_wall_clock};

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

fn set_mtime(path: &Path, at: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

fn no_panic(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && code(out) != 101,
        "exit {}: {err}",
        code(out)
    );
}

/// `initiated` given a file time before 1970 (`touch -d 1960-01-01`) or
/// after the year 9999: the time cannot be written as RFC 3339; the
/// dispatch age is inconsistent, shown, and nothing panics.
#[test]
fn a_file_time_outside_what_a_timestamp_can_show_is_no_panic() {
    for (n, when) in [
        UNIX_EPOCH - Duration::from_secs(10 * 365 * 86_400),
        UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sb = Sandbox::new();
        sb.wrapper_never_runs();
        sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
        let item = format!("MTIME-{n}");
        sb.approve_item(&item);
        let id = sb.dispatch_id(&item).unwrap();
        // Another boot: the wall clock and the file's time measure it.
        let mut edited = record(&sb, &item);
        edited["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
        write_record(&sb, &item, &edited);
        set_mtime(&sb.item_dir(&item).join("initiated"), when);
        std::thread::sleep(Duration::from_millis(1200));

        let (c, r) = sb.event_json("poll", &item, &[]);
        assert_eq!(
            (c, r["outcome"].as_str(), r["condition"].as_str()),
            (
                0,
                Some("deferred"),
                Some("no result, dispatch time inconsistent")
            ),
            "{r}"
        );
        assert_eq!(sb.protocol_files(&item), [format!("dispatch-{id}")]);
        let out = sb.run(&[
            "status",
            "--repo",
            "orchestrator",
            "--work-item",
            &item,
            "--json",
        ]);
        no_panic(&out);
        let s = parse_json(&out);
        assert!(
            s["problem"].as_str().unwrap_or_default().contains("clock:"),
            "{s}"
        );
        let out = sb.run(&["watch", "--once"]);
        no_panic(&out);
        assert_eq!(sb.protocol_files(&item), [format!("dispatch-{id}")]);
    }
}

/// A wall clock set before 1970 or past the year 9999 at `approved`, at
/// `poll`, at `status` and at `watch`: no timestamp can hold the time, and
/// nothing panics; the dispatch goes on, measured by the boot clock, and
/// the record's unreadable time is shown as a clock problem.
#[test]
fn a_wall_clock_before_1970_or_after_9999_is_no_panic() {
    for (n, clock) in ["@1969-06-01 00:00:00", "+8000y"].into_iter().enumerate() {
        let mut sb = Sandbox::new();
        sb.wrapper_never_runs();
        let item = format!("FAR-{n}");
        sb.request_approve(&item);
        let mut cmd = with_wall_clock(sb.event_cmd("approved", &item), clock);
        cmd.args(sb.approve_args());
        let out = cmd.output().unwrap();
        no_panic(&out);
        let r = parse_json(&out);
        assert_eq!(
            (code(&out), r["to"].as_str()),
            (0, Some("initiated")),
            "{r}"
        );
        let id = sb.dispatch_id(&item).unwrap();

        let out = with_wall_clock(sb.event_cmd("poll", &item), clock)
            .output()
            .unwrap();
        no_panic(&out);
        let r = parse_json(&out);
        assert_eq!(
            (code(&out), r["outcome"].as_str()),
            (0, Some("deferred")),
            "{r}"
        );
        let mut cmd = with_wall_clock(sb.cmd(), clock);
        cmd.args(["status", "--json"]);
        let out = cmd.output().unwrap();
        no_panic(&out);
        let mut cmd = with_wall_clock(sb.cmd(), clock);
        cmd.args(["watch", "--once"]);
        let out = cmd.output().unwrap();
        no_panic(&out);
        assert_eq!(sb.protocol_files(&item), [format!("dispatch-{id}")]);

        // On the real clock: the boot clock measures, the record's time is
        // the problem shown.
        let s = sb.status_json(&item);
        assert!(
            s["problem"]
                .as_str()
                .unwrap_or_default()
                .contains("1970-01-01T00:00:00Z\" in initiated does not parse"),
            "{s}"
        );
    }
}

/// `initiated` of ours (it names its dispatch, whose ticket is on disk)
/// with a boot clock field of the wrong type (a negative, a fraction, a
/// string, past u64, a number for the boot id): still our record, its
/// boot clock unusable, so the wall clock measures it as for an earlier
/// release's record. It was read as the original engine's: "legacy", no
/// claim timeout, the host's `result-<id>` never read, nothing shown.
#[test]
fn a_boot_clock_field_of_the_wrong_type_keeps_the_record_ours() {
    let edits: [(&str, Value); 5] = [
        ("dispatched_boottime_ms", (-5).into()),
        ("dispatched_boottime_ms", 1.5.into()),
        ("dispatched_boottime_ms", "12".into()),
        (
            "dispatched_boottime_ms",
            serde_json::from_str("18446744073709551616").unwrap(),
        ),
        ("boot_id", 5.into()),
    ];
    for (n, (field, value)) in edits.into_iter().enumerate() {
        let mut sb = Sandbox::new();
        sb.wrapper_never_runs();
        sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
        let item = format!("TYPE-{n}");
        sb.approve_item(&item);
        let id = sb.dispatch_id(&item).unwrap();
        let mut edited = record(&sb, &item);
        let at = humantime::parse_rfc3339(edited["dispatched_at"].as_str().unwrap()).unwrap();
        edited[field] = value.clone();
        write_record(&sb, &item, &edited);
        set_mtime(&sb.item_dir(&item).join("initiated"), at);

        let s = sb.status_json(&item);
        assert_eq!(
            (s["legacy"].as_bool(), s["dispatch"]["id"].as_str()),
            (Some(false), Some(id.as_str())),
            "{field}: {value}: {s}"
        );
        std::thread::sleep(Duration::from_millis(1200));
        let (c, r) = sb.event_json("poll", &item, &[]);
        assert_eq!(
            (c, r["to"].as_str(), r["outcome"].as_str()),
            (3, Some("approve_requested"), Some("dispatch_failed")),
            "{field}: {value}: {r}"
        );
        assert_eq!(sb.protocol_files(&item), [format!("revoked-{id}")]);
    }
}
