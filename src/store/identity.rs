//! REPOS_DIR's identity: a small record `selfdeploy init` writes once, and
//! every command that reads or writes the state requires.
//!
//! REPOS_DIR is usually a mount point. Unmounted, it is an empty directory
//! that exists: without this record every reader would take it for "nothing
//! in flight", and a writer would put state where the host never looks (and
//! dispatch again a deploy whose ticket is on the unmounted share). So the
//! record is created only by an explicit command, never by first use.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::config::Durability;

/// The record's path under REPOS_DIR.
pub const IDENTITY_FILE: &str = ".selfdeploy/identity.json";
/// A record larger than this is not ours.
const MAX_LEN: u64 = 4096;
/// The only format so far.
const FORMAT: u32 = 1;

/// What the record holds: enough to tell two shares apart and to say who
/// made it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    /// 128 random bits, hex.
    pub id: String,
    pub created_at: String,
    pub created_by: String,
}

/// Why REPOS_DIR is not known to be the share.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "REPOS_DIR {dir} has no selfdeploy identity ({IDENTITY_FILE}): if it is a shared mount, it is probably \
         not mounted (mount it, then retry); if it is a new state directory, run `selfdeploy init` once"
    )]
    Missing { dir: String },
    #[error(
        "{path} cannot be read as REPOS_DIR's identity ({why}); restore it from a backup, or move it \
         away and run `selfdeploy init` once REPOS_DIR is known to be the share"
    )]
    Unreadable { path: String, why: String },
}

/// The identity file of `repos_dir`.
pub fn path(repos_dir: &Path) -> PathBuf {
    repos_dir.join(IDENTITY_FILE)
}

/// Reads and checks `repos_dir`'s identity.
pub fn read(repos_dir: &Path) -> Result<Identity, IdentityError> {
    let file = path(repos_dir);
    let unreadable = |why: String| IdentityError::Unreadable {
        path: file.display().to_string(),
        why,
    };
    let mut handle = match super::open_regular(&file, std::fs::OpenOptions::new().read(true)) {
        Ok(handle) => handle,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IdentityError::Missing {
                dir: repos_dir.display().to_string(),
            });
        }
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut bytes = Vec::new();
    (&mut handle)
        .take(MAX_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(unreadable(format!("larger than {MAX_LEN} bytes")));
    }
    let identity: Identity =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not its JSON: {e}")))?;
    if identity.format != FORMAT {
        return Err(unreadable(format!("unknown format {}", identity.format)));
    }
    if identity.id.len() != 32 || !identity.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unreadable("its id is not 32 hex digits".into()));
    }
    Ok(identity)
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initialized {
    /// The record was written now.
    Created(Identity),
    /// A valid record was there already; nothing written.
    Existing(Identity),
}

/// Writes `repos_dir`'s identity unless a valid one is there. An unreadable
/// record is an error: replacing it would hide a damaged share.
pub fn init(repos_dir: &Path, created_by: &str, now: &str) -> Result<Initialized, InitError> {
    init_with(repos_dir, created_by, now, Durability::Synced)
}

/// `init`, as durable as asked (a replay's throwaway directory needs no
/// fsync).
pub fn init_with(
    repos_dir: &Path,
    created_by: &str,
    now: &str,
    durability: Durability,
) -> Result<Initialized, InitError> {
    match read(repos_dir) {
        Ok(identity) => return Ok(Initialized::Existing(identity)),
        Err(IdentityError::Missing { .. }) => {}
        Err(e) => return Err(InitError::Identity(e)),
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| InitError::Random(e.to_string()))?;
    let identity = Identity {
        format: FORMAT,
        id: hex::encode(random),
        created_at: now.to_owned(),
        created_by: created_by.to_owned(),
    };
    let file = path(repos_dir);
    let write = || -> io::Result<()> {
        let parent = file.parent().unwrap_or(repos_dir);
        atomic::create_dir_all_with(parent, durability)?;
        let mut json = serde_json::to_vec_pretty(&identity).map_err(io::Error::other)?;
        json.push(b'\n');
        // Never over a record that appeared meanwhile (another `init`):
        // its identity is the one on disk, and the one to report.
        atomic::create_with(&file, &json, durability)
    };
    match write() {
        Ok(()) => Ok(Initialized::Created(identity)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read(repos_dir) {
            Ok(identity) => Ok(Initialized::Existing(identity)),
            Err(e) => Err(InitError::Identity(e)),
        },
        Err(error) => Err(InitError::Write {
            path: file.display().to_string(),
            error,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Identity(IdentityError),
    #[error("cannot draw a random id: {0}; nothing written")]
    Random(String),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: io::Error },
}

/// Whether `dir` is itself a mount point, from the kernel's mount table
/// (`None` when the table cannot be read). A bind mount of a directory of the
/// same filesystem counts, which comparing device numbers would miss.
pub fn is_mount_point(dir: &Path) -> Option<bool> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .any(|mount_point| Path::new(&unescape_mountinfo(mount_point)) == dir),
    )
}

/// Mount points in mountinfo escape space, tab, newline and backslash as
/// three octal digits.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_then_created_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(IdentityError::Missing { .. })
        ));
        let Initialized::Created(made) = init(dir.path(), "ops", "2026-12-05T00:00:00Z").unwrap()
        else {
            panic!("a first init creates the record");
        };
        assert_eq!(read(dir.path()).unwrap(), made);
        assert_eq!(
            init(dir.path(), "other", "2027-01-01T00:00:00Z").unwrap(),
            Initialized::Existing(made)
        );
    }

    #[test]
    fn a_damaged_record_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".selfdeploy")).unwrap();
        for bad in [
            &b""[..],
            b"{}",
            b"\xff\xfe",
            br#"{"format":2,"id":"00000000000000000000000000000000","created_at":"x","created_by":"y"}"#,
            br#"{"format":1,"id":"nothex","created_at":"x","created_by":"y"}"#,
        ] {
            std::fs::write(path(dir.path()), bad).unwrap();
            assert!(matches!(read(dir.path()), Err(IdentityError::Unreadable { .. })));
            assert!(matches!(
                init(dir.path(), "ops", "now"),
                Err(InitError::Identity(_))
            ));
            assert_eq!(std::fs::read(path(dir.path())).unwrap(), bad);
        }
        std::fs::remove_file(path(dir.path())).unwrap();
        std::os::unix::fs::symlink("elsewhere.json", path(dir.path())).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape_mountinfo(r"/x\04"), r"/x\04");
        assert_eq!(is_mount_point(Path::new("/")), Some(true));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(is_mount_point(dir.path()), Some(false));
    }
}
