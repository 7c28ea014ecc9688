//! `selfdeploy watch`: finalize results as they arrive, until SIGTERM/SIGINT.

use selfdeploy::config::Settings;
use selfdeploy::watch;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Poll every due work item once and exit (for cron or a check).
    #[arg(long)]
    once: bool,
}

pub fn run(settings: Settings, args: Args) -> anyhow::Result<u8> {
    if args.once {
        let mut stats = watch::Stats::default();
        watch::rescan(&settings, &mut stats, &mut watch::PushRetries::default())?;
        println!("finalized {}, errors {}", stats.finalized, stats.errors);
        return Ok(if stats.errors == 0 {
            EXIT_OK
        } else {
            super::EXIT_ERROR
        });
    }
    let stats = watch::block_on(watch::run(settings, watch::termination()))??;
    println!("finalized {}, errors {}", stats.finalized, stats.errors);
    Ok(EXIT_OK)
}
