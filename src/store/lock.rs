//! The per-work-item lock: an exclusive flock on a file outside the state
//! directory (a lock file inside a directory that reset removes and recreates
//! excludes nobody: the next opener gets a new inode).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::atomic;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("work item is locked by another selfdeploy process (waited {0:?}); retry later")]
    Busy(Duration),
    #[error("cannot open lock file {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Held for the whole event; released on drop.
#[derive(Debug)]
pub struct ItemLock {
    _file: File,
}

impl ItemLock {
    /// The open, locked file (the lock is released when it is dropped).
    pub fn into_file(self) -> File {
        self._file
    }

    pub fn acquire(path: &Path, wait: Duration) -> Result<ItemLock, LockError> {
        let io = |error| LockError::Io {
            path: path.display().to_string(),
            error,
        };
        if let Some(dir) = path.parent() {
            atomic::create_dir_all(dir).map_err(io)?;
        }
        // A FIFO would block this open for ever, a symlink would lock (or
        // create) a file elsewhere: only a regular file is a lock file.
        let file = super::open_regular(
            path,
            OpenOptions::new().create(true).truncate(false).write(true),
        )
        .map_err(io)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ItemLock { _file: file }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => return Err(LockError::Busy(wait)),
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held lock is waited for up to the timeout: taken when the holder
    /// lets go in time, refused as busy (after waiting) when it does not.
    #[test]
    fn a_held_lock_is_waited_for_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/x.lock");
        let held = ItemLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        let busy = ItemLock::acquire(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(busy, LockError::Busy(_)), "{busy}");
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let start = Instant::now();
        ItemLock::acquire(&path, Duration::from_secs(10)).unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
        releaser.join().unwrap();
    }
}
