//! `selfdeploy doctor` over the local transport and over a real loopback
//! sshd: one passing and one failing installation each.

use std::fs;

use crate::support::sandbox::{Sandbox, over_ssh};
use crate::support::sshd::Sshd;

fn doctor(sb: &Sandbox) -> (i32, String) {
    let out = sb.run(&["doctor"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const CHECKS: [&str; 7] = [
    "configuration",
    "transport program",
    "git",
    "REPOS_DIR writable",
    "shared mount",
    "hook on host",
    "host writes state",
];

fn assert_all_pass(code: i32, text: &str) {
    assert_eq!(code, 0, "{text}");
    for check in CHECKS {
        assert!(text.contains(&format!("PASS {check}: ")), "{check}: {text}");
    }
    assert!(text.ends_with("7 passed, 0 failed\n"), "{text}");
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
    assert!(text.contains("PASS REPOS_DIR writable"), "{text}");
    assert!(text.contains("FAIL shared mount: "), "{text}");
    assert!(
        text.contains("fix: HOST_REPOS_DIR must be the same directory as REPOS_DIR"),
        "{text}"
    );
    assert!(
        text.contains("FAIL hook on host: missing-hook.sh not found"),
        "{text}"
    );
    assert!(text.contains("FAIL host writes state"), "{text}");
    assert!(text.ends_with("4 passed, 3 failed\n"), "{text}");
    no_probe_left(&sb);
}

#[test]
fn ssh_install_passes() {
    let sshd = Sshd::start();
    let sb = over_ssh(&sshd.user(), sshd.path_with_wrapper());
    let (code, text) = doctor(&sb);
    assert_all_pass(code, &text);
    assert!(
        text.contains(&format!("on {}@deploy-host.test", sshd.user())),
        "{text}"
    );
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
        text.contains("FAIL configuration: STAGING_PORT equals DEPLOY_PROD_TARGET_PORT"),
        "{text}"
    );
    assert!(text.contains("PASS shared mount"), "{text}");
    assert!(
        text.contains("FAIL hook on host: hook.sh not found in "),
        "{text}"
    );
    assert!(text.ends_with("5 passed, 2 failed\n"), "{text}");
}
