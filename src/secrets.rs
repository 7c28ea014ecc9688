//! Fresh values for the secret settings, and what adding the missing ones to
//! an env file means: `selfdeploy gen-secrets`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::REGISTRY;
use crate::config::env_file::Entry;

/// Bytes of randomness in one generated secret (64 hex characters).
pub const SECRET_BYTES: usize = 32;

/// The names of the secret settings that get fresh values, in registry
/// order. Earlier keys kept for verification are never generated.
pub fn secret_names() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|s| s.is_secret() && !s.name.ends_with("_PREVIOUS_KEYS"))
        .map(|s| s.name)
        .collect()
}

/// One secret: 32 bytes from the operating system's random source, as 64
/// lowercase hex characters.
pub fn token() -> io::Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("no random bytes from the system: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Creates the env file `path` holding `bytes`, mode 0600 from the start,
/// whole or not at all, never over a file that appeared meanwhile.
pub fn create_env_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic::create_private(path, bytes)
}

/// A fresh value for each name.
pub fn generate(names: &[&'static str]) -> io::Result<Vec<(&'static str, String)>> {
    names.iter().map(|n| Ok((*n, token()?))).collect()
}

/// The values an env file gives, read exactly as the settings loader reads
/// it (a key given twice: the last value; a line that does not parse is
/// named by its position, never shown).
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, crate::config::ConfigError> {
    crate::load_settings::read_env_file(path)
}

/// The names that `existing` gives no value, or an empty one.
pub fn missing(names: &[&'static str], existing: &BTreeMap<String, String>) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|n| existing.get(*n).is_none_or(|v| v.is_empty()))
        .collect()
}

/// The file holding `existing` (whose assignments are `entries`) with these
/// values given: a name whose assignment in force (its last) is empty has
/// that line filled in place; any other is appended as a `KEY=value` line.
/// Every other byte stays as it is.
pub fn fill(existing: &[u8], entries: &[Entry], values: &[(&str, String)]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = existing
        .split(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let mut appended = Vec::new();
    for (name, value) in values {
        let in_force = entries.iter().rev().find(|e| e.name == *name);
        match in_force.and_then(|e| lines.get_mut(e.line - 1).map(|l| (e, l))) {
            Some((e, line)) if e.value.is_empty() => {
                let cr = line.ends_with(b"\r");
                let indent = line
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t'))
                    .count();
                let mut new = line[..indent].to_vec();
                new.extend_from_slice(format!("{name}={value}").as_bytes());
                if cr {
                    new.push(b'\r');
                }
                *line = new;
            }
            _ => appended.push((*name, value.clone())),
        }
    }
    let mut out = lines.join(&b'\n');
    let tail = addition(&out, &appended);
    if !appended.is_empty() {
        out.extend_from_slice(tail.as_bytes());
    }
    out
}

/// What `add_to_env_file` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// A new file, mode 0600, holding these.
    Created(Vec<&'static str>),
    /// Every name already has a value: nothing changed.
    Nothing,
    /// The file exists and these have no value, but `force` was not given:
    /// nothing changed.
    Refused(Vec<&'static str>),
    /// These were given values (empty lines filled, others appended); the
    /// file keeps its owner, group and mode (less any access for others).
    Filled { names: Vec<&'static str>, mode: u32 },
}

/// Gives each of `names` that `path` gives no value a fresh one: creates the
/// file (0600) when it does not exist; else, with `force`, fills an empty
/// `NAME=` in place or appends `NAME=value`. One at a time: the file is
/// locked (`flock`) while it is read and replaced, so two runs at once never
/// give a name two values; the new content replaces the file whole
/// (a temporary file renamed over it, through a symbolic link to its
/// target), with the file's owner, group and mode, minus access for others.
pub fn add_to_env_file(
    path: &Path,
    names: &[&'static str],
    force: bool,
) -> Result<Added, crate::config::ConfigError> {
    let io_err = |what: &str, e: io::Error| crate::config::ConfigError::EnvFile {
        path: path.to_path_buf(),
        problem: format!("{what}: {e}"),
    };
    loop {
        let file = match crate::load_settings::open_env_file(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let values = generate(names).map_err(|e| io_err("cannot generate", e))?;
                match create_env_file(path, addition(b"", &values).as_bytes()) {
                    Ok(()) => return Ok(Added::Created(names.to_vec())),
                    // Another run created it meanwhile: add to that one.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io_err("cannot create it", e)),
                }
            }
            Err(e) => return Err(io_err("cannot open it", e)),
        };
        lock_exclusive(&file).map_err(|e| io_err("cannot lock it", e))?;
        // Locked, the file may be one another run has just replaced: then
        // its path names the new one, which is the one to read.
        let real = fs::canonicalize(path).map_err(|e| io_err("cannot resolve it", e))?;
        let now = fs::metadata(&real).map_err(|e| io_err("cannot stat it", e))?;
        let held = file.metadata().map_err(|e| io_err("cannot stat it", e))?;
        if (now.dev(), now.ino()) != (held.dev(), held.ino()) {
            continue;
        }
        let existing =
            crate::load_settings::read_env_bytes(&file).map_err(|e| io_err("cannot read it", e))?;
        let entries = crate::config::env_file::parse(&existing).map_err(|e| {
            crate::config::ConfigError::EnvFileLine {
                path: path.to_path_buf(),
                line: e.line,
                problem: e.problem,
            }
        })?;
        let values: BTreeMap<String, String> = entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        let missing = missing(names, &values);
        if missing.is_empty() {
            return Ok(Added::Nothing);
        }
        if !force {
            return Ok(Added::Refused(missing));
        }
        let generated = generate(&missing).map_err(|e| io_err("cannot generate", e))?;
        let mode = held.permissions().mode() & 0o770;
        replace(&real, &fill(&existing, &entries, &generated), &held, mode)
            .map_err(|e| io_err("cannot replace it", e))?;
        // The lock is released when `file` closes, after the rename.
        drop(file);
        return Ok(Added::Filled {
            names: missing,
            mode,
        });
    }
}

/// An exclusive `flock` on `file`, waiting for it.
fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor this `File` owns for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Replaces `real` with `bytes` whole: a temporary file beside it with the
/// old file's owner and group and `mode`, synced, renamed over it.
fn replace(real: &Path, bytes: &[u8], old: &fs::Metadata, mode: u32) -> io::Result<()> {
    let dir: PathBuf = match real.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(crate::atomic::TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)?;
    std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(real).map_err(|e| e.error)?;
    crate::atomic::sync_dir(&dir)
}

/// The text to append to a file holding `existing` so that it gives these
/// values: `KEY=value` lines, after a line break if the file's last line has
/// none.
pub fn addition(existing: &[u8], values: &[(&str, String)]) -> String {
    let mut text = String::new();
    if existing.last().is_some_and(|b| *b != b'\n') {
        text.push('\n');
    }
    for (name, value) in values {
        text.push_str(&format!("{name}={value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_key_is_a_secret() {
        assert!(secret_names().contains(&"HISTORY_HMAC_KEY"));
        assert!(!secret_names().contains(&"REPOS_DIR"));
    }

    #[test]
    fn tokens_are_64_lowercase_hex_and_differ() {
        let a = token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{a}");
        assert_ne!(a, token().unwrap());
    }

    #[test]
    fn missing_means_absent_or_empty() {
        let names = ["A", "B", "C"];
        let existing = BTreeMap::from([
            ("A".to_owned(), "x".to_owned()),
            ("B".to_owned(), String::new()),
        ]);
        assert_eq!(missing(&names, &existing), vec!["B", "C"]);
    }

    #[test]
    fn an_empty_line_in_force_is_filled_in_place() {
        let text = b"# c\nK=\nA=1\r\n  K=\nB=2";
        let entries = crate::config::env_file::parse(text).unwrap();
        let out = fill(
            text,
            &entries,
            &[("K", "v".to_owned()), ("N", "w".to_owned())],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# c\nK=\nA=1\r\n  K=v\nB=2\nN=w\n"
        );
        let text = b"K=''\n";
        let entries = crate::config::env_file::parse(text).unwrap();
        assert_eq!(fill(text, &entries, &[("K", "v".to_owned())]), b"K=v\n");
    }

    #[test]
    fn addition_keeps_the_last_line_whole() {
        let values = [("K", "v".to_owned())];
        assert_eq!(addition(b"", &values), "K=v\n");
        assert_eq!(addition(b"A=1\n", &values), "K=v\n");
        assert_eq!(addition(b"A=1", &values), "\nK=v\n");
    }
}
