//! The self-deploy machine, on `statig`. Pure: it reads
//! facts gathered by the engine and returns a decision (outcome, reason,
//! effects as data); it performs no I/O and reads no clock.
//!
//! The machine is restored in the state derived from disk for every step.
//! It has no entry or exit actions, so restoring it has no side effects.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::clock::BootClock;
pub use crate::clock::DispatchAge;
use crate::config::Settings;
use crate::contract::hook_result::{HookExit, Verdict};
use crate::contract::markers::{
    self, ApproveRecord, DispatchState, FinalizedRecord, InitiatedRecord, Marker, Ticket,
};
use crate::contract::names::{RepoName, WorkItem};
use crate::contract::{deploy_log, remote};
use crate::effect::{Effect, Launch, RevokeReason};

/// The states, by the names operators and the stage engine see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Idle,
    ApproveRequested,
    Initiated,
    FinalizedSuccess,
    FinalizedFailed,
}

impl StateName {
    pub const ALL: [StateName; 5] = [
        StateName::Idle,
        StateName::ApproveRequested,
        StateName::Initiated,
        StateName::FinalizedSuccess,
        StateName::FinalizedFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Idle => "idle",
            StateName::ApproveRequested => "approve_requested",
            StateName::Initiated => "initiated",
            StateName::FinalizedSuccess => "finalized_success",
            StateName::FinalizedFailed => "finalized_failed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Events: the five the stage engine delivers, and what the executor feeds
/// back: how a launch went, and what a revoke's rename found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    RequestApprove,
    Approved,
    Poll,
    MergeVerified,
    Reset,
    /// The launch (ssh, or local bash) exited 0: the dispatch is sent.
    Launched,
    /// The launch failed (why): the ticket must be revoked before anything
    /// else is decided, since the command may have run all the same.
    LaunchFailed(String),
    /// The revoke renamed the ticket: that dispatch can never run.
    TicketRevoked(RevokeReason),
    /// The revoke found the ticket claimed: the hook is running. With the
    /// revoke's detail (the launch's error).
    TicketClaimed(RevokeReason, String),
    /// What the commit and push of the deploy log came to (`Err(why)`), and
    /// the `finalized` record to rewrite with it.
    Published {
        push: Result<(), String>,
        record: Option<FinalizedRecord>,
    },
}

/// The events a caller may deliver, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventName {
    RequestApprove,
    Approved,
    Poll,
    MergeVerified,
    Reset,
}

impl EventName {
    pub const ALL: [EventName; 5] = [
        EventName::RequestApprove,
        EventName::Approved,
        EventName::Poll,
        EventName::MergeVerified,
        EventName::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::RequestApprove => "request-approve",
            EventName::Approved => "approved",
            EventName::Poll => "poll",
            EventName::MergeVerified => "merge-verified",
            EventName::Reset => "reset",
        }
    }

    pub fn parse(raw: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|e| e.as_str() == raw)
    }

    pub fn event(self) -> Event {
        match self {
            EventName::RequestApprove => Event::RequestApprove,
            EventName::Approved => Event::Approved,
            EventName::Poll => Event::Poll,
            EventName::MergeVerified => Event::MergeVerified,
            EventName::Reset => Event::Reset,
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Transitioned,
    Unchanged,
    Deferred,
    Refused,
    Illegal,
    DispatchFailed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Transitioned => "transitioned",
            Outcome::Unchanged => "unchanged",
            Outcome::Deferred => "deferred",
            Outcome::Refused => "refused",
            Outcome::Illegal => "illegal",
            Outcome::DispatchFailed => "dispatch_failed",
        }
    }

    /// Exit status of `selfdeploy event`: 0 when accepted, 3 when not.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Transitioned | Outcome::Unchanged | Outcome::Deferred => 0,
            Outcome::Refused | Outcome::Illegal | Outcome::DispatchFailed => 3,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated revision for the freshness guard, as the engine found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// The freshness check is not active: EXPECTED_REVISION is omitted.
    Inactive,
    Known(String),
    /// Active, but the SHA could not be determined (why).
    Unknown(String),
}

/// Everything the machine may look at, gathered by the engine before a step.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub settings: &'a Settings,
    pub repo: &'a RepoName,
    pub work_item: &'a WorkItem,
    /// The time of this step: an input, so that timeouts are decided here.
    pub now: SystemTime,
    pub actor: &'a str,
    pub force: bool,
    pub merged: Option<bool>,
    pub branch: Option<&'a str>,
    pub worktree: &'a Path,
    pub revision: Revision,
    /// Whether the worktree exists and is a git work tree, and if not why.
    pub worktree_check: Result<(), String>,
    /// The ref the worktree's HEAD names (`refs/heads/<branch>`), or why
    /// there is none (detached, unreadable).
    pub head_ref: Result<String, String>,
    /// Whether the transport's program (ssh or bash) was found, and if not why.
    pub transport_program: Result<(), String>,
    /// The deploy freeze an operator set on the repo (`selfdeploy lock`),
    /// `None` when there is none, or why it cannot be read (the freeze
    /// guard fails closed).
    pub freeze: Result<Option<Freeze>, String>,
    /// The id a new dispatch takes (fresh from the OS random source).
    pub new_dispatch_id: &'a str,
    /// The dispatch `initiated` names, and where its ticket is; `None` for
    /// an item the original engine started (it has no ticket).
    pub dispatch: Option<&'a DispatchState>,
    /// Every unclaimed ticket in the state directory (a reset revokes them).
    pub open_tickets: &'a [String],
    /// Runs the host claimed that a reset kept and that have no result yet:
    /// their hooks may still be running.
    pub running_runs: &'a [String],
    /// The hook's result for the current dispatch (or the legacy `result`).
    pub result: Option<HookExit>,
    /// Who approved, read back from `initiated`, for the deploy log.
    pub approved_by: Option<&'a str>,
    /// The `finalized` record on disk, when there is one of ours.
    pub finalized: Option<&'a FinalizedRecord>,
    /// When the current dispatch was made, as `initiated` records it (for
    /// what reasons say; its age is `dispatch_age`).
    pub dispatched_at: Option<&'a str>,
    /// How long ago the current dispatch was made, measured by the engine
    /// (the boot clock on the same boot, else a consistent wall clock), or
    /// why it cannot be trusted: the claim timeout and the result deadline
    /// count from it, never from the wall clock alone.
    pub dispatch_age: DispatchAge,
    /// The boot clock at this step, recorded in `initiated` by a dispatch
    /// (`None` where it cannot be read).
    pub boot: Option<&'a BootClock>,
}

impl Facts<'_> {
    /// The time of this step as records show it: RFC 3339 to the second.
    pub fn stamp(&self) -> String {
        crate::clock::rfc3339_seconds(self.now)
    }

    /// `Some(why)` when the current ticket must be revoked: still unclaimed
    /// past the claim timeout, or past the result deadline.
    pub fn claim_overdue(&self) -> Option<String> {
        claim_overdue(
            self.settings,
            self.dispatch,
            &self.dispatch_age,
            self.dispatched_at,
            self.result.is_some(),
        )
    }

    /// `Some(why)` when the result deadline has passed with no result.
    pub fn deadline_passed(&self) -> Option<String> {
        deadline_passed(
            self.settings,
            &self.dispatch_age,
            self.dispatched_at,
            self.result.is_some(),
        )
    }
}

/// `Some(why)` when an item has waited for its result longer than the
/// deadline, by the dispatch's age (measured from the dispatch recorded in
/// `initiated`, so that restarts do not reset it, and never by a clock that
/// contradicts itself: see `crate::clock`). An item with no recorded time
/// (the original engine's), or whose time is inconsistent, has no deadline.
pub fn deadline_passed(
    settings: &Settings,
    age: &DispatchAge,
    dispatched_at: Option<&str>,
    has_result: bool,
) -> Option<String> {
    let deadline = settings.result_deadline?;
    if has_result {
        return None;
    }
    let DispatchAge::Known(waited) = age else {
        return None;
    };
    let at = dispatched_at.unwrap_or("an unrecorded time");
    (*waited >= deadline).then(|| {
        format!(
            "no result {} s after the dispatch at {at}: the result deadline is {} s",
            waited.as_secs(),
            deadline.as_secs()
        )
    })
}

/// `Some(why)` when the current ticket is still unclaimed (`dispatch-<id>`)
/// longer than the claim timeout after the dispatch, or past the result
/// deadline: it must be revoked, since a claim after a verdict would run a
/// deploy nobody reports.
pub fn claim_overdue(
    settings: &Settings,
    dispatch: Option<&DispatchState>,
    age: &DispatchAge,
    dispatched_at: Option<&str>,
    has_result: bool,
) -> Option<String> {
    let dispatch = dispatch.filter(|d| d.ticket == Ticket::Sent)?;
    let DispatchAge::Known(waited) = age else {
        return None;
    };
    let at = dispatched_at.unwrap_or("an unrecorded time");
    let timeout = settings.claim_timeout;
    if *waited >= timeout {
        return Some(format!(
            "the host did not claim dispatch {} within {} s (dispatched at {at}; SELF_DEPLOY_CLAIM_TIMEOUT_SECS is {})",
            dispatch.id,
            waited.as_secs(),
            timeout.as_secs()
        ));
    }
    deadline_passed(settings, age, dispatched_at, has_result).map(|why| {
        format!(
            "the host did not claim dispatch {} before the result deadline ({why})",
            dispatch.id
        )
    })
}

pub use crate::contract::hook_result::TIMEOUT_EXIT_CODE;

/// The push error `finalized` holds until the first push attempt reports.
pub const NOT_PUSHED_YET: &str = "not pushed yet";

/// A deploy freeze on a repo, as `selfdeploy lock` recorded it: while it is
/// there, `approved` is refused for every item of the repo (deploys in
/// flight still finish).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// The repo's identity (lower-cased).
    pub repo: String,
    /// Why the repo is locked, as the operator said it.
    pub message: String,
    /// Who locked it.
    pub actor: String,
    /// When, RFC 3339 to the second.
    pub time: String,
}

/// The guards of a dispatch, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    Applies,
    StagingPort,
    Freeze,
    EarlierRun,
    Freshness,
    Worktree,
    Branch,
    TransportProgram,
}

impl Guard {
    pub const DISPATCH: [Guard; 8] = [
        Guard::Applies,
        Guard::StagingPort,
        Guard::Freeze,
        Guard::EarlierRun,
        Guard::Freshness,
        Guard::Worktree,
        Guard::Branch,
        Guard::TransportProgram,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Guard::Applies => "applies",
            Guard::StagingPort => "staging_port",
            Guard::Freeze => "freeze",
            Guard::EarlierRun => "earlier_run",
            Guard::Freshness => "freshness",
            Guard::Worktree => "worktree",
            Guard::Branch => "branch",
            Guard::TransportProgram => "transport_program",
        }
    }

    /// The condition, in the reviewed table, under which this guard says no.
    pub fn failure(self) -> &'static str {
        match self {
            Guard::Applies => "not applicable",
            Guard::StagingPort => "staging port = prod port",
            Guard::Freeze => "repo locked",
            Guard::EarlierRun => "an earlier run has no result",
            Guard::Freshness => "revision unknown",
            Guard::Worktree => "no worktree",
            Guard::Branch => "worktree not on the branch",
            Guard::TransportProgram => "no transport program",
        }
    }

    /// The verdict of a guard that needs nothing but the settings and the
    /// repo; `None` for one that needs facts read from the world.
    pub fn check_settings(
        self,
        settings: &Settings,
        repo: &RepoName,
    ) -> Option<Result<(), String>> {
        match self {
            Guard::Applies if !settings.applies(repo.as_str()) => Some(Err(format!(
                "not applicable: self-deploy is not enabled for repo {repo} (see SELF_DEPLOY_ENABLED, SELF_DEPLOY_REPOS)"
            ))),
            Guard::StagingPort if settings.staging_port == settings.target_port => {
                Some(Err(format!(
                    "staging port guard: STAGING_PORT equals DEPLOY_PROD_TARGET_PORT ({}); fix the configuration",
                    settings.target_port
                )))
            }
            Guard::Applies | Guard::StagingPort => Some(Ok(())),
            Guard::Freeze
            | Guard::EarlierRun
            | Guard::Freshness
            | Guard::Worktree
            | Guard::Branch
            | Guard::TransportProgram => None,
        }
    }

    /// `Err(why)` when the guard says no.
    pub fn check(self, f: &Facts<'_>) -> Result<(), String> {
        if let Some(verdict) = self.check_settings(f.settings, f.repo) {
            return verdict;
        }
        match self {
            // An operator's freeze: no --force past it (unlock is the way),
            // and an unreadable freeze refuses (fail closed).
            Guard::Freeze => match &f.freeze {
                Ok(None) => Ok(()),
                Ok(Some(freeze)) => Err(format!(
                    "freeze guard: repo {} is locked by {} since {}: {:?}; deploys wait until `selfdeploy unlock --repo {}`",
                    f.repo, freeze.actor, freeze.time, freeze.message, f.repo
                )),
                Err(why) => Err(format!(
                    "freeze guard: the repo's freeze cannot be read ({why}); fix or remove it (`selfdeploy unlock --repo {}`)",
                    f.repo
                )),
            },
            // Never two hooks at once: a run a reset kept may still be
            // going; only a human who checked the host forces past it.
            Guard::EarlierRun if !f.running_runs.is_empty() && !f.force => Err(format!(
                "earlier run guard: dispatch {} was reset while the host ran it and has no result yet: its hook may still be running, and a new dispatch would run a second one beside it; wait for its result (status shows it), or approve with --force once the host is checked",
                f.running_runs.join(", ")
            )),
            Guard::Freshness => match &f.revision {
                Revision::Unknown(why) => Err(format!(
                    "freshness guard: the validated revision is unknown ({why}); pass --revision SHA"
                )),
                _ => Ok(()),
            },
            Guard::Worktree => f.worktree_check.clone().map_err(|why| {
                format!(
                    "worktree guard: {why}; the deploy log could not be recorded, so nothing is dispatched (pass --worktree)"
                )
            }),
            // The finalizer pushes the log to this branch after production
            // changed: a worktree elsewhere would surface only then.
            // Without a work tree there is no HEAD: the worktree guard says why.
            Guard::Branch if f.worktree_check.is_err() => Ok(()),
            Guard::Branch => {
                let wt = f.worktree.display();
                match (&f.head_ref, f.branch) {
                    (Err(why), Some(branch)) => Err(format!(
                        "branch guard: the worktree {wt} is on no branch ({why}); check out {branch} there (`git -C {wt} checkout {branch}`)"
                    )),
                    (Err(why), None) => Err(format!(
                        "branch guard: the worktree {wt} is on no branch ({why}); check out the work item's branch there (`git -C {wt} checkout <branch>`) or pass --branch"
                    )),
                    (Ok(head), Some(branch)) if *head != format!("refs/heads/{branch}") => {
                        Err(format!(
                            "branch guard: the worktree {wt} is on {head}, not refs/heads/{branch}; check out {branch} there or pass the branch it is on"
                        ))
                    }
                    (Ok(head), None) if !head.starts_with("refs/heads/") => Err(format!(
                        "branch guard: the worktree {wt} is on {head}, not a branch; check out the work item's branch there"
                    )),
                    (Ok(_), _) => Ok(()),
                }
            }
            Guard::TransportProgram => f.transport_program.clone(),
            _ => Ok(()),
        }
    }
}

/// Whether an event may dispatch, so that the facts a dispatch needs (the
/// revision, the worktree, the transport program, a new id) must be read
/// first. A guard that refuses on the settings alone runs nothing, git
/// included.
pub fn dispatch_may_follow(
    from: StateName,
    event: EventName,
    settings: &Settings,
    repo: &RepoName,
) -> bool {
    from == StateName::ApproveRequested
        && event == EventName::Approved
        && Guard::DISPATCH
            .into_iter()
            .all(|g| g.check_settings(settings, repo).is_none_or(|v| v.is_ok()))
}

/// What one step decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The conditions that chose this row of the table, in the order checked.
    pub conditions: Vec<&'static str>,
    pub to: StateName,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub effects: Vec<Effect>,
}

/// The statig context: the facts in, the decision being recorded out.
pub struct Context<'f, 'a> {
    facts: &'f Facts<'a>,
    from: StateName,
    outcome: Option<Outcome>,
    reason: Option<String>,
    effects: Vec<Effect>,
    conditions: Vec<&'static str>,
}

impl Context<'_, '_> {
    /// Records the condition that chose the branch being taken.
    fn when(&mut self, condition: &'static str) -> &mut Self {
        self.conditions.push(condition);
        self
    }

    fn decide(&mut self, outcome: Outcome, reason: Option<String>) {
        self.outcome = Some(outcome);
        self.reason = reason;
    }

    fn refuse(&mut self, why: String) -> statig::Outcome<State> {
        self.decide(Outcome::Refused, Some(why));
        Handled
    }

    fn unchanged(&mut self, why: &str) -> statig::Outcome<State> {
        self.decide(Outcome::Unchanged, Some(why.to_owned()));
        Handled
    }

    fn transition(&mut self, effects: Vec<Effect>, to: State) -> statig::Outcome<State> {
        self.decide(Outcome::Transitioned, None);
        self.effects.extend(effects);
        Transition(to)
    }

    /// `Some(why)` when the repo is not enabled; records the condition either way.
    fn not_applicable(&mut self) -> Option<String> {
        let verdict = Guard::Applies.check(self.facts).err();
        self.when(if verdict.is_some() {
            Guard::Applies.failure()
        } else {
            "applicable"
        });
        verdict
    }

    fn initiated_record(&self, argv: Vec<String>, revision: Option<String>) -> InitiatedRecord {
        let f = self.facts;
        InitiatedRecord {
            dispatch_id: f.new_dispatch_id.to_owned(),
            approved_by: f.actor.to_owned(),
            approved_at: f.stamp(),
            // To the millisecond: a timeout counted from whole seconds could
            // fire up to a second early.
            dispatched_at: Some(crate::clock::rfc3339_millis(f.now)),
            // The boot clock read with `now`: on the same boot, the age is
            // measured by it, whatever the wall clock does meanwhile.
            boot_id: f.boot.map(|b| b.boot_id.clone()),
            dispatched_boottime_ms: f
                .boot
                .map(|b| u64::try_from(b.since_boot.as_millis()).unwrap_or(u64::MAX)),
            branch: f.branch.map(str::to_owned),
            worktree: f.worktree.to_string_lossy().into_owned(),
            revision,
            transport: f.settings.transport,
            argv,
        }
    }

    /// The dispatch of an approved deploy:
    /// `initiated` with the new id, then the ticket, both durable, then the
    /// launch.
    fn dispatch_plan(&self) -> Vec<Effect> {
        let f = self.facts;
        let revision = match &f.revision {
            Revision::Known(sha) => Some(sha.clone()),
            _ => None,
        };
        let id = f.new_dispatch_id;
        let command =
            remote::remote_command(f.settings, f.repo, f.work_item, id, revision.as_deref());
        let argv = remote::dispatch_argv(f.settings, command);
        let record = self.initiated_record(argv.clone(), revision);
        let launch = Effect::Launch(Launch {
            transport: f.settings.transport,
            argv,
        });
        vec![
            Effect::WriteMarker {
                marker: Marker::Initiated,
                content: markers::encode(&record),
            },
            Effect::WriteTicket {
                dispatch_id: id.to_owned(),
            },
            launch,
        ]
    }

    /// Back to `approve_requested`: the dispatch can never run, so a human
    /// may approve again.
    fn dispatch_failed(&mut self, why: Option<String>) -> statig::Outcome<State> {
        self.effects.push(Effect::RemoveMarker {
            marker: Marker::Initiated,
        });
        self.outcome = Some(Outcome::DispatchFailed);
        if why.is_some() {
            self.reason = why;
        }
        Transition(State::approve_requested())
    }

    fn defer(&mut self, why: String) -> statig::Outcome<State> {
        self.decide(Outcome::Deferred, Some(why));
        Handled
    }

    /// A poll with no result for the current dispatch: what its ticket says.
    fn poll_without_result(&mut self) -> statig::Outcome<State> {
        let f = self.facts;
        let dispatch = f.dispatch;
        match dispatch.map(|d| d.ticket) {
            Some(Ticket::Revoked) => {
                let id = &dispatch.map(|d| d.id.as_str()).unwrap_or_default();
                self.when("ticket revoked").dispatch_failed(Some(format!(
                    "dispatch {id} was revoked before it ran (the engine stopped before clearing it); approve again"
                )))
            }
            Some(Ticket::Missing) => {
                let id = &dispatch.map(|d| d.id.as_str()).unwrap_or_default();
                self.when("no ticket").dispatch_failed(Some(format!(
                    "dispatch {id} has no ticket: the engine stopped before the launch, so nothing ran; approve again"
                )))
            }
            // A clock that contradicts itself decides nothing: no revoke,
            // no deadline, until the dispatch time is consistent.
            Some(Ticket::Sent) | Some(Ticket::Claimed) | None
                if matches!(f.dispatch_age, DispatchAge::Inconsistent(_))
                    && (dispatch.is_some_and(|d| d.ticket == Ticket::Sent)
                        || f.settings.result_deadline.is_some()) =>
            {
                let why = match &f.dispatch_age {
                    DispatchAge::Inconsistent(why) => why.clone(),
                    _ => String::new(),
                };
                self.when("no result, dispatch time inconsistent").defer(format!(
                    "the dispatch time cannot be trusted: {why}; nothing is revoked or failed by the clock until it is consistent (status shows it)"
                ))
            }
            Some(Ticket::Sent) => match f.claim_overdue() {
                Some(why) => {
                    let id = dispatch.map(|d| d.id.clone()).unwrap_or_default();
                    self.when("ticket unclaimed past the claim timeout")
                        .effects
                        .push(Effect::RevokeTicket {
                            dispatch_id: id,
                            reason: RevokeReason::Unclaimed,
                            detail: why.clone(),
                        });
                    self.decide(Outcome::DispatchFailed, Some(why));
                    Handled
                }
                None => self
                    .when("no result, ticket not claimed yet")
                    .defer("the host has not claimed the dispatch yet".into()),
            },
            Some(Ticket::Claimed) | None => match f.deadline_passed() {
                // Silence past the deadline is a failure: fail closed.
                Some(why) => {
                    let exit = HookExit {
                        code: TIMEOUT_EXIT_CODE.into(),
                        garbage: None,
                    };
                    let (effects, _) = self.finalize_plan(&exit);
                    let to = self
                        .when("no result, deadline passed")
                        .transition(effects, State::finalized_failed());
                    self.reason = Some(why);
                    to
                }
                None if dispatch.is_some() => self
                    .when("no result, ticket claimed")
                    .defer("the host claimed the dispatch; no result yet".into()),
                // An item the original engine started has no ticket.
                None => self
                    .when("no result, no ticket (original engine)")
                    .defer("no result from the host yet".into()),
            },
        }
    }

    /// The `finalized` record, with the push state given. Deterministic for
    /// one step, so the feedback of the push rewrites the same record.
    fn finalized_record(&self, exit: &HookExit, push: Result<(), String>) -> FinalizedRecord {
        let f = self.facts;
        FinalizedRecord {
            deploy_status: exit.verdict(),
            hook_exit_code: exit.code.clone(),
            finalized_at: f.stamp(),
            finalized_by: f.actor.to_owned(),
            pushed: Some(push.is_ok()),
            push_error: push.err(),
        }
    }

    /// Commit and push the deploy log: the path, the message, the branch,
    /// and the record that will hold the outcome.
    fn publish(&self, message: String, record: Option<FinalizedRecord>) -> Effect {
        let f = self.facts;
        Effect::GitPublish {
            worktree: f.worktree.to_path_buf(),
            path: deploy_log::relative_path(f.work_item),
            message,
            branch: f.branch.map(|b| b.to_string()),
            record,
        }
    }

    /// Finalize: the log (not best effort), the verdict recorded as not yet
    /// pushed (so that a crash before the push leaves a push to retry), then
    /// the commit and push, whose outcome comes back as `Published`.
    fn finalize_plan(&self, exit: &HookExit) -> (Vec<Effect>, Verdict) {
        let f = self.facts;
        let verdict = exit.verdict();
        let rel = deploy_log::relative_path(f.work_item);
        let details = deploy_log::Details {
            repo: f.repo.as_str(),
            approved_by: f.approved_by,
            revision: match &f.revision {
                Revision::Known(sha) => Some(sha),
                _ => None,
            },
            garbage: exit.garbage.as_deref(),
        };
        let record = self.finalized_record(exit, Err(NOT_PUSHED_YET.to_owned()));
        let effects = vec![
            Effect::WriteDeployLog {
                worktree: f.worktree.to_path_buf(),
                path: f.worktree.join(&rel),
                content: deploy_log::render(f.work_item, &exit.code, verdict, &details),
            },
            Effect::WriteMarker {
                marker: Marker::Finalized,
                content: markers::encode(&record),
            },
            self.publish(
                f.settings.commit_message(verdict, f.work_item),
                Some(record),
            ),
        ];
        (effects, verdict)
    }
}

#[derive(Default)]
pub struct SelfDeploy;

#[state_machine(initial = "State::idle()", state(derive(Debug, Clone, PartialEq, Eq)))]
impl SelfDeploy {
    #[state(superstate = "any")]
    fn idle(context: &mut Context<'_, '_>, event: &Event) -> statig::Outcome<State> {
        match event {
            Event::RequestApprove => {
                if let Some(why) = context.not_applicable() {
                    return context.refuse(why);
                }
                let record = ApproveRecord {
                    requested_by: context.facts.actor.to_owned(),
                    requested_at: context.facts.stamp(),
                };
                let write = Effect::WriteMarker {
                    marker: Marker::ApproveRequested,
                    content: markers::encode(&record),
                };
                context.transition(vec![write], State::approve_requested())
            }
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn approve_requested(context: &mut Context<'_, '_>, event: &Event) -> statig::Outcome<State> {
        match event {
            Event::RequestApprove => match context.not_applicable() {
                Some(why) => context.refuse(why),
                None => context.unchanged("approval already requested"),
            },
            Event::Approved => {
                for guard in Guard::DISPATCH {
                    if let Err(why) = guard.check(context.facts) {
                        return context.when(guard.failure()).refuse(why);
                    }
                }
                let effects = context.dispatch_plan();
                context
                    .when("guards pass")
                    .transition(effects, State::initiated())
            }
            Event::Reset => context.transition(vec![Effect::RemoveStateDir], State::idle()),
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn initiated(context: &mut Context<'_, '_>, event: &Event) -> statig::Outcome<State> {
        match event {
            Event::Approved => match context.not_applicable() {
                Some(why) => context.refuse(why),
                None => context.unchanged("already initiated: a deploy is never dispatched twice"),
            },
            Event::Poll => match context.facts.result.clone() {
                None => context.poll_without_result(),
                Some(exit) => {
                    let (effects, verdict) = context.finalize_plan(&exit);
                    context.when(match verdict {
                        Verdict::Success => "result 0",
                        Verdict::Failed => "result not 0",
                    });
                    let to = match verdict {
                        Verdict::Success => State::finalized_success(),
                        Verdict::Failed => State::finalized_failed(),
                    };
                    context.transition(effects, to)
                }
            },
            Event::Reset if context.facts.force => {
                // Revoke before removing: the host's claim and our revoke are
                // renames of the same file, so exactly one of them wins.
                let mut effects: Vec<Effect> = context
                    .facts
                    .open_tickets
                    .iter()
                    .map(|id| Effect::RevokeTicket {
                        dispatch_id: id.clone(),
                        reason: RevokeReason::Reset,
                        detail: "reset --force".into(),
                    })
                    .collect();
                effects.push(Effect::RemoveStateDir);
                context.when("forced").when(if effects.len() > 1 {
                    "unclaimed ticket"
                } else {
                    "no unclaimed ticket"
                });
                let to = context.transition(effects, State::idle());
                // Resetting a running deploy is allowed; it must be said.
                if let Some(d) = context
                    .facts
                    .dispatch
                    .filter(|d| d.ticket == Ticket::Claimed)
                {
                    context.reason = Some(format!(
                        "the host had claimed dispatch {}: its hook may still be running on the host, its place is kept, and the history records its verdict when its result lands (it never decides a new deploy)",
                        d.id
                    ));
                }
                to
            }
            Event::Reset => context.when("not forced").refuse(
                "a deploy may be in flight; reset it with --force once the host is checked".into(),
            ),
            Event::Launched => {
                context
                    .when("dispatch sent")
                    .decide(Outcome::Transitioned, None);
                Handled
            }
            Event::LaunchFailed(why) => {
                let id = context.facts.new_dispatch_id.to_owned();
                context
                    .when("launch failed")
                    .effects
                    .push(Effect::RevokeTicket {
                        dispatch_id: id,
                        reason: RevokeReason::LaunchFailed,
                        detail: why.clone(),
                    });
                context.decide(Outcome::DispatchFailed, Some(why.clone()));
                Handled
            }
            Event::TicketRevoked(_) => context.when("ticket revoked").dispatch_failed(None),
            Event::TicketClaimed(RevokeReason::LaunchFailed, launch_error) => {
                let why = format!(
                    "{launch_error}; but the host claimed the ticket, so the deploy is running and is never dispatched again"
                );
                context
                    .when("ticket claimed")
                    .decide(Outcome::Transitioned, Some(why));
                Handled
            }
            Event::TicketClaimed(..) => context
                .when("ticket claimed")
                .defer("the host claimed the ticket just now: the deploy is running".into()),
            _ => Super,
        }
    }

    #[state(superstate = "finalized")]
    fn finalized_success(event: &Event) -> statig::Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "finalized")]
    fn finalized_failed(event: &Event) -> statig::Outcome<State> {
        let _ = event;
        Super
    }

    #[superstate(superstate = "any")]
    fn finalized(context: &mut Context<'_, '_>, event: &Event) -> statig::Outcome<State> {
        match event {
            Event::Poll => match context.facts.finalized {
                Some(record) if record.push_pending() => {
                    let message = context
                        .facts
                        .settings
                        .commit_message(record.deploy_status, context.facts.work_item);
                    let publish = context.publish(message, Some(record.clone()));
                    context.when("push pending").effects.push(publish);
                    context.unchanged("already finalized; the pending push is retried")
                }
                _ => context
                    .when("nothing to push")
                    .unchanged("already finalized"),
            },
            Event::MergeVerified => {
                let f = context.facts;
                let Some(merged) = f.merged else {
                    return context
                        .when("no merged value")
                        .refuse("merge-verified needs --merged true|false".into());
                };
                let publish = context.publish(
                    format!("deploy: merged_to_main {merged} for {}", f.work_item),
                    f.finalized.cloned(),
                );
                context.effects.push(Effect::StampMerged {
                    worktree: f.worktree.to_path_buf(),
                    path: f.worktree.join(deploy_log::relative_path(f.work_item)),
                    merged,
                });
                context.effects.push(publish);
                context.unchanged("merged_to_main stamped")
            }
            // The push state is recorded, and only a change of it is news.
            // The event's outcome stays what the event decided.
            Event::Published { push, record } => {
                let Some(record) = record else {
                    return Handled;
                };
                let updated = FinalizedRecord {
                    pushed: Some(push.is_ok()),
                    push_error: push.clone().err(),
                    ..record.clone()
                };
                context.when(if push.is_ok() { "pushed" } else { "not pushed" });
                context.effects.push(Effect::WriteMarker {
                    marker: Marker::Finalized,
                    content: markers::encode(&updated),
                });
                if updated != *record {
                    context.reason = Some(match push {
                        Ok(()) => "pushed".to_owned(),
                        Err(why) => format!("not pushed: {why}; every later poll retries"),
                    });
                }
                Handled
            }
            // A verdict the deadline gave does not stop a claimed hook:
            // while its result is missing, it may still be running.
            Event::Reset => match context.facts.dispatch {
                Some(d) if d.ticket == Ticket::Claimed && context.facts.result.is_none() => {
                    if context.facts.force {
                        let id = d.id.clone();
                        let to = context
                            .when("claimed run without result, forced")
                            .transition(vec![Effect::RemoveStateDir], State::idle());
                        context.reason = Some(format!(
                            "dispatch {id} has no result: its hook may still be running on the host; its place is kept, and the history records its verdict when its result lands"
                        ));
                        to
                    } else {
                        context.when("claimed run without result, not forced").refuse(format!(
                            "dispatch {} was claimed by the host and has no result: its hook may still be running; reset it with --force once the host is checked",
                            d.id
                        ))
                    }
                }
                _ => context.transition(vec![Effect::RemoveStateDir], State::idle()),
            },
            _ => Super,
        }
    }

    /// Every event no state handled ends here.
    #[superstate]
    fn any(context: &mut Context<'_, '_>, event: &Event) -> statig::Outcome<State> {
        if matches!(event, Event::RequestApprove | Event::Approved)
            && let Some(why) = context.not_applicable()
        {
            return context.refuse(why);
        }
        // States that handled the event themselves returned before here; the
        // applicability check above is the only condition an illegal pair has.
        let why = format!(
            "{} has no meaning in state {}",
            event_label(event),
            context.from
        );
        context.decide(Outcome::Illegal, Some(why));
        Handled
    }
}

/// What an event is called in a reason: a delivered event by its name, a
/// feedback event by what happened.
fn event_label(event: &Event) -> &'static str {
    if let Some(name) = EventName::ALL.into_iter().find(|n| n.event() == *event) {
        return name.as_str();
    }
    match event {
        Event::LaunchFailed(_) => "launch-failed",
        Event::TicketRevoked(_) => "ticket-revoked",
        Event::TicketClaimed(..) => "ticket-claimed",
        Event::Published { .. } => "published",
        _ => "launched",
    }
}

fn to_statig(name: StateName) -> State {
    match name {
        StateName::Idle => State::idle(),
        StateName::ApproveRequested => State::approve_requested(),
        StateName::Initiated => State::initiated(),
        StateName::FinalizedSuccess => State::finalized_success(),
        StateName::FinalizedFailed => State::finalized_failed(),
    }
}

fn from_statig(state: &State) -> StateName {
    match state {
        State::Idle { .. } => StateName::Idle,
        State::ApproveRequested { .. } => StateName::ApproveRequested,
        State::Initiated { .. } => StateName::Initiated,
        State::FinalizedSuccess { .. } => StateName::FinalizedSuccess,
        State::FinalizedFailed { .. } => StateName::FinalizedFailed,
    }
}

/// One step: the machine restored in `from` handles `event` given `facts`.
pub fn step(from: StateName, event: &Event, facts: &Facts<'_>) -> Decision {
    let mut context = Context {
        facts,
        from,
        outcome: None,
        reason: None,
        effects: Vec::new(),
        conditions: Vec::new(),
    };
    let mut machine = SelfDeploy.uninitialized_state_machine();
    *machine.state_mut() = to_statig(from);
    let mut machine = machine.init_with_context(&mut context);
    machine.handle_with_context(event, &mut context);
    Decision {
        conditions: context.conditions,
        to: from_statig(machine.state()),
        outcome: context.outcome.unwrap_or(Outcome::Illegal),
        reason: context.reason,
        effects: context.effects,
    }
}
