//! `selfdeploy snapshot`: one work item's live state as a replayable fixture.

use selfdeploy::config::Settings;
use selfdeploy::engine::SystemClock;
use selfdeploy::replay;

use super::{EXIT_OK, item_names};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    repo: String,
    #[arg(long)]
    work_item: String,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = item_names(&args.repo, &args.work_item)?;
    let fixture = replay::capture(settings, &repo, &wi, &SystemClock)?;
    print!("{}", replay::fixture::to_ron(&fixture));
    Ok(EXIT_OK)
}
