//! The seam between the machine and the way the detached hook is launched.
//! A transport owns its program, the argv that launches the remote command,
//! where a doctor probe runs, and the settings it needs. Pure: launching is
//! the performer's (`crate::exec`), which runs the argv a transport built.
//!
//! Adding a transport: a file implementing [`Launcher`] beside `ssh.rs` and
//! `local.rs`, and one line in [`TRANSPORTS`].

mod local;
mod ssh;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Settings;

/// What a transport knows.
pub trait Launcher: Sync {
    /// The setting's value (`SELF_DEPLOY_TRANSPORT`) and the launch effect's
    /// kind in reports.
    fn name(&self) -> &'static str;

    /// The program the argv runs, which must be installed.
    fn program(&self) -> &'static str;

    /// The argv that runs the shell command `remote` where the hook lives.
    fn argv(&self, settings: &Settings, remote: String) -> Vec<String>;

    /// Where that is, for a human ("on deploy@host", "on this machine").
    fn place(&self, settings: &Settings) -> String;

    /// Who runs it, for a human ("deploy@host", "this machine").
    fn target(&self, settings: &Settings) -> String;

    /// The argv of a reachability probe: runs `true` where the hook lives,
    /// giving up on connecting after `connect_timeout` and never prompting.
    /// `doctor`'s alone: a dispatch always runs [`Launcher::argv`].
    fn probe_argv(&self, settings: &Settings, connect_timeout: Duration) -> Vec<String> {
        let _ = connect_timeout;
        self.argv(settings, "true".to_owned())
    }

    /// What is wrong with the settings for this transport.
    fn problems(&self, settings: &Settings) -> Vec<String>;
}

/// Every transport, by name.
pub const TRANSPORTS: &[&dyn Launcher] = &[&ssh::Ssh, &local::Local];

/// A transport, as settings and records name it.
#[derive(Clone, Copy)]
pub struct Transport(&'static dyn Launcher);

impl Transport {
    /// The transport called `name` (case-insensitive).
    pub fn by_name(name: &str) -> Option<Transport> {
        TRANSPORTS
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .map(|t| Transport(*t))
    }

    /// Every name, for help and errors.
    pub fn names() -> Vec<&'static str> {
        TRANSPORTS.iter().map(|t| t.name()).collect()
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    pub fn program(self) -> &'static str {
        self.0.program()
    }

    pub fn argv(self, settings: &Settings, remote: String) -> Vec<String> {
        self.0.argv(settings, remote)
    }

    pub fn place(self, settings: &Settings) -> String {
        self.0.place(settings)
    }

    pub fn target(self, settings: &Settings) -> String {
        self.0.target(settings)
    }

    pub fn probe_argv(self, settings: &Settings, connect_timeout: Duration) -> Vec<String> {
        self.0.probe_argv(settings, connect_timeout)
    }

    pub fn problems(self, settings: &Settings) -> Vec<String> {
        self.0.problems(settings)
    }
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Transport {}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Transport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
        let name = String::deserialize(d)?;
        Transport::by_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown transport {name:?}")))
    }
}
