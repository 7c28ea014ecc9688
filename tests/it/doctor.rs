//! `selfdeploy doctor` over the local transport and over a real loopback
//! sshd: one passing and one failing installation each; over ssh to a port
//! where nothing listens (one failure, the checks that need the host
//! skipped, within seconds); without the transport program; as JSON Lines;
//! and each check printed as soon as it ends.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::sandbox::{
    Hold, SSH_HOST, Sandbox, over_ssh, path_with_first_dir, tool, write_script,
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
const CHECKS: [&str; 10] = [
    "configuration",
    "transport program",
    "git",
    "REPOS_DIR owner",
    "REPOS_DIR identity",
    "REPOS_DIR writable",
    "host reachable",
    "shared mount",
    "hook on host",
    "host writes state",
];

/// The checks that need the host.
const NEED_THE_HOST: [&str; 3] = ["shared mount", "hook on host", "host writes state"];

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

fn assert_all_pass(code: i32, text: &str) {
    assert_eq!(code, 0, "{text}");
    assert_eq!(statuses(text), ["PASS"; 10], "{text}");
    assert!(!text.contains("fix: "), "{text}");
    assert!(text.ends_with("10 passed, 0 failed, 0 skipped\n"), "{text}");
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
    let sb = Sandbox::new();
    let (code, text) = doctor(&sb);
    assert_all_pass(code, &text);
    assert_eq!(
        line_of(&text, "host reachable").1,
        "ran `true` on this machine"
    );
    no_probe_left(&sb);
}

#[test]
fn local_install_with_a_wrong_mount_and_no_hook_fails_with_fixes() {
    let mut sb = Sandbox::new();
    let elsewhere = sb.root().join("not-the-mount");
    fs::create_dir_all(&elsewhere).unwrap();
    sb.set("HOST_REPOS_DIR", elsewhere.into_os_string());
    sb.set("DEPLOY_HOOK_SCRIPT", "missing-hook.sh".into());
    let (code, text) = doctor(&sb);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        statuses(&text),
        [
            "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "FAIL", "FAIL", "FAIL",
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
    assert!(text.ends_with("7 passed, 3 failed, 0 skipped\n"), "{text}");
    no_probe_left(&sb);
}

#[test]
fn ssh_install_passes() {
    let sshd = Sshd::start();
    let sb = over_ssh(&sshd.user(), sshd.path_with_wrapper());
    let (code, text) = doctor(&sb);
    assert_all_pass(code, &text);
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
    assert!(text.ends_with("8 passed, 2 failed, 0 skipped\n"), "{text}");
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
            "PASS", "PASS", "PASS", "PASS", "PASS", "PASS", "FAIL", "SKIP", "SKIP", "SKIP",
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
    assert!(text.ends_with("6 passed, 1 failed, 3 skipped\n"), "{text}");
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
            "pass", "pass", "pass", "pass", "pass", "pass", "fail", "skip", "skip", "skip",
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
            assert!(
                c["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("needs the host: ssh to "),
                "{c}"
            );
        }
    }
    assert!(
        lines[6]["detail"]
            .as_str()
            .unwrap()
            .ends_with("Connection refused"),
        "{text}"
    );

    // A passing installation: every line a pass, exit 0.
    let sb = Sandbox::new();
    let (code, text) = doctor_with(&sb, &["doctor", "--json"]);
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
            "PASS", "FAIL", "PASS", "PASS", "PASS", "PASS", "SKIP", "SKIP", "SKIP", "SKIP",
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
    assert!(text.ends_with("5 passed, 1 failed, 4 skipped\n"), "{text}");
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
    for check in &CHECKS[..6] {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("PASS {check} (")), "{line:?}");
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
    assert!(rest.ends_with("6 passed, 1 failed, 3 skipped\n"), "{rest}");
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
