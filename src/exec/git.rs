//! The finalizer's git calls: publish the deploy log (best effort) and read
//! the validated revision for the freshness guard.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::process;
use crate::config::{FINALIZER_NAME, Settings};
use crate::contract::names::BranchName;

/// The environment of a git call: `HOME`, author and committer `name
/// <name@GIT_EMAIL_DOMAIN>`, and never a prompt.
pub fn identity_env(settings: &Settings, name: &str) -> Vec<(&'static str, OsString)> {
    let email = OsString::from(format!("{name}@{}", settings.git_email_domain));
    vec![
        ("HOME", settings.agent_home_dir.clone().into_os_string()),
        ("GIT_AUTHOR_NAME", name.into()),
        ("GIT_AUTHOR_EMAIL", email.clone()),
        ("GIT_COMMITTER_NAME", name.into()),
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
    process::run(
        "git",
        &argv,
        None,
        &identity_env(settings, FINALIZER_NAME),
        timeout,
    )
    .map_err(|e| e.to_string())
}

/// What publishing the deploy log came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `Ok` once the branch is on `origin`; else why not (commit or push).
    pub pushed: Result<(), String>,
    /// One line per step, for the report.
    pub notes: Vec<String>,
}

/// Commits the file at `rel` (relative to the worktree) **alone**, whatever
/// else is staged, and pushes the branch to `origin`. Git safety, as no value
/// from outside may steer git: `--` before every path, a full refspec for
/// the push, a branch that was validated as a branch name, and one git at a
/// time per worktree (items may share one; git's own `index.lock` would
/// otherwise fail all but one of them).
pub fn publish(
    settings: &Settings,
    worktree: &Path,
    rel: &Path,
    message: &str,
    branch: Option<&str>,
) -> Published {
    let mut notes = Vec::new();
    let pushed = match WorktreeLock::acquire(settings, worktree) {
        Ok(_lock) => commit_and_push(settings, worktree, rel, message, branch, &mut notes),
        Err(e) => Err(e),
    };
    if let Err(why) = &pushed {
        notes.push(format!("not pushed: {why}"));
    }
    Published { pushed, notes }
}

fn commit_and_push(
    settings: &Settings,
    worktree: &Path,
    rel: &Path,
    message: &str,
    branch: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let t = settings.git_timeout;
    let rel = rel.to_string_lossy();
    let step = |what: &str, out: Result<process::Finished, String>| match out {
        Ok(out) if out.success() => Ok(out),
        Ok(out) => Err(format!("git {what} failed ({})", out.summary())),
        Err(e) => Err(format!("git {what} failed ({e})")),
    };
    let branch = match branch {
        Some(b) => b.to_owned(),
        None => {
            let out = step(
                "symbolic-ref",
                git(
                    settings,
                    worktree,
                    &["symbolic-ref", "--short", "-q", "HEAD"],
                    t,
                ),
            )
            .map_err(|e| format!("{e}: branch unknown, pass --branch"))?;
            out.stdout.trim().to_owned()
        }
    };
    // The worktree's own branch name is checked like a caller's.
    let branch = BranchName::new(&branch).map_err(|e| e.to_string())?;
    // The commit goes where HEAD is: pushing another branch would report a
    // push that never carried the log.
    let head = step(
        "symbolic-ref",
        git(settings, worktree, &["symbolic-ref", "-q", "HEAD"], t),
    )?;
    if head.stdout.trim() != format!("refs/heads/{branch}") {
        return Err(format!(
            "the worktree {} is on {}, not on branch {branch}, so the log would not be on the pushed branch; check out {branch} there",
            worktree.display(),
            head.stdout.trim(),
        ));
    }
    clear_stale_index_lock(settings, worktree, notes)?;
    step("add", git(settings, worktree, &["add", "--", &rel], t))?;
    // Nothing staged for this path: it was committed before (a retry).
    let staged = git(
        settings,
        worktree,
        &["diff", "--cached", "--quiet", "--", &rel],
        t,
    )?;
    if staged.code == Some(1) {
        step(
            "commit",
            git(
                settings,
                worktree,
                &["commit", "-q", "-m", message, "--", &rel],
                t,
            ),
        )?;
        notes.push("git commit: done".to_owned());
    }
    // "Nothing to commit" and a commit that did not take the file (a path
    // git ignores, a nested repository) must not read as done: the committed
    // tree holds the log's exact bytes, or it is not recorded.
    let committed = git(
        settings,
        worktree,
        &["ls-tree", "--object-only", "HEAD", "--", &rel],
        t,
    )?;
    let written = step(
        "hash-object",
        git(
            settings,
            worktree,
            &["hash-object", "--no-filters", "--", &rel],
            t,
        ),
    )?;
    if !committed.success() || committed.stdout.trim().is_empty() {
        return Err(format!(
            "the deploy log {rel} is not in the committed tree (git ls-tree HEAD found nothing: is its directory ignored, or a nested repository?)"
        ));
    }
    if committed.stdout.trim() != written.stdout.trim() {
        return Err(format!(
            "the committed deploy log {rel} differs from the one written (blob {} committed, {} written)",
            committed.stdout.trim(),
            written.stdout.trim()
        ));
    }
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    step(
        "push",
        git(settings, worktree, &["push", "-q", "origin", &refspec], t),
    )?;
    notes.push(format!("git push origin {branch}: done"));
    Ok(())
}

/// A git killed mid-commit (with the engine, kill -9) leaves
/// `.git/index.lock`, and every later git on the worktree fails. Holding the
/// worktree's own lock, the engine knows none of its gits runs there; a lock
/// older than the git timeout that no process holds open was left by a dead
/// git, and is removed (said in the report). Otherwise the error names it
/// and the exact command.
fn clear_stale_index_lock(
    settings: &Settings,
    worktree: &Path,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let out = git(
        settings,
        worktree,
        &["rev-parse", "--absolute-git-dir"],
        settings.git_timeout,
    )?;
    if !out.success() {
        return Ok(());
    }
    let lock = Path::new(out.stdout.trim()).join("index.lock");
    let Ok(meta) = std::fs::symlink_metadata(&lock) else {
        return Ok(());
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .unwrap_or_default();
    let remove = format!("rm -- '{}'", lock.display());
    if age < settings.git_timeout {
        return Err(format!(
            "{} exists ({} s old): another git is using the worktree; the next poll retries (if no git runs there, `{remove}`)",
            lock.display(),
            age.as_secs()
        ));
    }
    if let Some(pid) = process::holder_of(&lock) {
        return Err(format!(
            "{} is held open by process {pid}: a git still uses the worktree; the next poll retries (once it is gone, or if it is not git, `{remove}`)",
            lock.display()
        ));
    }
    std::fs::remove_file(&lock).map_err(|e| {
        format!(
            "{} is stale ({} s old, no process holds it) but cannot be removed: {e}; run `{remove}`",
            lock.display(),
            age.as_secs()
        )
    })?;
    notes.push(format!(
        "removed a stale {} ({} s old, no process held it: a git killed mid-commit left it)",
        lock.display(),
        age.as_secs()
    ));
    Ok(())
}

/// One git at a time per worktree: an exclusive flock on a file named after
/// the worktree's canonical path, under REPOS_DIR (outside any worktree).
struct WorktreeLock {
    _file: std::fs::File,
}

impl WorktreeLock {
    fn acquire(settings: &Settings, worktree: &Path) -> Result<WorktreeLock, String> {
        use sha2::Digest as _;
        let canonical = worktree
            .canonicalize()
            .map_err(|e| format!("worktree {}: {e}", worktree.display()))?;
        let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let path = settings
            .repos_dir
            .join(".selfdeploy/git-locks")
            .join(format!("{}.lock", hex::encode(&digest[..12])));
        let lock = crate::store::ItemLock::acquire(&path, settings.lock_timeout)
            .map_err(|e| format!("git lock of {}: {e}", canonical.display()))?;
        Ok(WorktreeLock {
            _file: lock.into_file(),
        })
    }
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

/// The ref HEAD names in the worktree (`refs/heads/<branch>`); an error
/// when HEAD is detached.
pub fn head_ref(settings: &Settings, worktree: &Path) -> Result<String, String> {
    let out = git(
        settings,
        worktree,
        &["symbolic-ref", "--quiet", "HEAD"],
        settings.git_timeout,
    )?;
    let head = out.stdout.trim();
    if out.success() && !head.is_empty() {
        Ok(head.to_owned())
    } else if out.code == Some(1) {
        Err("HEAD is detached".to_owned())
    } else {
        Err(format!("git symbolic-ref HEAD failed: {}", out.summary()))
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
    // A tag named like the branch wins over it in git's lookup: the branch
    // is named by its full ref.
    let rev = match branch {
        Some(branch) => format!("refs/heads/{branch}^{{commit}}"),
        None => "HEAD^{commit}".to_owned(),
    };
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
