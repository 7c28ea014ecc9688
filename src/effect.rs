//! Effects: what the machine asks the executor to do, as data. The machine
//! never performs them; the executor does, and the results that matter to the
//! machine come back to it as events ([`crate::machine::Event`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::contract::markers::{FinalizedRecord, Marker};
use crate::transport::Transport;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Write a sentinel file of the work item's state directory, atomically.
    WriteMarker { marker: Marker, content: String },
    /// Remove a sentinel file (durably).
    RemoveMarker { marker: Marker },
    /// Write the dispatch ticket `dispatch-<id>` durably, before the launch.
    WriteTicket { dispatch_id: String },
    /// Revoke dispatch `<id>`: rename its ticket to `revoked-<id>` unless the
    /// host claimed it first. What the rename found is fed back to the machine.
    RevokeTicket {
        dispatch_id: String,
        reason: RevokeReason,
        /// Why, for the report (the launch's error, the age of the ticket).
        detail: String,
    },
    /// Write the deploy log into the worktree, atomically. Not best effort.
    WriteDeployLog {
        worktree: PathBuf,
        path: PathBuf,
        content: String,
    },
    /// `git add`, `git commit`, `git push` of the deploy log. Best effort.
    GitPublish {
        worktree: PathBuf,
        path: PathBuf,
        message: String,
        branch: Option<String>,
        /// The `finalized` record to rewrite with the push's outcome (none:
        /// nothing to record, e.g. an item the original engine finalized).
        #[serde(skip)]
        record: Option<FinalizedRecord>,
    },
    /// Stamp `merged_to_main` into the deploy log's frontmatter.
    StampMerged {
        worktree: PathBuf,
        path: PathBuf,
        merged: bool,
    },
    /// Remove the work item's whole state directory.
    RemoveStateDir,
    /// Launch the detached hook through the transport: shown as
    /// `{"kind": "<transport>", "argv": [...]}` (`"ssh"` in production).
    #[serde(untagged)]
    Launch(Launch),
}

/// The launch of a dispatch: the argv the transport built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub transport: Transport,
    pub argv: Vec<String>,
}

impl Serialize for Launch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("kind", self.transport.name())?;
        map.serialize_entry("argv", &self.argv)?;
        map.end()
    }
}

/// Why a ticket is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The launch reported a failure (ssh's exit, a timeout).
    LaunchFailed,
    /// Nobody claimed the ticket within the claim timeout (or the result
    /// deadline): the engine stopped mid-dispatch, or the wrapper never ran.
    Unclaimed,
    /// `reset --force`: the item is about to be removed.
    Reset,
}

impl Effect {
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::WriteMarker { .. } => "write_marker",
            Effect::RemoveMarker { .. } => "remove_marker",
            Effect::WriteTicket { .. } => "write_ticket",
            Effect::RevokeTicket { .. } => "revoke_ticket",
            Effect::Launch(launch) => launch.transport.name(),
            Effect::WriteDeployLog { .. } => "write_deploy_log",
            Effect::GitPublish { .. } => "git_publish",
            Effect::StampMerged { .. } => "stamp_merged",
            Effect::RemoveStateDir => "remove_state_dir",
        }
    }
}

/// One line for humans.
pub fn describe(effect: &Effect) -> String {
    match effect {
        Effect::WriteMarker { marker, .. } => format!("write {marker}"),
        Effect::RemoveMarker { marker } => format!("remove {marker}"),
        Effect::WriteTicket { dispatch_id } => format!("write ticket dispatch-{dispatch_id}"),
        Effect::RevokeTicket {
            dispatch_id,
            detail,
            ..
        } => format!("revoke ticket dispatch-{dispatch_id} ({detail})"),
        Effect::Launch(Launch { argv, .. }) => format!("{} {}", effect.kind(), argv.join(" ")),
        Effect::WriteDeployLog { path, .. } => format!("write deploy log {}", path.display()),
        Effect::GitPublish { path, branch, .. } => format!(
            "git add/commit/push {} ({})",
            path.display(),
            branch.as_deref().unwrap_or("current branch")
        ),
        Effect::StampMerged { path, merged, .. } => {
            format!("stamp merged_to_main: {merged} into {}", path.display())
        }
        Effect::RemoveStateDir => "remove the state directory".to_owned(),
    }
}
