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

    #[test]
    fn timeout_kills_the_whole_group() {
        let start = Instant::now();
        // The grandchild keeps stdout open; only a group kill ends the wait.
        let err = run(
            "sh",
            &["-c".into(), "sleep 30 & sleep 30".into()],
            None,
            &[],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20));
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
