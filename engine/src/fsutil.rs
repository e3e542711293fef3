//! Small filesystem helpers: removals that tolerate what a crash or a concurrent process may leave
//! behind, path resolution, directory handles, the boot that writes not yet on disk belong to.

use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Error, IoContext, Result};

/// Where a command writes the file the user named for its output, which a rename puts in place (never
/// half a file): that file, or the file a symlink there leads to (the symlink stays). Anything else
/// there would be replaced by the rename: a device, a FIFO, a directory, a symlink to nothing; these are
/// refused, as is a directory that does not exist.
pub fn output_file(out: &Path) -> Result<PathBuf> {
    let refuse = |what: &str| {
        Err(Error::Invalid(format!(
            "`{}` is {what}, not a file: name a file to write",
            out.display()
        )))
    };
    if out.as_os_str() == "-" {
        return Err(Error::Invalid(
            "`-` is not a file: blast writes its output to a file only (a rename puts it in place), name one"
                .into(),
        ));
    }
    let meta = match out.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::Invalid(format!(
                    "cannot write `{}`: there is no directory `{}`; create it first",
                    out.display(),
                    parent.display()
                )));
            }
            return Ok(out.to_owned());
        }
        Err(e) => return Err(e).at("inspecting", out),
    };
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Ok(out.to_owned());
    }
    if file_type.is_symlink() {
        // `/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N` lead to whatever a process has open (found by
        // exploratory testing: `export -o /dev/stdout >> build.log` replaced the log with the image).
        if leads_through_proc(out) {
            return refuse(
                "a process's open file (`/dev/stdout`, `/proc/…/fd/N`), which the rename would \
                 replace, whatever it is",
            );
        }
        return match fs::canonicalize(out) {
            Ok(real) if real.is_file() => Ok(real),
            Ok(_) => refuse("a symlink to something other than a file"),
            Err(_) => refuse("a symlink to nothing"),
        };
    }
    use std::os::unix::fs::FileTypeExt;
    refuse(if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a device"
    })
}

/// Whether a hop of the symlinks from `link` lies in `/proc`, whose links are processes' open files.
fn leads_through_proc(link: &Path) -> bool {
    let mut hop = link.to_owned();
    // Linux follows at most 40 links.
    for _ in 0..40 {
        let dir = hop.parent().unwrap_or(Path::new("/"));
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        if dir.starts_with("/proc") {
            return true;
        }
        match fs::read_link(&hop) {
            Ok(target) => hop = dir.join(target),
            Err(_) => return false,
        }
    }
    false
}

/// Gives `file`, written to replace the file `out` by a rename, the permissions of the file there (which
/// the rename would otherwise reset to the new file's).
pub fn keep_permissions_of(out: &Path, file: &fs::File) -> std::io::Result<()> {
    match fs::metadata(out) {
        Ok(meta) if meta.is_file() => file.set_permissions(meta.permissions()),
        _ => Ok(()),
    }
}

/// Removes a file, directory tree or symlink; a path that is already gone is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("inspecting", path),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path).or_else(|e| {
            // Overlayfs leaves its `work/work` directory with mode 000, which only root can empty:
            // give the owner its directories back, then try again.
            if e.kind() != ErrorKind::PermissionDenied {
                return Err(e);
            }
            open_up_dirs(path);
            fs::remove_dir_all(path)
        })
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            let (culprit, e) = match meta.is_dir() {
                true => first_unremovable(path).unwrap_or((path.to_owned(), e)),
                false => (path.to_owned(), e),
            };
            Err(e).at("removing", &culprit)
        }
        _ => Ok(()),
    }
}

/// The first entry below `dir` that a removal of its own refuses, with the refusal, after a failed
/// `remove_dir_all`, which names only the top directory (`chattr +i` on one file, a directory the user
/// may not write to). Removes what it can on the way.
fn first_unremovable(dir: &Path) -> Option<(PathBuf, std::io::Error)> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_dir && let Some(found) = first_unremovable(&path) {
            return Some(found);
        }
        let removed = match is_dir {
            true => fs::remove_dir(&path),
            false => fs::remove_file(&path),
        };
        match removed {
            Err(e) if e.kind() != ErrorKind::NotFound => return Some((path, e)),
            _ => {}
        }
    }
    None
}

/// How many removals [`clear_tree`] keeps in flight.
const REMOVALS_IN_FLIGHT: usize = 8;

/// Removes what is below `dir`, but for the entries `keep` names and the directories that hold them,
/// with several removals in flight: where the filesystem discards freed blocks as it frees them, each
/// removal waits for the device, and the waits overlap. Best effort: what it leaves, a later
/// [`remove_tree`] takes.
pub fn clear_tree(dir: &Path, keep: &(dyn Fn(&str) -> bool + Sync)) {
    let Ok(pool) = rayon::ThreadPoolBuilder::new()
        .num_threads(REMOVALS_IN_FLIGHT)
        .thread_name(|i| format!("blast-remove-{i}"))
        .build()
    else {
        return;
    };
    pool.install(|| clear_dir(dir, keep));
}

fn clear_dir(dir: &Path, keep: &(dyn Fn(&str) -> bool + Sync)) {
    use rayon::prelude::*;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let entries: Vec<fs::DirEntry> = entries.flatten().collect();
    entries.par_iter().for_each(|entry| {
        if entry.file_name().to_str().is_some_and(keep) {
            return;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            clear_dir(&path, keep);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    });
}

/// Gives the owner of directory `dir` write and search permission where it lacks them, best effort: a
/// directory's mode is not part of a snapshot, and one made read-only since must not stop a change of
/// its entries.
pub fn open_dir_for_owner(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = dir.symlink_metadata()
        && meta.is_dir()
        && meta.permissions().mode() & 0o300 != 0o300
    {
        let mode = meta.permissions().mode() | 0o300;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
    }
}

/// Makes every directory below `dir` (and `dir`) readable, writable and searchable by its owner.
fn open_up_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up_dirs(&entry.path());
        }
    }
}

/// The absolute path with symlinks resolved, also for a path that does not exist yet: each existing
/// prefix is resolved, and `..` after one that does not exist is taken lexically (what does not exist
/// is no symlink), so `nx/../a` is `a`. Environments are registered and looked up under this form, so
/// `-e` finds them through any spelling.
pub fn resolve_path(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(path).at("resolving", path)?;
    let mut resolved = PathBuf::from("/");
    for component in abs.components() {
        match component {
            Component::Normal(name) => {
                resolved.push(name);
                if let Ok(real) = fs::canonicalize(&resolved) {
                    resolved = real;
                }
            }
            // Of a resolved path, the real parent.
            Component::ParentDir => {
                resolved.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(resolved)
}

/// `path` with `.` and `..` worked out from its text (as `os.makedirs` walks it, and as a path is
/// walked where every directory on the way is a plain one), not from where symlinks lead.
pub(crate) fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// `path` with symlinks resolved, or as it is where it cannot be.
pub(crate) fn real(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// The first executable file named `name` in `dirs`.
pub(crate) fn find_executable(
    name: &str,
    dirs: impl IntoIterator<Item = PathBuf>,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.into_iter().map(|dir| dir.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Writes a small file whole or not at all: to `<path>.<pid>`, synced, then renamed over `path`.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).at("writing", &tmp)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .at("syncing", &tmp)?;
    fs::rename(&tmp, path).at("writing", path)
}

pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).at("removing", path),
        _ => Ok(()),
    }
}

/// An `O_PATH` handle on the directory `path` (relative to `at`) for the `*at` calls, which then
/// resolve one name where a whole path costs a dentry lookup per component (ten deep in a venv's
/// site-packages). With `nofollow`, a symlink at `path` is refused.
pub fn dir_handle(at: impl AsFd, path: &Path, nofollow: bool) -> std::io::Result<OwnedFd> {
    let follow = if nofollow {
        OFlag::O_NOFOLLOW
    } else {
        OFlag::empty()
    };
    nix::fcntl::openat(
        at,
        path,
        follow | OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
}

/// The user's home as the password database names it (`getpwuid`), for when `HOME` is unset or empty
/// (cron, `env -i`, a service); not `/`.
pub fn password_db_home() -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.dir)
        .filter(|dir| dir.is_absolute() && dir != Path::new("/"))
}

/// The identity of the running boot of the kernel (`/proc/sys/kernel/random/boot_id`, a UUID): a write
/// not synced in one boot is in the page cache while that boot lasts, and may be lost when it ends in
/// a power cut. `None` where it cannot be read, and writes must then be synced.
pub fn boot_id() -> Option<[u8; 16]> {
    static BOOT: OnceLock<Option<[u8; 16]>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        parse_boot_id(&text)
    })
}

fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (byte, pair) in id.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_id_reads_as_its_sixteen_bytes() {
        let id = parse_boot_id("3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b\n").unwrap();
        assert_eq!(id[0], 0x3f);
        assert_eq!(id[15], 0x2b);
        assert_eq!(parse_boot_id("3f2a9c1e-0b4d"), None, "too short");
        assert_eq!(
            parse_boot_id("zz2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b"),
            None,
            "not hex"
        );
        assert!(boot_id().is_some(), "Linux names its boot");
    }
}
