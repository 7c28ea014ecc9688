//! `selfdeploy watch`: a long-running finalizer for installs where the stage
//! engine does not poll. It watches REPOS_DIR for `result` files (inotify,
//! through `notify`) and rescans periodically as a safety net for missed
//! events and network filesystems; each due item gets an ordinary `poll`
//! through the engine, under the same per-item lock as every other caller.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    pub errors: usize,
}

/// The work item a changed path belongs to, if it is a `result` file.
fn item_of(repos_dir: &Path, path: &Path) -> Option<(RepoName, WorkItem)> {
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

/// Polls one item (blocking: git and the lock).
fn finalize(settings: &Settings, repo: RepoName, work_item: WorkItem, stats: &mut Stats) {
    let request = Request {
        repo,
        work_item,
        event: EventName::Poll,
        branch: None,
        worktree: None,
        revision: None,
        merged: None,
        force: false,
        actor: "watch".to_owned(),
    };
    match engine::handle(
        settings,
        &request,
        &mut HostProbe,
        &mut HostPerformer { settings },
    ) {
        Ok(report) => {
            if matches!(
                report.to,
                StateName::FinalizedSuccess | StateName::FinalizedFailed
            ) && report.to != report.from
            {
                stats.finalized += 1;
            }
            tracing::info!(repo = %report.repo, work_item = %report.work_item, to = %report.to,
                outcome = %report.outcome, notes = ?report.notes, "watch: polled");
        }
        Err(e) => {
            stats.errors += 1;
            tracing::warn!(repo = %request.repo, work_item = %request.work_item, error = %e, "watch: poll failed");
        }
    }
}

/// Finalized items whose push is pending, and when to retry each: a poll
/// retries the push, and each retry appends to the history, so an
/// unreachable remote is retried at growing intervals (30 s doubling up to
/// 5 minutes) rather than at every rescan.
#[derive(Debug, Default)]
pub struct PushRetries {
    next: HashMap<(RepoName, WorkItem), (Instant, Duration)>,
}

const FIRST_PUSH_RETRY: Duration = Duration::from_secs(30);
const LONGEST_PUSH_RETRY: Duration = Duration::from_secs(300);

impl PushRetries {
    fn ready(&self, item: &(RepoName, WorkItem)) -> bool {
        self.next
            .get(item)
            .is_none_or(|(at, _)| Instant::now() >= *at)
    }

    fn after(&mut self, item: (RepoName, WorkItem), still_pending: bool) {
        if !still_pending {
            self.next.remove(&item);
            return;
        }
        let delay = self
            .next
            .get(&item)
            .map_or(FIRST_PUSH_RETRY, |(_, d)| (*d * 2).min(LONGEST_PUSH_RETRY));
        self.next.insert(item, (Instant::now() + delay, delay));
    }
}

/// Whether the item is finalized with its push still pending.
fn push_pending(settings: &Settings, repo: &RepoName, work_item: &WorkItem) -> bool {
    let paths = ItemPaths::new(&settings.repos_dir, repo, work_item);
    Snapshot::load(&paths)
        .ok()
        .and_then(|snap| snap.finalized.flatten())
        .is_some_and(|record| record.push_pending())
}

/// Every due item under REPOS_DIR, polled once; a pending push is retried
/// when its backoff allows.
pub fn rescan(
    settings: &Settings,
    stats: &mut Stats,
    retries: &mut PushRetries,
) -> Result<(), WatchError> {
    let items = store::list_items(&settings.repos_dir).map_err(|source| WatchError::List {
        path: settings.repos_dir.display().to_string(),
        source,
    })?;
    for (repo, work_item) in items {
        let attempt = due(settings, &repo, &work_item)
            || push_pending(settings, &repo, &work_item)
                && retries.ready(&(repo.clone(), work_item.clone()));
        if attempt {
            finalize(settings, repo.clone(), work_item.clone(), stats);
            let pending = push_pending(settings, &repo, &work_item);
            retries.after((repo, work_item), pending);
        }
    }
    Ok(())
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
        if let Ok(event) = event {
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
    tracing::info!(repos_dir = %repos_dir.display(), rescan = ?settings.watch_rescan, "watch: started");

    let settings = std::sync::Arc::new(settings);
    let mut stats = Stats::default();
    let mut retries = PushRetries::default();
    let mut ticks = tokio::time::interval(settings.watch_rescan);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let work: Option<Vec<(RepoName, WorkItem)>> = tokio::select! {
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
        (stats, retries) = tokio::task::spawn_blocking(move || {
            let mut stats = stats;
            let mut retries = retries;
            match work {
                Some(items) => {
                    for (repo, work_item) in items {
                        if due(&s, &repo, &work_item) {
                            finalize(&s, repo, work_item, &mut stats);
                        }
                    }
                }
                None => {
                    if let Err(e) = rescan(&s, &mut stats, &mut retries) {
                        stats.errors += 1;
                        tracing::warn!(error = %format!("{e:#}"), "watch: rescan failed");
                    }
                }
            }
            (stats, retries)
        })
        .await
        .map_err(WatchError::Task)?;
    }
    drop(watcher);
    tracing::info!(
        finalized = stats.finalized,
        errors = stats.errors,
        "watch: stopped"
    );
    Ok(stats)
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
