//! `selfdeploy doctor`: the smoke procedure of a new installation as one
//! command. Each check says PASS or FAIL, why, and what to do.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::atomic;
use crate::config::Settings;
use crate::contract::remote::{self, shell_quote};
use crate::exec::process;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
    pub fix: Option<String>,
}

fn pass(name: &'static str, detail: String) -> Check {
    Check {
        name,
        passed: true,
        detail,
        fix: None,
    }
}

fn fail(name: &'static str, detail: String, fix: &str) -> Check {
    Check {
        name,
        passed: false,
        detail,
        fix: Some(fix.to_owned()),
    }
}

/// Runs every check; `config_problems` are what `config --check` found.
pub fn run(settings: &Settings, config_problems: &[String]) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(if config_problems.is_empty() {
        pass("configuration", "every setting is valid".into())
    } else {
        fail(
            "configuration",
            config_problems.join("; "),
            "run `selfdeploy config --check` and fix each problem",
        )
    });

    let program = settings.transport.program();
    let transport = process::find(program);
    checks.push(match &transport {
        Ok(path) => pass(
            "transport program",
            format!("{program} is {}", path.display()),
        ),
        Err(e) => fail(
            "transport program",
            e.to_string(),
            "install it (openssh-client for ssh) or fix PATH",
        ),
    });
    checks.push(match process::find("git") {
        Ok(path) => pass("git", format!("git is {}", path.display())),
        Err(e) => fail("git", e.to_string(), "install git or fix PATH"),
    });

    let token = token();
    let probe_dir = settings.repos_dir.join(".selfdeploy").join("doctor");
    let probe = probe_dir.join(format!("probe-{token}"));
    let writable = if settings.repos_dir.is_dir() {
        atomic::create_dir_all(&probe_dir).and_then(|()| atomic::write(&probe, token.as_bytes()))
    } else {
        Err(std::io::Error::other(
            "it does not exist (is the shared directory mounted?)",
        ))
    };
    checks.push(match &writable {
        Ok(()) => pass("REPOS_DIR writable", format!("wrote {}", probe.display())),
        Err(e) => fail(
            "REPOS_DIR writable",
            format!("cannot write {}: {e}", probe.display()),
            "create REPOS_DIR and make it writable by the engine's user",
        ),
    });

    let host_probe_dir = Path::new(&settings.host_repos_dir)
        .join(".selfdeploy")
        .join("doctor");
    let on_host = |what: &str| -> Result<String, String> {
        if transport.is_err() {
            return Err(format!("skipped: no {program}"));
        }
        let argv = remote::dispatch_argv(settings, what.to_owned());
        match process::run(&argv[0], &argv[1..], None, &[], settings.ssh_timeout) {
            Ok(out) if out.success() => Ok(out.stdout),
            Ok(out) => Err(out.summary()),
            Err(e) => Err(e.to_string()),
        }
    };
    let where_ = settings.transport.place(settings);

    let host_probe = host_probe_dir.join(format!("probe-{token}"));
    checks.push(match (&writable, on_host(&format!("cat {}", shell_quote(&host_probe.to_string_lossy())))) {
        (Err(_), _) => fail("shared mount", "skipped: no probe file was written".into(), "fix REPOS_DIR first"),
        (Ok(()), Ok(seen)) if seen.trim() == token => pass(
            "shared mount",
            format!("{} {where_} shows the probe written under REPOS_DIR", host_probe.display()),
        ),
        (Ok(()), Ok(seen)) => fail(
            "shared mount",
            format!("{} {where_} holds {:?}, not the probe", host_probe.display(), seen.trim()),
            "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host",
        ),
        (Ok(()), Err(why)) => fail(
            "shared mount",
            format!("{} is not readable {where_}: {why}", host_probe.display()),
            "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host; check ssh access",
        ),
    });

    let hook_test = format!(
        "cd {} && test -f {}",
        shell_quote(&settings.host_repo_path),
        shell_quote(&settings.hook_script)
    );
    checks.push(match on_host(&hook_test) {
        Ok(_) => pass(
            "hook on host",
            format!(
                "{} exists in {} {where_}",
                settings.hook_script, settings.host_repo_path
            ),
        ),
        Err(why) => fail(
            "hook on host",
            format!(
                "{} not found in {} {where_}: {why}",
                settings.hook_script, settings.host_repo_path
            ),
            "fix DEPLOY_HOST_REPO_PATH or DEPLOY_HOOK_SCRIPT, or install the hook",
        ),
    });

    let host_written = host_probe_dir.join(format!("host-{token}"));
    let local_view = probe_dir.join(format!("host-{token}"));
    let write = format!(
        "echo {token} > {}",
        shell_quote(&host_written.to_string_lossy())
    );
    checks.push(match on_host(&write) {
        Ok(_) if fs::read_to_string(&local_view).is_ok_and(|s| s.trim() == token) => pass(
            "host writes state",
            format!(
                "the host wrote {} and the engine reads it",
                host_written.display()
            ),
        ),
        Ok(_) => fail(
            "host writes state",
            format!(
                "the host wrote {} but the engine does not see it at {}",
                host_written.display(),
                local_view.display()
            ),
            "HOST_REPOS_DIR must be the same directory as REPOS_DIR, seen from the host",
        ),
        Err(why) => fail(
            "host writes state",
            format!("the host cannot write {}: {why}", host_written.display()),
            "give the ssh user write access to the state directory on the host",
        ),
    });

    let _ = fs::remove_file(&probe);
    let _ = fs::remove_file(&local_view);
    checks
}

/// A value no stale file can hold by chance.
fn token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}
