//! File locks between blast processes: the store lock (shared by every operation, exclusive for the
//! sweep of `blast clean`), one lock per environment and one around the metadata index. A process that has
//! to wait says so after a second and keeps waiting; nobody fails on a lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};

/// How long a process waits silently before it tells the user what it is waiting for.
const QUIET_WAIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped (closing the file releases the flock).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
}

impl LockGuard {
    /// Whether `path` still names the locked file: another process may have removed a lock file it
    /// found free (reclaiming a dead staging area) between our open and our lock.
    pub fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), path.metadata()) {
            (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
            _ => false,
        }
    }
}

/// Takes the lock on `path`, waiting as long as needed. `what` names the lock in the waiting message.
pub fn acquire(path: &Path, mode: LockMode, what: &str) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        if try_lock(&file, mode).at("locking", path)? {
            return Ok(LockGuard { file });
        }
        if !told && started.elapsed() >= QUIET_WAIT {
            eprintln!("blast: waiting for another blast process to release {what}…");
            told = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Takes the lock only if nobody holds it.
pub fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    Ok(try_lock(&file, mode)
        .at("locking", path)?
        .then_some(LockGuard { file }))
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at("opening lock file", path)
}

fn try_lock(file: &File, mode: LockMode) -> std::io::Result<bool> {
    let attempt = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
