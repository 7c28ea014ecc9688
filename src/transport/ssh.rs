//! The production transport: the remote command runs on the host over ssh,
//! `ssh -o StrictHostKeyChecking=no <user@host> <remote>`.

use super::Launcher;
use crate::config::Settings;

pub struct Ssh;

/// The ssh target: `user@host`, or the host alone when the user is empty.
fn target(settings: &Settings) -> String {
    if settings.ssh_user.is_empty() {
        settings.ssh_host.clone()
    } else {
        format!("{}@{}", settings.ssh_user, settings.ssh_host)
    }
}

impl Launcher for Ssh {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn program(&self) -> &'static str {
        "ssh"
    }

    fn argv(&self, settings: &Settings, remote: String) -> Vec<String> {
        vec![
            "ssh".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            target(settings),
            remote,
        ]
    }

    fn place(&self, settings: &Settings) -> String {
        format!("on {}", target(settings))
    }

    fn problems(&self, settings: &Settings) -> Vec<String> {
        if settings.ssh_host.is_empty() {
            vec!["DEPLOY_SSH_HOST is empty; the ssh transport needs a host".to_owned()]
        } else {
            Vec::new()
        }
    }
}
