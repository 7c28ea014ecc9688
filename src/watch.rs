//! `selfdeploy watch`: a long-running finalizer for installs where the stage
//! engine does not poll. It watches REPOS_DIR for `result` files (inotify,
//! through `notify`) and rescans periodically as a safety net for missed
//! events and network filesystems; each due item gets an ordinary `poll`
//! through the engine, under the same per-item lock as every other caller.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};

use crate::config::Settings;
use crate::contract::names::{RepoName, WorkItem};
use crate::engine::{self, Request};
use crate::exec::HostPerformer;
use crate::machine::{self, EventName, StateName};
use crate::probe::HostProbe;
use crate::store::{self, ItemPaths, Snapshot, Ticket};

/// Why a watch stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot list {path}")]
    List {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("REPOS_DIR {0} is not a directory; create it or fix the setting")]
    NotADirectory(String),
    #[error(transparent)]
    Identity(#[from] store::identity::IdentityError),
    #[error("cannot start the file watcher")]
    Watcher(#[source] notify::Error),
    #[error("cannot watch {path}")]
    Watch {
        path: String,
        #[source]
        source: notify::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("a watch task panicked")]
    Task(#[source] tokio::task::JoinError),
}

/// What a watch did, for its last log line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub finalized: usize,
    pub revoked: usize,
    /// Polls that failed, and pushes of a deploy log that failed.
    pub errors: usize,
    /// Items found with a problem no poll resolves (a result the host could
    /// not write), counted at each look.
    pub problems: usize,
}

impl std::fmt::Display for Stats {
    /// `finalized F, revoked R, errors E`, and `, problems P` when there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "finalized {}, revoked {}, errors {}",
            self.finalized, self.revoked, self.errors
        )?;
        if self.problems > 0 {
            write!(f, ", problems {}", self.problems)?;
        }
        Ok(())
    }
}

type Item = (RepoName, WorkItem);

/// What one poll by the watch did to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The item reached a verdict.
    Finalized { item: String, to: StateName },
    /// Its dispatch was revoked; the item waits for approval again.
    Revoked { item: String, reason: String },
    /// Polled; nothing to finalize yet (or a pending push retried).
    Polled {
        item: String,
        to: StateName,
        outcome: String,
    },
    /// An earlier event's entry, or the verdict of a run a reset kept, was
    /// written to the history.
    Recorded { item: String, what: String },
    /// The poll failed; it is retried later.
    Failed { item: String, error: String },
    /// Something only an operator can resolve: the hook ended but its
    /// result could not be written (no poll ever finds it).
    Problem { item: String, problem: String },
}

impl std::fmt::Display for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Finalized { item, to } => write!(f, "{item}: finalized ({to})"),
            Handled::Revoked { item, reason } => write!(f, "{item}: dispatch revoked ({reason})"),
            Handled::Polled { item, to, outcome } => write!(f, "{item}: polled, {outcome}, {to}"),
            Handled::Recorded { item, what } => write!(f, "{item}: {what}"),
            Handled::Failed { item, error } => write!(f, "{item}: poll failed: {error}"),
            Handled::Problem { item, problem } => write!(f, "{item}: PROBLEM: {problem}"),
        }
    }
}

fn shown(item: &Item) -> String {
    format!("{}/{}", item.0, item.1)
}

/// The work item a written path belongs to, if it is a `result` file.
fn item_of(repos_dir: &Path, path: &Path) -> Option<Item> {
    let rel = path.strip_prefix(repos_dir).ok()?;
    let mut parts = rel.iter().map(|p| p.to_str());
    let repo = parts
        .next()??
        .strip_prefix(crate::contract::remote::STATE_DIR_PREFIX)?;
    let work_item = parts.next()??;
    let file = parts.next()??;
    let is_result = file == crate::contract::remote::LEGACY_RESULT_FILE
        || matches!(
            crate::contract::markers::TicketFile::parse(file),
            Some((crate::contract::markers::TicketFile::Result, _))
        );
    if !is_result || parts.next().is_some() {
        return None;
    }
    Some((RepoName::new(repo).ok()?, WorkItem::new(work_item).ok()?))
}

/// What one look at an item's files (without the lock) found.
#[derive(Debug, Default)]
struct Look {
    /// A poll would act now: initiated, and a result, a passed deadline,
    /// or a dispatch to resolve (a ticket unclaimed past the claim timeout,
    /// revoked, or never written: the engine stopped mid-dispatch). The
    /// poll itself decides again under the lock; looking first spares every
    /// idle item a history line.
    due: bool,
    /// Not finalized: a result may still arrive, so its directory is watched.
    live: bool,
    /// Finalized with the deploy log not pushed: why.
    push_error: Option<String>,
    /// Nothing to do until its files change: not initiated (whose claim
    /// timeout and deadline run with the clock), no push pending.
    settled: bool,
    /// The history lags: an event's intent was left behind (killed, or the
    /// disk was full), or a run a reset kept has a result not yet recorded.
    reconcile: bool,
    /// A result the host wrapper could not write (past the grace): the
    /// problem, as `status` words it.
    problem: Option<String>,
    /// Initiated, and the dispatch time contradicts the clocks: whether
    /// that holds its timeouts back, and why (see `crate::clock`).
    clock_problem: Option<(bool, String)>,
}

fn look(settings: &Settings, item: &Item) -> Result<Look, String> {
    let paths = ItemPaths::new(&settings.repos_dir, &item.0, &item.1);
    let snap = Snapshot::load(&paths).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now();
    // The hook ended and its result is not on disk: said until it is fixed.
    // One still within the grace is looked at again (never settled).
    let problems: Vec<String> = snap
        .unwritten_results
        .iter()
        .filter(|u| u.settled(now))
        .map(|u| format!("dispatch {}: {}", u.id, u.problem()))
        .collect();
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let unwritten = !snap.unwritten_results.is_empty();
    let reconcile = store::intent_pending(&paths.history_file)
        || snap
            .kept_runs
            .iter()
            .any(|k| k.result.is_some() && !k.recorded);
    // A run a reset kept may still write its result here.
    let awaited = snap
        .kept_runs
        .iter()
        .any(|k| k.result.is_none() && !k.recorded);
    let push_error = snap
        .finalized
        .as_ref()
        .and_then(|r| r.as_ref())
        .filter(|record| record.push_pending())
        .map(|record| {
            record
                .push_error
                .clone()
                .unwrap_or_else(|| "unknown error".to_owned())
        });
    if snap.state != StateName::Initiated {
        return Ok(Look {
            due: false,
            live: awaited
                || push_error.is_none()
                    && !matches!(
                        snap.state,
                        StateName::FinalizedSuccess | StateName::FinalizedFailed
                    ),
            settled: push_error.is_none() && snap.unreadable.is_empty() && !reconcile && !unwritten,
            push_error,
            reconcile,
            problem,
            clock_problem: None,
        });
    }
    // The dispatch's age as a poll measures it: a clock that contradicts
    // itself makes nothing due, and is shown.
    let measured = engine::measure_dispatch_now(&paths, &snap);
    let at = snap.initiated_record().map(|r| r.dispatch_time());
    let has_result = snap.result.is_some();
    let due = has_result
        || matches!(
            snap.dispatch.as_ref().map(|d| d.ticket),
            Some(Ticket::Revoked | Ticket::Missing)
        )
        || machine::claim_overdue(
            settings,
            snap.dispatch.as_ref(),
            &measured.age,
            at,
            has_result,
        )
        .is_some()
        || machine::deadline_passed(settings, &measured.age, at, has_result).is_some();
    Ok(Look {
        due,
        live: true,
        push_error: None,
        settled: false,
        reconcile,
        problem,
        clock_problem: measured.problem().map(|p| {
            (
                matches!(measured.age, crate::clock::DispatchAge::Inconsistent(_)),
                p,
            )
        }),
    })
}

/// Brings the item's history up to date (no event: an idle item's history
/// gets no poll line) and says what was recorded.
fn reconcile(settings: &Settings, item: &Item) -> Handled {
    let name = shown(item);
    match engine::reconcile(settings, &item.0, &item.1, "watch") {
        Ok(notes) => Handled::Recorded {
            item: name,
            what: if notes.is_empty() {
                "history up to date".to_owned()
            } else {
                notes.join("; ")
            },
        },
        Err(e) => Handled::Failed {
            item: name,
            error: e.to_string(),
        },
    }
}

/// Polls one item (blocking: git and the lock) and says what happened.
fn poll(settings: &Settings, item: &Item) -> Handled {
    let request = Request {
        repo: item.0.clone(),
        work_item: item.1.clone(),
        event: EventName::Poll,
        branch: None,
        worktree: None,
        revision: None,
        merged: None,
        force: false,
        actor: "watch".to_owned(),
    };
    let name = shown(item);
    match engine::handle(
        settings,
        &request,
        &mut HostProbe,
        &mut HostPerformer { settings },
    ) {
        Ok(report)
            if report.to != report.from
                && matches!(
                    report.to,
                    StateName::FinalizedSuccess | StateName::FinalizedFailed
                ) =>
        {
            Handled::Finalized {
                item: name,
                to: report.to,
            }
        }
        Ok(report)
            if report.from == StateName::Initiated && report.to == StateName::ApproveRequested =>
        {
            Handled::Revoked {
                item: name,
                reason: report.reason.unwrap_or_else(|| "no reason given".into()),
            }
        }
        Ok(report) => Handled::Polled {
            item: name,
            to: report.to,
            outcome: report.outcome.to_string(),
        },
        Err(e) => Handled::Failed {
            item: name,
            error: e.to_string(),
        },
    }
}

/// When to try an item again after a failure: the delay doubles from
/// `first` up to `longest`. An error is logged when it first appears and
/// when it changes, not at every attempt.
#[derive(Debug)]
struct Backoff {
    first: Duration,
    longest: Duration,
    next: HashMap<Item, Retry>,
}

#[derive(Debug)]
struct Retry {
    at: Instant,
    delay: Duration,
    attempts: u32,
    error: String,
    /// The state directory's modification time when it failed: a change
    /// there (a file written, renamed or removed) ends the wait.
    files: Option<SystemTime>,
}

impl Backoff {
    fn new(first: Duration, longest: Duration) -> Backoff {
        Backoff {
            first,
            longest,
            next: HashMap::new(),
        }
    }

    fn ready(&self, item: &Item, files: Option<SystemTime>) -> bool {
        self.next
            .get(item)
            .is_none_or(|r| Instant::now() >= r.at || r.files != files)
    }

    /// Records a failure; returns the delay, and whether the error is new.
    fn failed(&mut self, item: &Item, error: &str, files: Option<SystemTime>) -> (Duration, bool) {
        let (delay, attempts, new) = match self.next.get(item) {
            Some(r) => (
                (r.delay * 2).min(self.longest),
                r.attempts + 1,
                r.error != error,
            ),
            None => (self.first, 1, true),
        };
        self.next.insert(
            item.clone(),
            Retry {
                at: Instant::now() + delay,
                delay,
                attempts,
                error: error.to_owned(),
                files,
            },
        );
        (delay, new)
    }

    /// Records a success; returns how many attempts had failed before it.
    fn succeeded(&mut self, item: &Item) -> Option<u32> {
        self.next.remove(item).map(|r| r.attempts)
    }

    /// Makes the item ready now, keeping what it failed with.
    fn wake(&mut self, item: &Item) {
        if let Some(retry) = self.next.get_mut(item) {
            retry.at = Instant::now();
        }
    }
}

/// What the watch remembers between passes: which items to leave alone for
/// a while. A poll that fails (a missing worktree, an unreadable file) is
/// retried from 5 s, doubling up to 5 minutes; a push that fails, from 30 s.
/// Each failed poll costs a lock, git and (for a new error) a history line.
/// And which items are settled: nothing to do until their files change (not
/// initiated, whose clock runs; no push pending), their directory unchanged
/// since; a rescan passes them by with one `stat`.
#[derive(Debug)]
pub struct Schedule {
    polls: Backoff,
    pushes: Backoff,
    /// The directory's modification time when settled, and whether the item
    /// is live (waiting for approval: its directory stays watched).
    settled: HashMap<Item, (SystemTime, bool)>,
    /// The problem last logged for each item: logged again only when it
    /// changes.
    problems: HashMap<Item, String>,
    /// Items whose dispatch time contradicts the clocks, logged once: whether
    /// that holds their timeouts back.
    clocks: HashMap<Item, bool>,
}

/// A directory changed less than this long before a look may change again
/// within the same timestamp tick unseen: it is not taken as settled.
const SETTLED_AFTER: Duration = Duration::from_secs(2);

const FIRST_POLL_RETRY: Duration = Duration::from_secs(5);
const FIRST_PUSH_RETRY: Duration = Duration::from_secs(30);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            polls: Backoff::new(FIRST_POLL_RETRY, LONGEST_RETRY),
            pushes: Backoff::new(FIRST_PUSH_RETRY, LONGEST_RETRY),
            settled: HashMap::new(),
            problems: HashMap::new(),
            clocks: HashMap::new(),
        }
    }
}

/// The state directory's modification time (changed by every file created,
/// renamed or removed in it).
fn files_changed_at(settings: &Settings, item: &Item) -> Option<SystemTime> {
    let paths = ItemPaths::new(&settings.repos_dir, &item.0, &item.1);
    std::fs::metadata(&paths.state_dir)
        .and_then(|m| m.modified())
        .ok()
}

impl Schedule {
    /// Polls the item, logs what happened, and schedules what failed.
    fn poll(&mut self, settings: &Settings, item: &Item, stats: &mut Stats) -> Handled {
        let name = shown(item);
        let handled = poll(settings, item);
        match &handled {
            Handled::Finalized { to, .. } => {
                stats.finalized += 1;
                tracing::info!("watch: {name} finalized: {to}");
            }
            Handled::Revoked { reason, .. } => {
                stats.revoked += 1;
                tracing::info!("watch: {name}: dispatch revoked: {reason}");
            }
            Handled::Polled { to, outcome, .. } => {
                tracing::debug!("watch: {name} polled: {outcome}, {to}");
            }
            Handled::Recorded { what, .. } => {
                tracing::info!("watch: {name}: {what}");
            }
            // A poll never answers with a problem; `visit` reports those.
            Handled::Problem { .. } => {}
            Handled::Failed { error, .. } => {
                self.poll_failed(settings, item, error, stats);
                return handled;
            }
        }
        self.worked(item);
        // A finalize pushes; a failed push is retried on its own schedule.
        match look(settings, item).ok().and_then(|l| l.push_error) {
            Some(error) => {
                // A deploy log that did not reach the remote is an error of
                // this pass (`watch --once` exits 1), retried on its own
                // schedule.
                stats.errors += 1;
                let (delay, new) = self.pushes.failed(item, &error, None);
                if new {
                    tracing::warn!(
                        "watch: {name}: deploy log not pushed: {error}; retrying in {}",
                        humantime::format_duration(delay)
                    );
                }
            }
            None => {
                if let Some(failures) = self.pushes.succeeded(item) {
                    tracing::info!(
                        "watch: {name}: deploy log pushed after {failures} failed attempts"
                    );
                }
            }
        }
        handled
    }

    /// Records a failed poll (or an item that cannot be read): logged when
    /// the error is new, retried after a growing delay.
    fn poll_failed(&mut self, settings: &Settings, item: &Item, error: &str, stats: &mut Stats) {
        stats.errors += 1;
        let name = shown(item);
        let (delay, new) = self
            .polls
            .failed(item, error, files_changed_at(settings, item));
        if new {
            tracing::warn!(
                "watch: {name}: poll failed: {error}; retrying in {}",
                humantime::format_duration(delay)
            );
        } else {
            tracing::debug!("watch: {name}: poll failed again; retrying in {delay:?}");
        }
    }

    /// Logs a clock problem of the item when it starts or changes kind, and
    /// when it is over.
    fn clock(&mut self, item: &Item, problem: Option<&(bool, String)>) {
        let name = shown(item);
        match problem {
            Some((blocking, why)) => {
                if self.clocks.insert(item.clone(), *blocking) != Some(*blocking) {
                    tracing::warn!("watch: {name}: PROBLEM: {why}");
                }
            }
            None => {
                if self.clocks.remove(item).is_some() {
                    tracing::info!("watch: {name}: the dispatch time agrees with the clocks again");
                }
            }
        }
    }

    /// The item can be read and polled again.
    fn worked(&mut self, item: &Item) {
        if let Some(failures) = self.polls.succeeded(item) {
            tracing::info!(
                "watch: {}: poll works again after {failures} failed attempts",
                shown(item)
            );
        }
    }

    /// Reports the item's problem, if it has one: logged when it is new or
    /// changed, counted at every look.
    fn problem(
        &mut self,
        item: &Item,
        problem: Option<&str>,
        stats: &mut Stats,
    ) -> Option<Handled> {
        let name = shown(item);
        let Some(problem) = problem else {
            if self.problems.remove(item).is_some() {
                tracing::info!("watch: {name}: its problem is gone");
            }
            return None;
        };
        stats.problems += 1;
        if self.problems.get(item).map(String::as_str) != Some(problem) {
            tracing::warn!("watch: {name}: PROBLEM: {problem}");
            self.problems.insert(item.clone(), problem.to_owned());
        }
        Some(Handled::Problem {
            item: name,
            problem: problem.to_owned(),
        })
    }

    /// Looks at the item and polls it if it is due and not waiting after a
    /// failure, or retries its push when that is due; reports a problem no
    /// poll resolves. Also says whether the item may still receive a result
    /// (as it was before the poll).
    fn visit(
        &mut self,
        settings: &Settings,
        item: &Item,
        stats: &mut Stats,
    ) -> (Option<Handled>, bool) {
        let files = files_changed_at(settings, item);
        if let (Some(&(at, live)), Some(now)) = (self.settled.get(item), files)
            && at == now
        {
            return (None, live);
        }
        self.settled.remove(item);
        let look = look(settings, item);
        let problem = match &look {
            Ok(l) => self.problem(item, l.problem.as_deref(), stats),
            Err(_) => None,
        };
        if let Ok(l) = &look {
            self.clock(item, l.clock_problem.as_ref());
        }
        let live = look.as_ref().is_ok_and(|l| l.live);
        if let (Ok(l), Some(changed)) = (&look, files)
            && l.settled
            && changed.elapsed().is_ok_and(|age| age >= SETTLED_AFTER)
        {
            self.settled.insert(item.clone(), (changed, l.live));
        }
        let handled = match look {
            Ok(look) if look.due => self
                .polls
                .ready(item, files)
                .then(|| self.poll(settings, item, stats)),
            Ok(look) if look.push_error.is_some() && self.pushes.ready(item, None) => {
                Some(self.poll(settings, item, stats))
            }
            // A poll reconciles first; an item no poll is due for gets the
            // reconcile alone.
            Ok(look) if look.reconcile => self.polls.ready(item, files).then(|| {
                let handled = reconcile(settings, item);
                match &handled {
                    Handled::Failed { error, .. } => self.poll_failed(settings, item, error, stats),
                    handled => {
                        tracing::info!("watch: {handled}");
                        self.worked(item);
                    }
                }
                handled
            }),
            Ok(_) => {
                self.worked(item);
                None
            }
            Err(error) if self.polls.ready(item, files) => {
                self.poll_failed(settings, item, &error, stats);
                Some(Handled::Failed {
                    item: shown(item),
                    error,
                })
            }
            Err(_) => None,
        };
        // What a poll did says more; the problem was logged all the same.
        (handled.or(problem), live)
    }

    /// A result of the item was written: whatever it waited for may be
    /// over, so it is looked at now; a failure it had is still known (the
    /// same error again is no news).
    fn written(&mut self, item: &Item) {
        self.polls.wake(item);
    }
}

/// Every due item under REPOS_DIR, polled once (unless it failed lately and
/// nothing changed since); a pending push is retried when its backoff
/// allows. Returns what was done, item by item.
pub fn rescan(
    settings: &Settings,
    stats: &mut Stats,
    schedule: &mut Schedule,
) -> Result<Vec<Handled>, WatchError> {
    rescan_pass(settings, stats, schedule).map(|pass| pass.handled)
}

/// What a rescan did, and which items may still receive a result.
#[derive(Debug, Default)]
struct Pass {
    handled: Vec<Handled>,
    live: Vec<Item>,
}

fn rescan_pass(
    settings: &Settings,
    stats: &mut Stats,
    schedule: &mut Schedule,
) -> Result<Pass, WatchError> {
    let mut items = store::list_items(&settings.repos_dir).map_err(|source| WatchError::List {
        path: settings.repos_dir.display().to_string(),
        source,
    })?;
    // A share unmounted under a running watch shows an empty directory:
    // that is an error, not "nothing in flight".
    store::identity::read(&settings.repos_dir)?;
    // An event stopped after it removed its item (a reset killed before its
    // entry) left an intent and no state directory: it is listed here.
    let own = settings.repos_dir.join(".selfdeploy");
    match store::pending_intents(&own) {
        Ok(pending) => {
            for (repo, work_item) in pending {
                if let (Ok(repo), Ok(work_item)) = (RepoName::new(&repo), WorkItem::new(&work_item))
                {
                    let item = (repo, work_item);
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            }
        }
        Err(error) => tracing::warn!(
            "watch: cannot list pending intents under {}: {error}",
            own.display()
        ),
    }
    let mut pass = Pass::default();
    for item in &items {
        let (handled, live) = schedule.visit(settings, item, stats);
        pass.handled.extend(handled);
        if live {
            pass.live.push(item.clone());
        }
    }
    // Items gone (reset, removed) are forgotten.
    if schedule.settled.len() > items.len() / 2 {
        let listed: std::collections::HashSet<&Item> = items.iter().collect();
        schedule.settled.retain(|item, _| listed.contains(item));
        schedule.clocks.retain(|item, _| listed.contains(item));
    }
    Ok(pass)
}

/// A path a file event named, as far as the watch cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// A result file of an item.
    Result(Item),
    /// A directory that may hold items (`.deploy-state-<repo>`) or results
    /// (an item's state directory): to be watched.
    Directory(PathBuf),
}

/// What a file event means to the watch, if anything. Results count when
/// written whole (closed after writing, or renamed into place); directories
/// when they appear.
fn named(repos_dir: &Path, event: &notify::Event) -> Vec<Named> {
    let closed_or_renamed = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
    );
    let appeared = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    let mut found = Vec::new();
    for path in &event.paths {
        if closed_or_renamed && let Some(item) = item_of(repos_dir, path) {
            found.push(Named::Result(item));
        } else if appeared && holds_items_or_results(repos_dir, path) {
            found.push(Named::Directory(path.clone()));
        }
    }
    found
}

/// `REPOS_DIR/.deploy-state-<repo>` or `REPOS_DIR/.deploy-state-<repo>/<item>`.
fn holds_items_or_results(repos_dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(repos_dir) else {
        return false;
    };
    let parts: Vec<_> = rel.iter().filter_map(|p| p.to_str()).collect();
    let repo_dir = |p: &str| {
        p.strip_prefix(crate::contract::remote::STATE_DIR_PREFIX)
            .is_some_and(|r| RepoName::new(r).is_ok())
    };
    match parts.as_slice() {
        [repo] => repo_dir(repo),
        [repo, item] => repo_dir(repo) && WorkItem::new(item).is_ok(),
        _ => false,
    }
}

/// The directories the watch needs, one inotify watch each, none
/// recursive: REPOS_DIR (repos appear), each `.deploy-state-<repo>` (items
/// appear) and each live item's directory (results appear). Worktrees and
/// everything else under REPOS_DIR stay unwatched; symlinks are never
/// followed.
struct Watched {
    watcher: notify::RecommendedWatcher,
    dirs: std::collections::HashSet<PathBuf>,
}

impl Watched {
    fn add(&mut self, dir: &Path) {
        let real_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if !real_dir || self.dirs.contains(dir) {
            return;
        }
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(dir.to_path_buf());
            }
            Err(e) => tracing::debug!("watch: cannot watch {}: {e}", dir.display()),
        }
    }

    /// A repo's directory and the items already in it (created before its
    /// watch was in place).
    fn add_repo(&mut self, repo_dir: &Path) {
        self.add(repo_dir);
        if let Ok(entries) = std::fs::read_dir(repo_dir) {
            for entry in entries.flatten() {
                self.add(&entry.path());
            }
        }
    }

    /// After a rescan: every repo directory and every live item watched,
    /// the items that reached a verdict no longer.
    fn follow(&mut self, settings: &Settings, live: &[Item]) {
        if let Ok(entries) = std::fs::read_dir(&settings.repos_dir) {
            for entry in entries.flatten() {
                if holds_items_or_results(&settings.repos_dir, &entry.path()) {
                    self.add(&entry.path());
                }
            }
        }
        let wanted: std::collections::HashSet<PathBuf> = live
            .iter()
            .map(|(repo, item)| ItemPaths::new(&settings.repos_dir, repo, item).state_dir)
            .collect();
        for dir in &wanted {
            self.add(dir);
        }
        let done: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|d| {
                **d != settings.repos_dir
                    && d.parent().is_some_and(|p| p != settings.repos_dir)
                    && !wanted.contains(*d)
            })
            .cloned()
            .collect();
        for dir in done {
            let _ = self.watcher.unwatch(&dir);
            self.dirs.remove(&dir);
        }
    }
}

/// Runs until `shutdown` resolves. The event in hand completes first: nothing
/// is left half-done.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, WatchError> {
    let repos_dir = settings.repos_dir.clone();
    if !repos_dir.is_dir() {
        return Err(WatchError::NotADirectory(repos_dir.display().to_string()));
    }
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<Named>();
    let events_dir = repos_dir.clone();
    // Only what matters is sent: a hook writing its log, or the watch
    // reading a result, never wakes the loop.
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for named in named(&events_dir, &event) {
                let _ = tx.send(named);
            }
        }
    })
    .map_err(WatchError::Watcher)?;
    let mut watched = Watched {
        watcher,
        dirs: Default::default(),
    };
    watched
        .watcher
        .watch(&repos_dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Watch {
            path: repos_dir.display().to_string(),
            source,
        })?;
    watched.dirs.insert(repos_dir.clone());
    let count = store::list_items(&repos_dir).map_or(0, |items| items.len());
    tracing::info!(
        "watch: started on {} ({}, transport {}, rescan every {})",
        repos_dir.display(),
        crate::text_table::counted(count as u64, "work item", "work items"),
        settings.transport,
        humantime::format_duration(settings.watch_rescan)
    );

    let settings = std::sync::Arc::new(settings);
    let mut stats = Stats::default();
    let mut schedule = Schedule::default();
    let mut rescan_failing: Option<String> = None;
    let mut ticks = tokio::time::interval(settings.watch_rescan);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let work: Option<Vec<Item>> = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(first) = changed.recv() => {
                let mut items = Vec::new();
                let mut take = |named: Named, watched: &mut Watched| match named {
                    Named::Result(item) => {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                    Named::Directory(dir) if dir.parent() == Some(repos_dir.as_path()) => {
                        watched.add_repo(&dir);
                    }
                    Named::Directory(dir) => watched.add(&dir),
                };
                take(first, &mut watched);
                // Take every change already queued, once each.
                while let Ok(named) = changed.try_recv() {
                    take(named, &mut watched);
                }
                Some(items)
            }
            _ = ticks.tick() => None,
        };
        if work.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let s = settings.clone();
        let pass;
        (stats, schedule, pass) = tokio::task::spawn_blocking(move || {
            let mut stats = stats;
            let mut schedule = schedule;
            let pass = match work {
                Some(items) => {
                    for item in &items {
                        schedule.written(item);
                        let _ = schedule.visit(&s, item, &mut stats);
                    }
                    None
                }
                None => Some(rescan_pass(&s, &mut stats, &mut schedule)),
            };
            (stats, schedule, pass)
        })
        .await
        .map_err(WatchError::Task)?;
        match pass {
            None => {}
            Some(Ok(pass)) => {
                if let Some(error) = rescan_failing.take() {
                    tracing::info!("watch: rescans work again (they failed: {error})");
                }
                watched.follow(&settings, &pass.live);
            }
            Some(Err(e)) => {
                stats.errors += 1;
                let error = with_causes(&e);
                if rescan_failing.as_ref() != Some(&error) {
                    tracing::warn!("watch: rescan failed: {error}; retrying at every rescan");
                    rescan_failing = Some(error);
                }
            }
        }
    }
    drop(watched);
    tracing::info!("watch: stopped ({stats})");
    Ok(stats)
}

/// An error and its causes on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Resolves on SIGTERM or SIGINT. A signal whose handler cannot be
/// installed is said once (an error) and keeps its default action: it ends
/// the process, without finishing the event in hand.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    async fn one(kind: SignalKind, name: &str) {
        match signal(kind) {
            Ok(mut stream) => {
                stream.recv().await;
                tracing::info!("watch: {name}");
            }
            Err(e) => {
                tracing::error!(
                    "watch: cannot handle {name} ({e}); it will end the process without finishing the event in hand"
                );
                std::future::pending::<()>().await;
            }
        }
    }
    tokio::select! {
        () = one(SignalKind::terminate(), "SIGTERM") => {}
        () = one(SignalKind::interrupt(), "SIGINT") => {}
    }
}

/// A runtime for `watch`: one thread for the loop, blocking work on the pool.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, WatchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .thread_keep_alive(Duration::from_secs(10))
        .build()
        .map_err(WatchError::Runtime)?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_result_files_name_an_item() {
        let base = Path::new("/r");
        let item = item_of(base, Path::new("/r/.deploy-state-orchestrator/W-1/result")).unwrap();
        assert_eq!((item.0.as_str(), item.1.as_str()), ("orchestrator", "W-1"));
        for other in [
            "/r/.deploy-state-orchestrator/W-1/initiated",
            "/r/.deploy-state-orchestrator/W-1",
            "/r/.selfdeploy/history/orchestrator/W-1.jsonl",
            "/r/.deploy-state-orchestrator/W-1/sub/result",
            "/elsewhere/.deploy-state-o/W/result",
            "/r/.deploy-state-orchestrator/W-1~removed.5/result",
        ] {
            assert_eq!(item_of(base, Path::new(other)), None, "{other}");
        }
    }

    const ID: &str = "0123456789abcdef";

    fn settings(repos_dir: &Path) -> Settings {
        let dir = repos_dir.to_str().unwrap();
        store::identity::init(repos_dir, "test", "2026-12-05T00:00:00Z").unwrap();
        Settings::with_overrides(&[("REPOS_DIR", dir), ("HOST_REPOS_DIR", dir)]).unwrap()
    }

    fn item(name: &str) -> Item {
        (
            RepoName::new("orchestrator").unwrap(),
            WorkItem::new(name).unwrap(),
        )
    }

    fn paths(settings: &Settings, item: &Item) -> ItemPaths {
        ItemPaths::new(&settings.repos_dir, &item.0, &item.1)
    }

    fn approve_requested(settings: &Settings, item: &Item) -> ItemPaths {
        use crate::contract::markers::{ApproveRecord, Marker, encode};
        let paths = paths(settings, item);
        let record = ApproveRecord {
            requested_by: "test".into(),
            requested_at: "2024-01-01T00:00:00Z".into(),
        };
        paths
            .write_marker(Marker::ApproveRequested, &encode(&record))
            .unwrap();
        paths
    }

    fn finalized(settings: &Settings, item: &Item, pushed: bool) -> ItemPaths {
        use crate::contract::hook_result::Verdict;
        use crate::contract::markers::{FinalizedRecord, Marker, encode};
        let paths = paths(settings, item);
        let record = FinalizedRecord {
            deploy_status: Verdict::Success,
            hook_exit_code: "0".into(),
            finalized_at: "2024-01-01T00:00:00Z".into(),
            finalized_by: "test".into(),
            pushed: Some(pushed),
            push_error: (!pushed).then(|| "remote refused".into()),
        };
        paths
            .write_marker(Marker::Finalized, &encode(&record))
            .unwrap();
        paths
    }

    /// A run a reset kept (`reset-<id>`), its result written or not, its
    /// verdict recorded in the history or not.
    fn kept_run(paths: &ItemPaths, result: bool, recorded: bool) {
        use crate::contract::markers::TicketFile;
        std::fs::write(paths.ticket_file(TicketFile::Reset, ID), "{}").unwrap();
        if result {
            std::fs::write(paths.ticket_file(TicketFile::Result, ID), "0\n").unwrap();
        }
        if recorded {
            // Recorded: the history holds its late verdict.
            let entry = crate::store::HistoryEntry {
                time: "2024-01-01T00:00:00Z".into(),
                actor: "test".into(),
                event: crate::store::LATE_RESULT_EVENT.into(),
                from: "idle".into(),
                to: "idle".into(),
                outcome: "recorded".into(),
                reason: Some(format!("dispatch {ID} ran on after a reset of the item")),
                effects: Vec::new(),
            };
            crate::store::append_history(
                &paths.history_file,
                &entry,
                None,
                crate::config::Durability::Unsynced,
            )
            .unwrap();
        }
    }

    /// (live, settled, reconcile, push pending) as one look finds the item.
    fn looked(settings: &Settings, item: &Item) -> (bool, bool, bool, bool) {
        let l = look(settings, item).unwrap();
        assert!(!l.due, "{l:?}");
        (l.live, l.settled, l.reconcile, l.push_error.is_some())
    }

    /// What each kind of idle item costs the watch: a directory watched
    /// while a result may still come, a look at every rescan while its
    /// history lags or its push is pending, nothing otherwise.
    #[test]
    fn look_tells_which_items_are_watched_settled_or_to_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());

        let waiting = item("WAIT-1");
        approve_requested(&s, &waiting);
        assert_eq!(looked(&s, &waiting), (true, true, false, false));

        let done = item("DONE-1");
        finalized(&s, &done, true);
        assert_eq!(looked(&s, &done), (false, true, false, false));

        let unpushed = item("UNPUSHED-1");
        finalized(&s, &unpushed, false);
        assert_eq!(looked(&s, &unpushed), (false, false, false, true));

        // A run a reset kept may still write its result: watched.
        let running = item("KEPT-1");
        kept_run(&finalized(&s, &running, true), false, false);
        assert_eq!(looked(&s, &running), (true, true, false, false));

        // Its result landed and is not in the history yet.
        let landed = item("KEPT-2");
        kept_run(&finalized(&s, &landed, true), true, false);
        assert_eq!(looked(&s, &landed), (false, false, true, false));

        // Recorded since: nothing left to do.
        let recorded = item("KEPT-3");
        kept_run(&finalized(&s, &recorded, true), true, true);
        assert_eq!(looked(&s, &recorded), (false, true, false, false));

        // An event's intent left behind (the engine was killed).
        let interrupted = item("INTENT-1");
        let p = approve_requested(&s, &interrupted);
        let intent = store::intent_path(&p.history_file);
        std::fs::create_dir_all(intent.parent().unwrap()).unwrap();
        std::fs::write(intent, "{}").unwrap();
        assert_eq!(looked(&s, &interrupted), (true, false, true, false));
    }

    /// A long-running watch forgets the items that are gone (reset,
    /// removed): what it remembers stays bounded by what is listed.
    #[test]
    fn a_rescan_forgets_settled_items_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let items: Vec<Item> = ["A-1", "A-2", "A-3", "A-4"].map(item).into();
        for it in &items {
            let p = approve_requested(&s, it);
            // Unchanged for long enough to be taken as settled.
            let old = SystemTime::now() - Duration::from_secs(60);
            std::fs::File::open(&p.state_dir)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let mut schedule = Schedule::default();
        let mut stats = Stats::default();
        let pass = rescan_pass(&s, &mut stats, &mut schedule).unwrap();
        assert_eq!(pass.live.len(), 4);
        assert_eq!(schedule.settled.len(), 4);

        for gone in &items[..2] {
            std::fs::remove_dir_all(paths(&s, gone).state_dir).unwrap();
        }
        rescan_pass(&s, &mut stats, &mut schedule).unwrap();
        let mut kept: Vec<&Item> = schedule.settled.keys().collect();
        kept.sort();
        assert_eq!(kept, [&items[2], &items[3]]);
    }

    fn set_mtime(dir: &Path, at: SystemTime) {
        std::fs::File::open(dir).unwrap().set_modified(at).unwrap();
    }

    /// A settled item is passed by while its directory is unchanged, and
    /// looked at again once it changes. A directory changed within the last
    /// 2 s is never taken as settled: a change within the same timestamp
    /// tick would leave its modification time as it was. `live` shows which
    /// it was: an item finalized since is no longer live once looked at.
    #[test]
    fn a_settled_item_is_looked_at_again_when_its_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let mut schedule = Schedule::default();
        let mut stats = Stats::default();

        let old = item("OLD-1");
        let p = approve_requested(&s, &old);
        set_mtime(&p.state_dir, SystemTime::now() - Duration::from_secs(60));
        assert_eq!(schedule.visit(&s, &old, &mut stats), (None, true));
        assert!(schedule.settled.contains_key(&old));
        finalized(&s, &old, true);
        assert_eq!(schedule.visit(&s, &old, &mut stats), (None, false));

        let fresh = item("FRESH-1");
        let p = approve_requested(&s, &fresh);
        let now = SystemTime::now();
        set_mtime(&p.state_dir, now);
        assert_eq!(schedule.visit(&s, &fresh, &mut stats), (None, true));
        finalized(&s, &fresh, true);
        set_mtime(&p.state_dir, now);
        assert_eq!(schedule.visit(&s, &fresh, &mut stats), (None, false));
    }

    #[test]
    fn backoff_doubles_up_to_the_longest_and_forgets_on_success() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(12));
        let it = item("B-1");
        assert!(b.ready(&it, None));
        assert_eq!(b.failed(&it, "down", None), (Duration::from_secs(5), true));
        assert!(!b.ready(&it, None));
        // The same error again is no news.
        assert_eq!(
            b.failed(&it, "down", None),
            (Duration::from_secs(10), false)
        );
        assert_eq!(b.failed(&it, "gone", None), (Duration::from_secs(12), true));
        assert!(!b.ready(&it, None));
        // A change in its files ends the wait, as does a wake.
        assert!(b.ready(&it, Some(SystemTime::UNIX_EPOCH)));
        b.wake(&it);
        assert!(b.ready(&it, None));
        assert_eq!(b.succeeded(&it), Some(3));
        assert!(b.ready(&it, None));
        assert_eq!(b.succeeded(&it), None);
        assert_eq!(b.failed(&it, "gone", None), (Duration::from_secs(5), true));
    }

    /// An item that cannot be read (its state directory is a file) is
    /// looked at again when its files change, not at every visit within
    /// its backoff; once readable, its failures are forgotten.
    #[test]
    fn a_failing_item_waits_for_its_backoff_or_a_change_of_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let it = item("BROKEN-1");
        let p = paths(&s, &it);
        std::fs::create_dir_all(p.state_dir.parent().unwrap()).unwrap();
        std::fs::write(&p.state_dir, "not a directory").unwrap();
        let mut schedule = Schedule::default();
        let mut stats = Stats::default();
        let failed = |h: Option<Handled>| matches!(h, Some(Handled::Failed { .. }));

        assert!(failed(schedule.visit(&s, &it, &mut stats).0));
        assert_eq!(schedule.visit(&s, &it, &mut stats).0, None);
        assert_eq!(stats.errors, 1);
        // Its files change (explicitly later: no clock tick to wait for).
        let file = std::fs::File::options()
            .write(true)
            .open(&p.state_dir)
            .unwrap();
        let was = file.metadata().unwrap().modified().unwrap();
        file.set_modified(was + Duration::from_secs(1)).unwrap();
        assert!(failed(schedule.visit(&s, &it, &mut stats).0));
        assert_eq!(stats.errors, 2);

        std::fs::remove_file(&p.state_dir).unwrap();
        approve_requested(&s, &it);
        assert_eq!(schedule.visit(&s, &it, &mut stats), (None, true));
        assert!(schedule.polls.next.is_empty(), "{:?}", schedule.polls);
        // Failing again is a new failure, from the first delay.
        std::fs::remove_dir_all(&p.state_dir).unwrap();
        std::fs::write(&p.state_dir, "not a directory").unwrap();
        assert!(failed(schedule.visit(&s, &it, &mut stats).0));
        let retry = &schedule.polls.next[&it];
        assert_eq!((retry.attempts, retry.delay), (1, FIRST_POLL_RETRY));
    }
}
