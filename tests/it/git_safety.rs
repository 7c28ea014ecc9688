//! The finalizer's git, with real git and a real bare remote (contract
//! section 7): branches that could steer git are rejected at the edge; the
//! deploy log is committed alone, one git at a time per worktree; a crash or
//! a hang in the middle of a commit or push is retried to the right end; a
//! push that fails is recorded and retried; a symlink never redirects the log;
//! the merge stamp keeps a frontmatter whose values hold `---`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use proptest::prelude::*;
use serde_json::Value;

use selfdeploy::contract::names::BranchName;

use crate::support::report::*;
use crate::support::sandbox::*;

const ITEM: &str = "ORCH-7";
const DEFAULT_MESSAGE: &str = "deploy(ORCH-036): finalize SUCCESS for ORCH-7";

fn log_rel(work_item: &str) -> String {
    format!("docs/work-items/{work_item}/14-deploy-log.md")
}

/// Every ref of the remote with its commit: to see that nothing changed.
fn remote_refs(sb: &Sandbox) -> String {
    git(
        &sb.remote(),
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    )
}

fn remote_branches(sb: &Sandbox) -> Vec<String> {
    git(&sb.remote(), &["branch", "--list"])
        .lines()
        .map(|l| l.trim_start_matches(['*', ' ']).to_owned())
        .collect()
}

/// The paths a commit touches.
fn files_of(dir: &Path, sha: &str) -> Vec<String> {
    git(dir, &["show", "--name-only", "--format=", sha])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits for a child, at most `limit` (then kills it and panics); returns
/// its output.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("selfdeploy did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut stderr).unwrap();
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn spawn_poll(sb: &Sandbox, work_item: &str) -> Child {
    sb.event_cmd("poll", work_item)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn selfdeploy")
}

/// The reasons the item's history records, oldest first.
fn history_reasons(sb: &Sandbox, work_item: &str) -> Vec<String> {
    fs::read_to_string(sb.history_path(work_item))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["reason"].as_str().map(str::to_owned)
        })
        .collect()
}

/// How many `; `-separated parts of the reasons satisfy `pred`.
fn count_parts(reasons: &[String], pred: impl Fn(&str) -> bool) -> usize {
    reasons
        .iter()
        .flat_map(|r| r.split("; "))
        .filter(|p| pred(p))
        .count()
}

// ---------------------------------------------------------------------------
// 1. Hostile branch values

/// Values that would steer `git push` if they reached it as an argument, or
/// that are not branch names. `{root}` is the sandbox root: the commands of a
/// `--receive-pack`/`--upload-pack`/`--exec` payload would create files there.
/// `event <event> --repo orchestrator --work-item ORCH-7`.
fn item(event: &str) -> Vec<&str> {
    vec!["event", event, "--repo", REPO, "--work-item", ITEM]
}

fn hostile_branches(root: &Path) -> Vec<String> {
    let r = root.display();
    vec![
        "--mirror".to_owned(),
        format!("--receive-pack=touch {r}/pwned-receive-pack"),
        format!("--upload-pack=touch {r}/pwned-upload-pack"),
        format!("--exec=touch {r}/pwned-exec"),
        "--delete".to_owned(),
        "-d".to_owned(),
        "-f".to_owned(),
        "--force".to_owned(),
        "--all".to_owned(),
        "--prune".to_owned(),
        "--tags".to_owned(),
        "-".to_owned(),
        "a..b".to_owned(),
        "x y".to_owned(),
        "HEAD".to_owned(),
        "@".to_owned(),
        String::new(),
        ":keep-me".to_owned(),
        ":refs/heads/keep-me".to_owned(),
        "keep-me:keep-me".to_owned(),
        "+refs/heads/x:refs/heads/keep-me".to_owned(),
        "deploy/ORCH-7 --mirror".to_owned(),
        "deploy/ORCH-7\n--mirror".to_owned(),
        "@{-1}".to_owned(),
        "keep-me^".to_owned(),
        "keep-me~1".to_owned(),
        "refs/heads/*".to_owned(),
        "keep-me.lock".to_owned(),
        "/keep-me".to_owned(),
        "keep-me/".to_owned(),
        "a//b".to_owned(),
        ".keep-me".to_owned(),
    ]
}

/// Delivers `args` (an event or explain with a hostile `--branch=`) and
/// checks: exit 1, one line on stderr naming the branch, nothing on stdout,
/// nothing changed on disk or in the remote, no payload ran.
fn rejected(sb: &Sandbox, branch: &str, args: &[&str]) {
    let disk = sb.disk();
    let refs = remote_refs(sb);
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.push(format!("--branch={branch}"));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = code_out_err(&sb.run(&all));
    let what = format!("{all:?}");
    assert_eq!(code, 1, "{what}: stdout {stdout} stderr {stderr}");
    assert_eq!(stdout, "", "{what}");
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(
        stderr.starts_with("selfdeploy: error: invalid branch ")
            && stderr.contains(&format!("{branch:?}")),
        "{what}: names the branch: {stderr}"
    );
    assert!(sb.disk() == disk, "{what} changed the disk");
    assert_eq!(remote_refs(sb), refs, "{what} changed the remote");
    let branches = remote_branches(sb);
    assert!(
        branches.contains(&"keep-me".to_owned()) && branches.contains(&BRANCH.to_owned()),
        "{what}: {branches:?}"
    );
    for payload in ["pwned-receive-pack", "pwned-upload-pack", "pwned-exec"] {
        assert!(!sb.root().join(payload).exists(), "{what} ran {payload}");
    }
}

#[test]
fn hostile_branches_are_rejected_at_the_edge_and_touch_nothing() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let wt_s = wt.to_str().unwrap();
    git(&wt, &["branch", "keep-me"]);
    git(&wt, &["push", "-q", "origin", "keep-me"]);
    let branches = remote_branches(&sb);
    assert!(branches.contains(&"keep-me".to_owned()), "{branches:?}");
    let hostile = hostile_branches(sb.root());

    // approve_requested: approved (also as a dry run and through explain).
    let (code, r) = sb.event_json("request-approve", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    for b in &hostile {
        let mut approved = item("approved");
        approved.extend(["--worktree", wt_s, "--json"]);
        rejected(&sb, b, &approved);
        let mut dry = approved.clone();
        dry.push("--dry-run");
        rejected(&sb, b, &dry);
        let explain = [
            "explain",
            "approved",
            "--repo",
            REPO,
            "--work-item",
            ITEM,
            "--worktree",
            wt_s,
        ];
        rejected(&sb, b, &explain);
    }

    // initiated with a result waiting: a hostile poll must not finalize.
    let (code, r) = sb.event_json("approved", ITEM, &["--branch", BRANCH, "--worktree", wt_s]);
    assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    sb.wait_for_result(ITEM);
    for b in &hostile {
        let mut poll = item("poll");
        poll.push("--json");
        rejected(&sb, b, &poll);
    }
    assert!(!sb.item_dir(ITEM).join("finalized").exists());

    // finalized: poll and merge-verified.
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.finalized_json(ITEM)["pushed"], true);
    for b in &hostile {
        rejected(&sb, b, &item("poll"));
        let mut merged = item("merge-verified");
        merged.extend(["--merged", "true", "--json"]);
        rejected(&sb, b, &merged);
    }

    // The legitimate stamp still goes through, and keep-me is untouched.
    let keep = git(&sb.remote(), &["rev-parse", "keep-me"]);
    let (code, r) = sb.event_json("merge-verified", ITEM, &["--merged", "true"]);
    assert_eq!(code, 0, "{r}");
    let (_, _, subject) = &commits(&sb.remote(), BRANCH)[0];
    assert_eq!(subject, &format!("deploy: merged_to_main true for {ITEM}"));
    assert_eq!(git(&sb.remote(), &["rev-parse", "keep-me"]), keep);
}

/// `git check-ref-format --branch <s>` outside any repository.
fn git_accepts_branch(dir: &Path, s: &str) -> bool {
    std::process::Command::new("git")
        .args(["check-ref-format", "--branch", s])
        .current_dir(dir)
        .env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap())
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("git runs")
        .success()
}

fn no_repo_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn same_as_git(s: &str) -> Result<(), String> {
    let ours = BranchName::new(s).is_ok();
    let theirs = git_accepts_branch(no_repo_dir(), s);
    if ours == theirs {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: BranchName says {ours}, git check-ref-format --branch says {theirs}"
        ))
    }
}

#[test]
fn branch_names_agree_with_git_on_the_edge_cases() {
    let cases = [
        "main",
        "feat/x",
        "deploy/ORCH-7",
        "a.lock",
        "a/b.lock/c",
        "a.lock/b",
        "a/.lock",
        "x/.y",
        "a//b",
        "/a",
        "a/",
        "a.",
        "a/.",
        ".a",
        "a..b",
        "a@{b",
        "a@b",
        "a@",
        "a/@",
        "refs/heads/x",
        "ä",
        "日本/ブランチ",
        "a\x7fb",
        "a\tb",
        "{",
        "}",
        "a.b",
        "a-",
        "a/-b",
        "x~",
        "x^",
        "x:",
        "x?",
        "x*",
        "x[",
        "x\\y",
        "x y",
        "",
        ".",
        "..",
        "@{",
        "a/b/c.d",
    ];
    let mismatches: Vec<String> = cases.iter().filter_map(|s| same_as_git(s).err()).collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

const TOKENS: &[&str] = &[
    "a",
    "b",
    "z",
    ".",
    "/",
    "@",
    "{",
    "}",
    "~",
    "^",
    ":",
    "?",
    "*",
    "[",
    "\\",
    " ",
    "-",
    "é",
    "€",
    "\t",
    "\u{7f}",
    ".lock",
    "..",
    "@{",
    "//",
    "HEAD",
    "refs/heads/",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn branch_names_agree_with_git_check_ref_format(
        parts in proptest::collection::vec(proptest::sample::select(TOKENS), 0..8)
    ) {
        let s: String = parts.concat();
        prop_assume!(!s.starts_with('-') && s != "@" && s != "HEAD");
        if let Err(why) = same_as_git(&s) {
            prop_assert!(false, "{}", why);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Items sharing one worktree, finalized in parallel

#[test]
fn items_sharing_a_worktree_each_commit_their_log_alone() {
    let mut sb = Sandbox::new();
    sb.set(
        "SELF_DEPLOY_COMMIT_MESSAGE",
        "deploy {work_item}: {status} (shared worktree)".into(),
    );
    sb.set("SELF_DEPLOY_LOCK_TIMEOUT_SECS", "20".into());
    sb.set("SELF_DEPLOY_GIT_TIMEOUT_SECS", "20".into());
    let wt = sb.worktree();
    let base = sb.tip();
    let items = ["ORCH-21", "ORCH-22", "ORCH-23", "ORCH-24"];
    // Two of them name the worktree through a symlink: the same worktree,
    // so the same git lock (keyed by the canonical path).
    let alias = sb.root().join("worktree-alias");
    std::os::unix::fs::symlink(&wt, &alias).unwrap();
    for (i, item) in items.iter().enumerate() {
        let path = if i % 2 == 0 { &wt } else { &alias };
        let (code, r) = sb.event_json("request-approve", item, &[]);
        assert_eq!(code, 0, "{r}");
        let (code, r) = sb.event_json(
            "approved",
            item,
            &["--branch", BRANCH, "--worktree", path.to_str().unwrap()],
        );
        assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    }
    for item in items {
        sb.wait_for_result(item);
    }
    // Unrelated work in the shared worktree: one change staged, one not.
    fs::write(wt.join("other.txt"), "unrelated\n").unwrap();
    git(&wt, &["add", "other.txt"]);
    fs::write(wt.join("change.txt"), "edited, not staged\n").unwrap();

    let children: Vec<(&str, Child)> = items.iter().map(|i| (*i, spawn_poll(&sb, i))).collect();
    for (item, child) in children {
        let out = wait_output(child, Duration::from_secs(60));
        let (code, _, stderr) = code_out_err(&out);
        let r = parse_json(&out);
        assert_eq!(code, 0, "{item}: {r} {stderr}");
        assert_eq!(r["to"], "finalized_success", "{item}: {r}");
        assert_eq!(r["condition"], "result 0, pushed", "{item}: {r}");
        assert_eq!(sb.finalized_json(item)["pushed"], true, "{item}");
    }

    let range = format!("{base}..{BRANCH}");
    let made = commits(&wt, &range);
    assert_eq!(made.len(), items.len(), "one commit per item: {made:?}");
    for item in items {
        let subject = format!("deploy {item}: SUCCESS (shared worktree)");
        let mine: Vec<_> = made.iter().filter(|(_, _, s)| *s == subject).collect();
        assert_eq!(mine.len(), 1, "{item}: {made:?}");
        let (sha, author, _) = mine[0];
        assert_eq!(author, "deploy-finalizer");
        assert_eq!(
            files_of(&wt, sha),
            [log_rel(item)],
            "{item} commits its log alone"
        );
    }
    // All pushed, the unrelated work left as it was.
    assert_eq!(
        git(&sb.remote(), &["rev-parse", BRANCH]),
        git(&wt, &["rev-parse", BRANCH])
    );
    assert_eq!(
        git(&wt, &["diff", "--cached", "--name-only"]),
        "other.txt\n"
    );
    assert_eq!(git(&wt, &["diff", "--name-only"]), "change.txt\n");
    // The worktree's git lock lives under REPOS_DIR, outside the worktree.
    let locks: Vec<PathBuf> = fs::read_dir(sb.state_root().join(".selfdeploy/git-locks"))
        .expect("the git-locks directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(locks.len(), 1, "one lock for one worktree: {locks:?}");
}

// ---------------------------------------------------------------------------
// 3. A crash or a hang inside git

/// Puts a `git` first on the sandbox's PATH that, when its arguments hold
/// `op`, records its pid in `marker` and sleeps (after starting `sleep 30` in
/// the background, whose pid goes to `<marker>.bg`); any other git call runs
/// the real git.
fn slow_git(sb: &mut Sandbox, op: &str) -> PathBuf {
    let real = tool("git");
    let bin = sb.root().join("slow-bin");
    let marker = sb.root().join(format!("git-{op}-sleeping"));
    let m = marker.display();
    write_executable(
        &bin.join("git"),
        &format!(
            r#"#!/bin/sh
for a in "$@"; do
  if [ "$a" = {op} ]; then
    sleep 30 &
    echo $! > "{m}.bg"
    echo $$ > "{m}.tmp" && mv "{m}.tmp" "{m}"
    exec sleep 30
  fi
done
exec "{real}" "$@"
"#
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
    marker
}

fn read_pid(path: &Path) -> i32 {
    fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kill_group(pid: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group only.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// After the crash: the pending push is retried by a plain poll and ends
/// with the one right commit on the remote.
fn retried_to_the_right_end(sb: &Sandbox) {
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["outcome"], "unchanged", "{r}");
    assert_eq!(r["condition"], "push pending, pushed", "{r}");
    let mine = sb.finalizer_commits();
    assert_eq!(mine.len(), 1, "exactly one finalizer commit: {mine:?}");
    let (sha, _, subject) = &mine[0];
    assert_eq!(subject, DEFAULT_MESSAGE);
    assert_eq!(files_of(&sb.remote(), sha), [log_rel(ITEM)]);
    assert_eq!(
        git(&sb.remote(), &["rev-parse", BRANCH]),
        git(&sb.worktree(), &["rev-parse", BRANCH])
    );
    sb.assert_deploy_log(ITEM, "SUCCESS", "0");
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], true, "{f}");
    assert!(f["push_error"].is_null(), "{f}");
    assert_eq!(sb.status_json(ITEM)["pushed"], true);
    // Nothing more to do afterwards.
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(
        (code, r["condition"].as_str()),
        (0, Some("nothing to push")),
        "{r}"
    );
}

#[test]
fn a_kill_during_a_slow_commit_or_push_is_retried_to_one_right_commit() {
    for op in ["commit", "push"] {
        let mut sb = Sandbox::new();
        let marker = slow_git(&mut sb, op);
        sb.approve_item(ITEM);
        sb.wait_for_result(ITEM);
        let mut child = spawn_poll(&sb, ITEM);
        assert!(
            wait_for(Duration::from_secs(20), || marker.exists()),
            "git {op} never started"
        );
        // kill -9 the engine in the middle of git, then its git.
        child.kill().unwrap();
        let out = wait_output(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), None, "{op}: killed by a signal");
        kill_group(read_pid(&marker));
        kill_group(read_pid(&marker.with_extension("bg")));

        // The verdict was recorded before the push, as not pushed yet.
        let f = sb.finalized_json(ITEM);
        assert_eq!(f["pushed"], false, "{op}: {f}");
        assert_eq!(f["push_error"], "not pushed yet", "{op}: {f}");
        let s = sb.status_json(ITEM);
        assert_eq!(s["state"], "finalized_success", "{s}");
        assert_eq!(s["pushed"], false, "{s}");
        assert_eq!(s["push"], "pending", "{s}");
        assert_eq!(
            s["problem"],
            "the deploy succeeded, but its log was not pushed: not pushed yet; every poll (and watch) retries",
            "{s}"
        );
        sb.assert_deploy_log(ITEM, "SUCCESS", "0");
        assert!(
            sb.finalizer_commits().is_empty(),
            "{op}: nothing pushed yet"
        );
        let local = commits(&sb.worktree(), BRANCH);
        let committed = local.iter().any(|(_, a, _)| a == "deploy-finalizer");
        assert_eq!(committed, op == "push", "{op}: {local:?}");

        sb.env.remove("PATH");
        retried_to_the_right_end(&sb);
    }
}

#[test]
fn a_hanging_git_is_killed_with_its_group_at_the_timeout() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_GIT_TIMEOUT_SECS", "1".into());
    let marker = slow_git(&mut sb, "push");
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    let started = Instant::now();
    let out = wait_output(spawn_poll(&sb, ITEM), Duration::from_secs(20));
    let took = started.elapsed();
    let (code, _, stderr) = code_out_err(&out);
    let r = parse_json(&out);
    assert_eq!(code, 0, "{r} {stderr}");
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(r["condition"], "result 0, not pushed", "{r}");
    assert!(
        took < Duration::from_secs(15),
        "the 1 s timeout held: {took:?}"
    );
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], false, "{f}");
    let err = f["push_error"].as_str().unwrap();
    assert!(
        err.starts_with("git push failed") && err.contains("timed out after 1s and was killed"),
        "{err}"
    );
    // The whole group went, the background grandchild included.
    let (git_pid, bg_pid) = (read_pid(&marker), read_pid(&marker.with_extension("bg")));
    assert!(
        wait_for(Duration::from_secs(5), || !alive(git_pid as u32)
            && !alive(bg_pid as u32)),
        "the hanging git's group survived the timeout"
    );

    sb.env.remove("PATH");
    sb.env.remove("SELF_DEPLOY_GIT_TIMEOUT_SECS");
    retried_to_the_right_end(&sb);
}

// ---------------------------------------------------------------------------
// 4. A push that fails

#[test]
fn a_failed_push_is_recorded_retried_and_pushed_once_the_remote_is_back() {
    let sb = Sandbox::new();
    // A second item in its own worktree and branch, retried by watch.
    let other = "ORCH-8";
    let other_branch = "deploy/ORCH-8";
    let wt2 = sb.root().join("worktree-8");
    git(
        sb.root(),
        &[
            "clone",
            "-q",
            sb.remote().to_str().unwrap(),
            wt2.to_str().unwrap(),
        ],
    );
    git(
        &wt2,
        &[
            "checkout",
            "-q",
            "-b",
            other_branch,
            &format!("origin/{BRANCH}"),
        ],
    );
    sb.approve_item(ITEM);
    let (code, r) = sb.event_json("request-approve", other, &[]);
    assert_eq!(code, 0, "{r}");
    let (code, r) = sb.event_json(
        "approved",
        other,
        &[
            "--branch",
            other_branch,
            "--worktree",
            wt2.to_str().unwrap(),
        ],
    );
    assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    sb.wait_for_result(ITEM);
    sb.wait_for_result(other);

    let away = sb.root().join("remote.git.away");
    fs::rename(sb.remote(), &away).unwrap();
    for item in [ITEM, other] {
        let (code, r) = sb.event_json("poll", item, &[]);
        assert_eq!(code, 0, "finalizing never waits for the push: {r}");
        assert_eq!(r["to"], "finalized_success", "{r}");
        assert_eq!(r["condition"], "result 0, not pushed", "{r}");
        let f = sb.finalized_json(item);
        assert_eq!(f["pushed"], false, "{f}");
        let err = f["push_error"].as_str().unwrap();
        assert!(err.starts_with("git push failed"), "{err}");
        let s = sb.status_json(item);
        assert_eq!(s["pushed"], false, "{s}");
        let problem = s["problem"].as_str().unwrap();
        assert!(
            problem
                .starts_with("the deploy succeeded, but its log was not pushed: git push failed"),
            "{problem}"
        );
    }
    // Still unreachable: unchanged, and the record is as it was.
    let before = fs::read(sb.item_dir(ITEM).join("finalized")).unwrap();
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["outcome"], "unchanged", "{r}");
    assert_eq!(r["condition"], "push pending, not pushed", "{r}");
    assert_eq!(
        fs::read(sb.item_dir(ITEM).join("finalized")).unwrap(),
        before
    );

    // The remote is back: the next poll pushes.
    fs::rename(&away, sb.remote()).unwrap();
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["condition"], "push pending, pushed", "{r}");
    let mine = sb.finalizer_commits();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].2, DEFAULT_MESSAGE);
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], true, "{f}");
    assert!(f["push_error"].is_null(), "{f}");
    let s = sb.status_json(ITEM);
    assert_eq!(
        (&s["note"], &s["problem"], &s["push"]),
        (
            &"deploy succeeded (hook exit code 0)".into(),
            &serde_json::Value::Null,
            &"pushed".into()
        ),
        "{s}"
    );
    let reasons = history_reasons(&sb, ITEM);
    assert_eq!(count_parts(&reasons, |p| p == "pushed"), 1, "{reasons:#?}");
    assert_eq!(
        count_parts(&reasons, |p| p.starts_with("not pushed")),
        1,
        "{reasons:#?}"
    );

    // watch --once retries the other item's pending push.
    assert!(
        git(&sb.remote(), &["branch", "--list", other_branch]).is_empty(),
        "not pushed yet"
    );
    let (code, stdout, stderr) = code_out_err(&sb.run(&["watch", "--once"]));
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert_eq!(sb.finalized_json(other)["pushed"], true);
    let (_, author, subject) = &commits(&sb.remote(), other_branch)[0];
    assert_eq!(
        (author.as_str(), subject.as_str()),
        (
            "deploy-finalizer",
            "deploy(ORCH-036): finalize SUCCESS for ORCH-8"
        )
    );
}

// ---------------------------------------------------------------------------
// 5. A symlink on the log's path

fn commit_all(wt: &Path, message: &str) {
    git(wt, &["add", "-A", "docs"]);
    git(wt, &["commit", "-q", "-m", message]);
}

/// Polls an item whose log path goes through `link`: exit 1 naming the
/// link, the item stays initiated, nothing is written.
fn poll_refused_by_symlink(sb: &Sandbox, item: &str, link: &Path) {
    for _ in 0..2 {
        let disk = sb.disk();
        let refs = remote_refs(sb);
        let (code, stdout, stderr) = code_out_err(&sb.event("poll", item, &[]));
        assert_eq!(code, 1, "{item}: {stdout} {stderr}");
        assert!(
            stderr.contains(&format!("{} is a symbolic link", link.display())),
            "{item}: {stderr}"
        );
        assert!(!stdout.contains("finalized"), "{stdout}");
        let s = sb.status_json(item);
        assert_eq!(s["state"], "initiated", "{s}");
        assert!(!sb.item_dir(item).join("finalized").exists());
        assert_eq!(remote_refs(sb), refs);
        // Only the history has the failed poll.
        let after = sb.disk();
        let mut changed: Vec<&PathBuf> = after
            .iter()
            .filter(|(p, b)| disk.get(*p) != Some(b))
            .map(|(p, _)| p)
            .collect();
        // The history (and the count of a repeated failure beside it).
        let history = sb.history_path(item);
        changed.retain(|p| {
            !p.as_os_str()
                .to_string_lossy()
                .starts_with(&*history.to_string_lossy())
        });
        assert!(changed.is_empty(), "{item}: {changed:?}");
    }
    let last = fs::read_to_string(sb.history_path(item)).unwrap();
    let last: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "error", "{last}");
}

#[test]
fn a_symlink_below_the_worktree_never_carries_the_log_outside() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let outside = sb.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    // ORCH-7: the item's directory is a link to a directory outside.
    let dir_link = wt.join("docs/work-items/ORCH-7");
    fs::create_dir_all(dir_link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &dir_link).unwrap();
    // ORCH-8: the log itself is a link to a file outside.
    let file_link = wt.join(log_rel("ORCH-8"));
    fs::create_dir_all(file_link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(outside.join("stolen.md"), &file_link).unwrap();
    commit_all(&wt, "links");
    git(&wt, &["push", "-q", "origin", BRANCH]);

    for item in ["ORCH-7", "ORCH-8"] {
        sb.approve_item(item);
        sb.wait_for_result(item);
    }
    poll_refused_by_symlink(&sb, "ORCH-7", &dir_link);
    poll_refused_by_symlink(&sb, "ORCH-8", &file_link);
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );

    // The link replaced by a directory: the next poll finalizes.
    git(&wt, &["rm", "-q", "docs/work-items/ORCH-7"]);
    git(&wt, &["commit", "-q", "-m", "unlink"]);
    let r = sb.poll_until_final("ORCH-7", &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert!(
        fs::symlink_metadata(wt.join(log_rel("ORCH-7")))
            .unwrap()
            .is_file()
    );
    sb.assert_deploy_log("ORCH-7", "SUCCESS", "0");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // The stamp is never written through a link either.
    let log = wt.join(log_rel("ORCH-7"));
    fs::copy(&log, outside.join("copy.md")).unwrap();
    fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(outside.join("copy.md"), &log).unwrap();
    let copy = fs::read(outside.join("copy.md")).unwrap();
    let (code, stdout, stderr) =
        code_out_err(&sb.event("merge-verified", "ORCH-7", &["--merged", "true"]));
    assert_eq!(code, 1, "{stdout} {stderr}");
    assert!(
        stderr.contains(&format!("{} is a symbolic link", log.display())),
        "{stderr}"
    );
    assert_eq!(fs::read(outside.join("copy.md")).unwrap(), copy);
}

// ---------------------------------------------------------------------------
// 6. The merge stamp of a work item whose name holds `---`

#[test]
fn the_stamp_keeps_a_frontmatter_whose_values_hold_dashes_and_is_pushed() {
    let item = "A---B";
    let sb = Sandbox::new();
    sb.approve_item(item);
    sb.wait_for_result(item);
    let r = sb.poll_until_final(item, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let log = sb.assert_deploy_log(item, "SUCCESS", "0");
    assert_eq!(
        commits(&sb.remote(), BRANCH)[0].2,
        format!("deploy(ORCH-036): finalize SUCCESS for {item}")
    );

    let fence = "deployed_by: deploy-finalizer\n---\n";
    for merged in ["true", "false"] {
        let (code, r) = sb.event_json("merge-verified", item, &["--merged", merged]);
        assert_eq!((code, r["outcome"].as_str()), (0, Some("unchanged")), "{r}");
        let stamped = fs::read_to_string(sb.deploy_log(item)).unwrap();
        let want = log.replacen(
            fence,
            &format!("deployed_by: deploy-finalizer\nmerged_to_main: {merged}\n---\n"),
            1,
        );
        assert_eq!(stamped, want);
        assert!(stamped.starts_with(&format!(
            "---\ndeploy_status: SUCCESS\nwork_item: {item}\nhook_exit_code: 0\n\
             deployed_by: deploy-finalizer\nmerged_to_main: {merged}\n---\n\n# Deploy log\n"
        )));
        let (sha, author, subject) = commits(&sb.remote(), BRANCH).remove(0);
        assert_eq!(author, "deploy-finalizer");
        assert_eq!(
            subject,
            format!("deploy: merged_to_main {merged} for {item}")
        );
        assert_eq!(files_of(&sb.remote(), &sha), [log_rel(item)]);
        assert_eq!(
            git(&sb.worktree(), &["log", "-1", "--format=%s"]).trim(),
            subject
        );
        assert_eq!(
            git(&sb.remote(), &["rev-parse", BRANCH]),
            git(&sb.worktree(), &["rev-parse", "HEAD"])
        );
        assert_eq!(sb.finalized_json(item)["pushed"], true);
    }
    // The same stamp again: nothing to commit, nothing new on the remote.
    let tip = git(&sb.remote(), &["rev-parse", BRANCH]);
    let (code, r) = sb.event_json("merge-verified", item, &["--merged", "false"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(git(&sb.remote(), &["rev-parse", BRANCH]), tip);
}

// ---------------------------------------------------------------------------
// 7. `pushed: true` means the log is on the remote branch

/// Whether the remote's `branch` holds the item's deploy log exactly as the
/// worktree has it.
fn remote_holds_log(sb: &Sandbox, branch: &str, work_item: &str) -> bool {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(sb.remote())
        .args([
            "show",
            &format!("refs/heads/{branch}:{}", log_rel(work_item)),
        ])
        .output()
        .unwrap();
    out.status.success() && out.stdout == fs::read(sb.deploy_log(work_item)).unwrap()
}

/// The invariant behind `pushed`: when `finalized` says pushed, the remote
/// branch has the log. A worktree checked out on another branch than the
/// approved one would commit the log on HEAD and push the approved branch
/// unchanged, after production changed: the branch guard refuses that
/// approval before anything is written or run. On the right branch, the
/// same approval deploys and the remote branch holds the log.
#[test]
fn pushed_true_means_the_remote_branch_holds_the_log() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    git(&wt, &["checkout", "-q", "-b", "elsewhere"]);
    sb.request_approve(ITEM);
    let before = sb.disk_but_own();
    let (code, r) = sb.approve(ITEM);
    assert_eq!(
        (code, r["outcome"].as_str(), r["condition"].as_str()),
        (3, Some("refused"), Some("worktree not on the branch")),
        "{r}"
    );
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("refs/heads/elsewhere") && reason.contains(&format!("refs/heads/{BRANCH}")),
        "{reason}"
    );
    assert_eq!(
        sb.disk_but_own(),
        before,
        "a refused approval touches nothing"
    );
    // A detached HEAD is no branch either.
    git(&wt, &["checkout", "-q", "--detach"]);
    let (code, r) = sb.approve(ITEM);
    assert_eq!(
        (code, r["condition"].as_str()),
        (3, Some("worktree not on the branch")),
        "{r}"
    );
    // The operator is told why: not a git failure, a HEAD on no branch.
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("(HEAD is detached)"), "{reason}");
    sb.assert_no_hook_run("both approvals were refused");
    git(&wt, &["checkout", "-q", BRANCH]);
    let (code, r) = sb.approve(ITEM);
    assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    sb.wait_for_result(ITEM);
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    assert_eq!(sb.finalized_json(ITEM)["pushed"], true, "{r}");
    assert!(
        remote_holds_log(&sb, BRANCH, ITEM),
        "pushed:true, but {BRANCH} on the remote has no deploy log: {r}"
    );
}

#[test]
fn a_pending_push_retried_under_another_branch_still_pushes_the_log() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    git(&wt, &["branch", "keep-me"]);
    git(&wt, &["push", "-q", "origin", "keep-me"]);
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    // The remote is away at the finalize: the push is left pending.
    let away = sb.root().join("remote.git.away");
    fs::rename(sb.remote(), &away).unwrap();
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(
        (code, r["condition"].as_str()),
        (0, Some("result 0, not pushed")),
        "{r}"
    );
    fs::rename(&away, sb.remote()).unwrap();
    let (code, r) = sb.event_json("poll", ITEM, &["--branch", "keep-me"]);
    assert_eq!(code, 0, "{r}");
    if sb.finalized_json(ITEM)["pushed"] == true {
        assert!(
            remote_holds_log(&sb, BRANCH, ITEM) || remote_holds_log(&sb, "keep-me", ITEM),
            "pushed:true, but no remote branch has the deploy log: {r}"
        );
    }
}

// ---------------------------------------------------------------------------
// 8. A commit that fails

/// A commit refused by a hook of the finalizer's own git configuration
/// (`HOME` is AGENT_HOME_DIR) leaves the branch as it was: pushing that
/// branch then "succeeds" with none of the log on it. The failure is
/// recorded as not pushed, naming the commit, and nothing reaches the remote.
#[test]
fn a_failed_commit_is_recorded_as_not_pushed_and_pushes_nothing() {
    let sb = Sandbox::new();
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    let hooks = sb.root().join("refusing-hooks");
    write_script(
        &hooks,
        "pre-commit",
        "#!/bin/sh\necho 'pre-commit: refused by the test' >&2\nexit 1\n",
    );
    write(
        &sb.home().join(".gitconfig"),
        format!("[core]\n\thooksPath = {}\n", hooks.display()).as_bytes(),
    );
    let remote_tip = git(&sb.remote(), &["rev-parse", BRANCH]);

    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "finalizing never waits for the push: {r}");
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (Some("finalized_success"), Some("result 0, not pushed")),
        "{r}"
    );
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], false, "{f}");
    let err = f["push_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("git commit failed") && err.contains("refused by the test"),
        "{f}"
    );
    let s = sb.status_json(ITEM);
    assert_eq!(s["pushed"], false, "{s}");
    assert!(
        s["problem"]
            .as_str()
            .is_some_and(|p| p.contains("git commit failed")),
        "{s}"
    );
    // `git add` worked: the log waits, staged, for a commit that can be made.
    assert_eq!(
        git(&sb.worktree(), &["diff", "--cached", "--name-only"]),
        format!("{}\n", log_rel(ITEM))
    );
    assert!(!remote_holds_log(&sb, BRANCH, ITEM));
    assert_eq!(git(&sb.remote(), &["rev-parse", BRANCH]), remote_tip);
    assert!(sb.finalizer_commits().is_empty());
}

// ---------------------------------------------------------------------------
// 9. A tag named like the branch

/// A tag with the branch's very name (at an older commit) makes the bare
/// name ambiguous to git: only the full refspec pushes the branch, with the
/// log, and leaves the tag where it is.
#[test]
fn a_tag_named_like_the_branch_does_not_divert_the_push() {
    let sb = Sandbox::new();
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    let wt = sb.worktree();
    let older = sb.tip();
    git(&wt, &["tag", BRANCH, &older]);

    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(
        (r["to"].as_str(), r["condition"].as_str()),
        (Some("finalized_success"), Some("result 0, pushed")),
        "{r}"
    );
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], true, "{f}");
    assert!(remote_holds_log(&sb, BRANCH, ITEM));
    let branch_ref = format!("refs/heads/{BRANCH}");
    let pushed = git(&sb.remote(), &["rev-parse", &branch_ref]);
    assert_eq!(pushed, git(&wt, &["rev-parse", &branch_ref]));
    assert_ne!(pushed.trim(), older);
    assert_eq!(
        git(&sb.remote(), &["tag", "--list"]),
        "",
        "the tag stays local"
    );
}

/// The freshness revision is the branch's tip, even when a tag of the same
/// name points elsewhere (git's lookup prefers the tag to the branch).
#[test]
fn a_tag_named_like_the_branch_does_not_change_the_validated_revision() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let older = sb.tip();
    git(&wt, &["tag", BRANCH, &older]);
    fs::write(wt.join("newer.txt"), "newer\n").unwrap();
    git(&wt, &["add", "newer.txt"]);
    git(&wt, &["commit", "-q", "-m", "newer"]);
    let newer = sb.tip();
    assert_ne!(newer, older);
    sb.request_approve(ITEM);
    let (code, r) = sb.approve(ITEM);
    assert_eq!(code, 0, "{r}");
    let argv = r["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["argv"].as_array())
        .expect("a launch")
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        argv.contains(&format!("EXPECTED_REVISION={newer}")),
        "the branch tip, not the tag: {argv}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sb.item_dir(ITEM).join("initiated")).unwrap())
            .unwrap();
    assert_eq!(record["revision"], newer.as_str(), "{record}");
}

/// Names git cannot hold as a path component are refused at the edge, and
/// the list is git's own: every name refused here is one `git add` refuses,
/// and every one accepted is one git stores.
#[test]
fn work_items_git_cannot_store_are_refused_at_the_edge() {
    let sb = Sandbox::new();
    let probe = sb.root().join("probe");
    git(sb.root(), &["init", "-q", probe.to_str().unwrap()]);
    let git_stores = |name: &str| {
        let dir = probe.join("d").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("log"), "x").unwrap();
        let rel = format!("d/{name}/log");
        std::process::Command::new("git")
            .arg("-C")
            .arg(&probe)
            .args(["add", "--", &rel])
            .output()
            .unwrap()
            .status
            .success()
            && std::process::Command::new("git")
                .arg("-C")
                .arg(&probe)
                .args(["ls-files", "--error-unmatch", "--", &rel])
                .output()
                .unwrap()
                .status
                .success()
    };
    let names = [
        ".git",
        ".GIT",
        ".Git",
        ".git.",
        ".git..",
        ".gIT...",
        ".gitmodules",
        ".git_",
        "..git",
        "a.git",
        ".git-",
        "ORCH-7",
    ];
    let mut refused = 0;
    for name in names {
        let before = sb.disk_but_own();
        let out = sb.event("request-approve", name, &[]);
        let accepted = out.status.code() == Some(0);
        assert_eq!(accepted, git_stores(name), "{name}: {out:?}");
        if !accepted {
            refused += 1;
            assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("git cannot store it"),
                "{name}: {out:?}"
            );
            assert_eq!(sb.disk_but_own(), before, "{name}: nothing touched");
        }
    }
    assert_eq!(refused, 6);
}

/// A nested repository at the item's log directory: `git add` cannot stage
/// the log, so nothing is committed; the deploy is finalized but never
/// recorded as pushed, and the branch on the remote has no log.
#[test]
fn a_log_git_does_not_commit_is_never_recorded_as_pushed() {
    let sb = Sandbox::new();
    let wt = sb.worktree();
    let nested = wt.join("docs/work-items").join(ITEM);
    fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);
    let r = sb.poll_until_final(ITEM, &[]);
    assert_eq!(r["to"], "finalized_success", "{r}");
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], false, "{f}");
    assert!(!remote_holds_log(&sb, BRANCH, ITEM), "{f}");
    let st = sb.status_json(ITEM);
    assert!(
        st["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("not pushed"),
        "{st}"
    );
}

/// A git killed mid-commit leaves `.git/index.lock`, and every later git on
/// the worktree fails. One that no process holds and that is older than the
/// git timeout is removed, and the report says so; one a process holds open
/// is left alone, and the error names the process and the command.
#[test]
fn a_stale_index_lock_is_cleared_and_a_held_one_named() {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_GIT_TIMEOUT_SECS", "5".into());
    let wt = sb.worktree();
    let lock = wt.join(".git/index.lock");
    sb.approve_item(ITEM);
    sb.wait_for_result(ITEM);

    // Held open by a live process (and old): left alone, named.
    fs::write(&lock, "").unwrap();
    let aged = || {
        let status = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(&lock)
            .status()
            .unwrap();
        assert!(status.success());
    };
    aged();
    let mut holder = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<'{}'; sleep 30", lock.display()))
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || {
        fs::read_dir(format!("/proc/{}/fd", holder.id()))
            .map(|d| {
                d.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == lock))
            })
            .unwrap_or(false)
    }));
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], false, "{f}");
    let error = f["push_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("held open by process {}", holder.id()))
            && error.contains("rm -- "),
        "{error}"
    );
    assert!(lock.exists(), "a held lock is never removed");
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Nobody holds it, and it is older than the git timeout: removed.
    aged();
    let (code, r) = sb.event_json("poll", ITEM, &[]);
    assert_eq!(code, 0, "{r}");
    assert!(!lock.exists());
    assert!(
        r["notes"].to_string().contains("removed a stale"),
        "the report says so: {r}"
    );
    let f = sb.finalized_json(ITEM);
    assert_eq!(f["pushed"], true, "{f}");
    assert!(remote_holds_log(&sb, BRANCH, ITEM));
}
