//! Hostile env files: a FIFO, a device or a huge file named as the env file
//! (by `--env-file`, by `SELFDEPLOY_ENV_FILE`, or to `gen-secrets --write`)
//! is refused at once with one line naming the file, never waited on and
//! never read into memory whole.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::record::mkfifo;
use crate::support::sandbox::*;

/// Runs `cmd`, killing it if it has not ended within 20 seconds.
fn output_within(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn selfdeploy");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            child.wait().ok();
            panic!("{what}: still running after 20 s (it waits on the file)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_refused(out: &Output, file: &Path, says: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains(says),
        "{what}: {stderr}"
    );
}

#[test]
fn a_fifo_as_the_env_file_is_refused_not_waited_on() {
    let sb = Sandbox::new();
    let fifo = sb.root().join("fifo.env");
    mkfifo(&fifo);
    let mut by_flag = sb.cmd();
    by_flag.args(["--env-file", fifo.to_str().unwrap(), "config"]);
    let out = output_within(by_flag, "--env-file FIFO");
    assert_refused(&out, &fifo, "a FIFO", "--env-file FIFO");

    let mut by_variable = sb.cmd();
    by_variable.env("SELFDEPLOY_ENV_FILE", &fifo).arg("config");
    let out = output_within(by_variable, "SELFDEPLOY_ENV_FILE FIFO");
    assert_refused(&out, &fifo, "a FIFO", "SELFDEPLOY_ENV_FILE FIFO");

    let mut write = sb.cmd();
    write.args(["gen-secrets", "--write", fifo.to_str().unwrap(), "--force"]);
    let out = output_within(write, "gen-secrets --write FIFO");
    assert_refused(&out, &fifo, "a FIFO", "gen-secrets --write FIFO");
}

#[test]
fn an_endless_device_as_the_env_file_is_refused_not_read() {
    let sb = Sandbox::new();
    let zero = Path::new("/dev/zero");
    let mut cmd = sb.cmd();
    cmd.args(["--env-file", "/dev/zero", "config"]);
    let out = output_within(cmd, "--env-file /dev/zero");
    assert_refused(&out, zero, "not a regular file", "--env-file /dev/zero");
}

#[test]
fn a_huge_env_file_is_refused_by_its_size() {
    let sb = Sandbox::new();
    let huge = sb.root().join("huge.env");
    let mut bytes = b"A=".to_vec();
    bytes.resize(8 * 1024 * 1024, b'x');
    bytes.push(b'\n');
    std::fs::write(&huge, &bytes).unwrap();
    // Through a symbolic link, as any reader follows it.
    let link = sb.root().join("link.env");
    std::os::unix::fs::symlink(&huge, &link).unwrap();
    for file in [&huge, &link] {
        let mut cmd = sb.cmd();
        cmd.args(["--env-file", file.to_str().unwrap(), "config"]);
        let out = output_within(cmd, "huge env file");
        assert_refused(&out, file, "too large", "huge env file");
        let mut write = sb.cmd();
        write.args(["gen-secrets", "--write", file.to_str().unwrap(), "--force"]);
        let out = output_within(write, "gen-secrets huge");
        assert_refused(&out, file, "too large", "gen-secrets huge");
        assert_eq!(std::fs::metadata(&huge).unwrap().len(), bytes.len() as u64);
    }
}

/// `lock --message` refuses a line break; any other control character (an
/// escape sequence that rewrites the approver's terminal, a bell) and any
/// control character in `--actor` (a line break there forges a line of the
/// refusal and of `status`) is refused too: the freeze is shown to whoever
/// approves, as it is.
#[test]
fn a_freeze_never_carries_control_characters() {
    let sb = Sandbox::new();
    sb.init_repos_dir();
    for args in [
        &["--message", "release \x1b[2Jweek", "--actor", "alice"][..],
        &["--message", "release\x07 week", "--actor", "alice"],
        &["--message", "release\tweek\x7f", "--actor", "alice"],
        &[
            "--message",
            "release week",
            "--actor",
            "alice\nunlocked by bob",
        ],
        &["--message", "release week", "--actor", "alice\x1b[1A"],
    ] {
        let mut cmd = sb.cmd();
        cmd.args(["lock", "--repo", "orchestrator"]).args(args);
        let out = output_within(cmd, "lock");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("control character"), "{args:?}: {stderr}");
        let status = sb.run(&["status"]);
        assert!(
            !String::from_utf8_lossy(&status.stdout).contains("locked"),
            "{args:?}: a freeze was set"
        );
    }
}
