//! `selfdeploy doctor`: is this installation ready to deploy?

use std::io::Write as _;
use std::path::{Path, PathBuf};

use selfdeploy::config::Settings;
use selfdeploy::contract::names::BranchName;
use selfdeploy::doctor::{self, Check, Status, Worktree};

use super::{EXIT_ERROR, EXIT_OK, item_names, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy doctor
  selfdeploy --env-file selfdeploy.env doctor --json
  selfdeploy doctor --worktree ../orchestrator-W-1 --branch W-1
  selfdeploy doctor --repo orchestrator --work-item W-1 --branch W-1

Checks the host only once it answers: when ssh fails, the checks that need
the host are skipped. Without --worktree (or --repo and --work-item) the
worktree and push checks are skipped. Exit 0 when nothing failed.")]
pub struct Args {
    /// JSON Lines: one object per check, printed as it ends.
    #[arg(long)]
    json: bool,
    /// A worktree to check: a git work tree (on --branch, if given) from
    /// which `git push --dry-run` to origin succeeds.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["repo", "work_item"])]
    worktree: Option<PathBuf>,
    /// The worktree of this repo's work item, from SELF_DEPLOY_WORKTREE
    /// (needs --work-item).
    #[arg(long, value_name = "R", requires = "work_item")]
    repo: Option<String>,
    /// The work item whose worktree to check (needs --repo).
    #[arg(long, value_name = "W", requires = "repo")]
    work_item: Option<String>,
    /// The branch the worktree's HEAD must name, and the one pushed (by
    /// default, the branch HEAD names).
    #[arg(long, value_name = "B")]
    branch: Option<String>,
}

pub fn run(env_file: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    // A configuration with problems is still checked as far as it goes.
    let (settings, errors) = Settings::load_lenient(env_file)?;
    let branch = args.branch.as_deref().map(BranchName::new).transpose()?;
    let path = match (&args.worktree, &args.repo, &args.work_item) {
        (Some(path), _, _) => Some(path.clone()),
        (None, Some(repo), Some(work_item)) => {
            let (repo, work_item) = item_names(repo, work_item)?;
            Some(settings.default_worktree(
                repo.given(),
                work_item.as_str(),
                branch.as_ref().map(BranchName::as_str),
            ))
        }
        _ if branch.is_some() => {
            anyhow::bail!("--branch needs --worktree PATH (or --repo R --work-item W)")
        }
        _ => None,
    };
    let worktree = path.map(|path| Worktree { path, branch });
    // A warning fails the check too: a misspelled setting leaves the one
    // meant at its default (`SELF_DEPLOY_ENABLE=false` keeps deploys on).
    let problems: Vec<String> = errors
        .iter()
        .map(ToString::to_string)
        .chain(settings.problems())
        .chain(settings.warnings.iter().map(|w| format!("warning: {w}")))
        .collect();
    // Each check is printed (and flushed) as soon as it ends: a slow host
    // shows which check it is slow in.
    let mut show = |c: &Check| {
        if args.json {
            print_json(c);
        } else {
            print_check(c);
        }
        let _ = std::io::stdout().flush();
    };
    let checks = doctor::run(&settings, &problems, worktree.as_ref(), &mut show);
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let failed = count(Status::Fail);
    if !args.json {
        outln!(
            "{} passed, {failed} failed, {} skipped",
            count(Status::Pass),
            count(Status::Skip)
        );
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_ERROR })
}

/// `PASS git (3 ms): git is /usr/bin/git`, `SKIP shared mount: needs the
/// host: ...`, then the fix of a failed check.
fn print_check(c: &Check) {
    match c.status {
        Status::Skip => outln!("{} {}: {}", c.status.label(), c.name, c.detail),
        _ => outln!(
            "{} {} ({} ms): {}",
            c.status.label(),
            c.name,
            c.duration_ms,
            c.detail
        ),
    }
    if let Some(fix) = &c.fix {
        outln!("     fix: {fix}");
    }
}
