//! `selfdeploy demo`: a whole deploy in a throwaway sandbox on this machine,
//! through the local transport, with the reference hook
//! (`scripts/deploy-hook.sh`) driving a stand-in docker
//! (`scripts/stand-in-docker`, a loopback HTTP server for the service), a
//! real git worktree and a bare remote. Nothing outside the sandbox is
//! touched: no real docker, no real host.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::contract::deploy_log;
use crate::contract::names::{BranchName, RepoName, WorkItem};
use crate::engine::{self, Request};
use crate::exec::{HostPerformer, process};
use crate::machine::{EventName, Outcome, StateName};
use crate::probe::HostProbe;
use crate::store::{ItemPaths, Snapshot, Ticket};

/// The reference hook, which the demo runs as it would run on a host.
pub const DEPLOY_HOOK: &str = include_str!("../scripts/deploy-hook.sh");
/// The stand-in `docker` the demo's hook finds first on its PATH.
pub const STAND_IN_DOCKER: &str = include_str!("../scripts/stand-in-docker");
/// How long the demo's hook waits for a healthy service (the reference
/// hook's default is 60 s; the demo's service answers at once).
const DEMO_HEALTH_TIMEOUT_SECS: u32 = 3;

const REPO: &str = crate::config::SELF_HOSTING_REPO;
const WORK_ITEM: &str = "DEMO-1";
const BRANCH: &str = "deploy/DEMO-1";

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Deploy an unhealthy image: the hook rolls back to the previous one and
    /// the deploy ends finalized_failed (hook exit code 1).
    pub fail: bool,
    /// Keep the sandbox directory instead of removing it.
    pub keep: bool,
    /// Dispatch over ssh to this `(user, host)` instead of running the hook
    /// locally (a loopback sshd: docs/operations/LOOPBACK.md). The host must
    /// see the sandbox at the same paths, as one machine does.
    pub ssh: Option<(String, String)>,
}

/// Why the demo could not finish.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Name(#[from] crate::contract::names::NameError),
    #[error(transparent)]
    Branch(#[from] crate::contract::names::BranchError),
    #[error(transparent)]
    Run(#[from] process::RunError),
    #[error("{0}")]
    Failed(String),
}

/// Runs the demo, printing to `out`; returns the final state.
pub fn run(opts: &Options, out: &mut dyn Write) -> Result<StateName, DemoError> {
    let sandbox = tempfile::Builder::new()
        .prefix("selfdeploy-demo.")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "cannot create the demo sandbox".into(),
            source,
        })?;
    let root = sandbox.path().to_path_buf();
    let result = run_in(&root, opts, out);
    if opts.keep {
        let kept = sandbox.keep();
        writeln!(out, "\nsandbox kept at {}", kept.display())?;
    }
    result
}

fn run_in(root: &Path, opts: &Options, out: &mut dyn Write) -> Result<StateName, DemoError> {
    let python = find_python()?;
    let state = root.join("state");
    let host_repo = root.join("host/app");
    let home = root.join("home");
    let worktree = root.join("worktree");
    for dir in [&state, &host_repo.join("scripts"), &home] {
        fs::create_dir_all(dir).map_err(|source| DemoError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
    }
    // The sandbox's state directory is what `selfdeploy init` would make it.
    let now = crate::clock::rfc3339_seconds(std::time::SystemTime::now());
    crate::store::identity::init(&state, "demo", &now)
        .map_err(|e| DemoError::Failed(e.to_string()))?;
    let port = free_port()?;
    let docker = StandInDocker::install(&root.join("host"), python, port)?;
    fs::write(host_repo.join("scripts/deploy-hook.sh"), DEPLOY_HOOK)?;
    fs::write(
        host_repo.join("scripts/demo-hook.sh"),
        docker.demo_hook(&host_repo.join("scripts/deploy-hook.sh")),
    )?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let (state_dir, host_repo_dir) = (path(&state), path(&host_repo));
    let (prev_image, home_dir) = (path(&root.join("host/prev-image")), path(&home));
    let target_port = port.to_string();
    // Any staging port but production's (the dispatch guard).
    let staging_port = loop {
        let other = free_port()?;
        if other != port {
            break other.to_string();
        }
    };
    let mut settings: Vec<(&str, &str)> = vec![
        ("REPOS_DIR", &state_dir),
        ("HOST_REPOS_DIR", &state_dir),
        ("DEPLOY_HOST_REPO_PATH", &host_repo_dir),
        ("DEPLOY_HOOK_SCRIPT", "scripts/demo-hook.sh"),
        ("DEPLOY_PROD_PREV_IMAGE_FILE", &prev_image),
        ("DEPLOY_PROD_TARGET_PORT", &target_port),
        ("STAGING_PORT", &staging_port),
        ("AGENT_HOME_DIR", &home_dir),
    ];
    match &opts.ssh {
        None => settings.push(("SELF_DEPLOY_TRANSPORT", "local")),
        Some((user, host)) => settings.extend([
            ("SELF_DEPLOY_TRANSPORT", "ssh"),
            ("DEPLOY_SSH_USER", user.as_str()),
            ("DEPLOY_SSH_HOST", host.as_str()),
        ]),
    }
    let settings = Settings::with_overrides(&settings)?;
    let sha = prepare_git(root, &worktree, &settings)?;
    // The image running now, and the staging-validated one, built from the
    // revision the freshness check expects.
    docker.run(
        &settings,
        &["service", &settings.target_service, &settings.target_image],
    )?;
    let previous = docker.run(&settings, &["load", &settings.target_image, "health=ok"])?;
    let health = if opts.fail { "health=bad" } else { "health=ok" };
    let revision = format!("{}={sha}", crate::config::IMAGE_REVISION_LABEL);
    let new = docker.run(
        &settings,
        &["load", &settings.source_image, health, &revision],
    )?;

    writeln!(out, "selfdeploy demo: sandbox {}", root.display())?;
    writeln!(
        out,
        "  repo {REPO}, work item {WORK_ITEM}, branch {BRANCH}, validated revision {sha}"
    )?;
    match &opts.ssh {
        None => writeln!(out, "  transport local (bash on this machine)")?,
        Some((user, host)) => writeln!(out, "  transport ssh to {user}@{host}")?,
    }
    writeln!(
        out,
        "  hook scripts/deploy-hook.sh, run by scripts/demo-hook.sh with a stand-in docker first on PATH"
    )?;
    writeln!(
        out,
        "  images: {} = {} (production's current image, healthy), {} = {} (revision {}, {})",
        settings.target_image,
        short_id(&previous),
        settings.source_image,
        short_id(&new),
        short_id(&sha),
        if opts.fail { "unhealthy" } else { "healthy" }
    )?;
    writeln!(
        out,
        "  production: service {} on {LOOPBACK}:{port}\n",
        settings.target_service
    )?;

    let repo = RepoName::new(REPO)?;
    let work_item = WorkItem::new(WORK_ITEM)?;
    let branch = BranchName::new(BRANCH)?;
    let deliver = |event: EventName, merged: Option<bool>| {
        let request = Request {
            repo: repo.clone(),
            work_item: work_item.clone(),
            event,
            branch: Some(branch.clone()),
            worktree: Some(worktree.clone()),
            revision: None,
            merged,
            force: false,
            actor: "demo".to_owned(),
        };
        engine::handle(
            &settings,
            &request,
            &mut HostProbe,
            &mut HostPerformer {
                settings: &settings,
            },
        )
    };

    let mut last = StateName::Idle;
    for event in [EventName::RequestApprove, EventName::Approved] {
        let report = deliver(event, None)?;
        print_step(out, &report)?;
        if report.outcome != Outcome::Transitioned {
            return Err(DemoError::Failed(format!(
                "the demo expected {event} to transition, got {}",
                report.outcome
            )));
        }
        last = report.to;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &work_item);
    let mut claim_shown = false;
    while last == StateName::Initiated {
        // The host wrapper's first act is the claim: show it as it happens.
        if !claim_shown
            && let Ok(snap) = Snapshot::load(&paths)
            && let Some(d) = snap.dispatch.filter(|d| d.ticket == Ticket::Claimed)
        {
            writeln!(
                out,
                "{:<16} claimed dispatch-{id} -> claimed-{id}: the hook started, and this dispatch can never be revoked or run again",
                "host",
                id = d.id
            )?;
            claim_shown = true;
        }
        let report = deliver(EventName::Poll, None)?;
        polls += 1;
        if report.outcome == Outcome::Deferred {
            if polls == 1 {
                print_step(out, &report)?;
            }
            if Instant::now() > deadline {
                return Err(DemoError::Failed(format!(
                    "the hook wrote no result within 60 s; see {}",
                    state.display()
                )));
            }
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        writeln!(
            out,
            "  ({})",
            crate::text_table::counted(polls as u64, "poll", "polls")
        )?;
        print_step(out, &report)?;
        last = report.to;
    }
    let report = deliver(EventName::MergeVerified, Some(!opts.fail))?;
    print_step(out, &report)?;

    let log_path = worktree.join(deploy_log::relative_path(&work_item));
    writeln!(
        out,
        "\n--- {} ---",
        log_path.strip_prefix(root).unwrap_or(&log_path).display()
    )?;
    write!(out, "{}", fs::read_to_string(&log_path)?)?;
    let hook_log = crate::contract::remote::state_dir_under(&state, &repo, &work_item)
        .join(crate::contract::remote::HOOK_LOG_FILE);
    writeln!(out, "--- hook.log (written on the host) ---")?;
    write!(out, "{}", fs::read_to_string(&hook_log).unwrap_or_default())?;
    writeln!(
        out,
        "--- the hook's docker calls (the stand-in's record) ---"
    )?;
    for call in docker.calls() {
        writeln!(out, "{call}")?;
    }
    writeln!(out, "--- production after the deploy ---")?;
    writeln!(
        out,
        "GET http://{LOOPBACK}:{port}/health -> {}",
        get_health(port)
    )?;
    let pushed = git_out(
        &settings,
        &root.join("remote.git"),
        &["log", "-2", "--format=%an <%ae>: %s", BRANCH],
    )?;
    writeln!(out, "--- pushed to the remote ---\n{}", pushed.trim())?;
    writeln!(out, "\nfinal state: {last}")?;
    Ok(last)
}

/// Where the demo's production service listens, as the hook checks it.
const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// The interpreter the stand-in docker's service runs on, as an absolute
/// path (an ssh login's PATH may not have it).
fn find_python() -> Result<String, DemoError> {
    let missing = |why: String| {
        DemoError::Failed(format!(
            "the demo needs python3 (its stand-in docker serves the service with it): {why}"
        ))
    };
    let args = [
        "-c".to_owned(),
        "from sys import executable; print(executable)".to_owned(),
    ];
    let done = process::run("python3", &args, None, &[], Duration::from_secs(30))
        .map_err(|e| missing(e.to_string()))?;
    let exe = done.stdout.trim();
    if !done.success() || !exe.starts_with('/') {
        return Err(missing(done.summary()));
    }
    Ok(exe.to_owned())
}

/// A loopback port free now, for the demo's production service.
fn free_port() -> Result<u16, DemoError> {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| DemoError::Io {
            what: "cannot find a free loopback port".into(),
            source,
        })
}

/// `sha256:` and 12 hex digits of an image id, or a revision's first 12.
fn short_id(id: &str) -> &str {
    let end = id.find(':').map_or(0, |i| i + 1) + 12;
    id.get(..end).unwrap_or(id)
}

/// One GET of the service's health, described in a line.
fn get_health(port: u16) -> String {
    use std::io::Read;
    let get = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect((LOOPBACK, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /health HTTP/1.0\r\nHost: {LOOPBACK}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status = answer
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1);
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Ok(format!("{} {body}", status.unwrap_or("?")))
    };
    get().unwrap_or_else(|e| format!("no answer ({e})"))
}

/// The stand-in docker of the sandbox's host: `host/bin/docker`, its state
/// in `host/docker`. Dropping it stops the service it started.
struct StandInDocker {
    program: std::path::PathBuf,
    dir: std::path::PathBuf,
    python: String,
    port: u16,
}

impl StandInDocker {
    fn install(host: &Path, python: String, port: u16) -> Result<StandInDocker, DemoError> {
        use std::os::unix::fs::PermissionsExt;
        let bin = host.join("bin");
        let dir = host.join("docker");
        for d in [&bin, &dir] {
            fs::create_dir_all(d).map_err(|source| DemoError::Io {
                what: format!("cannot create {}", d.display()),
                source,
            })?;
        }
        let program = bin.join("docker");
        fs::write(&program, STAND_IN_DOCKER)?;
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755))?;
        Ok(StandInDocker {
            program,
            dir,
            python,
            port,
        })
    }

    fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("STAND_IN_DOCKER_DIR", self.dir.clone().into_os_string()),
            ("STAND_IN_DOCKER_PORT", self.port.to_string().into()),
            ("STAND_IN_DOCKER_PYTHON", self.python.clone().into()),
        ]
    }

    /// Runs one of the stand-in's own commands; returns its trimmed output.
    fn run(&self, settings: &Settings, args: &[&str]) -> Result<String, DemoError> {
        let mut argv = vec![self.program.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let done = process::run("bash", &argv, None, &self.env(), settings.git_timeout)?;
        if !done.success() {
            return Err(DemoError::Failed(format!(
                "stand-in docker {} failed: {}",
                args.join(" "),
                done.summary()
            )));
        }
        Ok(done.stdout.trim().to_owned())
    }

    /// The hook DEPLOY_HOOK_SCRIPT names: the reference hook, with this
    /// stand-in first on its PATH. The local transport runs the remote
    /// command with selfdeploy's own environment, and ssh with the login's:
    /// this script is where the demo's host differs from a real one.
    fn demo_hook(&self, hook: &Path) -> String {
        let q = |p: &str| crate::contract::remote::shell_quote(p);
        let text = |p: &Path| p.to_string_lossy().into_owned();
        format!(
            "#!/usr/bin/env bash\n\
             # Written by `selfdeploy demo`: the reference hook, scripts/deploy-hook.sh,\n\
             # with a stand-in docker (scripts/stand-in-docker) first on its PATH.\n\
             export PATH={bin}:\"$PATH\"\n\
             export STAND_IN_DOCKER_DIR={dir} STAND_IN_DOCKER_PORT={port} STAND_IN_DOCKER_PYTHON={python}\n\
             export DEPLOY_HEALTH_TIMEOUT_SECS={DEMO_HEALTH_TIMEOUT_SECS} DEPLOY_HEALTH_INTERVAL_SECS=0.2\n\
             exec bash {hook} \"$@\"\n",
            bin = q(&text(self.program.parent().unwrap_or(Path::new("/")))),
            dir = q(&text(&self.dir)),
            port = self.port,
            python = q(&self.python),
            hook = q(&text(hook)),
        )
    }

    /// The docker calls recorded so far, as argv lines.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap_or(l).to_owned())
            .collect()
    }
}

impl Drop for StandInDocker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(&self.program)
            .arg("stop")
            .envs(self.env())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn print_step(out: &mut dyn Write, r: &engine::Report) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {} -> {}  [{}]",
        r.event.as_str(),
        r.from,
        r.to,
        r.outcome
    )?;
    if let Some(reason) = &r.reason {
        writeln!(out, "{:<16} {reason}", "")?;
    }
    for effect in &r.effects {
        writeln!(
            out,
            "{:<16} effect: {}",
            "",
            crate::effect::describe(effect)
        )?;
    }
    for note in &r.notes {
        writeln!(out, "{:<16} note: {note}", "")?;
    }
    Ok(())
}

/// A bare remote and a clone of it on the work item's branch; returns the
/// branch tip, the revision the freshness check will expect.
fn prepare_git(root: &Path, worktree: &Path, settings: &Settings) -> Result<String, DemoError> {
    let remote = root.join("remote.git");
    git_out(
        settings,
        root,
        &["init", "--quiet", "--bare", &remote.to_string_lossy()],
    )?;
    git_out(
        settings,
        root,
        &[
            "clone",
            "--quiet",
            &remote.to_string_lossy(),
            &worktree.to_string_lossy(),
        ],
    )?;
    git_out(settings, worktree, &["checkout", "--quiet", "-b", BRANCH])?;
    fs::write(worktree.join("README.md"), "demo work item\n")?;
    git_out(settings, worktree, &["add", "README.md"])?;
    git_out(
        settings,
        worktree,
        &["commit", "--quiet", "-m", "demo: the change being deployed"],
    )?;
    git_out(settings, worktree, &["push", "--quiet", "origin", BRANCH])?;
    Ok(git_out(settings, worktree, &["rev-parse", "HEAD"])?
        .trim()
        .to_owned())
}

fn git_out(settings: &Settings, dir: &Path, args: &[&str]) -> Result<String, DemoError> {
    let mut argv: Vec<String> = vec!["-C".into(), dir.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let env = crate::exec::git::GitEnv::new(settings, "demo", dir).map_err(DemoError::Failed)?;
    let done = process::run("git", &argv, None, &env.vars(), settings.git_timeout)?;
    if !done.success() {
        return Err(DemoError::Failed(format!(
            "git {} failed: {}",
            args.join(" "),
            done.summary()
        )));
    }
    Ok(done.stdout)
}
