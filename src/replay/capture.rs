//! `selfdeploy snapshot`: the live state of one work item as a fixture, so
//! that an incident becomes a regression case in one command.

use std::collections::BTreeMap;

use super::fixture::{Expect, Fixture};
use crate::config::{Settings, Source};
use crate::contract::names::{RepoName, WorkItem};
use crate::store::{self, ItemPaths, Snapshot};

/// Settings a replay sets itself: a captured value would only point at this
/// machine.
const NOT_CAPTURED: [&str; 1] = ["REPOS_DIR"];

/// A state file larger than this is not captured (it is no marker or result).
const CAPTURE_LIMIT: u64 = 1024 * 1024;

/// Why an item could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot read the history")]
    History(#[from] std::io::Error),
}

pub fn capture(
    settings: &Settings,
    repo: &RepoName,
    work_item: &WorkItem,
    now: std::time::SystemTime,
) -> Result<Fixture, CaptureError> {
    let paths = ItemPaths::new(&settings.repos_dir, repo, work_item);
    let snapshot = Snapshot::load(&paths)?;
    let mut files = BTreeMap::new();
    // Read as the engine reads state files: a symlink is never followed (its
    // target could be anything on this machine), a FIFO never waited on.
    for name in &snapshot.files {
        if let Ok(bytes) = store::read_regular(&paths.state_dir.join(name), CAPTURE_LIMIT) {
            files.insert(name.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    // A secret is recorded as `<redacted>`: fixtures are committed. A replay
    // of the fixture signs its history with that placeholder, which works.
    let captured: BTreeMap<String, String> = settings
        .resolved
        .iter()
        .filter(|r| r.source != Source::Default && !NOT_CAPTURED.contains(&r.name))
        .map(|r| (r.name.to_owned(), r.shown().to_owned()))
        .collect();
    Ok(Fixture {
        description: format!(
            "captured from {repo}/{work_item} at {}",
            crate::clock::rfc3339_seconds(now)
        ),
        settings: captured,
        repo: repo.to_string(),
        work_item: work_item.to_string(),
        clock: crate::clock::rfc3339_seconds(now),
        files,
        history: store::read_entries(&paths.history_file)?,
        initial: Some(Expect {
            state: snapshot.state.to_string(),
            files: Some(snapshot.files),
            ..Expect::default()
        }),
        steps: Vec::new(),
    })
}
