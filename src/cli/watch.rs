//! `selfdeploy watch`: finalize results as they arrive, until SIGTERM/SIGINT.

use selfdeploy::config::Settings;
use selfdeploy::watch;

use super::EXIT_OK;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy watch
  selfdeploy watch -v
  selfdeploy watch --once
  selfdeploy watch --health \"$HEALTH_ADDR\"   # an address and port, on the loopback

Logs to stderr at info level (-q: warnings and errors only; -v, -vv: more).")]
pub struct Args {
    /// Poll every due work item once and exit (for cron or a check).
    #[arg(long)]
    once: bool,
    /// Also answer GET /health on this address (e.g. 127.0.0.1:8500) while
    /// watching: the platform's health check, for a deploy hook.
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "once")]
    health: Option<std::net::SocketAddr>,
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
    if let Some(addr) = args.health {
        let bound = selfdeploy::health::serve(addr)
            .map_err(|e| anyhow::anyhow!("cannot serve the health endpoint on {addr}: {e}"))?;
        tracing::info!("watch: health endpoint on http://{bound}/health");
    }
    watch::block_on(watch::run(settings, watch::termination()))??;
    Ok(EXIT_OK)
}
