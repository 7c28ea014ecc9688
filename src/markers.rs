//! The sentinel files of a work item's state directory and what we write in
//! them. Only the presence of `approve-requested` and `initiated` is a
//! contract; their content is ours. Content written by another engine (the
//! original wrote none) is tolerated: it reads as "unknown". Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Transport;
use crate::hook_result::Verdict;

/// A sentinel file the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Marker {
    #[serde(rename = "approve-requested")]
    ApproveRequested,
    #[serde(rename = "initiated")]
    Initiated,
    #[serde(rename = "finalized")]
    Finalized,
}

impl Marker {
    pub const ALL: [Marker; 3] = [
        Marker::ApproveRequested,
        Marker::Initiated,
        Marker::Finalized,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Marker::ApproveRequested => "approve-requested",
            Marker::Initiated => "initiated",
            Marker::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// Content of `approve-requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveRecord {
    pub requested_by: String,
    pub requested_at: String,
}

/// Whether ssh is known to have launched the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// Written before ssh runs; still there after a crash mid-dispatch.
    Pending,
    Confirmed,
}

/// Content of `initiated`: enough that a later poll needs only the repo and
/// the work item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiatedRecord {
    pub approved_by: String,
    pub approved_at: String,
    pub branch: Option<String>,
    pub worktree: String,
    pub revision: Option<String>,
    pub transport: Transport,
    pub dispatch: Dispatch,
    pub argv: Vec<String>,
}

/// Content of `finalized`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedRecord {
    pub deploy_status: Verdict,
    pub hook_exit_code: String,
    pub finalized_at: String,
    pub finalized_by: String,
}

/// Serializes a record as one line of JSON (what the markers hold).
pub fn encode<T: Serialize>(record: &T) -> String {
    let mut line = serde_json::to_string(record).expect("records serialize");
    line.push('\n');
    line
}

/// Parses a marker's content; `None` when it is not ours (empty, or written by
/// another engine).
pub fn decode<T: for<'de> Deserialize<'de>>(content: &[u8]) -> Option<T> {
    serde_json::from_slice(content).ok()
}
