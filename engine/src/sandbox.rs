//! The sandbox: runs one program (an installer) in new user, mount and pid namespaces, and a network
//! namespace when offline, over an overlay of the environment whose upper directory collects every
//! change the program makes.
//!
//! `unshare` of a user namespace fails in a multi-threaded process, so the sandbox is set up by a
//! helper: this same binary re-executed with [`HELPER_ARG`] (the CLI hands it to [`helper_main`] before
//! anything else runs, so it is single-threaded). The helper
//! 1. dies with blast (`PR_SET_PDEATHSIG`) and unshares the namespaces, mapping the caller to an
//!    unprivileged id inside (so the installer holds no capabilities and cannot undo a mount);
//! 2. assembles a new root: the whole filesystem bound read-only, a private `/tmp` and `/dev/shm`, the
//!    paths the user named bound read-only where the private `/tmp` would hide them, the installer's
//!    caches bound read-write, secrets (`~/.ssh`, `~/.aws`, `~/.config`, …) hidden, and the overlay
//!    mounted at the environment's real path (`userxattr,index=off,xino=off`), its upper directory on
//!    a private tmpfs handed back to blast when the changes will be small ([`Overlay::in_memory`]);
//! 3. forks the pid namespace's init, which mounts a fresh `/proc`, pivots into the new root, leads a
//!    session of its own, starts the program in a process group of its own in that session (so a
//!    program that stops its group is not orphaned) and reaps until it exits. When init dies, the kernel
//!    kills everything in the namespace, and every mount vanishes with the mount namespace: nothing
//!    outlives the sandbox.
//!
//! A step that fails is reported through file descriptor 3, a socket (`PART\0STEP\0DETAIL`, see
//! [`report_failure`]), and the helper exits with [`SETUP_FAILED`]; the parent turns that into an error
//! that names the fix (see [`Refusal`]).

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, execve, fork, getgid, getuid, pivot_root, setsid};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

mod interrupts;
mod orphans;

pub use interrupts::Latch;

/// The first argument that makes the `blast` binary act as the sandbox helper.
pub const HELPER_ARG: &str = "__blast-sandbox-helper";

/// The helper's exit code when the sandbox could not be set up (the program never ran).
pub const SETUP_FAILED: i32 = 121;

/// Where the helper reports a failed step; closed when the program starts.
const STATUS_FD: i32 = 3;

/// The id the caller is mapped to inside when it is root outside: any unprivileged id will do, what
/// matters is that the program runs without the namespace's capabilities.
const UNPRIVILEGED_ID: u32 = 1000;

/// How often init samples the processes of the sandbox when a limit needs watching.
const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Home-directory entries a sandboxed program has no business reading.
const SECRETS: &[&str] = &[
    ".ssh",
    ".aws",
    ".config",
    ".netrc",
    ".gnupg",
    ".docker",
    ".kube",
    ".pypirc",
    ".git-credentials",
];

/// Sockets through which a program could act outside the sandbox (start a systemd unit, use an
/// agent's keys, drive docker): the session's runtime directory and the system's buses and daemons.
const SYSTEM_SOCKETS: &[&str] = &[
    "/run/user",
    "/run/dbus",
    "/run/systemd",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman",
    "/run/containerd",
];

/// Variables that name a file or directory of credentials (besides `KUBECONFIG`, a list, and
/// `XDG_CONFIG_HOME`, whose installers' directories are brought back): hidden as the home's are.
const SECRET_VARIABLES: &[&str] = &[
    "DOCKER_CONFIG",
    "REGISTRY_AUTH_FILE",
    "NETRC",
    "AWS_SHARED_CREDENTIALS_FILE",
    "CLOUDSDK_CONFIG",
    "GNUPGHOME",
];

/// What is brought back under a hidden system directory: name resolution, for network access.
const SYSTEM_REVEALED: &[&str] = &["/run/systemd/resolve"];

/// What to run and what it may see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub set_env: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub remove_env: Vec<String>,
    /// The working directory inside (falls back to `/` when it is not visible there).
    pub cwd: PathBuf,
    /// An empty directory the new root is assembled on.
    pub root: PathBuf,
    pub overlay: Option<Overlay>,
    /// Bound read-write: the installer's caches, projects, `--allow-write` paths. Real paths that
    /// exist, made and checked by the caller; one that holds a hidden path, or that leads through a
    /// symlink by the time it is bound, fails the setup.
    pub writable: Vec<PathBuf>,
    /// Bound read-only again over what `writable` makes writable: other environments inside a
    /// project, whose files may be hardlinks of the store's objects.
    pub rebound_read_only: Vec<PathBuf>,
    /// Bound read-only where the private `/tmp` would hide them: paths the user named.
    pub visible: Vec<PathBuf>,
    /// Hidden: an empty directory over a directory, an empty file over a file.
    pub hidden: Vec<PathBuf>,
    /// Brought back read-only below a hidden directory (pip's and uv's own configuration).
    pub revealed: Vec<PathBuf>,
    /// Without it the program gets a network namespace with loopback only.
    pub network: bool,
    pub limits: Limits,
    /// The program's standard output goes to blast's standard error (whose standard output carries
    /// its own report).
    pub stdout_to_stderr: bool,
    /// A second ending signal within 3 s of the first kills the program: an installer is blast's to
    /// stop. Without it every signal is passed on, as to a command run directly (see [`interrupts`]).
    pub second_signal_kills: bool,
}

impl Spec {
    /// Hides the user's secrets and the system's sockets (see [`Secrets`]).
    pub fn hide_secrets(&mut self, keep: &[&str]) {
        let secrets = Secrets::of(keep);
        self.hidden.extend(secrets.hidden);
        self.revealed.extend(secrets.revealed);
    }
}

/// What [`Spec::hide_secrets`] hides: the user's secrets and the system's sockets (see [`SECRETS`],
/// [`SYSTEM_SOCKETS`]), with name resolution and, below the hidden home directories, `keep` (such as an
/// installer's own configuration) brought back.
pub struct Secrets {
    hidden: Vec<PathBuf>,
    revealed: Vec<PathBuf>,
}

impl Secrets {
    pub fn of(keep: &[&str]) -> Secrets {
        // `HOME` may be unset, empty or elsewhere (cron, `env -i`, a CI job's): the home the password
        // database names holds the user's secrets all the same.
        let mut home: Vec<PathBuf> = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain(crate::fsutil::password_db_home())
            .collect();
        home.dedup();
        // Where variables place credentials outside the home: a CI job's `DOCKER_CONFIG` holds the
        // registry login blast itself reads (found in review: a build could read it there).
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let named_secrets: Vec<PathBuf> = SECRET_VARIABLES
            .iter()
            .filter_map(|name| var(name))
            .map(PathBuf::from)
            .chain(
                var("KUBECONFIG")
                    .iter()
                    .flat_map(std::env::split_paths)
                    .collect::<Vec<_>>(),
            )
            .collect();
        let xdg_config = var("XDG_CONFIG_HOME").map(PathBuf::from);
        Secrets {
            hidden: home
                .iter()
                .flat_map(|h| SECRETS.iter().map(move |s| h.join(s)))
                .chain(named_secrets)
                .chain(xdg_config.clone())
                .chain(SYSTEM_SOCKETS.iter().map(PathBuf::from))
                .chain(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
                // The agent's socket, which a directory named under `/tmp` may hold; the display's
                // and tmux's sockets there (tmux runs commands outside) are not shown when named.
                .chain(std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
                .chain([
                    PathBuf::from("/tmp/.X11-unix"),
                    PathBuf::from(format!("/tmp/tmux-{}", nix::unistd::getuid())),
                ])
                .filter(|path| path.is_absolute())
                .collect(),
            revealed: home
                .iter()
                .flat_map(|h| keep.iter().map(move |s| h.join(s)))
                // The installers' own configuration where `XDG_CONFIG_HOME` puts it.
                .chain(xdg_config.iter().flat_map(|xdg| {
                    keep.iter()
                        .filter_map(|s| s.strip_prefix(".config/"))
                        .map(move |s| xdg.join(s))
                }))
                .chain(SYSTEM_REVEALED.iter().map(PathBuf::from))
                .collect(),
        }
    }

    /// The hidden directory `path` lies in, if the program cannot see it.
    pub fn hidden_dir_of(&self, path: &Path) -> Option<&Path> {
        if self.revealed.iter().any(|r| path.starts_with(r)) {
            return None;
        }
        self.hidden
            .iter()
            .find(|h| path.starts_with(h))
            .map(PathBuf::as_path)
    }
}

/// Resource limits on everything the program starts. A cgroup v2 memory and pids controller is not
/// delegated on every machine, so the limits are enforced where they work everywhere: memory and the
/// process count by init, which samples the sandbox's processes every [`SAMPLE_INTERVAL`] and ends
/// them all past a limit (an address-space rlimit would count reservations, not use, and break
/// programs far below the limit; `RLIMIT_NPROC` does not hold for a caller that is root outside), CPU
/// time per process by `RLIMIT_CPU`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Resident memory of all the sandbox's processes together, in bytes.
    pub memory: Option<u64>,
    /// Processes alive at once.
    pub pids: Option<u64>,
    /// CPU seconds of each process.
    pub cpu_seconds: Option<u64>,
}

impl Limits {
    /// Whether init has to sample the sandbox's processes.
    fn watched(&self) -> bool {
        self.memory.is_some() || self.pids.is_some()
    }

    /// One line per limit set: what it is and how it is enforced.
    pub fn enforcement(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let interval = SAMPLE_INTERVAL.as_millis();
        if let Some(bytes) = self.memory {
            lines.push(format!(
                "memory {}: resident memory of all its processes, sampled every {interval} ms",
                human_bytes(bytes)
            ));
        }
        if let Some(pids) = self.pids {
            lines.push(format!(
                "pids {pids}: processes alive at once, sampled every {interval} ms"
            ));
        }
        if let Some(secs) = self.cpu_seconds {
            lines.push(format!("cpu-time {secs} s: of each process (RLIMIT_CPU)"));
        }
        lines
    }
}

/// A limit the program went past, and what was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Resident bytes seen, over the limit.
    Memory {
        used: u64,
        limit: u64,
    },
    /// Processes seen, over the limit.
    Pids {
        seen: u64,
        limit: u64,
    },
    CpuTime {
        limit: u64,
    },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LimitHit::Memory { used, limit } => write!(
                f,
                "its processes used {} of memory, over the limit of {} (--memory)",
                human_bytes(used),
                human_bytes(limit)
            ),
            LimitHit::Pids { seen, limit } => write!(
                f,
                "it ran {seen} processes at once, over the limit of {limit} (--pids)"
            ),
            LimitHit::CpuTime { limit } => write!(
                f,
                "a process used {limit} s of CPU time, the limit (--cpu-time)"
            ),
        }
    }
}

impl LimitHit {
    /// The line init reports it with: `limit KIND SEEN LIMIT`.
    fn encode(&self) -> String {
        match *self {
            LimitHit::Memory { used, limit } => format!("limit memory {used} {limit}"),
            LimitHit::Pids { seen, limit } => format!("limit pids {seen} {limit}"),
            LimitHit::CpuTime { limit } => format!("limit cpu-time {limit} {limit}"),
        }
    }

    fn decode(line: &str) -> Option<LimitHit> {
        let mut words = line.strip_prefix("limit ")?.split(' ');
        let (kind, seen, limit) = (words.next()?, words.next()?, words.next()?);
        let (seen, limit): (u64, u64) = (seen.parse().ok()?, limit.parse().ok()?);
        match kind {
            "memory" => Some(LimitHit::Memory { used: seen, limit }),
            "pids" => Some(LimitHit::Pids { seen, limit }),
            "cpu-time" => Some(LimitHit::CpuTime { limit }),
            _ => None,
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) || bytes >= 16 * MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// An overlay at `target` (the lower layer) whose changes land in `dir`'s `upper` directory (`work`
/// beside it is the overlay's own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    pub target: PathBuf,
    pub dir: PathBuf,
    /// The changes are expected to be small (links, removals): the helper mounts a private tmpfs at
    /// `dir` and makes `upper` and `work` there (see [`InMemory`]), where no inode of the disk is
    /// written, then freed, for each of them.
    pub in_memory: bool,
}

impl Overlay {
    /// An overlay of `target` into `dir`, which is made with its `upper` and `work` directories (on the
    /// disk, whether or not they end up in memory).
    ///
    /// The sandbox maps the caller's user and group only, and the overlay gives what it copies up its
    /// owner and group, so a directory of the environment in another group (a team's directory, whose
    /// setgid bit hands its group down) cannot be copied up: the installer's first write there failed
    /// with `EOVERFLOW`. Such directories of the caller's are made in the upper directory beforehand,
    /// in the caller's group; the overlay then has nothing to copy up. They hold no change (a
    /// directory's owner and mode are not part of a tree, SPEC §9), and need the disk: the overlay is
    /// not kept in memory then.
    pub fn make(target: &Path, dir: &Path, in_memory: bool) -> Result<Overlay> {
        fs::create_dir(dir).at("creating sandbox directory", dir)?;
        take_own_group(dir)?;
        for path in [dir.join(UPPER), dir.join(WORK)] {
            fs::create_dir(&path).at("creating sandbox directory", &path)?;
        }
        let in_other_groups = dirs_in_other_groups(target);
        // Each with the directories on the way, as the overlay would copy them up; all made first (the
        // caller's, writable), then given the lower's modes, deepest first, so that a directory
        // without write permission still gets its subdirectories (found in review).
        let mut made: Vec<(PathBuf, u32)> = Vec::new();
        for on_the_way in in_other_groups.iter().flat_map(|path| {
            let mut way: Vec<&Path> = path.ancestors().collect();
            way.reverse();
            way.into_iter().skip(1)
        }) {
            let upper = dir.join(UPPER).join(on_the_way);
            if upper.symlink_metadata().is_ok() {
                continue;
            }
            let lower = target.join(on_the_way);
            let mode = fs::metadata(&lower).at("inspecting", &lower)?.mode() & 0o1777;
            fs::create_dir(&upper).at("creating sandbox directory", &upper)?;
            made.push((upper, mode));
        }
        for (upper, mode) in made.iter().rev() {
            fs::set_permissions(upper, fs::Permissions::from_mode(*mode))
                .at("setting the mode of", upper)?;
        }
        Ok(Overlay {
            target: target.to_owned(),
            dir: dir.to_owned(),
            in_memory: in_memory && in_other_groups.is_empty(),
        })
    }

    /// Where the changes of `ran` are.
    pub fn upper(&self, ran: &Ran) -> PathBuf {
        match &ran.in_memory {
            Some(memory) => memory.dir().join(UPPER),
            None => self.dir.join(UPPER),
        }
    }
}

/// Gives `dir` the caller's group, without a setgid bit its parent handed down: the overlay's work
/// directory and what it writes must belong to ids the sandbox maps (a store in a team's setgid
/// directory made the mount fail with `EACCES`).
fn take_own_group(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).at("inspecting sandbox directory", dir)?;
    let gid = getgid().as_raw();
    if meta.gid() != gid {
        std::os::unix::fs::chown(dir, None, Some(gid)).at("giving your group to", dir)?;
    }
    if meta.mode() & libc::S_ISGID != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o1777))
            .at("setting the mode of", dir)?;
    }
    Ok(())
}

/// The directories below `root` (relative paths, parents first) that belong to the caller in another
/// group than the caller's own: see [`Overlay::make`]. Directories of other users are left to the
/// overlay (pip's error names them), and so is what cannot be read. Looked for only where `root`
/// itself is in another group or hands its group down (setgid): the directories blast and the
/// installers make take the caller's group otherwise, and the walk costs ~15 ms in a big environment.
fn dirs_in_other_groups(root: &Path) -> Vec<PathBuf> {
    use rayon::prelude::*;
    let ids = (getuid().as_raw(), getgid().as_raw());
    let team = fs::metadata(root)
        .is_ok_and(|meta| meta.gid() != ids.1 || meta.mode() & libc::S_ISGID != 0);
    if !team {
        return Vec::new();
    }
    fn walk(root: &Path, rel: &Path, ids: (u32, u32), found: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(root.join(rel)) else {
            return;
        };
        // Each stat relative to the listed directory's handle (`fstatat`), not by a path ten deep.
        let subdirs: Vec<(PathBuf, bool)> = entries
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| {
                let other_group = entry
                    .metadata()
                    .is_ok_and(|meta| meta.uid() == ids.0 && meta.gid() != ids.1);
                (rel.join(entry.file_name()), other_group)
            })
            .collect();
        let nested: Vec<Vec<PathBuf>> = subdirs
            .into_par_iter()
            .map(|(sub, other_group)| {
                let mut below = Vec::new();
                if other_group {
                    below.push(sub.clone());
                }
                walk(root, &sub, ids, &mut below);
                below
            })
            .collect();
        found.extend(nested.into_iter().flatten());
    }
    let mut found = Vec::new();
    walk(root, Path::new(""), ids, &mut found);
    found
}

/// The message that carries the descriptor of an in-memory overlay (see [`receive_status`]).
const MEMORY_MARK: &[u8] = b"m";
/// Init's message that the program stopped itself ([`interrupts::program_stopped_itself`]).
const STOPPED_MARK: &[u8] = b"s";

/// Names of the overlay's directories in [`Overlay::dir`].
const UPPER: &str = "upper";
const WORK: &str = "work";

/// How a sandboxed program ended, and where its overlay's changes are.
#[derive(Debug)]
pub struct Ran {
    pub outcome: Outcome,
    /// The overlay's directory when it was kept in memory.
    pub in_memory: Option<InMemory>,
    /// The first SIGINT, SIGTERM, SIGHUP or SIGQUIT blast got while it waited (passed on to the
    /// program, see [`interrupts`]): what the program did with it is its own business, but an install
    /// ends there.
    pub interrupted: Option<i32>,
}

/// The tmpfs of an in-memory overlay ([`Overlay::in_memory`]): the sandbox's mounts are gone with
/// its mount namespace, and this handle, passed from the helper to blast, is all that keeps it.
/// Dropping it frees the memory, as the kernel does when blast dies.
#[derive(Debug)]
pub struct InMemory(OwnedFd);

impl InMemory {
    /// A path to the directory through the handle.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// Killed by this signal (Ctrl-C is SIGINT).
    Signaled(i32),
    /// Ended by the sandbox for going past a limit.
    Stopped(LimitHit),
}

/// A sandbox that could not be set up: the step, what the kernel said and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub step: String,
    pub detail: String,
    /// The sandbox was set up and the program's `execve` failed: the program is at fault.
    pub program_failed: bool,
}

impl Refusal {
    /// Reads a failure's report (see [`report_failure`]).
    fn decode(report: &str) -> Refusal {
        let mut fields = report.splitn(3, '\0');
        let part = fields.next().unwrap_or_default();
        let step = fields.next().unwrap_or_default();
        Refusal {
            program_failed: part == FailedPart::Program.name(),
            step: step.to_owned(),
            detail: fields.next().unwrap_or_default().to_owned(),
        }
    }

    /// What the user can change so that this step works; `unsandboxed`, the command's flag for
    /// running without the sandbox, when it has one.
    pub fn fix(&self, unsandboxed: Option<&str>) -> String {
        let step = self.step.as_str();
        // Where the command has a way to run unsandboxed, it is the last resort.
        let or_unsandboxed = unsandboxed.map_or(String::new(), |flag| format!(", or pass {flag}"));
        if step.starts_with("creating namespaces") || step.starts_with("mapping") {
            format!(
                "user namespaces are disabled or restricted here: enable them (`sysctl -w kernel.unprivileged_userns_clone=1`, \
                 `sysctl -w user.max_user_namespaces=15000`; on Ubuntu 24.04 `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` \
                 or an AppArmor profile that allows `userns` for blast), run outside a container that masks them \
                 (Docker: `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`){or_unsandboxed}"
            )
        } else if step.starts_with("mounting the overlay") {
            format!(
                "the kernel refused an unprivileged overlay (it needs Linux 5.11+ and a store on a filesystem with user \
                 extended attributes, such as ext4, xfs, btrfs or tmpfs on 6.6+): move BLAST_HOME{or_unsandboxed}"
            )
        } else if step.starts_with("placing the environment") {
            "the environment's recorded path now leads through a symlink or a file: move the environment back, or recreate it where it is (`blast sync`)"
                .into()
        } else if step.starts_with("a path changed") {
            "something renamed or replaced a path the sandbox binds while it was set up: run the command again, and see what else writes there".into()
        } else if step.starts_with("making a path writable") {
            "a directory that may be written holds one the sandbox hides (a secret, the session's sockets): name a directory below it".into()
        } else if step.starts_with("binding a path") {
            "a path the program needs could not be placed in the sandbox (a symlink on its way, or a parent that is a file): name it by its real path".into()
        } else if step.starts_with("setting a bound path's access") {
            "a path the program needs holds a mount the sandbox may not change (one of another namespace, or the sandbox's own): name a path below it or beside it".into()
        } else if step.starts_with("mounting /proc") {
            "the kernel refused a fresh /proc (a container that masks /proc), which the limits need: run without --memory and --pids, or in a container that allows it"
                .into()
        } else if step.starts_with("making the root read-only") {
            format!(
                "the kernel lacks mount_setattr (Linux 5.12+): upgrade the kernel{or_unsandboxed}"
            )
        } else if step.starts_with("starting") {
            "the program could not be started inside the sandbox: check that it exists and is executable".into()
        } else {
            format!(
                "mounts inside user namespaces are restricted here: run `blast doctor` for details{or_unsandboxed}"
            )
        }
    }
}

/// Runs `spec` in the sandbox and waits for it. Ctrl-C reaches the program (and ends it); blast itself
/// passes it on meanwhile (see [`interrupts`]) and stays to clean up after.
pub fn run(spec: &Spec) -> Result<std::result::Result<Ran, Refusal>> {
    let encoded = serde_json::to_string(spec)
        .map_err(|e| Error::Invalid(format!("internal: encoding the sandbox spec: {e}")))?;
    // A socket, not a pipe: it also carries the descriptor of an in-memory overlay.
    let (read_end, write_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::Invalid(format!("creating a socket for the sandbox: {e}")))?;
    let status_fd = write_end.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    // blast's pid, for the helper to check that it still has that parent once it asked to die with it.
    command
        .arg(HELPER_ARG)
        .arg(std::process::id().to_string())
        .arg(encoded)
        .env_remove(crate::index::RECOVERY_VAR);
    // The helper and the init it forks keep their environment, which the program must not find in
    // `/proc/1/environ` should init ever lose the capabilities that keep it out today (found in
    // review): what the program may not have, they do not have either.
    for name in &spec.remove_env {
        command.env_remove(name);
    }
    // SAFETY: dup2 is async-signal-safe, and it is all that runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(status_fd, STATUS_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // A process group of its own: signals reach it through blast only, once (see [`interrupts`]).
    command.process_group(0);
    let interrupts = interrupts::Forwarding::start(interrupts::Child::Helper {
        forcing: spec.second_signal_kills,
    });
    let spawned = {
        let _held = interrupts.hold_for_spawn();
        command
            .spawn()
            .inspect(|child| interrupts.child_started(child.id()))
    };
    let asked = spec.overlay.as_ref().is_some_and(|o| o.in_memory);
    let waited = spawned.map(|mut child| {
        drop(write_end);
        // The status is read while the program runs: it may say that the program stopped itself.
        std::thread::scope(|scope| {
            let status = scope.spawn(|| receive_status(&read_end, asked));
            let waited = wait_for_child(&mut child, &interrupts);
            let status = status
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (waited, status)
        })
    });
    let interrupted = interrupts.received();
    drop(interrupts);
    let (waited, received) = waited.map_err(|e| Error::Io {
        action: "starting the sandbox helper",
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;
    let status = waited.map_err(|e| Error::Io {
        action: "waiting for the sandbox helper",
        path: PathBuf::from("/proc/self/exe"),
        source: e,
    })?;
    let (report, in_memory) = received?;
    if let Some(hit) = LimitHit::decode(report.trim_end()) {
        return Ok(Ok(Ran {
            outcome: Outcome::Stopped(hit),
            in_memory,
            interrupted,
        }));
    }
    if status.code() == Some(SETUP_FAILED) && !report.is_empty() {
        return Ok(Err(Refusal::decode(&report)));
    }
    let outcome = match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 && code < 160 => Outcome::Signaled(code - 128),
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::Exited(1),
    };
    Ok(Ok(Ran {
        outcome,
        in_memory,
        interrupted,
    }))
}

/// Reads what the helper and init sent until they are gone: text (a failed step, a limit hit), that
/// the program stopped itself (acted on at once), and, when `in_memory` was asked for, the descriptor
/// of the overlay's tmpfs. A descriptor announced but lost on the way (blast at its limit of open
/// files) fails the run: the changes would read as none.
fn receive_status(socket: &OwnedFd, in_memory: bool) -> Result<(String, Option<InMemory>)> {
    // Read on to the end all the same: the program may yet stop itself, and wait for blast's answer.
    let mut lost: Option<&str> = None;
    let (mut report, mut memory) = (Vec::new(), None);
    loop {
        let mut buffer = [0u8; 4096];
        let mut control = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
        let message = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => message,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        };
        let (bytes, truncated) = (message.bytes, message.flags.contains(MsgFlags::MSG_CTRUNC));
        let mut handed = Vec::new();
        for cmsg in message.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: descriptors just received, owned by nobody else in this process.
                handed.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if bytes == 0 && handed.is_empty() {
            break;
        }
        if buffer[..bytes] == *STOPPED_MARK {
            interrupts::program_stopped_itself();
            continue;
        }
        if buffer[..bytes] != *MEMORY_MARK {
            report.extend_from_slice(&buffer[..bytes]);
            continue;
        }
        if !in_memory {
            continue;
        }
        let Some(fd) = handed.pop().filter(|_| !truncated) else {
            lost = lost.or(Some("the descriptor was dropped"));
            continue;
        };
        let is_tmpfs = nix::sys::statfs::fstatfs(&fd)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if !is_tmpfs {
            lost = lost.or(Some("the descriptor is not of a tmpfs"));
            continue;
        }
        memory = Some(InMemory(fd));
    }
    if let Some(why) = lost {
        return Err(Error::Invalid(format!(
            "the sandbox's changes, kept in memory, did not reach blast ({why}): run the command again; \
             if it fails the same way, raise the limit of open files (`ulimit -n`)"
        )));
    }
    Ok((String::from_utf8_lossy(&report).into_owned(), memory))
}

/// Runs a program without any confinement (`--no-sandbox`), with the same handling of Ctrl-C as
/// [`run`], its standard output on blast's standard error when `stdout_to_stderr`. It dies with blast,
/// and what it leaves running is ended when it ends (see [`orphans`]).
pub fn run_unconfined(
    program: &Path,
    args: &[String],
    set_env: &[(String, String)],
    stdout_to_stderr: bool,
) -> Result<Ran> {
    let mut command = Command::new(program);
    command.args(args).env_remove(crate::index::RECOVERY_VAR);
    command.envs(set_env.iter().map(|(k, v)| (k, v)));
    if stdout_to_stderr {
        command.stdout(std::io::stderr());
    }
    let blast = nix::unistd::getpid();
    // SAFETY: prctl, getppid, setsid, sigaction and sigprocmask are async-signal-safe, and all that
    // runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The installer dies with blast, as the sandbox's helper does.
            die_with(blast)?;
            // A session of its own, as in the sandbox: no terminal, so a prompt (git asking for a
            // password) fails at once rather than stopping it in the background, and signals reach
            // it through blast only, once (see [`interrupts`]).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            interrupts::defaults_for_program();
            Ok(())
        });
    }
    let subreaper = orphans::Subreaper::start();
    let interrupts = interrupts::Forwarding::start(interrupts::Child::Installer);
    let spawned = {
        let _held = interrupts.hold_for_spawn();
        command
            .spawn()
            .inspect(|child| interrupts.child_started(child.id()))
    };
    let status = spawned.and_then(|mut child| wait_for_child(&mut child, &interrupts));
    let interrupted = interrupts.received();
    drop(interrupts);
    subreaper.end_leftovers();
    let status = status.at("running", program)?;
    let outcome = match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::Exited(1),
    };
    Ok(Ran {
        outcome,
        in_memory: None,
        interrupted,
    })
}

/// Waits for `child` to end, then stops passing signals on, then reaps it: until reaped, its pid is
/// not anyone else's.
fn wait_for_child(
    child: &mut std::process::Child,
    interrupts: &interrupts::Forwarding,
) -> std::io::Result<std::process::ExitStatus> {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    while let Err(Errno::EINTR) = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    ) {}
    interrupts.child_ended();
    child.wait()
}

/// The helper's entry point: never returns. `args` are the arguments after [`HELPER_ARG`].
pub fn helper_main(args: &[std::ffi::OsString]) -> ! {
    interrupts::hold();
    let parent: Option<i32> = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok());
    let spec: Option<Spec> = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| serde_json::from_str(a).ok());
    let (Some(parent), Some(spec)) = (parent, spec) else {
        fail("reading the sandbox spec", "malformed")
    };
    // SAFETY: fcntl on a descriptor number; a closed one just fails.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        fail("asking to die with blast", "prctl failed");
    }
    if nix::unistd::getppid() != Pid::from_raw(parent) {
        // blast died before the line above took effect.
        std::process::exit(SETUP_FAILED);
    }
    let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
    let mut flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    if !spec.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    check("creating namespaces (unshare)", unshare(flags));
    map_ids(uid, gid);
    if !spec.network {
        loopback_up();
    }
    assemble_root(&spec);

    // SAFETY: the helper is single-threaded, so the child may do anything the parent could.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => init(&spec),
        Ok(ForkResult::Parent { child }) => {
            interrupts::pass_on_to_init(child.as_raw());
            std::process::exit(wait_for(child))
        }
        Err(e) => fail("starting the sandbox's init (fork)", e),
    }
}

fn map_ids(uid: u32, gid: u32) {
    let inside = |id: u32| if id == 0 { UNPRIVILEGED_ID } else { id };
    check(
        "mapping ids (setgroups)",
        fs::write("/proc/self/setgroups", "deny").map_err(errno_of),
    );
    check(
        "mapping ids (uid_map)",
        fs::write("/proc/self/uid_map", format!("{} {uid} 1", inside(uid))).map_err(errno_of),
    );
    check(
        "mapping ids (gid_map)",
        fs::write("/proc/self/gid_map", format!("{} {gid} 1", inside(gid))).map_err(errno_of),
    );
}

fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Brings up `lo` in a fresh network namespace, so that local services of the program itself work.
fn loopback_up() {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` with a NUL-terminated name.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(sock);
    }
}

/// Builds the new root at `spec.root` (see the module doc for what it holds).
fn assemble_root(spec: &Spec) {
    let root = &spec.root;
    let none: Option<&str> = None;
    check(
        "making mounts private",
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
    );
    check(
        "binding the filesystem",
        mount(
            Some("/"),
            root,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
    );
    check(
        "making the root read-only (mount_setattr)",
        set_read_only(root, true),
    );
    for (dir, mode) in [("tmp", "1777"), ("dev/shm", "1777")] {
        let at = root.join(dir);
        if at.is_dir() {
            check(
                "mounting a private /tmp",
                mount(
                    Some("tmpfs"),
                    &at,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(format!("mode={mode}").as_str()),
                ),
            );
        }
    }
    let secrets: Vec<PathBuf> = spec
        .hidden
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    // Secrets are covered first, by tmpfs mounts that stay writable until what is brought back below
    // them (and writable paths the user named there) has its mount point; then they turn read-only.
    // First: a name bound below recursively takes along the covers there are (found in review: a name
    // that led into this new root, bound before the covers, showed every secret).
    let mut covers: Vec<MountPoint> = spec.hidden.iter().filter_map(|p| hide(root, p)).collect();
    // Elsewhere the read-only root shows them already. A name under the private `/tmp` is bound from
    // where it leads (`/tmp/link` → the home) at the place its text names (every directory on the way
    // made a plain one, so `..` steps back by the text), and what it shows of a secret is covered
    // there too; a name that leads into one shows nothing, nor one that leads to what the private
    // directories replace, to the kernel's views or into this root. Found in review: `/tmp/x/link/..`
    // bound the home where the covers, looked up through `link`, were not placed, and `/tmp/x/..`
    // and a link to `/tmp` bound the whole real `/tmp`.
    // Deepest first, so that every place is found through the private `/tmp`'s plain directories,
    // never through a bind of a directory that others may rename entries in (found in review: bound
    // shallowest first, names swapped in a working directory under `/tmp` mid-setup left the home
    // bound uncovered and writable). A name below another's is then shown as that one shows it.
    let mut visible: Vec<(PathBuf, &PathBuf)> = spec
        .visible
        .iter()
        .map(|path| (crate::fsutil::lexically_normal(path), path))
        .filter(|(at, _)| under_private_dirs(at))
        .collect();
    visible.sort_by_key(|(at, _)| std::cmp::Reverse(at.components().count()));
    for (at, path) in visible {
        let Some(pinned) = Pinned::open(path, true) else {
            continue;
        };
        let real = &pinned.real;
        let unshown = secrets.iter().any(|secret| real.starts_with(secret))
            || real.starts_with(root)
            || ["/", "/dev", "/tmp", "/dev/shm"]
                .iter()
                .any(|dir| real == Path::new(dir))
            || real.starts_with("/proc")
            || real.starts_with("/sys");
        if unshown || !bind_as_named(root, &pinned, path) {
            continue;
        }
        for secret in secrets.iter().filter(|secret| secret.starts_with(real)) {
            let Ok(below) = secret.strip_prefix(real) else {
                continue;
            };
            let named = at.join(below);
            match cover(root, secret, &named) {
                Covered::Dir(cover) => covers.push(cover),
                Covered::Other => {}
                // It is there, and no cover could be put over it: nothing runs.
                Covered::NoPlace => fail(
                    "a path changed while the sandbox was set up",
                    format!(
                        "`{}`, which shows `{}`, changed before it could be hidden",
                        named.display(),
                        secret.display()
                    ),
                ),
            }
        }
    }
    for path in &spec.writable {
        // Made, and checked, by the caller. The path as checked (a real one), through no symlink now: one swapped in meanwhile would
        // make another directory writable than the one checked (found in review, by a sandboxed
        // command flipping a link between its own directory and an environment's).
        let Some(pinned) = Pinned::open(path, false) else {
            fail(
                "a path changed while the sandbox was set up",
                format!(
                    "`{}`, to be writable, is gone or leads through a symlink now",
                    path.display()
                ),
            );
        };
        if let Some(secret) = secrets.iter().find(|s| s.starts_with(&pinned.real)) {
            fail(
                "making a path writable in the sandbox",
                format!(
                    "`{}` holds `{}`, which the sandbox hides",
                    path.display(),
                    secret.display()
                ),
            );
        }
        bind_into(root, &pinned, false);
    }
    for path in &spec.rebound_read_only {
        if let Some(pinned) = Pinned::open(path, true) {
            bind_into(root, &pinned, true);
        }
    }
    // Brought back below a cover only as they are, through no symlink: one would uncover where it
    // leads (found in review: `~/.config/pip` → `~/.ssh`).
    for path in &spec.revealed {
        if let Some(pinned) = Pinned::open(path, false) {
            bind_into(root, &pinned, true);
        }
    }
    for cover in &covers {
        // Only the cover: a writable path bound below it stays writable.
        check(
            "hiding a secret directory",
            cover.set_read_only(true, false),
        );
    }
    if let Some(overlay) = &spec.overlay {
        if overlay.in_memory {
            keep_in_memory(&overlay.dir);
        }
        let Some(target) = mount_point(root, &overlay.target, Make::Dir) else {
            fail(
                "placing the environment in the sandbox",
                "its path leads through a symlink or a file",
            );
        };
        let options = format!(
            "lowerdir={},upperdir={},workdir={},userxattr,index=off,xino=off",
            escape_option(&overlay.target),
            escape_option(&overlay.dir.join(UPPER)),
            escape_option(&overlay.dir.join(WORK))
        );
        check(
            "mounting the overlay",
            mount(
                Some("overlay"),
                &target.magic_path(),
                Some("overlay"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            ),
        );
    }
}

/// Mounts a private tmpfs at `dir`, makes the overlay's directories in it and hands its descriptor to
/// blast. Where that fails, or the tmpfs cannot hold an overlay's upper layer (user extended
/// attributes on tmpfs need Linux 6.6), it is unmounted again: the changes go to the directories on
/// the disk below it.
fn keep_in_memory(dir: &Path) {
    let mounted = mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    );
    if mounted.is_err() {
        return;
    }
    let upper = dir.join(UPPER);
    let kept = fs::create_dir(&upper).is_ok()
        && fs::create_dir(dir.join(WORK)).is_ok()
        && has_user_xattrs(&upper)
        && hand_over(dir);
    if !kept {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

/// Makes [`has_user_xattrs`] answer no, as a kernel before 6.6 does for tmpfs: the tests take the way
/// back to the disk with it.
const NO_TMPFS_XATTRS_VAR: &str = "BLAST_TEST_NO_TMPFS_XATTRS";

/// Whether `dir` takes a `user.` extended attribute, as the overlay's marks of opaque directories are.
fn has_user_xattrs(dir: &Path) -> bool {
    if std::env::var_os(NO_TMPFS_XATTRS_VAR).is_some() {
        return false;
    }
    let Ok(c_path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let name = c"user.blast.probe";
    // SAFETY: a NUL-terminated path and name, and a value of the length passed.
    unsafe {
        libc::setxattr(c_path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) == 0
            && libc::removexattr(c_path.as_ptr(), name.as_ptr()) == 0
    }
}

/// Sends a descriptor of `dir` through the status socket (see [`receive_status`]).
fn hand_over(dir: &Path) -> bool {
    let Ok(handle) = fs::File::open(dir) else {
        return false;
    };
    let fds = [handle.as_raw_fd()];
    sendmsg::<()>(
        STATUS_FD,
        &[std::io::IoSlice::new(MEMORY_MARK)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .is_ok()
}

/// Whether `path` lies strictly below the directories the sandbox replaces with private ones.
fn under_private_dirs(path: &Path) -> bool {
    ["/tmp", "/dev/shm"]
        .iter()
        .any(|dir| path.starts_with(dir) && path != Path::new(dir))
}

/// What [`mount_point`] makes where nothing is yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Make {
    Dir,
    File,
    /// Nothing: only an existing place will do.
    Nothing,
}

/// A place under the new root to mount on, found by its path as seen inside.
struct MountPoint {
    fd: OwnedFd,
    /// The directory it is in, and its name there: after a mount, the name leads to the new mount
    /// (the descriptor still names what the mount covers).
    parent: OwnedFd,
    name: CString,
}

impl MountPoint {
    /// The descriptor's path in `/proc`: mounting there cannot be redirected by a symlink.
    fn magic_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Sets or clears read-only on what is now mounted here, found again through the parent
    /// directory's descriptor, not by a path a symlink could redirect.
    fn set_read_only(&self, read_only: bool, recursive: bool) -> nix::Result<()> {
        const AT_EMPTY_PATH: libc::c_uint = 0x1000;
        // SAFETY: openat on an owned directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.parent.as_raw_fd(),
                self.name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: a descriptor just returned by openat, owned by nobody else.
        let mounted = unsafe { OwnedFd::from_raw_fd(fd) };
        let flags = AT_EMPTY_PATH | if recursive { AT_RECURSIVE } else { 0 };
        mount_setattr(mounted.as_raw_fd(), c"", flags, read_only)
    }
}

/// Walks `path` (absolute, as the program will name it, `..` included) under `root`, one component
/// at a time, making what is missing and following no symlink on the way. The helper's own view is
/// still the host's writable filesystem, and an absolute symlink met under the new root (in a bound
/// environment, a venv's `bin/python`) points into it: creating through one would write, or truncate,
/// a host file. `None` when a component is a symlink, is not what it must be, or cannot be made.
fn mount_point(root: &Path, path: &Path, make: Make) -> Option<MountPoint> {
    use std::path::Component;
    let open = |dir: libc::c_int, name: &std::ffi::CStr, flags: libc::c_int| {
        // SAFETY: openat on a valid descriptor (or AT_FDCWD) and a NUL-terminated name.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
        // SAFETY: a descriptor just returned by openat, owned by nobody else.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let c_root = CString::new(root.as_os_str().as_bytes()).ok()?;
    let mut stack = vec![(
        open(
            libc::AT_FDCWD,
            &c_root,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?,
        CString::default(),
    )];
    let components: Vec<Component> = path.components().collect();
    for (i, component) in components.iter().enumerate() {
        let name = match component {
            Component::Normal(name) => *name,
            Component::ParentDir if stack.len() > 1 => {
                stack.pop();
                continue;
            }
            _ => continue,
        };
        let c_name = CString::new(name.as_bytes()).ok()?;
        let dir = stack.last()?.0.as_raw_fd();
        let last = i + 1 == components.len();
        let is_file = make == Make::File && last;
        if is_file {
            // O_EXCL fails on anything there, a symlink included, rather than follow it.
            drop(open(
                dir,
                &c_name,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
            ));
        } else if make != Make::Nothing {
            // SAFETY: mkdirat on a valid descriptor and a NUL-terminated name; mkdir never follows a
            // symlink in its last component.
            unsafe { libc::mkdirat(dir, c_name.as_ptr(), 0o755) };
        }
        let any_kind = last && make != Make::Dir;
        let flags = libc::O_PATH | libc::O_NOFOLLOW | if any_kind { 0 } else { libc::O_DIRECTORY };
        let fd = open(dir, &c_name, flags)?;
        stack.push((fd, c_name));
    }
    let (fd, name) = stack.pop().filter(|_| !stack.is_empty())?;
    let (parent, _) = stack.pop()?;
    // A file's place must be a regular file (or a socket or device to cover), never a symlink.
    if make != Make::Dir {
        // SAFETY: `stat` is plain data, and fstat writes into a buffer of its size on an owned
        // descriptor.
        let is_symlink = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            libc::fstat(fd.as_raw_fd(), &mut stat) != 0
                || stat.st_mode & libc::S_IFMT == libc::S_IFLNK
        };
        if is_symlink {
            return None;
        }
    }
    Some(MountPoint { fd, parent, name })
}

/// Binds `path` at the same place in the new root; the mount point is made when the private `/tmp`
/// hides it. Paths that do not exist are skipped: they could not be used anyway.
fn bind_into(root: &Path, pinned: &Pinned, read_only: bool) {
    match mount_point(root, &pinned.real, pinned.make) {
        Some(target) => bind(&pinned.magic_path(), &target, read_only),
        None => fail(
            "binding a path into the sandbox",
            format!("no place for `{}` in the new root", pinned.real.display()),
        ),
    }
}

/// A path opened once (`O_PATH`): what it led to then is what is checked and bound, from the
/// descriptor, whatever its name leads to by the time of the mount.
struct Pinned {
    fd: OwnedFd,
    /// Where it is, from the descriptor.
    real: PathBuf,
    make: Make,
}

impl Pinned {
    /// Opens `path`, following symlinks, or through none (`RESOLVE_NO_SYMLINKS`). `None` where it is
    /// not there, or is neither a directory, a regular file nor a FIFO (a socket, a device).
    fn open(path: &Path, follow: bool) -> Option<Pinned> {
        use std::os::unix::fs::FileTypeExt;
        let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        let fd = match follow {
            true => nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).ok()?,
            false => nix::fcntl::openat2(
                nix::fcntl::AT_FDCWD,
                path,
                nix::fcntl::OpenHow::new()
                    .flags(flags)
                    .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS),
            )
            .ok()?,
        };
        let magic = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let real = fs::read_link(&magic).ok()?;
        let make = match fs::metadata(&magic).ok()?.file_type() {
            kind if kind.is_dir() => Make::Dir,
            kind if kind.is_file() || kind.is_fifo() => Make::File,
            _ => return None,
        };
        Some(Pinned { fd, real, make })
    }

    /// The descriptor's path in `/proc`: a bind from there binds what was opened.
    fn magic_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Binds what `pinned` is read-only at the place `path` names inside the new root; true when it did.
/// The installer gets the name as the user wrote it (`/tmp/x/cli/../wheels`, `/tmp/link/wheels`), so
/// every directory on the way is made in the private `/tmp` as a plain directory, and the bind goes
/// where the name ends. Never a socket (see [`Pinned::open`]), through which the program could act
/// outside.
fn bind_as_named(root: &Path, pinned: &Pinned, path: &Path) -> bool {
    match mount_point(root, path, pinned.make) {
        Some(target) => {
            bind(&pinned.magic_path(), &target, true);
            true
        }
        None => false,
    }
}

/// Binds `source` (and the mounts below it) at `target`, read-only or read-write.
fn bind(source: &Path, target: &MountPoint, read_only: bool) {
    let none: Option<&str> = None;
    check(
        "binding a path into the sandbox",
        mount(
            Some(source),
            &target.magic_path(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
    );
    check(
        "setting a bound path's access",
        target.set_read_only(read_only, true),
    );
}

/// Covers a secret: an empty read-only tmpfs over a directory, `/dev/null` over anything else (a file,
/// a socket). A symlinked secret is covered where it really is; one the new root does not show (under
/// the private `/tmp`) needs no cover.
/// Returns the cover of a directory, still writable (see [`assemble_root`]).
fn hide(root: &Path, path: &Path) -> Option<MountPoint> {
    let real = fs::canonicalize(path).ok()?;
    match cover(root, &real, &real) {
        Covered::Dir(cover) => Some(cover),
        Covered::Other | Covered::NoPlace => None,
    }
}

/// What [`cover`] did.
enum Covered {
    /// A directory, under a cover still writable (see [`assemble_root`]).
    Dir(MountPoint),
    /// Anything else, under `/dev/null`; or nothing, the secret being gone.
    Other,
    /// Nothing: the secret is there, and `named` leads to no place in the new root.
    NoPlace,
}

/// Covers the secret at `real` where `named` leads inside the new root (see [`hide`]).
fn cover(root: &Path, real: &Path, named: &Path) -> Covered {
    let Ok(meta) = real.metadata() else {
        return Covered::Other;
    };
    let Some(target) = mount_point(root, named, Make::Nothing) else {
        return Covered::NoPlace;
    };
    let none: Option<&str> = None;
    if meta.is_dir() {
        check(
            "hiding a secret directory",
            mount(
                Some("tmpfs"),
                &target.magic_path(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0700,size=4k"),
            ),
        );
        Covered::Dir(target)
    } else {
        check(
            "hiding a secret file",
            mount(
                Some("/dev/null"),
                &target.magic_path(),
                none,
                MsFlags::MS_BIND,
                none,
            ),
        );
        Covered::Other
    }
}

/// Sets or clears read-only on the mount at `path` and every mount below it.
fn set_read_only(path: &Path, read_only: bool) -> nix::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    mount_setattr(libc::AT_FDCWD, &c_path, AT_RECURSIVE, read_only)
}

/// `mount_setattr(2)`'s flag for a mount and every mount below it.
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `mount_setattr(2)` on `dir` + `path` (`AT_EMPTY_PATH` in `flags` for `dir` itself).
fn mount_setattr(
    dir: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    read_only: bool,
) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if read_only { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor (or AT_FDCWD), a NUL-terminated path and a `mount_attr` of the size
    // passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Overlay options are comma-separated and lower layers colon-separated; both are escaped in paths.
fn escape_option(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The pid namespace's init: mounts `/proc`, enters the new root, leads a session of its own, starts
/// the program in a process group of its own there and reaps every process until the program exits,
/// then exits with its status.
fn init(spec: &Spec) -> ! {
    interrupts::pass_on_to_namespace();
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        fail("asking to die with the helper", "prctl failed");
    }
    let none: Option<&str> = None;
    let proc_dir = spec.root.join("proc");
    // A fresh /proc shows only the sandbox's processes; where the kernel refuses one (a container that
    // masks parts of its /proc), the bound read-only one stays, unless limits are watched: init would
    // count every process of the host.
    let fresh_proc = mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    );
    if spec.limits.watched() {
        check("mounting /proc for the limits", fresh_proc);
    }
    check("entering the new root (chdir)", chdir(&spec.root));
    check("entering the new root (pivot_root)", pivot_root(".", "."));
    check("leaving the old root", umount2(".", MntFlags::MNT_DETACH));
    if chdir(&spec.cwd).is_err() {
        let _ = chdir("/");
    }
    check("starting a session", setsid().map(|_| ()));
    // Held until the program is known: a signal that comes meanwhile is the program's.
    interrupts::hold();
    // SAFETY: init is single-threaded.
    let program = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // A group of its own, below init in init's session: not orphaned, so a program that stops
            // its group (vim on Ctrl-Z) stops at once, and init sees it (see [`program_stopped`]).
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            interrupts::defaults_for_program();
            exec_program(spec)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => fail("starting the program (fork)", e),
    };
    interrupts::program_started(program.as_raw());
    let (status, reported) = if spec.limits.watched() {
        watch(program, &spec.limits)
    } else {
        (wait_for(program), false)
    };
    // SIGXCPU at the soft limit; SIGKILL at the hard one a second later, for a program that handles
    // or ignores SIGXCPU (then its CPU time tells).
    if let Some(limit) = spec.limits.cpu_seconds
        && !reported
        && (status == 128 + libc::SIGXCPU
            || (status == 128 + libc::SIGKILL && children_cpu_seconds() >= limit))
    {
        report(&LimitHit::CpuTime { limit });
    }
    std::process::exit(status)
}

/// CPU seconds (user and system) of the processes init has reaped.
fn children_cpu_seconds() -> u64 {
    // SAFETY: getrusage writes into a zeroed struct of its own type.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    u64::try_from(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec).unwrap_or(0)
}

/// As [`wait_for`], sampling the sandbox's processes between reaps: past a limit, every process but
/// init is killed and the limit reported. Returns the exit code and whether a limit was reported.
fn watch(child: Pid, limits: &Limits) -> (i32, bool) {
    let mut reported = false;
    loop {
        loop {
            let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED;
            match waitpid(None, Some(flags)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return (code, reported),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return (128 + sig as i32, reported);
                }
                Ok(WaitStatus::Stopped(pid, sig)) if pid == child => program_stopped(sig),
                Err(Errno::EINTR) | Ok(_) => continue,
                Err(_) => return (SETUP_FAILED, reported),
            }
        }
        if !reported && let Some(hit) = over_limit(limits) {
            report(&hit);
            reported = true;
            // From init, -1 reaches every other process of the pid namespace.
            let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    }
}

/// The first limit the sandbox's processes (all but init, as this pid namespace's `/proc` shows them)
/// are past, if any.
fn over_limit(limits: &Limits) -> Option<LimitHit> {
    let (mut processes, mut resident) = (0u64, 0u64);
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        processes += 1;
        resident += proportional_set_size(&entry.path());
    }
    if let Some(limit) = limits.memory
        && resident > limit
    {
        return Some(LimitHit::Memory {
            used: resident,
            limit,
        });
    }
    match limits.pids {
        Some(limit) if processes > limit => Some(LimitHit::Pids {
            seen: processes,
            limit,
        }),
        _ => None,
    }
}

/// A process's share of resident memory, in bytes: pages it shares with others (after a fork, say)
/// count in proportion, as a cgroup would count them once.
fn proportional_set_size(process: &Path) -> u64 {
    fs::read_to_string(process.join("smaps_rollup"))
        .ok()
        .and_then(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Init's program stopped: by a stop signal of a terminal's (SIGTSTP, SIGTTIN, SIGTTOU), it stopped
/// itself, as vim and less stop their group for Ctrl-Z, read as a key; the rest of the sandbox stops
/// with it, as for Ctrl-Z, and blast is told (see [`interrupts::program_stopped_itself`]). A SIGSTOP is
/// init's own, for a Ctrl-Z that came through blast, or someone else's.
fn program_stopped(sig: Signal) {
    if matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) {
        // From init, -1 reaches every other process of the pid namespace.
        let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGSTOP);
        let _ = nix::sys::socket::send(STATUS_FD, STOPPED_MARK, MsgFlags::MSG_NOSIGNAL);
    }
}

/// Tells blast which limit ended the program (read back by [`run`]).
fn report(hit: &LimitHit) {
    // SAFETY: STATUS_FD is this process's own descriptor, handed over by blast.
    let mut status = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(STATUS_FD) });
    let _ = std::io::Write::write_all(&mut *status, hit.encode().as_bytes());
}

/// Waits for `child`, reaping any other process meanwhile (init adopts orphans); returns the exit code
/// to pass on (128 + signal for a signal).
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => return 128 + sig as i32,
            Ok(WaitStatus::Stopped(pid, sig)) if pid == child => program_stopped(sig),
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

fn exec_program(spec: &Spec) -> ! {
    if nix::sys::prctl::set_no_new_privs().is_err() {
        fail("starting the program (no_new_privs)", "prctl failed");
    }
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            !spec.remove_env.iter().any(|r| OsStr::new(r) == k)
                && !spec.set_env.iter().any(|(s, _)| OsStr::new(s) == k)
        })
        .collect();
    env.extend(spec.set_env.iter().map(|(k, v)| (k.into(), v.into())));
    let to_c = |s: &OsStr| CString::new(s.as_bytes()).ok();
    let env: Option<Vec<CString>> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let program = to_c(spec.program.as_os_str());
    let args: Option<Vec<CString>> = std::iter::once(spec.program.as_os_str())
        .chain(spec.args.iter().map(OsStr::new))
        .map(to_c)
        .collect();
    let (Some(program), Some(args), Some(env)) = (program, args, env) else {
        fail("starting the program", "an argument holds a NUL byte");
    };
    if let Some(secs) = spec.limits.cpu_seconds {
        // The hard limit a second later: SIGXCPU first, which init reports, SIGKILL if it is ignored.
        let limit = libc::rlimit {
            rlim_cur: secs,
            rlim_max: secs.saturating_add(1),
        };
        // SAFETY: setrlimit on this process with a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_CPU, &limit) } != 0 {
            fail("setting the CPU time limit", Errno::last());
        }
    }
    // Signals a Rust program ignores (SIGPIPE) are restored, or the program would inherit that.
    // SAFETY: dup2 and signal on this process's own descriptors and dispositions.
    unsafe {
        if spec.stdout_to_stderr {
            libc::dup2(2, 1);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let Err(e) = execve(&program, &args, &env);
    report_failure(
        FailedPart::Program,
        &format!("starting `{}`", spec.program.display()),
        e,
    )
}

fn check<T>(step: &str, result: nix::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => fail(step, e),
    }
}

/// Reports `step` through the status descriptor and exits with [`SETUP_FAILED`].
fn fail(step: &str, detail: impl std::fmt::Display) -> ! {
    report_failure(FailedPart::Setup, step, detail)
}

/// Which part failed, the first field of a failure's report (`PART\0STEP\0DETAIL`: a NUL cannot be in
/// a path, which a step or a detail may name).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailedPart {
    Setup,
    /// The program's own `execve`: the sandbox was ready.
    Program,
}

impl FailedPart {
    fn name(self) -> &'static str {
        match self {
            FailedPart::Setup => "setup",
            FailedPart::Program => "program",
        }
    }
}

fn report_failure(part: FailedPart, step: &str, detail: impl std::fmt::Display) -> ! {
    // SAFETY: STATUS_FD is this process's own descriptor, handed over by blast; it is closed on exit.
    let mut status = unsafe { fs::File::from(OwnedFd::from_raw_fd(STATUS_FD)) };
    let report = format!("{}\0{step}\0{detail}", part.name());
    let _ = std::io::Write::write_all(&mut status, report.as_bytes());
    std::process::exit(SETUP_FAILED)
}

/// For a child between fork and exec: it dies with `parent` (blast), and does not start when blast
/// died before that took effect. Only async-signal-safe calls (`prctl`, `getppid`).
pub(crate) fn die_with(parent: nix::unistd::Pid) -> std::io::Result<()> {
    // SAFETY: prctl and getppid touch no memory of the process.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent.as_raw() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_offers_running_unsandboxed_only_where_the_command_can() {
        let refusal = Refusal::decode("setup\0mounting the overlay at the environment\0EINVAL");
        assert_eq!(refusal.step, "mounting the overlay at the environment");
        assert_eq!(refusal.detail, "EINVAL");
        assert!(!refusal.program_failed);
        assert!(
            refusal
                .fix(Some("--no-sandbox"))
                .ends_with("or pass --no-sandbox")
        );
        assert!(!refusal.fix(None).contains("--no-sandbox"));
        let bound = Refusal::decode("setup\0setting a bound path's access\0EPERM");
        assert!(
            bound
                .fix(None)
                .contains("name a path below it or beside it")
        );
    }
}
