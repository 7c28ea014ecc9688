//! Running a program with a deadline. The child gets its own process group so
//! that a timeout kills it and everything it spawned: a grandchild holding the
//! captured pipes open would otherwise keep `wait` blocked.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a finished program left.
#[derive(Debug, Clone)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The status and the first line of output, for one-line reports.
    pub fn summary(&self) -> String {
        let status = match self.code {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        };
        let detail = first_line(&self.stderr).or_else(|| first_line(&self.stdout));
        match detail {
            Some(line) => format!("{status}: {line}"),
            None => status,
        }
    }
}

fn first_line(s: &str) -> Option<String> {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0} not found on PATH")]
    NotFound(String),
    #[error("{program} timed out after {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    #[error("cannot run {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
}

/// Finds a program on PATH; the error names it.
/// A process that holds `path` open, if any can be seen (`/proc/*/fd`; a
/// process of another user is seen only by root).
pub fn holder_of(path: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(path).ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l == target) {
                return Some(pid);
            }
        }
    }
    None
}

pub fn find(program: &str) -> Result<PathBuf, RunError> {
    which::which(program).map_err(|_| RunError::NotFound(program.to_owned()))
}

/// Runs `program args` with stdin null, output captured and a deadline.
pub fn run(
    program: &str,
    args: &[String],
    cwd: Option<&Path>,
    env: &[(&str, OsString)],
    timeout: Duration,
) -> Result<Finished, RunError> {
    let path = find(program)?;
    let io = |source| RunError::Io {
        program: program.to_owned(),
        source,
    };
    let mut expr = duct::cmd(&path, args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|c| {
            c.process_group(0);
            Ok(())
        });
    if let Some(dir) = cwd {
        expr = expr.dir(dir);
    }
    // Secrets stay in this process: no hook, ssh or git inherits them.
    for spec in crate::config::REGISTRY.iter().filter(|s| s.is_secret()) {
        expr = expr.env_remove(spec.name);
    }
    for (key, value) in env {
        expr = expr.env(key, value);
    }
    let handle = expr.start().map_err(io)?;
    match handle.wait_timeout(timeout).map_err(io)? {
        Some(output) => Ok(Finished {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        None => {
            for pid in handle.pids() {
                // The group id is the child's pid (process_group(0) above).
                // SAFETY: kill(2) with a negative pid signals that group only.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = handle.kill();
            Err(RunError::Timeout {
                program: program.to_owned(),
                timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn captures_status_and_output() {
        let out = run(
            "sh",
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            None,
            &[],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.summary(), "exit status 3: err");
    }

    /// Whether `pid` is still running (a zombie, killed but not yet reaped
    /// by whoever inherited it, counts as gone).
    fn running(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                !matches!(state, Some("Z" | "X"))
            }
            Err(_) => false,
        }
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild-pid");
        // A grandchild that ignores SIGTERM records its pid and sleeps; the
        // child waits for the record, then sleeps holding stdout open, so
        // only a kill of the whole group ends the wait.
        let script = r#"
            sh -c 'trap "" TERM; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 60' \
                grandchild "$1" </dev/null >/dev/null 2>&1 &
            while [ ! -s "$1" ]; do sleep 0.01; done
            sleep 60
        "#;
        let start = Instant::now();
        let err = run(
            "sh",
            &[
                "-c".into(),
                script.into(),
                "child".into(),
                pid_file.to_str().unwrap().into(),
            ],
            None,
            &[],
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("the grandchild started before the deadline")
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = running(pid);
        if alive {
            // SAFETY: kill(2) on the pid the grandchild reported; cleanup.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        assert!(
            !alive,
            "grandchild {pid} (ignores SIGTERM) outlived the timeout"
        );
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(
            "no-such-program-xyz",
            &[],
            None,
            &[],
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no-such-program-xyz not found on PATH");
    }
}
