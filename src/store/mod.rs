//! The snapshot on disk: where a work item's files are, the state derived
//! from them, the per-item lock and the history.
//!
//! ```text
//! <REPOS_DIR>/.deploy-state-<repo>/<work_item>/   sentinels (contract layout)
//! <REPOS_DIR>/.selfdeploy/locks/<repo>/<work_item>.lock
//! <REPOS_DIR>/.selfdeploy/history/<repo>/<work_item>.jsonl
//! <REPOS_DIR>/.selfdeploy/freeze/<repo>.json[l]      a deploy freeze, its audit trail
//! ```
//! The lock and the history live outside the state directory because reset
//! removes that directory whole.

pub mod freeze;
mod history;
pub mod identity;
mod intent;
mod lock;
pub mod owner;
mod snapshot;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use crate::contract::markers::{DispatchState, Ticket};
pub use history::{
    HistoryEntry, HistoryKeys, HistoryLine, LATE_RESULT_EVENT, Repeats, Verification,
    append_history, complete_len, count_repeat, counted_at, entry_at, head_path, is_signed, key_id,
    last_approval_outcome, last_entry, late_results_recorded, read_entries, read_history,
    repeats_path, torn_path, verify_history,
};
pub use intent::{
    Intent, clear_intent, intent_path, intent_pending, pending_intents, read_intent, write_intent,
};
pub use lock::{ItemLock, LockError};
pub use snapshot::{
    InitiatedMarker, KeptRun, RESULT_WRITE_GRACE, ReadError, Snapshot, StoreError, Unreadable,
    UnwrittenResult, read_regular,
};

use crate::atomic;
use crate::config::Durability;
use crate::contract::markers::{InitiatedRecord, Marker, TicketFile};
use crate::contract::names::{RepoName, WorkItem};
use crate::contract::remote;

/// Opens `path` with `options`, never following a symlink in its last
/// component nor waiting on a FIFO, and only if it is a regular file: the
/// shared mount is written by the host too, so a name is not trusted to be
/// what it says. The error says what was found instead (callers name the
/// path).
pub fn open_regular(path: &Path, options: &mut fs::OpenOptions) -> io::Result<fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("it is a symbolic link (never followed)"),
            _ => e,
        })?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    Err(io::Error::other(format!(
        "it is {what}, not a regular file"
    )))
}

/// The files of one work item.
#[derive(Debug, Clone)]
pub struct ItemPaths {
    pub repo: RepoName,
    pub work_item: WorkItem,
    pub state_dir: PathBuf,
    pub lock_file: PathBuf,
    pub history_file: PathBuf,
    /// Where a reset keeps the hook's output of the runs it removes
    /// (`hook-<id>.log`): outside the state directory, which a reset removes.
    pub logs_dir: PathBuf,
    /// How writes through these paths reach the disk (`Synced` unless set).
    pub durability: Durability,
}

impl ItemPaths {
    pub fn new(repos_dir: &Path, repo: &RepoName, work_item: &WorkItem) -> ItemPaths {
        let own = repos_dir.join(".selfdeploy");
        ItemPaths {
            repo: repo.clone(),
            work_item: work_item.clone(),
            state_dir: remote::state_dir_under(repos_dir, repo, work_item),
            lock_file: own
                .join("locks")
                .join(repo.as_str())
                .join(format!("{work_item}.lock")),
            history_file: own
                .join("history")
                .join(repo.as_str())
                .join(format!("{work_item}.jsonl")),
            logs_dir: own
                .join("logs")
                .join(repo.as_str())
                .join(work_item.as_str()),
            durability: Durability::Synced,
        }
    }

    /// The item's identity, `<repo>/<work item>`, as records name it.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.repo, self.work_item)
    }

    /// The same paths, written with `durability`.
    pub fn with_durability(mut self, durability: Durability) -> ItemPaths {
        self.durability = durability;
        self
    }

    pub fn marker(&self, marker: Marker) -> PathBuf {
        self.state_dir.join(marker.file_name())
    }

    /// A file of the claim protocol for dispatch `id`.
    pub fn ticket_file(&self, kind: TicketFile, id: &str) -> PathBuf {
        self.state_dir.join(kind.name(id))
    }

    /// The hook's output, appended by the host wrapper, for the runs of the
    /// item since its last reset.
    pub fn hook_log(&self) -> PathBuf {
        self.state_dir.join(remote::HOOK_LOG_FILE)
    }

    /// The hook's output of run `id`, kept by the reset that removed it.
    pub fn kept_hook_log(&self, id: &str) -> PathBuf {
        self.logs_dir.join(format!("hook-{id}.log"))
    }

    /// Moves `hook.log` out of the state directory before a reset removes
    /// it, as `hook-<id>.log` under [`ItemPaths::logs_dir`]: the output of
    /// a run that happened is never deleted. `<id>` is the run's dispatch
    /// (`initiated`'s, else a kept run's); without one (an item the original
    /// engine started), the reset's time in seconds. A name already taken
    /// gets `.1`, `.2`... Returns where it went, `None` without a log.
    fn keep_hook_log(&self, id: Option<&str>) -> io::Result<Option<PathBuf>> {
        let log = self.hook_log();
        match fs::symlink_metadata(&log) {
            // Only a regular file is the wrapper's output; anything else
            // goes with the directory, as any unreadable state file.
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let id = match id {
            Some(id) => id.to_owned(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
        };
        atomic::create_dir_all_with(&self.logs_dir, self.durability)?;
        let mut target = self.kept_hook_log(&id);
        let mut n = 0;
        while fs::symlink_metadata(&target).is_ok() {
            n += 1;
            target = self.logs_dir.join(format!("hook-{id}.log.{n}"));
        }
        fs::rename(&log, &target)?;
        atomic::sync_dir_with(&self.logs_dir, self.durability)?;
        Ok(Some(target))
    }

    /// The legacy `result` of the original engine's wrapper.
    pub fn legacy_result_file(&self) -> PathBuf {
        self.state_dir.join(remote::LEGACY_RESULT_FILE)
    }

    /// Writes the ticket `dispatch-<id>` durably (before the launch).
    pub fn write_ticket(&self, id: &str, content: &str) -> io::Result<()> {
        self.ensure_state_dir()?;
        atomic::write_with(
            &self.ticket_file(TicketFile::Dispatch, id),
            content.as_bytes(),
            self.durability,
        )
    }

    /// Revokes dispatch `id`: `rename(dispatch-<id>, revoked-<id>)`, the one
    /// arbiter against the host's claim. Whoever renames first wins.
    pub fn revoke_ticket(&self, id: &str) -> io::Result<Revoke> {
        let revoked = self.ticket_file(TicketFile::Revoked, id);
        match fs::rename(self.ticket_file(TicketFile::Dispatch, id), &revoked) {
            Ok(()) => {
                atomic::sync_dir_with(&self.state_dir, self.durability)?;
                Ok(Revoke::Revoked)
            }
            // A revoke after a crash finds its own earlier rename.
            Err(e) if e.kind() == io::ErrorKind::NotFound && revoked.exists() => {
                Ok(Revoke::Revoked)
            }
            // No ticket: the host claimed it (or it is gone by hand, which
            // must be read the same way: at most once comes first).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Revoke::Claimed),
            Err(e) => Err(e),
        }
    }

    pub fn write_marker(&self, marker: Marker, content: &str) -> io::Result<()> {
        self.ensure_state_dir()?;
        atomic::write_with(&self.marker(marker), content.as_bytes(), self.durability)
    }

    pub fn remove_marker(&self, marker: Marker) -> io::Result<()> {
        atomic::remove_with(&self.marker(marker), self.durability)
    }

    fn ensure_state_dir(&self) -> io::Result<()> {
        let is_dir = fs::symlink_metadata(&self.state_dir).map(|m| m.file_type().is_dir());
        if matches!(is_dir, Ok(false)) {
            return Err(io::Error::other(format!(
                "state directory {} is not a directory",
                self.state_dir.display()
            )));
        }
        atomic::create_dir_all_with(&self.state_dir, self.durability)
    }

    /// A reset: removes the item's state, but never the place where a run
    /// the host claimed will still write (`result-<id>`, `hook.log`) while
    /// its verdict is not in the history: a deploy that ran is a fact,
    /// whatever the operator resets. Such a run is kept with a
    /// `reset-<id>` record (the dispatch's `initiated` record, when it is
    /// the current one), and the item reads as idle. Without one, the
    /// directory goes whole. Returns the ids kept.
    ///
    /// The caller holds the item's lock, and every unclaimed ticket was
    /// revoked before: the set of claimed runs cannot grow meanwhile.
    pub fn reset_state_dir(&self) -> io::Result<Vec<String>> {
        let names = match fs::read_dir(&self.state_dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<String>>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let has = |name: &str| names.iter().any(|n| n == name);
        let initiated = snapshot::read_regular(&self.marker(Marker::Initiated), 1024 * 1024)
            .ok()
            .and_then(|bytes| crate::contract::markers::decode::<InitiatedRecord>(&bytes));
        let current = initiated.as_ref().map(|r| r.dispatch_id.as_str());
        let finalized = snapshot::read_regular(&self.marker(Marker::Finalized), 1024 * 1024)
            .ok()
            .and_then(|bytes| {
                crate::contract::markers::decode::<crate::contract::markers::FinalizedRecord>(
                    &bytes,
                )
            });
        let recorded = if names
            .iter()
            .any(|n| matches!(TicketFile::parse(n), Some((TicketFile::Reset, _))))
        {
            late_results_recorded(&self.history_file)?
        } else {
            Vec::new()
        };
        let kept: Vec<String> = names
            .iter()
            .filter_map(|name| match TicketFile::parse(name) {
                Some((TicketFile::Claimed, id)) => Some(id.to_owned()),
                _ => None,
            })
            .filter(|id| {
                // Settled: its verdict is in the history, as a late result,
                // or as the item's own finalize from its result.
                let late = has(&TicketFile::Reset.name(id)) && recorded.contains(id);
                let result = TicketFile::Result.name(id);
                // A verdict the result deadline gave is not the run's own:
                // its result, whenever it lands, must still be recorded.
                // (An unreadable `finalized` is no deadline verdict of ours.)
                let finalized_by_it = current == Some(id.as_str())
                    && has(&result)
                    && has(Marker::Finalized.file_name())
                    && !finalized.as_ref().is_some_and(|f| {
                        f.hook_exit_code == crate::contract::hook_result::TIMEOUT_EXIT_CODE
                    });
                // A result that is no regular file (a FIFO, a symlink) says
                // the run ended but never what it came to: reset --force
                // clears it, as any unreadable state file.
                let unreadable = has(&result)
                    && snapshot::read_regular(&self.state_dir.join(&result), 1)
                        .is_err_and(|e| !matches!(e, snapshot::ReadError::TooLarge(_)));
                !late && !finalized_by_it && !unreadable
            })
            .collect();
        if kept.is_empty() {
            // The run whose output hook.log holds: the current dispatch, else
            // the last run an earlier reset kept.
            let run = current.map(str::to_owned).or_else(|| {
                names
                    .iter()
                    .filter_map(|n| match TicketFile::parse(n) {
                        Some((TicketFile::Reset | TicketFile::Claimed, id)) => Some(id.to_owned()),
                        _ => None,
                    })
                    .max()
            });
            self.keep_hook_log(run.as_deref())?;
            self.remove_state_dir()?;
            return Ok(kept);
        }
        for id in &kept {
            let record = self.ticket_file(TicketFile::Reset, id);
            if !has(&TicketFile::Reset.name(id)) {
                let content = match &initiated {
                    Some(r) if r.dispatch_id == *id => crate::contract::markers::encode(r),
                    _ => "{}".to_owned(),
                };
                atomic::write_with(&record, content.as_bytes(), self.durability)?;
            }
        }
        // A kept run's result before its rename (`result-<id>.part`) too:
        // removed, the rename that was about to land it would fail, and if
        // its write failed it is the evidence.
        let keep = |name: &str| {
            name == remote::HOOK_LOG_FILE
                || match TicketFile::parse(name) {
                    Some((TicketFile::Claimed | TicketFile::Result | TicketFile::Reset, id)) => {
                        kept.iter().any(|k| k == id)
                    }
                    _ => crate::contract::markers::partial_result_id(name)
                        .is_some_and(|id| kept.iter().any(|k| k == id)),
                }
        };
        // The markers first, each removal a state the item had before: the
        // legacy result (else it reads as initiated), `initiated`,
        // `finalized`, `approve-requested`; then the rest. A crash midway
        // leaves an earlier state that a second reset finishes.
        let first = [
            remote::LEGACY_RESULT_FILE,
            Marker::Initiated.file_name(),
            Marker::Finalized.file_name(),
            Marker::ApproveRequested.file_name(),
        ];
        let rest = names
            .iter()
            .map(String::as_str)
            .filter(|n| !first.contains(n));
        for name in first.into_iter().filter(|n| has(n)).chain(rest) {
            if keep(name) {
                continue;
            }
            let path = self.state_dir.join(name);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path)?,
                Ok(_) => fs::remove_file(&path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        atomic::sync_dir_with(&self.state_dir, self.durability)?;
        Ok(kept)
    }

    /// Removes the state directory whole. It is first renamed to a name no
    /// work item can have, so a crash midway never leaves a partial state
    /// (a `result` without `initiated` would read as initiated).
    pub fn remove_state_dir(&self) -> io::Result<()> {
        let tomb = self.state_dir.with_file_name(format!(
            "{}~removed.{}",
            self.work_item,
            std::process::id()
        ));
        match fs::rename(&self.state_dir, &tomb) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        atomic::sync_dir_with(tomb.parent().unwrap_or(Path::new(".")), self.durability)?;
        fs::remove_dir_all(&tomb)
    }
}

/// What a revoke found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// The ticket is `revoked-<id>` now: this dispatch never runs.
    Revoked,
    /// The host claimed it first: the hook is running.
    Claimed,
}

/// Every work item with a state directory under `repos_dir`, sorted.
pub fn list_items(repos_dir: &Path) -> io::Result<Vec<(RepoName, WorkItem)>> {
    let mut items = walk_items(repos_dir)?.collect::<io::Result<Vec<_>>>()?;
    items.sort();
    Ok(items)
}

/// The repos with a state directory under `repos_dir`, sorted. A missing
/// REPOS_DIR is an error, never "nothing in flight": an unmounted share must
/// be noticed.
fn repo_dirs(repos_dir: &Path) -> io::Result<Vec<(RepoName, PathBuf)>> {
    let mut repos = Vec::new();
    for entry in fs::read_dir(repos_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(repo) = name
            .to_str()
            .and_then(|n| n.strip_prefix(remote::STATE_DIR_PREFIX))
        else {
            continue;
        };
        let Ok(repo) = RepoName::new(repo) else {
            continue;
        };
        // The identity is lower-cased: a spelling with capitals is not ours.
        // A symlink is listed (its items then read as unreadable, never as
        // absent): an operator must see what is behind it.
        let kind = entry.file_type()?;
        let linked_dir = kind.is_symlink() && entry.path().is_dir();
        if repo.as_str() != repo.given() || !(kind.is_dir() || linked_dir) {
            continue;
        }
        repos.push((repo, entry.path()));
    }
    repos.sort();
    Ok(repos)
}

/// Every work item under `repos_dir` as the directories list them (repos
/// sorted, items in directory order): nothing is collected, so a million
/// items cost no more memory than ten.
pub fn walk_items(
    repos_dir: &Path,
) -> io::Result<impl Iterator<Item = io::Result<(RepoName, WorkItem)>>> {
    let repos = repo_dirs(repos_dir)?;
    Ok(repos.into_iter().flat_map(|(repo, dir)| {
        let entries: Box<dyn Iterator<Item = io::Result<fs::DirEntry>>> = match fs::read_dir(&dir) {
            Ok(entries) => Box::new(entries),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        entries.filter_map(move |entry| match entry {
            Err(e) => Some(Err(e)),
            Ok(entry) => entry
                .file_name()
                .to_str()
                .and_then(|name| WorkItem::new(name).ok())
                .map(|wi| Ok((repo.clone(), wi))),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(root: &Path) -> ItemPaths {
        ItemPaths::new(
            root,
            &RepoName::new("orchestrator").unwrap(),
            &WorkItem::new("W-1").unwrap(),
        )
    }

    /// The rename decides: a ticket renamed by this revoke, or by an earlier
    /// one that crashed before saying so, is revoked; a ticket that is gone
    /// (the host renamed it to claimed) is claimed.
    #[test]
    fn a_revoke_is_decided_by_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let paths = item(dir.path());
        let id = "00000000000000aa";
        paths.write_ticket(id, "").unwrap();
        assert!(paths.ticket_file(TicketFile::Dispatch, id).is_file());
        assert_eq!(paths.revoke_ticket(id).unwrap(), Revoke::Revoked);
        assert!(!paths.ticket_file(TicketFile::Dispatch, id).exists());
        assert!(paths.ticket_file(TicketFile::Revoked, id).is_file());
        // Again, after a crash: its own earlier rename.
        assert_eq!(paths.revoke_ticket(id).unwrap(), Revoke::Revoked);
        // Claimed by the host first: no ticket, no revoked file.
        let other = "00000000000000bb";
        paths.write_ticket(other, "").unwrap();
        fs::rename(
            paths.ticket_file(TicketFile::Dispatch, other),
            paths.ticket_file(TicketFile::Claimed, other),
        )
        .unwrap();
        assert_eq!(paths.revoke_ticket(other).unwrap(), Revoke::Claimed);
        assert!(!paths.ticket_file(TicketFile::Revoked, other).exists());
        // Any other error is an error.
        fs::remove_dir_all(&paths.state_dir).unwrap();
        fs::write(&paths.state_dir, "").unwrap();
        assert!(paths.revoke_ticket(id).is_err());
    }

    #[test]
    fn markers_are_written_removed_and_the_state_directory_goes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let paths = item(dir.path());
        // Nothing to remove is fine.
        paths.remove_state_dir().unwrap();
        paths.remove_marker(Marker::Initiated).unwrap();
        paths.write_marker(Marker::Initiated, "{}").unwrap();
        assert_eq!(
            fs::read_to_string(paths.marker(Marker::Initiated)).unwrap(),
            "{}"
        );
        paths.remove_marker(Marker::Initiated).unwrap();
        assert!(!paths.marker(Marker::Initiated).exists());
        paths.write_marker(Marker::ApproveRequested, "").unwrap();
        paths.remove_state_dir().unwrap();
        assert!(!paths.state_dir.exists());
        let left: Vec<_> = fs::read_dir(paths.state_dir.parent().unwrap())
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A file where the state directory belongs is not written through.
        fs::write(&paths.state_dir, "").unwrap();
        let err = paths.write_marker(Marker::Initiated, "{}").unwrap_err();
        assert!(err.to_string().ends_with("is not a directory"), "{err}");
        assert!(paths.remove_marker(Marker::Initiated).is_err());
    }

    #[test]
    fn items_are_listed_under_their_repo_identity_and_symlinked_repos_shown() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(
            list_items(&root.join("missing")).is_err(),
            "an unmounted share is an error"
        );
        fs::create_dir_all(root.join(".deploy-state-orchestrator/W-2")).unwrap();
        fs::create_dir_all(root.join(".deploy-state-orchestrator/W-1")).unwrap();
        fs::create_dir_all(root.join(".deploy-state-Orchestrator/W-9")).unwrap();
        fs::create_dir_all(root.join("elsewhere/.deploy-state-linked/L-1")).unwrap();
        std::os::unix::fs::symlink(
            root.join("elsewhere/.deploy-state-linked"),
            root.join(".deploy-state-linked"),
        )
        .unwrap();
        fs::write(root.join(".deploy-state-file"), "").unwrap();
        fs::create_dir_all(root.join(".worktrees/orchestrator")).unwrap();
        let names: Vec<String> = list_items(root)
            .unwrap()
            .into_iter()
            .map(|(r, w)| format!("{r}/{w}"))
            .collect();
        assert_eq!(
            names,
            ["linked/L-1", "orchestrator/W-1", "orchestrator/W-2"]
        );
        let mut walked: Vec<String> = walk_items(root)
            .unwrap()
            .map(|i| i.map(|(r, w)| format!("{r}/{w}")).unwrap())
            .collect();
        walked.sort();
        assert_eq!(walked, names);
    }

    #[test]
    fn only_regular_files_open_and_the_rest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        assert!(open_regular(&file, fs::OpenOptions::new().read(true)).is_ok());
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let said = |path: &Path| {
            open_regular(path, fs::OpenOptions::new().read(true))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(said(&link), "it is a symbolic link (never followed)");
        assert_eq!(said(dir.path()), "it is a directory, not a regular file");
        assert_eq!(
            open_regular(&dir.path().join("none"), fs::OpenOptions::new().read(true))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
