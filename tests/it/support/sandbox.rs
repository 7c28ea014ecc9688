//! A throwaway installation for end-to-end tests of the `selfdeploy` binary:
//! a state directory, a host checkout with a hook, a git worktree with a bare
//! remote, and the settings pointing at them (passed as environment, so the
//! binary is tested exactly as a stage engine runs it).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::report::{code, parse_json};

pub const REPO: &str = "orchestrator";
pub const BRANCH: &str = "deploy/ORCH-7";
/// The host alias the ssh sandboxes dispatch to (the sshd harness's client
/// config sends every alias to the loopback server).
pub const SSH_HOST: &str = "deploy-host.test";

/// A hook that exits with the code in `hook-exit` (0 when missing) after
/// appending one line per run to `runs`, so tests can count dispatches.
pub const COUNTING_HOOK: &str = r#"#!/usr/bin/env bash
set -u
[ "${1:-}" = "--deploy" ] || exit 64
echo "run $$ expected=${EXPECTED_REVISION:-none}" >> runs
echo "hook: deploying $SOURCE_IMAGE as $TARGET_IMAGE"
while [ -e hold ]; do sleep 0.05; done
exit "$(cat hook-exit 2>/dev/null || echo 0)"
"#;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, OsString>,
}

impl Sandbox {
    /// Local transport, freshness on, the counting hook.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        for sub in ["state", "host/app", "home"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("host/app/hook.sh"), COUNTING_HOOK).unwrap();
        let mut sb = Sandbox {
            dir,
            env: BTreeMap::new(),
        };
        let s = |p: PathBuf| p.into_os_string();
        sb.set("REPOS_DIR", s(root.join("state")));
        sb.set("HOST_REPOS_DIR", s(root.join("state")));
        sb.set("SELF_DEPLOY_TRANSPORT", "local".into());
        sb.set("DEPLOY_HOST_REPO_PATH", s(root.join("host/app")));
        sb.set("DEPLOY_HOOK_SCRIPT", "hook.sh".into());
        sb.set("DEPLOY_PROD_PREV_IMAGE_FILE", s(root.join("host/prev")));
        sb.set("AGENT_HOME_DIR", s(root.join("home")));
        sb.set("GIT_EMAIL_DOMAIN", "example.test".into());
        sb.init_git();
        sb.init_repos_dir();
        sb
    }

    /// `selfdeploy init`: gives the sandbox's REPOS_DIR (wherever `REPOS_DIR`
    /// now points) the identity every state command requires.
    pub fn init_repos_dir(&self) {
        let out = self.run(&["init", "-q"]);
        assert!(
            out.status.success(),
            "selfdeploy init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The ssh transport, with an `ssh` first on PATH that refuses every
    /// connection (exit 255, as a host that is down): every launch fails.
    pub fn ssh_refused(&mut self) {
        let bin = self.root().join("fake-bin");
        write_script(
            &bin,
            "ssh",
            "#!/bin/sh\necho 'ssh: connect to host: Connection refused' >&2\nexit 255\n",
        );
        self.set("SELF_DEPLOY_TRANSPORT", "ssh".into());
        self.set("DEPLOY_SSH_HOST", SSH_HOST.into());
        self.set("PATH", path_with_first_dir(&bin));
    }

    /// A host that never runs the wrapper (it lost the command, or died
    /// before the claim): a `setsid` first on PATH that does nothing. The
    /// launch succeeds and the ticket `dispatch-<id>` stays unclaimed; no
    /// hook ever runs.
    pub fn wrapper_never_runs(&mut self) {
        let bin = self.root().join("lost-bin");
        write_script(&bin, "setsid", "#!/bin/sh\nexit 0\n");
        self.set("PATH", path_with_first_dir(&bin));
    }

    pub fn set(&mut self, key: &str, value: OsString) {
        self.env.insert(key.to_owned(), value);
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// The sandbox's home directory: `HOME` (and `AGENT_HOME_DIR`) of every
    /// command.
    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }
    pub fn state_root(&self) -> PathBuf {
        self.root().join("state")
    }
    pub fn host_repo(&self) -> PathBuf {
        self.root().join("host/app")
    }
    pub fn worktree(&self) -> PathBuf {
        self.root().join("worktree")
    }
    pub fn remote(&self) -> PathBuf {
        self.root().join("remote.git")
    }
    /// The state directory of a work item of the default repo.
    pub fn item_dir(&self, work_item: &str) -> PathBuf {
        self.state_root()
            .join(format!(".deploy-state-{REPO}"))
            .join(work_item)
    }
    pub fn deploy_log(&self, work_item: &str) -> PathBuf {
        self.worktree()
            .join(format!("docs/work-items/{work_item}/14-deploy-log.md"))
    }
    /// Asserts that the work item's deploy log begins with the contract's
    /// frontmatter (section 7) for this verdict, and returns the whole log.
    pub fn assert_deploy_log(&self, work_item: &str, status: &str, code: &str) -> String {
        let log = fs::read_to_string(self.deploy_log(work_item)).expect("the deploy log exists");
        assert!(
            log.starts_with(&deploy_frontmatter(work_item, status, code)),
            "{log}"
        );
        log
    }

    /// How many times the hook ran.
    pub fn hook_runs(&self) -> usize {
        fs::read_to_string(self.host_repo().join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Asserts that the hook never ran, once every host wrapper of the
    /// sandbox has ended (bounded, 10 s): a launch returns before its
    /// detached wrapper claims the ticket and starts the hook, so a hook
    /// counted right after the launching command could still be on its way.
    /// A wrapper's command line names its item's state directory from its
    /// fork (before the launching command returns) until its hook has ended.
    pub fn assert_no_hook_run(&self, why: &str) {
        wait_for_wrappers(
            &self.state_root().join(format!(".deploy-state-{REPO}")),
            Duration::from_secs(10),
        );
        assert_eq!(self.hook_runs(), 0, "the hook ran: {why}");
    }

    fn init_git(&self) {
        let remote = self.remote();
        let wt = self.worktree();
        git(
            self.root(),
            &["init", "-q", "--bare", remote.to_str().unwrap()],
        );
        git(
            self.root(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                wt.to_str().unwrap(),
            ],
        );
        git(&wt, &["checkout", "-q", "-b", BRANCH]);
        fs::write(wt.join("change.txt"), "the change\n").unwrap();
        git(&wt, &["add", "change.txt"]);
        git(&wt, &["commit", "-q", "-m", "the change"]);
        git(&wt, &["push", "-q", "origin", BRANCH]);
    }

    pub fn tip(&self) -> String {
        git(&self.worktree(), &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }

    /// A `selfdeploy` command, run in the sandbox root, with a clean
    /// environment: `PATH` (the test process's), `HOME` (the sandbox's
    /// home), `SELFDEPLOY_ENV_FILE` empty (no env file is read, not even the
    /// system's, unless a test names one), then the sandbox's settings, which
    /// win (a test may set its own `PATH`). Nothing else of the caller's environment reaches it: no
    /// `RUST_LOG` unless the test sets it, no history key, no `USER`.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_selfdeploy"));
        cmd.current_dir(self.root()).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", self.home());
        // No env file unless a test gives one: never the system's.
        cmd.env("SELFDEPLOY_ENV_FILE", "");
        cmd.envs(&self.env);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run selfdeploy")
    }

    /// The command `selfdeploy event <event> --repo orchestrator
    /// --work-item W --json`, for more arguments.
    pub fn event_cmd(&self, event: &str, work_item: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.args([
            "event",
            event,
            "--repo",
            REPO,
            "--work-item",
            work_item,
            "--json",
        ]);
        cmd
    }

    /// `selfdeploy event <event> --repo orchestrator --work-item W --json ...`
    pub fn event(&self, event: &str, work_item: &str, extra: &[&str]) -> Output {
        self.event_cmd(event, work_item)
            .args(extra)
            .output()
            .expect("run selfdeploy")
    }

    /// Like `event`, parsing the one JSON line of stdout.
    pub fn event_json(&self, event: &str, work_item: &str, extra: &[&str]) -> (i32, Value) {
        let out = self.event(event, work_item, extra);
        (code(&out), parse_json(&out))
    }

    /// `request-approve`; asserts that it transitioned to
    /// `approve_requested`.
    pub fn request_approve(&self, work_item: &str) {
        let (c, r) = self.event_json("request-approve", work_item, &[]);
        assert_eq!(
            (c, r["outcome"].as_str(), r["to"].as_str()),
            (0, Some("transitioned"), Some("approve_requested")),
            "{r}"
        );
    }

    /// `--branch <BRANCH> --worktree <the sandbox's worktree>`.
    pub fn approve_args(&self) -> Vec<String> {
        vec![
            "--branch".into(),
            BRANCH.into(),
            "--worktree".into(),
            path_str(&self.worktree()).into(),
        ]
    }

    /// `approved` with the sandbox's branch and worktree.
    pub fn approve(&self, work_item: &str) -> (i32, Value) {
        self.approve_with(work_item, &[])
    }

    /// `approved` with the sandbox's branch and worktree, then `extra`.
    pub fn approve_with(&self, work_item: &str, extra: &[&str]) -> (i32, Value) {
        let args = self.approve_args();
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        self.event_json("approved", work_item, &args)
    }

    /// Polls until the item leaves `initiated` (bounded).
    pub fn poll_until_final(&self, work_item: &str, extra: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, report) = self.event_json("poll", work_item, extra);
            if report["outcome"] != "deferred" {
                return report;
            }
            assert!(Instant::now() < deadline, "no result within 30 s: {report}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The claim protocol's files in the item's directory
    /// (`dispatch-*`, `claimed-*`, `revoked-*`, `result*`), sorted.
    pub fn protocol_files(&self, work_item: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.item_dir(work_item))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                ["dispatch-", "claimed-", "revoked-", "result"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect();
        names.sort();
        names
    }

    /// The finalizer's commits on the remote branch, newest first.
    pub fn finalizer_commits(&self) -> Vec<Commit> {
        commits(&self.remote(), BRANCH)
            .into_iter()
            .filter(|(_, author, _)| author == "deploy-finalizer")
            .collect()
    }

    /// Every file under the state root, with its bytes: to check that a
    /// command changed nothing.
    pub fn disk(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = BTreeMap::new();
        walk(&self.state_root(), &mut all);
        walk(&self.worktree().join("docs"), &mut all);
        all
    }

    /// [`Self::disk`] without `state/.selfdeploy` and what it holds (the
    /// history, the locks): what an event that writes nothing may still
    /// touch.
    pub fn disk_but_own(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let own = self.state_root().join(".selfdeploy");
        let mut all = self.disk();
        all.retain(|path, _| !path.starts_with(&own));
        all
    }
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.insert(path.clone(), Vec::new());
            walk(&path, out);
        } else if path.is_file() {
            out.insert(path.clone(), fs::read(&path).unwrap_or_default());
        } else {
            // A FIFO or a socket: opening it could hang.
            out.insert(path.clone(), Vec::new());
        }
    }
}

/// The deploy log's frontmatter, byte for byte as contract section 7 has it.
pub fn deploy_frontmatter(work_item: &str, status: &str, code: &str) -> String {
    format!(
        "---\ndeploy_status: {status}\nwork_item: {work_item}\nhook_exit_code: {code}\n\
         deployed_by: deploy-finalizer\n---\n\n"
    )
}

/// Runs git with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A commit as `(sha, author name, subject)`.
pub type Commit = (String, String, String);

/// `(sha, author, subject)` of each commit in `range`, newest first.
pub fn commits(dir: &Path, range: &str) -> Vec<Commit> {
    git(dir, &["log", "--format=%H%x09%an%x09%s", range])
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t').map(str::to_owned);
            (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            )
        })
        .collect()
}

/// The claim protocol's per-dispatch files (contract sections 4 and 6).
impl Sandbox {
    /// The `dispatch_id` the item's `initiated` records, when `initiated`
    /// exists and holds our JSON (`None` for the original engine's).
    /// Makes the current dispatch `secs` seconds older, consistently: the
    /// recorded dispatch time and the time of the `initiated` file move back
    /// together, and the boot clock reading is dropped (a record of an
    /// earlier release, measured by the wall clock), since the boot clock
    /// cannot be moved back before the machine's boot.
    pub fn backdate_dispatch(&self, work_item: &str, secs: u64) {
        let path = self.item_dir(work_item).join("initiated");
        let mut record: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let back = Duration::from_secs(secs);
        let at = humantime::parse_rfc3339(record["dispatched_at"].as_str().unwrap()).unwrap();
        record["dispatched_at"] = humantime::format_rfc3339_millis(at - back)
            .to_string()
            .into();
        let map = record.as_object_mut().unwrap();
        map.remove("boot_id");
        map.remove("dispatched_boottime_ms");
        let written = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(written - back)
            .unwrap();
    }

    pub fn dispatch_id(&self, work_item: &str) -> Option<String> {
        let raw = fs::read(self.item_dir(work_item).join("initiated")).ok()?;
        let record: Value = serde_json::from_slice(&raw).ok()?;
        record["dispatch_id"].as_str().map(str::to_owned)
    }

    /// Where the host wrapper writes the hook's exit code for the item's
    /// current dispatch: `<item_dir>/result-<dispatch_id>`, or the legacy
    /// `<item_dir>/result` when `initiated` is absent or not our JSON.
    pub fn result_file(&self, work_item: &str) -> PathBuf {
        let dir = self.item_dir(work_item);
        match self.dispatch_id(work_item) {
            Some(id) => dir.join(format!("result-{id}")),
            None => dir.join("result"),
        }
    }

    /// Waits (bounded, 30 s) until the host wrapper has written a non-blank
    /// result for the item's current dispatch, without polling through the
    /// engine; returns its content.
    pub fn wait_for_result(&self, work_item: &str) -> String {
        let path = self.result_file(work_item);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match fs::read_to_string(&path) {
                Ok(s) if !s.trim().is_empty() => return s,
                _ => {}
            }
            assert!(Instant::now() < deadline, "no {} in 30 s", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Helpers of the git-safety, history-damage and secret-scan tests.
impl Sandbox {
    /// The item's history file (contract section 11):
    /// `<REPOS_DIR>/.selfdeploy/history/<repo>/<item>.jsonl`.
    pub fn history_path(&self, work_item: &str) -> PathBuf {
        self.state_root()
            .join(".selfdeploy/history")
            .join(REPO)
            .join(format!("{work_item}.jsonl"))
    }

    /// The history's head file: the history path with `.head` appended.
    pub fn history_head_path(&self, work_item: &str) -> PathBuf {
        let mut name = self.history_path(work_item).into_os_string();
        name.push(".head");
        name.into()
    }

    /// `request-approve`, then `approved` with the sandbox's branch and
    /// worktree; asserts that both transitioned.
    pub fn approve_item(&self, work_item: &str) {
        self.request_approve(work_item);
        let (code, r) = self.approve(work_item);
        assert_eq!((code, r["to"].as_str()), (0, Some("initiated")), "{r}");
    }

    /// The item's `finalized` record, parsed (panics when missing).
    pub fn finalized_json(&self, work_item: &str) -> Value {
        let path = self.item_dir(work_item).join("finalized");
        let raw = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `status --repo orchestrator --work-item W --json`, parsed.
    pub fn status_json(&self, work_item: &str) -> Value {
        let out = self.run(&["status", "--repo", REPO, "--work-item", work_item, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        parse_json(&out)
    }
}

/// Waits until `done` holds, at most `limit`; returns whether it did.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Pids of the processes (other than this one) whose command line contains
/// `needle`: the host wrappers of a work item name its state directory.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (bounded) until no wrapper of the work item's directory runs.
pub fn wait_for_wrappers(dir: &Path, limit: Duration) {
    let needle = format!("{}/", dir.display());
    let deadline = Instant::now() + limit;
    loop {
        let pids = processes_mentioning(&needle);
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wrappers of {needle} still running after {limit:?}: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes an executable script (mode 0755), creating its directory.
pub fn write_executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The absolute path of a tool on the test process's PATH.
pub fn tool(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && path.starts_with('/'),
        "{name} not found on PATH"
    );
    path
}

/// `dir`, then the test process's PATH.
pub fn path_with_first_dir(dir: &Path) -> OsString {
    let mut path = dir.as_os_str().to_owned();
    if let Some(current) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(current);
    }
    path
}

/// Writes an executable script `<dir>/<name>` (mode 0755), creating `dir`;
/// returns its path.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    write_executable(&path, body);
    path
}

/// Writes `bytes` to `path`, creating its directory.
pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A temporary path as UTF-8.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

/// Whether a process is still running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// A sandbox that dispatches over ssh to [`SSH_HOST`] as `user`, with `path`
/// as its `PATH` (the sshd harness's, so that `ssh` reaches its server), and
/// nothing else set for ssh.
pub fn over_ssh(user: &str, path: OsString) -> Sandbox {
    let mut sb = Sandbox::new();
    sb.set("SELF_DEPLOY_TRANSPORT", "ssh".into());
    sb.set("DEPLOY_SSH_HOST", SSH_HOST.into());
    sb.set("DEPLOY_SSH_USER", user.into());
    sb.set("PATH", path);
    sb
}

/// [`over_ssh`], enabled for every repo, with the ports and the ssh timeout
/// set explicitly.
pub fn ssh_sandbox(user: &str, path: OsString) -> Sandbox {
    let mut sb = over_ssh(user, path);
    for (key, value) in [
        ("SELF_DEPLOY_ENABLED", "true"),
        ("SELF_DEPLOY_REPOS", ""),
        ("STAGING_PORT", "8501"),
        ("DEPLOY_PROD_TARGET_PORT", "8500"),
        ("SELF_DEPLOY_SSH_TIMEOUT_SECS", "30"),
    ] {
        sb.set(key, value.into());
    }
    sb
}

/// Holds a hook while its file exists; removes the file when dropped, so a
/// failing test never leaves a hook waiting.
pub struct Hold(PathBuf);

impl Hold {
    /// Creates the hold file `path`.
    pub fn new(path: PathBuf) -> Hold {
        fs::write(&path, "").unwrap();
        Hold(path)
    }
    /// Holds every run of the sandbox's hook (`<host repo>/hold`).
    pub fn hook(sb: &Sandbox) -> Hold {
        Hold::new(sb.host_repo().join("hold"))
    }
    /// Removes the hold file: the held hooks go on.
    pub fn release(&self) {
        fs::remove_file(&self.0).unwrap();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Runs a command with stdin null; kills it and fails the test if it has not
/// finished within `limit` (a state file waited on would hang it).
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            waiter.join().unwrap();
            out.expect("wait for the child")
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(Duration::from_secs(5));
            panic!("{shown} did not finish within {limit:?} and was killed");
        }
    }
}

/// The preloadable library of Debian's `faketime` package.
pub fn libfaketime() -> String {
    let found = Command::new("sh")
        .args([
            "-c",
            "ls /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 2>/dev/null | head -n 1",
        ])
        .output()
        .unwrap();
    let path = String::from_utf8(found.stdout).unwrap().trim().to_owned();
    assert!(
        !path.is_empty(),
        "libfaketime is needed: apt-get install -y faketime"
    );
    path
}

/// `cmd` with its wall clock at `clock` (a libfaketime time or offset:
/// `-1h`, `@1969-06-01 00:00:00`); the boot clock stays real. The library is
/// preloaded into the process itself rather than through the `faketime`
/// wrapper, which waits for every process that inherited its pipe, the
/// detached hook included.
pub fn with_wall_clock(mut cmd: Command, clock: &str) -> Command {
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", clock)
        .env("DONT_FAKE_MONOTONIC", "1");
    cmd
}
