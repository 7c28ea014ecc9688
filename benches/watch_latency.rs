//! How long `watch` takes from a `result` being written to the work item
//! being finalized (deploy log written, committed, pushed, marker written),
//! with 10,000 other deploys in flight (initiated, claimed, no result: one
//! directory watch each). Target: 100 ms at p95. Run with
//! `cargo bench --bench watch_latency` (`-- --quick`: 100 in flight, 5
//! results, nothing asserted about time).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use selfdeploy::config::Settings;
use selfdeploy::contract::markers::{self, InitiatedRecord};
use selfdeploy::watch;

const ITEMS: usize = 30;
const IN_FLIGHT: usize = 10_000;
const TARGET: Duration = Duration::from_millis(100);

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@bench.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@bench.invalid")
        .output()
        .expect("git runs")
        .status
        .success();
    assert!(ok, "git {args:?}");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (items, in_flight) = if quick { (5, 100) } else { (ITEMS, IN_FLIGHT) };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (state, worktree, remote, home) = (
        root.join("state"),
        root.join("wt"),
        root.join("remote.git"),
        root.join("home"),
    );
    fs::create_dir_all(&state).unwrap();
    fs::create_dir_all(&home).unwrap();
    selfdeploy::store::identity::init(&state, "bench", "2026-01-01T00:00:00Z").unwrap();
    git(root, &["init", "-q", "--bare", remote.to_str().unwrap()]);
    git(
        root,
        &[
            "clone",
            "-q",
            remote.to_str().unwrap(),
            worktree.to_str().unwrap(),
        ],
    );
    git(&worktree, &["checkout", "-q", "-b", "deploy/bench"]);
    fs::write(worktree.join("x"), "x").unwrap();
    git(&worktree, &["add", "x"]);
    git(&worktree, &["commit", "-q", "-m", "x"]);
    git(&worktree, &["push", "-q", "origin", "deploy/bench"]);

    let settings = Settings::with_overrides(&[
        ("REPOS_DIR", state.to_str().unwrap()),
        ("AGENT_HOME_DIR", home.to_str().unwrap()),
        ("SELF_DEPLOY_WATCH_RESCAN_SECS", "3600"),
    ])
    .unwrap();
    let item_dir = |i: usize| state.join(format!(".deploy-state-orchestrator/BENCH-{i}"));
    for i in 0..items + in_flight {
        fs::create_dir_all(item_dir(i)).unwrap();
        let id = format!("{i:016x}");
        let record = InitiatedRecord {
            dispatch_id: id.clone(),
            approved_by: "bench".into(),
            approved_at: "2026-01-01T00:00:00Z".into(),
            dispatched_at: None,
            boot_id: None,
            dispatched_boottime_ms: None,
            branch: Some("deploy/bench".into()),
            worktree: worktree.to_string_lossy().into_owned(),
            revision: None,
            transport: selfdeploy::config::Transport::by_name("local").unwrap(),
            argv: Vec::new(),
        };
        fs::write(item_dir(i).join("initiated"), markers::encode(&record)).unwrap();
        // The host claimed the ticket: a running deploy.
        fs::write(item_dir(i).join(format!("claimed-{id}")), "").unwrap();
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = thread::spawn(move || {
        watch::block_on(watch::run(settings, async {
            let _ = stop_rx.await;
        }))
    });
    // Its first rescan (every item looked at, each live one watched) is done
    // when the watch has a directory watch per item.
    let start = Instant::now();
    thread::sleep(Duration::from_millis(300));
    while inotify_watches() < items + in_flight {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first rescan never ended"
        );
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "watch: first rescan of {} items done within {:?}",
        items + in_flight,
        start.elapsed()
    );

    let mut latencies = Vec::new();
    for i in 0..items {
        let start = Instant::now();
        fs::write(item_dir(i).join(format!("result-{i:016x}")), "0\n").unwrap();
        while !item_dir(i).join("finalized").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "item {i} never finalized"
            );
            thread::sleep(Duration::from_micros(200));
        }
        latencies.push(start.elapsed());
    }
    let _ = stop_tx.send(());
    let stats = watcher.join().unwrap().unwrap().unwrap();
    assert_eq!(stats.finalized, items);

    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let (p50, p95, max) = (pick(0.5), pick(0.95), *latencies.last().unwrap());
    println!(
        "watch latency, result written -> finalized, {items} items with {in_flight} more in flight (git commit and push included):"
    );
    println!("  p50 {p50:?}  p95 {p95:?}  max {max:?}");
    println!(
        "  target {TARGET:?} at p95: {}",
        if p95 <= TARGET { "met" } else { "MISSED" }
    );
}

/// The inotify watches this process holds.
fn inotify_watches() -> usize {
    let mut n = 0;
    for fd in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_inotify =
            fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify");
        if is_inotify {
            let info = fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            n += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    n
}
