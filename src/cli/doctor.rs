//! `selfdeploy doctor`: is this installation ready to deploy?

use std::io::Write as _;
use std::path::Path;

use selfdeploy::config::Settings;
use selfdeploy::doctor::{self, Check, Status};

use super::{EXIT_ERROR, EXIT_OK, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy doctor
  selfdeploy --env-file selfdeploy.env doctor --json

Checks the host only once it answers: when ssh fails, the checks that need
the host are skipped. Exit 0 when nothing failed.")]
pub struct Args {
    /// JSON Lines: one object per check, printed as it ends.
    #[arg(long)]
    json: bool,
}

pub fn run(env_file: Option<&Path>, args: Args) -> anyhow::Result<u8> {
    // A configuration with problems is still checked as far as it goes.
    let (settings, errors) = Settings::load_lenient(env_file)?;
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
    let checks = doctor::run(&settings, &problems, &mut show);
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
