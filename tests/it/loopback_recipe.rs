//! The recipe of docs/operations/LOOPBACK.md, as an operator follows it:
//! `scripts/loopback-sshd.sh start`, a whole demo deploy over ssh through
//! it, `stop`. Shell scripts we ship pass shellcheck.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::sandbox::{alive, path_with_first_dir, tool};

fn script(args: &[&str]) -> Output {
    Command::new(tool("bash"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/loopback-sshd.sh"
        ))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_loopback_recipe_deploys_over_ssh() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().join("lo");
    let dir_arg = dir_arg.to_str().unwrap();
    let started = script(&["start", dir_arg]);
    assert_eq!(started.status.code(), Some(0), "{started:?}");
    let said = String::from_utf8_lossy(&started.stdout);
    assert!(
        said.contains(&format!("export PATH={dir_arg}/bin:$PATH")),
        "{said}"
    );
    let pid: u32 = std::fs::read_to_string(Path::new(dir_arg).join("sshd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let again = script(&["start", dir_arg]);
    assert_eq!(again.status.code(), Some(1), "a second start: {again:?}");

    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let demo = Command::new(env!("CARGO_BIN_EXE_selfdeploy"))
        .args(["demo", "--ssh", &format!("{}@loopback", user.trim())])
        .env("PATH", path_with_first_dir(&Path::new(dir_arg).join("bin")))
        .output()
        .unwrap();
    let stopped = script(&["stop", dir_arg]);
    let text = String::from_utf8_lossy(&demo.stdout);
    assert_eq!(demo.status.code(), Some(0), "{text}\n{demo:?}");
    assert!(text.contains("transport ssh to "), "{text}");
    assert!(
        text.contains("effect: ssh ssh -o StrictHostKeyChecking=no "),
        "{text}"
    );
    assert!(text.contains("claimed dispatch-"), "{text}");
    assert!(text.contains("-> finalized_success"), "{text}");

    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
    assert!(
        crate::support::sandbox::wait_for(std::time::Duration::from_secs(5), || !alive(pid)),
        "sshd {pid} still runs after stop"
    );
    let usage = script(&["begin", dir_arg]);
    assert_eq!(usage.status.code(), Some(64), "{usage:?}");
}

#[test]
fn shipped_shell_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts = Vec::new();
    for dir in ["scripts", "docs/operations", ".ci"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let is_shell = path.extension().is_some_and(|e| e == "sh")
                || std::fs::read_to_string(&path)
                    .is_ok_and(|t| t.starts_with("#!/usr/bin/env bash"));
            if is_shell {
                scripts.push(path);
            }
        }
    }
    assert!(scripts.len() >= 3, "{scripts:?}");
    let out = Command::new(tool("shellcheck"))
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The recipe with a directory whose path holds a space (a home directory
/// such as "/home/ops/deploy tests"): the script quotes it where it uses
/// it, so its sshd starts and the wrapper reaches it.
#[test]
fn the_loopback_script_works_in_a_directory_with_a_space() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().join("loop back");
    let dir_arg = dir_arg.to_str().unwrap();
    let started = script(&["start", dir_arg]);
    let reached = started.status.success()
        && Command::new(Path::new(dir_arg).join("bin/ssh"))
            .args(["loopback", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
    let stopped = script(&["stop", dir_arg]);
    assert_eq!(started.status.code(), Some(0), "{started:?}");
    assert!(reached, "the wrapper did not reach the loopback sshd");
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
}
