//! Replaying a fixture offline: the same engine code, an injected clock, and
//! an executor that writes the state directory (in a temporary directory)
//! but records ssh, git and the deploy log instead of performing them.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::fixture::{Act, EventStep, Expect, Fixture};
use crate::clock::BootClock;
use crate::config::Settings;
use crate::contract::markers::TicketFile;
use crate::contract::names::{RepoName, WorkItem};
use crate::effect::{Effect, Launch};
use crate::engine::{self, Request};
use crate::exec::{ExecError, HostPerformer, Perform, Performed};
use crate::machine::EventName;
use crate::probe::Probe;
use crate::store::{self, ItemLock, ItemPaths, Snapshot};
use crate::table::Row;

/// Where the replay's worktree seems to be, unless a fixture says otherwise:
/// a fixed path, so effects print the same on every machine.
const REPLAY_WORKTREE: &str = "/worktree/{repo}/{work_item}";

/// How long an event waits for a lock that a simulated holder keeps.
const HELD_LOCK_WAIT: Duration = Duration::from_millis(20);
/// How long an event waits for a lock nobody should hold for long.
const UNCONTENDED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The boot clock when a replay starts: a day since the boot.
const REPLAY_BOOT_CLOCK: Duration = Duration::from_secs(86_400);
/// The boot clock right after a simulated reboot.
const REPLAY_REBOOTED_CLOCK: Duration = Duration::from_secs(60);

/// The simulated machine's boot id for its `n`-th boot (1 for the first).
fn replay_boot_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The world as the fixture's step says it is: the time (moved on only by
/// `TimePasses`, stepped by `ClockSteps`), the boot clock, the programs, the
/// worktree, the branch tip, the next id.
struct ReplayProbe<'a> {
    now: SystemTime,
    boot: BootClock,
    /// When this replay wrote `initiated`, by its simulated wall clock.
    initiated_written: Option<SystemTime>,
    step: &'a EventStep,
    /// Deterministic, so that replays print the same bytes every time: the
    /// n-th dispatch of the replay is n.
    next_id: String,
}

impl Probe for ReplayProbe<'_> {
    fn now(&mut self) -> SystemTime {
        self.now
    }

    fn boot_clock(&mut self) -> Option<BootClock> {
        Some(self.boot.clone())
    }

    /// The time of `initiated` as the simulated clock was when this replay
    /// wrote it; none for a file the fixture laid out (its time is not
    /// part of the fixture) or any other file.
    fn modified(&mut self, path: &Path) -> Option<SystemTime> {
        let initiated = crate::contract::markers::Marker::Initiated.file_name();
        (path.file_name().is_some_and(|n| n == initiated) && path.is_file())
            .then_some(self.initiated_written)
            .flatten()
    }

    fn new_dispatch_id(&mut self) -> Result<String, String> {
        Ok(self.next_id.clone())
    }

    fn work_tree(&mut self, _: &Settings, worktree: &Path) -> Result<(), String> {
        if self.step.no_worktree {
            Err(format!("{} is not a git work tree", worktree.display()))
        } else {
            Ok(())
        }
    }

    fn head_ref(&mut self, _: &Settings, _: &Path) -> Result<String, String> {
        match self.step.head.as_deref() {
            Some("") => Err("HEAD is detached".to_owned()),
            Some(head) => Ok(head.to_owned()),
            None => Ok(format!(
                "refs/heads/{}",
                self.step.branch.as_deref().unwrap_or("main")
            )),
        }
    }

    fn freeze(
        &mut self,
        _: &Settings,
        repo: &RepoName,
    ) -> Result<Option<crate::machine::Freeze>, String> {
        match self.step.freeze.as_deref() {
            None => Ok(None),
            Some("") => Err("the freeze file is not JSON".to_owned()),
            Some(message) => Ok(Some(crate::machine::Freeze {
                repo: repo.to_string(),
                message: message.to_owned(),
                actor: "frozen-by".to_owned(),
                time: crate::clock::rfc3339_seconds(self.now),
            })),
        }
    }

    fn program(&mut self, program: &str) -> Result<(), String> {
        if self.step.no_transport_program {
            Err(format!("{program} not found on PATH"))
        } else {
            Ok(())
        }
    }

    fn branch_tip(
        &mut self,
        _: &Settings,
        worktree: &Path,
        branch: Option<&str>,
    ) -> Result<String, String> {
        self.step.branch_tip.clone().ok_or_else(|| {
            format!(
                "git rev-parse {} in {} found no commit",
                branch.unwrap_or("HEAD"),
                worktree.display()
            )
        })
    }
}

/// The payload of a simulated crash: unwinding stops the engine where a
/// killed process would stop, with no history line and no further effect.
struct SimulatedCrash;

struct ReplayExecutor<'a> {
    files: HostPerformer<'a>,
    step: &'a EventStep,
    crash_after: Option<usize>,
    performed: usize,
    launched: bool,
    /// The ids issued so far in this replay, oldest first.
    dispatches: &'a mut Vec<String>,
    /// The id the host claimed during this step, if any.
    claimed: Option<String>,
    faults: Faults,
    /// The simulated wall clock of this step.
    now: SystemTime,
    /// When `initiated` was written, by the simulated wall clock.
    initiated_written: &'a mut Option<SystemTime>,
}

/// Deliberate breaks of the protocol, for tests that show the model-based
/// test catches them. Never set in a real replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Report a revoke as done without renaming the ticket.
    pub skip_revoke: bool,
}

impl ReplayExecutor<'_> {
    fn perform_one(&mut self, paths: &ItemPaths, effect: &Effect) -> Result<Performed, ExecError> {
        if let Effect::WriteMarker {
            marker: crate::contract::markers::Marker::Initiated,
            ..
        } = effect
        {
            let id = next_dispatch_id(self.dispatches);
            self.dispatches.push(id);
            *self.initiated_written = Some(self.now);
        }
        match effect {
            Effect::RevokeTicket { .. } if self.faults.skip_revoke => {
                Ok(Performed::Revoke(crate::store::Revoke::Revoked))
            }
            Effect::RevokeTicket { dispatch_id, .. } => {
                // The host's claim lands just before the revoke's rename.
                if self.step.host_claims && self.claimed.is_none() && claim(paths, dispatch_id) {
                    self.claimed = Some(dispatch_id.clone());
                }
                self.files.perform(paths, effect)
            }
            Effect::WriteMarker { .. }
            | Effect::RemoveMarker { .. }
            | Effect::RemoveStateDir
            | Effect::WriteTicket { .. } => self.files.perform(paths, effect),
            Effect::Launch(_) => {
                self.launched = true;
                if self.step.host_claims
                    && let Some(id) = self.dispatches.last()
                    && claim(paths, id)
                {
                    self.claimed = Some(id.clone());
                }
                Ok(Performed::Dispatched(match &self.step.dispatch_fails {
                    Some(why) => Err(why.clone()),
                    None => Ok(()),
                }))
            }
            Effect::GitPublish { .. } => Ok(Performed::Published(crate::exec::git::Published {
                pushed: if self.step.push_fails {
                    Err("git push failed (exit status 128: the remote is unreachable)".into())
                } else {
                    Ok(())
                },
                notes: Vec::new(),
            })),
            Effect::WriteDeployLog { .. } | Effect::StampMerged { .. } => Ok(Performed::Done),
        }
    }
}

impl Perform for ReplayExecutor<'_> {
    /// Performs the effect, then dies right after it when the step says so:
    /// the effect happened (a launch launched), nothing after it did.
    fn perform(&mut self, paths: &ItemPaths, effect: &Effect) -> Result<Performed, ExecError> {
        if self.crash_after == Some(0) {
            panic::resume_unwind(Box::new(SimulatedCrash));
        }
        let performed = self.perform_one(paths, effect);
        self.performed += 1;
        if self.crash_after == Some(self.performed) {
            panic::resume_unwind(Box::new(SimulatedCrash));
        }
        performed
    }
}

/// What a step left: the state on disk and, for events, what was reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub state: String,
    pub outcome: Option<String>,
    pub condition: Option<String>,
    pub effects: Option<Vec<String>>,
    pub argv: Option<Vec<String>>,
    pub error: Option<String>,
    pub files: Vec<String>,
    pub crashed: bool,
    /// The table row the event took, when it completed.
    pub row: Option<Row>,
    /// Whether `result` existed before the step (for the model tests).
    pub had_result: bool,
    /// Whether the step launched the hook (even if it then crashed).
    pub launched: bool,
    /// The dispatch whose ticket the host claimed during this step: the hook
    /// started for it.
    pub hook_started: Option<String>,
}

/// `clock` moved by `seconds` (back when negative), within what RFC 3339
/// holds (up to 9999-12-31T23:59:59Z); `None` outside.
fn stepped(clock: SystemTime, seconds: i128) -> Option<SystemTime> {
    let since_epoch = clock.duration_since(std::time::UNIX_EPOCH).ok()?;
    let secs = i128::from(since_epoch.as_secs()).checked_add(seconds)?;
    if !(0..=253_402_300_799).contains(&secs) {
        return None;
    }
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, since_epoch.subsec_nanos()))
}

fn next_dispatch_id(issued: &[String]) -> String {
    format!("{:016x}", issued.len() + 1)
}

/// The host wrapper's first act: `mv dispatch-<id> claimed-<id>`. True when
/// this claim won the rename.
fn claim(paths: &ItemPaths, id: &str) -> bool {
    use crate::contract::markers::TicketFile;
    fs::rename(
        paths.ticket_file(TicketFile::Dispatch, id),
        paths.ticket_file(TicketFile::Claimed, id),
    )
    .is_ok()
}

/// A fixture being replayed, one step at a time.
pub struct Replayer {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    settings: Settings,
    repo: RepoName,
    work_item: WorkItem,
    paths: ItemPaths,
    /// The time as the fixture says, moved on by `TimePasses`, stepped by
    /// `ClockSteps`.
    clock: SystemTime,
    /// The simulated machine's boot (1 for the first) and its boot clock,
    /// moved on by `TimePasses` only.
    boots: u32,
    boottime: Duration,
    /// When this replay last wrote `initiated`, by the simulated clock.
    initiated_written: Option<SystemTime>,
    /// Dispatch ids issued in this replay, oldest first.
    dispatches: Vec<String>,
    /// The last dispatch the host claimed.
    last_claimed: Option<String>,
    faults: Faults,
}

impl Replayer {
    /// Lays out the fixture's initial files in a fresh temporary directory.
    pub fn new(f: &Fixture) -> Result<Replayer, String> {
        let tmp =
            tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let root = tmp.path().join("state");
        let mut pairs: Vec<(String, String)> = f.settings.clone().into_iter().collect();
        if !f.settings.contains_key("SELF_DEPLOY_WORKTREE") {
            pairs.push(("SELF_DEPLOY_WORKTREE".into(), REPLAY_WORKTREE.into()));
        }
        pairs.push(("REPOS_DIR".into(), root.to_string_lossy().into_owned()));
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut settings =
            Settings::with_overrides(&borrowed).map_err(|e| format!("settings: {e}"))?;
        settings.lock_timeout = UNCONTENDED_LOCK_WAIT;
        // The replay's files live in a temporary directory nobody reads after
        // a crash: the same writes, without waiting for the disk.
        settings.durability = crate::config::Durability::Unsynced;
        let repo = RepoName::new(&f.repo).map_err(|e| e.to_string())?;
        let work_item = WorkItem::new(&f.work_item).map_err(|e| e.to_string())?;
        let clock =
            humantime::parse_rfc3339(&f.clock).map_err(|e| format!("clock {:?}: {e}", f.clock))?;
        let paths = ItemPaths::new(&root, &repo, &work_item);
        fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        crate::store::identity::init_with(&root, "replay", &f.clock, settings.durability)
            .map_err(|e| e.to_string())?;
        if !f.files.is_empty() {
            fs::create_dir_all(&paths.state_dir).map_err(|e| e.to_string())?;
        }
        for (name, content) in &f.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(format!("files: {name:?} is not a file name"));
            }
            fs::write(paths.state_dir.join(name), content).map_err(|e| e.to_string())?;
        }
        for entry in &f.history {
            store::append_history(
                &paths.history_file,
                entry,
                settings.history_key.as_ref(),
                settings.durability,
            )
            .map_err(|e| e.to_string())?;
        }
        // A captured item may be mid-dispatch: its dispatch is this replay's
        // last, and a claimed one is the wrapper that writes the result.
        let mut dispatches = Vec::new();
        let mut last_claimed = None;
        if let Some(d) = Snapshot::load(&paths).ok().and_then(|s| s.dispatch) {
            if d.ticket == crate::contract::markers::Ticket::Claimed {
                last_claimed = Some(d.id.clone());
            }
            dispatches.push(d.id);
        }
        Ok(Replayer {
            root: tmp.path().to_path_buf(),
            _tmp: tmp,
            settings,
            repo,
            work_item,
            paths,
            clock,
            boots: 1,
            boottime: REPLAY_BOOT_CLOCK,
            initiated_written: None,
            dispatches,
            last_claimed,
            faults: Faults::default(),
        })
    }

    /// Breaks the protocol on purpose (tests of the tests only).
    #[doc(hidden)]
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The dispatch `initiated` names now, if it is ours.
    pub fn current_dispatch(&self) -> Option<String> {
        let snap = Snapshot::load(&self.paths).ok()?;
        snap.dispatch.map(|d| d.id)
    }

    /// The `finalized` record on disk, if any.
    pub fn finalized(&self) -> Option<crate::contract::markers::FinalizedRecord> {
        Snapshot::load(&self.paths).ok()?.finalized.flatten()
    }

    /// The dispatch ids issued so far, oldest first.
    pub fn dispatches(&self) -> &[String] {
        &self.dispatches
    }

    /// The state and files on disk now.
    pub fn observe(&self) -> Actual {
        match Snapshot::load(&self.paths) {
            Ok(snap) => Actual {
                state: snap.state.to_string(),
                files: snap.files,
                had_result: snap.result.is_some(),
                ..Actual::default()
            },
            Err(e) => Actual {
                state: "unreadable".into(),
                error: Some(self.scrub(&e.to_string())),
                ..Actual::default()
            },
        }
    }

    /// The bytes of every file of the state directory (for the model tests).
    pub fn state_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.paths.state_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                all.push((name, fs::read(entry.path()).unwrap_or_default()));
            }
        }
        all.sort();
        all
    }

    /// Performs one step; `Err` is a mistake in the fixture itself.
    pub fn apply(&mut self, act: &Act) -> Result<Actual, String> {
        let had_result = self.observe().had_result;
        let mut actual = match act {
            Act::Event(step) => self.event(step, None, false)?,
            Act::Crash { after, event } => self.event(event, Some(*after), false)?,
            Act::LockHeld(step) => self.event(step, None, true)?,
            Act::HostWritesResult(content) => {
                let path = match &self.last_claimed {
                    Some(id) => self.paths.ticket_file(TicketFile::Result, id),
                    None => {
                        fs::create_dir_all(&self.paths.state_dir).map_err(|e| e.to_string())?;
                        self.paths.legacy_result_file()
                    }
                };
                // The wrapper's redirection fails when the directory is gone.
                let _ = fs::write(path, content);
                self.observe()
            }
            Act::HostClaims => {
                let won = self
                    .dispatches
                    .last()
                    .filter(|id| claim(&self.paths, id))
                    .cloned();
                if won.is_some() {
                    self.last_claimed.clone_from(&won);
                }
                Actual {
                    hook_started: won,
                    ..self.observe()
                }
            }
            Act::LateResult { dispatch, content } => {
                let id = dispatch
                    .checked_sub(1)
                    .and_then(|i| self.dispatches.get(i))
                    .ok_or_else(|| {
                        format!(
                            "LateResult names dispatch {dispatch}, but this replay made {}",
                            self.dispatches.len()
                        )
                    })?;
                let _ = fs::write(self.paths.ticket_file(TicketFile::Result, id), content);
                self.observe()
            }
            Act::TimePasses(seconds) => {
                // A clock past what the system can represent is a bad fixture,
                // never a panic: the other fixtures still run.
                self.clock = stepped(self.clock, i128::from(*seconds)).ok_or_else(|| {
                    format!(
                        "TimePasses({seconds}) moves the clock past what a timestamp can hold; use a number of seconds that keeps the clock before the year 10000"
                    )
                })?;
                self.boottime += Duration::from_secs(*seconds);
                self.observe()
            }
            Act::ClockSteps(seconds) => {
                self.clock = stepped(self.clock, i128::from(*seconds)).ok_or_else(|| {
                    format!(
                        "ClockSteps({seconds}) sets the clock outside what a timestamp can hold (1970 to 9999)"
                    )
                })?;
                self.observe()
            }
            Act::Reboot => {
                self.boots += 1;
                self.boottime = REPLAY_REBOOTED_CLOCK;
                self.observe()
            }
        };
        actual.had_result = had_result;
        Ok(actual)
    }

    fn event(
        &mut self,
        step: &EventStep,
        crash_after: Option<usize>,
        lock_held: bool,
    ) -> Result<Actual, String> {
        let event = EventName::parse(&step.event)
            .ok_or_else(|| format!("unknown event {:?}", step.event))?;
        let request = Request {
            repo: self.repo.clone(),
            work_item: self.work_item.clone(),
            event,
            branch: step
                .branch
                .as_deref()
                .map(crate::contract::names::BranchName::new)
                .transpose()
                .map_err(|e| e.to_string())?,
            worktree: step.worktree.as_ref().map(PathBuf::from),
            revision: step.revision.clone(),
            merged: step.merged,
            force: step.force,
            actor: step.actor.clone().unwrap_or_else(|| "replay".into()),
        };
        let _other = if lock_held {
            Some(
                // Briefly: a process that another thread of this process is
                // forking holds a copy of the lock until it executes.
                ItemLock::acquire(&self.paths.lock_file, Duration::from_secs(5))
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        // A simulated holder keeps the lock: waiting for it proves nothing.
        // Otherwise the lock is only ever taken by a process that another
        // thread of this one is forking (it holds a copy until it executes),
        // which under load can take longer than a short wait.
        let mut settings = self.settings.clone();
        settings.lock_timeout = if lock_held {
            HELD_LOCK_WAIT
        } else {
            UNCONTENDED_LOCK_WAIT
        };
        let settings = &settings;
        let mut executor = ReplayExecutor {
            files: HostPerformer { settings },
            step,
            crash_after,
            performed: 0,
            launched: false,
            dispatches: &mut self.dispatches,
            claimed: None,
            faults: self.faults,
            now: self.clock,
            initiated_written: &mut self.initiated_written,
        };
        let mut probe = ReplayProbe {
            now: self.clock,
            boot: BootClock {
                boot_id: replay_boot_id(self.boots),
                since_boot: self.boottime,
            },
            initiated_written: *executor.initiated_written,
            step,
            next_id: next_dispatch_id(executor.dispatches),
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            engine::handle(settings, &request, &mut probe, &mut executor)
        }));
        let (launched, claimed, performed) = (
            executor.launched,
            executor.claimed.take(),
            executor.performed,
        );
        drop(executor);
        let mut actual = self.observe();
        match outcome {
            Err(payload) if payload.is::<SimulatedCrash>() => actual.crashed = true,
            Err(payload) => panic::resume_unwind(payload),
            Ok(Err(e)) => actual.error = Some(self.scrub(&e.to_string())),
            Ok(Ok(report)) => {
                let kinds: Vec<String> =
                    report.effects.iter().map(|e| e.kind().to_owned()).collect();
                actual.argv = report.effects.iter().find_map(|e| match e {
                    Effect::Launch(Launch { argv, .. }) => Some(argv.clone()),
                    _ => None,
                });
                actual.row = Some(Row {
                    from: report.from.to_string(),
                    event: report.event.to_string(),
                    condition: report.condition.clone(),
                    to: report.to.to_string(),
                    outcome: report.outcome.to_string(),
                    effects: kinds.clone(),
                });
                actual.outcome = Some(report.outcome.to_string());
                actual.condition = Some(report.condition);
                actual.effects = Some(kinds);
            }
        }
        actual.launched = launched;
        actual.hook_started = claimed.clone();
        if claimed.is_some() {
            self.last_claimed = claimed;
        }
        if crash_after.is_some() && !actual.crashed {
            actual.error = Some(format!(
                "the event performed only {}, so it could not crash after {}",
                crate::text_table::counted(performed as u64, "effect", "effects"),
                crash_after.unwrap_or_default()
            ));
        }
        Ok(actual)
    }

    /// Error texts name the temporary directory; replays print the same bytes
    /// on every machine.
    fn scrub(&self, text: &str) -> String {
        text.replace(
            &self.root.join("state").to_string_lossy().into_owned(),
            "$REPOS_DIR",
        )
    }
}

/// One difference between what a fixture expects and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
}

/// Compares what the fixture states with what happened.
pub fn compare(expect: &Expect, actual: &Actual, is_event: bool) -> Vec<Mismatch> {
    fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
        match v {
            Some(v) => format!("{v:?}"),
            None => "-".into(),
        }
    }
    let mut out = Vec::new();
    let mut check = |field: &'static str, expected: String, actual: String| {
        if expected != actual {
            out.push(Mismatch {
                field,
                expected,
                actual,
            });
        }
    };
    check("state", expect.state.clone(), actual.state.clone());
    if is_event || expect.outcome.is_some() {
        check("outcome", show(&expect.outcome), show(&actual.outcome));
    }
    if let Some(c) = &expect.condition {
        check(
            "condition",
            c.clone(),
            show(&actual.condition).trim_matches('"').to_owned(),
        );
    }
    if is_event || expect.effects.is_some() {
        check("effects", show(&expect.effects), show(&actual.effects));
    }
    if expect.argv.is_some() || actual.argv.is_some() && is_event {
        check("argv", show(&expect.argv), show(&actual.argv));
    }
    if is_event || expect.error.is_some() {
        let matches = match (&expect.error, &actual.error) {
            (Some(part), Some(text)) => text.contains(part.as_str()),
            (None, None) => true,
            _ => false,
        };
        if !matches {
            // Shown as they are, even when a part of the text matched.
            check(
                "error",
                format!("{} (part of)", show(&expect.error)),
                show(&actual.error),
            );
        }
    }
    if let Some(files) = &expect.files {
        check("files", format!("{files:?}"), format!("{:?}", actual.files));
    }
    out
}
