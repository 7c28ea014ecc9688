//! The finalizer's git calls: publish the deploy log (best effort) and read
//! the validated revision for the freshness guard.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::process;
use crate::config::{FINALIZER_NAME, Settings};

fn identity_env(settings: &Settings) -> Vec<(&'static str, OsString)> {
    let email = OsString::from(format!("{FINALIZER_NAME}@{}", settings.git_email_domain));
    vec![
        ("HOME", settings.agent_home_dir.clone().into_os_string()),
        ("GIT_AUTHOR_NAME", FINALIZER_NAME.into()),
        ("GIT_AUTHOR_EMAIL", email.clone()),
        ("GIT_COMMITTER_NAME", FINALIZER_NAME.into()),
        ("GIT_COMMITTER_EMAIL", email),
        ("GIT_TERMINAL_PROMPT", "0".into()),
    ]
}

fn git(
    settings: &Settings,
    worktree: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<process::Finished, String> {
    let mut argv = vec!["-C".to_owned(), worktree.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    process::run("git", &argv, None, &identity_env(settings), timeout).map_err(|e| e.to_string())
}

/// `git add`, `git commit`, and `git push origin <branch>` only when the
/// commit succeeded. Best effort: returns one line per step for the report.
pub fn publish(
    settings: &Settings,
    worktree: &Path,
    rel: &Path,
    message: &str,
    branch: Option<&str>,
) -> Vec<String> {
    let t = settings.git_timeout;
    let rel = rel.to_string_lossy();
    let mut notes = Vec::new();
    match git(settings, worktree, &["add", &rel], t) {
        Ok(out) if out.success() => {}
        Ok(out) => notes.push(format!("git add failed ({})", out.summary())),
        Err(e) => notes.push(format!("git add failed ({e})")),
    }
    match git(settings, worktree, &["commit", "-m", message], t) {
        Ok(out) if out.success() => notes.push("git commit: done".to_owned()),
        Ok(out) => {
            notes.push(format!(
                "git commit failed ({}); push skipped",
                out.summary()
            ));
            return notes;
        }
        Err(e) => {
            notes.push(format!("git commit failed ({e}); push skipped"));
            return notes;
        }
    }
    let branch = match branch {
        Some(b) => b.to_owned(),
        None => match git(settings, worktree, &["symbolic-ref", "--short", "HEAD"], t) {
            Ok(out) if out.success() => out.stdout.trim().to_owned(),
            _ => {
                notes.push("git push skipped: branch unknown (pass --branch)".to_owned());
                return notes;
            }
        },
    };
    match git(settings, worktree, &["push", "origin", &branch], t) {
        Ok(out) if out.success() => notes.push(format!("git push origin {branch}: done")),
        Ok(out) => notes.push(format!(
            "git push origin {branch} failed ({})",
            out.summary()
        )),
        Err(e) => notes.push(format!("git push origin {branch} failed ({e})")),
    }
    notes
}

/// Whether `worktree` is a directory inside a git work tree (the dispatch's
/// worktree guard: a deploy never starts that could not be recorded).
pub fn work_tree(settings: &Settings, worktree: &Path) -> Result<(), String> {
    if !worktree.is_dir() {
        return Err(format!("worktree {} does not exist", worktree.display()));
    }
    let out = git(
        settings,
        worktree,
        &["rev-parse", "--is-inside-work-tree"],
        settings.git_timeout,
    )?;
    if out.success() && out.stdout.trim() == "true" {
        Ok(())
    } else {
        Err(format!(
            "{} is not a git work tree ({})",
            worktree.display(),
            out.summary()
        ))
    }
}

/// The commit at the tip of `branch` (or HEAD) in the worktree.
pub fn branch_tip(
    settings: &Settings,
    worktree: &Path,
    branch: Option<&str>,
) -> Result<String, String> {
    if !worktree.is_dir() {
        return Err(format!("worktree {} does not exist", worktree.display()));
    }
    let rev = format!("{}^{{commit}}", branch.unwrap_or("HEAD"));
    let out = git(
        settings,
        worktree,
        &["rev-parse", "--verify", "--quiet", &rev],
        settings.git_timeout,
    )?;
    let sha = out.stdout.trim();
    if out.success() && !sha.is_empty() {
        Ok(sha.to_owned())
    } else {
        Err(format!(
            "git rev-parse {} in {} found no commit",
            branch.unwrap_or("HEAD"),
            worktree.display()
        ))
    }
}
