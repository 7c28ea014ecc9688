//! Running a test in a process of its own.
//!
//! A replay runs the engine in the test process, which takes the work item's
//! lock (a `flock`) there. A child process that another test starts in the
//! meantime holds a copy of every open descriptor until it executes its
//! program, the lock file's included: for that moment the lock stays taken
//! after the replay has let it go, and a replay step that takes it without
//! waiting (a simulated "another process holds the lock") finds it busy. In
//! a process that runs one test, nobody starts processes behind its back.

use std::process::Command;

/// Set, to the test's name, in the process that runs the test alone.
const ALONE: &str = "SELFDEPLOY_IT_ALONE";

/// Whether to run the test's body here. In the test binary's own run: runs
/// the test `name` (its path in this binary, `module::test`) in a new
/// process of the binary that runs nothing else, asserts that it passed, and
/// returns `false`; what the test printed to stderr is printed again here
/// (shown with `--nocapture`, like any test's). In that process: returns
/// `true`.
pub fn alone(name: &str) -> bool {
    if std::env::var_os(ALONE).is_some_and(|v| v == name) {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ALONE, name)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed;"),
        "{name}, run alone: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
