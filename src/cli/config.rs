//! `selfdeploy config`: every setting, its value and where it came from.

use serde::Serialize;

use selfdeploy::config::{REGISTRY, Settings};

use super::{EXIT_OK, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    name: &'a str,
    value: &'a str,
    source: String,
    default: &'a str,
    meaning: &'a str,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let lines: Vec<Line> = settings
        .resolved
        .iter()
        .zip(REGISTRY)
        .map(|(r, spec)| Line {
            name: r.name,
            value: &r.value,
            source: r.source.to_string(),
            default: spec.default,
            meaning: spec.meaning,
        })
        .collect();
    if args.json {
        lines.iter().for_each(print_json);
    } else {
        let rows: Vec<[String; 3]> = lines
            .iter()
            .map(|l| [l.name.to_owned(), l.value.to_owned(), l.source.clone()])
            .collect();
        print!(
            "{}",
            selfdeploy::text_table::render(&["SETTING", "VALUE", "SOURCE"], &rows)
        );
    }
    Ok(EXIT_OK)
}
