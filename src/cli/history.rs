//! `selfdeploy history`: the journal of one work item.

use anyhow::Context as _;

use selfdeploy::config::Settings;
use serde::Serialize;

use selfdeploy::store::{self, HistoryKeys, HistoryLine, ItemPaths, Verification};
use selfdeploy::text_table;

use super::{EXIT_ERROR, EXIT_OK, ItemArgs, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy history --repo orchestrator --work-item ORCH-42
  selfdeploy history --repo orchestrator --work-item ORCH-42 --json
  selfdeploy history --repo orchestrator --work-item ORCH-42 --verify --json")]
pub struct Args {
    #[command(flatten)]
    item: ItemArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Check that the history is authentic (HMAC chain and head, with
    /// HISTORY_HMAC_KEY and HISTORY_HMAC_PREVIOUS_KEYS); exit 1 naming the
    /// first entry that is not.
    #[arg(long)]
    verify: bool,
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let (repo, wi) = args.item.names()?;
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &wi);
    if args.verify {
        return verify(settings, &paths, &format!("{repo}/{wi}"), args.json);
    }
    let lines = store::read_history(&paths.history_file)
        .with_context(|| format!("cannot read {}", paths.history_file.display()))?;
    if args.json {
        lines.iter().for_each(print_json);
        return Ok(EXIT_OK);
    }
    if lines.is_empty() {
        outln!("no history for {repo}/{wi}");
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 7]> = lines
        .into_iter()
        .map(|line| match line {
            HistoryLine::Entry { entry: e, repeats } => [
                e.time,
                e.actor,
                e.event,
                e.from,
                e.to,
                e.outcome,
                match repeats {
                    Some(r) => format!(
                        "{} (again {}, the last at {})",
                        e.reason.unwrap_or_default(),
                        selfdeploy::text_table::counted(r.count, "time", "times"),
                        r.last
                    )
                    .trim_start()
                    .to_owned(),
                    None => e.reason.unwrap_or_default(),
                },
            ],
            // Shown, never skipped and never fatal: history is evidence.
            HistoryLine::Damaged { entry, damaged } => [
                "DAMAGED".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("entry {entry} is not a history entry: {damaged:?}"),
            ],
        })
        .collect();
    let header = ["TIME", "ACTOR", "EVENT", "FROM", "TO", "OUTCOME", "REASON"];
    out!("{}", text_table::render(&header, &rows));
    Ok(EXIT_OK)
}

/// What `history --verify` found, as one JSON object.
#[derive(Debug, Serialize)]
struct Verified {
    item: String,
    /// valid, broken, unsigned, or no_key
    verdict: &'static str,
    entries: Option<usize>,
    /// Entries written before signing was turned on.
    unsigned: Option<usize>,
    /// The first entry that is not authentic.
    entry: Option<usize>,
    message: String,
}

fn verify(settings: &Settings, paths: &ItemPaths, item: &str, json: bool) -> anyhow::Result<u8> {
    let keys = HistoryKeys {
        current: settings.history_key.as_ref(),
        previous: &settings.history_previous_keys,
    };
    let verification = store::verify_history(&paths.history_file, &keys)
        .with_context(|| format!("cannot read {}", paths.history_file.display()))?;
    let mut out = Verified {
        item: item.to_owned(),
        verdict: "valid",
        entries: None,
        unsigned: None,
        entry: None,
        message: String::new(),
    };
    let code = match verification {
        Verification::Unsigned => {
            out.verdict = "unsigned";
            out.message =
                format!("history of {item} is unsigned: set HISTORY_HMAC_KEY to sign new entries");
            EXIT_OK
        }
        Verification::NoKey { key_id } => {
            out.verdict = "no_key";
            out.message = format!(
                "history of {item} is signed (key id {key_id}) but HISTORY_HMAC_KEY is not set: nothing can be verified; set the key"
            );
            EXIT_ERROR
        }
        Verification::Valid { entries, unsigned } => {
            let noun = if entries == 1 { "entry" } else { "entries" };
            out.entries = Some(entries);
            out.unsigned = Some(unsigned);
            out.message = match unsigned {
                0 => format!("history of {item}: {entries} {noun}, chain valid"),
                n => format!(
                    "history of {item}: {entries} {noun}, chain valid from entry {}; warning: entries 1 to {n} were written before signing was turned on and are unsigned",
                    n + 1
                ),
            };
            EXIT_OK
        }
        Verification::Broken { entry, why } => {
            out.verdict = "broken";
            out.entry = Some(entry);
            out.message = format!("history of {item}: entry {entry} is not authentic: {why}");
            EXIT_ERROR
        }
    };
    if json {
        print_json(&out);
    } else {
        outln!("{}", out.message);
    }
    Ok(code)
}
