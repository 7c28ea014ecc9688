//! The fixture format: a recorded situation and what must happen next.
//!
//! ```ron
//! (
//!     description: "the host finishes while no engine runs",
//!     work_item: "ORCH-1",
//!     clock: "2026-01-01T00:00:00Z",
//!     files: {"initiated": ""},
//!     steps: [
//!         (act: HostWritesResult("0\n"), expect: (state: "initiated")),
//!         (act: Event(event: "poll", worktree: Some("/wt")),
//!          expect: (state: "finalized_success", outcome: Some("transitioned"),
//!                   effects: Some(["write_deploy_log", "git_publish", "write_marker"]))),
//!     ],
//! )
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::HistoryEntry;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub description: String,
    /// Settings that differ from the production defaults.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default = "default_repo")]
    pub repo: String,
    pub work_item: String,
    /// The time when the fixture starts (RFC 3339).
    pub clock: String,
    /// The files of the work item's state directory, by name.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// What the initial files must read as, before any step.
    #[serde(default)]
    pub initial: Option<Expect>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

fn default_repo() -> String {
    crate::config::SELF_HOSTING_REPO.to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub act: Act,
    pub expect: Expect,
}

/// One step: an event, or something the world outside the engine does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    /// The stage engine delivers an event.
    Event(EventStep),
    /// The host wrapper finishes and writes its result with this content:
    /// `result-<id>` of the last dispatch it claimed in this replay, or the
    /// legacy `result` (the original's wrapper) when it claimed none.
    HostWritesResult(String),
    /// The host wrapper of the last dispatch starts: it claims the ticket by
    /// renaming `dispatch-<id>` to `claimed-<id>`, or finds it gone and stops.
    HostClaims,
    /// A late result of the `dispatch`-th dispatch of this replay (1 for the
    /// first): `result-<id>` with this content, in whatever directory is there.
    LateResult { dispatch: usize, content: String },
    /// The engine dies after performing `after` effects of this event.
    Crash { after: usize, event: EventStep },
    /// The clock moves on by this many seconds: the wall clock and the boot
    /// clock alike.
    TimePasses(u64),
    /// The wall clock is set this many seconds forward (back when negative),
    /// as NTP or an operator would step it; no time passes, and the boot
    /// clock does not move.
    ClockSteps(i64),
    /// The machine restarts: a new boot id, its boot clock starts again;
    /// the wall clock keeps its time.
    Reboot,
    /// Another process holds the work item's lock during this event.
    LockHeld(EventStep),
}

/// `EventStep { event: "poll".into(), ..EventStep::default() }`: the event
/// alone, the world as production defaults it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventStep {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// The dispatch fails with this error (ssh's exit, a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_fails: Option<String>,
    /// The host claims the ticket while the launch is still running (with
    /// `dispatch_fails`: ssh ran the command, then reported a failure), or,
    /// on a poll, just before the poll's revoke renames it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_claims: bool,
    /// The commit or push of the deploy log fails (the remote is unreachable).
    #[serde(default, skip_serializing_if = "is_false")]
    pub push_fails: bool,
    /// The worktree is not a git work tree (the worktree guard says no).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_worktree: bool,
    /// The ref the worktree's HEAD names (`refs/heads/other`, or `""` for
    /// a detached HEAD); none: the step's branch (the branch guard passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// What `git rev-parse` finds in the worktree; none: no commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_tip: Option<String>,
    /// The repo is locked by an operator (`selfdeploy lock`) with this
    /// message, by `frozen-by` since the fixture's clock (the freeze guard
    /// says no); `""` stands for a freeze file that cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    /// The transport's program (ssh or bash) is not installed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_transport_program: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What must be true after a step. Fields left out are not checked, except
/// that an event step must state its outcome and effects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Vec<String>>,
    /// The dispatch argv, when the step dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A part of the error the event ended with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The names of the files in the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

fn ron_options() -> ron::Options {
    ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Parses a fixture; the error names the line and column.
pub fn parse(text: &str) -> Result<Fixture, String> {
    ron_options().from_str(text).map_err(|e| e.to_string())
}

/// The fixture as RON text; an error when RON cannot write it.
pub fn to_ron(fixture: &Fixture) -> Result<String, String> {
    let pretty = ron::ser::PrettyConfig::new()
        .depth_limit(4)
        .struct_names(false)
        .extensions(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);
    let mut text = ron_options()
        .to_string_pretty(fixture, pretty)
        .map_err(|e| format!("the fixture cannot be written as RON: {e}"))?;
    text.push('\n');
    Ok(text)
}
