//! `selfdeploy snapshot`: the live state of one work item as a fixture, so
//! that an incident becomes a regression case in one command.

use std::collections::BTreeMap;

use super::fixture::{Expect, Fixture};
use crate::config::{Settings, Source};
use crate::contract::names::{RepoName, WorkItem};
use crate::store::{self, ItemPaths, Snapshot};

/// Settings a replay sets itself: a captured value would only point at this
/// machine.
const NOT_CAPTURED: [&str; 1] = ["REPOS_DIR"];

/// A state file larger than this is not captured (it is no marker or result).
const CAPTURE_LIMIT: u64 = 1024 * 1024;

/// How much of the hook's output's end a fixture keeps, at most.
const HOOK_LOG_EXCERPT: u64 = 2048;

/// The last `limit` bytes of a regular file (never a symlink or a FIFO).
fn read_tail(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = store::open_regular(path, std::fs::OpenOptions::new().read(true))?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(limit)))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A fixture's excerpt of the hook's output: whole lines of its end, each
/// word that looks like a secret redacted (`NAME=value` keeps the name; a
/// token, a long hex or base64 run goes whole), with a first line saying so.
pub fn hook_log_excerpt(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let mut lines: Vec<&str> = text.lines().collect();
    // The first line may be cut by the excerpt.
    if tail.len() as u64 >= HOOK_LOG_EXCERPT && lines.len() > 1 {
        lines.remove(0);
    }
    let mut out = format!(
        "[selfdeploy snapshot: the last lines of hook.log (at most {HOOK_LOG_EXCERPT} bytes), secrets redacted]\n"
    );
    for line in lines {
        let words: Vec<String> = line.split(' ').map(redact_word).collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

const REDACTED_WORD: &str = "<redacted>";

fn redact_word(word: &str) -> String {
    if let Some((name, value)) = word.split_once(['=', ':'])
        && !name.is_empty()
        && !value.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().any(|c| c.is_ascii_alphabetic())
        && (name.chars().all(|c| !c.is_ascii_lowercase()) || looks_secret_name(name))
    {
        let sep = &word[name.len()..=name.len()];
        return format!("{name}{sep}{REDACTED_WORD}");
    }
    if looks_secret_value(word) {
        return REDACTED_WORD.to_owned();
    }
    word.to_owned()
}

fn looks_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "credential",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// A token with a known prefix, or a run of 20 or more hex or base64
/// characters (a key, a digest, a credential).
fn looks_secret_value(word: &str) -> bool {
    let word = word.trim_matches(|c: char| "\"'`,;()[]{}<>".contains(c));
    let prefixed = [
        "ghp_",
        "gho_",
        "github_pat_",
        "glpat-",
        "xox",
        "AKIA",
        "sk-",
        "eyJ",
    ]
    .iter()
    .any(|p| word.starts_with(p) && word.len() >= 12);
    let run = word
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-')))
        .any(|part| part.len() >= 20 && part.chars().any(|c| c.is_ascii_digit()));
    prefixed || run
}

/// Why an item could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot read the history")]
    History(#[from] std::io::Error),
}

pub fn capture(
    settings: &Settings,
    repo: &RepoName,
    work_item: &WorkItem,
    now: std::time::SystemTime,
) -> Result<Fixture, CaptureError> {
    let paths = ItemPaths::new(&settings.repos_dir, repo, work_item);
    let snapshot = Snapshot::load(&paths)?;
    let mut files = BTreeMap::new();
    // Read as the engine reads state files: a symlink is never followed (its
    // target could be anything on this machine), a FIFO never waited on.
    for name in &snapshot.files {
        // The hook's output is no state: a replay never reads it, and it can
        // hold anything the hook printed. An excerpt of its end, redacted.
        if name == crate::contract::remote::HOOK_LOG_FILE {
            if let Ok(bytes) = read_tail(&paths.state_dir.join(name), HOOK_LOG_EXCERPT) {
                files.insert(name.clone(), hook_log_excerpt(&bytes));
            }
            continue;
        }
        if let Ok(bytes) = store::read_regular(&paths.state_dir.join(name), CAPTURE_LIMIT) {
            files.insert(name.clone(), String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    // A secret is recorded as `<redacted>`: fixtures are committed. A replay
    // of the fixture signs its history with that placeholder, which works.
    let captured: BTreeMap<String, String> = settings
        .resolved
        .iter()
        .filter(|r| r.source != Source::Default && !NOT_CAPTURED.contains(&r.name))
        .map(|r| (r.name.to_owned(), r.shown().to_owned()))
        .collect();
    Ok(Fixture {
        description: format!(
            "captured from {repo}/{work_item} at {}",
            crate::clock::rfc3339_seconds(now)
        ),
        settings: captured,
        repo: repo.to_string(),
        work_item: work_item.to_string(),
        clock: crate::clock::rfc3339_seconds(now),
        files,
        history: store::read_entries(&paths.history_file)?,
        initial: Some(Expect {
            state: snapshot.state.to_string(),
            files: Some(snapshot.files),
            ..Expect::default()
        }),
        steps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_log_excerpt_is_capped_and_redacted() {
        let log = "hook: deploying app:staging as app:prod\n\
                   API_KEY=hunter2hunter2 token: abc\n\
                   pulled sha256:0123456789abcdef0123456789abcdef0123\n\
                   auth ghp_abcdefghijklmnopqrstuvwxyz012345 ok\n\
                   deployed: app:prod\n";
        let out = hook_log_excerpt(log.as_bytes());
        assert!(out.starts_with("[selfdeploy snapshot:"), "{out}");
        assert!(
            out.contains("hook: deploying app:staging as app:prod"),
            "{out}"
        );
        assert!(out.contains("API_KEY=<redacted>"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("0123456789abcdef"), "{out}");
        assert!(!out.contains("ghp_"), "{out}");
        assert!(out.contains("deployed: app:prod"), "{out}");
        let huge = "x".repeat(10_000) + "\nlast line\n";
        let tail = &huge.as_bytes()[huge.len() - HOOK_LOG_EXCERPT as usize..];
        let out = hook_log_excerpt(tail);
        assert!(out.len() < HOOK_LOG_EXCERPT as usize + 200, "{}", out.len());
        assert!(out.ends_with("last line\n"), "{out}");
    }
}
