//! Reading facts from the world outside the state directory, before the
//! machine decides: the clock, whether a program is installed, the worktree,
//! the branch tip, a fresh dispatch id. One interface, so that a replay or a
//! table derivation answers from data and the machine sees the same facts.
//! Performing effects is the other interface (`crate::exec::Perform`).

use std::path::Path;
use std::time::SystemTime;

use crate::config::Settings;
use crate::contract::markers;
use crate::exec::{git, process};

pub trait Probe {
    /// The time now (an input: replays inject their own).
    fn now(&mut self) -> SystemTime;

    /// Whether the transport's program is installed (`Err(why)` if not).
    fn program(&mut self, program: &str) -> Result<(), String>;

    /// Whether the worktree exists and is a git work tree (`Err(why)` if not).
    fn work_tree(&mut self, settings: &Settings, worktree: &Path) -> Result<(), String>;

    /// The ref the worktree's HEAD names (`refs/heads/<branch>`; `Err(why)`
    /// when detached or unreadable).
    fn head_ref(&mut self, settings: &Settings, worktree: &Path) -> Result<String, String>;

    /// The commit at the tip of `branch` (or HEAD) in the worktree.
    fn branch_tip(
        &mut self,
        settings: &Settings,
        worktree: &Path,
        branch: Option<&str>,
    ) -> Result<String, String>;

    /// A fresh dispatch id.
    fn new_dispatch_id(&mut self) -> Result<String, String>;
}

/// The real world: the system clock, `PATH`, git, the OS random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostProbe;

impl Probe for HostProbe {
    fn now(&mut self) -> SystemTime {
        SystemTime::now()
    }

    fn program(&mut self, program: &str) -> Result<(), String> {
        process::find(program)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn work_tree(&mut self, settings: &Settings, worktree: &Path) -> Result<(), String> {
        git::work_tree(settings, worktree)
    }

    fn head_ref(&mut self, settings: &Settings, worktree: &Path) -> Result<String, String> {
        git::head_ref(settings, worktree)
    }

    fn branch_tip(
        &mut self,
        settings: &Settings,
        worktree: &Path,
        branch: Option<&str>,
    ) -> Result<String, String> {
        git::branch_tip(settings, worktree, branch)
    }

    fn new_dispatch_id(&mut self) -> Result<String, String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes from the OS: {e}"))?;
        Ok(markers::dispatch_id_from(bytes))
    }
}
