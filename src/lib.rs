//! selfdeploy: a persisted finite-state machine that deploys a service which
//! cannot restart itself, with a human approval in the loop.
//!
//! # The library
//!
//! A Rust stage engine drives a work item's machine one event at a time, as
//! the `selfdeploy event` command does: build the [`Settings`], a
//! [`Request`], and hand it to [`handle`] with the real world to read facts
//! from ([`HostProbe`]) and to perform effects in ([`HostPerformer`]; a dry
//! run is [`RecordingPerformer`]). The [`Report`] says what became of it.
//!
//! ```
//! use selfdeploy::{handle, EventName, HostPerformer, HostProbe, RepoName, Request, Settings,
//!     StateName, WorkItem};
//!
//! let dir = tempfile::tempdir()?;
//! let repos = dir.path().to_str().unwrap();
//! let settings = Settings::with_overrides(&[("REPOS_DIR", repos), ("HOST_REPOS_DIR", repos)])?;
//! // Once per state directory (`selfdeploy init`): its identity.
//! selfdeploy::store::identity::init(dir.path(), "stage-engine", "2026-12-05T00:00:00Z")?;
//! let request = Request {
//!     repo: RepoName::new("orchestrator")?,
//!     work_item: WorkItem::new("ORCH-7")?,
//!     event: EventName::RequestApprove,
//!     branch: None,
//!     worktree: None,
//!     revision: None,
//!     merged: None,
//!     force: false,
//!     actor: "stage-engine".into(),
//! };
//! let report = handle(&settings, &request, &mut HostProbe, &mut HostPerformer { settings: &settings })?;
//! assert_eq!(report.to, StateName::ApproveRequested);
//! assert!(dir.path().join(".deploy-state-orchestrator/ORCH-7/approve-requested").is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The machine's transition table ([`table::derive`]) and the fixture
//! replays ([`replay`]) are part of the API too. The other public modules
//! serve the `selfdeploy` binary and the test suite; `docs/ARCHITECTURE.md`
//! maps them.

// No panic in shipped code: an I/O path returns an error; a call that cannot
// fail says why, with an `#[allow]` on the smallest item
// (tests/it/purity.rs checks that this stays).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented,
        clippy::unreachable
    )
)]

pub use config::Settings;
pub use contract::names::{BranchName, RepoName, WorkItem};
pub use engine::{EngineError, Report, Request, handle};
pub use exec::{HostPerformer, Perform, RecordingPerformer};
pub use machine::{EventName, Outcome, StateName};
pub use probe::{HostProbe, Probe};

mod atomic;
pub mod config;
pub mod contract;
#[doc(hidden)]
pub mod demo;
#[doc(hidden)]
pub mod doctor;
pub mod effect;
pub mod engine;
pub mod exec;
#[doc(hidden)]
pub mod interrupt;
mod load_settings;
pub mod machine;
pub mod probe;
pub mod replay;
#[doc(hidden)]
pub mod secrets;
pub mod store;
pub mod table;
#[doc(hidden)]
pub mod text_table;
pub mod transport;
#[doc(hidden)]
pub mod watch;
