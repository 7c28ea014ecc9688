//! Whole-process costs, each beside its floor: the same durable work done by
//! a tiny program that does nothing else (this bench binary, run in a floor
//! mode), measured in the same run on the same disk.
//!
//! - `event`: `selfdeploy event request-approve` on a new item, against the
//!   lock, the new item directory made durable, one atomic marker write and
//!   one history append with fdatasync (and its directory, the file being new).
//! - `status`: `selfdeploy status --all --json` over N items (a quarter in
//!   each state), against one core listing the same directories and reading
//!   the same files; with the peak RSS of each.
//! - `startup`: `selfdeploy --version` against `/bin/true`.
//!
//! `cargo bench --bench process` (all, full size), `... -- event`,
//! `... -- status --items 1000000`, `... -- --quick` (a few iterations, for
//! CI: asserts nothing about time).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfdeploy::config::Transport;
use selfdeploy::contract::hook_result::Verdict;
use selfdeploy::contract::markers::{self, ApproveRecord, FinalizedRecord, InitiatedRecord};

const BIN: &str = env!("CARGO_BIN_EXE_selfdeploy");
const REPO: &str = "orchestrator";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--floor-event") => return floor_event(Path::new(&args[1]), &args[2]),
        Some("--floor-status") => return floor_status(Path::new(&args[1])),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let items = args
        .iter()
        .position(|a| a == "--items")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["event", "status", "startup"].contains(a))
        .collect();
    let all = wanted.is_empty();
    println!("machine: {} cores; {}", cores(), kernel());
    if all || wanted.contains(&"startup") {
        startup(if quick { 5 } else { 300 });
    }
    if all || wanted.contains(&"event") {
        event(if quick { 5 } else { 300 });
    }
    if all || wanted.contains(&"status") {
        status(
            items.unwrap_or(if quick { 2_000 } else { 100_000 }),
            if quick { 1 } else { 5 },
        );
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |k| format!("Linux {}", k.trim()))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `cmd` to its end with stdout discarded: the wall time and the peak
/// RSS (KiB) of the process.
fn measure(cmd: &mut Command) -> (Duration, i64) {
    let (took, rss, _) = measure_cpu(cmd);
    (took, rss)
}

/// [`measure`], and the CPU time (user and system) the process used.
fn measure_cpu(cmd: &mut Command) -> (Duration, i64, Duration) {
    let start = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, with its rusage
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let took = start.elapsed();
    assert!(pid > 0 && libc::WIFEXITED(status), "{cmd:?} did not exit");
    assert!(
        [0, 1].contains(&libc::WEXITSTATUS(status)),
        "{cmd:?} exited {}",
        libc::WEXITSTATUS(status)
    );
    let cpu = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        took,
        usage.ru_maxrss,
        cpu(usage.ru_utime) + cpu(usage.ru_stime),
    )
}

/// CPU time (user and system) this process has used so far.
fn process_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let cpu = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    cpu(usage.ru_utime) + cpu(usage.ru_stime)
}

fn selfdeploy(repos_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REPOS_DIR", repos_dir)
        .current_dir(repos_dir);
    cmd
}

fn floor(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(args);
    cmd
}

fn side_by_side(what: &str, ours: Duration, floor: Duration, floor_name: &str) {
    println!(
        "{what:<44} {:>10}   floor {:>10} ({floor_name})   ratio {:.2}x",
        ms(ours),
        ms(floor),
        ours.as_secs_f64() / floor.as_secs_f64()
    );
}

fn startup(runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..runs {
        ours.push(measure(selfdeploy(dir.path()).arg("--version")).0);
        floor.push(measure(&mut Command::new("/bin/true")).0);
    }
    side_by_side(
        "selfdeploy --version",
        median(ours),
        median(floor),
        "/bin/true",
    );
}

fn event(runs: usize) {
    let dir = tempfile::tempdir_in(
        std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    )
    .unwrap();
    let ours_dir = dir.path().join("ours");
    let floor_dir = dir.path().join("floor");
    for d in [&ours_dir, &floor_dir] {
        fs::create_dir_all(d).unwrap();
        selfdeploy::store::identity::init(d, "bench", "2026-01-01T00:00:00Z").unwrap();
        // The per-repo directories exist, as on any installation that ran once.
        selfdeploy(d)
            .args([
                "event",
                "request-approve",
                "--repo",
                REPO,
                "--work-item",
                "W-0",
            ])
            .output()
            .unwrap();
    }
    let mut ours = Vec::new();
    let mut floors = Vec::new();
    for i in 1..=runs {
        let item = format!("W-{i}");
        // Interleaved, so that both see the same disk and the same load.
        ours.push(
            measure(selfdeploy(&ours_dir).args([
                "event",
                "request-approve",
                "--repo",
                REPO,
                "--work-item",
                &item,
                "--actor",
                "bench",
            ]))
            .0,
        );
        floors.push(
            measure(&mut floor(&[
                "--floor-event",
                floor_dir.to_str().unwrap(),
                &item,
            ]))
            .0,
        );
    }
    side_by_side(
        "event request-approve (new item)",
        median(ours),
        median(floors),
        "lock, mkdir, marker, history",
    );
}

/// The durable writes `request-approve` needs on a new item, and nothing else.
fn floor_event(root: &Path, item: &str) {
    let own = root.join(".selfdeploy");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(own.join("locks").join(REPO).join(format!("{item}.lock")))
        .unwrap();
    lock.lock().unwrap();
    let repo_dir = root.join(format!(".deploy-state-{REPO}"));
    let state = repo_dir.join(item);
    fs::create_dir(&state).unwrap();
    File::open(&repo_dir).unwrap().sync_all().unwrap();
    let record = markers::encode(&ApproveRecord {
        requested_by: "bench".into(),
        requested_at: "2026-01-01T00:00:00Z".into(),
    });
    let tmp = state.join(".~tmp.floor");
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .unwrap();
    f.write_all(record.as_bytes()).unwrap();
    f.sync_all().unwrap();
    fs::rename(&tmp, state.join("approve-requested")).unwrap();
    File::open(&state).unwrap().sync_all().unwrap();
    let history_dir = own.join("history").join(REPO);
    let mut h = OpenOptions::new()
        .append(true)
        .create(true)
        .open(history_dir.join(format!("{item}.jsonl")))
        .unwrap();
    h.write_all(br#"{"time":"2026-01-01T00:00:00Z","actor":"bench","event":"request-approve","from":"idle","to":"approve_requested","outcome":"transitioned","reason":null,"effects":["write_marker"]}
"#).unwrap();
    h.sync_data().unwrap();
    File::open(&history_dir).unwrap().sync_all().unwrap();
}

fn status(items: usize, runs: usize) {
    let dir = tempfile::tempdir_in(
        std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
    )
    .unwrap();
    let root = dir.path();
    let made = Instant::now();
    generate(root, items);
    selfdeploy::store::identity::init(root, "bench", "2026-01-01T00:00:00Z").unwrap();
    eprintln!("status: {items} items generated in {:.1?}", made.elapsed());
    let mut ours = Vec::new();
    let mut floors = Vec::new();
    let (mut ours_rss, mut floor_rss) = (0, 0);
    // Warm the page cache first, as an operator's second look would be.
    measure(&mut floor(&["--floor-status", root.to_str().unwrap()]));
    for _ in 0..runs {
        let (t, rss) = measure(selfdeploy(root).args(["status", "--all", "--json"]));
        ours.push(t);
        ours_rss = ours_rss.max(rss);
        let (t, rss) = measure(&mut floor(&["--floor-status", root.to_str().unwrap()]));
        floors.push(t);
        floor_rss = floor_rss.max(rss);
    }
    side_by_side(
        &format!("status --all --json, {items} items"),
        median(ours),
        median(floors),
        "one core reading the same files",
    );
    println!(
        "{:<44} {:>7} MiB   floor {:>7} MiB",
        "  peak RSS",
        ours_rss / 1024,
        floor_rss / 1024
    );
    // The watch's rescan, in this process: the first looks at every item;
    // the next passes settled items (finalized, pushed, unchanged) by.
    let settings =
        selfdeploy::config::Settings::with_overrides(&[("REPOS_DIR", root.to_str().unwrap())])
            .unwrap();
    let mut schedule = selfdeploy::watch::Schedule::default();
    let mut stats = selfdeploy::watch::Stats::default();
    for pass in ["first rescan", "next rescan"] {
        let (cpu, start) = (process_cpu(), Instant::now());
        selfdeploy::watch::rescan(&settings, &mut stats, &mut schedule).unwrap();
        println!(
            "{:<44} {:>10} wall, {} of CPU",
            format!("watch: {pass}, {items} items"),
            ms(start.elapsed()),
            ms(process_cpu() - cpu)
        );
    }
    // The watch's safety-net rescan looks at every item the same way.
    let (took, rss, cpu) = measure_cpu(selfdeploy(root).args(["watch", "--once"]));
    println!(
        "{:<44} {:>10} wall, {} of CPU, {} MiB",
        format!("watch --once (one rescan), {items} items"),
        ms(took),
        ms(cpu),
        rss / 1024
    );
}

/// `items` work items of one repo, a quarter in each state, each with a
/// short history, as a busy installation's REPOS_DIR holds them.
fn generate(root: &Path, items: usize) {
    let repo_dir = root.join(format!(".deploy-state-{REPO}"));
    let history_dir = root.join(".selfdeploy/history").join(REPO);
    fs::create_dir_all(&repo_dir).unwrap();
    fs::create_dir_all(&history_dir).unwrap();
    let approve = markers::encode(&ApproveRecord {
        requested_by: "bench".into(),
        requested_at: "2026-01-01T00:00:00Z".into(),
    });
    let id = "00000000000000aa";
    let argv: Vec<String> = [
        "ssh",
        "-o",
        "StrictHostKeyChecking=no",
        "deploy@host",
        "setsid bash -c '...' >> hook.log 2>&1 </dev/null &",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let initiated = markers::encode(&InitiatedRecord {
        dispatch_id: id.into(),
        approved_by: "bench".into(),
        approved_at: "2026-01-01T00:00:01Z".into(),
        dispatched_at: None,
        boot_id: None,
        dispatched_boottime_ms: None,
        branch: Some("deploy/W".into()),
        worktree: "/srv/repos/.worktrees/orchestrator/W".into(),
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        transport: Transport::by_name("ssh").unwrap(),
        argv,
    });
    let finalized = |verdict: Verdict, code: &str| {
        markers::encode(&FinalizedRecord {
            deploy_status: verdict,
            hook_exit_code: code.into(),
            finalized_at: "2026-01-01T00:05:00Z".into(),
            finalized_by: "bench".into(),
            pushed: Some(true),
            push_error: None,
        })
    };
    let (ok, failed) = (
        finalized(Verdict::Success, "0"),
        finalized(Verdict::Failed, "1"),
    );
    let line = |event: &str, from: &str, to: &str| {
        format!(
            "{{\"time\":\"2026-01-01T00:00:00Z\",\"actor\":\"bench\",\"event\":\"{event}\",\"from\":\"{from}\",\"to\":\"{to}\",\"outcome\":\"transitioned\",\"reason\":null,\"effects\":[\"write_marker\"]}}\n"
        )
    };
    for i in 0..items {
        let item = format!("W-{i:07}");
        let dir = repo_dir.join(&item);
        fs::create_dir(&dir).unwrap();
        let mut history = line("request-approve", "idle", "approve_requested");
        fs::write(dir.join("approve-requested"), &approve).unwrap();
        let stage = i % 4;
        if stage >= 1 {
            fs::write(dir.join("initiated"), &initiated).unwrap();
            fs::write(dir.join(format!("claimed-{id}")), "").unwrap();
            fs::write(dir.join("hook.log"), "deploy: ...\n").unwrap();
            history.push_str(&line("approved", "approve_requested", "initiated"));
        }
        if stage >= 2 {
            fs::write(
                dir.join(format!("result-{id}")),
                if stage == 2 { "0\n" } else { "1\n" },
            )
            .unwrap();
            fs::write(
                dir.join("finalized"),
                if stage == 2 { &ok } else { &failed },
            )
            .unwrap();
            history.push_str(&line(
                "poll",
                "initiated",
                if stage == 2 {
                    "finalized_success"
                } else {
                    "finalized_failed"
                },
            ));
        }
        if stage == 1 {
            // In flight: no result yet.
        }
        fs::write(history_dir.join(format!("{item}.jsonl")), history).unwrap();
    }
}

/// What status must read, on one core, writing nothing: every repo's item
/// directories listed, each file the state is derived from read (not the
/// hook's log), and the end of each history.
fn floor_status(root: &Path) {
    let mut bytes = 0usize;
    let mut buf = Vec::with_capacity(64 * 1024);
    for repo in fs::read_dir(root).unwrap().flatten() {
        let name = repo.file_name();
        let Some(repo_name) = name.to_str().and_then(|n| n.strip_prefix(".deploy-state-")) else {
            continue;
        };
        let history = root.join(".selfdeploy/history").join(repo_name);
        for item in fs::read_dir(repo.path()).unwrap().flatten() {
            for file in fs::read_dir(item.path()).unwrap().flatten() {
                if file.file_name() == "hook.log" {
                    continue;
                }
                buf.clear();
                if let Ok(mut f) = File::open(file.path()) {
                    bytes += f.read_to_end(&mut buf).unwrap_or(0);
                }
            }
            let mut name = item.file_name();
            name.push(".jsonl");
            if let Ok(f) = File::open(history.join(name)) {
                let len = f.metadata().map_or(0, |m| m.len());
                let window = len.min(16 * 1024) as usize;
                let mut tail = vec![0; window];
                bytes += f.read_at(&mut tail, len - window as u64).unwrap_or(0);
            }
        }
    }
    std::hint::black_box(bytes);
}
