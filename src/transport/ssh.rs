//! The production transport: the remote command runs on the host over ssh,
//! `ssh -o StrictHostKeyChecking=no <user@host> <remote>`.

use std::time::Duration;

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

    fn target(&self, settings: &Settings) -> String {
        target(settings)
    }

    /// `ssh -o StrictHostKeyChecking=no -o BatchMode=yes -o
    /// ConnectTimeout=<secs> <target> true`: a host that does not answer, or
    /// a login that would ask for a password, fails within the connect
    /// timeout (whole seconds, at least 1) instead of the ssh timeout.
    fn probe_argv(&self, settings: &Settings, connect_timeout: Duration) -> Vec<String> {
        let secs = connect_timeout
            .as_secs()
            .saturating_add(u64::from(connect_timeout.subsec_nanos() > 0))
            .max(1);
        vec![
            "ssh".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={secs}"),
            target(settings),
            "true".into(),
        ]
    }

    fn problems(&self, settings: &Settings) -> Vec<String> {
        if settings.ssh_host.is_empty() {
            vec!["DEPLOY_SSH_HOST is empty; the ssh transport needs a host".to_owned()]
        } else {
            Vec::new()
        }
    }
}
