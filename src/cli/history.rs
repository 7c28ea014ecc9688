//! `selfdeploy history`: the journal of one work item.

use selfdeploy::config::Settings;
use selfdeploy::store::{self, ItemPaths};
use selfdeploy::text_table;

use super::{EXIT_OK, ItemArgs, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    item: ItemArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = args.item.names()?;
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &wi);
    let entries = store::read_history(&paths.history_file)?;
    if args.json {
        entries.iter().for_each(print_json);
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        println!("no history for {repo}/{wi}");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 7]> = entries
        .into_iter()
        .map(|e| {
            [
                e.time,
                e.actor,
                e.event,
                e.from,
                e.to,
                e.outcome,
                e.reason.unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["TIME", "ACTOR", "EVENT", "FROM", "TO", "OUTCOME", "REASON"];
    print!("{}", text_table::render(&header, &rows));
    Ok(EXIT_OK)
}
