//! The `blast` command: parses arguments, calls the engine, renders the result. Nothing else lives here.

mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use engine::gc::{self, CleanOptions};
use engine::installer::{InstallerKind, Request};
use engine::ops::{
    self, CreateOptions, ExportFormat, ExportOptions, InstallOptions, PullOptions, PushOptions,
    RestoreTarget, RunOptions, StartOptions,
};
use engine::sandbox::{self, Limits};
use engine::{Result, Store};
use nix::sys::signal::{SigHandler, Signal, signal};

/// The walk allocates a path and an entry per file on every rayon thread; mimalloc's per-thread heaps
/// serve that without the lock and arena growth of glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "blast",
    version,
    about = "Python environments as immutable, content-addressed, layered snapshots",
    long_about = "Python environments as immutable, content-addressed, layered snapshots.\n\n\
        The store lives in $BLAST_HOME (default ~/.local/share/blast)."
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Which environment a command works on.
#[derive(Args)]
struct EnvArg {
    /// Environment name or path (default: $BLAST_ENV, else ./.venv).
    #[arg(short = 'e', long = "env", env = "BLAST_ENV", value_name = "NAME|PATH")]
    env: Option<String>,
}

/// How an installer runs.
#[derive(Args)]
struct InstallerArgs {
    /// The installer (default: the environment's pip, else its base interpreter's, else uv).
    #[arg(long, value_parser = ["pip", "uv"])]
    installer: Option<String>,
    /// No network in the sandbox: only local wheels and the installer's cache. Not with
    /// --no-sandbox, which cannot keep the network off (there, --no-index with -f DIR installs from
    /// local files only).
    #[arg(long, conflicts_with = "no_sandbox")]
    offline: bool,
    /// Commit even when the install leaves a requirement unmet: of a package installed before, or of
    /// one it installs (with --no-deps, say).
    #[arg(long)]
    allow_conflicts: bool,
    /// Run the installer unconfined on a staging copy of the environment (still one transaction).
    #[arg(long)]
    no_sandbox: bool,
}

impl InstallerArgs {
    fn options(&self) -> InstallOptions {
        InstallOptions {
            installer: self.installer.as_deref().and_then(InstallerKind::parse),
            offline: self.offline,
            allow_conflicts: self.allow_conflicts,
            no_sandbox: self.no_sandbox,
            installer_stdout: false,
        }
    }
}

/// Index options, passed to the installer as they are.
#[derive(Args)]
struct IndexArgs {
    /// The package index (default: PyPI, or what the installer's configuration says).
    #[arg(long, value_name = "URL")]
    index_url: Option<String>,
    /// Another index, looked in as well.
    #[arg(long, value_name = "URL")]
    extra_index_url: Vec<String>,
    /// A directory of wheels and sdists, or a page of links to them, looked in as well.
    #[arg(short = 'f', long, value_name = "URL|DIR")]
    find_links: Vec<String>,
    /// No index: only what --find-links names.
    #[arg(long)]
    no_index: bool,
    /// Upgrade the named packages.
    #[arg(short = 'U', long)]
    upgrade: bool,
    /// Allow pre-releases.
    #[arg(long)]
    pre: bool,
    /// Do not install dependencies (a requirement left unmet then needs --allow-conflicts).
    #[arg(long)]
    no_deps: bool,
}

impl IndexArgs {
    fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.index_url
                .iter()
                .flat_map(|u| ["--index-url".into(), u.clone()]),
        );
        for url in &self.extra_index_url {
            out.extend(["--extra-index-url".into(), url.clone()]);
        }
        for link in &self.find_links {
            out.extend(["--find-links".into(), link.clone()]);
        }
        for (set, flag) in [
            (self.no_index, "--no-index"),
            (self.upgrade, "--upgrade"),
            (self.pre, "--pre"),
            (self.no_deps, "--no-deps"),
        ] {
            if set {
                out.push(flag.into());
            }
        }
        out
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create an environment: a venv written by blast, recorded as its first snapshot.
    Create {
        /// Name of the environment (lives in $BLAST_HOME/envs/NAME unless --path is given).
        name: Option<String>,
        /// Directory of the environment (default ./.venv when no name is given).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Interpreter: a path, a command, or a version such as 3.11 (default python3).
        #[arg(long)]
        python: Option<String>,
        /// Add pip, unpacked from the interpreter's bundled wheel.
        #[arg(long)]
        seed: bool,
    },
    /// Capture what changed in the environment's directory as a new snapshot.
    Snapshot {
        #[command(flatten)]
        env: EnvArg,
        /// A message for the history.
        #[arg(short, long)]
        message: Option<String>,
        /// Tag the snapshot (or HEAD, when nothing changed) with this name.
        #[arg(long)]
        tag: Option<String>,
    },
    /// List the environment's tags, tag a snapshot (default HEAD), or delete tags.
    ///
    /// Tags name snapshots for rollback, diff, export and push, and keep them from `blast clean`.
    Tag {
        #[command(flatten)]
        env: EnvArg,
        /// The tag to set (none: list the tags).
        #[arg(conflicts_with = "delete")]
        tag: Option<String>,
        /// The snapshot to tag: an id or prefix, a tag, or @~N (default HEAD).
        #[arg(requires = "tag")]
        snapshot: Option<String>,
        /// Move the tag when it names another snapshot.
        #[arg(short, long, requires = "tag", conflicts_with = "delete")]
        force: bool,
        /// Delete these tags.
        #[arg(short, long, value_name = "TAG", num_args = 1..)]
        delete: Vec<String>,
    },
    /// Make HEAD a snapshot of the same files in one layer, so that what earlier layers held and the
    /// environment no longer has stops travelling with exports and pushes, and `blast clean` can free
    /// it once history no longer needs the old snapshots.
    Squash {
        #[command(flatten)]
        env: EnvArg,
        /// A message for the history.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Move the environment to another snapshot of its history: an id or prefix, a tag, or @~N (N
    /// history entries back; default @~1, the previous one).
    Rollback {
        #[command(flatten)]
        env: EnvArg,
        /// The snapshot to move to: an id or unique prefix, a tag, or @~N (default @~1).
        target: Option<String>,
        /// Discard changes in the directory that are not captured.
        #[arg(long)]
        force: bool,
    },
    /// Make one environment hold another's snapshot, at its own path (created if it does not exist).
    Sync {
        /// The environment whose HEAD is copied (a name or a path).
        #[arg(long, value_name = "ENV")]
        from: String,
        /// The environment that takes it: a name or a path; a new one is made where none is.
        #[arg(long, value_name = "ENV")]
        to: String,
        /// Discard changes in the target's directory that are not captured.
        #[arg(long)]
        force: bool,
    },
    /// Move the environment's directory to another path, keeping its history, or take it where it was
    /// moved by hand; the files that name its path (scripts' shebangs, activate scripts) are written for
    /// the new one.
    ///
    /// Without -e, the environment is the one whose directory is gone and is at PATH as its HEAD has it,
    /// else ./.venv. A directory on another filesystem is made there from HEAD and the old one removed.
    Move {
        #[command(flatten)]
        env: EnvArg,
        /// Where the environment's directory goes (or went).
        #[arg(value_name = "PATH")]
        to: PathBuf,
        /// Move it even with uncaptured changes, processes running from it, or differences from HEAD at
        /// PATH: what differs is kept as it is, uncaptured.
        #[arg(long)]
        force: bool,
    },
    /// Show the environment's history with the package changes of each entry.
    Log {
        #[command(flatten)]
        env: EnvArg,
    },
    /// Compare two snapshots (default: HEAD against the directory as it is).
    Diff {
        #[command(flatten)]
        env: EnvArg,
        /// The snapshot compared from: an id or prefix, a tag, @~N (default HEAD).
        a: Option<String>,
        /// The snapshot compared to (default: the directory as it is now).
        b: Option<String>,
        /// List changed paths too.
        #[arg(long)]
        files: bool,
    },
    /// List the environments of the store.
    List,
    /// Show an environment: HEAD, uncaptured changes, packages, sizes.
    Status {
        #[command(flatten)]
        env: EnvArg,
    },
    /// List the distributions installed in the environment: name, version, requirements, scripts.
    ///
    /// Reads the HEAD snapshot (the committed state): changes not yet captured by `blast snapshot`
    /// are not seen.
    Packages {
        #[command(flatten)]
        env: EnvArg,
    },
    /// Check that every requirement of the installed distributions holds, as `pip check` does, and
    /// explain the conflicts; exits 1 when one does not hold.
    ///
    /// Reads the HEAD snapshot (the committed state): changes not yet captured by `blast snapshot`
    /// are not seen. Markers are evaluated for the environment's interpreter, with no extra active.
    /// The explanation (pubgrub's) weighs the versions the environment's history has held.
    Check {
        #[command(flatten)]
        env: EnvArg,
    },
    /// Install durations, capture latency, environment and store sizes, dedup ratio and disk usage.
    ///
    /// Install durations are judged on their 95th percentile: a warning over 30 s, an alert over
    /// 60 s, critical over 120 s. The disk holding the store is an alert over 90% used.
    Stats,
    /// List installed distributions no tracked process imported, and imported modules no installed
    /// distribution provides.
    ///
    /// Needs tracking: `--enable` puts a small hook into the environment's site-packages that records
    /// what each Python process imports (blast's own files, never captured in a snapshot); `--disable`
    /// takes it out. Reads the HEAD snapshot's distributions.
    Imports {
        #[command(flatten)]
        env: EnvArg,
        /// Start recording the imports of every Python process of the environment.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop recording (what was recorded stays).
        #[arg(long)]
        disable: bool,
    },
    /// Delete an environment's directory and its history (snapshots stay until `blast clean`).
    Remove {
        /// The environment to remove (or -e).
        #[arg(
            value_name = "NAME|PATH",
            required_unless_present = "env_flag",
            conflicts_with = "env_flag"
        )]
        env: Option<String>,
        /// The environment, named as with every other command (no default: nothing is removed unless
        /// named).
        #[arg(short = 'e', long = "env", value_name = "NAME|PATH")]
        env_flag: Option<String>,
        /// Remove it even with processes running from it or files that no snapshot has.
        #[arg(long)]
        force: bool,
    },
    /// Rehash objects and compare environment directories with their HEAD.
    Verify {
        /// Only this environment and the objects it needs (default: the whole store).
        #[arg(short = 'e', long = "env", value_name = "NAME|PATH")]
        env: Option<String>,
    },
    /// Write a snapshot as an image (`.blast`), a pinned requirements.txt or a PEP 751 pylock.toml.
    Export {
        #[command(flatten)]
        env: EnvArg,
        /// The snapshot to export (an id or prefix; with an environment also a tag or @~N); default HEAD.
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Where to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// A thin image: leave out what this image file or snapshot already holds.
        #[arg(long, value_name = "FILE|ID")]
        base: Option<String>,
        /// Include the environment's earlier snapshots.
        #[arg(long)]
        history: bool,
        /// What to write: a `.blast` image, a pinned requirements.txt, or a PEP 751 pylock.toml.
        #[arg(long, default_value = "blast", value_parser = ["blast", "requirements", "pylock"])]
        format: String,
    },
    /// Verify an image and add its snapshots to the store (with --name, as a new environment).
    Import {
        /// The `.blast` file; `-` reads it from standard input.
        image: PathBuf,
        /// Also create a named environment at the image's snapshot.
        #[arg(long)]
        name: Option<String>,
    },
    /// Import an image and materialize it as a new environment, in one command.
    Restore {
        /// The `.blast` file; `-` reads it from standard input.
        image: PathBuf,
        /// Directory of the new environment.
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        path: Option<PathBuf>,
        /// Name of the new environment.
        #[arg(long)]
        name: Option<String>,
        /// Interpreter to run it on (default: python3, else pythonX.Y matching the image).
        #[arg(long)]
        python: Option<String>,
    },
    /// Push a snapshot to an OCI registry: one blob per layer, only those the registry lacks.
    ///
    /// Credentials come from BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD, else from
    /// ~/.docker/config.json (`auths`); Basic and Bearer-token registries both work.
    Push {
        #[command(flatten)]
        env: EnvArg,
        /// The snapshot to push (an id or prefix; with an environment also a tag or @~N); default HEAD.
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Where: oci://HOST[:PORT]/REPO[:TAG] (the tag defaults to `latest`).
        #[arg(value_name = "oci://HOST[:PORT]/REPO[:TAG]")]
        reference: String,
        /// Plain http, for a registry on loopback or a trusted network.
        #[arg(long)]
        insecure: bool,
    },
    /// Pull a snapshot from an OCI registry and materialize it as a new environment (only the layers
    /// the store lacks are downloaded).
    ///
    /// Credentials come from BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD, else from
    /// ~/.docker/config.json (`auths`); Basic and Bearer-token registries both work.
    Pull {
        /// What: oci://HOST[:PORT]/REPO[:TAG] (the tag defaults to `latest`).
        #[arg(value_name = "oci://HOST[:PORT]/REPO[:TAG]")]
        reference: String,
        /// Directory of the new environment.
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        path: Option<PathBuf>,
        /// Name of the new environment.
        #[arg(long)]
        name: Option<String>,
        /// Interpreter to run it on (default: python3, else pythonX.Y matching the snapshot).
        #[arg(long)]
        python: Option<String>,
        /// Plain http, for a registry on loopback or a trusted network.
        #[arg(long)]
        insecure: bool,
    },
    /// Install packages as one transaction: the installer runs in a sandbox and its changes become a
    /// snapshot; a failed install changes nothing.
    Install {
        #[command(flatten)]
        env: EnvArg,
        /// Requirement specifiers: `rich`, `rich==13.7.1`, a wheel file, a project directory.
        #[arg(required_unless_present_any = ["requirements", "installer_args"])]
        specs: Vec<String>,
        /// Install from a requirements file (repeatable).
        #[arg(short = 'r', long = "requirement", value_name = "FILE")]
        requirements: Vec<PathBuf>,
        #[command(flatten)]
        index: IndexArgs,
        #[command(flatten)]
        how: InstallerArgs,
        /// Further installer arguments, after `--`.
        #[arg(last = true, value_name = "INSTALLER_ARGS")]
        installer_args: Vec<String>,
    },
    /// Uninstall packages as one transaction.
    Uninstall {
        #[command(flatten)]
        env: EnvArg,
        /// The distributions to uninstall, by name.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        how: InstallerArgs,
    },
    /// Run any pip command (`blast pip -- install -U rich`) as one transaction.
    Pip {
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        how: InstallerArgs,
        /// The pip command and its arguments (after `--` when the first is an option).
        #[arg(trailing_var_arg = true, required = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Run a command from the environment in the sandbox: the environment and the filesystem
    /// read-only but for a private /tmp and --allow-write paths, secrets hidden, limits enforced.
    ///
    /// The command is looked up in the environment's bin first, then on PATH. blast exits with the
    /// command's exit code (128 + the signal that ended it).
    Run {
        #[command(flatten)]
        env: EnvArg,
        /// Loopback only: no connection leaves the sandbox.
        #[arg(long)]
        no_network: bool,
        /// Resident memory of all its processes together: bytes, or K, M, G (binary units).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        memory: Option<u64>,
        /// Processes alive at once.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        pids: Option<u64>,
        /// CPU seconds of each process.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        cpu_time: Option<u64>,
        /// Make the environment writable through an overlay; what the command changes becomes a
        /// snapshot.
        #[arg(long)]
        capture: bool,
        /// A path the command may write to (repeatable).
        #[arg(long, value_name = "PATH")]
        allow_write: Vec<PathBuf>,
        /// The command and its arguments: everything from its first word on is the command's
        /// (`blast run -e web python -c 'import rich'`; `--` before it works too).
        #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Open a shell in the environment whose every change becomes a snapshot: `(blast)` in the
    /// prompt, a line after each command that changed the environment.
    ///
    /// In a project without an environment, makes ./.venv first: with the dependencies of
    /// pyproject.toml ([project].dependencies) or requirements.txt as its first layers, or restored
    /// from --image. Changes made from elsewhere (an IDE, another terminal) are captured after
    /// 250 ms of quiet. `exit` or `blast kill` ends the session.
    Start {
        /// An existing environment (name or path); default ./.venv.
        #[arg(value_name = "ENV")]
        env: Option<String>,
        /// The shell: bash, zsh or fish (default $SHELL).
        #[arg(long)]
        shell: Option<String>,
        /// Make ./.venv from this image: a .blast file or oci://HOST/REPO[:TAG].
        #[arg(long, value_name = "FILE|oci://…")]
        image: Option<String>,
        /// Interpreter for a new ./.venv.
        #[arg(long)]
        python: Option<String>,
        /// Plain http for an oci:// image.
        #[arg(long)]
        insecure: bool,
        /// Record which modules the environment's programs import (`blast imports` lists installed
        /// packages never imported).
        #[arg(long)]
        track_imports: bool,
        #[command(flatten)]
        index: IndexArgs,
        #[command(flatten)]
        how: InstallerArgs,
    },
    /// End a session: a final capture, the watcher stopped, its shell ended. Idempotent.
    Kill {
        /// The environment (default: this session's, else $BLAST_ENV or ./.venv).
        #[arg(value_name = "ENV")]
        env: Option<String>,
        /// The environment, as every other command takes it.
        #[arg(
            short = 'e',
            long = "env",
            value_name = "NAME|PATH",
            conflicts_with = "env"
        )]
        selected: Option<String>,
        /// Every session of the store.
        #[arg(long, conflicts_with_all = ["env", "selected"])]
        all: bool,
    },
    /// Run by the session's shell before each prompt: shows what the finished command captured.
    #[command(name = "__session-hook", hide = true)]
    SessionHook {
        /// The command that just finished, for the history (any bytes: it is what the user typed).
        #[arg(long, allow_hyphen_values = true)]
        command: Option<std::ffi::OsString>,
        /// Its exit status.
        #[arg(long)]
        status: Option<i32>,
    },
    /// Show what the install sandbox can do on this machine, and what to change where it cannot.
    Doctor,
    /// Print the completion script for a shell: `blast completions bash > ~/.local/share/bash-completion/completions/blast`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Remove what no environment, kept history entry or tag needs.
    Clean {
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep the newest N history entries of each environment (at least 1: HEAD's).
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        keep: Option<usize>,
        /// Keep history entries younger than D days.
        #[arg(long, value_name = "D")]
        keep_days: Option<u64>,
    },
}

/// A size as users write it for memory limits: `512M` and `2G` are binary units, as docker and
/// cgroups read them; `500MB` is decimal, `1GiB` binary, a plain number bytes.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let binary = text
        .strip_suffix(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T'])
        .is_some_and(|number| number.ends_with(|c: char| c.is_ascii_digit()));
    let spelled = if binary {
        format!("{text}iB")
    } else {
        text.to_owned()
    };
    match spelled.parse::<bytesize::ByteSize>() {
        // Under a mebibyte no Python starts: a unit left out (`--memory 512`).
        Ok(size) if size.as_u64() > 0 && size.as_u64() < 1 << 20 => Err(format!(
            "`{text}` is {} bytes, too little for any Python: write the unit (512M, 2G)",
            size.as_u64()
        )),
        // The parser saturates where the size does not fit in 64 bits.
        Ok(size) if size.as_u64() == u64::MAX => Err(format!(
            "`{text}` is more bytes than 64 bits count: give a size this machine could have, or leave \
             the limit out"
        )),
        Ok(size) if size.as_u64() > 0 => Ok(size.as_u64()),
        Ok(_) => Err(format!(
            "`{text}` leaves no memory at all: give a size above 0 (512M, 2G), or leave the limit out"
        )),
        // Digits the parser could not hold are too many, not a typo.
        Err(_)
            if text
                .trim_end_matches(char::is_alphabetic)
                .chars()
                .all(|c| c.is_ascii_digit())
                && text.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Err(format!(
                "`{text}` is more bytes than 64 bits count: give a size this machine could have, or \
                 leave the limit out"
            ))
        }
        Err(_) => Err(format!(
            "`{text}` is not a size: write bytes or a number with K, M or G (512M, 2G)"
        )),
    }
}

/// Whether the words hold blast's own `--json`: before `--`, and, for `run` and `pip`, before the
/// command they are given (its first word that is neither an option of theirs nor an option's value),
/// whose own `--json` it is not (found by exploratory testing: `blast run … pip list --json` with a
/// usage error of blast's printed the error as JSON).
fn asks_for_json(args: &[std::ffi::OsString]) -> bool {
    let top = Cli::command();
    let mut sub: Option<&clap::Command> = None;
    // Every word counts, one that is not UTF-8 too, or the words after it would shift.
    let mut words = args.iter().skip(1).map(|word| word.to_string_lossy());
    while let Some(word) = words.next() {
        match word.as_ref() {
            "--" => return false,
            "--json" => return true,
            option if option.starts_with('-') => {
                let takes_value = |cmd: &clap::Command| {
                    cmd.get_arguments().any(|arg| {
                        let named = match option.strip_prefix("--") {
                            Some(long) => arg.get_long() == Some(long),
                            None => option.chars().nth(1) == arg.get_short() && option.len() == 2,
                        };
                        named && arg.get_action().takes_values()
                    })
                };
                if !option.contains('=') && sub.is_some_and(takes_value) {
                    words.next();
                }
            }
            _ => match sub {
                None => sub = top.find_subcommand(word.as_ref()),
                Some(cmd) if matches!(cmd.get_name(), "run" | "pip") => return false,
                Some(_) => {}
            },
        }
    }
    false
}

/// Output that cannot be written (a full disk behind `> FILE`, a terminal gone) ends blast with a line
/// saying so and exit 1, where `println!` would panic with a backtrace. What the command had done by
/// then stands, or is finished or undone by the next command, as after any interruption.
fn end_quietly_when_output_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(failure) = message.strip_prefix("failed printing to ") {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "blast: could not write to {failure}");
            std::process::exit(1);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    // The sandbox helper is this binary re-executed; it must run before anything starts a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == sandbox::HELPER_ARG) {
        sandbox::helper_main(&args[2..]);
    }
    // Like any Unix tool, end quietly when the reader of our output goes away (`blast log | head`).
    // SAFETY: restoring the default disposition of a signal before any thread exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    end_quietly_when_output_fails();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error: with blast's own --json, a script reads it on stdout as any other.
            if e.use_stderr() && asks_for_json(&args) {
                render::usage_error(&e.to_string(), e.exit_code());
            }
            e.exit()
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // As a shell reports them: 128 + the signal for an interrupted command (130 for
            // Ctrl-C), 127 for one not found, 126 for one found but not executable.
            let code = match e.underlying() {
                engine::Error::Interrupted { signal, .. }
                | engine::Error::InterruptedWaiting { signal, .. }
                | engine::Error::InterruptedWrite { signal, .. } => {
                    u8::try_from(128 + signal).unwrap_or(1)
                }
                engine::Error::CommandNotFound(_)
                | engine::Error::CommandNotStarted { missing: true, .. } => 127,
                engine::Error::CommandNotStarted { .. } => 126,
                _ => 1,
            };
            render::error(&e, json, code);
            ExitCode::from(code)
        }
    }
}

/// Runs an install, uninstall or pip command and `render`s its report, latched (see `sandbox::Latch`)
/// from the start to the report: a signal that comes after the commit does not end blast before the
/// report says what was done (found by exploratory testing: Ctrl-C as uv finished ended blast
/// silently, the change committed).
fn install_reported(
    open: impl FnOnce() -> Result<Store>,
    selector: Option<String>,
    request: Request,
    options: &InstallOptions,
    render: impl FnOnce(&ops::InstallReport),
) -> Result<()> {
    let latch = sandbox::Latch::set();
    render(&ops::install(
        &open()?,
        selector.as_deref(),
        request,
        options,
    )?);
    if let Some(signal) = latch.received() {
        eprintln!(
            "blast: signal {signal} came once the change above was committed: it stands (`blast \
             rollback` undoes it)"
        );
    }
    Ok(())
}

/// The image file named: `-` is standard input, as for most tools that read a stream.
fn image_file(named: PathBuf) -> PathBuf {
    match named.as_os_str() == "-" {
        true => PathBuf::from("/dev/stdin"),
        false => named,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Found when a command needs the store (`completions` does not).
    let home = Store::default_home;
    let out = render::Output { json: cli.json };
    let open = || Store::open(&home()?);
    // Commands that always change the store open its index for writing at once.
    let open_for_writing = || Store::open_for_writing(&home()?);
    match cli.command {
        Command::Create {
            name,
            path,
            python,
            seed,
        } => out.create(&ops::create(
            &open_for_writing()?,
            &CreateOptions {
                name,
                path,
                python,
                seed,
            },
        )?),
        Command::Snapshot { env, message, tag } => {
            out.snapshot(&ops::snapshot(&open()?, env.env.as_deref(), message, tag)?)
        }
        Command::Tag {
            env,
            tag,
            snapshot,
            force,
            delete,
        } => match (tag, delete.is_empty()) {
            (Some(tag), _) => out.tag_changes(&[ops::tag(
                &open()?,
                env.env.as_deref(),
                &tag,
                snapshot.as_deref(),
                force,
            )?]),
            (None, false) => out.tag_changes(&ops::untag(&open()?, env.env.as_deref(), &delete)?),
            (None, true) => out.tags(&ops::tags(&open()?, env.env.as_deref())?),
        },
        Command::Squash { env, message } => out.squash(&ops::squash(
            &open_for_writing()?,
            env.env.as_deref(),
            message,
        )?),
        Command::Rollback { env, target, force } => out.moved(&ops::rollback(
            &open_for_writing()?,
            env.env.as_deref(),
            target.as_deref(),
            force,
        )?),
        Command::Sync { from, to, force } => {
            out.moved(&ops::sync(&open_for_writing()?, &from, &to, force)?)
        }
        Command::Move { env, to, force } => out.relocated(&ops::relocate(
            &open_for_writing()?,
            env.env.as_deref(),
            &to,
            force,
        )?),
        Command::Log { env } => out.log(&ops::log(&open()?, env.env.as_deref())?),
        Command::Diff { env, a, b, files } => out.diff(&ops::diff(
            &open()?,
            env.env.as_deref(),
            a.as_deref(),
            b.as_deref(),
            files,
        )?),
        Command::List => out.list(&ops::list(&open()?)?),
        Command::Status { env } => out.status(&ops::status(&open()?, env.env.as_deref())?),
        Command::Packages { env } => out.packages(&ops::packages(&open()?, env.env.as_deref())?),
        Command::Check { env } => {
            let report = ops::check(&open()?, env.env.as_deref())?;
            out.check(&report);
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Stats => out.stats(&ops::stats(&open()?)?),
        Command::Imports {
            env,
            enable,
            disable,
        } => {
            if enable || disable {
                out.tracking(&ops::track_imports(&open()?, env.env.as_deref(), enable)?);
            } else {
                out.imports(&ops::imports(&open()?, env.env.as_deref())?);
            }
        }
        Command::Remove {
            env,
            env_flag,
            force,
        } => {
            // clap makes sure one of the two is there; an empty name selects nothing.
            let env = env.or(env_flag).unwrap_or_default();
            out.removed(&ops::remove(&open_for_writing()?, &env, force)?)
        }
        Command::Verify { env } => {
            let report = ops::verify(&open()?, env.as_deref())?;
            out.verify(&report);
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Export {
            env,
            snapshot,
            output,
            base,
            history,
            format,
        } => {
            let format = match format.as_str() {
                "requirements" => ExportFormat::Requirements,
                "pylock" => ExportFormat::Pylock,
                _ => ExportFormat::Blast,
            };
            let options = ExportOptions {
                env: env.env,
                snapshot,
                output,
                base,
                history,
                format,
            };
            out.exported(&ops::export(&open()?, &options, &out.progress())?)
        }
        Command::Import { image, name: None } => {
            out.imported(&ops::import(&open()?, &image_file(image), &out.progress())?)
        }
        Command::Import {
            image,
            name: Some(name),
        } => out.restored(&ops::restore(
            &open_for_writing()?,
            &image_file(image),
            &RestoreTarget::Name(name),
            None,
            "import",
            &out.progress(),
        )?),
        Command::Restore {
            image,
            path,
            name,
            python,
        } => {
            let target = match (path, name) {
                (Some(path), _) => RestoreTarget::Path(path),
                (None, Some(name)) => RestoreTarget::Name(name),
                (None, None) => RestoreTarget::Path(PathBuf::from(".venv")),
            };
            out.restored(&ops::restore(
                &open_for_writing()?,
                &image_file(image),
                &target,
                python.as_deref(),
                "restore",
                &out.progress(),
            )?)
        }
        Command::Push {
            env,
            snapshot,
            reference,
            insecure,
        } => {
            let options = PushOptions {
                env: env.env,
                snapshot,
                reference,
                insecure,
            };
            out.pushed(&ops::push(&open()?, &options, &out.progress())?)
        }
        Command::Pull {
            reference,
            path,
            name,
            python,
            insecure,
        } => {
            let target = match (path, name) {
                (Some(path), _) => RestoreTarget::Path(path),
                (None, Some(name)) => RestoreTarget::Name(name),
                (None, None) => RestoreTarget::Path(PathBuf::from(".venv")),
            };
            let options = PullOptions {
                reference,
                target,
                python,
                insecure,
            };
            out.pulled(&ops::pull(&open_for_writing()?, &options, &out.progress())?)
        }
        Command::Install {
            env,
            specs,
            requirements,
            index,
            how,
            installer_args,
        } => {
            let mut args = index.to_args();
            args.extend(installer_args);
            let request = Request::Install {
                specs,
                requirements,
                args,
            };
            install_reported(open_for_writing, env.env, request, &how.options(), |r| {
                out.installed(r)
            })?;
        }
        Command::Uninstall { env, names, how } => install_reported(
            open_for_writing,
            env.env,
            Request::Uninstall { names },
            &how.options(),
            |r| out.installed(r),
        )?,
        Command::Pip { env, how, args } => {
            let options = InstallOptions {
                installer_stdout: !cli.json,
                ..how.options()
            };
            install_reported(
                open_for_writing,
                env.env,
                Request::Pip { args },
                &options,
                |r| out.pip_ran(r),
            )?;
        }
        Command::Run {
            env,
            no_network,
            memory,
            pids,
            cpu_time,
            capture,
            allow_write,
            command,
        } => {
            let options = RunOptions {
                command,
                network: !no_network,
                limits: Limits {
                    memory,
                    pids,
                    cpu_seconds: cpu_time,
                },
                capture,
                allow_write,
                output_to_stderr: cli.json,
            };
            let store = if capture {
                open_for_writing()?
            } else {
                open()?
            };
            out.run_limits(&options.limits);
            let report = ops::run(&store, env.env.as_deref(), &options)?;
            out.ran(&report);
            return Ok(ExitCode::from(
                u8::try_from(report.status()).unwrap_or(u8::MAX),
            ));
        }
        Command::Start {
            env,
            shell,
            image,
            python,
            insecure,
            track_imports,
            index,
            how,
        } => {
            let options = StartOptions {
                track_imports,
                env,
                shell,
                image,
                python,
                install: how.options(),
                installer_args: index.to_args(),
                insecure,
            };
            let ended = ops::start(&home()?, &options, &out.progress(), &mut |starting| {
                out.session_starting(starting)
            })?;
            out.session_ended(&ended);
            return Ok(ExitCode::from(u8::try_from(ended.shell_exit).unwrap_or(1)));
        }
        Command::Kill { env, selected, all } => {
            let env = env
                .or(selected)
                .or_else(|| std::env::var("BLAST_ENV").ok().filter(|e| !e.is_empty()));
            out.killed(&ops::kill(&home()?, env.as_deref(), all)?)
        }
        Command::SessionHook { command, status } => {
            let Some(answer) =
                ops::prompt_hook(command.map(|c| c.to_string_lossy().into_owned()), status)
            else {
                out.session_gone();
                return Ok(ExitCode::from(engine::session::END_SHELL_STATUS));
            };
            out.captures(&answer.captures, &answer.failures);
            if let Some(env) = ops::deactivated_env() {
                out.session_deactivated(&env);
            }
            if answer.end_shell {
                return Ok(ExitCode::from(engine::session::END_SHELL_STATUS));
            }
        }
        Command::Doctor => {
            let report = ops::doctor(&open()?)?;
            out.doctor(&report);
            if !report.sandbox_works() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Completions { shell } => {
            // Made in memory, then printed: clap_complete panics itself where stdout cannot be
            // written, and `print!`'s failure is told as any other output's.
            // Without the hidden commands (the session's prompt hook), which clap_complete offers.
            let full = Cli::command();
            let mut shown = clap::Command::new("blast")
                .version(env!("CARGO_PKG_VERSION"))
                .args(full.get_arguments().cloned())
                .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut shown, "blast", &mut script);
            print!("{}", String::from_utf8_lossy(&script));
        }
        Command::Clean {
            dry_run,
            keep,
            keep_days,
        } => out.clean(&gc::clean(
            &home()?,
            CleanOptions {
                dry_run,
                keep,
                keep_days,
            },
        )?),
    }
    Ok(ExitCode::SUCCESS)
}
