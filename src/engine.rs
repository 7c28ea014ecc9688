//! One event, end to end: lock, load the snapshot, gather facts, let the
//! machine decide, perform the effects (feeding dispatch results back into
//! the machine), append the history. The only module that ties the store, the
//! machine and the executor together; dry runs and replays come through here
//! too, with a recording executor.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Settings, Transport};
use crate::effect::Effect;
use crate::exec::{self, Executor, Performed};
use crate::machine::{
    self, Decision, Event, EventName, Facts, Guard, Outcome, Revision, StateName,
};
use crate::names::{RepoName, WorkItem};
use crate::store::{self, HistoryEntry, ItemLock, ItemPaths, Snapshot};

/// The time, as an input: replays inject a fixed one.
pub trait Clock {
    fn now(&self) -> String;
}

/// Wall-clock time, RFC 3339 in UTC to the second.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> String {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
    }
}

/// An event as the stage engine delivers it.
#[derive(Debug, Clone)]
pub struct Request {
    pub repo: RepoName,
    pub work_item: WorkItem,
    pub event: EventName,
    pub branch: Option<String>,
    pub worktree: Option<PathBuf>,
    pub revision: Option<String>,
    pub merged: Option<bool>,
    pub force: bool,
    pub actor: String,
    pub dry_run: bool,
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
    #[error("{0}")]
    Effect(exec::ExecError),
    #[error("{0}; fix or remove it (reset --force clears the item)")]
    ResultUnreadable(String),
    #[error("REPOS_DIR {0} does not exist; mount the shared state directory or fix REPOS_DIR")]
    ReposDir(String),
    #[error("cannot append history {path}: {error}")]
    History { path: String, error: std::io::Error },
}

/// Handles one event. Dry runs take no lock and write nothing, not even the
/// history.
pub fn handle(
    settings: &Settings,
    req: &Request,
    executor: &mut dyn Executor,
    clock: &dyn Clock,
) -> Result<Report, EngineError> {
    let paths = ItemPaths::new(&settings.repos_dir, &req.repo, &req.work_item);
    // An unmounted shared directory must not be papered over by creating it:
    // the host would never see the state, and polls would defer forever.
    if !req.dry_run && !settings.repos_dir.is_dir() {
        return Err(EngineError::ReposDir(
            settings.repos_dir.display().to_string(),
        ));
    }
    let _lock = if req.dry_run {
        None
    } else {
        Some(ItemLock::acquire(&paths.lock_file, settings.lock_timeout)?)
    };
    let snapshot = Snapshot::load(&paths)?;
    if let (EventName::Poll, Some(why)) = (req.event, &snapshot.result_unreadable) {
        return Err(EngineError::ResultUnreadable(why.clone()));
    }
    let now = clock.now();
    let result = run(settings, req, &paths, &snapshot, executor, &now);
    match &result {
        Ok(r) => tracing::info!(
            repo = %req.repo, work_item = %req.work_item, event = %req.event,
            from = %r.from, to = %r.to, outcome = %r.outcome, reason = r.reason.as_deref(),
            dry_run = req.dry_run, "event handled"
        ),
        // The caller reports the error itself; this is for RUST_LOG=info traces.
        Err(e) => tracing::info!(
            repo = %req.repo, work_item = %req.work_item, event = %req.event, error = %e,
            "event failed"
        ),
    }
    if !req.dry_run {
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
        if let Err(error) =
            store::append_history(&paths.history_file, &entry, settings.history_key.as_deref())
        {
            let error = EngineError::History {
                path: paths.history_file.display().to_string(),
                error,
            };
            // What was done is done (a deploy may be launched): report it
            // truthfully, with the missing history line, rather than as an error.
            tracing::warn!(%error, "history not appended");
            return match result {
                Ok(mut report) => {
                    report.notes.push(error.to_string());
                    Ok(report)
                }
                Err(e) => Err(e),
            };
        }
    }
    result
}

fn run(
    settings: &Settings,
    req: &Request,
    paths: &ItemPaths,
    snapshot: &Snapshot,
    executor: &mut dyn Executor,
    now: &str,
) -> Result<Report, EngineError> {
    // The contract: a dispatch refused by the applicability or staging-port
    // guard is refused before anything is run, git included.
    let dispatching = req.event == EventName::Approved
        && snapshot.state == StateName::ApproveRequested
        && settings.applies(req.repo.as_str())
        && settings.staging_port != settings.target_port;
    let probed = probe(settings, req, snapshot, dispatching, executor);
    let facts = probed.facts(settings, req, snapshot, now);

    let mut perform = |effect: &Effect| executor.perform(paths, effect);
    let driven = drive(snapshot.state, &req.event.event(), &facts, &mut perform)
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
        dry_run: req.dry_run,
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
    let mut pending = vec![first];
    let mut launched = false;
    while let Some(decision) = pending.pop() {
        let Decision {
            conditions,
            to,
            outcome,
            reason,
            effects,
        } = decision;
        driven.to = to;
        driven.outcome = outcome;
        driven.conditions.extend(conditions);
        if reason.is_some() || outcome != Outcome::Transitioned {
            driven.reason = reason;
        }
        for effect in effects {
            tracing::debug!(effect = effect.kind(), "performing");
            let performed = match perform(&effect) {
                Ok(performed) => performed,
                // Once the hook is launched, failing to record the confirmation
                // must not hide the launch: `initiated` stays "pending", which
                // status shows as unconfirmed, and nothing dispatches again.
                Err(e) if launched => {
                    driven.effects.push(effect);
                    driven.notes.push(format!(
                        "the hook was launched, but recording it failed ({e}); status shows the dispatch as unconfirmed"
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            driven.effects.push(effect);
            match performed {
                Performed::Done => {}
                Performed::Notes(notes) => driven.notes.extend(notes),
                Performed::Dispatched(result) => {
                    launched = result.is_ok();
                    let feedback = match result {
                        Ok(()) => Event::DispatchSucceeded,
                        Err(why) => Event::DispatchFailed(why),
                    };
                    pending.push(machine::step(to, &feedback, facts));
                }
            }
        }
    }
    Ok(driven)
}

/// What the engine looks up outside the state directory before a step.
struct Probed {
    branch: Option<String>,
    worktree: PathBuf,
    revision: Revision,
    transport_program: Result<(), String>,
}

/// Arguments win over what `initiated` recorded, which wins over the
/// settings. The revision and the transport program are looked up only when
/// a dispatch may follow (or `all`, for `explain`).
fn probe(
    settings: &Settings,
    req: &Request,
    snapshot: &Snapshot,
    all: bool,
    executor: &mut dyn Executor,
) -> Probed {
    let record = snapshot.initiated.as_ref().and_then(|m| m.record.as_ref());
    let branch = req
        .branch
        .clone()
        .or_else(|| record.and_then(|r| r.branch.clone()));
    let worktree = req
        .worktree
        .clone()
        .or_else(|| record.map(|r| PathBuf::from(&r.worktree)))
        .unwrap_or_else(|| {
            settings.default_worktree(req.repo.as_str(), req.work_item.as_str(), branch.as_deref())
        });
    let revision = if all {
        dispatch_revision(settings, req, &worktree, branch.as_deref(), executor)
    } else {
        match record.and_then(|r| r.revision.clone()) {
            Some(sha) => Revision::Known(sha),
            None => Revision::Inactive,
        }
    };
    let transport_program = if all {
        transport_program(settings, executor)
    } else {
        Ok(())
    };
    Probed {
        branch,
        worktree,
        revision,
        transport_program,
    }
}

impl Probed {
    fn facts<'a>(
        &'a self,
        settings: &'a Settings,
        req: &'a Request,
        snapshot: &'a Snapshot,
        now: &'a str,
    ) -> Facts<'a> {
        let record = snapshot.initiated.as_ref().and_then(|m| m.record.as_ref());
        Facts {
            settings,
            repo: &req.repo,
            work_item: &req.work_item,
            now,
            actor: &req.actor,
            force: req.force,
            merged: req.merged,
            branch: self.branch.as_deref(),
            worktree: &self.worktree,
            revision: self.revision.clone(),
            transport_program: self.transport_program.clone(),
            result: snapshot.result.clone(),
            approved_by: record.map(|r| r.approved_by.as_str()),
            deadline_passed: deadline_passed(settings, snapshot, now),
        }
    }
}

/// `Some(why)` when the item has waited for its result longer than the
/// deadline, measured from the approval time recorded in `initiated`, so that
/// restarts do not reset it. An `initiated` without our record (the original
/// engine's) has no time to measure from: no deadline applies to it.
pub fn deadline_passed(settings: &Settings, snapshot: &Snapshot, now: &str) -> Option<String> {
    let deadline = settings.result_deadline?;
    if snapshot.result.is_some() {
        return None;
    }
    let record = snapshot.initiated.as_ref()?.record.as_ref()?;
    let approved = humantime::parse_rfc3339(&record.approved_at).ok()?;
    let now = humantime::parse_rfc3339(now).ok()?;
    let waited = now.duration_since(approved).ok()?;
    (waited >= deadline).then(|| {
        format!(
            "no result {} s after the approval at {}: the result deadline is {} s",
            waited.as_secs(),
            record.approved_at,
            deadline.as_secs()
        )
    })
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

pub fn explain(
    settings: &Settings,
    req: &Request,
    clock: &dyn Clock,
) -> Result<Explanation, EngineError> {
    let req = Request {
        dry_run: true,
        ..req.clone()
    };
    let paths = ItemPaths::new(&settings.repos_dir, &req.repo, &req.work_item);
    let snapshot = Snapshot::load(&paths)?;
    let mut recorder = exec::RecordingExecutor::default();
    let probed = probe(settings, &req, &snapshot, true, &mut recorder);
    let now = clock.now();
    let facts = probed.facts(settings, &req, &snapshot, &now);
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
    let report = handle(
        settings,
        &req,
        &mut exec::RecordingExecutor::default(),
        clock,
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
    executor: &mut dyn Executor,
) -> Revision {
    if !settings.freshness_active(req.repo.as_str()) {
        return Revision::Inactive;
    }
    if let Some(sha) = req.revision.as_ref().filter(|s| !s.trim().is_empty()) {
        return Revision::Known(sha.trim().to_owned());
    }
    match executor.branch_tip(settings, worktree, branch) {
        Ok(sha) => Revision::Known(sha),
        Err(why) => Revision::Unknown(why),
    }
}

fn transport_program(settings: &Settings, executor: &mut dyn Executor) -> Result<(), String> {
    let program = match settings.transport {
        Transport::Ssh => "ssh",
        Transport::Local => "bash",
    };
    executor
        .find_program(program)
        .map_err(|e| format!("no {program} binary: {e}; install it or fix PATH"))
}
