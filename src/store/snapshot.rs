//! Reading a work item's state directory and deriving its state: a
//! finalized marker gives that verdict; else `initiated` (or a legacy
//! `result` the original's wrapper left) is initiated; else
//! `approve-requested`; else idle. A result of another dispatch never
//! changes the state.
//!
//! The directory is on a mount the host writes too, so nothing in it is
//! trusted to be what its name says: every file is opened without following
//! a symlink and without blocking on a FIFO, and must be a regular file.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::ItemPaths;
use crate::atomic::TEMP_PREFIX;
use crate::contract::hook_result::{self, HookExit, Verdict};
use crate::contract::markers::{
    self, ApproveRecord, DispatchState, FinalizedRecord, InitiatedRecord, Marker, Ticket,
    TicketFile,
};
use crate::contract::remote::{LEGACY_RESULT_FILE, PARTIAL_RESULT_SUFFIX};
use crate::machine::StateName;

/// Read at most this much of a result; anything longer is not an exit code
/// (blank padding included, the original reads it whole).
const RESULT_READ_LIMIT: u64 = 16 * 1024 * 1024;
/// Markers hold one short JSON line; a larger one is not ours.
const MARKER_READ_LIMIT: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {0} exists but is not a directory; move it away, then retry")]
    NotADirectory(String),
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: io::Error },
}

/// `initiated` as found: its record when we wrote it, `None` when its content
/// is not ours (the original engine wrote it, or it is damaged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitiatedMarker {
    pub record: Option<InitiatedRecord>,
}

/// A run the host claimed that a reset kept (`reset-<id>`); its verdict is
/// recorded once in the history (a `late-result` entry naming it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptRun {
    pub id: String,
    /// The dispatch's `initiated` record, when the reset kept the current one.
    pub record: Option<InitiatedRecord>,
    /// Its result, once the host wrote it.
    pub result: Option<HookExit>,
    /// Its verdict is in the history.
    pub recorded: bool,
}

/// A state file that is not a regular file we can read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub file: String,
    pub why: String,
}

/// How long a result the host wrapper left unwritten (an empty
/// `result-<id>`, or a `result-<id>.part` never renamed into place) may stay
/// so before it is a problem. The wrapper creates the file, writes a few
/// bytes and renames it within microseconds; only a write that failed (a
/// full disk) leaves it so for longer. Five seconds is orders of magnitude
/// more than that window on a loaded host, allows for some skew between the
/// host's clock (the file's modification time) and this one, and is within
/// one rescan of `watch` (`SELF_DEPLOY_WATCH_RESCAN_SECS`, 5 by default).
pub const RESULT_WRITE_GRACE: Duration = Duration::from_secs(5);

/// A result the host wrapper began to write and did not finish: the hook
/// ended, but what it came to is not on disk. Never a verdict: a poll
/// defers (the result deadline, if any, decides); after
/// [`RESULT_WRITE_GRACE`] it is a problem that `status` and `watch` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnwrittenResult {
    /// The dispatch (the current one, or a run a reset kept).
    pub id: String,
    /// The file left behind: `result-<id>` (empty) or `result-<id>.part`.
    pub file: String,
    /// What is wrong with it.
    pub why: String,
    /// Its modification time (the host's clock), RFC 3339.
    pub modified_at: Option<String>,
    #[serde(skip)]
    pub modified: Option<SystemTime>,
}

impl UnwrittenResult {
    /// Whether it has stayed so past the grace: no wrapper is still writing
    /// it. A modification time ahead of `now` (another clock) is not yet.
    pub fn settled(&self, now: SystemTime) -> bool {
        self.modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= RESULT_WRITE_GRACE)
    }

    /// The problem, as `status` and `watch` word it.
    pub fn problem(&self) -> String {
        format!(
            "the hook ended but its result could not be written: {} (is the host's shared mount full?); \
             its exit code is lost: hook.log shows what the hook did, then write the code into result-{} \
             by hand (docs/operations/RUNBOOK.md)",
            self.why, self.id
        )
    }
}

/// Everything on disk about one work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub state: StateName,
    /// Names of the files in the state directory, sorted.
    pub files: Vec<String>,
    pub approve: Option<Option<ApproveRecord>>,
    pub initiated: Option<InitiatedMarker>,
    pub finalized: Option<Option<FinalizedRecord>>,
    /// The current dispatch (when `initiated` is ours).
    pub dispatch: Option<DispatchState>,
    /// The result that decides this item: `result-<id>` of the current
    /// dispatch, or the legacy `result` for an item the original started.
    pub result: Option<HookExit>,
    /// Results that are not the current dispatch's: never a verdict.
    pub stale_results: Vec<String>,
    /// Ids of every unclaimed ticket (`dispatch-<id>`) in the directory.
    pub open_tickets: Vec<String>,
    /// Claimed runs a reset kept (their result and log still land here):
    /// each one's verdict is recorded in the history when its result lands.
    pub kept_runs: Vec<KeptRun>,
    /// State files that could not be read (a symlink, a FIFO, a directory,
    /// a device, an I/O error). A poll needs `initiated` and the result, so
    /// those block it; every other event still works, reset above all.
    pub unreadable: Vec<Unreadable>,
    /// Results of the current dispatch or of a kept run that the host
    /// wrapper left unwritten (empty, or a `.part` never renamed): the hook
    /// ended, its exit code is not on disk. Never a verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unwritten_results: Vec<UnwrittenResult>,
}

impl Snapshot {
    pub fn load(paths: &ItemPaths) -> Result<Snapshot, StoreError> {
        let dir = &paths.state_dir;
        let io = |path: &Path, error| StoreError::Io {
            path: path.display().to_string(),
            error,
        };
        // A symlink in place of the state directory would send every write
        // elsewhere: it is not a state directory.
        // So would a symlink in place of the repo's directory above it.
        for dir in [dir.as_path(), dir.parent().unwrap_or(dir)] {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(StoreError::NotADirectory(dir.display().to_string()));
            }
        }
        let mut files = Vec::new();
        match fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry.map_err(|e| io(dir, e))?.file_name();
                    let name = name.to_string_lossy().into_owned();
                    if !name.starts_with(TEMP_PREFIX) {
                        files.push(name);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if dir.exists() && !dir.is_dir() => {
                return Err(StoreError::NotADirectory(dir.display().to_string()));
            }
            Err(e) => return Err(io(dir, e)),
        }
        files.sort();
        let present = |name: &str| files.binary_search_by(|f| f.as_str().cmp(name)).is_ok();

        let mut unreadable = Vec::new();
        let mut read = |name: &str, limit: u64| -> Option<Vec<u8>> {
            if !present(name) {
                return None;
            }
            match read_state_file(&dir.join(name), limit) {
                Ok(bytes) => Some(bytes),
                Err(why) => {
                    unreadable.push(Unreadable {
                        file: name.to_owned(),
                        why: why.to_string(),
                    });
                    // Present all the same: its content is unknown.
                    Some(Vec::new())
                }
            }
        };
        let approve = read(Marker::ApproveRequested.file_name(), MARKER_READ_LIMIT)
            .map(|c| markers::decode(&c));
        let initiated =
            read(Marker::Initiated.file_name(), MARKER_READ_LIMIT).map(|c| InitiatedMarker {
                record: markers::decode::<InitiatedRecord>(&c),
            });
        // A finalized marker we cannot read still means finalized: fail closed.
        let finalized: Option<Option<FinalizedRecord>> =
            read(Marker::Finalized.file_name(), MARKER_READ_LIMIT).map(|c| markers::decode(&c));
        let initiated_unreadable = unreadable
            .iter()
            .any(|u| u.file == Marker::Initiated.file_name());

        let current = initiated
            .as_ref()
            .and_then(|m| m.record.as_ref())
            .map(|r| r.dispatch_id.clone());
        let mut kept_runs = Vec::new();
        // Which kept runs' verdicts the history holds: read only when a
        // reset kept one (rare), and an unreadable history counts none.
        let recorded_ids = if files
            .iter()
            .any(|n| matches!(TicketFile::parse(n), Some((TicketFile::Reset, _))))
        {
            super::late_results_recorded(&paths.history_file).unwrap_or_default()
        } else {
            Vec::new()
        };
        for name in &files {
            let Some((TicketFile::Reset, id)) = TicketFile::parse(name) else {
                continue;
            };
            // The record of a reset that stopped before it removed
            // `initiated`: that run is still the item's own dispatch.
            if current.as_deref() == Some(id) {
                continue;
            }
            let recorded = recorded_ids.iter().any(|r| r == id);
            let record = match read_state_file(&dir.join(name), MARKER_READ_LIMIT) {
                Ok(bytes) => markers::decode::<InitiatedRecord>(&bytes),
                Err(_) => None,
            };
            let result_name = TicketFile::Result.name(id);
            let result = if present(&result_name) {
                read_result(dir, result_name, &mut unreadable)
            } else {
                None
            };
            kept_runs.push(KeptRun {
                id: id.to_owned(),
                record,
                result,
                recorded,
            });
        }
        let kept = |id: &str| kept_runs.iter().any(|k| k.id == id);
        let mut stale_results = Vec::new();
        let mut open_tickets = Vec::new();
        let mut ticket = Ticket::Missing;
        let mut result_name = None;
        for name in &files {
            if let Some((TicketFile::Dispatch, id)) = TicketFile::parse(name) {
                open_tickets.push(id.to_owned());
            }
            match (TicketFile::parse(name), current.as_deref()) {
                (Some((TicketFile::Result, id)), Some(cur)) if id == cur => {
                    result_name = Some(name.clone())
                }
                // A kept run's result is its own verdict, shown as such.
                (Some((TicketFile::Result, id)), _) if kept(id) => {}
                (Some((TicketFile::Result, _)), _) => stale_results.push(name.clone()),
                (Some((TicketFile::Reset, _)), _) => {}
                (Some((kind, id)), Some(cur)) if id == cur => {
                    // Of the three, the furthest along wins: a claim or a
                    // revoke is a rename, so two at once means a hand edit.
                    let seen = match kind {
                        TicketFile::Dispatch => Ticket::Sent,
                        TicketFile::Claimed => Ticket::Claimed,
                        _ => Ticket::Revoked,
                    };
                    if ticket == Ticket::Missing || seen != Ticket::Sent {
                        ticket = seen;
                    }
                }
                _ => {}
            }
        }
        // The legacy `result` decides only for an item the original started
        // (an `initiated` that is not ours, or none at all); beside our own
        // record it is someone else's late result.
        // An item with any file of the claim protocol, or an approval record
        // of ours, is ours, whatever `initiated` says now: a legacy `result`
        // there is not the original's wrapper finishing.
        let ours = current.is_some()
            || matches!(approve, Some(Some(_)))
            || files.iter().any(|f| TicketFile::parse(f).is_some());
        let legacy = present(LEGACY_RESULT_FILE) && !(ours && initiated.is_none());
        if present(LEGACY_RESULT_FILE) && (ours || initiated_unreadable) {
            stale_results.push(LEGACY_RESULT_FILE.to_owned());
        } else if legacy {
            result_name = Some(LEGACY_RESULT_FILE.to_owned());
        }
        let result = result_name.and_then(|name| read_result(dir, name, &mut unreadable));
        // A result that is not there although the hook ended: the current
        // dispatch's and each kept run's, unless unreadable (named there).
        let mut unwritten_results = Vec::new();
        let no_result = current
            .iter()
            .filter(|_| result.is_none())
            .map(String::as_str)
            .chain(
                kept_runs
                    .iter()
                    .filter(|k| k.result.is_none())
                    .map(|k| k.id.as_str()),
            );
        for id in no_result {
            let name = TicketFile::Result.name(id);
            if unreadable.iter().any(|u| u.file == name) {
                continue;
            }
            unwritten_results.extend(unwritten_result(dir, id, &present));
        }
        let dispatch = current.map(|id| DispatchState { id, ticket });

        let state = if let Some(record) = &finalized {
            match record.as_ref().map(|r| r.deploy_status) {
                Some(Verdict::Success) => StateName::FinalizedSuccess,
                _ => StateName::FinalizedFailed,
            }
        } else if initiated.is_some() || legacy {
            StateName::Initiated
        } else if approve.is_some() {
            StateName::ApproveRequested
        } else {
            StateName::Idle
        };
        Ok(Snapshot {
            state,
            files,
            approve,
            initiated,
            finalized,
            dispatch,
            result,
            stale_results,
            open_tickets,
            kept_runs,
            unreadable,
            unwritten_results,
        })
    }

    /// Why a poll cannot go on: a file it must read is unreadable.
    pub fn poll_blocker(&self) -> Option<String> {
        let needed = |u: &&Unreadable| {
            u.file == Marker::Initiated.file_name()
                || u.file == LEGACY_RESULT_FILE
                || TicketFile::parse(&u.file).is_some_and(|(k, _)| k == TicketFile::Result)
        };
        let kept = |u: &&Unreadable| {
            TicketFile::parse(&u.file)
                .is_some_and(|(_, id)| self.kept_runs.iter().any(|k| k.id == id))
        };
        self.unreadable
            .iter()
            .filter(|u| !kept(u))
            .find(needed)
            .map(|u| format!("{} is unreadable: {}", u.file, u.why))
    }

    /// The record `initiated` holds, when it is ours.
    pub fn initiated_record(&self) -> Option<&InitiatedRecord> {
        self.initiated.as_ref().and_then(|m| m.record.as_ref())
    }
}

/// What the host wrapper left of dispatch `id`'s result when that result
/// reads as not present: an empty `result-<id>`, or a `result-<id>.part`
/// (empty or torn) with no `result-<id>`. `None`: nothing was begun.
fn unwritten_result(
    dir: &Path,
    id: &str,
    present: &dyn Fn(&str) -> bool,
) -> Option<UnwrittenResult> {
    let result = TicketFile::Result.name(id);
    let part = format!("{result}{PARTIAL_RESULT_SUFFIX}");
    let (file, why) = if present(&result) {
        (result.clone(), format!("{result} is empty"))
    } else if present(&part) {
        let why = match read_state_file(&dir.join(&part), 64) {
            Ok(raw) if String::from_utf8_lossy(&raw).trim().is_empty() => {
                format!("{part} is empty and {result} was never written")
            }
            Ok(raw) => format!(
                "{part} holds {:?} and was never renamed to {result}",
                String::from_utf8_lossy(&raw)
            ),
            Err(e) => format!("{part} was left ({e}) and {result} was never written"),
        };
        (part, why)
    } else {
        return None;
    };
    let modified = fs::symlink_metadata(dir.join(&file))
        .and_then(|m| m.modified())
        .ok();
    Some(UnwrittenResult {
        id: id.to_owned(),
        file,
        why,
        modified_at: modified.map(crate::clock::rfc3339_seconds),
        modified,
    })
}

/// A result file as a verdict reads it: larger than a result is garbage
/// (never a verdict of 0); one that cannot be read is no result, and named.
fn read_result(dir: &Path, name: String, unreadable: &mut Vec<Unreadable>) -> Option<HookExit> {
    match read_state_file(&dir.join(&name), RESULT_READ_LIMIT) {
        Ok(raw) => hook_result::parse_result(&raw),
        Err(ReadError::TooLarge(len)) => Some(HookExit {
            code: "1".into(),
            garbage: Some(format!("<{len} bytes>")),
        }),
        Err(why) => {
            unreadable.push(Unreadable {
                file: name,
                why: why.to_string(),
            });
            None
        }
    }
}

/// Why a state file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Larger than the limit: for a result, garbage (never a verdict of 0).
    TooLarge(u64),
    /// Not a regular file, or an I/O error.
    Unreadable(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(n) => write!(f, "it is {n} bytes, more than a state file holds"),
            ReadError::Unreadable(why) => f.write_str(why),
        }
    }
}

/// Reads a state file without following a symlink or waiting on a FIFO;
/// anything but a regular file is refused with the reason. A file larger
/// than `limit` is reported as `<N bytes>` (for a result: garbage).
fn read_state_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let fail = |e: io::Error| ReadError::Unreadable(e.to_string());
    let file = super::open_regular(path, OpenOptions::new().read(true)).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge(meta.len()));
    }
    // Sized from the fstat above: one read fills it and one more finds the
    // end (a buffer grown by doubling reads small pieces first).
    let mut raw = Vec::with_capacity(meta.len() as usize + 1);
    file.take(limit).read_to_end(&mut raw).map_err(fail)?;
    Ok(raw)
}

/// Opens `path` for reading the way every state file is read (for callers
/// outside the snapshot that read one file, e.g. `snapshot`).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_state_file(path, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;
    use crate::contract::names::{RepoName, WorkItem};

    const ID: &str = "00000000000000aa";

    /// The limits the runbook documents.
    #[test]
    fn the_read_limits_are_the_documented_ones() {
        assert_eq!(RESULT_READ_LIMIT, 16 * 1024 * 1024);
        assert_eq!(MARKER_READ_LIMIT, 1024 * 1024);
    }

    /// An item of ours, initiated for dispatch `ID`, in a fresh tempdir.
    fn initiated_item() -> (tempfile::TempDir, ItemPaths) {
        let root = tempfile::tempdir().unwrap();
        let paths = ItemPaths::new(
            root.path(),
            &RepoName::new("orchestrator").unwrap(),
            &WorkItem::new("BIG-1").unwrap(),
        );
        fs::create_dir_all(&paths.state_dir).unwrap();
        let record = InitiatedRecord {
            dispatch_id: ID.into(),
            approved_by: "test".into(),
            approved_at: "2030-01-01T00:00:00Z".into(),
            dispatched_at: None,
            boot_id: None,
            dispatched_boottime_ms: None,
            branch: None,
            worktree: "/w".into(),
            revision: None,
            transport: Transport::by_name("local").unwrap(),
            argv: vec![],
        };
        fs::write(paths.marker(Marker::Initiated), markers::encode(&record)).unwrap();
        (root, paths)
    }

    /// A sparse file of `len` bytes starting with `head` (no disk spent).
    fn sparse(path: &Path, head: &[u8], len: u64) {
        fs::write(path, head).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
        assert_eq!(fs::metadata(path).unwrap().len(), len);
    }

    #[test]
    fn a_result_over_the_limit_is_garbage_read_as_exit_code_1() {
        let (_root, paths) = initiated_item();
        let len = RESULT_READ_LIMIT + 1;
        // It even starts with a success: a result this large is not one.
        sparse(&paths.ticket_file(TicketFile::Result, ID), b"0\n", len);
        let snap = Snapshot::load(&paths).unwrap();
        assert_eq!(snap.state, StateName::Initiated);
        assert!(snap.stale_results.is_empty(), "{snap:?}");
        assert!(snap.unreadable.is_empty(), "{snap:?}");
        assert_eq!(snap.poll_blocker(), None);
        let exit = snap.result.expect("present: a verdict, not deferred");
        assert_eq!(
            exit,
            HookExit {
                code: "1".into(),
                garbage: Some(format!("<{len} bytes>")),
            }
        );
        assert_eq!(exit.verdict(), Verdict::Failed);
    }

    /// What the wrapper leaves when its write fails is never a result, and
    /// a problem only once it has stayed so past the grace.
    #[test]
    fn an_unwritten_result_is_no_result_and_a_problem_after_the_grace() {
        let (_root, paths) = initiated_item();
        let result = paths.ticket_file(TicketFile::Result, ID);
        let part = paths.state_dir.join(format!("result-{ID}.part"));
        let snap = Snapshot::load(&paths).unwrap();
        assert!(snap.unwritten_results.is_empty(), "nothing begun: {snap:?}");

        fs::write(&part, "0\n").unwrap();
        let snap = Snapshot::load(&paths).unwrap();
        assert_eq!(snap.result, None, "a .part is never a result");
        assert!(snap.stale_results.is_empty() && snap.unreadable.is_empty());
        let [u] = snap.unwritten_results.as_slice() else {
            panic!("{snap:?}")
        };
        assert_eq!(
            (u.id.as_str(), u.file.as_str()),
            (ID, part.file_name().unwrap().to_str().unwrap())
        );
        assert_eq!(
            u.why,
            format!("result-{ID}.part holds \"0\\n\" and was never renamed to result-{ID}")
        );
        let at = u.modified.unwrap();
        assert!(!u.settled(at));
        assert!(!u.settled(at + RESULT_WRITE_GRACE - Duration::from_millis(1)));
        assert!(u.settled(at + RESULT_WRITE_GRACE));
        assert!(
            !u.settled(at - Duration::from_secs(60)),
            "a clock behind the host's"
        );
        assert!(
            u.problem()
                .starts_with("the hook ended but its result could not be written: result-")
        );

        // An empty result beside it: the result is what was left.
        fs::write(&result, "").unwrap();
        let snap = Snapshot::load(&paths).unwrap();
        assert_eq!(snap.result, None);
        assert_eq!(
            snap.unwritten_results[0].why,
            format!("result-{ID} is empty")
        );
        // Renamed into place whole: a result, nothing unwritten.
        fs::rename(&part, &result).unwrap();
        let snap = Snapshot::load(&paths).unwrap();
        assert_eq!(snap.result.map(|r| r.code), Some("0".to_owned()));
        assert!(snap.unwritten_results.is_empty());
    }

    #[test]
    fn a_result_at_the_limit_is_read_whole() {
        let (_root, paths) = initiated_item();
        // "0" then NULs up to exactly the limit: read (not TooLarge), and
        // NUL is not blank, so garbage all the same, but its own text.
        sparse(
            &paths.ticket_file(TicketFile::Result, ID),
            b"0",
            RESULT_READ_LIMIT,
        );
        let snap = Snapshot::load(&paths).unwrap();
        let exit = snap.result.expect("present");
        assert_eq!(exit.code, "1");
        assert_ne!(
            exit.garbage,
            Some(format!("<{RESULT_READ_LIMIT} bytes>")),
            "at the limit the content is read"
        );
    }
}
