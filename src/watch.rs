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
    pub errors: usize,
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
    /// The poll failed; it is retried later.
    Failed { item: String, error: String },
}

impl std::fmt::Display for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Finalized { item, to } => write!(f, "{item}: finalized ({to})"),
            Handled::Revoked { item, reason } => write!(f, "{item}: dispatch revoked ({reason})"),
            Handled::Polled { item, to, outcome } => write!(f, "{item}: polled, {outcome}, {to}"),
            Handled::Failed { item, error } => write!(f, "{item}: poll failed: {error}"),
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

/// Whether a file event is something a writer did. inotify reports reads
/// too (an open, a close after reading), and looking at an item reads its
/// result: reacting to those would make every look cause the next.
fn written(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Whether a poll would act on the item now: initiated, and a result, a
/// passed deadline, or a dispatch to resolve (a ticket unclaimed past the
/// claim timeout, revoked, or never written: the engine stopped
/// mid-dispatch). Checked without the lock to avoid a history line for every
/// idle look; the poll itself decides under the lock.
fn due(settings: &Settings, repo: &RepoName, work_item: &WorkItem) -> bool {
    let paths = ItemPaths::new(&settings.repos_dir, repo, work_item);
    match Snapshot::load(&paths) {
        Ok(snap) if snap.state == StateName::Initiated => {
            let now = std::time::SystemTime::now();
            let at = snap.initiated_record().map(|r| r.dispatch_time());
            let has_result = snap.result.is_some();
            has_result
                || matches!(
                    snap.dispatch.as_ref().map(|d| d.ticket),
                    Some(Ticket::Revoked | Ticket::Missing)
                )
                || machine::claim_overdue(settings, snap.dispatch.as_ref(), at, has_result, now)
                    .is_some()
                || machine::deadline_passed(settings, at, has_result, now).is_some()
        }
        _ => false,
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

    fn forget(&mut self, item: &Item) {
        self.next.remove(item);
    }
}

/// What the watch remembers between passes: which items to leave alone for
/// a while. A poll that fails (a missing worktree, an unreadable file) is
/// retried from 5 s, doubling up to 5 minutes; a push that fails, from 30 s.
/// Each failed poll costs a lock, git and (for a new error) a history line.
#[derive(Debug)]
pub struct Schedule {
    polls: Backoff,
    pushes: Backoff,
}

const FIRST_POLL_RETRY: Duration = Duration::from_secs(5);
const FIRST_PUSH_RETRY: Duration = Duration::from_secs(30);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            polls: Backoff::new(FIRST_POLL_RETRY, LONGEST_RETRY),
            pushes: Backoff::new(FIRST_PUSH_RETRY, LONGEST_RETRY),
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

/// The push error of a finalized item whose deploy log is not on the remote.
fn push_pending(settings: &Settings, item: &Item) -> Option<String> {
    let paths = ItemPaths::new(&settings.repos_dir, &item.0, &item.1);
    Snapshot::load(&paths)
        .ok()
        .and_then(|snap| snap.finalized.flatten())
        .filter(|record| record.push_pending())
        .map(|record| {
            record
                .push_error
                .unwrap_or_else(|| "unknown error".to_owned())
        })
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
            Handled::Failed { error, .. } => {
                stats.errors += 1;
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
        }
        if !matches!(handled, Handled::Failed { .. }) {
            if let Some(failures) = self.polls.succeeded(item) {
                tracing::info!("watch: {name}: poll works again after {failures} failed attempts");
            }
            match push_pending(settings, item) {
                Some(error) => {
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
        }
        handled
    }

    /// A result of the item was written: whatever it waited for may be over.
    fn written(&mut self, item: &Item) {
        self.polls.forget(item);
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
    let items = store::list_items(&settings.repos_dir).map_err(|source| WatchError::List {
        path: settings.repos_dir.display().to_string(),
        source,
    })?;
    let mut handled = Vec::new();
    for item in items {
        let attempt = if due(settings, &item.0, &item.1) {
            schedule
                .polls
                .ready(&item, files_changed_at(settings, &item))
        } else {
            push_pending(settings, &item).is_some() && schedule.pushes.ready(&item, None)
        };
        if attempt {
            handled.push(schedule.poll(settings, &item, stats));
        }
    }
    Ok(handled)
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
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && written(&event.kind)
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(WatchError::Watcher)?;
    watcher
        .watch(&repos_dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError::Watch {
            path: repos_dir.display().to_string(),
            source,
        })?;
    let count = store::list_items(&repos_dir).map_or(0, |items| items.len());
    tracing::info!(
        "watch: started on {} ({count} work items, transport {}, rescan every {})",
        repos_dir.display(),
        settings.transport,
        humantime::format_duration(settings.watch_rescan)
    );

    let settings = std::sync::Arc::new(settings);
    let mut stats = Stats::default();
    let mut schedule = Schedule::default();
    let mut ticks = tokio::time::interval(settings.watch_rescan);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let work: Option<Vec<Item>> = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(path) = changed.recv() => {
                let mut items: Vec<_> = item_of(&repos_dir, &path).into_iter().collect();
                // Take every change already queued, once each.
                while let Ok(path) = changed.try_recv() {
                    if let Some(item) = item_of(&repos_dir, &path).filter(|i| !items.contains(i)) {
                        items.push(item);
                    }
                }
                Some(items)
            }
            _ = ticks.tick() => None,
        };
        let s = settings.clone();
        (stats, schedule) = tokio::task::spawn_blocking(move || {
            let mut stats = stats;
            let mut schedule = schedule;
            match work {
                Some(items) => {
                    for item in items {
                        schedule.written(&item);
                        if due(&s, &item.0, &item.1) {
                            schedule.poll(&s, &item, &mut stats);
                        }
                    }
                }
                None => {
                    if let Err(e) = rescan(&s, &mut stats, &mut schedule) {
                        stats.errors += 1;
                        tracing::warn!("watch: rescan failed: {}", with_causes(&e));
                    }
                }
            }
            (stats, schedule)
        })
        .await
        .map_err(WatchError::Task)?;
    }
    drop(watcher);
    tracing::info!(
        "watch: stopped (finalized {}, revoked {}, errors {})",
        stats.finalized,
        stats.revoked,
        stats.errors
    );
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

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("watch: SIGTERM"),
        _ = int.recv() => tracing::info!("watch: SIGINT"),
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
}
