//! `selfdeploy status`: what is on disk for each work item, what happened to
//! it last, and what, if anything, blocks it.
//!
//! Per item: the state, the dispatch, the push state, the last event (the
//! history's last entry, read from the file's end) with its age, and the
//! blocking problem, if any. The table sorts items by their last activity,
//! most recent first (items with no history last); `--json` streams a line
//! per item in directory order as it is read, so that a million items cost
//! no more memory than ten.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use selfdeploy::clock::{DispatchAge, Measured};
use selfdeploy::config::Settings;
use selfdeploy::contract::hook_result::{TIMEOUT_EXIT_CODE, Verdict};
use selfdeploy::contract::markers::{Marker, TicketFile};
use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::machine::{EventName, Freeze, Outcome, StateName};
use selfdeploy::store::freeze;
use selfdeploy::store::{
    self, DispatchState, HistoryEntry, ItemPaths, Snapshot, Ticket, Unreadable, UnwrittenResult,
};

use super::{EXIT_ERROR, EXIT_OK, EXIT_USAGE, item_names, print_json};

const EXAMPLES: &str = "\
Examples:
  selfdeploy status                                   every work item, most recent activity first
  selfdeploy status --state initiated,finalized_failed
  selfdeploy status --repo orchestrator               every work item of one repo
  selfdeploy status --repo orchestrator --work-item ORCH-7 --json
  selfdeploy status --check --json                    exit 1 when any item has a PROBLEM

A PROBLEM in the NOTE column (the `problem` field with --json) blocks the item
until someone acts: it says what failed and what to do.";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Only this repo's work items (case-insensitive); with --work-item, that one item.
    #[arg(
        long,
        allow_hyphen_values = true,
        conflicts_with = "all",
        value_name = "REPO"
    )]
    repo: Option<String>,
    /// Only this work item of --repo (needs --repo).
    #[arg(
        long,
        allow_hyphen_values = true,
        requires = "repo",
        conflicts_with = "all",
        value_name = "WORK_ITEM"
    )]
    work_item: Option<String>,
    /// Only items in this state: idle, approve_requested, initiated,
    /// finalized_success or finalized_failed (repeat the option, or separate
    /// states with commas). An item whose state cannot be read is always shown.
    #[arg(long, value_delimiter = ',', value_parser = super::OneOf::new(parse_state, state_names), value_name = "STATE")]
    state: Vec<StateName>,
    /// Every work item under REPOS_DIR (the default).
    #[arg(long)]
    all: bool,
    /// One JSON object per line, per item as it is read (in directory
    /// order; the table sorts by last activity).
    #[arg(long)]
    json: bool,
    /// Exit 1 when any item shown has a PROBLEM (for cron and monitoring),
    /// 0 otherwise; the output is the same.
    #[arg(long)]
    check: bool,
}

/// The states, for completion and `--help`.
fn state_names() -> Vec<&'static str> {
    StateName::ALL.iter().map(|s| s.as_str()).collect()
}

fn parse_state(raw: &str) -> Result<StateName, String> {
    StateName::ALL
        .into_iter()
        .find(|s| s.as_str() == raw.trim())
        .ok_or_else(|| {
            let all: Vec<_> = StateName::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown state {raw:?}; expected one of {}", all.join(", "))
        })
}

/// Whether the deploy log reached `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Push {
    Pushed,
    /// Not pushed yet: every poll (and watch) retries; `push_error` says why.
    Pending,
}

/// The history's last entry, and how long ago it was written.
#[derive(Debug, Serialize)]
struct LastEvent {
    event: String,
    outcome: String,
    actor: String,
    time: String,
    /// Whole seconds from `time` to now; `None` when `time` does not parse.
    age_secs: Option<u64>,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    repo: RepoName,
    work_item: WorkItem,
    /// `None` when the item's files could not be read (`problem` says why).
    state: Option<StateName>,
    files: Vec<String>,
    /// The current dispatch and its ticket (sent, claimed, revoked, missing);
    /// `None` when nothing is initiated, or the original engine started it.
    dispatch: Option<DispatchState>,
    /// The original engine started this deploy: it has no ticket, and the
    /// legacy `result` decides.
    legacy: bool,
    result: Option<String>,
    /// Results of other dispatches (late, after a revoke or a reset): never a verdict.
    stale_results: Vec<String>,
    /// State files that are not regular files (never followed, never waited on).
    unreadable: Vec<Unreadable>,
    /// Whether the deploy log reached the remote (finalized items of ours).
    pushed: Option<bool>,
    /// `pushed`, `pending` (with `push_error`), or `None`: nothing to push,
    /// or a record written before pushes were recorded.
    push: Option<Push>,
    push_error: Option<String>,
    /// The exit code of a result that arrived after the result deadline had
    /// already finalized this dispatch as failed.
    late_result: Option<String>,
    /// Runs the host claimed that a reset kept: still running (no result),
    /// or ended, their verdict recorded in the history.
    kept_runs: Vec<KeptRunRow>,
    last_event: Option<LastEvent>,
    /// The repo's deploy freeze (`selfdeploy lock`): `approved` is refused
    /// while it is there; `null` when the repo is not locked.
    freeze: Option<Freeze>,
    /// What blocks progress until someone acts, if anything.
    problem: Option<String>,
    /// The problem (as `PROBLEM: ...`) and what the files say, for a human.
    note: String,
}

/// A run a reset kept, as `status --json` shows it.
#[derive(Debug, Serialize)]
struct KeptRunRow {
    dispatch_id: String,
    /// The hook's exit code, once its result landed.
    result: Option<String>,
    /// SUCCESS or FAILED, once its result landed.
    verdict: Option<Verdict>,
    /// Its verdict is in the history.
    recorded: bool,
}

/// The last event of an item's history, or a note on why there is none
/// although the history exists. One read from the file's end.
fn last_event(paths: &ItemPaths, now: SystemTime) -> (Option<LastEvent>, Option<String>) {
    match store::last_entry(&paths.history_file) {
        Ok(Some(entry)) => (Some(to_last_event(entry, now)), None),
        Ok(None) => {
            let written = std::fs::metadata(&paths.history_file).is_ok_and(|m| m.len() > 0);
            let note = written.then(|| {
                "the history's last line is damaged or torn (selfdeploy history shows it)"
                    .to_owned()
            });
            (None, note)
        }
        Err(e) => (
            None,
            Some(format!(
                "history {} cannot be read: {e}",
                paths.history_file.display()
            )),
        ),
    }
}

fn to_last_event(entry: HistoryEntry, now: SystemTime) -> LastEvent {
    // A time ahead of this clock (another machine's) counts as just now.
    let age_secs = humantime::parse_rfc3339(&entry.time)
        .ok()
        .map(|then| now.duration_since(then).map_or(0, |d| d.as_secs()));
    LastEvent {
        event: entry.event,
        outcome: entry.outcome,
        actor: entry.actor,
        time: entry.time,
        age_secs,
        reason: entry.reason,
    }
}

/// Whole seconds as a human reads an age: `42s`, `3m`, `5h`, `2d`.
fn human_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// An event's record waiting beside the history: `Ok(note)` when it is
/// one (the next event or watch pass writes it), `Err(problem)` when what is
/// there cannot be read (every event on the item fails until it is moved).
fn intent_state(paths: &ItemPaths) -> Option<Result<String, String>> {
    match store::read_intent(&paths.history_file) {
        Ok(None) => None,
        Ok(Some(_)) => Some(Ok(
            "an earlier event is not in the history yet: the next event or watch pass writes it"
                .to_owned(),
        )),
        Err(e) => Some(Err(format!(
            "{} cannot be read: {e}; every event on this item fails until it is moved away",
            store::intent_path(&paths.history_file).display()
        ))),
    }
}

/// The times a row is read at: the dispatch's age (an initiated item's) and
/// the wall clock.
#[derive(Clone, Copy)]
struct Clocks<'a> {
    measured: Option<&'a Measured>,
    now: SystemTime,
}

#[allow(clippy::too_many_arguments)]
fn row(
    paths: &ItemPaths,
    repo: RepoName,
    work_item: WorkItem,
    snap: Snapshot,
    last: Option<LastEvent>,
    history_note: Option<String>,
    intent: Option<Result<String, String>>,
    clocks: Clocks<'_>,
) -> Row {
    let Clocks { measured, now } = clocks;
    let record = snap.finalized.clone().flatten();
    let (push, push_error) = match record.as_ref().and_then(|r| r.pushed) {
        Some(true) => (Some(Push::Pushed), None),
        Some(false) => (
            Some(Push::Pending),
            Some(
                record
                    .as_ref()
                    .and_then(|r| r.push_error.clone())
                    .unwrap_or_else(|| "unknown error".to_owned()),
            ),
        ),
        None => (None, None),
    };
    let timed_out = record
        .as_ref()
        .is_some_and(|r| r.hook_exit_code == TIMEOUT_EXIT_CODE);
    let late_result = match (&snap.state, &snap.result) {
        (StateName::FinalizedFailed, Some(r)) if timed_out => Some(r.code.clone()),
        _ => None,
    };
    let initiated_unreadable = snap
        .unreadable
        .iter()
        .any(|u| u.file == Marker::Initiated.file_name());
    let legacy = !initiated_unreadable
        && snap.dispatch.is_none()
        && match &snap.initiated {
            Some(marker) => marker.record.is_none(),
            None => snap.state == StateName::Initiated,
        };

    let kept_runs: Vec<KeptRunRow> = snap
        .kept_runs
        .iter()
        .map(|k| KeptRunRow {
            dispatch_id: k.id.clone(),
            result: k.result.as_ref().map(|r| r.code.clone()),
            verdict: k.result.as_ref().map(|r| r.verdict()),
            recorded: k.recorded,
        })
        .collect();
    // What the last approval came to, for an item waiting for one.
    let approval = (snap.state == StateName::ApproveRequested)
        .then(|| {
            store::last_approval_outcome(&paths.history_file)
                .ok()
                .flatten()
        })
        .flatten();
    let mut problems = problems(
        &snap,
        last.as_ref(),
        approval.as_ref(),
        &push_error,
        &late_result,
        now,
    );
    // A dispatch time the clocks contradict: its timeouts are held back
    // (or, on the same boot, the wall clock was stepped).
    problems.extend(measured.and_then(Measured::problem));
    let mut intent_note = None;
    match intent {
        Some(Err(problem)) => problems.insert(0, problem),
        Some(Ok(note)) => intent_note = Some(note),
        None => {}
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    let mut notes = notes(&snap, problem.is_some(), timed_out, measured, now);
    notes.extend(history_note);
    notes.extend(intent_note);
    let note = match &problem {
        Some(p) => std::iter::once(format!("PROBLEM: {p}"))
            .chain(notes)
            .collect::<Vec<_>>()
            .join("; "),
        None => notes.join("; "),
    };
    Row {
        repo,
        work_item,
        state: Some(snap.state),
        files: snap.files,
        dispatch: snap.dispatch,
        legacy,
        result: snap.result.map(|r| r.code),
        stale_results: snap.stale_results,
        unreadable: snap.unreadable,
        pushed: record.as_ref().and_then(|r| r.pushed),
        push,
        push_error,
        late_result,
        kept_runs,
        last_event: last,
        freeze: None,
        problem,
        note,
    }
}

/// What blocks the item until someone acts, most fundamental first.
fn problems(
    snap: &Snapshot,
    last: Option<&LastEvent>,
    approval: Option<&HistoryEntry>,
    push_error: &Option<String>,
    late_result: &Option<String>,
    now: SystemTime,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(why) = snap.poll_blocker() {
        problems.push(format!("poll blocked: {why}; reset --force clears it"));
    } else if let Some(u) = snap.unreadable.first() {
        problems.push(format!("{} is unreadable: {}", u.file, u.why));
    }
    // The hook ended, but the host could not write what it came to (a full
    // disk): no poll will ever find it, only the result deadline ends it.
    let current = snap.initiated_record().map(|r| r.dispatch_id.as_str());
    for unwritten in unwritten(snap, now) {
        if Some(unwritten.id.as_str()) == current {
            problems.push(unwritten.problem());
        } else {
            problems.push(format!(
                "dispatch {} was reset while the host ran it: {}",
                unwritten.id,
                unwritten.problem()
            ));
        }
    }
    // A result waits, but the poll cannot write the deploy log.
    let missing_worktree = match (snap.state, &snap.result, snap.initiated_record()) {
        (StateName::Initiated, Some(_), Some(r)) if !Path::new(&r.worktree).is_dir() => {
            Some(r.worktree.as_str())
        }
        _ => None,
    };
    if let Some(wt) = missing_worktree {
        problems.push(format!(
            "worktree {wt} does not exist: a poll cannot write the deploy log; restore it, or poll with --worktree"
        ));
    }
    if let Some(last) = last {
        let reason = last.reason.as_deref().unwrap_or("no reason recorded");
        match last.outcome.as_str() {
            // The same missing worktree, said once.
            "error" if missing_worktree.is_some_and(|wt| reason.contains(wt)) => {}
            "error" => problems.push(format!("last {} failed: {reason}", last.event)),
            _ => {}
        }
    }
    // A failed dispatch or a refused approval stays a problem until the next
    // approval or reset, whatever came after it (a poll found illegal).
    if let Some(failed) = approval {
        let reason = failed.reason.as_deref().unwrap_or("no reason recorded");
        if failed.outcome == Outcome::DispatchFailed.as_str() {
            problems.push(format!("dispatch failed: {reason}; approve again to retry"))
        } else if failed.outcome == Outcome::Refused.as_str()
            && failed.event == EventName::Approved.as_str()
        {
            problems.push(format!(
                "approval refused: {reason}; nothing was dispatched: fix it, then approve again"
            ))
        }
    }
    if let Some(err) = push_error {
        let verdict = match snap.finalized.clone().flatten() {
            Some(r) if r.deploy_status == Verdict::Success => "the deploy succeeded".to_owned(),
            Some(r) => format!("the deploy failed (hook exit code {})", r.hook_exit_code),
            None => "the deploy is finalized".to_owned(),
        };
        problems.push(format!(
            "{verdict}, but its log was not pushed: {err}; every poll (and watch) retries"
        ));
    }
    if let Some(code) = late_result {
        let host = if code == "0" {
            "it may run the new version"
        } else {
            "the hook failed late"
        };
        problems.push(format!(
            "late result: hook exit code {code} arrived after the result deadline had failed this deploy (the verdict stays FAILED); check the host: {host}"
        ));
    }
    // A hook a reset did not stop: it may still change production.
    let ended = |id: &str| unwritten(snap, now).any(|u| u.id == id);
    for run in snap
        .kept_runs
        .iter()
        .filter(|k| k.result.is_none() && !ended(&k.id))
    {
        problems.push(format!(
            "dispatch {} was reset while the host ran it: its hook may still be running on the host (its verdict is recorded when its result lands)",
            run.id
        ));
    }
    problems
}

/// The results the host wrapper began and did not finish, past the grace
/// (a wrapper may still be between its write and its rename before it).
fn unwritten(snap: &Snapshot, now: SystemTime) -> impl Iterator<Item = &UnwrittenResult> {
    snap.unwritten_results
        .iter()
        .filter(move |u| u.settled(now))
}

/// What the files say, for a human. With a problem, what it already says
/// (and the "waiting" that it contradicts) is left out.
fn notes(
    snap: &Snapshot,
    blocked: bool,
    timed_out: bool,
    measured: Option<&Measured>,
    now: SystemTime,
) -> Vec<String> {
    let mut notes = Vec::new();
    let age = match measured.map(|m| &m.age) {
        Some(DispatchAge::Known(age)) => format!(" {} ago", human_age(age.as_secs())),
        _ => String::new(),
    };
    let dispatch = snap.dispatch.as_ref();
    let id = dispatch.map_or("", |d| d.id.as_str());
    match (snap.state, &snap.result, dispatch.map(|d| d.ticket)) {
        // What a poll would find is unknown until the unreadable file is
        // fixed: the problem says so, and nothing here guesses.
        (StateName::Initiated, ..) if snap.poll_blocker().is_some() => {}
        (StateName::Initiated, Some(r), _) if blocked => {
            notes.push(format!("result {} not finalized", r.code))
        }
        (StateName::Initiated, Some(r), _) => notes.push(format!(
            "result {} waiting to be finalized (the next poll)",
            r.code
        )),
        (StateName::Initiated, None, Some(Ticket::Sent)) => notes.push(format!(
            "dispatch {id} sent{age}, not claimed by the host yet; a poll revokes it after SELF_DEPLOY_CLAIM_TIMEOUT_SECS"
        )),
        // The hook ended without a result on disk: the problem says so.
        (StateName::Initiated, None, Some(_)) if unwritten(snap, now).any(|u| u.id == id) => {}
        (StateName::Initiated, None, Some(Ticket::Claimed)) => notes.push(format!(
            "dispatch {id} claimed by the host: the deploy is running (dispatched{age}), no result yet"
        )),
        (StateName::Initiated, None, Some(Ticket::Revoked)) => notes.push(format!(
            "dispatch {id} revoked before it ran; the next poll returns the item to approve_requested"
        )),
        (StateName::Initiated, None, Some(Ticket::Missing)) => notes.push(format!(
            "dispatch {id} has no ticket (the engine stopped before the launch); the next poll returns the item to approve_requested"
        )),
        (StateName::Initiated, None, None) if snap.initiated.is_none() => notes.push(
            "a legacy result without an exit code yet, and no initiated: a poll waits for the exit code".to_owned(),
        ),
        (StateName::Initiated, None, None) => notes.push(
            "deploy in flight (started by the original engine), no result yet".to_owned(),
        ),
        (StateName::ApproveRequested, ..) if !blocked => {
            notes.push("waiting for approval".to_owned());
            let revoked: Vec<&str> = snap
                .files
                .iter()
                .filter_map(|f| match TicketFile::parse(f) {
                    Some((TicketFile::Revoked, id)) => Some(id),
                    _ => None,
                })
                .collect();
            if !revoked.is_empty() {
                notes.push(format!(
                    "earlier dispatch {} revoked (it never ran)",
                    revoked.join(",")
                ));
            }
        }
        (StateName::ApproveRequested, ..) => {}
        (StateName::FinalizedSuccess | StateName::FinalizedFailed, ..) => {
            // A pending push is a problem, which names the verdict itself.
            let pending = snap.finalized.clone().flatten().is_some_and(|r| r.push_pending());
            if !pending {
                notes.push(verdict_note(snap, timed_out));
            }
        }
        (StateName::Idle, ..) => {}
    }
    for run in &snap.kept_runs {
        if let Some(exit) = &run.result {
            let recorded = if run.recorded {
                "recorded in the history"
            } else {
                "recorded by the next event or watch pass"
            };
            notes.push(format!(
                "dispatch {}, kept by a reset, ended {} (hook exit code {}): {recorded}; it decided nothing",
                run.id,
                exit.verdict(),
                exit.code
            ));
        }
    }
    if !snap.stale_results.is_empty() {
        notes.push(format!(
            "stale: {} (another dispatch's, never a verdict)",
            snap.stale_results.join(",")
        ));
    }
    notes
}

fn verdict_note(snap: &Snapshot, timed_out: bool) -> String {
    match snap.finalized.clone().flatten() {
        Some(_) if timed_out => "deploy failed: no result before the result deadline".to_owned(),
        Some(r) if r.deploy_status == Verdict::Success => {
            format!("deploy succeeded (hook exit code {})", r.hook_exit_code)
        }
        Some(r) => format!("deploy failed (hook exit code {})", r.hook_exit_code),
        None => "finalized; its record is not ours or unreadable: read as failed".to_owned(),
    }
}

/// A row for an item whose files could not be read at all.
fn unreadable_row(
    repo: RepoName,
    work_item: WorkItem,
    error: String,
    last: Option<LastEvent>,
) -> Row {
    Row {
        repo,
        work_item,
        state: None,
        files: Vec::new(),
        dispatch: None,
        legacy: false,
        result: None,
        stale_results: Vec::new(),
        unreadable: Vec::new(),
        pushed: None,
        push: None,
        push_error: None,
        late_result: None,
        kept_runs: Vec::new(),
        last_event: last,
        freeze: None,
        note: format!("PROBLEM: error: {error}"),
        problem: Some(format!("error: {error}")),
    }
}

/// The row of one item, `None` when the state filter leaves it out; the
/// flag says its files could not be read.
fn item_row(
    settings: &Settings,
    states: &[StateName],
    (repo, wi): (RepoName, WorkItem),
    now: SystemTime,
) -> Option<Result<Row, (Row, store::StoreError)>> {
    let paths = ItemPaths::new(&settings.repos_dir, &repo, &wi);
    let loaded = Snapshot::load(&paths);
    // An item whose state is unknown may be in any state: never filtered out.
    if let Ok(snap) = &loaded
        && !states.is_empty()
        && !states.contains(&snap.state)
    {
        return None;
    }
    let (last, history_note) = last_event(&paths, now);
    let intent = intent_state(&paths);
    let frozen = freeze::read(&settings.repos_dir, &repo).ok().flatten();
    let with_freeze = |mut row: Row| {
        row.freeze = frozen.clone();
        row
    };
    Some(match loaded {
        Ok(snap) => {
            // Only an initiated item's timeouts run on the dispatch's age.
            let measured = (snap.state == StateName::Initiated)
                .then(|| selfdeploy::engine::measure_dispatch_now(&paths, &snap));
            Ok(with_freeze(row(
                &paths,
                repo,
                wi,
                snap,
                last,
                history_note,
                intent,
                Clocks {
                    measured: measured.as_ref(),
                    now,
                },
            )))
        }
        Err(e) => Err((
            with_freeze(unreadable_row(repo, wi, e.to_string(), last)),
            e,
        )),
    })
}

/// How many items are read at once by the workers before their lines are
/// written, in order.
const CHUNK: usize = 512;

/// `--json` over many items: a line per item as soon as its chunk is read,
/// two workers reading, nothing kept.
/// Items whose only trace is an event's pending record (a reset killed
/// after it removed the state directory, before its history entry): shown,
/// so that what the history still lacks is seen, as the watch sees it.
fn pending_only(settings: &Settings, repo: Option<&RepoName>) -> Vec<(RepoName, WorkItem)> {
    let own = settings.repos_dir.join(".selfdeploy");
    let Ok(pending) = store::pending_intents(&own) else {
        return Vec::new();
    };
    let mut items: Vec<(RepoName, WorkItem)> = pending
        .into_iter()
        .filter_map(|(r, w)| Some((RepoName::new(&r).ok()?, WorkItem::new(&w).ok()?)))
        .filter(|(r, _)| repo.is_none_or(|want| want == r))
        .filter(|(r, w)| {
            std::fs::symlink_metadata(ItemPaths::new(&settings.repos_dir, r, w).state_dir).is_err()
        })
        .collect();
    items.sort();
    items.dedup();
    items
}

fn stream_json(
    settings: &Settings,
    states: &[StateName],
    repo: Option<&RepoName>,
    now: SystemTime,
    check: bool,
) -> anyhow::Result<u8> {
    use rayon::prelude::*;
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut failed = false;
    let mut items = store::walk_items(&settings.repos_dir)?.filter(|item| {
        item.as_ref()
            .map_or(true, |(r, _)| repo.is_none_or(|want| want == r))
    });
    let mut pending = Some(pending_only(settings, repo));
    loop {
        let mut chunk = items
            .by_ref()
            .take(CHUNK)
            .collect::<std::io::Result<Vec<_>>>()?;
        if chunk.is_empty() {
            match pending.take() {
                Some(only) if !only.is_empty() => chunk = only,
                _ => break,
            }
        }
        let lines = chunk
            .into_par_iter()
            .filter_map(|item| item_row(settings, states, item, now))
            .map(|row| {
                let (row, bad) = match row {
                    Ok(row) => {
                        let bad = check && row.problem.is_some();
                        (row, bad)
                    }
                    Err((row, _)) => (row, true),
                };
                serde_json::to_string(&row).map(|line| (line, bad))
            })
            .collect::<Result<Vec<(String, bool)>, _>>()?;
        for (line, bad) in lines {
            failed |= bad;
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(if failed { EXIT_ERROR } else { EXIT_OK })
}

pub fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let items = match (&args.repo, &args.work_item) {
        (Some(repo), Some(wi)) => vec![item_names(repo, wi)?],
        (repo, None) => {
            let repo = repo.as_deref().map(RepoName::new).transpose()?;
            if args.json {
                return stream_json(settings, &args.state, repo.as_ref(), now, args.check);
            }
            let mut items = store::list_items(&settings.repos_dir)?;
            items.retain(|(r, _)| repo.as_ref().is_none_or(|want| want == r));
            items.extend(pending_only(settings, repo.as_ref()));
            items
        }
        (None, Some(_)) => {
            eprintln!("selfdeploy: error: --work-item needs --repo");
            return Ok(EXIT_USAGE);
        }
    };
    let single = args.work_item.is_some();
    let mut rows = Vec::new();
    let mut failed = false;
    for item in items {
        match item_row(settings, &args.state, item, now) {
            None => {}
            Some(Ok(row)) => rows.push(row),
            // One bad item must not hide the others from an operator.
            Some(Err((row, _))) if !single => {
                failed = true;
                rows.push(row);
            }
            Some(Err((_, e))) => return Err(e.into()),
        }
    }
    // Most recent activity first; items with no history (or no readable
    // time) last; ties by repo and work item.
    rows.sort_by(|a, b| {
        let age = |r: &Row| r.last_event.as_ref().and_then(|l| l.age_secs);
        (age(a).is_none(), age(a), &a.repo, &a.work_item).cmp(&(
            age(b).is_none(),
            age(b),
            &b.repo,
            &b.work_item,
        ))
    });
    failed |= args.check && rows.iter().any(|r| r.problem.is_some());
    let done = if failed { EXIT_ERROR } else { EXIT_OK };
    if args.json {
        rows.iter().for_each(print_json);
        return Ok(done);
    }
    print_freezes(settings, args.repo.as_deref())?;
    if rows.is_empty() {
        let filtered = args.repo.is_some() || !args.state.is_empty();
        outln!(
            "no work items under {}{}",
            settings.repos_dir.display(),
            if filtered { " match" } else { "" }
        );
        return Ok(done);
    }
    let table: Vec<[String; 7]> = rows.iter().map(table_row).collect();
    let header = [
        "REPO",
        "WORK ITEM",
        "STATE",
        "DISPATCH",
        "PUSH",
        "LAST EVENT",
        "NOTE",
    ];
    out!("{}", selfdeploy::text_table::render(&header, &table));
    Ok(done)
}

/// A line per locked repo (of `--repo` only, when given), before the table:
/// whoever looks at the state sees first that approvals are refused.
fn print_freezes(settings: &Settings, repo: Option<&str>) -> anyhow::Result<()> {
    let want = repo.map(RepoName::new).transpose()?;
    for (name, frozen) in freeze::all(&settings.repos_dir)? {
        if want.as_ref().is_some_and(|w| w.to_string() != name) {
            continue;
        }
        match frozen {
            Ok(f) => outln!(
                "LOCKED {name}: by {} since {}: {} (approvals refused; `selfdeploy unlock --repo {name}`)",
                f.actor,
                f.time,
                f.message
            ),
            Err(why) => outln!(
                "LOCKED {name}: its freeze cannot be read ({why}); approvals refused until `selfdeploy unlock --repo {name}`"
            ),
        }
    }
    Ok(())
}

fn table_row(r: &Row) -> [String; 7] {
    let mut dispatch = match (&r.dispatch, r.legacy) {
        (Some(d), _) => format!("{} {}", d.ticket.as_str(), d.id),
        (None, true) => "legacy".to_owned(),
        (None, false) => "-".to_owned(),
    };
    if !r.stale_results.is_empty() {
        dispatch.push_str(&format!(" (+{} stale)", r.stale_results.len()));
    }
    let push = match r.push {
        Some(Push::Pushed) => "pushed",
        Some(Push::Pending) => "pending",
        None => "-",
    };
    let last = match &r.last_event {
        Some(l) => match l.age_secs {
            Some(age) => format!("{} {} {} ago", l.event, l.outcome, human_age(age)),
            None => format!("{} {} at {}", l.event, l.outcome, l.time),
        },
        None => "-".to_owned(),
    };
    [
        r.repo.to_string(),
        r.work_item.to_string(),
        r.state.map_or("unreadable".to_owned(), |s| s.to_string()),
        dispatch,
        push.to_owned(),
        last,
        r.note.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        let shown: Vec<String> = [0, 59, 60, 3599, 3600, 86399, 86400, 200_000]
            .into_iter()
            .map(human_age)
            .collect();
        assert_eq!(shown, ["0s", "59s", "1m", "59m", "1h", "23h", "1d", "2d"]);
    }

    #[test]
    fn a_state_is_named_as_the_machine_prints_it() {
        assert_eq!(
            parse_state("finalized_failed"),
            Ok(StateName::FinalizedFailed)
        );
        let err = parse_state("finalized").unwrap_err();
        assert!(
            err.contains("idle, approve_requested, initiated, finalized_success, finalized_failed"),
            "{err}"
        );
    }
}
