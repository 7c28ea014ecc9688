//! `selfdeploy snapshot`: the live state of one work item as a fixture, so
//! that an incident becomes a regression case in one command.

use std::collections::BTreeMap;
use std::fs;

use super::fixture::{Expect, Fixture};
use crate::config::{Settings, Source};
use crate::engine::Clock;
use crate::names::{RepoName, WorkItem};
use crate::store::{self, ItemPaths, Snapshot};

/// Settings a replay sets itself: a captured value would only point at this
/// machine.
const NOT_CAPTURED: [&str; 1] = ["REPOS_DIR"];

pub fn capture(
    settings: &Settings,
    repo: &RepoName,
    work_item: &WorkItem,
    clock: &dyn Clock,
) -> anyhow::Result<Fixture> {
    let paths = ItemPaths::new(&settings.repos_dir, repo, work_item);
    let snapshot = Snapshot::load(&paths)?;
    let mut files = BTreeMap::new();
    for name in &snapshot.files {
        let path = paths.state_dir.join(name);
        if path.is_file() {
            let bytes = fs::read(&path)?;
            files.insert(name.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let captured: BTreeMap<String, String> = settings
        .resolved
        .iter()
        .filter(|r| r.source != Source::Default && !NOT_CAPTURED.contains(&r.name))
        .map(|r| (r.name.to_owned(), r.value.clone()))
        .collect();
    Ok(Fixture {
        description: format!("captured from {repo}/{work_item} at {}", clock.now()),
        settings: captured,
        repo: repo.to_string(),
        work_item: work_item.to_string(),
        clock: clock.now(),
        files,
        history: store::read_history(&paths.history_file)?,
        initial: Some(Expect {
            state: snapshot.state.to_string(),
            files: Some(snapshot.files),
            ..Expect::default()
        }),
        steps: Vec::new(),
    })
}
