//! The history of a work item: append-only JSON lines that survive reset.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: String,
    pub actor: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub outcome: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub effects: Vec<String>,
}

pub fn append_history(path: &Path, entry: &HistoryEntry) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        atomic::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_string(entry).map_err(io::Error::other)?;
    line.push('\n');
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// The entries, oldest first. A line that does not parse is an error naming
/// the line: history is evidence and is never silently skipped.
pub fn read_history(path: &Path) -> io::Result<Vec<HistoryEntry>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| io::Error::other(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}
