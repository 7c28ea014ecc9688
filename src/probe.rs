//! Reading facts from the world outside the state directory, before the
//! machine decides: the clock, whether a program is installed, the worktree,
//! the branch tip, a fresh dispatch id. One interface, so that a replay or a
//! table derivation answers from data and the machine sees the same facts.
//! Performing effects is the other interface (`crate::exec::Perform`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::clock::BootClock;
use crate::config::Settings;
use crate::contract::markers;
use crate::contract::names::RepoName;
use crate::exec::{git, process};

pub trait Probe {
    /// The time now (an input: replays inject their own).
    fn now(&mut self) -> SystemTime;

    /// The boot clock now: the boot id and `CLOCK_BOOTTIME` (`None` where
    /// they cannot be read). Read together with [`Probe::now`].
    fn boot_clock(&mut self) -> Option<BootClock>;

    /// The time the kernel gave a file when it was last written (`None`
    /// when it cannot be read); never follows a symlink.
    fn modified(&mut self, path: &Path) -> Option<SystemTime>;

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

    /// The deploy freeze on `repo` (`selfdeploy lock`), `None` when it is
    /// not locked, `Err(why)` when the freeze cannot be read.
    fn freeze(
        &mut self,
        settings: &Settings,
        repo: &RepoName,
    ) -> Result<Option<crate::machine::Freeze>, String>;
}

/// The real world: the system clock, `PATH`, git, the OS random source.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostProbe;

impl Probe for HostProbe {
    fn now(&mut self) -> SystemTime {
        SystemTime::now()
    }

    fn boot_clock(&mut self) -> Option<BootClock> {
        boot_clock()
    }

    fn modified(&mut self, path: &Path) -> Option<SystemTime> {
        modified(path)
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

    fn freeze(
        &mut self,
        settings: &Settings,
        repo: &RepoName,
    ) -> Result<Option<crate::machine::Freeze>, String> {
        crate::store::freeze::read(&settings.repos_dir, repo)
    }

    fn new_dispatch_id(&mut self) -> Result<String, String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes from the OS: {e}"))?;
        Ok(markers::dispatch_id_from(bytes))
    }
}

/// Where the kernel tells its boot id, new at every boot.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// The boot clock of this machine now: the boot id and `CLOCK_BOOTTIME`
/// (which a change of the wall clock does not step, and which counts time
/// spent suspended). `None` when either cannot be read.
pub fn boot_clock() -> Option<BootClock> {
    let boot_id = std::fs::read_to_string(BOOT_ID_FILE).ok()?;
    let boot_id = boot_id.trim();
    if boot_id.is_empty() {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    Some(BootClock {
        boot_id: boot_id.to_owned(),
        since_boot: Duration::new(secs, nanos),
    })
}

/// The modification time of `path` as the kernel set it, without following
/// a symlink.
pub fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(path).ok()?.modified().ok()
}
