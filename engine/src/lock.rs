//! File locks between blast processes: the store lock (shared by every operation, exclusive for the
//! sweep of `blast clean`), one lock per environment, one around the metadata index, and the claim on a
//! new environment's directory, which processes of different stores share. A process that has to wait
//! says so after a second and keeps waiting; nobody fails on a lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How long a process waits silently before it tells the user what it is waiting for.
const QUIET_WAIT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// The processes holding an exclusive lock on the file at `path`, as `/proc/locks` lists them (none
/// where it cannot be read): who keeps another command waiting.
pub fn holders(path: &Path) -> Vec<u32> {
    holders_of(path, true)
}

/// The processes holding a lock of either kind on the file at `path`, but this one.
fn all_holders(path: &Path) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = holders_of(path, false);
    pids.retain(|&pid| pid != me);
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The holders of exclusive locks only (`exclusive`), or of any, on the file at `path`.
fn holders_of(path: &Path, exclusive: bool) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; a process waiting for it has `->` after the
    // number.
    let file = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
        meta.ino()
    );
    // Where `st_dev` is not the device `/proc/locks` names (btrfs subvolumes, some overlays), the
    // inode alone, with the holder's open files to confirm it.
    let inode = format!(":{}", meta.ino());
    let holds_open = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        })
    };
    locks
        .lines()
        .filter(|line| !line.contains("->") && (!exclusive || line.contains(" WRITE ")))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|field| field.ends_with(&inode))?;
            let pid: u32 = fields.get(at.checked_sub(1)?)?.parse().ok()?;
            (fields[at] == file || holds_open(pid)).then_some(pid)
        })
        .collect()
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
        is_at(&self.file, path)
    }
}

/// Takes the lock on `path`, waiting as long as needed. `what` names the lock in the waiting message.
pub fn acquire(path: &Path, mode: LockMode, what: &str) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    wait_for(&file, mode, path, what)?;
    Ok(LockGuard { file })
}

/// Locks `file` (at `path`), waiting as long as needed.
fn wait_for(file: &File, mode: LockMode, path: &Path, what: &str) -> Result<()> {
    let started = Instant::now();
    let mut told = false;
    loop {
        if try_lock(file, mode).at("locking", path)? {
            return Ok(());
        }
        if !told && started.elapsed() >= QUIET_WAIT {
            eprintln!(
                "blast: waiting for another blast process to release {what}{}…",
                named_holders(path, mode)
            );
            told = true;
        }
        // A signal a latch noted (an install's) ends the wait: nothing is done under a lock not held
        // yet (found by the review: Ctrl-C went unanswered until the other process let go).
        if let Some(signal) = crate::sandbox::Latch::noted() {
            return Err(Error::InterruptedWaiting {
                what: what.to_owned(),
                signal,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// For a wait on an exclusive lock (the sweep of `blast clean`, which every other command holds off
/// while it runs, however many): which processes hold it, so that the user knows what to wait for or
/// end (found by exploratory testing: a `clean` behind a long `blast run` looked hung).
fn named_holders(path: &Path, mode: LockMode) -> String {
    if mode != LockMode::Exclusive {
        return String::new();
    }
    let pids = all_holders(path);
    let shown: Vec<String> = pids
        .iter()
        .take(3)
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|word| !word.is_empty())
                .map(|word| String::from_utf8_lossy(word).into_owned())
                .collect();
            let mut line = words.join(" ");
            if line.chars().count() > 80 {
                line = format!("{}…", line.chars().take(79).collect::<String>());
            }
            format!("pid {pid} (`{}`)", line.escape_debug())
        })
        .collect();
    match pids.len() {
        0 => String::new(),
        n if n > shown.len() => format!(
            ", held by {} and {} more",
            shown.join(", "),
            n - shown.len()
        ),
        _ => format!(", held by {}", shown.join(", ")),
    }
}

/// Takes the lock only if nobody holds it.
pub fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    Ok(try_lock(&file, mode)
        .at("locking", path)?
        .then_some(LockGuard { file }))
}

/// A new environment's directory, made where missing and locked while the environment is made in it:
/// blast processes of different stores share no other lock, and two of them making an environment at
/// one path take turns on this one, the second finding the first's files there. Dropped, it removes the
/// directories it made that are still empty, so that a failed operation leaves nothing behind.
#[derive(Debug)]
pub struct DirClaim {
    /// `None` where the filesystem cannot lock a directory (NFS): the claim is then the checks alone.
    dir: Option<File>,
    /// Outermost first.
    made: Vec<PathBuf>,
}

impl Drop for DirClaim {
    fn drop(&mut self) {
        // Only the directory claimed: what a move renamed onto its path is the environment.
        let Some(claimed) = self.made.last() else {
            return;
        };
        if !self.dir.as_ref().is_some_and(|dir| is_at(dir, claimed)) {
            return;
        }
        for dir in self.made.iter().rev() {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// Claims the directory `path` (absolute), making it and its missing parents. A wait is run through
/// `waiting`, which may let go of other locks meanwhile.
pub fn claim_dir(
    path: &Path,
    mut waiting: impl FnMut(&dyn Fn() -> Result<()>) -> Result<()>,
) -> Result<DirClaim> {
    loop {
        let made = make_dirs(path)?;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECTORY.bits())
            .open(path)
            .at("opening", path)?;
        let locked = match try_lock(&dir, LockMode::Exclusive) {
            Ok(locked) => locked,
            // NFS locks no directory (and an exclusive lock wants a file open for writing): blast
            // goes on as it did before claims, never failing on a lock.
            Err(e) if unlockable(&e) => {
                return Ok(DirClaim { dir: None, made });
            }
            Err(e) => return Err(e).at("locking", path),
        };
        if !locked {
            let what = format!("`{}` (making an environment there)", path.display());
            waiting(&|| wait_for(&dir, LockMode::Exclusive, path, &what))?;
        }
        // The holder we waited for may have removed the directory it made (and failed); the next one is
        // ours to make.
        if is_at(&dir, path) {
            return Ok(DirClaim {
                dir: Some(dir),
                made,
            });
        }
    }
}

/// A lock the filesystem does not offer, as opposed to one held by another process.
fn unlockable(e: &std::io::Error) -> bool {
    [libc::EBADF, libc::ENOLCK, libc::EOPNOTSUPP, libc::EINVAL]
        .contains(&e.raw_os_error().unwrap_or(0))
}

/// Makes `path` and its missing parents; returns those made here, outermost first.
fn make_dirs(path: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = path.ancestors().take_while(|dir| !dir.exists()).collect();
    let mut made = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => made.push(dir.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).at("creating", dir),
        }
    }
    Ok(made)
}

fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), path.metadata()) {
        (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
        _ => false,
    }
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
