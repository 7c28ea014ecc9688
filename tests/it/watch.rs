//! `selfdeploy watch` as an operator runs it: a separate process that
//! finalizes results as they are written, shares the lock with stage-engine
//! polls, survives bad items, and stops cleanly on SIGTERM.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::store::{ItemLock, ItemPaths};

use crate::support::sandbox::{
    BRANCH, Hold, Sandbox, git, path_with_first_dir, tool, wait_for as support_wait_for,
    write_script,
};

/// A running `selfdeploy watch`, its stderr (the log) read as it comes.
struct Watch {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts the watch with a rescan every `rescan` seconds (its first scan
    /// runs at once) and its default log level; returns once it has logged
    /// that it started, so that its file watch is in place.
    fn start(sb: &Sandbox, rescan: &str) -> Watch {
        let mut cmd = sb.cmd();
        cmd.arg("watch")
            .env_remove("RUST_LOG")
            .env("SELF_DEPLOY_WATCH_RESCAN_SECS", rescan)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("watch starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        let watch = Watch {
            child,
            log,
            reader: Some(reader),
        };
        let start = Instant::now();
        while !watch.log().contains("watch: started") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "watch did not start: {}",
                watch.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        watch
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits (bounded) for the exit: its code and log.
    fn sigterm(mut self) -> (Option<i32>, String) {
        // SAFETY: signalling a child process this test started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return (status.code(), self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "watch did not stop on SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // A failing test leaves no watch running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The item's history, one JSON value per entry, oldest first.
fn history(sb: &Sandbox, item: &str) -> Vec<serde_json::Value> {
    let out = sb.run(&[
        "history",
        "--repo",
        "orchestrator",
        "--work-item",
        item,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Whether process `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
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

/// The watch and a stage engine polling at the same time: exactly one
/// finalize (one finalizer commit), whoever wins; SIGTERM stops the watch.
#[test]
fn watch_and_racing_polls_finalize_once_and_watch_stops_on_sigterm() {
    let sb = Sandbox::new();
    let hold = Hold::hook(&sb);
    dispatch_held(&sb, "ORCH-50");
    let watch = Watch::start(&sb, "1");

    hold.release();
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
    wait_for(&sb, "ORCH-50", "finalized_success", Duration::from_secs(15));
    racer.join().unwrap();
    let commits = git(&sb.remote(), &["log", "--format=%an", BRANCH]);
    assert_eq!(
        commits.lines().filter(|l| *l == "deploy-finalizer").count(),
        1,
        "{commits}"
    );

    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("watch: SIGTERM") && log.contains("watch: stopped"),
        "{log}"
    );
}

/// File events alone drive the watch: no poll races it, its only scan ran
/// at its start (before the result; the next is an hour away), and the
/// watch itself (the history's actor) finalizes the item within 10 s of the
/// host writing the result.
#[test]
fn watch_alone_finalizes_on_the_result_file_event() {
    let sb = Sandbox::new();
    let hold = Hold::hook(&sb);
    dispatch_held(&sb, "ALONE-1");
    let watch = Watch::start(&sb, "3600");
    let result = sb.result_file("ALONE-1");
    assert!(!result.exists());

    // The hook ends; the host wrapper writes the result.
    hold.release();
    assert!(
        support_wait_for(Duration::from_secs(20), || result.is_file()),
        "the host wrote no result"
    );
    // Finalized, and recorded (the history line comes last, after the push).
    let written = Instant::now();
    let finalized = |e: &serde_json::Value| e["to"] == "finalized_success";
    assert!(
        support_wait_for(Duration::from_secs(10), || history(&sb, "ALONE-1")
            .iter()
            .any(finalized)),
        "not finalized within 10 s of the result: {}; {}",
        state(&sb, "ALONE-1"),
        watch.log()
    );
    let took = written.elapsed();
    let entries = history(&sb, "ALONE-1");
    let last = entries.last().unwrap();
    assert_eq!(
        (
            last["actor"].as_str(),
            last["event"].as_str(),
            last["to"].as_str()
        ),
        (Some("watch"), Some("poll"), Some("finalized_success")),
        "{entries:#?}"
    );
    // Nobody else polled it.
    assert_eq!(
        entries.iter().filter(|e| e["event"] == "poll").count(),
        1,
        "{entries:#?}"
    );

    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("the watch finalized {took:?} after the result was written");
}

#[test]
fn watch_survives_garbage_and_vanished_items_and_rescans() {
    let sb = Sandbox::new();
    let _hold = Hold::hook(&sb);
    // A result written before the watch starts is found by the first scan.
    dispatch_held(&sb, "EARLY-1");
    host_writes_result(&sb, "EARLY-1", "0\n");
    let mut watch = Watch::start(&sb, "1");
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

    // An item that was due (its result written) and whose state directory
    // vanishes before the watch gets to it is no reason to stop. The test
    // holds the item's lock, so the watch, having seen the item due, waits
    // for it (its lock file open); the directory goes, then the lock.
    dispatch_held(&sb, "GONE-1");
    let repos_dir = sb.state_root();
    let paths = ItemPaths::new(
        &repos_dir,
        &RepoName::new("orchestrator").unwrap(),
        &WorkItem::new("GONE-1").unwrap(),
    );
    let lock = ItemLock::acquire(&paths.lock_file, Duration::from_secs(10)).unwrap();
    host_writes_result(&sb, "GONE-1", "0\n");
    let pid = watch.pid();
    assert!(
        support_wait_for(Duration::from_secs(10), || has_open(pid, &paths.lock_file)),
        "the watch never went for the due item: {}",
        watch.log()
    );
    fs::remove_dir_all(sb.item_dir("GONE-1")).unwrap();
    drop(lock);
    // The watch polled what was left (nothing) and recorded it.
    assert!(
        support_wait_for(Duration::from_secs(10), || {
            history(&sb, "GONE-1")
                .last()
                .is_some_and(|e| e["actor"] == "watch")
        }),
        "{:#?}\n{}",
        history(&sb, "GONE-1"),
        watch.log()
    );
    let last = history(&sb, "GONE-1").pop().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["from"].as_str(),
            last["outcome"].as_str()
        ),
        (Some("poll"), Some("idle"), Some("illegal")),
        "{last}"
    );
    assert!(!sb.item_dir("GONE-1").exists());

    // And goes on with the next item.
    dispatch_held(&sb, "LATE-1");
    host_writes_result(&sb, "LATE-1", "1\n");
    wait_for(&sb, "LATE-1", "finalized_failed", Duration::from_secs(15));
    assert!(watch.running(), "watch exited: {}", watch.log());
    let (code, log) = watch.sigterm();
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
    // It names what it did.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "orchestrator/ONCE-1: finalized (finalized_success)\nfinalized 1, revoked 0, errors 0\n"
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

/// CPU time (user + system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which may hold spaces: utime and
    // stime are the 14th and 15th of the line, in clock ticks.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The watch reacts to what writers do, never to its own reads: an item
/// that keeps its result after finalizing, read at every rescan, costs
/// nothing; an item whose poll fails (its worktree gone) is retried with a
/// growing delay and recorded once, not thousands of times; an item that
/// completes meanwhile is finalized and logged at the default level.
#[test]
fn watch_stays_quiet_on_its_own_reads_and_backs_off_a_failing_poll() {
    let sb = Sandbox::new();
    let _hold = Hold::hook(&sb);

    // Finalized, its result left in place.
    dispatch_held(&sb, "DONE-1");
    host_writes_result(&sb, "DONE-1", "0\n");
    assert_eq!(
        sb.poll_until_final("DONE-1", &[])["to"],
        "finalized_success"
    );
    let kept = sb.result_file("DONE-1");
    assert!(kept.is_file(), "the finalized item keeps its result");

    // Due, but its worktree is gone: every poll fails.
    let wt = sb.root().join("broken-worktree");
    git(
        sb.root(),
        &[
            "clone",
            "-q",
            "-b",
            BRANCH,
            sb.remote().to_str().unwrap(),
            wt.to_str().unwrap(),
        ],
    );
    sb.request_approve("BROKEN-1");
    let (code, r) = sb.event_json(
        "approved",
        "BROKEN-1",
        &["--branch", BRANCH, "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!(
        (code, r["outcome"].as_str()),
        (0, Some("transitioned")),
        "{r}"
    );
    let claimed = || {
        sb.dispatch_id("BROKEN-1").is_some_and(|id| {
            sb.item_dir("BROKEN-1")
                .join(format!("claimed-{id}"))
                .is_file()
        })
    };
    assert!(support_wait_for(Duration::from_secs(10), claimed));
    host_writes_result(&sb, "BROKEN-1", "0\n");
    fs::remove_dir_all(&wt).unwrap();
    let before = history(&sb, "BROKEN-1").len();

    dispatch_held(&sb, "LIVE-1");
    let watch = Watch::start(&sb, "1");
    let pid = watch.pid();
    let cpu_at_start = cpu_time(pid);
    let started = Instant::now();

    // One completes while the watch runs.
    thread::sleep(Duration::from_millis(500));
    host_writes_result(&sb, "LIVE-1", "0\n");
    wait_for(&sb, "LIVE-1", "finalized_success", Duration::from_secs(15));
    // Several rescans, each reading every item.
    thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    let cpu = cpu_time(pid) - cpu_at_start;
    let wall = started.elapsed();

    let failing: Vec<_> = history(&sb, "BROKEN-1").split_off(before);
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    eprintln!(
        "watch: {cpu:?} of CPU in {wall:?}; {} history entries for the failing item",
        failing.len()
    );
    // A spinning watch uses a whole core: here, most of the wall time.
    assert!(
        cpu < wall / 10,
        "the watch used {cpu:?} of CPU in {wall:?}\n{log}"
    );
    assert!(
        !failing.is_empty() && failing.len() <= 2,
        "the failing poll's history: {failing:#?}"
    );
    assert!(
        failing
            .iter()
            .all(|e| e["actor"] == "watch" && e["outcome"] == "error"),
        "{failing:#?}"
    );
    assert_eq!(state(&sb, "DONE-1"), "finalized_success");
    assert_eq!(state(&sb, "BROKEN-1"), "initiated");
    // What the operator sees without RUST_LOG: a start line, the finalize,
    // the failing poll once (not at every retry), the stop.
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("watch: started on "), 1, "{log}");
    assert!(log.contains("(3 work items, transport "), "{log}");
    assert_eq!(
        lines("watch: orchestrator/LIVE-1 finalized: finalized_success"),
        1,
        "{log}"
    );
    assert_eq!(
        lines("watch: orchestrator/BROKEN-1: poll failed: "),
        1,
        "{log}"
    );
    assert_eq!(lines("watch: orchestrator/DONE-1"), 0, "{log}");
    // Polls of the failing item: the first, then one after 5 s (the
    // backoff), not one per rescan.
    let errors: usize = log
        .split("watch: stopped (finalized 1, revoked 0, errors ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop line: {log}"));
    assert!((1..=2).contains(&errors), "{errors} failed polls\n{log}");

    // The same failure again, by anyone, adds nothing; another caller's is
    // recorded.
    let entries = history(&sb, "BROKEN-1").len();
    for _ in 0..3 {
        let out = sb.event("poll", "BROKEN-1", &["--actor", "ops"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    let after = history(&sb, "BROKEN-1");
    assert_eq!(after.len(), entries + 1, "{after:#?}");
    assert_eq!(after.last().unwrap()["actor"], "ops");
}

/// An item due for a poll whose worktree is gone: every poll fails the
/// same way. Its result is in place (the hook ran), then the worktree goes.
fn failing_item(sb: &Sandbox, item: &str) {
    let wt = sb.root().join(format!("wt-{item}"));
    git(
        sb.root(),
        &[
            "clone",
            "-q",
            "-b",
            BRANCH,
            sb.remote().to_str().unwrap(),
            wt.to_str().unwrap(),
        ],
    );
    sb.request_approve(item);
    let (code, r) = sb.event_json(
        "approved",
        item,
        &["--branch", BRANCH, "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    sb.wait_for_result(item);
    fs::remove_dir_all(&wt).unwrap();
}

/// The failed polls the watch counted, from its stop line.
fn errors_of(log: &str) -> usize {
    log.split(", errors ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop line: {log}"))
}

/// At its default level the watch says a poll fails when the failure is
/// new, not at every retry: after the first attempt and the retry 5 s
/// later, the failure appears once in the log, whoever logs it.
#[test]
fn watch_default_log_names_a_failing_poll_once_across_retries() {
    let sb = Sandbox::new();
    failing_item(&sb, "RETRY-1");
    let watch = Watch::start(&sb, "1");
    assert!(
        support_wait_for(Duration::from_secs(10), || watch
            .log()
            .contains("RETRY-1: poll failed")),
        "{}",
        watch.log()
    );
    // The retry after the first backoff (5 s), and a rescan after it.
    thread::sleep(Duration::from_millis(7500));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(errors_of(&log) >= 2, "no retry happened: {log}");
    let mentions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RETRY-1") && l.contains("does not exist"))
        .collect();
    assert_eq!(
        mentions.len(),
        1,
        "the same failure logged at every retry:\n{}",
        mentions.join("\n")
    );
}

/// A result file of a failing item written again and again (a host that
/// retries its wrapper, or anyone with the share) makes the watch poll
/// again, as designed; the failure is the same one, so it is not a new
/// warning each time.
#[test]
fn watch_a_rewritten_result_of_a_failing_item_is_not_a_new_failure_each_time() {
    let sb = Sandbox::new();
    failing_item(&sb, "REWRITE-1");
    let watch = Watch::start(&sb, "3600");
    assert!(
        support_wait_for(Duration::from_secs(10), || watch
            .log()
            .contains("REWRITE-1: poll failed")),
        "{}",
        watch.log()
    );
    let result = sb.result_file("REWRITE-1");
    for _ in 0..10 {
        fs::write(&result, "0\n").unwrap();
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_secs(1));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(errors_of(&log) >= 2, "the rewrites caused no poll: {log}");
    let warned = log
        .lines()
        .filter(|l| l.contains("watch: orchestrator/REWRITE-1: poll failed:"))
        .count();
    assert_eq!(warned, 1, "one warning per rewrite of the result:\n{log}");
}

/// One item whose history is a FIFO (on the shared mount, like the state
/// files) must not stop the watch for every other item.
#[test]
fn watch_once_goes_on_when_one_item_s_history_is_a_fifo() {
    let sb = Sandbox::new();
    sb.approve_item("FIFO-1");
    sb.approve_item("FIFO-2");
    sb.wait_for_result("FIFO-1");
    sb.wait_for_result("FIFO-2");
    let history = sb.history_path("FIFO-1");
    fs::remove_file(&history).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&history)
        .status()
        .unwrap();
    assert!(made.success());

    let mut child = sb
        .cmd()
        .args(["watch", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = support_wait_for(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        ended,
        "watch --once waited on FIFO-1's history and never got to FIFO-2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&sb, "FIFO-2"), "finalized_success", "{out:?}");
}

/// The inotify watches the process holds (one per watched directory).
fn inotify_watches(pid: u32) -> usize {
    let mut count = 0;
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            count += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    count
}

/// The inodes of the directories the process's inotify watches are on.
fn watched_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    let mut inodes = std::collections::BTreeSet::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify")) {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            // `inotify wd:1 ino:1a2b sdev:... mask:...`, the inode in hex.
            for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
                let ino = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .unwrap_or_else(|| panic!("no inode in {line}"));
                inodes.insert(ino);
            }
        }
    }
    inodes
}

fn inodes_of(dirs: &[&Path]) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    dirs.iter()
        .map(|d| fs::symlink_metadata(d).unwrap().ino())
        .collect()
}

/// Exactly REPOS_DIR, each repo's state directory and each item a result
/// may still come to are watched: not the watch's own files, not a
/// worktree, not what a symlink named like a repo points to; an item that
/// reached its verdict is no longer watched once the next rescan sees it.
#[test]
fn watch_watches_exactly_the_state_directories_a_result_can_reach() {
    let sb = Sandbox::new();
    let hold = Hold::hook(&sb);
    dispatch_held(&sb, "SET-1");
    let state = sb.state_root();
    fs::create_dir_all(state.join(".worktrees/orchestrator/SET-1/src")).unwrap();
    let elsewhere = sb.root().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.join(".deploy-state-linked")).unwrap();
    let repo_dir = state.join(".deploy-state-orchestrator");
    let item_dir = sb.item_dir("SET-1");
    assert!(state.join(".selfdeploy").is_dir());

    let watch = Watch::start(&sb, "1");
    let pid = watch.pid();
    let live = inodes_of(&[&state, &repo_dir, &item_dir]);
    assert!(
        support_wait_for(Duration::from_secs(10), || watched_inodes(pid) == live),
        "watched {:?}, wanted {live:?}\n{}",
        watched_inodes(pid),
        watch.log()
    );

    hold.release();
    wait_for(&sb, "SET-1", "finalized_success", Duration::from_secs(15));
    let done = inodes_of(&[&state, &repo_dir]);
    assert!(
        support_wait_for(Duration::from_secs(10), || watched_inodes(pid) == done),
        "watched {:?} after the verdict, wanted {done:?}\n{}",
        watched_inodes(pid),
        watch.log()
    );
    // And it stays so, rescan after rescan.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(watched_inodes(pid), done, "{}", watch.log());
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
}

/// The default worktree of an item is `{repos_dir}/.worktrees/{repo}/
/// {work_item}`: checkouts, build output and dependencies live under
/// REPOS_DIR. The watch needs the state directories; watching every
/// directory of every worktree costs an inotify watch each (the per-user
/// limit is often 8192) and wakes the watch at every file a build writes.
#[test]
fn watch_watches_the_state_directories_not_every_worktree_under_repos_dir() {
    let sb = Sandbox::new();
    sb.request_approve("TREE-1");
    let deps = sb
        .state_root()
        .join(".worktrees/orchestrator/TREE-1/node_modules");
    for i in 0..2000 {
        fs::create_dir_all(deps.join(format!("pkg-{i}/lib"))).unwrap();
    }
    let watch = Watch::start(&sb, "3600");
    let watches = inotify_watches(watch.pid());
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        watches < 100,
        "the watch holds {watches} inotify watches for one work item"
    );
}

/// A hook that writes its progress (every line appended to hook.log in the
/// item's state directory) is no result: the watch has nothing to do and
/// must stay idle, not wake at each line.
#[test]
fn watch_stays_idle_while_a_hook_writes_its_log() {
    let sb = Sandbox::new();
    let _hold = Hold::hook(&sb);
    dispatch_held(&sb, "CHATTY-1");
    let watch = Watch::start(&sb, "3600");
    let pid = watch.pid();
    let log_file = sb.item_dir("CHATTY-1").join("hook.log");
    let cpu_at_start = cpu_time(pid);
    let started = Instant::now();
    {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new().append(true).open(&log_file).unwrap();
        while started.elapsed() < Duration::from_secs(5) {
            f.write_all(b"pulling layer 3/17: 42%\n").unwrap();
            thread::sleep(Duration::from_micros(500));
        }
    }
    let cpu = cpu_time(pid) - cpu_at_start;
    let wall = started.elapsed();
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("watch: {cpu:?} of CPU in {wall:?} of hook output");
    assert!(
        cpu < wall / 10,
        "the watch used {cpu:?} of CPU in {wall:?} while the hook wrote its log"
    );
}

/// The share goes away under a running watch (an unmount, a remount): every
/// rescan fails the same way. The operator is told once, and told when it
/// is back, not every rescan interval for as long as it lasts.
#[test]
fn watch_logs_a_missing_repos_dir_once_and_its_return() {
    let sb = Sandbox::new();
    sb.request_approve("MOUNT-1");
    let watch = Watch::start(&sb, "1");
    let away = sb.root().join("state.unmounted");
    fs::rename(sb.state_root(), &away).unwrap();
    thread::sleep(Duration::from_millis(5500));
    fs::rename(&away, sb.state_root()).unwrap();
    thread::sleep(Duration::from_millis(2500));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rescan failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the same rescan failure at every rescan:\n{log}"
    );
    // The line says what failed and why, the cause included.
    let state = sb.state_root();
    assert!(
        failed[0].contains(&format!(
            "rescan failed: cannot list {}: No such file or directory",
            state.display()
        )),
        "{log}"
    );
    // Every failed rescan counts in the stop line, though logged once.
    assert!(errors_of(&log) >= 1, "{log}");
    let after = log.split("rescan failed").last().unwrap();
    assert!(
        after.lines().skip(1).any(|l| l.contains("INFO watch: ")
            && !l.contains("SIGTERM")
            && !l.contains("stopped")),
        "nothing says the rescans work again:\n{log}"
    );
}

/// The watch starts on an empty REPOS_DIR and never rescans: the first
/// repo's directory, then the item's, appear under it and are watched as
/// they appear, so the result of a deploy approved afterwards is finalized
/// by its file event alone. So is a later item's, whose directory appears
/// in a repo's directory already watched.
#[test]
fn watch_follows_repos_and_items_that_appear_after_it_started() {
    let sb = Sandbox::new();
    let names: Vec<_> = fs::read_dir(sb.state_root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".selfdeploy"], "only the identity is there");
    let watch = Watch::start(&sb, "3600");
    // Its one scan, at the start, has run.
    thread::sleep(Duration::from_millis(300));
    let finalized = |e: &serde_json::Value| e["to"] == "finalized_success" && e["actor"] == "watch";
    for item in ["NEW-1", "NEW-2"] {
        let hold = Hold::hook(&sb);
        dispatch_held(&sb, item);
        hold.release();
        assert!(
            support_wait_for(Duration::from_secs(15), || history(&sb, item)
                .iter()
                .any(finalized)),
            "{item} not finalized by the watch: {}; {}",
            state(&sb, item),
            watch.log()
        );
    }
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    for item in ["NEW-1", "NEW-2"] {
        assert!(
            log.contains(&format!(
                "watch: orchestrator/{item} finalized: finalized_success"
            )),
            "{log}"
        );
    }
}

/// Approves `item` on a host whose wrapper never runs; returns the id of the
/// dispatch, whose ticket `dispatch-<id>` is left unclaimed.
fn dispatch_unclaimed(sb: &Sandbox, item: &str) -> String {
    sb.approve_item(item);
    let id = sb
        .dispatch_id(item)
        .expect("initiated records the dispatch");
    assert_eq!(
        sb.protocol_files(item),
        [format!("dispatch-{id}")],
        "{item}: the launch left its ticket unclaimed"
    );
    id
}

/// The item's last history entry as (actor, event, from, to, outcome).
fn last_entry(sb: &Sandbox, item: &str) -> (String, String, String, String, String) {
    let entries = history(sb, item);
    let last = entries.last().expect("a history entry");
    let field = |k: &str| last[k].as_str().unwrap_or("").to_owned();
    (
        field("actor"),
        field("event"),
        field("from"),
        field("to"),
        field("outcome"),
    )
}

/// Waits (bounded) for a history entry by the watch that went to `to`.
fn watch_recorded(sb: &Sandbox, watch: &Watch, item: &str, to: &str, limit: Duration) {
    let by_watch = |e: &serde_json::Value| e["actor"] == "watch" && e["to"] == to;
    assert!(
        support_wait_for(limit, || history(sb, item).iter().any(by_watch)),
        "the watch did not take {item} to {to} within {limit:?}: {}; {:#?}\n{}",
        state(sb, item),
        history(sb, item),
        watch.log()
    );
}

/// Nothing but its clock makes an unclaimed dispatch due: no result comes
/// and nobody else polls. The watch alone revokes it once the claim timeout
/// has passed, so that a human may approve again.
#[test]
fn watch_alone_revokes_a_dispatch_unclaimed_past_the_claim_timeout() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "2".into());
    let item = "UNCLAIMED-1";
    let id = dispatch_unclaimed(&sb, item);
    let watch = Watch::start(&sb, "1");

    watch_recorded(
        &sb,
        &watch,
        item,
        "approve_requested",
        Duration::from_secs(10),
    );
    assert_eq!(
        last_entry(&sb, item),
        (
            "watch".into(),
            "poll".into(),
            "initiated".into(),
            "approve_requested".into(),
            "dispatch_failed".into()
        )
    );
    let reason = history(&sb, item).pop().unwrap()["reason"].clone();
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains(&format!("did not claim dispatch {id}"))),
        "{reason}"
    );
    assert_eq!(sb.protocol_files(item), [format!("revoked-{id}")]);
    assert_eq!(state(&sb, item), "approve_requested");
    // Before the timeout the item was not due: no deferred poll recorded.
    let polls = history(&sb, item)
        .iter()
        .filter(|e| e["event"] == "poll")
        .count();
    assert_eq!(polls, 1, "{:#?}", history(&sb, item));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "watch: orchestrator/{item}: dispatch revoked: the host did not claim dispatch {id}"
        )),
        "{log}"
    );
    assert_eq!(sb.hook_runs(), 0);
}

/// The host claims the dispatch just as its claim timeout passes: the
/// watch saw it overdue and went for the item's lock, which a stage engine
/// held meanwhile. Under the lock the poll finds the ticket claimed: the
/// run goes on, nothing is revoked, and the watch says it polled.
#[test]
fn watch_leaves_running_a_dispatch_claimed_while_it_waited_for_the_lock() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "1".into());
    let item = "CLAIMED-LATE-1";
    let id = dispatch_unclaimed(&sb, item);
    let paths = ItemPaths::new(
        &sb.state_root(),
        &RepoName::new("orchestrator").unwrap(),
        &WorkItem::new(item).unwrap(),
    );
    let lock = ItemLock::acquire(&paths.lock_file, Duration::from_secs(10)).unwrap();
    let watch = Watch::start(&sb, "1");
    let pid = watch.pid();
    assert!(
        support_wait_for(Duration::from_secs(10), || has_open(pid, &paths.lock_file)),
        "the watch never went for the overdue dispatch: {}",
        watch.log()
    );
    let dir = sb.item_dir(item);
    fs::rename(
        dir.join(format!("dispatch-{id}")),
        dir.join(format!("claimed-{id}")),
    )
    .unwrap();
    drop(lock);
    watch_recorded(&sb, &watch, item, "initiated", Duration::from_secs(10));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(state(&sb, item), "initiated");
    assert_eq!(sb.protocol_files(item), [format!("claimed-{id}")]);
    assert!(
        log.contains("watch: stopped (finalized 0, revoked 0, errors 0)"),
        "{log}"
    );
    assert!(!log.contains("dispatch revoked"), "{log}");
}

/// The engine stopped mid-dispatch and nothing will ever come for the
/// dispatch `initiated` names: its ticket was revoked (a failed launch) but
/// `initiated` was not cleared, or it was never written (stopped before
/// the launch). Neither a claim nor a result can arrive: the watch alone
/// hands each item back for approval.
#[test]
fn watch_once_hands_back_a_dispatch_revoked_or_never_ticketed() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    // Timeouts far away: only the ticket can make these items due.
    sb.set("SELF_DEPLOY_CLAIM_TIMEOUT_SECS", "3600".into());
    let revoked = dispatch_unclaimed(&sb, "CRASH-REVOKED");
    let dir = sb.item_dir("CRASH-REVOKED");
    fs::rename(
        dir.join(format!("dispatch-{revoked}")),
        dir.join(format!("revoked-{revoked}")),
    )
    .unwrap();
    let missing = dispatch_unclaimed(&sb, "CRASH-MISSING");
    fs::remove_file(
        sb.item_dir("CRASH-MISSING")
            .join(format!("dispatch-{missing}")),
    )
    .unwrap();
    for item in ["CRASH-REVOKED", "CRASH-MISSING"] {
        assert_eq!(state(&sb, item), "initiated");
    }

    let out = sb.run(&["watch", "--once"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.ends_with("finalized 0, revoked 2, errors 0\n"),
        "{stdout}"
    );
    for (item, id, why) in [
        ("CRASH-REVOKED", &revoked, "was revoked before it ran"),
        ("CRASH-MISSING", &missing, "has no ticket"),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!(
                "orchestrator/{item}: dispatch revoked (dispatch {id} {why}"
            ))),
            "{item}: {stdout}"
        );
        assert_eq!(state(&sb, item), "approve_requested", "{item}");
        assert_eq!(
            last_entry(&sb, item),
            (
                "watch".into(),
                "poll".into(),
                "initiated".into(),
                "approve_requested".into(),
                "dispatch_failed".into()
            ),
            "{item}"
        );
        assert!(!sb.item_dir(item).join("initiated").exists(), "{item}");
    }
    assert_eq!(
        sb.protocol_files("CRASH-REVOKED"),
        [format!("revoked-{revoked}")]
    );
    assert!(sb.protocol_files("CRASH-MISSING").is_empty());
}

/// The host claimed the dispatch, then went silent (the hook hangs, the
/// host died): no result file will ever wake the watch. Past the result
/// deadline the watch alone fails the deploy closed.
#[test]
fn watch_alone_fails_a_claimed_dispatch_past_the_result_deadline() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    sb.set("SELF_DEPLOY_RESULT_DEADLINE_SECS", "2".into());
    let item = "SILENT-1";
    let id = dispatch_unclaimed(&sb, item);
    // The host wrapper's claim, and then nothing.
    let dir = sb.item_dir(item);
    fs::rename(
        dir.join(format!("dispatch-{id}")),
        dir.join(format!("claimed-{id}")),
    )
    .unwrap();
    let watch = Watch::start(&sb, "1");

    watch_recorded(
        &sb,
        &watch,
        item,
        "finalized_failed",
        Duration::from_secs(10),
    );
    let entries = history(&sb, item);
    let last = entries.last().unwrap();
    assert_eq!(
        (
            last["actor"].as_str(),
            last["event"].as_str(),
            last["from"].as_str()
        ),
        (Some("watch"), Some("poll"), Some("initiated")),
        "{last}"
    );
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the result deadline is 2 s")),
        "{last}"
    );
    sb.assert_deploy_log(item, "FAILED", "timeout");
    assert_eq!(sb.finalized_json(item)["pushed"], true);
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "watch: orchestrator/{item} finalized: finalized_failed"
        )),
        "{log}"
    );
}

/// A host that writes its result under a temporary name and renames it into
/// place (as careful writers do) never closes a file named `result-<id>`:
/// the rename alone must wake the watch, whose next rescan is an hour away.
#[test]
fn watch_alone_finalizes_on_a_result_renamed_into_place() {
    let mut sb = Sandbox::new();
    sb.wrapper_never_runs();
    let item = "RENAMED-1";
    let id = dispatch_unclaimed(&sb, item);
    let dir = sb.item_dir(item);
    fs::rename(
        dir.join(format!("dispatch-{id}")),
        dir.join(format!("claimed-{id}")),
    )
    .unwrap();
    let watch = Watch::start(&sb, "3600");
    // Its one scan has run once it watches REPOS_DIR, the repo's directory
    // and the item's: a result placed before that is found by the scan,
    // which would prove nothing about the rename.
    let pid = watch.pid();
    assert!(
        support_wait_for(Duration::from_secs(10), || inotify_watches(pid) >= 3),
        "the watch never watched the item's directory: {} watches\n{}",
        inotify_watches(pid),
        watch.log()
    );

    let partial = dir.join(format!(".result-{id}.partial"));
    fs::write(&partial, "0\n").unwrap();
    fs::rename(&partial, sb.result_file(item)).unwrap();
    watch_recorded(
        &sb,
        &watch,
        item,
        "finalized_success",
        Duration::from_secs(10),
    );
    sb.assert_deploy_log(item, "SUCCESS", "0");
    let polls = history(&sb, item)
        .iter()
        .filter(|e| e["event"] == "poll")
        .count();
    assert_eq!(polls, 1, "{:#?}", history(&sb, item));
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
}

/// A push the remote refuses is retried after a delay (30 s at first,
/// doubling), not at every rescan: each attempt costs the item's lock, a
/// git push and the remote's time. The remote refuses every pack (its
/// `receive.maxInputSize`: a local remote's hooks never run), and a `git`
/// first on PATH counts the receive-packs the pushes start.
#[test]
fn watch_retries_a_refused_push_after_its_backoff_not_at_every_rescan() {
    let mut sb = Sandbox::new();
    let item = "REFUSED-1";
    let attempts = sb.root().join("push-attempts");
    git(&sb.remote(), &["config", "receive.maxInputSize", "1"]);
    let bin = sb.root().join("counting-bin");
    write_script(
        &bin,
        "git",
        &format!(
            "#!/bin/sh\ncase \"$*\" in *receive-pack*) echo attempt >> '{}';; esac\nexec '{}' \"$@\"\n",
            attempts.display(),
            tool("git")
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
    let count = || {
        fs::read_to_string(&attempts)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    sb.approve_item(item);
    sb.wait_for_result(item);
    // A stage engine's poll finalizes; the remote refuses the push.
    let (code, r) = sb.event_json("poll", item, &[]);
    assert_eq!(
        (code, r["condition"].as_str()),
        (0, Some("result 0, not pushed")),
        "{r}"
    );
    assert_eq!(count(), 1, "the finalize's push reached the remote");

    let watch = Watch::start(&sb, "1");
    // The watch retries the pending push at its first scan...
    assert!(
        support_wait_for(Duration::from_secs(10), || count() >= 2),
        "the watch never retried the push\n{}",
        watch.log()
    );
    // ...and not again within the first backoff, however many rescans (one
    // a second) pass.
    thread::sleep(Duration::from_secs(5));
    let seen = count();
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        seen, 2,
        "{seen} push attempts: the watch retried at every rescan\n{log}"
    );
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "watch: orchestrator/{item}: deploy log not pushed: "
            ))
        })
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].ends_with("retrying in 30s"), "{log}");
    assert_eq!(sb.finalized_json(item)["pushed"], false);
}

/// A deploy reset with --force while its hook runs: the watch alone (no
/// poll, no other event) records the run's verdict when its result lands,
/// once, without a poll line for the idle item; status shows it recorded.
#[test]
fn watch_alone_records_the_verdict_of_a_run_a_reset_kept() {
    let sb = Sandbox::new();
    let hold = Hold::hook(&sb);
    dispatch_held(&sb, "KEPT-1");
    let id = sb.dispatch_id("KEPT-1").unwrap();
    let (code, r) = sb.event_json("reset", "KEPT-1", &["--force"]);
    assert_eq!((code, r["to"].as_str()), (0, Some("idle")), "{r}");
    assert!(sb.item_dir("KEPT-1").join(format!("reset-{id}")).is_file());
    let watch = Watch::start(&sb, "3600");
    hold.release();
    let late = |e: &serde_json::Value| e["event"] == "late-result";
    assert!(
        support_wait_for(Duration::from_secs(15), || history(&sb, "KEPT-1")
            .iter()
            .any(late)),
        "the watch did not record the kept run's verdict: {}",
        watch.log()
    );
    let entries = history(&sb, "KEPT-1");
    let recorded: Vec<_> = entries.iter().filter(|e| late(e)).collect();
    assert_eq!(recorded.len(), 1, "{entries:#?}");
    assert_eq!(recorded[0]["actor"], "watch", "{entries:#?}");
    assert!(
        recorded[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("dispatch {id}")),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e["event"] != "poll"),
        "an idle item gets no poll: {entries:#?}"
    );
    let st = sb.status_json("KEPT-1");
    assert_eq!(st["kept_runs"][0]["recorded"], true, "{st}");
    assert_eq!(st["kept_runs"][0]["verdict"], "SUCCESS", "{st}");
    let (code, log) = watch.sigterm();
    assert_eq!(code, Some(0), "{log}");
}
