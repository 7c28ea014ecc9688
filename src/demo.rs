//! `selfdeploy demo`: a whole deploy in a throwaway sandbox on this machine,
//! through the local transport, with the example hook, a real git worktree
//! and a bare remote. Nothing outside the sandbox is touched.

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

/// The hook the demo runs, shipped in the repo as an operator example.
pub const EXAMPLE_HOOK: &str = include_str!("../docs/operations/example-deploy-hook.sh");

const REPO: &str = crate::config::SELF_HOSTING_REPO;
const WORK_ITEM: &str = "DEMO-1";
const BRANCH: &str = "deploy/DEMO-1";

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Make the hook's health check fail: the deploy ends finalized_failed.
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
    fs::write(host_repo.join("scripts/deploy-hook.sh"), EXAMPLE_HOOK)?;
    fs::write(
        host_repo.join("demo-health"),
        if opts.fail { "broken\n" } else { "ok\n" },
    )?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let (state_dir, host_repo_dir) = (path(&state), path(&host_repo));
    let (prev_image, home_dir) = (path(&root.join("host/prev-image")), path(&home));
    let mut settings: Vec<(&str, &str)> = vec![
        ("REPOS_DIR", &state_dir),
        ("HOST_REPOS_DIR", &state_dir),
        ("DEPLOY_HOST_REPO_PATH", &host_repo_dir),
        ("DEPLOY_HOOK_SCRIPT", "scripts/deploy-hook.sh"),
        ("DEPLOY_PROD_PREV_IMAGE_FILE", &prev_image),
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

    writeln!(out, "selfdeploy demo: sandbox {}", root.display())?;
    writeln!(
        out,
        "  repo {REPO}, work item {WORK_ITEM}, branch {BRANCH}, validated revision {sha}"
    )?;
    match &opts.ssh {
        None => writeln!(
            out,
            "  transport local (bash on this machine), hook scripts/deploy-hook.sh\n"
        )?,
        Some((user, host)) => writeln!(
            out,
            "  transport ssh to {user}@{host}, hook scripts/deploy-hook.sh\n"
        )?,
    }

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
        writeln!(out, "  ({polls} polls)")?;
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
    let pushed = git_out(
        &settings,
        &root.join("remote.git"),
        &["log", "-2", "--format=%an <%ae>: %s", BRANCH],
    )?;
    writeln!(out, "--- pushed to the remote ---\n{}", pushed.trim())?;
    writeln!(out, "\nfinal state: {last}")?;
    Ok(last)
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
    let env = crate::exec::git::identity_env(settings, "demo");
    let done = process::run("git", &argv, None, &env, settings.git_timeout)?;
    if !done.success() {
        return Err(DemoError::Failed(format!(
            "git {} failed: {}",
            args.join(" "),
            done.summary()
        )));
    }
    Ok(done.stdout)
}
