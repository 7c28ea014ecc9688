//! `selfdeploy history`: the journal of one work item.

use anyhow::Context as _;

use selfdeploy::config::Settings;
use selfdeploy::store::{self, ItemPaths, Verification};
use selfdeploy::text_table;

use super::{EXIT_ERROR, EXIT_OK, ItemArgs, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    item: ItemArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Check that the history is authentic (HMAC chain and head, with
    /// HISTORY_HMAC_KEY); exit 1 naming the first entry that is not.
    #[arg(long, conflicts_with = "json")]
    verify: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = args.item.names()?;
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &wi);
    if args.verify {
        let key = settings.history_key.as_deref();
        let verification = store::verify_history(&paths.history_file, key)
            .with_context(|| format!("cannot read {}", paths.history_file.display()))?;
        return Ok(match verification {
            Verification::Unsigned => {
                println!(
                    "history of {repo}/{wi} is unsigned: set HISTORY_HMAC_KEY to sign new entries"
                );
                EXIT_OK
            }
            Verification::Valid { entries } => {
                let noun = if entries == 1 { "entry" } else { "entries" };
                println!("history of {repo}/{wi}: {entries} {noun}, chain valid");
                EXIT_OK
            }
            Verification::Broken { entry, why } => {
                println!("history of {repo}/{wi}: entry {entry} is not authentic: {why}");
                EXIT_ERROR
            }
        });
    }
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
