//! `selfdeploy event`: one event, one report.

use std::path::PathBuf;

use selfdeploy::config::Settings;
use selfdeploy::contract::names::BranchName;
use selfdeploy::engine::{self, Request};
use selfdeploy::exec::{HostPerformer, RecordingPerformer};
use selfdeploy::machine::EventName;
use selfdeploy::probe::HostProbe;

use super::{
    EXIT_ERROR_AFTER_CHANGE, EXIT_INTERRUPTED, EXIT_UNRECORDED, EXIT_USAGE, item_names, print_json,
};

/// The event and its arguments, shared with `explain`.
#[derive(Debug, clap::Args)]
pub struct EventArgs {
    /// request-approve | approved | poll | merge-verified | reset
    #[arg(value_parser = super::OneOf::new(parse_event, event_names))]
    event: EventName,
    /// The repository the work item belongs to (case does not matter).
    #[arg(long, allow_hyphen_values = true, value_name = "REPO")]
    repo: String,
    /// The work item, as the stage engine names it (e.g. ORCH-42).
    #[arg(long, allow_hyphen_values = true, value_name = "ID")]
    work_item: String,
    /// The work item's branch (recorded at approval; used for the push).
    #[arg(long)]
    branch: Option<String>,
    /// The work item's git worktree (recorded at approval).
    #[arg(long, value_name = "PATH")]
    worktree: Option<PathBuf>,
    /// The validated commit SHA (else read from the branch tip).
    #[arg(long, value_name = "SHA")]
    revision: Option<String>,
    /// For merge-verified: whether the branch reached main.
    #[arg(long, value_parser = parse_bool, value_name = "true|false")]
    merged: Option<bool>,
    /// For reset: reset a deploy that may be in flight (initiated, or
    /// finalized while its claimed hook has no result). For approved:
    /// dispatch although a run an earlier reset kept has no result yet.
    #[arg(long)]
    force: bool,
    /// Who delivers the event, recorded in markers and history [default:
    /// $SUDO_USER, else $USER, else selfdeploy].
    #[arg(long, value_name = "NAME")]
    actor: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy event request-approve --repo orchestrator --work-item ORCH-42
  selfdeploy event approved --repo orchestrator --work-item ORCH-42 --branch feat/x --worktree \"$WORKTREE\" --json
  selfdeploy event poll --repo orchestrator --work-item ORCH-42 --dry-run
  selfdeploy event merge-verified --repo orchestrator --work-item ORCH-42 --merged true
  selfdeploy event reset --repo orchestrator --work-item ORCH-42 --force

Exit status: 0 transitioned, unchanged or deferred; 3 refused, illegal or
dispatch_failed; 1 an error (nothing done); 2 a usage error; 4 the event
ran as reported but its history entry could not be appended (it is kept and
written by the next event or watch pass); 5 an error after the event had
changed something (stderr says what); 130 interrupted before it acted.")]
pub struct Args {
    #[command(flatten)]
    target: EventArgs,
    /// Perform nothing, write nothing; print what would happen.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON object on one line.
    #[arg(long)]
    json: bool,
}

/// The events, for completion and `--help`.
fn event_names() -> Vec<&'static str> {
    EventName::ALL.iter().map(|e| e.as_str()).collect()
}

fn parse_event(raw: &str) -> Result<EventName, String> {
    EventName::parse(raw).ok_or_else(|| {
        let all: Vec<_> = EventName::ALL.iter().map(|e| e.as_str()).collect();
        format!("unknown event {raw:?}; expected one of {}", all.join(", "))
    })
}

/// A `--revision` is passed to the hook as EXPECTED_REVISION and compared
/// with the image's: it must look like a commit id (7 to 64 hex digits:
/// an abbreviated or full SHA-1 or SHA-256), never a ref or an option.
fn check_revision(raw: &str) -> anyhow::Result<&str> {
    let hex = raw.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (7..=64).contains(&raw.len()) {
        return Ok(raw);
    }
    anyhow::bail!(
        "--revision {raw:?} is not a commit id: expected 7 to 64 hexadecimal characters (e.g. `git rev-parse HEAD`)"
    )
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, not {raw:?}")),
    }
}

impl EventArgs {
    /// The request, or `Err(exit status)` after printing why not.
    pub fn request(self) -> anyhow::Result<Result<Request, u8>> {
        let (repo, work_item) = item_names(&self.repo, &self.work_item)?;
        if self.event == EventName::MergeVerified && self.merged.is_none() {
            eprintln!("selfdeploy: error: merge-verified needs --merged true|false");
            return Ok(Err(EXIT_USAGE));
        }
        let revision = match self.revision {
            // A blank --revision (an empty variable) is no revision.
            Some(raw) if raw.trim().is_empty() => None,
            Some(raw) => Some(check_revision(raw.trim())?.to_owned()),
            None => None,
        };
        Ok(Ok(Request {
            repo,
            work_item,
            event: self.event,
            branch: self.branch.as_deref().map(BranchName::new).transpose()?,
            worktree: self.worktree,
            revision,
            merged: self.merged,
            force: self.force,
            actor: self.actor.unwrap_or_else(default_actor),
        }))
    }
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let request = match args.target.request()? {
        Ok(request) => request,
        Err(code) => return Ok(code),
    };
    // A dry run is the recording performer: it reads the same facts and
    // performs nothing.
    let handled = if args.dry_run {
        engine::handle(
            settings,
            &request,
            &mut HostProbe,
            &mut RecordingPerformer::default(),
        )
    } else {
        // An event that has begun to act is finished and recorded, never
        // cancelled half-way; a signal before that stops it with nothing done.
        selfdeploy::interrupt::install();
        engine::handle(
            settings,
            &request,
            &mut HostProbe,
            &mut HostPerformer { settings },
        )
    };
    let report = match handled {
        Ok(report) => report,
        Err(error @ engine::EngineError::Interrupted(_)) => {
            eprintln!("selfdeploy: {error}");
            return Ok(EXIT_INTERRUPTED);
        }
        Err(error) if error.changed_something() => {
            eprintln!("selfdeploy: error: {error}");
            return Ok(EXIT_ERROR_AFTER_CHANGE);
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    if selfdeploy::interrupt::received().is_some() {
        eprintln!(
            "selfdeploy: {} arrived while the event acted: it was finished, not cancelled half-way ({} -> {}: {})",
            selfdeploy::interrupt::received_names(),
            report.from,
            report.to,
            report.outcome
        );
    }
    if let Some(error) = &report.history_error {
        eprintln!("selfdeploy: error: {error}");
        return Ok(EXIT_UNRECORDED);
    }
    Ok(report.outcome.exit_code() as u8)
}

pub fn print_report(report: &engine::Report) {
    let dry = if report.dry_run { " (dry run)" } else { "" };
    outln!(
        "{}/{}: {}: {} -> {}: {}{dry}",
        report.repo,
        report.work_item,
        report.event,
        report.from,
        report.to,
        report.outcome
    );
    outln!("  condition: {}", report.condition);
    if let Some(reason) = &report.reason {
        outln!("  reason: {reason}");
    }
    for effect in &report.effects {
        outln!("  effect: {}", selfdeploy::effect::describe(effect));
    }
    for note in &report.notes {
        outln!("  note: {note}");
    }
}

/// The person behind the command: the user who ran `sudo`, else the user,
/// else `selfdeploy`.
pub(super) fn default_actor() -> String {
    ["SUDO_USER", "USER"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "selfdeploy".to_owned())
}
