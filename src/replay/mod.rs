//! Offline replays of recorded situations (fixtures): the regression corpus.
//! Deterministic: an injected clock, no randomness, no ssh, no git, no host.

mod capture;
pub mod fixture;
pub mod runner;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use capture::capture;
pub use fixture::{Act, EventStep, Expect, Fixture, Step, parse as parse_fixture};
pub use runner::{Actual, Faults, Mismatch, Replayer, compare};

use crate::table::Row;

/// The verdict on one fixture.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub path: PathBuf,
    pub steps: usize,
    /// `None`: PASS. Otherwise what differed, ready to print.
    pub failure: Option<String>,
    /// The table rows the fixture's events took.
    pub rows: Vec<Row>,
}

/// Replays one fixture file.
pub fn replay_file(path: &Path) -> Verdict {
    let verdict = |failure: Option<String>, steps, rows| Verdict {
        path: path.to_path_buf(),
        steps,
        failure,
        rows,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return verdict(Some(format!("cannot read: {e}")), 0, Vec::new()),
    };
    match fixture::parse(&text) {
        Ok(f) => {
            let (failure, rows) = replay(&f);
            verdict(failure, f.steps.len(), rows)
        }
        Err(e) => verdict(Some(format!("{}:{e}", path.display())), 0, Vec::new()),
    }
}

/// Replays a parsed fixture: the first failure, and the rows taken.
pub fn replay(f: &Fixture) -> (Option<String>, Vec<Row>) {
    let mut rows = Vec::new();
    let mut replayer = match Replayer::new(f) {
        Ok(r) => r,
        Err(e) => return (Some(format!("fixture: {e}")), rows),
    };
    if let Some(initial) = &f.initial {
        let diffs = compare(initial, &replayer.observe(), false);
        if !diffs.is_empty() {
            return (Some(render("initial files", &diffs)), rows);
        }
    }
    for (i, step) in f.steps.iter().enumerate() {
        let label = format!("step {} ({})", i + 1, describe(&step.act));
        let is_event = matches!(step.act, Act::Event(_));
        if is_event && (step.expect.outcome.is_none() || step.expect.effects.is_none()) {
            return (
                Some(format!(
                    "{label}: an event step must state its outcome and effects"
                )),
                rows,
            );
        }
        let actual = match replayer.apply(&step.act) {
            Ok(actual) => actual,
            Err(e) => return (Some(format!("{label}: fixture: {e}")), rows),
        };
        rows.extend(actual.row.clone());
        let mut diffs = compare(&step.expect, &actual, is_event);
        if let Act::Crash { after, .. } = &step.act
            && !actual.crashed
        {
            diffs.push(Mismatch {
                field: "crash",
                expected: format!(
                    "dies after {}",
                    crate::text_table::counted(*after as u64, "effect", "effects")
                ),
                actual: actual.error.clone().unwrap_or_default(),
            });
        }
        if !diffs.is_empty() {
            return (Some(render(&label, &diffs)), rows);
        }
    }
    (None, rows)
}

fn describe(act: &Act) -> String {
    match act {
        Act::Event(e) => format!("event {}", e.event),
        Act::HostWritesResult(c) => format!("host writes result {c:?}"),
        Act::HostClaims => "host claims the ticket".to_owned(),
        Act::LateResult { dispatch, content } => {
            format!("late result {content:?} of dispatch {dispatch}")
        }
        Act::Crash { after, event } => format!(
            "event {} dies after {}",
            event.event,
            crate::text_table::counted(*after as u64, "effect", "effects")
        ),
        Act::TimePasses(s) => format!("{s} s pass"),
        Act::ClockSteps(s) => format!("the wall clock steps by {s} s"),
        Act::Reboot => "the machine reboots".to_owned(),
        Act::LockHeld(e) => format!("event {} while another process holds the lock", e.event),
    }
}

fn render(label: &str, diffs: &[Mismatch]) -> String {
    let short = diffs
        .iter()
        .all(|d| d.expected.len() <= 48 && d.actual.len() <= 48);
    let mut out = format!("first difference at {label}:\n");
    if short {
        let _ = writeln!(out, "    {:<9} {:<48}  actual", "field", "expected");
        for d in diffs {
            let _ = writeln!(out, "    {:<9} {:<48}  {}", d.field, d.expected, d.actual);
        }
        return out;
    }
    for d in diffs {
        if d.expected.len() <= 100 && d.actual.len() <= 100 {
            let _ = writeln!(
                out,
                "    {}:\n      expected: {}\n      actual:   {}",
                d.field, d.expected, d.actual
            );
            continue;
        }
        let (expected, actual, at) = excerpt(&d.expected, &d.actual);
        let _ = writeln!(out, "    {} (first difference at character {at}):", d.field);
        let _ = writeln!(out, "      expected: {expected}");
        let _ = writeln!(out, "      actual:   {actual}");
    }
    out
}

/// The two texts around their first difference, so long values stay readable.
fn excerpt(expected: &str, actual: &str) -> (String, String, usize) {
    let e: Vec<char> = expected.chars().collect();
    let a: Vec<char> = actual.chars().collect();
    let at = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let cut = |text: &[char]| {
        let start = at.saturating_sub(30);
        let end = (at + 30).min(text.len());
        let mut s: String = text[start..end].iter().collect();
        if start > 0 {
            s.insert(0, '…');
        }
        if end < text.len() {
            s.push('…');
        }
        s
    };
    (cut(&e), cut(&a), at)
}

/// Every `.ron` file under `path` (or `path` itself), sorted.
pub fn fixture_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_dir() {
            files.extend(fixture_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "ron") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Rows of the table no replay took.
pub fn uncovered(table: &[Row], taken: &[Row]) -> Vec<Row> {
    table
        .iter()
        .filter(|r| !taken.contains(r))
        .cloned()
        .collect()
}
