//! Deploy freezes (`selfdeploy lock` / `unlock`): one file per locked repo,
//! and a repo-level audit trail of every lock and unlock.
//!
//! ```text
//! <REPOS_DIR>/.selfdeploy/freeze/<repo>.json    the freeze, while the repo is locked
//! <REPOS_DIR>/.selfdeploy/freeze/<repo>.jsonl   every lock and unlock, oldest first
//! ```
//! A freeze is a fact of the repo, not of one work item: its audit trail is
//! the repo's, beside it, and an item's history stays the item's.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::open_regular;
use crate::atomic;
use crate::config::Durability;
use crate::contract::names::RepoName;
pub use crate::machine::Freeze;

/// A freeze file is a few lines; anything larger is not one.
const FREEZE_READ_LIMIT: u64 = 64 * 1024;
/// The audit trail is read whole by `history --freeze`; it grows by a line
/// per lock or unlock.
const AUDIT_READ_LIMIT: u64 = 16 * 1024 * 1024;

/// Where the freezes live.
pub fn dir(repos_dir: &Path) -> PathBuf {
    repos_dir.join(".selfdeploy").join("freeze")
}

/// The freeze file of `repo`.
pub fn path(repos_dir: &Path, repo: &RepoName) -> PathBuf {
    dir(repos_dir).join(format!("{repo}.json"))
}

/// The audit trail of `repo`'s freezes.
pub fn audit_path(repos_dir: &Path, repo: &RepoName) -> PathBuf {
    dir(repos_dir).join(format!("{repo}.jsonl"))
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezeEvent {
    pub time: String,
    pub actor: String,
    /// `lock` or `unlock`.
    pub event: String,
    pub repo: String,
    /// The freeze's message (for an unlock: the message of the freeze it
    /// lifted).
    pub message: String,
}

fn read_limited(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() > limit {
        return Err(io::Error::other(format!("it is larger than {limit} bytes")));
    }
    let mut raw = Vec::new();
    file.take(limit).read_to_end(&mut raw)?;
    Ok(Some(raw))
}

/// The freeze of `repo`, `None` when it is not locked. A file that cannot be
/// read or parsed is an error (the freeze guard then refuses: fail closed).
pub fn read(repos_dir: &Path, repo: &RepoName) -> Result<Option<Freeze>, String> {
    let path = path(repos_dir, repo);
    let why = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    match read_limited(&path, FREEZE_READ_LIMIT) {
        Ok(None) => Ok(None),
        Ok(Some(raw)) => serde_json::from_slice(&raw).map(Some).map_err(|e| why(&e)),
        Err(e) => Err(why(&e)),
    }
}

/// Every freeze in place, by repo; an unreadable one is listed as its error.
pub fn all(repos_dir: &Path) -> io::Result<Vec<(String, Result<Freeze, String>)>> {
    let entries = match fs::read_dir(dir(repos_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(repo) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let Ok(repo) = RepoName::new(repo) else {
            continue;
        };
        match read(repos_dir, &repo) {
            Ok(Some(freeze)) => out.push((repo.to_string(), Ok(freeze))),
            Ok(None) => {}
            Err(why) => out.push((repo.to_string(), Err(why))),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Why a lock or unlock did nothing.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("repo {repo} is already locked by {} since {}: {:?}; unlock it first (`selfdeploy unlock --repo {repo}`)", .freeze.actor, .freeze.time, .freeze.message)]
    AlreadyLocked { repo: String, freeze: Freeze },
    #[error("repo {0} is not locked; nothing done")]
    NotLocked(String),
    #[error("{path}: {error}")]
    Io { path: String, error: String },
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> FreezeError {
    FreezeError::Io {
        path: path.display().to_string(),
        error: error.to_string(),
    }
}

/// Appends one line to the audit trail (one write, O_APPEND), durably when
/// asked.
fn audit(
    repos_dir: &Path,
    repo: &RepoName,
    event: &FreezeEvent,
    durability: Durability,
) -> Result<(), FreezeError> {
    let path = audit_path(repos_dir, repo);
    let mut line = serde_json::to_string(event).map_err(|e| io_error(&path, e))?;
    line.push('\n');
    let mut file = open_regular(&path, OpenOptions::new().create(true).append(true))
        .map_err(|e| io_error(&path, e))?;
    file.write_all(line.as_bytes())
        .map_err(|e| io_error(&path, e))?;
    if durability == Durability::Synced {
        file.sync_all().map_err(|e| io_error(&path, e))?;
    }
    Ok(())
}

/// Locks `repo` (never over a freeze in place: the one who set it is named),
/// then records it in the audit trail.
pub fn lock(repos_dir: &Path, freeze: &Freeze, durability: Durability) -> Result<(), FreezeError> {
    let repo = RepoName::new(&freeze.repo).map_err(|e| io_error(repos_dir, e))?;
    let dir = dir(repos_dir);
    atomic::create_dir_all_with(&dir, durability).map_err(|e| io_error(&dir, e))?;
    let path = path(repos_dir, &repo);
    let mut json = serde_json::to_string_pretty(freeze).map_err(|e| io_error(&path, e))?;
    json.push('\n');
    match atomic::create_with(&path, json.as_bytes(), durability) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(match read(repos_dir, &repo) {
                Ok(Some(existing)) => FreezeError::AlreadyLocked {
                    repo: repo.to_string(),
                    freeze: existing,
                },
                Ok(None) => io_error(&path, "appeared and vanished meanwhile; try again"),
                Err(why) => FreezeError::Io {
                    path: path.display().to_string(),
                    error: format!("a freeze is there but cannot be read ({why})"),
                },
            });
        }
        Err(e) => return Err(io_error(&path, e)),
    }
    audit(
        repos_dir,
        &repo,
        &FreezeEvent {
            time: freeze.time.clone(),
            actor: freeze.actor.clone(),
            event: "lock".into(),
            repo: repo.to_string(),
            message: freeze.message.clone(),
        },
        durability,
    )
}

/// Lifts `repo`'s freeze and records who did it; the freeze lifted is
/// returned. An unreadable freeze file is removed all the same (that is the
/// way out of a damaged one).
pub fn unlock(
    repos_dir: &Path,
    repo: &RepoName,
    actor: &str,
    time: &str,
    durability: Durability,
) -> Result<Option<Freeze>, FreezeError> {
    let path = path(repos_dir, repo);
    let existing = read(repos_dir, repo);
    match fs::remove_file(&path) {
        Ok(()) => {
            atomic::sync_dir_with(&dir(repos_dir), durability).map_err(|e| io_error(&path, e))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FreezeError::NotLocked(repo.to_string()));
        }
        Err(e) => return Err(io_error(&path, e)),
    }
    let existing = existing.ok().flatten();
    audit(
        repos_dir,
        repo,
        &FreezeEvent {
            time: time.to_owned(),
            actor: actor.to_owned(),
            event: "unlock".into(),
            repo: repo.to_string(),
            message: existing
                .as_ref()
                .map_or_else(|| "(unreadable freeze)".to_owned(), |f| f.message.clone()),
        },
        durability,
    )?;
    Ok(existing)
}

/// The audit trail of `repo`, oldest first; a line that does not parse is
/// skipped.
pub fn read_audit(repos_dir: &Path, repo: &RepoName) -> io::Result<Vec<FreezeEvent>> {
    let Some(raw) = read_limited(&audit_path(repos_dir, repo), AUDIT_READ_LIMIT)? else {
        return Ok(Vec::new());
    };
    Ok(String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(message: &str) -> Freeze {
        Freeze {
            repo: "orchestrator".into(),
            message: message.into(),
            actor: "alice".into(),
            time: "2026-12-05T10:00:00Z".into(),
        }
    }

    #[test]
    fn lock_unlock_and_the_audit_trail() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepoName::new("Orchestrator").unwrap();
        assert_eq!(read(root.path(), &repo), Ok(None));
        lock(root.path(), &freeze("release week"), Durability::Synced).unwrap();
        assert_eq!(read(root.path(), &repo), Ok(Some(freeze("release week"))));
        let again = lock(root.path(), &freeze("other"), Durability::Synced).unwrap_err();
        assert!(
            again.to_string().contains("already locked by alice"),
            "{again}"
        );
        assert_eq!(all(root.path()).unwrap().len(), 1);
        let lifted = unlock(root.path(), &repo, "bob", "t2", Durability::Synced).unwrap();
        assert_eq!(lifted, Some(freeze("release week")));
        assert_eq!(read(root.path(), &repo), Ok(None));
        assert!(matches!(
            unlock(root.path(), &repo, "bob", "t3", Durability::Synced),
            Err(FreezeError::NotLocked(_))
        ));
        let trail = read_audit(root.path(), &repo).unwrap();
        let events: Vec<_> = trail
            .iter()
            .map(|e| (e.event.as_str(), e.actor.as_str()))
            .collect();
        assert_eq!(events, [("lock", "alice"), ("unlock", "bob")]);
    }

    #[test]
    fn a_damaged_freeze_is_an_error_and_unlock_removes_it() {
        let root = tempfile::tempdir().unwrap();
        let repo = RepoName::new("orchestrator").unwrap();
        fs::create_dir_all(dir(root.path())).unwrap();
        fs::write(path(root.path(), &repo), "{").unwrap();
        assert!(read(root.path(), &repo).is_err());
        assert_eq!(
            unlock(root.path(), &repo, "bob", "t", Durability::Synced).unwrap(),
            None
        );
        assert_eq!(read(root.path(), &repo), Ok(None));
    }
}
