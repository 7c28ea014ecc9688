//! `selfdeploy history`: the journal of one work item.

use selfdeploy::config::Settings;
use selfdeploy::store::{self, ItemPaths};

use super::{EXIT_OK, item_names, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    repo: String,
    #[arg(long)]
    work_item: String,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = item_names(&args.repo, &args.work_item)?;
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
    print_table(
        &["TIME", "ACTOR", "EVENT", "FROM", "TO", "OUTCOME", "REASON"],
        &rows,
    );
    Ok(EXIT_OK)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
