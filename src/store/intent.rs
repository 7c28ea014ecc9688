//! The intent: what an event is about to do, written durably before its
//! first effect, so that its history entry cannot be lost whatever kills the
//! process (kill -9, a full disk at the append). The next event on the item,
//! or the watch, reconciles it into the history under the item's lock.
//!
//! `<REPOS_DIR>/.selfdeploy/pending/<repo>/<item>.json` holds one JSON
//! object; the directory holds nothing else, so the watch lists what is
//! pending in one look, even for an item whose state directory is gone. Written before the first effect it says who started which
//! event from which state, and what it planned (`finished: false`: what it
//! did is read back from the state directory). When the event finished but
//! its entry could not be appended, it is rewritten with that entry
//! (`finished: true`), if the disk allows.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HistoryEntry;
use crate::atomic;
use crate::config::{Durability, Secret};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The entry as far as it is known: `to`, `outcome` and `reason` are
    /// the event's own once `finished`, else the state it started from
    /// and `pending`.
    pub entry: HistoryEntry,
    /// The event ran to its end; only the append of its entry failed.
    pub finished: bool,
    /// The dispatch the event was about to make, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
    /// Where the event's entry will begin in the history (its length up
    /// to the last whole line when the intent was written): an entry found
    /// there is this event's, already appended, so it is never written twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_len: Option<u64>,
    /// With HISTORY_HMAC_KEY: the HMAC of the intent under it, so that a
    /// record planted by whoever can write the directory is never signed
    /// into the history as an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Intent {
    /// The MAC binds the intent to its item (`<repo>/<item>`): a sealed
    /// intent copied to another item is not that item's.
    fn hmac_under(&self, key: &Secret, item: &str) -> io::Result<hmac::Hmac<sha2::Sha256>> {
        use hmac::Mac as _;
        let unsealed = Intent {
            mac: None,
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&unsealed).map_err(io::Error::other)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes())
            .map_err(io::Error::other)?;
        mac.update(b"selfdeploy intent\n");
        mac.update(item.as_bytes());
        mac.update(b"\n");
        mac.update(&bytes);
        Ok(mac)
    }

    /// Signs the intent under `key`, when there is one.
    pub fn sealed(mut self, key: Option<&Secret>, item: &str) -> io::Result<Intent> {
        use hmac::Mac as _;
        self.mac = match key {
            Some(key) => Some(hex::encode(
                self.hmac_under(key, item)?.finalize().into_bytes(),
            )),
            None => None,
        };
        Ok(self)
    }

    /// Whether a holder of one of `keys` wrote the intent (always, with no
    /// key: nothing is tamper-evident then). Compared in constant time.
    pub fn authentic(&self, keys: &[&Secret], item: &str) -> bool {
        use hmac::Mac as _;
        if keys.is_empty() {
            return true;
        }
        let Some(mac) = self.mac.as_deref().and_then(|m| hex::decode(m).ok()) else {
            return false;
        };
        keys.iter().any(|key| {
            self.hmac_under(key, item)
                .is_ok_and(|expected| expected.verify_slice(&mac).is_ok())
        })
    }
}

/// The intent of the item whose history is `history`
/// (`.selfdeploy/history/<repo>/<item>.jsonl`):
/// `.selfdeploy/pending/<repo>/<item>.json`.
pub fn intent_path(history: &Path) -> PathBuf {
    let repo_dir = history.parent().unwrap_or(Path::new(""));
    let own = repo_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let mut name = history.file_stem().unwrap_or_default().to_owned();
    name.push(".json");
    own.join(PENDING_DIR)
        .join(repo_dir.file_name().unwrap_or_default())
        .join(name)
}

/// The directory of pending intents, beside `history` under `.selfdeploy`.
pub const PENDING_DIR: &str = "pending";

/// Every item with a pending intent under `own` (`<REPOS_DIR>/.selfdeploy`),
/// as raw (repo, work item) names.
pub fn pending_intents(own: &Path) -> io::Result<Vec<(String, String)>> {
    let dir = own.join(PENDING_DIR);
    let repos = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for repo in repos {
        let repo = repo?;
        if !repo.file_type()?.is_dir() {
            continue;
        }
        for item in std::fs::read_dir(repo.path())? {
            let name = item?.file_name();
            if let (Some(repo), Some(item)) = (
                repo.file_name().to_str(),
                name.to_str().and_then(|n| n.strip_suffix(".json")),
            ) {
                found.push((repo.to_owned(), item.to_owned()));
            }
        }
    }
    Ok(found)
}

/// Writes the intent durably (temp file, fsync, rename, directory fsync).
pub fn write_intent(history: &Path, intent: &Intent, durability: Durability) -> io::Result<()> {
    if let Some(dir) = intent_path(history).parent() {
        atomic::create_dir_all_with(dir, durability)?;
    }
    let mut text = serde_json::to_string(intent).map_err(io::Error::other)?;
    text.push('\n');
    atomic::write_with(&intent_path(history), text.as_bytes(), durability)
}

/// The pending intent, if any: `Err(shown)` when the file is there but is
/// not an intent (it is reconciled as an unknown event all the same).
pub fn read_intent(history: &Path) -> io::Result<Option<Result<Intent, String>>> {
    let path = intent_path(history);
    let mut file = match super::open_regular(&path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.by_ref().take(1024 * 1024).read_to_end(&mut bytes)?;
    Ok(Some(serde_json::from_slice(&bytes).map_err(|_| {
        String::from_utf8_lossy(&bytes).chars().take(120).collect()
    })))
}

/// Whether an intent is pending (one `stat`, for the watch's looks).
pub fn intent_pending(history: &Path) -> bool {
    std::fs::symlink_metadata(intent_path(history)).is_ok()
}

/// Removes the intent once its entry is in the history.
pub fn clear_intent(history: &Path, durability: Durability) -> io::Result<()> {
    atomic::remove_with(&intent_path(history), durability)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> HistoryEntry {
        HistoryEntry {
            time: "2026-01-01T00:00:00Z".into(),
            actor: "alice".into(),
            event: "approved".into(),
            from: "approve_requested".into(),
            to: "approve_requested".into(),
            outcome: "pending".into(),
            reason: None,
            effects: vec!["write_marker".into(), "ssh".into()],
        }
    }

    #[test]
    fn an_intent_round_trips_and_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let history = dir.path().join("h/orchestrator/W-1.jsonl");
        assert_eq!(read_intent(&history).unwrap(), None);
        assert!(!intent_pending(&history));
        let intent = Intent {
            entry: entry(),
            finished: false,
            dispatch_id: Some("00000000000000aa".into()),
            history_len: Some(0),
            mac: None,
        };
        write_intent(&history, &intent, Durability::Synced).unwrap();
        assert!(intent_pending(&history));
        assert_eq!(read_intent(&history).unwrap(), Some(Ok(intent)));
        clear_intent(&history, Durability::Synced).unwrap();
        assert_eq!(read_intent(&history).unwrap(), None);
        clear_intent(&history, Durability::Synced).unwrap();
    }

    #[test]
    fn a_damaged_intent_is_shown_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let history = dir.path().join("history/orchestrator/W-1.jsonl");
        std::fs::create_dir_all(intent_path(&history).parent().unwrap()).unwrap();
        assert!(intent_path(&history).ends_with("pending/orchestrator/W-1.json"));
        std::fs::write(intent_path(&history), b"{\"entry\": tor").unwrap();
        assert_eq!(
            read_intent(&history).unwrap(),
            Some(Err("{\"entry\": tor".to_owned()))
        );
        std::fs::remove_file(intent_path(&history)).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "{}").unwrap();
        std::os::unix::fs::symlink(&elsewhere, intent_path(&history)).unwrap();
        assert!(
            read_intent(&history).is_err(),
            "a symlink is never followed"
        );
    }
}
