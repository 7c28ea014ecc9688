//! Durable file writes: a reader sees the old file or the new one, never half
//! of either, and a crash after return loses nothing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use crate::config::Durability;

/// Prefix of temporary files; holds a character no valid name can contain.
pub const TEMP_PREFIX: &str = ".~tmp.";

/// Writes `bytes` to `path`: temp file in the same directory, fsync, rename,
/// fsync of the directory. A replaced file keeps its mode; a new one is
/// readable by all (0644), as the host and the platform read these files.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, bytes, Durability::Synced)
}

/// [`write`], with the fsyncs only when `durability` asks for them (the
/// rename still makes the write whole for readers).
pub fn write_with(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    if durability == Durability::Synced {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir_with(dir, durability)
}

/// Creates `path` whole or not at all (0644, durably when asked), never over
/// a file that is there or appeared meanwhile (`AlreadyExists` then).
pub fn create_with(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    tmp.write_all(bytes)?;
    if durability == Durability::Synced {
        tmp.as_file().sync_all()?;
    }
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir_with(dir, durability)
}

/// Creates `path` whole or not at all, readable by its owner only from the
/// start, and never over a file that appeared meanwhile.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // The umask can only remove bits; this makes the mode exactly 0600.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Removes a file (durably when asked); a missing file is fine.
pub fn remove_with(path: &Path, durability: Durability) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir_with(parent(path), durability),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a directory and its missing parents, durably.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    create_dir_all_with(dir, Durability::Synced)
}

pub fn create_dir_all_with(dir: &Path, durability: Durability) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(up) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_with(up, durability)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir_with(parent(dir), durability),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::other(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(e) => Err(e),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn sync_dir_with(dir: &Path, durability: Durability) -> io::Result<()> {
    match durability {
        Durability::Synced => sync_dir(dir),
        Durability::Unsynced => Ok(()),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["f"]);
    }

    #[test]
    fn new_files_are_readable_by_all_and_replaced_files_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.md");
        write(&path, b"one").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(mode(&path), 0o640);
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("docs"), "").unwrap();
        let err = create_dir_all(&dir.path().join("docs/work-items")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("docs exists and is not a directory"),
            "{err}"
        );
    }

    #[test]
    fn create_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        remove_with(&deep.join("missing"), Durability::Synced).unwrap();
    }
}
