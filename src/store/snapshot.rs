//! Reading a work item's state directory and deriving its state (contract
//! sections 4 and 9).

use std::fs::{self, File};
use std::io::{self, Read};

use serde::Serialize;

use super::ItemPaths;
use crate::atomic::TEMP_PREFIX;
use crate::hook_result::{self, HookExit, Verdict};
use crate::machine::StateName;
use crate::markers::{self, ApproveRecord, FinalizedRecord, InitiatedRecord, Marker};

/// Read at most this much of `result`; anything longer is not an exit code
/// (blank padding included, the original reads it whole).
const RESULT_READ_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {0} exists but is not a directory; move it away, then retry")]
    NotADirectory(String),
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: io::Error },
}

/// `initiated` as found: its record when we wrote it, `None` when its content
/// is not ours (the original engine wrote it, or it is damaged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitiatedMarker {
    pub record: Option<InitiatedRecord>,
}

/// Everything on disk about one work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub state: StateName,
    /// Names of the files in the state directory, sorted.
    pub files: Vec<String>,
    pub approve: Option<Option<ApproveRecord>>,
    pub initiated: Option<InitiatedMarker>,
    pub finalized: Option<Option<FinalizedRecord>>,
    pub result: Option<HookExit>,
    /// `result` exists but cannot be read (why). Only a poll needs it: the
    /// other events, reset above all, must still work.
    pub result_unreadable: Option<String>,
}

impl Snapshot {
    pub fn load(paths: &ItemPaths) -> Result<Snapshot, StoreError> {
        let dir = &paths.state_dir;
        let io = |path: &std::path::Path, error| StoreError::Io {
            path: path.display().to_string(),
            error,
        };
        let mut files = Vec::new();
        match fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry.map_err(|e| io(dir, e))?.file_name();
                    let name = name.to_string_lossy().into_owned();
                    if !name.starts_with(TEMP_PREFIX) {
                        files.push(name);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if dir.exists() && !dir.is_dir() => {
                return Err(StoreError::NotADirectory(dir.display().to_string()));
            }
            Err(e) => return Err(io(dir, e)),
        }
        files.sort();

        let read_marker = |marker: Marker| -> Result<Option<Vec<u8>>, StoreError> {
            let path = paths.marker(marker);
            if !path.is_file() {
                return Ok(None);
            }
            fs::read(&path).map(Some).map_err(|e| io(&path, e))
        };
        let approve = read_marker(Marker::ApproveRequested)?.map(|c| markers::decode(&c));
        let initiated = read_marker(Marker::Initiated)?.map(|c| InitiatedMarker {
            record: markers::decode(&c),
        });
        // A finalized marker we cannot read still means finalized: fail closed.
        let finalized: Option<Option<FinalizedRecord>> =
            read_marker(Marker::Finalized)?.map(|c| markers::decode(&c));
        let (result, result_unreadable) = match read_result(paths) {
            Ok(result) => (result, None),
            Err(e) => (None, Some(e.to_string())),
        };

        let state = if let Some(record) = &finalized {
            match record.as_ref().map(|r| r.deploy_status) {
                Some(Verdict::Success) => StateName::FinalizedSuccess,
                _ => StateName::FinalizedFailed,
            }
        } else if initiated.is_some() || result.is_some() || result_unreadable.is_some() {
            StateName::Initiated
        } else if approve.is_some() {
            StateName::ApproveRequested
        } else {
            StateName::Idle
        };
        Ok(Snapshot {
            state,
            files,
            approve,
            initiated,
            finalized,
            result,
            result_unreadable,
        })
    }
}

fn read_result(paths: &ItemPaths) -> Result<Option<HookExit>, StoreError> {
    let path = paths.result_file();
    let io = |error| StoreError::Io {
        path: path.display().to_string(),
        error,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(io::Error::other("it is a directory")));
    }
    if meta.len() > RESULT_READ_LIMIT {
        return Ok(Some(HookExit {
            code: "1".into(),
            garbage: Some(format!("<{} bytes>", meta.len())),
        }));
    }
    let mut raw = Vec::new();
    file.take(RESULT_READ_LIMIT)
        .read_to_end(&mut raw)
        .map_err(io)?;
    Ok(hook_result::parse_result(&raw))
}
