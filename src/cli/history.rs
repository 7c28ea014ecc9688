//! `selfdeploy history`: the journal of one work item, or with `--all` one
//! audit trail across every item, newest first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;

use selfdeploy::config::Settings;
use serde::Serialize;

use selfdeploy::contract::names::{RepoName, WorkItem};
use selfdeploy::store::{
    self, HistoryEntry, HistoryKeys, HistoryLine, ItemPaths, Verification, freeze,
};
use selfdeploy::text_table;

use super::{EXIT_ERROR, EXIT_OK, item_names, print_json};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy history --repo orchestrator --work-item ORCH-42
  selfdeploy history --repo orchestrator --work-item ORCH-42 --json
  selfdeploy history --repo orchestrator --work-item ORCH-42 --verify --json
  selfdeploy history --all --since 24h                 every item's events of the last day, newest first
  selfdeploy history --all --repo orchestrator --since 2026-12-01T00:00:00Z --limit 0 --json")]
pub struct Args {
    /// The repository the work item belongs to (case does not matter); with
    /// --all, only this repo's items.
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "REPO",
        required_unless_present = "all"
    )]
    repo: Option<String>,
    /// The work item, as the stage engine names it (e.g. ORCH-42).
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    work_item: Option<String>,
    /// Every item's history as one audit trail, newest first (items a reset
    /// removed included).
    #[arg(long, conflicts_with = "verify")]
    all: bool,
    /// With --all: only entries at or after this time, an RFC 3339 time
    /// (2026-12-01T00:00:00Z) or an age (90m, 24h, 7d).
    #[arg(long, requires = "all", value_name = "TIME")]
    since: Option<String>,
    /// With --all: at most this many entries, the newest (0: all of them;
    /// memory grows with the entries shown, never with the items).
    #[arg(long, requires = "all", value_name = "N", default_value_t = 200)]
    limit: usize,
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
    if args.all {
        return all(settings, &args);
    }
    let (repo, wi) = item_names(
        args.repo.as_deref().unwrap_or_default(),
        args.work_item.as_deref().unwrap_or_default(),
    )?;
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
    print_freeze_trail(settings, &repo);
    Ok(EXIT_OK)
}

/// The repo's deploy freezes (`selfdeploy lock` / `unlock`), after an item's
/// table: a freeze is the repo's, so its trail is kept once per repo and
/// shown with each of its items. Nothing when the repo was never locked.
fn print_freeze_trail(settings: &Settings, repo: &selfdeploy::contract::names::RepoName) {
    let trail = match freeze::read_audit(&settings.repos_dir, repo) {
        Ok(trail) => trail,
        Err(e) => {
            eprintln!(
                "selfdeploy: warning: {} cannot be read: {e}",
                freeze::audit_path(&settings.repos_dir, repo).display()
            );
            return;
        }
    };
    if trail.is_empty() {
        return;
    }
    outln!("");
    outln!("deploy freezes of repo {repo}:");
    let rows: Vec<[String; 4]> = trail
        .into_iter()
        .map(|e| [e.time, e.actor, e.event, e.message])
        .collect();
    out!(
        "{}",
        text_table::render(&["TIME", "ACTOR", "EVENT", "MESSAGE"], &rows)
    );
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

/// One entry of the audit trail: the item it belongs to, and the entry.
#[derive(Debug, Serialize)]
struct AuditEntry {
    repo: String,
    work_item: String,
    #[serde(flatten)]
    entry: HistoryEntry,
}

/// Where an entry sorts: its time (one that does not parse sorts oldest),
/// then its item and its place in the item's history, so that the order is
/// stable.
type AuditKey = (Option<SystemTime>, String, String, usize);

/// `--since`: an RFC 3339 time, or an age counted back from `now`.
fn since(raw: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    if let Ok(time) = humantime::parse_rfc3339_weak(raw) {
        return Ok(time);
    }
    let age = humantime::parse_duration(raw).map_err(|_| {
        anyhow::anyhow!(
            "--since {raw:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor an age (90m, 24h, 7d)"
        )
    })?;
    Ok(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// Every history file under REPOS_DIR's `.selfdeploy/history`, as
/// (repo, work item, path), one directory at a time: a history survives the
/// reset that removed its item's state directory.
fn histories(
    settings: &Settings,
    repo: Option<&RepoName>,
) -> anyhow::Result<Vec<(RepoName, PathBuf)>> {
    let root = settings.repos_dir.join(".selfdeploy").join("history");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    let mut repos = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| RepoName::new(n).ok())
        else {
            continue;
        };
        if name.as_str() != name.given() || repo.is_some_and(|want| *want != name) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            repos.push((name, entry.path()));
        }
    }
    repos.sort();
    Ok(repos)
}

fn all(settings: &Settings, args: &Args) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let since = args.since.as_deref().map(|s| since(s, now)).transpose()?;
    let repo = args.repo.as_deref().map(RepoName::new).transpose()?;
    // The newest `limit` entries, the oldest of them on top to be dropped
    // first: memory is bounded by the limit, whatever the number of items.
    let mut heap: BinaryHeap<Reverse<(AuditKey, AuditEntryOrd)>> = BinaryHeap::new();
    for (repo, dir) in histories(settings, repo.as_ref())? {
        let files =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for file in files {
            let file = file.with_context(|| format!("cannot read {}", dir.display()))?;
            let name = file.file_name();
            let Some(wi) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| WorkItem::new(n).ok())
            else {
                continue;
            };
            let entries = store::read_entries(&file.path())
                .with_context(|| format!("cannot read {}", file.path().display()))?;
            for (n, entry) in entries.into_iter().enumerate() {
                let time = humantime::parse_rfc3339_weak(&entry.time).ok();
                if let Some(since) = since
                    && time.is_none_or(|t| t < since)
                {
                    continue;
                }
                let key = (time, repo.to_string(), wi.to_string(), n);
                heap.push(Reverse((
                    key,
                    AuditEntryOrd(AuditEntry {
                        repo: repo.to_string(),
                        work_item: wi.to_string(),
                        entry,
                    }),
                )));
                if args.limit > 0 && heap.len() > args.limit {
                    heap.pop();
                }
            }
        }
    }
    // Newest first.
    let newest: Vec<AuditEntry> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse((_, AuditEntryOrd(e)))| e)
        .collect();
    if args.json {
        newest.iter().for_each(print_json);
        return Ok(EXIT_OK);
    }
    if newest.is_empty() {
        outln!("no history under {}", settings.repos_dir.display());
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 9]> = newest
        .into_iter()
        .map(|a| {
            let e = a.entry;
            [
                e.time,
                a.repo,
                a.work_item,
                e.actor,
                e.event,
                e.from,
                e.to,
                e.outcome,
                e.reason.unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "TIME",
        "REPO",
        "WORK ITEM",
        "ACTOR",
        "EVENT",
        "FROM",
        "TO",
        "OUTCOME",
        "REASON",
    ];
    out!("{}", text_table::render(&header, &rows));
    Ok(EXIT_OK)
}

/// An entry carried in the heap: only its key orders it (two entries with
/// equal keys are one place in one history, so never both there).
#[derive(Debug)]
struct AuditEntryOrd(AuditEntry);

impl PartialEq for AuditEntryOrd {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for AuditEntryOrd {}
impl PartialOrd for AuditEntryOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AuditEntryOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}
