//! Proves the loopback sshd harness works: commands run remotely through the
//! `ssh` wrapper found on PATH, and a detached remote command outlives both
//! the ssh invocation and the server.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::sandbox::wait_for;
use crate::support::sshd::Sshd;

/// Runs `ssh -o StrictHostKeyChecking=no <host> <remote>` the way a program
/// would: `ssh` is looked up on the wrapper-prefixed PATH. Fails the test if
/// ssh does not return within `limit`.
fn ssh(sshd: &Sshd, host: &str, remote: &str, stdin: &[u8], limit: Duration) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (scratch.path().join("out"), scratch.path().join("err"));
    let input = scratch.path().join("in");
    fs::write(&input, stdin).unwrap();
    let mut child = Command::new("ssh")
        .env("PATH", sshd.path_with_wrapper())
        .args(["-o", "StrictHostKeyChecking=no", host, remote])
        .stdin(fs::File::open(&input).unwrap())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn ssh from the wrapper PATH");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ssh {host} {remote:?} did not return within {limit:?}; stderr: {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: fs::read(&out_path).unwrap(),
        stderr: fs::read(&err_path).unwrap(),
    }
}

#[test]
fn runs_remote_commands_through_the_wrapper() {
    let sshd = Sshd::start();
    assert!(sshd.port() > 0);
    assert!(sshd.wrapper_dir().join("ssh").is_file());
    let resolved = Command::new("sh")
        .args(["-c", "command -v ssh"])
        .env("PATH", sshd.path_with_wrapper())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&resolved.stdout).trim(),
        sshd.wrapper_dir().join("ssh").to_str().unwrap(),
        "the wrapper must shadow the system ssh"
    );

    // Any host alias reaches the loopback server, as the current user.
    let out = ssh(
        &sshd,
        "prod-box.example",
        "echo hello; id -un; printf '%s' \"$SSH_CONNECTION\"; echo; cat",
        b"from stdin\n",
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "unexpected output: {stdout:?}");
    assert_eq!(lines[0], "hello");
    assert_eq!(lines[1], sshd.user());
    // SSH_CONNECTION = "client_ip client_port server_ip server_port".
    let connection: Vec<&str> = lines[2].split(' ').collect();
    assert_eq!(connection.len(), 4, "SSH_CONNECTION: {:?}", lines[2]);
    assert_eq!(connection[2], "127.0.0.1");
    assert_eq!(connection[3], sshd.port().to_string());
    assert_eq!(lines[3], "from stdin");

    // The remote exit status comes back through ssh.
    let out = ssh(&sshd, "other-alias", "exit 3", b"", Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn detached_remote_command_survives_ssh_and_sshd() {
    let sshd = Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let go = work.path().join("go");
    let out = work.path().join("out");
    let log = work.path().join("detached.log");
    for p in [&go, &out, &log] {
        assert!(!p.to_str().unwrap().contains(['\'', '"', ' ']));
    }

    // The detached job waits (bounded, ~10 s) for a go file that the test
    // creates only after ssh returned and the server was stopped.
    let remote = format!(
        "setsid bash -c 'echo started >&2; i=0; \
         while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         [ -e {go} ] && echo survived > {out}' >> {log} 2>&1 </dev/null &",
        go = go.display(),
        out = out.display(),
        log = log.display(),
    );
    let started = Instant::now();
    let result = ssh(
        &sshd,
        "deploy-target",
        &remote,
        b"",
        Duration::from_secs(20),
    );
    assert!(
        result.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    eprintln!("detached launch: ssh returned in {:?}", started.elapsed());
    assert!(!out.exists(), "the job must still be waiting");

    drop(sshd);
    fs::write(&go, "").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || out.exists()),
        "the detached job did not survive; its log: {:?}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "survived\n");
    assert_eq!(fs::read_to_string(&log).unwrap(), "started\n");
}
