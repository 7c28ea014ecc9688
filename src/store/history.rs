//! The history of a work item: append-only JSON lines that survive reset.
//!
//! History is evidence, so two rules hold whatever is in the file:
//!
//! - **Appends never fail because of the file's content.** A torn last line
//!   (a crash mid-append) is moved aside to `<item>.jsonl.torn` and reported;
//!   a line that is not an entry (undecodable bytes, an edit) stays where it
//!   is and the new entry is written after it.
//! - **Reading never stops at a damaged line**: it is shown as damaged.
//!
//! With `HISTORY_HMAC_KEY` set, the history is tamper-evident:
//!
//! - every signed line carries `key_id` (a fingerprint of the key, never the
//!   key) and `mac`, the hex HMAC-SHA256, under that key, of the previous
//!   signed line's `mac` (empty for the first), the entry's canonical bytes
//!   (its JSON without `key_id` and `mac`, fields in the order of
//!   [`HistoryEntry`]), a newline and the key id. Editing, dropping or
//!   reordering entries breaks the chain at the first entry concerned. When
//!   the key is rotated, the first entry under the new key links to the last
//!   one under the old; the old key verifies the older segment when it is
//!   listed in `HISTORY_HMAC_PREVIOUS_KEYS`.
//! - the head file `<item>.jsonl.head`, rewritten atomically after each
//!   signed append, holds the number of entries, the signing key's id and the
//!   HMAC of `head`, that number and the last entry's `mac`, so that dropping
//!   entries from the end is detected too.
//!
//! Entries written before signing was turned on are reported as unsigned and
//! the chain starts at the first signed one; an unsigned entry after it is a
//! break. A crash between an append and its head write leaves the head one
//! entry behind; [`verify_history`] accepts that (and only that) lag, and the
//! next append repairs it. The chain cannot tell a history deleted whole (with
//! its head) from one never written. Lines signed by the previous release
//! (a `mac` without `key_id`) are checked with that release's construction.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::open_regular;
use crate::atomic;
use crate::config::{Durability, Secret};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: String,
    pub actor: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub outcome: String,
    pub reason: Option<String>,
    #[serde(default)]
    pub effects: Vec<String>,
}

/// One line of the history file: the entry, and its key id and MAC when
/// signed. They are kept out of [`HistoryEntry`] so that the entry stays what
/// the engine records and what replay fixtures hold.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    entry: HistoryEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// The head file: how many entries the history has and the MAC binding that
/// count to the last entry's MAC, under the key named.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    entries: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    mac: String,
}

/// A line of the history as read: an entry, or a line that is not one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HistoryLine {
    Entry {
        #[serde(flatten)]
        entry: HistoryEntry,
        /// The same event came again this many more times with the same
        /// outcome and nothing changed (a deferred poll, a repeated error):
        /// recorded once, counted.
        #[serde(skip_serializing_if = "Option::is_none")]
        repeats: Option<Repeats>,
    },
    Damaged {
        /// 1-based, as `history` numbers entries.
        entry: usize,
        damaged: String,
    },
}

/// The history's name for the verdict of a run a reset kept.
pub const LATE_RESULT_EVENT: &str = "late-result";

/// The dispatch ids whose late verdict (`late-result`) the history holds.
/// The history is the one record of it: a mark beside it could be planted.
pub fn late_results_recorded(path: &Path) -> io::Result<Vec<String>> {
    Ok(read_entries(path)?
        .into_iter()
        .filter(|e| e.event == LATE_RESULT_EVENT)
        .filter_map(|e| {
            let reason = e.reason?;
            let id = reason.strip_prefix("dispatch ")?.split(' ').next()?;
            Some(id.to_owned())
        })
        .collect())
}

/// How often an entry's event came again, changing nothing, and when last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    pub count: u64,
    pub last: String,
}

/// One run of repeats in `<item>.jsonl.repeats`: of the entry that ends at
/// byte `at` of the history (append-only, so an offset names an entry).
#[derive(Debug, Serialize, Deserialize)]
struct RepeatRun {
    at: u64,
    count: u64,
    last: String,
}

/// `<item>.jsonl.repeats`: the counts of entries that came again.
pub fn repeats_path(history: &Path) -> PathBuf {
    with_suffix(history, ".repeats")
}

/// The counts, or `None` when the file is not one this engine can read and
/// rewrite (a FIFO, a symlink, something huge): then repeats are appended as
/// entries again, so that nothing already there ever blocks the history.
fn read_runs(history: &Path) -> Option<Vec<RepeatRun>> {
    let bytes = match super::read_regular(&repeats_path(history), REPEATS_READ_LIMIT) {
        Ok(bytes) => bytes,
        Err(super::ReadError::Unreadable(_)) if !repeats_path(history).exists() => Vec::new(),
        Err(_) => return None,
    };
    // A damaged line costs its count only: repeats are a courtesy, the
    // entries are the evidence.
    Some(
        bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect(),
    )
}

/// A repeats file is a line per run of repeats: far less than this.
const REPEATS_READ_LIMIT: u64 = 4 * 1024 * 1024;

/// Whether the event that began when the history ended at `offset` was
/// counted as a repeat there, at `time` or later (its intent then needs no
/// entry of its own).
pub fn counted_at(history: &Path, offset: u64, time: &str) -> bool {
    read_runs(history)
        .unwrap_or_default()
        .iter()
        .any(|run| run.at == offset && run.last.as_str() >= time)
}

/// Counts one more repeat of the history's last entry at `time`, instead of
/// appending the same entry again; `false` when the counts cannot be kept
/// (the caller appends the entry instead). The caller holds the item's lock
/// and has checked that the last entry is the one repeated.
pub fn count_repeat(history: &Path, time: &str, durability: Durability) -> io::Result<bool> {
    let at = open_regular(history, OpenOptions::new().read(true))?
        .metadata()?
        .len();
    let Some(mut runs) = read_runs(history) else {
        return Ok(false);
    };
    match runs.last_mut() {
        Some(run) if run.at == at => {
            run.count += 1;
            run.last = time.to_owned();
        }
        _ => runs.push(RepeatRun {
            at,
            count: 1,
            last: time.to_owned(),
        }),
    }
    let mut text = String::new();
    for run in &runs {
        text.push_str(&serde_json::to_string(run).map_err(io::Error::other)?);
        text.push('\n');
    }
    atomic::write_with(&repeats_path(history), text.as_bytes(), durability)?;
    Ok(true)
}

/// What [`verify_history`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// No key is configured and nothing is signed: nothing can be checked.
    Unsigned,
    /// The chain holds from its first signed entry and the head matches.
    /// `unsigned` entries before it were written before signing began.
    Valid { entries: usize, unsigned: usize },
    /// The first entry that is not authentic (1-based) and why.
    Broken { entry: usize, why: String },
    /// The history is signed but no key is set: nothing can be checked, and
    /// that is an error, never a silent pass.
    NoKey { key_id: String },
}

/// The keys that sign and verify: the current one, and earlier ones that
/// verify older segments after a rotation.
#[derive(Debug, Clone, Default)]
pub struct HistoryKeys<'a> {
    pub current: Option<&'a Secret>,
    pub previous: &'a [Secret],
}

impl HistoryKeys<'_> {
    fn by_id(&self, id: &str) -> Option<&Secret> {
        self.current
            .into_iter()
            .chain(self.previous)
            .find(|k| key_id(k) == id)
    }

    fn all(&self) -> impl Iterator<Item = &Secret> {
        self.current.into_iter().chain(self.previous)
    }
}

/// A key's public name: the first 16 hex digits of an HMAC of a constant
/// under it. It names the key without revealing it.
pub fn key_id(key: &Secret) -> String {
    let mac = keyed(key)
        .chain_update(b"selfdeploy history key id")
        .finalize()
        .into_bytes();
    hex::encode(&mac[..8])
}

/// The head file of a history file: `<item>.jsonl.head`.
pub fn head_path(history: &Path) -> PathBuf {
    with_suffix(history, ".head")
}

/// Where a torn last line is moved: `<item>.jsonl.torn`.
pub fn torn_path(history: &Path) -> PathBuf {
    with_suffix(history, ".torn")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Appends one entry, signed when `key` is given; returns what was repaired
/// on the way (a torn tail moved aside), for the report. The caller holds the
/// per-item lock: the last line read here is still the last when this line
/// is written. Only I/O can make it fail, never the file's content.
pub fn append_history(
    path: &Path,
    entry: &HistoryEntry,
    key: Option<&Secret>,
    durability: Durability,
) -> io::Result<Vec<String>> {
    if let Some(dir) = path.parent() {
        atomic::create_dir_all_with(dir, durability)?;
    }
    let synced = durability == Durability::Synced;
    let mut notes = Vec::new();
    let (mut file, created) = match open_regular(path, OpenOptions::new().read(true).append(true)) {
        Ok(file) => (file, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            open_regular(
                path,
                OpenOptions::new().read(true).append(true).create_new(true),
            )?,
            true,
        ),
        Err(e) => return Err(e),
    };
    // Signing chains to the last signed line and counts the entries, so it
    // reads the whole file; otherwise only the end matters (a torn line).
    let bytes = match key {
        Some(_) => read_or_empty(path)?,
        None => Vec::new(),
    };
    let cut = match key {
        Some(_) => torn_tail(&bytes).map(|c| c as u64),
        None => torn_tail_of(&file)?,
    };
    let mut kept = &bytes[..];
    if let Some(cut) = cut {
        let mut torn = Vec::new();
        file.seek(SeekFrom::Start(cut))?;
        file.read_to_end(&mut torn)?;
        let mut aside = open_regular(
            &torn_path(path),
            OpenOptions::new().create(true).append(true),
        )?;
        aside.write_all(&torn)?;
        aside.write_all(b"\n")?;
        if synced {
            aside.sync_data()?;
        }
        file.set_len(cut)?;
        if synced {
            file.sync_data()?;
        }
        if key.is_some() {
            kept = &bytes[..cut as usize];
        }
        notes.push(format!(
            "the history's last line was torn (a crash mid-append): its {} bytes were moved to {}",
            torn.len(),
            torn_path(path).display()
        ));
    }
    let (line, head) = match key {
        None => (
            Line {
                entry: entry.clone(),
                key_id: None,
                mac: None,
            },
            None,
        ),
        Some(key) => {
            let (count, prev) = tail(kept);
            if count == 0 {
                // A crash after the first append then leaves the head one
                // behind, which verification accepts, rather than missing.
                write_head(path, key, 0, "", durability)?;
            }
            let id = key_id(key);
            let mac = entry_mac(key, &prev, &canonical(entry)?, &id);
            (
                Line {
                    entry: entry.clone(),
                    key_id: Some(id),
                    mac: Some(mac.clone()),
                },
                Some((count + 1, mac)),
            )
        }
    };
    let mut text = serde_json::to_string(&line).map_err(io::Error::other)?;
    text.push('\n');
    let before = file.metadata()?.len();
    let written = (|| {
        file.write_all(text.as_bytes())?;
        if synced {
            file.sync_data()?;
            if created {
                // A new file is found after a crash only if its directory
                // entry reached the disk too.
                atomic::sync_dir_with(path.parent().unwrap_or(Path::new(".")), durability)?;
            }
        }
        if let (Some(key), Some((count, mac))) = (key, head) {
            write_head(path, key, count, &mac, durability)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        // All or nothing: a line whose head could not follow (a full disk)
        // is taken back, so that a failed append never reads as done and
        // its entry is written once, later. Shrinking needs no space.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(e);
    }
    Ok(notes)
}

/// The length of the history up to its last whole line (a torn tail, which
/// the next append moves aside, not counted): where the next entry begins.
pub fn complete_len(path: &Path) -> io::Result<u64> {
    match open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => {
            let len = file.metadata()?.len();
            Ok(torn_tail_of(&file)?.unwrap_or(len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The entry whose line begins at byte `offset`, if a whole one does.
pub fn entry_at(path: &Path, offset: u64) -> io::Result<Option<HistoryEntry>> {
    let mut file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() <= offset {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(LAST_ENTRY_WINDOW * 64).read_to_end(&mut bytes)?;
    Ok(bytes
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|end| parse(&bytes[..end]))
        .map(|line| line.entry))
}

/// Where the torn last line of `file` begins, reading only its end.
fn torn_tail_of(file: &fs::File) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    let mut window = LAST_ENTRY_WINDOW.min(len);
    loop {
        let mut bytes = vec![0; window as usize];
        file.read_exact_at(&mut bytes, len - window)?;
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            return Ok(None);
        }
        match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(len - window + i as u64 + 1)),
            None if window == len => return Ok(Some(0)),
            None => window = (window * 4).min(len),
        }
    }
}

/// Where the torn last line begins, if the file does not end with a line end.
fn torn_tail(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return None;
    }
    Some(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1))
}

/// The non-blank lines of the file, with their 1-based entry numbers.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

fn parse(line: &[u8]) -> Option<Line> {
    serde_json::from_slice(line).ok()
}

/// The lines, oldest first: entries, and damaged lines shown as such.
pub fn read_history(path: &Path) -> io::Result<Vec<HistoryLine>> {
    let bytes = read_or_empty(path)?;
    let runs = read_runs(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut end = 0u64;
    let mut n = 0;
    for raw in bytes.split_inclusive(|&b| b == b'\n') {
        end += raw.len() as u64;
        let l = raw.strip_suffix(b"\n").unwrap_or(raw);
        if l.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        n += 1;
        out.push(match parse(l) {
            Some(line) => HistoryLine::Entry {
                entry: line.entry,
                repeats: runs.iter().find(|r| r.at == end).map(|r| Repeats {
                    count: r.count,
                    last: r.last.clone(),
                }),
            },
            None => HistoryLine::Damaged {
                entry: n,
                damaged: shown(l),
            },
        });
    }
    Ok(out)
}

/// The entries alone, damaged lines left out (a fixture's history).
pub fn read_entries(path: &Path) -> io::Result<Vec<HistoryEntry>> {
    Ok(read_history(path)?
        .into_iter()
        .filter_map(|l| match l {
            HistoryLine::Entry { entry, .. } => Some(entry),
            HistoryLine::Damaged { .. } => None,
        })
        .collect())
}

/// How much of a history's end [`last_entry`] reads first: entries are a few
/// hundred bytes, so one read almost always holds the last whole line.
const LAST_ENTRY_WINDOW: u64 = 16 * 1024;

/// The history's last entry, without reading the whole file: `None` when the
/// history is missing or empty, or its last line is damaged or torn (the
/// next append repairs a torn one; `history` shows either).
pub fn last_entry(path: &Path) -> io::Result<Option<HistoryEntry>> {
    Ok(last_line(path)?.map(|line| line.entry))
}

fn last_line(path: &Path) -> io::Result<Option<Line>> {
    let mut file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut window = LAST_ENTRY_WINDOW.min(len);
    loop {
        file.seek(SeekFrom::Start(len - window))?;
        let mut bytes = Vec::with_capacity(window as usize);
        (&mut file).take(window).read_to_end(&mut bytes)?;
        if !bytes.ends_with(b"\n") {
            return Ok(None);
        }
        let body = &bytes[..bytes.len() - 1];
        let body = match body.iter().rposition(|b| !b.is_ascii_whitespace()) {
            Some(end) => &body[..=end],
            None if window == len => return Ok(None),
            None => &body[..0],
        };
        match body.iter().rposition(|&b| b == b'\n') {
            Some(start) => return Ok(parse(&body[start + 1..])),
            None if window == len => return Ok(parse(body)),
            // The last line is longer than the window (or the window holds
            // only blank lines): read more.
            None => window = (window * 4).min(len),
        }
    }
}

/// The latest entry that decides whether an approval is blocked: a
/// `dispatch_failed` outcome (of `approved`, or of a poll that revoked an
/// unclaimed ticket), any other `approved` (refused, or one that went
/// through), a new `request-approve` or a `reset`. The entries after it (a
/// poll found illegal, an error) do not hide it. Read from the file's end, a growing
/// window at a time; `None` when the history has none (or is missing).
pub fn last_approval_outcome(path: &Path) -> io::Result<Option<HistoryEntry>> {
    let mut file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut window = (LAST_ENTRY_WINDOW * 4).min(len);
    loop {
        file.seek(SeekFrom::Start(len - window))?;
        let mut bytes = Vec::with_capacity(window as usize);
        (&mut file).take(window).read_to_end(&mut bytes)?;
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // The first piece may be cut by the window: whole only at the start.
        if window < len && !lines.is_empty() {
            lines.remove(0);
        }
        for line in lines.into_iter().rev() {
            let Some(line) = parse(line) else { continue };
            let e = line.entry;
            if e.outcome == "dispatch_failed"
                || matches!(e.event.as_str(), "approved" | "request-approve" | "reset")
            {
                return Ok(Some(e));
            }
        }
        if window == len {
            return Ok(None);
        }
        window = (window * 4).min(len);
    }
}

/// Whether the history is signed: it has a head file, or its last entry
/// carries a MAC. A signed history must never be extended unsigned.
pub fn is_signed(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(head_path(path)) {
        Ok(_) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(last_line(path)?.is_some_and(|line| line.mac.is_some()))
}

/// A damaged line as text, for a human: lossy and cut short.
fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut shown: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        shown.push('…');
    }
    shown
}

/// Checks the chain of MACs and the head file. Entries are numbered from 1,
/// blank lines not counted (as `history` shows them). An error is a file that
/// cannot be read at all; everything about the content is in the
/// [`Verification`].
pub fn verify_history(path: &Path, keys: &HistoryKeys<'_>) -> io::Result<Verification> {
    let broken = |entry: usize, why: String| Ok(Verification::Broken { entry, why });
    let bytes = read_or_empty(path)?;
    if keys.current.is_none() && keys.previous.is_empty() {
        let signed = lines(&bytes).find_map(|(_, l)| {
            let line = parse(l)?;
            line.mac.as_ref()?;
            Some(line.key_id.unwrap_or_else(|| "unnamed".to_owned()))
        });
        return Ok(match signed {
            Some(key_id) => Verification::NoKey { key_id },
            None => Verification::Unsigned,
        });
    }
    let mut unsigned = 0;
    let mut prev: Option<String> = None;
    let mut entries = 0;
    for (n, raw) in lines(&bytes) {
        entries = n;
        let Some(line) = parse(raw) else {
            return broken(n, "it is damaged: not a history entry".to_owned());
        };
        let Some(mac) = &line.mac else {
            if prev.is_none() {
                unsigned += 1;
                continue;
            }
            return broken(
                n,
                "it is unsigned, after signing began (written while HISTORY_HMAC_KEY was unset?)"
                    .to_owned(),
            );
        };
        let chain = prev.as_deref().unwrap_or("");
        let canonical = canonical(&line.entry)?;
        let authentic = match &line.key_id {
            Some(id) => match keys.by_id(id) {
                Some(key) => mac_matches(entry_hmac(key, chain, &canonical, id), mac),
                None => {
                    return broken(
                        n,
                        format!(
                            "it is signed by key id {id}, which is neither HISTORY_HMAC_KEY nor in HISTORY_HMAC_PREVIOUS_KEYS"
                        ),
                    );
                }
            },
            None => keys
                .all()
                .any(|key| mac_matches(legacy_hmac(key, chain, &canonical), mac)),
        };
        if !authentic {
            return broken(
                n,
                "its MAC does not match: it was edited, moved, or an entry before it was \
                 dropped"
                    .to_owned(),
            );
        }
        if serde_json::to_vec(&line).map_err(io::Error::other)? != raw {
            return broken(
                n,
                "its line is not as selfdeploy wrote it (fields added or reformatted)".to_owned(),
            );
        }
        prev = Some(mac.clone());
    }
    let signed = entries - unsigned;
    let head_file = head_path(path);
    let head = match fs::read_to_string(&head_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if signed == 0 {
                return Ok(Verification::Valid { entries, unsigned });
            }
            return broken(
                entries,
                format!(
                    "the head file {} is missing, so entries after it may have been dropped",
                    head_file.display()
                ),
            );
        }
        Err(e) => return Err(e),
    };
    let head: Head = match serde_json::from_str(head.trim()) {
        Ok(head) => head,
        Err(e) => {
            return broken(
                entries.max(1),
                format!("the head file {} does not parse ({e})", head_file.display()),
            );
        }
    };
    if head.entries > entries {
        return broken(
            entries + 1,
            format!(
                "it is missing: the head records {} but the history has {entries} \
                 (entries were dropped from the end)",
                crate::text_table::counted(head.entries as u64, "entry", "entries")
            ),
        );
    }
    if head.entries + 1 < entries {
        return broken(
            head.entries + 2,
            format!(
                "the head records only {} of {entries} entries: it is older than the history \
                 (replaced by an old copy?)",
                head.entries
            ),
        );
    }
    // The MAC of the entry the head counts up to (none before signing began).
    let last = if head.entries == entries {
        prev.clone().unwrap_or_default()
    } else {
        mac_of_entry(&bytes, head.entries).unwrap_or_default()
    };
    let head_key = match &head.key_id {
        Some(id) => keys.by_id(id),
        None => keys.current,
    };
    let valid =
        head_key.is_some_and(|key| mac_matches(head_mac(key, head.entries, &last), &head.mac));
    if !valid {
        return broken(
            head.entries.max(1),
            format!(
                "the head file {} does not match the history (edited, or signed with a key that is not set)",
                head_file.display()
            ),
        );
    }
    Ok(Verification::Valid { entries, unsigned })
}

/// The `mac` of entry `n` (1-based), if it is a signed line.
fn mac_of_entry(bytes: &[u8], n: usize) -> Option<String> {
    lines(bytes)
        .find(|(i, _)| *i == n)
        .and_then(|(_, l)| parse(l)?.mac)
}

fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match open_regular(path, OpenOptions::new().read(true)) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// How many entries the file has (non-blank lines) and the MAC the next
/// entry chains to: the last signed line's (empty when there is none; a
/// damaged line is skipped here, and verification names it).
fn tail(bytes: &[u8]) -> (usize, String) {
    let mut count = 0;
    let mut prev = String::new();
    for (n, line) in lines(bytes) {
        count = n;
        if let Some(mac) = parse(line).and_then(|l| l.mac) {
            prev = mac;
        }
    }
    (count, prev)
}

fn canonical(entry: &HistoryEntry) -> io::Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(io::Error::other)
}

// HMAC takes a key of any length (a long one is hashed): `new_from_slice`
// fails only for MACs with a fixed key size, which HMAC is not.
#[allow(clippy::expect_used)]
fn keyed(key: &Secret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes a key of any length")
}

fn entry_hmac(key: &Secret, prev: &str, canonical: &[u8], key_id: &str) -> Hmac<Sha256> {
    keyed(key)
        .chain_update(prev.as_bytes())
        .chain_update(canonical)
        .chain_update(b"\n")
        .chain_update(key_id.as_bytes())
}

/// The previous release's construction: no key id in the MAC.
fn legacy_hmac(key: &Secret, prev: &str, canonical: &[u8]) -> Hmac<Sha256> {
    keyed(key)
        .chain_update(prev.as_bytes())
        .chain_update(canonical)
}

fn entry_mac(key: &Secret, prev: &str, canonical: &[u8], key_id: &str) -> String {
    hex::encode(
        entry_hmac(key, prev, canonical, key_id)
            .finalize()
            .into_bytes(),
    )
}

fn head_mac(key: &Secret, count: usize, last: &str) -> Hmac<Sha256> {
    keyed(key).chain_update(format!("head\n{count}\n{last}").as_bytes())
}

/// Compares in constant time.
fn mac_matches(mac: Hmac<Sha256>, hex_mac: &str) -> bool {
    hex::decode(hex_mac).is_ok_and(|bytes| mac.verify_slice(&bytes).is_ok())
}

fn write_head(
    path: &Path,
    key: &Secret,
    count: usize,
    last: &str,
    durability: Durability,
) -> io::Result<()> {
    let head = Head {
        entries: count,
        key_id: Some(key_id(key)),
        mac: hex::encode(head_mac(key, count, last).finalize().into_bytes()),
    };
    let mut text = serde_json::to_string(&head).map_err(io::Error::other)?;
    text.push('\n');
    atomic::write_with(&head_path(path), text.as_bytes(), durability)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> HistoryEntry {
        HistoryEntry {
            time: format!("2030-01-01T00:00:0{i}Z"),
            actor: "test".into(),
            event: "poll".into(),
            from: "a".into(),
            to: "b".into(),
            outcome: "ok".into(),
            reason: None,
            effects: vec!["x".into()],
        }
    }

    fn key(k: &str) -> Secret {
        Secret::new(k)
    }

    fn keys(current: &Secret) -> HistoryKeys<'_> {
        HistoryKeys {
            current: Some(current),
            previous: &[],
        }
    }

    fn signed(n: usize, k: &Secret) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/W-1.jsonl");
        for i in 1..=n {
            append_history(&path, &entry(i), Some(k), Durability::Synced).unwrap();
        }
        (dir, path)
    }

    fn file_lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn broken_at(v: Verification) -> usize {
        match v {
            Verification::Broken { entry, .. } => entry,
            other => panic!("expected broken, got {other:?}"),
        }
    }

    #[test]
    fn mac_is_the_documented_construction() {
        let k = key("k");
        let id = key_id(&k);
        let (_dir, path) = signed(2, &k);
        let first: serde_json::Value = serde_json::from_str(&file_lines(&path)[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&file_lines(&path)[1]).unwrap();
        let want1 = entry_mac(&k, "", &serde_json::to_vec(&entry(1)).unwrap(), &id);
        let want2 = entry_mac(&k, &want1, &serde_json::to_vec(&entry(2)).unwrap(), &id);
        assert_eq!(first["mac"], want1.as_str());
        assert_eq!(second["mac"], want2.as_str());
        assert_eq!(first["key_id"], id.as_str());
        assert_eq!((want1.len(), id.len()), (64, 16));
        assert!(!file_lines(&path)[0].contains("\"k\""));
        // The line is the entry's JSON with `key_id` and `mac` last.
        let canonical = serde_json::to_string(&entry(1)).unwrap();
        assert_eq!(
            file_lines(&path)[0],
            format!(
                "{},\"key_id\":\"{id}\",\"mac\":\"{want1}\"}}",
                &canonical[..canonical.len() - 1]
            )
        );
    }

    #[test]
    fn signed_history_verifies_and_reads() {
        let k = key("k");
        let (_dir, path) = signed(3, &k);
        assert_eq!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid {
                entries: 3,
                unsigned: 0
            }
        );
        assert_eq!(
            read_entries(&path).unwrap(),
            vec![entry(1), entry(2), entry(3)]
        );
        assert_eq!(
            verify_history(&path, &HistoryKeys::default()).unwrap(),
            Verification::NoKey { key_id: key_id(&k) }
        );
    }

    #[test]
    fn the_last_entry_is_read_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        assert_eq!(last_entry(&path).unwrap(), None, "missing");
        fs::write(&path, "").unwrap();
        assert_eq!(last_entry(&path).unwrap(), None, "empty");
        for i in 1..=3 {
            append_history(&path, &entry(i), None, Durability::Synced).unwrap();
        }
        assert_eq!(last_entry(&path).unwrap(), Some(entry(3)));
        // Blank lines after it, and an entry longer than the first window.
        let mut long = entry(4);
        long.reason = Some("x".repeat(3 * LAST_ENTRY_WINDOW as usize));
        append_history(&path, &long, None, Durability::Synced).unwrap();
        assert_eq!(last_entry(&path).unwrap(), Some(long.clone()));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\n  \n").unwrap();
        assert_eq!(last_entry(&path).unwrap(), Some(long));
        // Torn or damaged: not an entry.
        f.write_all(b"{\"time\":").unwrap();
        assert_eq!(last_entry(&path).unwrap(), None, "torn");
        f.write_all(b"\n").unwrap();
        assert_eq!(last_entry(&path).unwrap(), None, "damaged");
        // A file of one line.
        let one = dir.path().join("one.jsonl");
        append_history(&one, &entry(7), None, Durability::Synced).unwrap();
        assert_eq!(last_entry(&one).unwrap(), Some(entry(7)));
    }

    #[test]
    fn missing_history_is_valid_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        let k = key("k");
        assert_eq!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid {
                entries: 0,
                unsigned: 0
            }
        );
        assert_eq!(
            verify_history(&path, &HistoryKeys::default()).unwrap(),
            Verification::Unsigned
        );
    }

    #[test]
    fn tampering_names_the_entry() {
        let k = key("k");
        let (_dir, path) = signed(4, &k);
        let orig = file_lines(&path);
        let head = fs::read(head_path(&path)).unwrap();
        let check = |ls: Vec<String>, want: usize| {
            rewrite(&path, &ls);
            fs::write(head_path(&path), &head).unwrap();
            assert_eq!(broken_at(verify_history(&path, &keys(&k)).unwrap()), want);
        };
        let mut forged = orig.clone();
        forged[1] = forged[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"no\"");
        check(forged, 2);
        let mut dropped = orig.clone();
        dropped.remove(1);
        check(dropped, 2);
        let mut swapped = orig.clone();
        swapped.swap(1, 2);
        check(swapped, 2);
        check(orig[..3].to_vec(), 4);
        check(Vec::new(), 1);
        let mut extra = orig.clone();
        extra[2] = extra[2].replacen('{', "{\"note\":\"x\",", 1);
        check(extra, 3);
        rewrite(&path, &orig);
        fs::write(head_path(&path), &head).unwrap();
        assert_eq!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid {
                entries: 4,
                unsigned: 0
            }
        );
    }

    #[test]
    fn an_unknown_key_names_the_first_entry() {
        let k = key("k");
        let (_dir, path) = signed(2, &k);
        let other = key("other");
        let v = verify_history(&path, &keys(&other)).unwrap();
        assert!(
            matches!(&v, Verification::Broken { entry: 1, why } if why.contains(&key_id(&k))),
            "{v:?}"
        );
    }

    #[test]
    fn unsigned_entries_before_signing_are_reported_after_it_are_a_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("W.jsonl");
        let k = key("k");
        append_history(&path, &entry(1), None, Durability::Synced).unwrap();
        append_history(&path, &entry(2), None, Durability::Synced).unwrap();
        append_history(&path, &entry(3), Some(&k), Durability::Synced).unwrap();
        append_history(&path, &entry(4), Some(&k), Durability::Synced).unwrap();
        assert_eq!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid {
                entries: 4,
                unsigned: 2
            }
        );
        append_history(&path, &entry(5), None, Durability::Synced).unwrap();
        append_history(&path, &entry(6), Some(&k), Durability::Synced).unwrap();
        let v = verify_history(&path, &keys(&k)).unwrap();
        assert!(
            matches!(&v, Verification::Broken { entry: 5, why } if why.contains("unsigned")),
            "{v:?}"
        );
        assert_eq!(read_entries(&path).unwrap().len(), 6);
    }

    #[test]
    fn a_rotated_key_chains_on_and_the_old_one_verifies_its_segment() {
        let (old, new) = (key("old"), key("new"));
        let (_dir, path) = signed(2, &old);
        append_history(&path, &entry(3), Some(&new), Durability::Synced).unwrap();
        let previous = [old.clone()];
        let both = HistoryKeys {
            current: Some(&new),
            previous: &previous,
        };
        assert_eq!(
            verify_history(&path, &both).unwrap(),
            Verification::Valid {
                entries: 3,
                unsigned: 0
            }
        );
        // Without the old key, its segment cannot be checked: named.
        assert_eq!(broken_at(verify_history(&path, &keys(&new)).unwrap()), 1);
        // The first entry under the new key links to the last under the old:
        // dropping the old segment's last entry breaks the new one.
        let mut ls = file_lines(&path);
        ls.remove(1);
        rewrite(&path, &ls);
        assert_eq!(broken_at(verify_history(&path, &both).unwrap()), 2);
    }

    #[test]
    fn head_one_behind_is_a_crash_and_accepted_two_behind_is_not() {
        let k = key("k");
        let (_dir, path) = signed(3, &k);
        let head3 = fs::read(head_path(&path)).unwrap();
        append_history(&path, &entry(4), Some(&k), Durability::Synced).unwrap();
        fs::write(head_path(&path), &head3).unwrap();
        assert!(matches!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid { entries: 4, .. }
        ));
        append_history(&path, &entry(5), Some(&k), Durability::Synced).unwrap();
        fs::write(head_path(&path), &head3).unwrap();
        assert_eq!(broken_at(verify_history(&path, &keys(&k)).unwrap()), 5);
        // The next append repairs the head.
        append_history(&path, &entry(6), Some(&k), Durability::Synced).unwrap();
        assert!(matches!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid { entries: 6, .. }
        ));
    }

    #[test]
    fn a_missing_or_forged_head_is_detected() {
        let k = key("k");
        let (_dir, path) = signed(2, &k);
        let head = fs::read_to_string(head_path(&path)).unwrap();
        fs::write(
            head_path(&path),
            head.replace("\"entries\":2", "\"entries\":1"),
        )
        .unwrap();
        assert_eq!(broken_at(verify_history(&path, &keys(&k)).unwrap()), 1);
        fs::remove_file(head_path(&path)).unwrap();
        assert_eq!(broken_at(verify_history(&path, &keys(&k)).unwrap()), 2);
    }

    #[test]
    fn a_torn_tail_is_moved_aside_and_the_append_goes_on() {
        let k = key("k");
        let (_dir, path) = signed(2, &k);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"2030-01-01T00:00:03Z\",\"act")
            .unwrap();
        drop(f);
        // Reading shows it as damaged, and never fails.
        assert!(matches!(
            read_history(&path).unwrap()[2],
            HistoryLine::Damaged { entry: 3, .. }
        ));
        let notes = append_history(&path, &entry(3), Some(&k), Durability::Synced).unwrap();
        assert!(notes[0].contains("torn"), "{notes:?}");
        assert_eq!(
            fs::read_to_string(torn_path(&path)).unwrap(),
            "{\"time\":\"2030-01-01T00:00:03Z\",\"act\n"
        );
        assert_eq!(
            read_entries(&path).unwrap(),
            vec![entry(1), entry(2), entry(3)]
        );
        assert!(matches!(
            verify_history(&path, &keys(&k)).unwrap(),
            Verification::Valid { entries: 3, .. }
        ));
    }

    /// A history that is not a regular file is named for what it is, by
    /// every reader and by an append, and nothing waits on a FIFO.
    #[test]
    fn a_history_that_is_not_a_regular_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.jsonl");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let linked = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &linked).unwrap();
        for (path, what) in [
            (&fifo, "it is a FIFO, not a regular file"),
            (&linked, "it is a symbolic link (never followed)"),
        ] {
            let append = append_history(path, &entry(1), None, Durability::Synced);
            assert_eq!(append.unwrap_err().to_string(), what);
            assert_eq!(last_entry(path).unwrap_err().to_string(), what);
            assert_eq!(read_history(path).unwrap_err().to_string(), what);
        }
        assert!(
            !dir.path().join("elsewhere").exists(),
            "nothing written through the link"
        );
    }

    /// Unsigned, only the file's end is read: a torn tail shorter or longer
    /// than the window read first, or a file that is one torn line, is
    /// moved aside whole, with durability on or off.
    #[test]
    fn an_unsigned_torn_tail_is_found_from_the_end() {
        for (torn_len, before, durability) in [
            (10, 2, Durability::Synced),
            (3 * LAST_ENTRY_WINDOW as usize, 2, Durability::Unsynced),
            (5, 0, Durability::Unsynced),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("h.jsonl");
            for i in 1..=before {
                append_history(&path, &entry(i), None, durability).unwrap();
            }
            let torn = "{".repeat(torn_len);
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(torn.as_bytes()).unwrap();
            drop(f);
            let notes = append_history(&path, &entry(9), None, durability).unwrap();
            assert!(
                notes[0].contains(&format!("its {torn_len} bytes")),
                "{notes:?}"
            );
            assert_eq!(
                fs::read_to_string(torn_path(&path)).unwrap(),
                format!("{torn}\n")
            );
            let mut want: Vec<_> = (1..=before).map(entry).collect();
            want.push(entry(9));
            assert_eq!(read_entries(&path).unwrap(), want);
            assert_eq!(read_history(&path).unwrap().len(), before + 1);
        }
    }

    #[test]
    fn undecodable_bytes_never_stop_an_append_and_are_named() {
        let k = key("k");
        let (_dir, path) = signed(2, &k);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"\xff\xfe not json\n").unwrap();
        drop(f);
        append_history(&path, &entry(4), Some(&k), Durability::Synced).unwrap();
        let read = read_history(&path).unwrap();
        assert_eq!(read.len(), 4);
        assert!(
            matches!(&read[2], HistoryLine::Damaged { entry: 3, damaged } if damaged.contains("not json"))
        );
        let v = verify_history(&path, &keys(&k)).unwrap();
        assert!(
            matches!(&v, Verification::Broken { entry: 3, why } if why.contains("damaged")),
            "{v:?}"
        );
    }
}
