//! One event, end to end: lock, load the snapshot, gather facts, let the
//! machine decide, perform the effects (feeding dispatch results back into
//! the machine), append the history. The only module that ties the store, the
//! machine and the executor together; dry runs and replays come through here
//! too, with a recording executor.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Settings;
use crate::contract::names::{BranchName, RepoName, WorkItem};
use crate::effect::{Effect, RevokeReason};
use crate::exec::{self, Perform, Performed};
use crate::machine::{
    self, Decision, Event, EventName, Facts, Guard, Outcome, Revision, StateName,
};
use crate::probe::Probe;
use crate::store::{self, HistoryEntry, ItemLock, ItemPaths, Revoke, Snapshot};

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
}

/// Handles one event: the facts are read through `probe`, the effects the
/// machine decides are carried out by `perform`. A dry run (the recording
/// performer) takes no lock and writes nothing, not even the history.
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
    let _lock = if dry_run {
        None
    } else {
        Some(ItemLock::acquire(&paths.lock_file, settings.lock_timeout)?)
    };
    let snapshot = Snapshot::load(&paths)?;
    if let (EventName::Poll, Some(why)) = (req.event, snapshot.poll_blocker()) {
        return Err(EngineError::ResultUnreadable(why));
    }
    let probed = probe_facts(settings, req, &snapshot, probe, false)?;
    let result = run(settings, req, &paths, &snapshot, &probed, perform);
    let now = humantime::format_rfc3339_seconds(probed.now).to_string();
    match &result {
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
    if !dry_run {
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
        // A failure that repeats the last entry word for word (a poller
        // retrying a missing worktree) is recorded once: the history tells
        // what happened, not how often somebody asked.
        let repeated = result.is_err()
            && store::last_entry(&paths.history_file)
                .ok()
                .flatten()
                .is_some_and(|last| last == entry_without_time(&entry, &last.time));
        let appended = if repeated {
            Ok(Vec::new())
        } else {
            store::append_history(
                &paths.history_file,
                &entry,
                settings.history_key.as_ref(),
                settings.durability,
            )
        };
        let notes = match appended {
            Ok(repaired) => repaired,
            // What was done is done (a deploy may be launched): report it
            // truthfully, with the missing history line, rather than as an error.
            Err(error) => {
                let error = EngineError::History {
                    path: paths.history_file.display().to_string(),
                    error,
                };
                tracing::warn!(%error, "history not appended");
                vec![error.to_string()]
            }
        };
        return match result {
            Ok(mut report) => {
                report.notes.extend(notes);
                Ok(report)
            }
            Err(e) => Err(e),
        };
    }
    result
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
/// read as "nothing in flight": the host would never see the state.
pub fn check_repos_dir(settings: &Settings) -> Result<(), EngineError> {
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
) -> Result<Report, EngineError> {
    let facts = probed.facts(settings, req, snapshot);
    let mut performer = |effect: &Effect| perform.perform(paths, effect);
    let driven = drive(snapshot.state, &req.event.event(), &facts, &mut performer)
        .map_err(EngineError::Effect)?;
    let condition = driven.condition();
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
        notes: driven.notes,
        dry_run: perform.dry_run(),
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
                            "the host had claimed the ticket: the hook may still be running on the host, and its late result will be stale".to_owned(),
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

/// What the engine looks up outside the state directory before a step.
struct Probed {
    now: SystemTime,
    branch: Option<BranchName>,
    worktree: PathBuf,
    revision: Revision,
    worktree_check: Result<(), String>,
    transport_program: Result<(), String>,
    new_dispatch_id: String,
}

/// Arguments win over what `initiated` recorded, which wins over the
/// settings. The dispatch facts (the revision, the worktree, the transport
/// program, a new id) are looked up only when the machine says a dispatch
/// may follow: a guard that refuses on the settings alone runs nothing.
/// `explain` reads them all, to show every guard's value.
fn probe_facts(
    settings: &Settings,
    req: &Request,
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
        now: probe.now(),
        branch,
        worktree,
        revision: match record.and_then(|r| r.revision.clone()) {
            Some(sha) => Revision::Known(sha),
            None => Revision::Inactive,
        },
        worktree_check: Ok(()),
        transport_program: Ok(()),
        new_dispatch_id: String::new(),
    };
    if dispatching {
        probed.revision = dispatch_revision(
            settings,
            req,
            &probed.worktree,
            probed.branch.as_ref().map(BranchName::as_str),
            probe,
        );
        probed.worktree_check = probe.work_tree(settings, &probed.worktree);
        probed.transport_program = transport_program(settings, probe);
        probed.new_dispatch_id = probe.new_dispatch_id().map_err(EngineError::Random)?;
    }
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
            transport_program: self.transport_program.clone(),
            new_dispatch_id: &self.new_dispatch_id,
            dispatch: snapshot.dispatch.as_ref(),
            open_tickets: &snapshot.open_tickets,
            result: snapshot.result.clone(),
            approved_by: record.map(|r| r.approved_by.as_str()),
            finalized: snapshot.finalized.as_ref().and_then(|r| r.as_ref()),
            dispatched_at: record.map(|r| r.dispatch_time()),
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
    let probed = probe_facts(settings, &req, &snapshot, probe, true)?;
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
        Guard::StagingPort => format!(
            "STAGING_PORT {} differs from DEPLOY_PROD_TARGET_PORT {}",
            f.settings.staging_port, f.settings.target_port
        ),
        Guard::Freshness => match &f.revision {
            Revision::Known(sha) => format!("validated revision {sha}"),
            _ => "inactive: EXPECTED_REVISION is omitted".to_owned(),
        },
        Guard::Worktree => format!("{} is a git work tree", f.worktree.display()),
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
