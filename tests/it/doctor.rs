//! `selfdeploy doctor` over the local transport and over a real loopback
//! sshd: one passing and one failing installation each; over ssh to a port
//! where nothing listens (one failure, the checks that need the host
//! skipped, within seconds); without the transport program; as JSON Lines;
//! each check printed as soon as it ends; a worktree and its push dry run;
//! the hook as a readable regular file; docker answering on the host (a
//! stand-in `docker` first on the host's PATH, for the local transport).

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::sandbox::{
    BRANCH, Hold, SSH_HOST, Sandbox, git, over_ssh, path_with_first_dir, tool, write_script,
};
use crate::support::sshd::{ClosedPort, Sshd};

fn doctor(sb: &Sandbox) -> (i32, String) {
    doctor_with(sb, &["doctor"])
}

fn doctor_with(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = sb.run(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every check, in the order they run.
const CHECKS: [&str; 13] = [
    "configuration",
    "transport program",
    "git",
    "REPOS_DIR owner",
    "REPOS_DIR identity",
    "REPOS_DIR writable",
    "worktree",
    "push dry run",
    "host reachable",
    "shared mount",
    "hook on host",
    "host writes state",
    "docker on host",
];

/// The checks that need the host.
const NEED_THE_HOST: [&str; 4] = [
    "shared mount",
    "hook on host",
    "host writes state",
    "docker on host",
];

/// A passing installation checked without a worktree: the worktree and its
/// push are skipped, everything else passes.
const NO_WORKTREE: [&str; 13] = [
    "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "SKIP", "SKIP", "PASS", "PASS", "PASS", "PASS",
    "PASS",
];

/// Why the worktree check is skipped without a worktree.
const GIVE_A_WORKTREE: &str =
    "give --worktree PATH [--branch B] (or --repo R --work-item W) to check a worktree";

/// A stand-in `docker` first on the PATH of the sandbox's commands, so
/// first on the local transport's host: it answers `version` with a server
/// version, or (`answers == false`) fails like a docker whose engine is down.
fn stand_in_docker(sb: &mut Sandbox, answers: bool) {
    let dir = sb.root().join("docker-bin");
    let body = if answers {
        "#!/bin/sh\n[ \"$1 $2 $3\" = 'version --format {{.Server.Version}}' ] || exit 64\necho 27.3.1\n"
    } else {
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n"
    };
    write_script(&dir, "docker", body);
    sb.set("PATH", path_with_first_dir(&dir));
}

/// A local sandbox whose host has a docker that answers.
fn local_sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    stand_in_docker(&mut sb, true);
    sb
}

/// What the loopback sshd's host says to `docker version` (a real docker
/// engine may or may not be there): `PASS` when it answers, else `FAIL`.
fn docker_over_ssh(sshd: &Sshd) -> &'static str {
    let out = std::process::Command::new("ssh")
        .env("PATH", sshd.path_with_wrapper())
        .args([
            "-o",
            "BatchMode=yes",
            &format!("{}@{SSH_HOST}", sshd.user()),
            "docker version --format '{{.Server.Version}}'",
        ])
        .output()
        .unwrap();
    if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The ssh timeout of the unreachable-host tests, and the bound their doctor
/// must finish well within (a correctness bound: one short connect attempt,
/// not the ssh timeout, let alone three).
const SSH_TIMEOUT_SECS: &str = "30";
const WELL_WITHIN: Duration = Duration::from_secs(10);

/// The line of `check`: `PASS name (N ms): detail`, `FAIL name (N ms):
/// detail` or `SKIP name: why`. Asserts there is exactly one, that it
/// carries a duration unless skipped, and returns its status and detail.
fn line_of<'a>(text: &'a str, check: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.get(5..).is_some_and(|rest| {
                rest.starts_with(&format!("{check} (")) || rest.starts_with(&format!("{check}:"))
            })
        })
        .collect();
    assert_eq!(lines.len(), 1, "{check}: {text}");
    let (status, rest) = lines[0].split_once(' ').unwrap();
    let rest = &rest[check.len()..];
    let detail = if status == "SKIP" {
        rest.strip_prefix(": ")
            .unwrap_or_else(|| panic!("{check}: {text}"))
    } else {
        let (ms, detail) = rest
            .strip_prefix(" (")
            .and_then(|r| r.split_once(" ms): "))
            .unwrap_or_else(|| panic!("{check} has no duration: {text}"));
        assert!(ms.parse::<u64>().is_ok(), "{check}: {text}");
        detail
    };
    (status, detail)
}

/// The status of each check, in the order printed; asserts every check is
/// there, in order, and nothing else but fixes and the summary.
fn statuses(text: &str) -> Vec<&str> {
    let checks: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("     fix: ") && !l.contains(" passed, "))
        .collect();
    assert_eq!(checks.len(), CHECKS.len(), "{text}");
    for (line, check) in checks.iter().zip(CHECKS) {
        assert!(line[5..].starts_with(check), "{check} out of order: {text}");
    }
    CHECKS.iter().map(|c| line_of(text, c).0).collect()
}

/// Everything passes but the worktree checks, skipped for want of one.
fn assert_all_pass(code: i32, text: &str) {
    assert_eq!(code, 0, "{text}");
    assert_eq!(statuses(text), NO_WORKTREE, "{text}");
    assert_eq!(line_of(text, "worktree").1, GIVE_A_WORKTREE, "{text}");
    assert!(!text.contains("fix: "), "{text}");
    assert!(text.ends_with("11 passed, 0 failed, 2 skipped\n"), "{text}");
}

fn no_probe_left(sb: &Sandbox) {
    let dir = sb.state_root().join(".selfdeploy/doctor");
    let left: Vec<_> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "probe files left: {left:?}");
}

#[test]
fn local_install_passes() {
    let sb = local_sandbox();
    let (code, text) = doctor(&sb);
    assert_all_pass(code, &text);
    assert_eq!(
        line_of(&text, "host reachable").1,
        "ran `true` on this machine"
    );
    assert_eq!(
        line_of(&text, "hook on host").1,
        format!(
            "hook.sh is a readable regular file in {} on this machine (the wrapper runs `bash hook.sh`)",
            sb.host_repo().display()
        ),
        "{text}"
    );
    assert_eq!(
        line_of(&text, "docker on host").1,
        "docker answers on this machine: server version 27.3.1",
        "{text}"
    );
    no_probe_left(&sb);
}

#[test]
fn local_install_with_a_wrong_mount_and_no_hook_fails_with_fixes() {
    let mut sb = local_sandbox();
    let elsewhere = sb.root().join("not-the-mount");
    fs::create_dir_all(&elsewhere).unwrap();
    sb.set("HOST_REPOS_DIR", elsewhere.into_os_string());
    sb.set("DEPLOY_HOOK_SCRIPT", "missing-hook.sh".into());
    let (code, text) = doctor(&sb);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        statuses(&text),
        [
            "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "SKIP", "SKIP", "PASS", "FAIL", "FAIL",
            "FAIL", "PASS",
        ],
        "{text}"
    );
    assert!(
        text.contains("fix: HOST_REPOS_DIR must be the same directory as REPOS_DIR"),
        "{text}"
    );
    assert!(
        line_of(&text, "hook on host")
            .1
            .starts_with("missing-hook.sh not found"),
        "{text}"
    );
    assert!(
        text.contains("fix: fix DEPLOY_HOST_REPO_PATH or DEPLOY_HOOK_SCRIPT, or install the hook"),
        "{text}"
    );
    assert!(text.ends_with("8 passed, 3 failed, 2 skipped\n"), "{text}");
    no_probe_left(&sb);
}

#[test]
fn ssh_install_passes() {
    let sshd = Sshd::start();
    let sb = over_ssh(&sshd.user(), sshd.path_with_wrapper());
    let (code, text) = doctor(&sb);
    // The host is this machine: its docker engine may or may not answer.
    if docker_over_ssh(&sshd) == "PASS" {
        assert_all_pass(code, &text);
    } else {
        assert_eq!(code, 1, "{text}");
        let mut expected = NO_WORKTREE;
        expected[12] = "FAIL";
        assert_eq!(statuses(&text), expected, "{text}");
        assert!(text.ends_with("10 passed, 1 failed, 2 skipped\n"), "{text}");
    }
    let target = format!("{}@{SSH_HOST}", sshd.user());
    assert_eq!(
        line_of(&text, "host reachable").1,
        format!("ran `true` on {target}")
    );
    assert!(text.contains(&format!("on {target}")), "{text}");
}

#[test]
fn ssh_install_with_a_bad_config_fails() {
    let sshd = Sshd::start();
    let mut sb = over_ssh(&sshd.user(), sshd.path_with_wrapper());
    sb.set(
        "DEPLOY_HOST_REPO_PATH",
        sb.root().join("no-such-checkout").into_os_string(),
    );
    sb.set("STAGING_PORT", "8500".into());
    let (code, text) = doctor(&sb);
    assert_eq!(code, 1, "{text}");
    assert!(
        line_of(&text, "configuration")
            .1
            .starts_with("STAGING_PORT equals DEPLOY_PROD_TARGET_PORT"),
        "{text}"
    );
    assert_eq!(line_of(&text, "host reachable").0, "PASS", "{text}");
    assert_eq!(line_of(&text, "shared mount").0, "PASS", "{text}");
    let (status, detail) = line_of(&text, "hook on host");
    assert_eq!(status, "FAIL", "{text}");
    assert!(detail.starts_with("hook.sh not found in "), "{text}");
    let docker = docker_over_ssh(&sshd);
    assert_eq!(line_of(&text, "docker on host").0, docker, "{text}");
    let summary = if docker == "PASS" {
        "9 passed, 2 failed, 2 skipped\n"
    } else {
        "8 passed, 3 failed, 2 skipped\n"
    };
    assert!(text.ends_with(summary), "{text}");
}

/// A sandbox over ssh to [`SSH_HOST`] whose `ssh` is refused at once (a
/// loopback port where nothing listens), with a 30 s ssh timeout.
fn refused_sandbox(closed: &ClosedPort) -> Sandbox {
    let mut sb = over_ssh(&whoami(), closed.path_with_wrapper());
    sb.set("SELF_DEPLOY_SSH_TIMEOUT_SECS", SSH_TIMEOUT_SECS.into());
    sb
}

fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn ssh_refused_is_one_failure_naming_the_host_and_the_rest_skipped() {
    let closed = ClosedPort::new();
    let sb = refused_sandbox(&closed);
    let target = format!("{}@{SSH_HOST}", whoami());

    let start = Instant::now();
    let (code, text) = doctor(&sb);
    let took = start.elapsed();

    assert_eq!(code, 1, "{text}");
    assert_eq!(
        statuses(&text),
        [
            "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "SKIP", "SKIP", "FAIL", "SKIP", "SKIP",
            "SKIP", "SKIP",
        ],
        "{text}"
    );
    let (_, detail) = line_of(&text, "host reachable");
    assert!(
        detail.starts_with(&format!("ssh to {target} failed: ssh: connect to host ")),
        "{text}"
    );
    assert!(
        detail.ends_with(&format!("port {}: Connection refused", closed.port())),
        "{text}"
    );
    // One fix, about reaching the host; none of the advice for a reachable
    // host that lacks the hook or the mount.
    let fixes: Vec<&str> = text.lines().filter(|l| l.contains("fix: ")).collect();
    assert_eq!(fixes.len(), 1, "{text}");
    for word in ["DEPLOY_SSH_HOST", "port", "key", "known_hosts"] {
        assert!(fixes[0].contains(word), "{word}: {text}");
    }
    for check in NEED_THE_HOST {
        assert_eq!(
            line_of(&text, check).1,
            format!("needs the host: ssh to {target} failed"),
            "{text}"
        );
    }
    assert!(text.ends_with("6 passed, 1 failed, 6 skipped\n"), "{text}");
    assert!(
        took < WELL_WITHIN,
        "took {took:?} with a {SSH_TIMEOUT_SECS} s ssh timeout: {text}"
    );
    no_probe_left(&sb);
}

#[test]
fn json_lines_one_object_per_check() {
    let closed = ClosedPort::new();
    let sb = refused_sandbox(&closed);
    let (code, text) = doctor_with(&sb, &["doctor", "--json"]);
    assert_eq!(code, 1, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {text}")))
        .collect();
    let names: Vec<&str> = lines.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS, "{text}");
    let statuses: Vec<&str> = lines
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "pass", "pass", "pass", "pass", "pass", "pass", "skip", "skip", "fail", "skip", "skip",
            "skip", "skip",
        ],
        "{text}"
    );
    for c in &lines {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["detail", "duration_ms", "fix", "name", "status"],
            "{c}"
        );
        assert!(c["duration_ms"].is_u64(), "{c}");
        assert!(c["detail"].is_string(), "{c}");
        // A fix only where something failed.
        assert_eq!(c["fix"].is_string(), c["status"] == "fail", "{c}");
        if c["status"] == "skip" {
            assert_eq!(c["duration_ms"], 0, "{c}");
        }
        if c["status"] == "skip" && NEED_THE_HOST.contains(&c["name"].as_str().unwrap()) {
            assert!(
                c["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("needs the host: ssh to "),
                "{c}"
            );
        }
    }
    assert_eq!(lines[6]["detail"], GIVE_A_WORKTREE, "{text}");
    assert!(
        lines[8]["detail"]
            .as_str()
            .unwrap()
            .ends_with("Connection refused"),
        "{text}"
    );

    // A passing installation with its worktree: every line a pass, exit 0.
    let sb = local_sandbox();
    let wt = sb.worktree();
    let (code, text) = doctor_with(
        &sb,
        &["doctor", "--json", "--worktree", wt.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().count(), CHECKS.len(), "{text}");
    for l in text.lines() {
        let c: Value = serde_json::from_str(l).unwrap();
        assert_eq!(c["status"], "pass", "{text}");
        assert!(c["fix"].is_null(), "{text}");
    }
}

#[test]
fn without_the_transport_program_what_needs_it_is_skipped() {
    // A PATH holding git alone: no ssh.
    let mut sb = over_ssh(&whoami(), "".into());
    let bin = sb.root().join("git-only");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(tool("git"), bin.join("git")).unwrap();
    sb.set("PATH", bin.into_os_string());
    let (code, text) = doctor(&sb);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        statuses(&text),
        [
            "PASS", "FAIL", "PASS", "PASS", "PASS", "PASS", "SKIP", "SKIP", "SKIP", "SKIP", "SKIP",
            "SKIP", "SKIP",
        ],
        "{text}"
    );
    assert_eq!(
        line_of(&text, "transport program").1,
        "ssh not found on PATH"
    );
    assert_eq!(
        line_of(&text, "host reachable").1,
        "needs the transport program: ssh not found on PATH"
    );
    for check in NEED_THE_HOST {
        assert_eq!(
            line_of(&text, check).1,
            "needs the host: ssh not found on PATH",
            "{text}"
        );
    }
    assert!(text.ends_with("5 passed, 1 failed, 7 skipped\n"), "{text}");
}

/// Each check is printed when it ends, not when every check has: while the
/// probe of the host is held, the checks before it are already on stdout.
#[test]
fn each_check_is_printed_as_it_ends() {
    let closed = ClosedPort::new();
    let mut sb = refused_sandbox(&closed);
    // An ssh that waits while `hold` exists, then is refused.
    let slow = sb.root().join("slow-ssh");
    let hold = Hold::new(sb.root().join("hold"));
    write_script(
        &slow,
        "ssh",
        &format!(
            "#!/bin/sh\nwhile [ -e {hold} ]; do sleep 0.05; done\nexec {ssh} \"$@\"\n",
            hold = sb.root().join("hold").display(),
            ssh = closed.wrapper_dir().join("ssh").display(),
        ),
    );
    sb.set("PATH", path_with_first_dir(&slow));

    let mut child = sb
        .cmd()
        .arg("doctor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Releases the probe after a while whatever happens, so that a doctor
    // that prints nothing until the end fails this test instead of hanging.
    let hold_path = sb.root().join("hold");
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let releaser = std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = fs::remove_file(hold_path);
        }
    });

    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for check in &CHECKS[..8] {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("PASS {check} ("))
                || line.starts_with(&format!("SKIP {check}: ")),
            "{line:?}"
        );
        seen.push(line);
    }
    assert!(
        sb.root().join("hold").exists() && child.try_wait().unwrap().is_none(),
        "the first checks were printed only once the probe had ended: {seen:?}"
    );
    drop(hold);
    let _ = done.send(());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.starts_with("FAIL host reachable ("), "{rest}");
    assert!(rest.ends_with("6 passed, 1 failed, 6 skipped\n"), "{rest}");
    releaser.join().unwrap();
}

/// The host-side checks write their probe under `.selfdeploy/doctor`, which
/// the REPOS_DIR check creates. When that check fails (the share is not
/// mounted), the host cannot write there either, for that reason alone:
/// "host writes state" depends on it and is skipped like "shared mount",
/// not failed with advice about the ssh user's permissions.
#[test]
fn an_unmounted_repos_dir_skips_the_host_write_check_instead_of_blaming_permissions() {
    let mut sb = Sandbox::new();
    let missing = sb.root().join("not-mounted");
    sb.set("REPOS_DIR", missing.clone().into_os_string());
    sb.set("HOST_REPOS_DIR", missing.into_os_string());
    let (code, text) = doctor_with(&sb, &["doctor", "--json"]);
    assert_eq!(code, 1, "{text}");
    let checks: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {text}"))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("REPOS_DIR identity"), "fail", "{text}");
    assert_eq!(status("REPOS_DIR writable"), "skip", "{text}");
    assert_eq!(status("shared mount"), "skip", "{text}");
    assert_eq!(
        status("host writes state"),
        "skip",
        "it fails for want of the probe directory: {text}"
    );
    assert!(
        !text.contains("give the ssh user write access"),
        "wrong advice for an unmounted share: {text}"
    );
}

/// The status and detail of `check` in doctor's JSON Lines.
fn json_check(text: &str, check: &str) -> (String, String, Option<String>) {
    let c: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no {check}: {text}"));
    (
        c["status"].as_str().unwrap().to_owned(),
        c["detail"].as_str().unwrap().to_owned(),
        c["fix"].as_str().map(str::to_owned),
    )
}

/// With its worktree on its branch, whose push origin would take, every
/// check passes; the dry run pushes nothing.
#[test]
fn a_worktree_on_its_branch_with_a_pushable_branch_passes() {
    let sb = local_sandbox();
    let wt = sb.worktree();
    fs::write(wt.join("more.txt"), "more\n").unwrap();
    git(&wt, &["add", "more.txt"]);
    git(&wt, &["commit", "-q", "-m", "more"]);
    let remote_before = git(
        &sb.remote(),
        &["rev-parse", &format!("refs/heads/{BRANCH}")],
    );
    let (code, text) = doctor_with(
        &sb,
        &[
            "doctor",
            "--worktree",
            wt.to_str().unwrap(),
            "--branch",
            BRANCH,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(statuses(&text), ["PASS"; 13], "{text}");
    assert!(text.ends_with("13 passed, 0 failed, 0 skipped\n"), "{text}");
    assert_eq!(
        line_of(&text, "worktree").1,
        format!("{} is a git work tree on refs/heads/{BRANCH}", wt.display())
    );
    let push = line_of(&text, "push dry run").1;
    assert!(
        push.starts_with(&format!(
            "git push --dry-run origin refs/heads/{BRANCH}:refs/heads/{BRANCH} from {}: ",
            wt.display()
        )),
        "{text}"
    );
    assert_eq!(
        git(
            &sb.remote(),
            &["rev-parse", &format!("refs/heads/{BRANCH}")]
        ),
        remote_before,
        "a dry run pushed"
    );
}

/// `--repo R --work-item W` checks the worktree SELF_DEPLOY_WORKTREE names
/// for them.
#[test]
fn the_worktree_template_is_rendered_for_repo_and_work_item() {
    let mut sb = local_sandbox();
    sb.set("SELF_DEPLOY_WORKTREE", "{repos_dir}/../{work_item}".into());
    let (code, text) = doctor_with(
        &sb,
        &[
            "doctor",
            "--json",
            "--repo",
            "orchestrator",
            "--work-item",
            "worktree",
        ],
    );
    assert_eq!(code, 0, "{text}");
    let (status, detail, _) = json_check(&text, "worktree");
    assert_eq!(status, "pass", "{text}");
    assert!(
        detail.ends_with(&format!(
            "/worktree is a git work tree on refs/heads/{BRANCH}"
        )),
        "{text}"
    );
    assert_eq!(json_check(&text, "push dry run").0, "pass", "{text}");

    // A work item whose worktree does not exist fails, and its push is
    // not tried.
    let (code, text) = doctor_with(
        &sb,
        &[
            "doctor",
            "--json",
            "--repo",
            "orchestrator",
            "--work-item",
            "W-404",
        ],
    );
    assert_eq!(code, 1, "{text}");
    let (status, detail, fix) = json_check(&text, "worktree");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("W-404 does not exist"), "{text}");
    assert!(fix.unwrap().contains("SELF_DEPLOY_WORKTREE"), "{text}");
    assert_eq!(json_check(&text, "push dry run").0, "skip", "{text}");
}

/// A worktree on another branch, or no git work tree at all, fails; the
/// push dry run is then skipped.
#[test]
fn a_worktree_on_another_branch_or_no_work_tree_fails() {
    let sb = local_sandbox();
    let wt = sb.worktree();
    let (code, text) = doctor_with(
        &sb,
        &[
            "doctor",
            "--json",
            "--worktree",
            wt.to_str().unwrap(),
            "--branch",
            "other",
        ],
    );
    assert_eq!(code, 1, "{text}");
    let (status, detail, _) = json_check(&text, "worktree");
    assert_eq!(status, "fail", "{text}");
    assert!(
        detail.ends_with(&format!("on refs/heads/{BRANCH}, not on refs/heads/other")),
        "{text}"
    );
    let (status, detail, _) = json_check(&text, "push dry run");
    assert_eq!(status, "skip", "{text}");
    assert_eq!(detail, "needs the worktree check to pass", "{text}");

    let plain = sb.root().join("plain");
    fs::create_dir_all(&plain).unwrap();
    let (code, text) = doctor_with(
        &sb,
        &["doctor", "--json", "--worktree", plain.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{text}");
    let (status, detail, _) = json_check(&text, "worktree");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.contains("is not a git work tree"), "{text}");
    assert_eq!(json_check(&text, "push dry run").0, "skip", "{text}");

    // --branch alone names no worktree: a usage error, no check run.
    let (code, text) = doctor_with(&sb, &["doctor", "--branch", BRANCH]);
    assert_ne!(code, 0, "{text}");
    assert!(!text.contains("PASS"), "{text}");
}

/// A push origin would refuse (its branch has a commit the worktree lacks)
/// fails the dry run with git's reason.
#[test]
fn a_push_origin_would_refuse_fails_the_dry_run() {
    let sb = local_sandbox();
    let other = sb.root().join("other-clone");
    git(
        sb.root(),
        &[
            "clone",
            "-q",
            "-b",
            BRANCH,
            sb.remote().to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    fs::write(other.join("theirs.txt"), "theirs\n").unwrap();
    git(&other, &["add", "theirs.txt"]);
    git(&other, &["commit", "-q", "-m", "theirs"]);
    git(&other, &["push", "-q", "origin", BRANCH]);
    let wt = sb.worktree();
    fs::write(wt.join("mine.txt"), "mine\n").unwrap();
    git(&wt, &["add", "mine.txt"]);
    git(&wt, &["commit", "-q", "-m", "mine"]);

    let (code, text) = doctor_with(
        &sb,
        &[
            "doctor",
            "--json",
            "--worktree",
            wt.to_str().unwrap(),
            "--branch",
            BRANCH,
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert_eq!(json_check(&text, "worktree").0, "pass", "{text}");
    let (status, detail, fix) = json_check(&text, "push dry run");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.starts_with("git push failed ("), "{text}");
    assert!(detail.contains("rejected"), "{text}");
    assert!(fix.unwrap().contains("fast-forwards"), "{text}");
}

/// The hook must be a regular file the ssh user can read (the wrapper runs
/// `bash <hook>`): a directory by that name fails, and so does an
/// unreadable file (for a user that permissions bind).
#[test]
fn the_hook_must_be_a_readable_regular_file() {
    let mut sb = local_sandbox();
    fs::create_dir_all(sb.host_repo().join("hook-dir")).unwrap();
    sb.set("DEPLOY_HOOK_SCRIPT", "hook-dir".into());
    let (code, text) = doctor_with(&sb, &["doctor", "--json"]);
    assert_eq!(code, 1, "{text}");
    let (status, detail, fix) = json_check(&text, "hook on host");
    assert_eq!(status, "fail", "{text}");
    assert!(detail.ends_with("is not a regular file"), "{text}");
    assert!(fix.unwrap().contains("DEPLOY_HOOK_SCRIPT"), "{text}");

    // Not executable is fine: bash reads it.
    use std::os::unix::fs::PermissionsExt as _;
    let hook = sb.host_repo().join("hook.sh");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o644)).unwrap();
    sb.set("DEPLOY_HOOK_SCRIPT", "hook.sh".into());
    let (_, text) = doctor_with(&sb, &["doctor", "--json"]);
    assert_eq!(json_check(&text, "hook on host").0, "pass", "{text}");

    fs::set_permissions(&hook, fs::Permissions::from_mode(0o000)).unwrap();
    let readable_anyway = fs::read(&hook).is_ok(); // root reads it anyway
    let (_, text) = doctor_with(&sb, &["doctor", "--json"]);
    let (status, detail, _) = json_check(&text, "hook on host");
    if readable_anyway {
        assert_eq!(status, "pass", "{text}");
    } else {
        assert_eq!(status, "fail", "{text}");
        assert!(
            detail.ends_with("is not readable by the ssh user"),
            "{text}"
        );
    }
}

/// Docker must answer on the host: a docker whose engine is down fails with
/// its own words; an unreachable host skips the check.
#[test]
fn docker_must_answer_on_the_host() {
    let mut sb = Sandbox::new();
    stand_in_docker(&mut sb, false);
    let (code, text) = doctor(&sb);
    assert_eq!(code, 1, "{text}");
    let (status, detail) = line_of(&text, "docker on host");
    assert_eq!(status, "FAIL", "{text}");
    assert_eq!(
        detail,
        "docker does not answer on this machine: exit status 1: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        "{text}"
    );
    assert!(
        text.contains("fix: install and start the docker engine on the host"),
        "{text}"
    );
    assert!(text.ends_with("10 passed, 1 failed, 2 skipped\n"), "{text}");

    // No docker at all on the host's PATH.
    let bin = sb.root().join("no-docker");
    for name in ["git", "bash"] {
        write_script(
            &bin,
            name,
            &format!("#!/bin/sh\nexec {} \"$@\"\n", tool(name)),
        );
    }
    sb.set("PATH", bin.into_os_string());
    let (_, text) = doctor(&sb);
    let (status, detail) = line_of(&text, "docker on host");
    assert_eq!(status, "FAIL", "{text}");
    assert!(
        detail.starts_with("docker does not answer on this machine: exit status 127"),
        "{text}"
    );
}
