//! `selfdeploy watch` as an operator runs it: a separate process that
//! finalizes results as they are written, shares the lock with stage-engine
//! polls, survives bad items, and stops cleanly on SIGTERM.

use std::fs;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::sandbox::{BRANCH, Sandbox, git};

fn start_watch(sb: &Sandbox) -> Child {
    let mut cmd = sb.cmd();
    cmd.arg("watch")
        .env("RUST_LOG", "info")
        .env("SELF_DEPLOY_WATCH_RESCAN_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("watch starts");
    // It is watching once it has logged that it started.
    thread::sleep(Duration::from_millis(300));
    child
}

fn state(sb: &Sandbox, item: &str) -> String {
    let out = sb.run(&[
        "status",
        "--repo",
        "orchestrator",
        "--work-item",
        item,
        "--json",
    ]);
    crate::support::report::parse_json(&out)["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

fn wait_for(sb: &Sandbox, item: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while state(sb, item) != want {
        assert!(
            start.elapsed() < limit,
            "{item} not {want} within {limit:?}: {}",
            state(sb, item)
        );
        thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn dispatch_held(sb: &Sandbox, item: &str) {
    let wt = sb.worktree();
    sb.event_json("request-approve", item, &[]);
    let (code, r) = sb.event_json(
        "approved",
        item,
        &["--branch", BRANCH, "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    // The host wrapper claimed the ticket: the hook started and is held.
    let id = sb
        .dispatch_id(item)
        .expect("initiated records the dispatch");
    let claimed = sb.item_dir(item).join(format!("claimed-{id}"));
    let start = Instant::now();
    while !claimed.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{item}: the host never claimed dispatch {id}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes the hook's exit code as the host wrapper would, for the item's
/// current dispatch (`result-<id>`).
fn host_writes_result(sb: &Sandbox, item: &str, content: &str) {
    let path = sb.result_file(item);
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("result-"),
        "{}",
        path.display()
    );
    fs::write(path, content).unwrap();
}

fn sigterm(child: &mut Child) -> (Option<i32>, String) {
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "watch did not stop on SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_finalizes_a_result_as_it_is_written_and_stops_on_sigterm() {
    let sb = Sandbox::new();
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    dispatch_held(&sb, "ORCH-50");
    let mut watch = start_watch(&sb);

    // The stage engine polls at the same time: still exactly one finalize.
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
    let racer = {
        let mut cmd = sb.cmd();
        cmd.args([
            "event",
            "poll",
            "--repo",
            "orchestrator",
            "--work-item",
            "ORCH-50",
        ]);
        thread::spawn(move || {
            for _ in 0..20 {
                let _ = cmd.output();
            }
        })
    };
    let took = wait_for(&sb, "ORCH-50", "finalized_success", Duration::from_secs(15));
    racer.join().unwrap();
    let commits = git(&sb.remote(), &["log", "--format=%an", BRANCH]);
    assert_eq!(
        commits.lines().filter(|l| *l == "deploy-finalizer").count(),
        1,
        "{commits}"
    );

    let (code, log) = sigterm(&mut watch);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("watch: SIGTERM") && log.contains("watch: stopped"),
        "{log}"
    );
    eprintln!("finalized {took:?} after the hook was released");
}

#[test]
fn watch_survives_garbage_and_vanished_items_and_rescans() {
    let sb = Sandbox::new();
    // A result written before the watch starts is found by the first scan.
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    dispatch_held(&sb, "EARLY-1");
    host_writes_result(&sb, "EARLY-1", "0\n");
    let mut watch = start_watch(&sb);
    wait_for(&sb, "EARLY-1", "finalized_success", Duration::from_secs(15));

    // Garbage is finalized as FAILED (fail-closed) and the watch goes on.
    dispatch_held(&sb, "GARBAGE-1");
    host_writes_result(&sb, "GARBAGE-1", "not a number\n");
    wait_for(
        &sb,
        "GARBAGE-1",
        "finalized_failed",
        Duration::from_secs(15),
    );

    // A state directory that vanishes under it is no reason to stop.
    dispatch_held(&sb, "GONE-1");
    fs::remove_dir_all(sb.item_dir("GONE-1")).unwrap();
    dispatch_held(&sb, "LATE-1");
    host_writes_result(&sb, "LATE-1", "1\n");
    wait_for(&sb, "LATE-1", "finalized_failed", Duration::from_secs(15));
    assert!(watch.try_wait().unwrap().is_none(), "watch exited");
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
    let (code, log) = sigterm(&mut watch);
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn watch_once_polls_every_due_item_and_exits() {
    let sb = Sandbox::new();
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    dispatch_held(&sb, "ONCE-1");
    dispatch_held(&sb, "ONCE-2");
    host_writes_result(&sb, "ONCE-1", "0\n");
    // A legacy `result` beside our dispatch is stale: never a verdict, so it
    // does not make ONCE-2 due.
    fs::write(sb.item_dir("ONCE-2").join("result"), "0\n").unwrap();
    let out = sb.run(&["watch", "--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "finalized 1, errors 0"
    );
    assert_eq!(state(&sb, "ONCE-1"), "finalized_success");
    assert_eq!(state(&sb, "ONCE-2"), "initiated");
    let st = sb.run(&[
        "status",
        "--repo",
        "orchestrator",
        "--work-item",
        "ONCE-2",
        "--json",
    ]);
    let st = crate::support::report::parse_json(&st);
    assert_eq!(st["stale_results"], serde_json::json!(["result"]), "{st}");
    assert!(st["result"].is_null(), "{st}");
    // No history line for the item that was not due.
    let history = sb.run(&[
        "history",
        "--repo",
        "orchestrator",
        "--work-item",
        "ONCE-2",
        "--json",
    ]);
    assert_eq!(String::from_utf8_lossy(&history.stdout).lines().count(), 2);
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
}
