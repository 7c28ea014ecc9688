//! `selfdeploy watch`: finalize results as they arrive, until SIGTERM/SIGINT.

use selfdeploy::config::Settings;
use selfdeploy::watch;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy watch
  selfdeploy watch -v
  selfdeploy watch --once

Logs to stderr at info level (-q: warnings and errors only; -v, -vv: more).")]
pub struct Args {
    /// Poll every due work item once and exit (for cron or a check).
    #[arg(long)]
    once: bool,
}

pub fn run(settings: Settings, args: Args) -> anyhow::Result<u8> {
    // The watch writes under REPOS_DIR (finalizes, history, locks): only as
    // its owner.
    selfdeploy::engine::check_repos_dir(&settings)?;
    selfdeploy::engine::check_owner(&settings)?;
    if args.once {
        let mut stats = watch::Stats::default();
        let handled = watch::rescan(&settings, &mut stats, &mut watch::Schedule::default())?;
        for line in &handled {
            outln!("{line}");
        }
        outln!("{stats}");
        return Ok(if stats.errors == 0 {
            EXIT_OK
        } else {
            super::EXIT_ERROR
        });
    }
    watch::block_on(watch::run(settings, watch::termination()))??;
    Ok(EXIT_OK)
}
