//! `selfdeploy status`: what is on disk for one work item, or for all.

use serde::Serialize;

use selfdeploy::config::Settings;
use selfdeploy::machine::StateName;
use selfdeploy::markers::Dispatch;
use selfdeploy::names::{RepoName, WorkItem};
use selfdeploy::store::{self, ItemPaths, Snapshot};

use super::{EXIT_ERROR, EXIT_OK, EXIT_USAGE, item_names, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(
        long,
        allow_hyphen_values = true,
        requires = "work_item",
        conflicts_with = "all"
    )]
    repo: Option<String>,
    #[arg(
        long,
        allow_hyphen_values = true,
        requires = "repo",
        conflicts_with = "all"
    )]
    work_item: Option<String>,
    /// Every work item under REPOS_DIR (the default).
    #[arg(long)]
    all: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    repo: RepoName,
    work_item: WorkItem,
    /// `None` when the item's files could not be read (the note says why).
    state: Option<StateName>,
    files: Vec<String>,
    /// pending (unconfirmed), confirmed, or unknown (not our marker).
    dispatch: Option<&'static str>,
    result: Option<String>,
    note: String,
}

fn row(repo: RepoName, work_item: WorkItem, snap: Snapshot) -> Row {
    let dispatch = snap
        .initiated
        .as_ref()
        .map(|m| match m.record.as_ref().map(|r| r.dispatch) {
            Some(Dispatch::Pending) => "unconfirmed",
            Some(Dispatch::Confirmed) => "confirmed",
            None => "unknown",
        });
    let result = snap.result.as_ref().map(|r| r.code.clone());
    let note = match (snap.state, dispatch, &snap.result) {
        _ if snap.result_unreadable.is_some() => {
            format!("result unreadable: {}", snap.result_unreadable.as_deref().unwrap_or_default())
        }
        (StateName::Initiated, _, Some(r)) => format!("result {} waiting to be finalized (poll)", r.code),
        (StateName::Initiated, Some("unconfirmed"), None) => {
            "dispatch unconfirmed: the engine stopped mid-dispatch; check the host, then reset --force".to_owned()
        }
        (StateName::Initiated, None, None) => "result without initiated".to_owned(),
        (StateName::Initiated, _, None) => "deploy in flight, no result yet".to_owned(),
        (StateName::ApproveRequested, ..) => "waiting for approval".to_owned(),
        (StateName::FinalizedSuccess | StateName::FinalizedFailed, ..) => {
            let code = snap.finalized.flatten().map(|f| f.hook_exit_code);
            format!("hook exit code {}", code.as_deref().unwrap_or("unknown"))
        }
        (StateName::Idle, ..) => String::new(),
    };
    Row {
        repo,
        work_item,
        state: Some(snap.state),
        files: snap.files,
        dispatch,
        result,
        note,
    }
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let items = match (&args.repo, &args.work_item) {
        (Some(repo), Some(wi)) => vec![item_names(repo, wi)?],
        (None, None) => store::list_items(&settings.repos_dir)?,
        _ => {
            eprintln!("selfdeploy: error: give both --repo and --work-item, or --all");
            return Ok(EXIT_USAGE);
        }
    };
    let single = args.repo.is_some();
    let mut rows = Vec::new();
    let mut failed = false;
    for (repo, wi) in items {
        match Snapshot::load(&ItemPaths::new(&settings.repos_dir, &repo, &wi)) {
            Ok(snap) => rows.push(row(repo, wi, snap)),
            // One bad item must not hide the others from an operator.
            Err(e) if !single => {
                failed = true;
                rows.push(Row {
                    repo,
                    work_item: wi,
                    state: None,
                    files: Vec::new(),
                    dispatch: None,
                    result: None,
                    note: format!("error: {e}"),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let done = if failed { EXIT_ERROR } else { EXIT_OK };
    if args.json {
        rows.iter().for_each(print_json);
        return Ok(done);
    }
    if rows.is_empty() {
        println!("no work items under {}", settings.repos_dir.display());
        return Ok(done);
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.repo.to_string(),
                r.work_item.to_string(),
                r.state.map_or("unreadable".to_owned(), |s| s.to_string()),
                r.files.join(","),
                r.note.clone(),
            ]
        })
        .collect();
    let header = ["REPO", "WORK ITEM", "STATE", "FILES", "NOTE"];
    print!("{}", selfdeploy::text_table::render(&header, &table));
    Ok(done)
}
