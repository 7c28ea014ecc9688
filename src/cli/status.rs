//! `selfdeploy status`: what is on disk for one work item, or for all.

use serde::Serialize;

use selfdeploy::config::Settings;
use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::machine::StateName;
use selfdeploy::store::{self, DispatchState, ItemPaths, Snapshot, Ticket, Unreadable};

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
    /// The current dispatch and its ticket (sent, claimed, revoked, missing);
    /// `None` when nothing is initiated, or the original engine started it.
    dispatch: Option<DispatchState>,
    result: Option<String>,
    /// Results of other dispatches (late, after a revoke or a reset): never a verdict.
    stale_results: Vec<String>,
    /// State files that are not regular files (never followed, never waited on).
    unreadable: Vec<Unreadable>,
    /// Whether the deploy log reached the remote (finalized items of ours).
    pushed: Option<bool>,
    note: String,
}

fn row(repo: RepoName, work_item: WorkItem, snap: Snapshot, now: &str) -> Row {
    let result = snap.result.as_ref().map(|r| r.code.clone());
    let mut notes = Vec::new();
    if let Some(why) = snap.poll_blocker() {
        notes.push(format!("poll blocked: {why}; reset --force clears it"));
    } else if let Some(u) = snap.unreadable.first() {
        notes.push(format!("{} is unreadable: {}", u.file, u.why));
    }
    let age = snap
        .initiated_record()
        .and_then(|r| waited(&r.approved_at, now))
        .map_or(String::new(), |s| format!(" {s} s ago"));
    let dispatch = snap.dispatch.as_ref();
    let id = dispatch.map_or("", |d| d.id.as_str());
    match (snap.state, &snap.result, dispatch.map(|d| d.ticket)) {
        (StateName::Initiated, Some(r), _) => notes.push(format!(
            "result {} waiting to be finalized (poll)",
            r.code
        )),
        (StateName::Initiated, None, Some(Ticket::Sent)) => notes.push(format!(
            "dispatch {id} sent{age}, not claimed by the host yet; a poll revokes it after SELF_DEPLOY_CLAIM_TIMEOUT_SECS"
        )),
        (StateName::Initiated, None, Some(Ticket::Claimed)) => notes.push(format!(
            "dispatch {id} claimed by the host: the deploy is running (dispatched{age}), no result yet"
        )),
        (StateName::Initiated, None, Some(Ticket::Revoked)) => notes.push(format!(
            "dispatch {id} revoked before it ran; the next poll returns the item to approve_requested"
        )),
        (StateName::Initiated, None, Some(Ticket::Missing)) => notes.push(format!(
            "dispatch {id} has no ticket (the engine stopped before the launch); the next poll returns the item to approve_requested"
        )),
        (StateName::Initiated, None, None) if snap.initiated.is_none() => {
            notes.push("result without initiated".to_owned())
        }
        (StateName::Initiated, None, None) => {
            notes.push("deploy in flight (started by the original engine), no result yet".to_owned())
        }
        (StateName::ApproveRequested, ..) => notes.push("waiting for approval".to_owned()),
        (StateName::FinalizedSuccess | StateName::FinalizedFailed, ..) => {
            let record = snap.finalized.clone().flatten();
            let code = record.as_ref().map(|f| f.hook_exit_code.as_str());
            notes.push(format!("hook exit code {}", code.unwrap_or("unknown")));
            if let Some(record) = record.as_ref().filter(|r| r.push_pending()) {
                notes.push(format!(
                    "not pushed: {}; every poll (and watch) retries",
                    record.push_error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        (StateName::Idle, ..) => {}
    }
    if !snap.stale_results.is_empty() {
        notes.push(format!(
            "stale: {} (another dispatch's, never a verdict)",
            snap.stale_results.join(",")
        ));
    }
    Row {
        repo,
        work_item,
        state: Some(snap.state),
        files: snap.files,
        dispatch: snap.dispatch,
        result,
        stale_results: snap.stale_results,
        unreadable: snap.unreadable,
        pushed: snap.finalized.flatten().and_then(|r| r.pushed),
        note: notes.join("; "),
    }
}

/// Whole seconds from `then` to `now` (RFC 3339), when both parse.
fn waited(then: &str, now: &str) -> Option<u64> {
    let then = humantime::parse_rfc3339(then).ok()?;
    let now = humantime::parse_rfc3339(now).ok()?;
    now.duration_since(then).ok().map(|d| d.as_secs())
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
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut rows = Vec::new();
    let mut failed = false;
    for (repo, wi) in items {
        match Snapshot::load(&ItemPaths::new(&settings.repos_dir, &repo, &wi)) {
            Ok(snap) => rows.push(row(repo, wi, snap, &now)),
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
                    stale_results: Vec::new(),
                    unreadable: Vec::new(),
                    pushed: None,
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
