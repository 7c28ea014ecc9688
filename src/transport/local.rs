//! For single-host installs where the engine runs on the host itself: the
//! same remote command, run by `bash -c` on this machine.

use super::Launcher;
use crate::config::Settings;

pub struct Local;

impl Launcher for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn program(&self) -> &'static str {
        "bash"
    }

    fn argv(&self, _: &Settings, remote: String) -> Vec<String> {
        vec!["bash".into(), "-c".into(), remote]
    }

    fn place(&self, _: &Settings) -> String {
        "on this machine".to_owned()
    }

    fn target(&self, _: &Settings) -> String {
        "this machine".to_owned()
    }

    fn problems(&self, _: &Settings) -> Vec<String> {
        Vec::new()
    }
}
