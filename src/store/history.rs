//! The history of a work item: append-only JSON lines that survive reset.
//!
//! With `HISTORY_HMAC_KEY` set, the history is tamper-evident:
//!
//! - every line carries `mac`, the hex HMAC-SHA256 of the previous line's
//!   `mac` (hex; the empty string for the first entry, or after an unsigned
//!   line) followed by the entry's canonical bytes: its JSON without `mac`,
//!   fields in the order of [`HistoryEntry`]. Editing, dropping or reordering
//!   entries breaks the chain at the first entry concerned.
//! - the head file `<item>.jsonl.head`, rewritten atomically after each signed
//!   append, holds the number of entries and the HMAC of `head`, that number
//!   and the last entry's `mac` (`"head\n{count}\n{last mac}"`), so that
//!   dropping entries from the end is detected too.
//!
//! A crash between the append and the head write leaves the head one entry
//! behind; [`verify_history`] accepts that (and only that) lag, and the next
//! append repairs it. The chain cannot tell a history deleted whole (with its
//! head) from one never written.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::atomic;

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

/// One line of the history file: the entry, and its MAC when signed. The MAC
/// is kept out of [`HistoryEntry`] so that the entry stays what the engine
/// records and what replay fixtures hold.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    entry: HistoryEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// The head file: how many entries the history has and the MAC binding that
/// count to the last entry's MAC.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    entries: usize,
    mac: String,
}

/// What [`verify_history`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// No key is configured: nothing can be checked.
    Unsigned,
    /// Every entry is signed, the chain holds and the head matches.
    Valid { entries: usize },
    /// The first entry that is not authentic (1-based) and why.
    Broken { entry: usize, why: String },
}

/// The head file of a history file: `<item>.jsonl.head`.
pub fn head_path(history: &Path) -> PathBuf {
    let mut name = history.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// Appends one entry, signed when `key` is given. The caller holds the
/// per-item lock: the last line read here is still the last when this line is
/// written.
pub fn append_history(path: &Path, entry: &HistoryEntry, key: Option<&str>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        atomic::create_dir_all(dir)?;
    }
    let (line, head) = match key {
        None => (
            Line {
                entry: entry.clone(),
                mac: None,
            },
            None,
        ),
        Some(key) => {
            let (count, prev) = tail(path)?;
            if count == 0 {
                // A crash after the first append then leaves the head one
                // behind, which verification accepts, rather than missing.
                write_head(path, key, 0, "")?;
            }
            let mac = entry_mac(key, &prev, &canonical(entry)?);
            (
                Line {
                    entry: entry.clone(),
                    mac: Some(mac.clone()),
                },
                Some((count + 1, mac)),
            )
        }
    };
    let mut text = serde_json::to_string(&line).map_err(io::Error::other)?;
    text.push('\n');
    // A torn last line (a crash mid-append) must not swallow this entry too.
    if ends_mid_line(path)? {
        text.insert(0, '\n');
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    if let (Some(key), Some((count, mac))) = (key, head) {
        write_head(path, key, count, &mac)?;
    }
    Ok(())
}

/// Whether the file's last byte is not a line end.
fn ends_mid_line(path: &Path) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The entries, oldest first. A line that does not parse is an error naming
/// the line: history is evidence and is never silently skipped.
pub fn read_history(path: &Path) -> io::Result<Vec<HistoryEntry>> {
    let text = read_or_empty(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| io::Error::other(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Checks the chain of MACs and the head file with `key`. Entries are
/// numbered from 1, blank lines not counted (as `history` shows them).
/// An error is a file that cannot be read at all; everything about the
/// content is in the [`Verification`].
pub fn verify_history(path: &Path, key: Option<&str>) -> io::Result<Verification> {
    let Some(key) = key else {
        return Ok(Verification::Unsigned);
    };
    let broken = |entry: usize, why: String| Ok(Verification::Broken { entry, why });
    let text = read_or_empty(path)?;
    let mut macs: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let n = macs.len() + 1;
        let parsed: Line = match serde_json::from_str(line) {
            Ok(parsed) => parsed,
            Err(e) => return broken(n, format!("it is not a history entry ({e})")),
        };
        let Some(mac) = &parsed.mac else {
            return broken(
                n,
                "it is unsigned (written while HISTORY_HMAC_KEY was unset)".to_owned(),
            );
        };
        let prev = macs.last().map_or("", String::as_str);
        if !mac_matches(
            chain_mac(key, prev).chain_update(canonical(&parsed.entry)?),
            mac,
        ) {
            return broken(
                n,
                "its MAC does not match: it was edited, moved, or an entry before it was \
                 dropped (or the key is not the one that signed it)"
                    .to_owned(),
            );
        }
        if serde_json::to_string(&parsed).map_err(io::Error::other)? != line {
            return broken(
                n,
                "its line is not as selfdeploy wrote it (fields added or reformatted)".to_owned(),
            );
        }
        macs.push(mac.clone());
    }
    let entries = macs.len();
    let head_file = head_path(path);
    let head = match fs::read_to_string(&head_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if entries == 0 {
                return Ok(Verification::Valid { entries });
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
                "it is missing: the head records {} entries but the history has {entries} \
                 (entries were dropped from the end)",
                head.entries
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
    let last = match head.entries {
        0 => "",
        n => &macs[n - 1],
    };
    if !mac_matches(head_mac(key, head.entries, last), &head.mac) {
        return broken(
            head.entries.max(1),
            format!(
                "the head file {} does not match the history (edited, or signed with another key)",
                head_file.display()
            ),
        );
    }
    Ok(Verification::Valid { entries })
}

fn read_or_empty(path: &Path) -> io::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// How many entries the file has (non-blank lines) and the last one's MAC
/// (empty when there is none, it is unsigned, or it does not parse: the new
/// entry is recorded all the same, and verification names the bad line).
fn tail(path: &Path) -> io::Result<(usize, String)> {
    let text = read_or_empty(path)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let count = lines.clone().count();
    let prev = lines
        .next_back()
        .and_then(|l| serde_json::from_str::<Line>(l).ok())
        .and_then(|l| l.mac)
        .unwrap_or_default();
    Ok((count, prev))
}

fn canonical(entry: &HistoryEntry) -> io::Result<Vec<u8>> {
    serde_json::to_vec(entry).map_err(io::Error::other)
}

fn keyed(key: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length")
}

/// The HMAC state after the previous entry's MAC: the entry's bytes follow.
fn chain_mac(key: &str, prev: &str) -> Hmac<Sha256> {
    keyed(key).chain_update(prev.as_bytes())
}

fn entry_mac(key: &str, prev: &str, canonical: &[u8]) -> String {
    hex::encode(
        chain_mac(key, prev)
            .chain_update(canonical)
            .finalize()
            .into_bytes(),
    )
}

fn head_mac(key: &str, count: usize, last: &str) -> Hmac<Sha256> {
    keyed(key).chain_update(format!("head\n{count}\n{last}").as_bytes())
}

/// Compares in constant time.
fn mac_matches(mac: Hmac<Sha256>, hex_mac: &str) -> bool {
    hex::decode(hex_mac).is_ok_and(|bytes| mac.verify_slice(&bytes).is_ok())
}

fn write_head(path: &Path, key: &str, count: usize, last: &str) -> io::Result<()> {
    let head = Head {
        entries: count,
        mac: hex::encode(head_mac(key, count, last).finalize().into_bytes()),
    };
    let mut text = serde_json::to_string(&head).map_err(io::Error::other)?;
    text.push('\n');
    atomic::write(&head_path(path), text.as_bytes())
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

    fn signed(n: usize, key: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/W-1.jsonl");
        for i in 1..=n {
            append_history(&path, &entry(i), Some(key)).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
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
        let (_dir, path) = signed(2, "k");
        let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&lines(&path)[1]).unwrap();
        let want1 = entry_mac("k", "", &serde_json::to_vec(&entry(1)).unwrap());
        let want2 = entry_mac("k", &want1, &serde_json::to_vec(&entry(2)).unwrap());
        assert_eq!(first["mac"], want1.as_str());
        assert_eq!(second["mac"], want2.as_str());
        assert_eq!(want1.len(), 64);
        // The line is the entry's JSON with `mac` last.
        let canonical = serde_json::to_string(&entry(1)).unwrap();
        assert_eq!(
            lines(&path)[0],
            format!(
                "{},\"mac\":\"{want1}\"}}",
                &canonical[..canonical.len() - 1]
            )
        );
    }

    #[test]
    fn signed_history_verifies_and_reads() {
        let (_dir, path) = signed(3, "k");
        assert_eq!(
            verify_history(&path, Some("k")).unwrap(),
            Verification::Valid { entries: 3 }
        );
        assert_eq!(
            read_history(&path).unwrap(),
            vec![entry(1), entry(2), entry(3)]
        );
        assert_eq!(verify_history(&path, None).unwrap(), Verification::Unsigned);
    }

    #[test]
    fn missing_history_is_valid_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        assert_eq!(
            verify_history(&path, Some("k")).unwrap(),
            Verification::Valid { entries: 0 }
        );
    }

    #[test]
    fn tampering_names_the_entry() {
        let (_dir, path) = signed(4, "k");
        let orig = lines(&path);
        let head = fs::read(head_path(&path)).unwrap();
        let check = |ls: Vec<String>, want: usize| {
            rewrite(&path, &ls);
            fs::write(head_path(&path), &head).unwrap();
            assert_eq!(broken_at(verify_history(&path, Some("k")).unwrap()), want);
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
            verify_history(&path, Some("k")).unwrap(),
            Verification::Valid { entries: 4 }
        );
    }

    #[test]
    fn wrong_key_breaks_the_first_entry() {
        let (_dir, path) = signed(2, "k");
        assert_eq!(broken_at(verify_history(&path, Some("other")).unwrap()), 1);
    }

    #[test]
    fn unsigned_entries_are_named_when_a_key_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("W.jsonl");
        append_history(&path, &entry(1), Some("k")).unwrap();
        append_history(&path, &entry(2), None).unwrap();
        append_history(&path, &entry(3), Some("k")).unwrap();
        let v = verify_history(&path, Some("k")).unwrap();
        assert!(
            matches!(&v, Verification::Broken { entry: 2, why } if why.contains("unsigned")),
            "{v:?}"
        );
        // An old unsigned line (no `mac` field) still reads.
        assert_eq!(read_history(&path).unwrap().len(), 3);
        assert!(!lines(&path)[1].contains("mac"));
    }

    #[test]
    fn head_one_behind_is_a_crash_and_accepted_two_behind_is_not() {
        let (_dir, path) = signed(3, "k");
        let head3 = fs::read(head_path(&path)).unwrap();
        append_history(&path, &entry(4), Some("k")).unwrap();
        fs::write(head_path(&path), &head3).unwrap();
        assert_eq!(
            verify_history(&path, Some("k")).unwrap(),
            Verification::Valid { entries: 4 }
        );
        append_history(&path, &entry(5), Some("k")).unwrap();
        fs::write(head_path(&path), &head3).unwrap();
        assert_eq!(broken_at(verify_history(&path, Some("k")).unwrap()), 5);
        // The next append repairs the head.
        append_history(&path, &entry(6), Some("k")).unwrap();
        assert_eq!(
            verify_history(&path, Some("k")).unwrap(),
            Verification::Valid { entries: 6 }
        );
    }

    #[test]
    fn a_missing_or_forged_head_is_detected() {
        let (_dir, path) = signed(2, "k");
        let head = fs::read_to_string(head_path(&path)).unwrap();
        fs::write(
            head_path(&path),
            head.replace("\"entries\":2", "\"entries\":1"),
        )
        .unwrap();
        assert_eq!(broken_at(verify_history(&path, Some("k")).unwrap()), 1);
        fs::remove_file(head_path(&path)).unwrap();
        assert_eq!(broken_at(verify_history(&path, Some("k")).unwrap()), 2);
    }
}
