//! One event, end to end: lock, load the snapshot, gather facts, let the
//! machine decide, perform the effects (feeding dispatch results back into
//! the machine), append the history. The only module that ties the store, the
//! machine and the executor together; dry runs and replays come through here
//! too, with a recording executor.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::clock::{self, BootClock, Measured};
use crate::config::Settings;
use crate::contract::markers::Marker;
use crate::contract::names::{BranchName, RepoName, WorkItem};
use crate::effect::{Effect, RevokeReason};
use crate::exec::{self, Perform, Performed};
use crate::machine::{
    self, Decision, Event, EventName, Facts, Guard, Outcome, Revision, StateName,
};
use crate::probe::Probe;
use crate::store::{self, HistoryEntry, Intent, ItemLock, ItemPaths, Revoke, Snapshot};

/// An event as the stage engine delivers it.
#[derive(Debug, Clone)]
pub struct Request {
    pub repo: RepoName,
    pub work_item: WorkItem,
    pub event: EventName,
    /// Validated when received: git must never read it as an option.
    pub branch: Option<BranchName>,
    pub worktree: Option<PathBuf>,
    pub revision: Option<String>,
    pub merged: Option<bool>,
    pub force: bool,
    pub actor: String,
}

/// What became of an event (the `--json` output of `selfdeploy event`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub repo: RepoName,
    pub work_item: WorkItem,
    pub event: EventName,
    pub from: StateName,
    pub to: StateName,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// The conditions that chose the row of the table that applied.
    pub condition: String,
    pub effects: Vec<Effect>,
    /// What best-effort steps reported (git, the stamp).
    pub notes: Vec<String>,
    pub dry_run: bool,
    /// The event's history entry could not be appended (why): it is kept
    /// and written by the next event or watch pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lock(#[from] store::LockError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Effect(#[from] exec::ExecError),
    #[error("{0}; fix or remove it (reset --force clears the item)")]
    ResultUnreadable(String),
    #[error("REPOS_DIR {0}; mount the shared state directory or fix REPOS_DIR")]
    ReposDir(String),
    #[error("invalid settings, nothing done: {}; see selfdeploy config --check", .0.join("; "))]
    Settings(Vec<String>),
    #[error("{0}; nothing dispatched")]
    Random(String),
    #[error("cannot resolve --worktree {path}: {error}")]
    Worktree { path: String, error: std::io::Error },
    #[error("cannot append history {path}: {error}")]
    History { path: String, error: std::io::Error },
    #[error(
        "cannot record the event before it acts ({path}: {error}); nothing done: free space or fix the permissions, then retry"
    )]
    Intent { path: String, error: std::io::Error },
    #[error(
        "an earlier event on this item is not in its history yet and cannot be appended ({path}: {error}); nothing done: free space or fix the permissions, then retry"
    )]
    Unrecorded { path: String, error: std::io::Error },
    #[error(
        "the history {0} is signed, and HISTORY_HMAC_KEY is not set: an entry written now would break its chain; set HISTORY_HMAC_KEY to the key that signs it, then retry; nothing done"
    )]
    Unsigned(String),
    #[error(transparent)]
    NotOwner(store::owner::NotOwner),
    #[error(transparent)]
    Identity(#[from] store::identity::IdentityError),
    #[error(
        "cannot read {path}, an event's record kept for the history: {error}; move it away (the history then lacks that event), then retry; nothing done"
    )]
    IntentUnreadable { path: String, error: std::io::Error },
    #[error("interrupted by {0} before the event acted; nothing done")]
    Interrupted(&'static str),
    /// An effect failed after the event had changed something (an earlier
    /// effect done, or the failing one visible on disk, as a marker renamed
    /// into place whose directory could not be synced): never "nothing
    /// changed".
    #[error(
        "{error}; the event had already acted ({from} -> {to} on disk; done: {done}): \
         see `selfdeploy status`, the next event carries on from there"
    )]
    AfterChange {
        error: Box<EngineError>,
        from: StateName,
        to: String,
        done: String,
    },
}

impl EngineError {
    /// Whether the event may have changed something before it failed.
    pub fn changed_something(&self) -> bool {
        matches!(self, EngineError::AfterChange { .. })
    }
}

/// Handles one event: the facts are read through `probe`, the effects the
/// machine decides are carried out by `perform`. A dry run (the recording
/// performer) takes no lock and writes nothing, not even the history.
///
/// The history holds every event that acted, whatever stops the process:
/// before the first effect, an intent is written durably; after the
/// event, its entry is appended and the intent cleared. An intent left
/// behind (kill -9, a full disk) is reconciled into the history by the next
/// event or watch pass, before anything else. When the entry cannot be
/// appended, the report says so in `history_error` (the CLI exits 4).
pub fn handle(
    settings: &Settings,
    req: &Request,
    probe: &mut dyn Probe,
    perform: &mut dyn Perform,
) -> Result<Report, EngineError> {
    let dry_run = perform.dry_run();
    preflight(settings)?;
    let req = &resolve_worktree(req)?;
    let paths = ItemPaths::new(&settings.repos_dir, &req.repo, &req.work_item)
        .with_durability(settings.durability);
    if dry_run {
        let (snapshot, probed) = load_and_probe(settings, req, &paths, probe)?;
        let result = run(
            settings,
            req,
            &paths,
            &snapshot,
            &probed,
            perform,
            &mut |_| Ok(()),
        );
        trace(req, &result, true);
        return result;
    }
    let _lock = acting(settings, &paths)?;
    let recovered = reconcile_locked(settings, &paths, &req.actor, probe.now())?;
    let (snapshot, probed) = load_and_probe(settings, req, &paths, probe)?;
    // Before the first effect: a signal stops the event here, with nothing
    // done; past it, the intent makes the event's entry durable.
    let mut before_acting = |intent: Intent| {
        if let Some(signal) = crate::interrupt::received() {
            return Err(EngineError::Interrupted(crate::interrupt::name(signal)));
        }
        let intent_error = |error| EngineError::Intent {
            path: store::intent_path(&paths.history_file)
                .display()
                .to_string(),
            error,
        };
        let intent = Intent {
            history_len: Some(store::complete_len(&paths.history_file).map_err(intent_error)?),
            ..intent
        }
        .sealed(settings.history_key.as_ref(), &paths.identity())
        .map_err(intent_error)?;
        store::write_intent(&paths.history_file, &intent, settings.durability).map_err(intent_error)
    };
    let result = run(
        settings,
        req,
        &paths,
        &snapshot,
        &probed,
        perform,
        &mut before_acting,
    );
    trace(req, &result, false);
    let now = clock::rfc3339_seconds(probed.now);
    let entry = match &result {
        Ok(report) => HistoryEntry {
            time: now.clone(),
            actor: req.actor.clone(),
            event: req.event.to_string(),
            from: report.from.to_string(),
            to: report.to.to_string(),
            outcome: report.outcome.to_string(),
            reason: report.reason.clone(),
            effects: report.effects.iter().map(|e| e.kind().to_owned()).collect(),
        },
        Err(err) => HistoryEntry {
            time: now.clone(),
            actor: req.actor.clone(),
            event: req.event.to_string(),
            from: snapshot.state.to_string(),
            to: Snapshot::load(&paths).map_or("unknown".into(), |s| s.state.to_string()),
            outcome: "error".into(),
            reason: Some(err.to_string()),
            effects: Vec::new(),
        },
    };
    // An event that changed nothing and repeats the last entry word for
    // word (a deferred poll of a poller, a failure retried) is recorded
    // once, with a count: the history tells what happened, not how often
    // somebody asked.
    let changed_nothing = match &result {
        Ok(report) => report.outcome == Outcome::Deferred && report.effects.is_empty(),
        Err(e) => !e.changed_something(),
    };
    let repeated = changed_nothing
        && store::last_entry(&paths.history_file)
            .ok()
            .flatten()
            .is_some_and(|last| last == entry_without_time(&entry, &last.time));
    let counted = repeated
        && store::count_repeat(&paths.history_file, &now, settings.durability).is_ok_and(|c| c);
    let appended = if counted {
        Ok(Vec::new())
    } else {
        store::append_history(
            &paths.history_file,
            &entry,
            settings.history_key.as_ref(),
            settings.durability,
        )
    };
    let intended = store::intent_pending(&paths.history_file);
    let (mut notes, history_error) = match appended {
        Ok(repaired) => {
            if intended {
                // The entry is in the history: a failure to clear the intent
                // would only record the event twice, never lose it.
                if let Err(error) = store::clear_intent(&paths.history_file, settings.durability) {
                    tracing::warn!(%error, "intent not cleared");
                }
            }
            (repaired, None)
        }
        // What was done is done (a deploy may be launched): the report
        // tells it, and the entry waits in the intent for the next event.
        Err(error) => {
            let error = EngineError::History {
                path: paths.history_file.display().to_string(),
                error,
            };
            tracing::warn!(%error, "history not appended");
            if intended {
                // Best effort on a full disk: the intent written before the
                // first effect is reconciled all the same.
                let finished = Intent {
                    entry: entry.clone(),
                    finished: true,
                    dispatch_id: None,
                    history_len: store::complete_len(&paths.history_file).ok(),
                    mac: None,
                }
                .sealed(settings.history_key.as_ref(), &paths.identity());
                if let Ok(finished) = finished {
                    let _ =
                        store::write_intent(&paths.history_file, &finished, settings.durability);
                }
            }
            let pending = if intended {
                "; the event's record is kept and is written to the history by the next event or watch pass"
            } else {
                "; nothing was changed by this event"
            };
            (Vec::new(), Some(format!("{error}{pending}")))
        }
    };
    notes.splice(0..0, recovered);
    match result {
        Ok(mut report) => {
            report.notes.extend(notes);
            report.history_error = history_error;
            Ok(report)
        }
        Err(e) => Err(e),
    }
}

/// The item as it is on disk and the facts its event needs; a poll whose
/// result cannot be read stops here.
fn load_and_probe(
    settings: &Settings,
    req: &Request,
    paths: &ItemPaths,
    probe: &mut dyn Probe,
) -> Result<(Snapshot, Probed), EngineError> {
    let snapshot = Snapshot::load(paths)?;
    if let (EventName::Poll, Some(why)) = (req.event, snapshot.poll_blocker()) {
        return Err(EngineError::ResultUnreadable(why));
    }
    let probed = probe_facts(settings, req, paths, &snapshot, probe, false)?;
    Ok((snapshot, probed))
}

fn trace(req: &Request, result: &Result<Report, EngineError>, dry_run: bool) {
    match result {
        Ok(r) => tracing::info!(
            repo = %req.repo, work_item = %req.work_item, event = %req.event,
            from = %r.from, to = %r.to, outcome = %r.outcome, reason = r.reason.as_deref(),
            dry_run, "event handled"
        ),
        // The caller reports the error itself; this is for RUST_LOG=info traces.
        Err(e) => tracing::info!(
            repo = %req.repo, work_item = %req.work_item, event = %req.event, error = %e,
            "event failed"
        ),
    }
}

/// What a command that writes under REPOS_DIR checks once the item is
/// known, and the item's lock: the owner of REPOS_DIR runs it, and a signed
/// history is never extended unsigned.
fn acting(settings: &Settings, paths: &ItemPaths) -> Result<ItemLock, EngineError> {
    check_owner(settings)?;
    let lock = ItemLock::acquire(&paths.lock_file, settings.lock_timeout)?;
    if settings.history_key.is_none() {
        let signed =
            store::is_signed(&paths.history_file).map_err(|error| EngineError::History {
                path: paths.history_file.display().to_string(),
                error,
            })?;
        if signed {
            return Err(EngineError::Unsigned(
                paths.history_file.display().to_string(),
            ));
        }
    }
    Ok(lock)
}

/// Refuses a command that would write under REPOS_DIR as another user than
/// its owner (root included).
pub fn check_owner(settings: &Settings) -> Result<(), EngineError> {
    match store::owner::check(&settings.repos_dir) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_owner)) => Err(EngineError::NotOwner(not_owner)),
        Err(e) => Err(EngineError::ReposDir(format!(
            "{} cannot be read ({e})",
            settings.repos_dir.display()
        ))),
    }
}

/// Brings the history up to date for one item without an event: a pending
/// intent and late results of runs kept by a reset. The watch calls it; an
/// event does the same first, under its lock.
pub fn reconcile(
    settings: &Settings,
    repo: &RepoName,
    work_item: &WorkItem,
    actor: &str,
) -> Result<Vec<String>, EngineError> {
    preflight(settings)?;
    let paths =
        ItemPaths::new(&settings.repos_dir, repo, work_item).with_durability(settings.durability);
    let _lock = acting(settings, &paths)?;
    reconcile_locked(settings, &paths, actor, SystemTime::now())
}

/// Under the item's lock: an intent left by an event that stopped (or
/// could not append) becomes its history entry, before anything else is
/// recorded. When even that append fails, nothing more is done.
fn reconcile_locked(
    settings: &Settings,
    paths: &ItemPaths,
    actor: &str,
    now: SystemTime,
) -> Result<Vec<String>, EngineError> {
    let history_error = |error| EngineError::History {
        path: paths.history_file.display().to_string(),
        error,
    };
    let mut notes = Vec::new();
    let intent_path = store::intent_path(&paths.history_file);
    let intent =
        store::read_intent(&paths.history_file).map_err(|error| EngineError::IntentUnreadable {
            path: intent_path.display().to_string(),
            error,
        })?;
    if let Some(intent) = intent {
        let keys: Vec<&crate::config::Secret> = settings
            .history_key
            .iter()
            .chain(&settings.history_previous_keys)
            .collect();
        // The event's own entry may be in the history already (it was
        // stopped between its append and the clear): never twice.
        let appended = match &intent {
            Ok(i) if i.authentic(&keys, &paths.identity()) => match i.history_len {
                Some(offset) => {
                    store::entry_at(&paths.history_file, offset)
                        .map_err(history_error)?
                        .is_some_and(|e| {
                            e.event == i.entry.event
                                && e.actor == i.entry.actor
                                && e.from == i.entry.from
                        })
                        // Or it repeated the entry before it and was counted.
                        || store::counted_at(&paths.history_file, offset, &i.entry.time)
                }
                None => false,
            },
            _ => false,
        };
        if !appended {
            let snapshot = Snapshot::load(paths)?;
            let entry = recovered_entry(intent, &keys, &paths.identity(), &snapshot, actor, now);
            append_recovered(settings, paths, &entry)?;
            notes.push(format!(
                "recorded an earlier {} by {} that had not reached the history: {}",
                entry.event, entry.actor, entry.outcome
            ));
        }
        store::clear_intent(&paths.history_file, settings.durability).map_err(history_error)?;
    }
    let snapshot = Snapshot::load(paths)?;
    for run in &snapshot.kept_runs {
        let Some(exit) = run.result.as_ref().filter(|_| !run.recorded) else {
            continue;
        };
        let approved = run
            .record
            .as_ref()
            .map(|r| format!(" (approved by {} at {})", r.approved_by, r.approved_at))
            .unwrap_or_default();
        let verdict = exit.verdict();
        let ended = match &exit.garbage {
            Some(garbage) => {
                format!("its result is not an exit code ({garbage:?}): {verdict}, fail-closed")
            }
            None => format!("its hook ended with exit code {}: {verdict}", exit.code),
        };
        let entry = HistoryEntry {
            time: clock::rfc3339_seconds(now),
            actor: actor.to_owned(),
            event: LATE_RESULT_EVENT.to_owned(),
            from: snapshot.state.to_string(),
            to: snapshot.state.to_string(),
            outcome: "recorded".to_owned(),
            reason: Some(format!(
                "dispatch {}{approved} was kept by a reset of the item before its own verdict was recorded: {ended}; the item was not finalized by it",
                run.id
            )),
            effects: Vec::new(),
        };
        append_recovered(settings, paths, &entry)?;
        notes.push(format!(
            "recorded the late verdict of dispatch {} (kept by a reset): {verdict}",
            run.id
        ));
    }
    Ok(notes)
}

pub use store::LATE_RESULT_EVENT;

/// Appends an entry the history lacked (an earlier event's, a late
/// verdict); when it cannot be, nothing more is done.
fn append_recovered(
    settings: &Settings,
    paths: &ItemPaths,
    entry: &HistoryEntry,
) -> Result<(), EngineError> {
    store::append_history(
        &paths.history_file,
        entry,
        settings.history_key.as_ref(),
        settings.durability,
    )
    .map(drop)
    .map_err(|error| EngineError::Unrecorded {
        path: paths.history_file.display().to_string(),
        error,
    })
}

/// The history entry of an intent left behind. A finished event's entry is
/// its own; an event that stopped is told by what its intent planned and
/// what the state directory shows now.
fn recovered_entry(
    intent: Result<Intent, String>,
    keys: &[&crate::config::Secret],
    item: &str,
    snapshot: &Snapshot,
    actor: &str,
    now: SystemTime,
) -> HistoryEntry {
    let at = clock::rfc3339_seconds(now);
    // A record that cannot be trusted is still a fact: something acted, or
    // meant to; what it says is shown, never taken as an event.
    let untrusted = |reason: String| HistoryEntry {
        time: at.to_string(),
        actor: actor.to_owned(),
        event: "unknown".into(),
        from: "unknown".into(),
        to: snapshot.state.to_string(),
        outcome: "interrupted".into(),
        reason: Some(reason),
        effects: Vec::new(),
    };
    let intent = match intent {
        // Whoever can write the directory without the key cannot have an
        // event of their making signed into the chain.
        Ok(intent) if !intent.authentic(keys, item) => {
            return untrusted(format!(
                "a record in place of an event's intent is not sealed by HISTORY_HMAC_KEY for this item (forged, copied from another item, or written without the key): not trusted; it claimed {} by {} ({} -> {}); the item is now {}",
                intent.entry.event,
                intent.entry.actor,
                intent.entry.from,
                intent.entry.to,
                snapshot.state
            ));
        }
        Ok(intent) => intent,
        Err(shown) => {
            return untrusted(format!(
                "an event's record before it acted was found damaged ({shown}); the item is now {}",
                snapshot.state
            ));
        }
    };
    let mut entry = intent.entry;
    if intent.finished {
        let late = format!("appended at {at}: the history could not be written when the event ran");
        entry.reason = Some(match entry.reason {
            Some(reason) => format!("{reason} ({late})"),
            None => late,
        });
        return entry;
    }
    let mut reason = format!(
        "the event's own entry never reached the history (the process was stopped after it began to act, or the history could not be written); it planned: {}; the item is now {}",
        entry.effects.join(", "),
        snapshot.state
    );
    if let Some(id) = &intent.dispatch_id {
        reason.push_str("; ");
        reason.push_str(&dispatch_fate(snapshot, id));
    }
    reason.push_str(&format!(
        "; recorded at {at} from the record written before the first effect"
    ));
    entry.to = snapshot.state.to_string();
    entry.outcome = "interrupted".into();
    entry.reason = Some(reason);
    entry
}

/// What became of dispatch `id`, as its ticket files show.
fn dispatch_fate(snapshot: &Snapshot, id: &str) -> String {
    use crate::contract::markers::TicketFile;
    let has = |kind: TicketFile| snapshot.files.iter().any(|f| *f == kind.name(id));
    if has(TicketFile::Result) || has(TicketFile::Claimed) {
        format!("dispatch {id} was claimed by the host: its deploy ran")
    } else if has(TicketFile::Revoked) {
        format!("dispatch {id} was revoked: it never ran")
    } else if has(TicketFile::Dispatch) {
        format!(
            "dispatch {id} was written, and whether its launch reached the host is not known: a poll revokes it unless the host claims it within the claim timeout"
        )
    } else {
        format!("dispatch {id} has no ticket: nothing was launched")
    }
}

/// What every event checks before anything acts: the settings, and the
/// state directory's mount.
fn preflight(settings: &Settings) -> Result<(), EngineError> {
    let problems = settings.acting_problems();
    if !problems.is_empty() {
        return Err(EngineError::Settings(problems));
    }
    check_repos_dir(settings)
}

/// An unmounted shared directory must not be papered over by creating it, nor
/// read as "nothing in flight": the host would never see the state. So
/// REPOS_DIR must be a directory that holds the identity `selfdeploy init`
/// wrote.
pub fn check_repos_dir(settings: &Settings) -> Result<(), EngineError> {
    check_repos_dir_exists(settings)?;
    store::identity::read(&settings.repos_dir)?;
    Ok(())
}

/// REPOS_DIR can be written by this process (a read-only mount, a full
/// disk, a directory of another user): a probe file is created under
/// `.selfdeploy/probe/` and removed. `watch` checks it at start rather than
/// at its first finalize.
pub fn check_writable(settings: &Settings) -> Result<(), EngineError> {
    let dir = settings.repos_dir.join(".selfdeploy").join("probe");
    let file = dir.join(format!("write-{}", std::process::id()));
    let probe = || -> std::io::Result<()> {
        crate::atomic::create_dir_all(&dir)?;
        std::fs::write(&file, b"probe\n")?;
        std::fs::remove_file(&file)?;
        // Another watch may be probing at the same time: its file keeps
        // the directory, which is fine.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    };
    probe().map_err(|e| {
        let _ = std::fs::remove_file(&file);
        EngineError::ReposDir(format!(
            "is not writable: cannot write under {} ({e}); mount it read-write, \
             free space, or run as its owner (`selfdeploy doctor` checks it)",
            settings.repos_dir.join(".selfdeploy").display()
        ))
    })
}

/// REPOS_DIR is a directory (what `init` needs before it writes there).
pub fn check_repos_dir_exists(settings: &Settings) -> Result<(), EngineError> {
    let dir = &settings.repos_dir;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(EngineError::ReposDir(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EngineError::ReposDir(format!(
            "{} does not exist",
            dir.display()
        ))),
        Err(e) => Err(EngineError::ReposDir(format!(
            "{} cannot be read ({e})",
            dir.display()
        ))),
    }
}

/// A relative `--worktree` means the caller's directory now, not wherever a
/// later poll runs: it is made absolute when the event is received.
fn resolve_worktree(req: &Request) -> Result<Request, EngineError> {
    let mut req = req.clone();
    if let Some(path) = req.worktree.as_ref().filter(|p| p.is_relative()) {
        req.worktree = Some(
            std::path::absolute(path).map_err(|error| EngineError::Worktree {
                path: path.display().to_string(),
                error,
            })?,
        );
    }
    Ok(req)
}

fn run(
    settings: &Settings,
    req: &Request,
    paths: &ItemPaths,
    snapshot: &Snapshot,
    probed: &Probed,
    perform: &mut dyn Perform,
    before_acting: &mut dyn FnMut(Intent) -> Result<(), EngineError>,
) -> Result<Report, EngineError> {
    let facts = probed.facts(settings, req, snapshot);
    let event = req.event.event();
    // The machine is pure: asking it first what the event will do costs
    // nothing, and lets the intent be durable before the first effect.
    let plan = machine::step(snapshot.state, &event, &facts);
    if !plan.effects.is_empty() {
        let dispatch_id = plan.effects.iter().find_map(|e| match e {
            Effect::WriteTicket { dispatch_id } => Some(dispatch_id.clone()),
            _ => None,
        });
        before_acting(Intent {
            entry: HistoryEntry {
                time: facts.stamp(),
                actor: req.actor.clone(),
                event: req.event.to_string(),
                from: snapshot.state.to_string(),
                to: snapshot.state.to_string(),
                outcome: "pending".into(),
                reason: None,
                effects: plan.effects.iter().map(|e| e.kind().to_owned()).collect(),
            },
            finished: false,
            dispatch_id,
            history_len: None,
            mac: None,
        })?;
    }
    let mut done: Vec<&'static str> = Vec::new();
    let mut performer = |effect: &Effect| {
        let performed = perform.perform(paths, effect);
        if performed.is_ok() {
            done.push(effect.kind());
        }
        performed
    };
    let driven = match drive(snapshot.state, &event, &facts, &mut performer) {
        Ok(driven) => driven,
        Err(error) => {
            let error = EngineError::Effect(error);
            // A dry run performs nothing; otherwise what is on disk now
            // tells whether the failing effect, too, took hold.
            let now = Snapshot::load(paths).ok();
            let moved = now.as_ref().is_some_and(|now| now != snapshot);
            if perform.dry_run() || (done.is_empty() && !moved) {
                return Err(error);
            }
            return Err(EngineError::AfterChange {
                error: Box::new(error),
                from: snapshot.state,
                to: now.map_or_else(|| "unreadable".to_owned(), |s| s.state.to_string()),
                done: if done.is_empty() {
                    "the failing effect itself".to_owned()
                } else {
                    done.join(", ")
                },
            });
        }
    };
    let condition = driven.condition();
    let mut notes = driven.notes;
    // The boot clock decided; that the wall clock disagrees is still news.
    if snapshot.state == StateName::Initiated
        && req.event == EventName::Poll
        && let Some(stepped) = &probed.measured.stepped
    {
        notes.push(format!(
            "clock: {stepped}; the boot clock measures the dispatch's age"
        ));
    }
    Ok(Report {
        repo: req.repo.clone(),
        work_item: req.work_item.clone(),
        event: req.event,
        from: snapshot.state,
        to: driven.to,
        outcome: driven.outcome,
        reason: driven.reason,
        condition,
        effects: driven.effects,
        notes,
        dry_run: perform.dry_run(),
        history_error: None,
    })
}

/// What one event came to once its effects were performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driven {
    pub to: StateName,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub conditions: Vec<&'static str>,
    pub effects: Vec<Effect>,
    pub notes: Vec<String>,
}

impl Driven {
    /// The conditions that chose the row, as the reviewed table spells them.
    pub fn condition(&self) -> String {
        if self.conditions.is_empty() {
            "always".to_owned()
        } else {
            self.conditions.join(", ")
        }
    }
}

/// Runs one event through the machine, performing each effect in order and
/// feeding dispatch results back in as events. Stops at the first effect that
/// fails. Shared by the engine, replays and the table derivation.
pub fn drive(
    from: StateName,
    event: &Event,
    facts: &Facts<'_>,
    perform: &mut dyn FnMut(&Effect) -> Result<Performed, exec::ExecError>,
) -> Result<Driven, exec::ExecError> {
    let first = machine::step(from, event, facts);
    let mut driven = Driven {
        to: first.to,
        outcome: first.outcome,
        reason: first.reason.clone(),
        conditions: Vec::new(),
        effects: Vec::new(),
        notes: Vec::new(),
    };
    // Each decision, and whether it decides the outcome: what a push came to
    // is recorded, but the event stays what it was (a finalize, a retry).
    let mut pending = vec![(first, true)];
    while let Some((decision, decides)) = pending.pop() {
        let Decision {
            conditions,
            to,
            outcome,
            reason,
            effects,
        } = decision;
        driven.to = to;
        if decides {
            driven.outcome = outcome;
        }
        driven.conditions.extend(conditions);
        // A feedback step that gives no reason keeps the one before it (the
        // launch's error stays the reason of a dispatch_failed); what a push
        // came to is added to the event's own reason.
        match (reason, &mut driven.reason) {
            (Some(more), Some(reason)) if !decides => {
                reason.push_str("; ");
                reason.push_str(&more);
            }
            (Some(reason), _) => driven.reason = Some(reason),
            (None, _) => {}
        }
        for effect in effects {
            tracing::debug!(effect = effect.kind(), "performing");
            let performed = perform(&effect)?;
            driven.effects.push(effect);
            match performed {
                Performed::Done => {}
                Performed::Notes(notes) => driven.notes.extend(notes),
                Performed::Dispatched(result) => {
                    let feedback = match result {
                        Ok(()) => Event::Launched,
                        Err(why) => Event::LaunchFailed(why),
                    };
                    pending.push((machine::step(to, &feedback, facts), true));
                }
                // A reset removes the item whatever the rename found; the
                // operator is told whether the hook was running.
                Performed::Revoke(found) if revoke_reason(&driven) == Some(RevokeReason::Reset) => {
                    if found == Revoke::Claimed {
                        driven.notes.push(
                            "the host had claimed the ticket: the hook may still be running on the host, its place is kept, and the history records its verdict when its result lands (it never decides a new deploy)".to_owned(),
                        );
                    }
                }
                Performed::Published(published) => {
                    driven.notes.extend(published.notes);
                    let record = match driven.effects.last() {
                        Some(Effect::GitPublish { record, .. }) => record.clone(),
                        _ => None,
                    };
                    let feedback = Event::Published {
                        push: published.pushed,
                        record,
                    };
                    pending.push((machine::step(to, &feedback, facts), false));
                }
                Performed::Revoke(found) => {
                    if let Some(Effect::RevokeTicket { reason, detail, .. }) = driven.effects.last()
                    {
                        let feedback = match found {
                            Revoke::Revoked => Event::TicketRevoked(*reason),
                            Revoke::Claimed => Event::TicketClaimed(*reason, detail.clone()),
                        };
                        pending.push((machine::step(to, &feedback, facts), true));
                    }
                }
            }
        }
    }
    Ok(driven)
}

fn revoke_reason(driven: &Driven) -> Option<RevokeReason> {
    match driven.effects.last() {
        Some(Effect::RevokeTicket { reason, .. }) => Some(*reason),
        _ => None,
    }
}

/// How long ago the item's current dispatch was made, by the clocks read
/// now (`now` and `boot`, read together) and the time the kernel gave its
/// `initiated` file: the engine's facts, `status` and `watch` measure it
/// alike.
pub fn measure_dispatch(
    paths: &ItemPaths,
    snapshot: &Snapshot,
    now: SystemTime,
    boot: Option<&BootClock>,
    probe: &mut dyn Probe,
) -> Measured {
    let record = snapshot.initiated_record();
    let file_time = record.and_then(|_| probe.modified(&paths.marker(Marker::Initiated)));
    clock::measure(record, file_time, now, boot)
}

/// The same, with this machine's clocks now.
pub fn measure_dispatch_now(paths: &ItemPaths, snapshot: &Snapshot) -> Measured {
    let mut probe = crate::probe::HostProbe;
    let boot = probe.boot_clock();
    let now = probe.now();
    measure_dispatch(paths, snapshot, now, boot.as_ref(), &mut probe)
}

/// What the engine looks up outside the state directory before a step.
struct Probed {
    now: SystemTime,
    /// The boot clock, read with `now`.
    boot: Option<BootClock>,
    /// The current dispatch's age at `now`.
    measured: Measured,
    branch: Option<BranchName>,
    worktree: PathBuf,
    revision: Revision,
    worktree_check: Result<(), String>,
    head_ref: Result<String, String>,
    transport_program: Result<(), String>,
    freeze: Result<Option<machine::Freeze>, String>,
    new_dispatch_id: String,
    running_runs: Vec<String>,
}

/// Arguments win over what `initiated` recorded, which wins over the
/// settings. The dispatch facts (the revision, the worktree, the transport
/// program, a new id) are looked up only when the machine says a dispatch
/// may follow: a guard that refuses on the settings alone runs nothing.
/// `explain` reads them all, to show every guard's value.
fn probe_facts(
    settings: &Settings,
    req: &Request,
    paths: &ItemPaths,
    snapshot: &Snapshot,
    probe: &mut dyn Probe,
    everything: bool,
) -> Result<Probed, EngineError> {
    let record = snapshot.initiated_record();
    let branch = req
        .branch
        .clone()
        // A recorded branch is checked again: records outlive releases.
        .or_else(|| record.and_then(|r| BranchName::new(r.branch.as_deref()?).ok()));
    let worktree = req
        .worktree
        .clone()
        .or_else(|| record.map(|r| PathBuf::from(&r.worktree)))
        .unwrap_or_else(|| {
            settings.default_worktree(
                req.repo.given(),
                req.work_item.as_str(),
                branch.as_ref().map(BranchName::as_str),
            )
        });
    let dispatching =
        everything || machine::dispatch_may_follow(snapshot.state, req.event, settings, &req.repo);
    let mut probed = Probed {
        now: SystemTime::UNIX_EPOCH,
        boot: None,
        measured: clock::measure(None, None, SystemTime::UNIX_EPOCH, None),
        branch,
        worktree,
        revision: match record.and_then(|r| r.revision.clone()) {
            Some(sha) => Revision::Known(sha),
            None => Revision::Inactive,
        },
        worktree_check: Ok(()),
        head_ref: Ok(String::new()),
        transport_program: Ok(()),
        freeze: Ok(None),
        new_dispatch_id: String::new(),
        running_runs: snapshot
            .kept_runs
            .iter()
            .filter(|k| k.result.is_none())
            .map(|k| k.id.clone())
            .collect(),
    };
    // The freeze is read for every approval (and explain), before the
    // guards that need git: a frozen repo runs nothing.
    if everything
        || (snapshot.state == StateName::ApproveRequested && req.event == EventName::Approved)
    {
        probed.freeze = probe.freeze(settings, &req.repo);
    }
    if dispatching {
        probed.revision = dispatch_revision(
            settings,
            req,
            &probed.worktree,
            probed.branch.as_ref().map(BranchName::as_str),
            probe,
        );
        probed.worktree_check = probe.work_tree(settings, &probed.worktree);
        if probed.worktree_check.is_ok() {
            probed.head_ref = probe.head_ref(settings, &probed.worktree);
        }
        probed.transport_program = transport_program(settings, probe);
        probed.new_dispatch_id = probe.new_dispatch_id().map_err(EngineError::Random)?;
    }
    // The clocks last, together: a dispatch writes `initiated` right after,
    // so the time the kernel gives the file agrees with the one recorded.
    probed.boot = probe.boot_clock();
    probed.now = probe.now();
    probed.measured = measure_dispatch(paths, snapshot, probed.now, probed.boot.as_ref(), probe);
    Ok(probed)
}

impl Probed {
    fn facts<'a>(
        &'a self,
        settings: &'a Settings,
        req: &'a Request,
        snapshot: &'a Snapshot,
    ) -> Facts<'a> {
        let record = snapshot.initiated_record();
        Facts {
            settings,
            repo: &req.repo,
            work_item: &req.work_item,
            now: self.now,
            actor: &req.actor,
            force: req.force,
            merged: req.merged,
            branch: self.branch.as_ref().map(BranchName::as_str),
            worktree: &self.worktree,
            revision: self.revision.clone(),
            worktree_check: self.worktree_check.clone(),
            head_ref: self.head_ref.clone(),
            transport_program: self.transport_program.clone(),
            freeze: self.freeze.clone(),
            new_dispatch_id: &self.new_dispatch_id,
            dispatch: snapshot.dispatch.as_ref(),
            open_tickets: &snapshot.open_tickets,
            running_runs: &self.running_runs,
            result: snapshot.result.clone(),
            approved_by: record.map(|r| r.approved_by.as_str()),
            finalized: snapshot.finalized.as_ref().and_then(|r| r.as_ref()),
            dispatched_at: record.map(|r| r.dispatch_time()),
            dispatch_age: self.measured.age.clone(),
            boot: self.boot.as_ref(),
        }
    }
}

/// `selfdeploy explain`: the state on disk, every dispatch guard's value, and
/// what the event would do (a dry run: nothing is written).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub snapshot: Snapshot,
    pub guards: Vec<GuardValue>,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardValue {
    pub guard: Guard,
    pub passes: bool,
    pub detail: String,
}

/// Reads the facts once, shows each guard's value, then runs the event as a
/// dry run with the same facts: nothing is locked, run twice or written.
pub fn explain(
    settings: &Settings,
    req: &Request,
    probe: &mut dyn Probe,
) -> Result<Explanation, EngineError> {
    preflight(settings)?;
    let req = resolve_worktree(req)?;
    let paths = ItemPaths::new(&settings.repos_dir, &req.repo, &req.work_item)
        .with_durability(settings.durability);
    let snapshot = Snapshot::load(&paths)?;
    let probed = probe_facts(settings, &req, &paths, &snapshot, probe, true)?;
    let facts = probed.facts(settings, &req, &snapshot);
    let guards = Guard::DISPATCH
        .into_iter()
        .map(|guard| {
            let verdict = guard.check(&facts);
            GuardValue {
                guard,
                passes: verdict.is_ok(),
                detail: match verdict {
                    Err(why) => why,
                    Ok(()) => guard_pass_detail(guard, &facts),
                },
            }
        })
        .collect();
    let report = run(
        settings,
        &req,
        &paths,
        &snapshot,
        &probed,
        &mut exec::RecordingPerformer::default(),
        &mut |_| Ok(()),
    )?;
    Ok(Explanation {
        snapshot,
        guards,
        report,
    })
}

fn guard_pass_detail(guard: Guard, f: &Facts<'_>) -> String {
    match guard {
        Guard::Applies => format!("self-deploy is enabled for repo {}", f.repo),
        Guard::EarlierRun if !f.running_runs.is_empty() => format!(
            "forced past dispatch {} (reset while it ran, no result yet)",
            f.running_runs.join(", ")
        ),
        Guard::EarlierRun => "no earlier run of this item is still going".to_owned(),
        Guard::StagingPort => format!(
            "STAGING_PORT {} differs from DEPLOY_PROD_TARGET_PORT {}",
            f.settings.staging_port, f.settings.target_port
        ),
        Guard::Freshness => match &f.revision {
            Revision::Known(sha) => format!("validated revision {sha}"),
            _ => "inactive: EXPECTED_REVISION is omitted".to_owned(),
        },
        Guard::Worktree => format!("{} is a git work tree", f.worktree.display()),
        Guard::Branch => match &f.head_ref {
            Ok(head) => format!("{} is on {head}", f.worktree.display()),
            Err(_) => "not checked: the worktree guard says no".to_owned(),
        },
        Guard::Freeze => format!("repo {} is not locked", f.repo),
        Guard::TransportProgram => {
            format!("{:?} transport program found", f.settings.transport).to_lowercase()
        }
    }
}

/// The validated revision, when the freshness check is active: the caller's,
/// or the branch tip in the worktree.
fn dispatch_revision(
    settings: &Settings,
    req: &Request,
    worktree: &std::path::Path,
    branch: Option<&str>,
    probe: &mut dyn Probe,
) -> Revision {
    if !settings.freshness_active(req.repo.as_str()) {
        return Revision::Inactive;
    }
    if let Some(sha) = req.revision.as_ref().filter(|s| !s.trim().is_empty()) {
        return Revision::Known(sha.trim().to_owned());
    }
    match probe.branch_tip(settings, worktree, branch) {
        Ok(sha) => Revision::Known(sha),
        Err(why) => Revision::Unknown(why),
    }
}

fn transport_program(settings: &Settings, probe: &mut dyn Probe) -> Result<(), String> {
    let program = settings.transport.program();
    probe
        .program(program)
        .map_err(|e| format!("no {program} binary: {e}; install it or fix PATH"))
}

/// The entry as it would read had it been written at `time`.
fn entry_without_time(entry: &HistoryEntry, time: &str) -> HistoryEntry {
    HistoryEntry {
        time: time.to_owned(),
        ..entry.clone()
    }
}
