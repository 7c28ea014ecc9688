//! `selfdeploy snapshot`: one work item's live state as a replayable fixture.

use selfdeploy::config::Settings;
use selfdeploy::replay;

use super::{EXIT_OK, ItemArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy snapshot --repo orchestrator --work-item ORCH-42 > fixtures/orch-42.ron")]
pub struct Args {
    #[command(flatten)]
    item: ItemArgs,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = args.item.names()?;
    let fixture = replay::capture(settings, &repo, &wi, std::time::SystemTime::now())?;
    out!(
        "{}",
        replay::fixture::to_ron(&fixture).map_err(anyhow::Error::msg)?
    );
    Ok(EXIT_OK)
}
