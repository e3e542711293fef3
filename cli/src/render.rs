//! Rendering of the engine's reports: aligned text for people, JSON (`--json`) for programs.

use bytesize::ByteSize;
use comfy_table::{Table, presets::NOTHING};
use engine::dir_move::Way;
use engine::gc::CleanReport;
use engine::images::Progress;
use engine::imports::{DistributionImports, ImportsReport, Tracking};
use engine::metrics::Level;
use engine::ops::{
    CheckReport, CreateReport, DiffReport, DoctorReport, Durations, EnvSummary, ExportReport,
    FileChange, ImportReport, InstallReport, KillReport, LogEntry, MoveReport, PackagesReport,
    PullReport, PushReport, RelocateReport, Removal, RestoreReport, RunReport, SessionEnded,
    SessionStarting, Setup, SnapshotReport, SquashReport, StatsReport, StatusReport, TagChange,
    TagsReport, Uncapturable, VerifyReport, WrittenThrough,
};
use engine::packages::PackageChange;
use engine::sandbox::Limits;
use engine::session::CaptureNote;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub struct Output {
    pub json: bool,
}

/// Prints an error the way a user reads it (the engine's messages already name their cause).
/// An error on stderr; with `--json` also as `{"error": …, "exit_code": …}` on stdout, where a script
/// reads every other answer.
pub fn error(e: &engine::Error, json: bool, exit_code: u8) {
    let text = e.to_string();
    eprintln!("error: {}", lines(&text));
    if json {
        println!(
            "{}",
            serde_json::json!({ "error": text, "exit_code": exit_code })
        );
    }
}

/// A message of several lines for the terminal: its lines stay lines, and a file name or a package's
/// metadata in it cannot drive the terminal.
fn lines(text: &str) -> String {
    text.lines().map(printable).collect::<Vec<_>>().join("\n")
}

/// A usage error with `--json`: `{"error": …, "exit_code": …}` on stdout (clap says it on stderr).
pub fn usage_error(text: &str, exit_code: i32) {
    println!(
        "{}",
        serde_json::json!({ "error": text.trim_end(), "exit_code": exit_code })
    );
}

/// `text` as one word of a command line to copy (`engine::shell::word`), its control characters
/// escaped.
fn shell_word(text: &str) -> String {
    printable(&engine::shell::word(text)).into_owned()
}

fn short(id: &impl ToString) -> String {
    let mut s = id.to_string();
    s.truncate(12);
    s
}

fn package_line(changes: &[PackageChange]) -> String {
    if changes.is_empty() {
        return "no package changes".into();
    }
    let line = changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    printable(&line).into_owned()
}

/// The directory's package changes that HEAD, which a report shows, does not hold.
fn uncaptured_packages(changes: &[PackageChange], shown: &str) {
    if !changes.is_empty() {
        eprintln!(
            "note: the directory has package changes not captured yet, not {shown} here: {} \
             (`blast snapshot` records them)",
            package_line(changes)
        );
    }
}

/// What an install made, for a person. Output errors (a closed pipe) are not the install's.
fn install_summary(r: &InstallReport, w: &mut dyn Write) {
    written_through(&r.written_through);
    if let Some(first) = &r.captured_first {
        let _ = writeln!(
            w,
            "captured changes found in `{}` first as snapshot {}",
            r.env,
            short(first)
        );
    }
    let how = if r.sandboxed {
        "sandboxed"
    } else {
        "unsandboxed"
    };
    let _ = match &r.snapshot {
        None => writeln!(
            w,
            "nothing changed in `{}` (HEAD {}; {}, {how}, {:.1} s)",
            r.env,
            short(&r.parent),
            r.installer,
            r.installer_seconds
        ),
        Some(id) => writeln!(
            w,
            "snapshot {} of `{}`: {} added, {} modified, {} removed ({}, {how}, {:.1} s)\n  {}",
            short(id),
            r.env,
            r.added,
            r.modified,
            r.removed,
            r.installer,
            r.total_seconds,
            package_line(&r.packages)
        ),
    };
    if let Some(conflicts) = &r.conflicts {
        eprintln!("warning: committed with broken requirements (--allow-conflicts):");
        for line in conflicts.to_string().lines() {
            eprintln!("  {}", printable(line));
        }
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t
}

impl Output {
    fn json(&self, value: &impl Serialize) -> bool {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: could not render JSON: {e}"),
            }
        }
        self.json
    }

    /// A progress bar on stderr for long work; drawn only on a terminal and never with --json.
    pub fn progress(&self) -> Bar {
        Bar {
            shown: !self.json && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    pub fn exported(&self, r: &ExportReport) {
        if self.json(r) {
            return;
        }
        note_uncaptured(r.uncaptured, "the export");
        if r.format != "blast" {
            println!(
                "wrote {} ({}): {} pinned from snapshot {}",
                r.file,
                r.format,
                count(r.packages, "package"),
                short(&r.head)
            );
            if r.unsourced > 0 {
                eprintln!(
                    "note: {} of them came from an index, and pylock.toml names no source for them (blast does \
                     not record which index or file): installers that need one refuse them; `--format \
                     requirements` pins them for pip and uv",
                    r.unsourced
                );
            }
            if r.unhashed > 0 {
                eprintln!(
                    "note: {} archive{} no hash recorded and {} not at hand to hash (a URL, a file since \
                     removed): PEP 751 requires one, and installers refuse such an entry",
                    r.unhashed,
                    if r.unhashed == 1 { " has" } else { "s have" },
                    if r.unhashed == 1 { "is" } else { "are" }
                );
            }
            if r.unmet_requirements > 0 {
                let n = r.unmet_requirements;
                eprintln!(
                    "note: {n} requirement{} of the pinned distributions {} not hold in this snapshot: {}",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "does" } else { "do" },
                    match r.format {
                        "pylock" =>
                            "a lock file is installed as it is, so the set it gives breaks them too",
                        _ =>
                            "an installer given this file resolves them: it installs or changes more than the environment has, or, where they conflict, refuses the file",
                    }
                );
            }
            if r.unconventional_name {
                eprintln!(
                    "note: PEP 751 names lock files `pylock.toml` or `pylock.NAME.toml`, and installers \
                     such as uv refuse others"
                );
            }
            return;
        }
        println!(
            "wrote {} ({}): snapshot {}, {}",
            r.file,
            ByteSize(r.file_bytes),
            short(&r.head),
            count(r.packages, "package")
        );
        println!(
            "  {}, {}, {} ({} before compression)",
            count(r.snapshots.len(), "snapshot"),
            count(r.layers, "layer"),
            count(r.objects, "object"),
            ByteSize(r.object_bytes)
        );
        if let Some(base) = &r.base {
            println!(
                "  thin image over {}: {} and {} the base has are left out",
                short(base),
                count(r.layers_omitted, "layer"),
                count(r.objects_omitted, "object")
            );
        }
        println!("  needs {}", printable(&r.python));
        if let Some(bytes) = r.import_needs_max_bytes {
            eprintln!(
                "note: {} decompresses to {bytes} bytes, so many per byte of it that `blast import` takes it \
                 for a decompression bomb unless BLAST_IMAGE_MAX_BYTES={bytes} (or more) is set where it is imported",
                r.file
            );
        }
    }

    pub fn imported(&self, r: &ImportReport) {
        if self.json(r) {
            return;
        }
        print_import(r);
        if r.heads_of.is_empty() {
            println!(
                "  no environment uses it yet: `blast restore {} --path DIR` makes one (until then `blast clean` may remove it)",
                r.image
            );
        } else {
            let envs: Vec<String> = r
                .heads_of
                .iter()
                .map(|e| format!("`{}`", printable(e)))
                .collect();
            println!("  HEAD of {} already", envs.join(", "));
        }
    }

    pub fn restored(&self, r: &RestoreReport) {
        if self.json(r) {
            return;
        }
        print_import(&r.import);
        let what = r
            .name
            .as_deref()
            .map_or_else(|| r.path.clone(), |n| format!("`{n}` at {}", r.path));
        println!("restored {what} ({} files and symlinks)", r.files);
        println!("  python   {}", printable(&r.python));
        println!(
            "  activate with: source {}",
            shell_word(&format!("{}/bin/activate", r.path))
        );
    }

    pub fn pushed(&self, r: &PushReport) {
        if self.json(r) {
            return;
        }
        note_uncaptured(r.uncaptured, "the push");
        println!(
            "pushed snapshot {} to {} ({:.1} s): {}, {}",
            short(&r.snapshot),
            r.reference,
            r.seconds,
            count(r.packages, "package"),
            count(r.layers, "layer")
        );
        println!(
            "  uploaded {} blob{} ({}), the registry had {} ({}); {} packed",
            r.blobs_uploaded,
            if r.blobs_uploaded == 1 { "" } else { "s" },
            ByteSize(r.bytes_uploaded),
            r.blobs_skipped,
            ByteSize(r.bytes_skipped),
            count(r.layers_packed, "layer")
        );
        println!("  manifest {}", r.manifest_digest);
        println!("  needs {}", printable(&r.python));
        if let Some(bytes) = r.pull_needs_max_bytes {
            eprintln!(
                "note: a layer of it decompresses to so many bytes per byte of it that `blast pull` takes \
                 it for a decompression bomb unless BLAST_IMAGE_MAX_BYTES={bytes} (or more) is set where it \
                 is pulled"
            );
        }
    }

    pub fn pulled(&self, r: &PullReport) {
        if self.json(r) {
            return;
        }
        println!(
            "pulled snapshot {} from {} ({:.1} s): {}",
            short(&r.snapshot),
            r.reference,
            r.seconds,
            count(r.packages, "package")
        );
        println!(
            "  downloaded {} of {} layers ({}), {} already in the store; {} new objects",
            r.layers_downloaded,
            r.layers,
            ByteSize(r.bytes_downloaded),
            r.layers_present,
            r.new_objects
        );
        let what = r
            .name
            .as_deref()
            .map_or_else(|| r.path.clone(), |n| format!("`{n}` at {}", r.path));
        println!("created {what} ({} files and symlinks)", r.files);
        println!("  python   {}", printable(&r.python));
        println!(
            "  activate with: source {}",
            shell_word(&format!("{}/bin/activate", r.path))
        );
    }

    pub fn create(&self, r: &CreateReport) {
        if self.json(r) {
            return;
        }
        let what = r
            .name
            .as_deref()
            .map_or_else(|| r.path.clone(), |n| format!("`{n}` at {}", r.path));
        println!("created {what}");
        println!("  python   {}", printable(&r.python));
        println!(
            "  snapshot {} ({} files and symlinks)",
            short(&r.snapshot),
            r.files
        );
        println!(
            "  activate with: source {}",
            shell_word(&format!("{}/bin/activate", r.path))
        );
    }

    pub fn snapshot(&self, r: &SnapshotReport) {
        if self.json(r) {
            return;
        }
        match &r.snapshot {
            None => {
                print!("nothing changed in `{}` (HEAD {})", r.env, short(&r.parent));
                match &r.tag {
                    Some(tag) => println!("; tagged HEAD `{tag}`"),
                    None => println!(),
                }
            }
            Some(id) => {
                println!(
                    "snapshot {} of `{}`: {} added, {} modified, {} removed",
                    short(id),
                    r.env,
                    r.added,
                    r.modified,
                    r.removed
                );
                println!("  {}", package_line(&r.packages));
                if let Some(tag) = &r.tag {
                    println!("  tagged `{tag}`");
                }
            }
        }
        written_through(&r.written_through);
    }

    pub fn squash(&self, r: &SquashReport) {
        if self.json(r) {
            return;
        }
        let env = printable(&r.env);
        if r.uncaptured > 0 {
            eprintln!(
                "note: {} path{} of `{env}` differ{} from HEAD, which the squash takes: those changes are \
                 not in it (`blast status` names them; `blast snapshot` captures them)",
                r.uncaptured,
                if r.uncaptured == 1 { "" } else { "s" },
                if r.uncaptured == 1 { "s" } else { "" },
            );
        }
        if r.from == r.to {
            println!("`{env}` is one layer already (HEAD {})", short(&r.to));
            return;
        }
        println!(
            "squashed `{env}`: {} layers → 1, HEAD {} → {} (the same files)",
            r.layers,
            short(&r.from),
            short(&r.to)
        );
        if r.dropped_files == 0 {
            println!("  the earlier layers held nothing the environment no longer has");
        } else {
            println!(
                "  no longer carried: {} file{} ({}) that later layers removed or replaced; `blast clean` frees them once no history entry, tag or other environment names the old snapshots (`blast clean --keep 1` keeps only the newest entry of every environment's history)",
                r.dropped_files,
                if r.dropped_files == 1 { "" } else { "s" },
                ByteSize(r.dropped_bytes)
            );
        }
        let listed = |tags: &[String]| {
            tags.iter()
                .map(|t| format!("`{}`", printable(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !r.moved_tags.is_empty() {
            println!(
                "  moved to {} (the same files): {}",
                short(&r.to),
                listed(&r.moved_tags)
            );
        }
        if !r.older_tags.is_empty() && r.dropped_files > 0 {
            println!(
                "  still naming snapshots before the squash, whose layers keep those files: {} \
                 (`blast tag -d TAG` lets `blast clean` free them)",
                listed(&r.older_tags)
            );
        }
    }

    pub fn tags(&self, r: &TagsReport) {
        if self.json(r) {
            return;
        }
        if r.tags.is_empty() {
            println!(
                "`{0}` has no tags: `blast tag -e {0} NAME` tags HEAD",
                printable(&r.env)
            );
            return;
        }
        let mut t = table();
        t.set_header(["TAG", "SNAPSHOT", "PACKAGES", "MADE BY", "MESSAGE"]);
        for tag in &r.tags {
            let head = if tag.head { " (HEAD)" } else { "" };
            t.add_row([
                tag.tag.clone(),
                format!("{}{head}", short(&tag.snapshot)),
                tag.packages.to_string(),
                match (&tag.operation, &tag.time) {
                    (Some(op), Some(time)) => format!("{op} {time}"),
                    _ => "- (no history entry)".into(),
                },
                tag.message
                    .as_deref()
                    .map(printable)
                    .unwrap_or_default()
                    .into_owned(),
            ]);
        }
        println!("{t}");
    }

    pub fn tag_changes(&self, changes: &[TagChange]) {
        if self.json(&changes) {
            return;
        }
        for c in changes {
            let env = printable(&c.env);
            match (&c.snapshot, &c.was) {
                (Some(now), Some(was)) if now == was => {
                    println!("`{}` of `{env}` is on {} already", c.tag, short(now))
                }
                (Some(now), Some(was)) => println!(
                    "moved tag `{}` of `{env}`: {} → {}",
                    c.tag,
                    short(was),
                    short(now)
                ),
                (Some(now), None) => println!("tagged {} of `{env}` `{}`", short(now), c.tag),
                (None, was) => println!(
                    "deleted tag `{}` of `{env}` (was {}); `blast clean` frees its snapshot unless something else keeps it",
                    c.tag,
                    was.as_ref().map(short).unwrap_or_default()
                ),
            }
        }
    }

    pub fn doctor(&self, r: &DoctorReport) {
        if self.json(r) {
            return;
        }
        for check in &r.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            println!("{mark}  {}: {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("      fix: {fix}");
            }
        }
    }

    /// Before the session's shell starts.
    pub fn session_starting(&self, s: &SessionStarting) {
        if s.cleaned_stale {
            eprintln!("blast: cleaned up a session of `{}` that had died", s.env);
        }
        if let Some(first) = &s.captured_first {
            eprintln!(
                "blast: captured changes found in `{}` first as snapshot {}",
                s.env,
                short(first)
            );
        }
        written_through(&s.written_through);
        match &s.setup {
            Setup::Existing => {}
            Setup::Created { from, install } => {
                eprintln!("blast: created `{}`", s.path);
                if let (Some(from), Some(install)) = (from, install) {
                    eprintln!(
                        "blast: installed the dependencies of {from}: {}",
                        package_line(&install.packages)
                    );
                }
            }
            Setup::Restored { image } => eprintln!("blast: restored {image} at `{}`", s.path),
        }
        if let Some(tracking) = &s.tracking {
            eprintln!(
                "blast: tracking imports (records in `{}`; `blast imports` reports)",
                tracking.records
            );
        }
        if let Some(pip) = &s.foreign_pip {
            let shown = printable(&pip.path.display().to_string()).into_owned();
            match &pip.other_env {
                None => eprintln!(
                    "blast: note: `{}` has no pip of its own: `pip` here is `{shown}`, which refuses to \
                     install (PIP_REQUIRE_VIRTUALENV is set in this shell); `blast install NAME` installs \
                     into the environment, `blast install pip` gives it its own pip",
                    printable(&s.env)
                ),
                Some(other) => eprintln!(
                    "blast: warning: `{}` has no pip of its own: `pip` here is `{shown}`, which installs \
                     into `{}`, uncaptured; `blast install NAME` installs into this environment, `blast \
                     install pip` gives it its own pip",
                    printable(&s.env),
                    printable(&other.display().to_string())
                ),
            }
        }
        eprintln!(
            "blast: session of `{}` in {}: every change is captured; `exit` or `blast kill` ends it",
            s.env, s.shell
        );
    }

    /// When the session is over.
    pub fn session_ended(&self, e: &SessionEnded) {
        if self.json(e) {
            return;
        }
        eprintln!(
            "blast: session of `{}` ended, {} snapshot{} captured",
            e.env,
            e.captures.len(),
            if e.captures.len() == 1 { "" } else { "s" }
        );
        for failure in &e.failures {
            eprintln!("blast: warning: a capture failed: {}", lines(failure));
        }
    }

    /// The session hook found no watcher: its shell ends.
    pub fn session_gone(&self) {
        eprintln!(
            "blast: this session's watcher is gone, so nothing would be captured: the shell ends here; \
             `blast start` opens a new session"
        );
    }

    /// Before each prompt of a session whose shell no longer has the environment activated.
    pub fn session_deactivated(&self, env: &str) {
        eprintln!(
            "blast: warning: `{}` is not active in this shell any more: `pip` here does not install into \
             it; `source {}/bin/activate` activates it again, `exit` ends the session",
            printable(env),
            printable(env)
        );
    }

    /// Before the next prompt in a session: one line per capture the finished command made.
    pub fn captures(&self, captures: &[CaptureNote], failures: &[String]) {
        for c in captures {
            eprintln!(
                "blast: snapshot {}: {}",
                short(&c.snapshot),
                package_line(&c.packages)
            );
            if let Some(conflicts) = &c.conflicts {
                eprintln!(
                    "blast: warning: this change broke requirements (`blast rollback` undoes it):"
                );
                for line in conflicts.lines() {
                    eprintln!("  {}", printable(line));
                }
            }
            if let Some(status) = c.command_failed {
                eprintln!(
                    "blast: note: the command failed (exit {status}), and this snapshot holds what it \
                     left: `blast rollback` undoes it"
                );
            }
            written_through(&c.written_through);
        }
        for failure in failures {
            eprintln!(
                "blast: warning: could not capture the change: {}",
                lines(failure)
            );
        }
    }

    pub fn killed(&self, r: &KillReport) {
        if self.json(r) {
            return;
        }
        match &r.no_session {
            Some(env) => println!("no session of `{env}` is running"),
            None if r.killed.is_empty() => println!("no session is running"),
            None => {}
        }
        for k in &r.killed {
            if k.stale {
                println!("cleaned up the dead session of `{}`", k.env);
            } else {
                println!("ended the session of `{}`", k.env);
            }
            self.captures(&k.captures, &k.failures);
        }
    }

    /// Before `blast run` starts its command: the limits set and how each is enforced.
    pub fn run_limits(&self, limits: &Limits) {
        for line in limits.enforcement() {
            eprintln!("blast run: limit {line}");
        }
    }

    /// After `blast run`: on stderr, as the command's own output holds stdout (JSON with --json).
    pub fn ran(&self, r: &RunReport) {
        if let Some(first) = &r.captured_first {
            eprintln!(
                "blast run: captured changes found in `{}` first as snapshot {}",
                r.env,
                short(first)
            );
        }
        written_through(&r.written_through);
        if let Some(why) = &r.stopped_by {
            eprintln!("blast run: stopped `{}`: {why}", r.program.display());
        }
        if let Some(id) = &r.snapshot {
            eprintln!(
                "blast run: captured snapshot {} of `{}`: {}",
                short(id),
                r.env,
                package_line(&r.packages)
            );
        }
        if let Some(conflicts) = &r.conflicts {
            eprintln!("blast run: warning: the captured changes broke requirements:");
            for line in conflicts.to_string().lines() {
                eprintln!("  {}", printable(line));
            }
        }
        self.json(r);
    }

    pub fn installed(&self, r: &InstallReport) {
        if !self.json(r) {
            install_summary(r, &mut std::io::stdout().lock());
        }
    }

    /// As [`Output::installed`], the summary on stderr: stdout carries what pip printed (`blast pip --
    /// freeze > requirements.txt`).
    pub fn pip_ran(&self, r: &InstallReport) {
        if !self.json(r) {
            install_summary(r, &mut std::io::stderr().lock());
        }
    }

    pub fn moved(&self, r: &MoveReport) {
        if self.json(r) {
            return;
        }
        if r.unchanged {
            println!("`{}` is already at {}", r.env, short(&r.to));
            return;
        }
        let from = r.from.as_ref().map_or_else(|| "nothing".to_owned(), short);
        println!(
            "`{}`: {} → {} ({} {} written, {} removed)",
            r.env,
            from,
            short(&r.to),
            r.written,
            if r.written == 1 { "path" } else { "paths" },
            r.removed
        );
        println!("  {}", package_line(&r.packages));
    }

    pub fn relocated(&self, r: &RelocateReport) {
        if self.json(r) {
            return;
        }
        let how = match r.way {
            None => {
                println!(
                    "`{}` is at `{}` already",
                    printable(&r.env),
                    printable(&r.to)
                );
                return;
            }
            Some(Way::Renamed) => "renamed",
            Some(Way::Copied) => {
                "made there from HEAD (another filesystem, or the old directory gone)"
            }
            Some(Way::Adopted) => "taken where it was moved",
        };
        // An environment without a name goes by its path.
        let what = match r.env == r.from {
            true => format!("`{}`", printable(&r.from)),
            false => format!("`{}` from `{}`", printable(&r.env), printable(&r.from)),
        };
        println!(
            "moved {what} to `{}`: {how}; {} {} written for the new path",
            printable(&r.to),
            r.rewritten,
            if r.rewritten == 1 { "file" } else { "files" }
        );
        if r.left_at_from {
            println!(
                "  `{}` is left as it is, no longer the environment's directory, and nothing in it \
                 captured (`rm -r {}` if nothing there is needed)",
                printable(&r.from),
                shell_word(&r.from)
            );
        }
        if !r.uncaptured.is_empty() {
            println!(
                "  {} {} from HEAD, kept as {}: `blast status` names them",
                r.uncaptured.len(),
                if r.uncaptured.len() == 1 {
                    "path differs"
                } else {
                    "paths differ"
                },
                if r.uncaptured.len() == 1 {
                    "it is"
                } else {
                    "they are"
                },
            );
        }
    }

    pub fn log(&self, entries: &[LogEntry]) {
        if self.json(&entries) {
            return;
        }
        for e in entries {
            let head = if e.head { " (HEAD)" } else { "" };
            let tags = if e.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.tags.join(", "))
            };
            // An installer's entry names itself ("install rich"); others read "operation: message".
            let what = match e.message.as_deref() {
                Some(m) if m.starts_with(&format!("{} ", e.operation)) => m.to_owned(),
                Some(m) => format!("{}: {m}", e.operation),
                None => e.operation.clone(),
            };
            let what = printable(&what);
            println!("{}{head}{tags}  {}  {what}", short(&e.snapshot), e.time);
            match (&e.packages, &e.unreadable) {
                (Some(changes), _) => println!("    {}", package_line(changes)),
                (None, Some(why)) => println!("    (cannot be read: {})", printable(why)),
                (None, None) => println!("    (the snapshot before it was cleaned away)"),
            }
        }
    }

    pub fn diff(&self, r: &DiffReport) {
        if self.json(r) {
            return;
        }
        let a = r
            .from
            .as_ref()
            .map_or_else(|| "directory".to_owned(), short);
        let b = r.to.as_ref().map_or_else(|| "directory".to_owned(), short);
        println!("`{}`: {a} → {b}", r.env);
        println!("  {}", package_line(&r.packages));
        match &r.files {
            Some(files) => print_file_changes(files),
            None if r.paths_changed > 0 => println!(
                "  {} path{} differ{} (`--files` lists {})",
                r.paths_changed,
                if r.paths_changed == 1 { "" } else { "s" },
                if r.paths_changed == 1 { "s" } else { "" },
                if r.paths_changed == 1 { "it" } else { "them" }
            ),
            None => println!("  no paths differ"),
        }
        if !r.uncapturable.is_empty() {
            println!(
                "  {} no snapshot can hold, left out (`blast status` says what to do):",
                count(r.uncapturable.len(), "path")
            );
            print_uncapturable(&r.uncapturable);
        }
    }

    pub fn list(&self, envs: &[EnvSummary]) {
        if self.json(&envs) {
            return;
        }
        if envs.is_empty() {
            println!("no environments yet: `blast create NAME` makes one");
            return;
        }
        let mut t = table();
        t.set_header(["NAME", "PATH", "HEAD", "PYTHON", "PACKAGES", "LAST"]);
        for e in envs {
            t.add_row([
                e.name.clone().unwrap_or_else(|| "-".into()),
                e.path.clone(),
                match (&e.head, e.interrupted, e.gone) {
                    (_, true, _) => "(interrupted)".into(),
                    (_, false, true) => "(gone)".into(),
                    (Some(head), false, false) => short(head),
                    (None, false, false) => "-".into(),
                },
                e.python.clone(),
                e.packages.to_string(),
                match (&e.last_operation, &e.last_time) {
                    (Some(op), Some(t)) => format!("{op} {t}"),
                    _ => "-".into(),
                },
            ]);
        }
        println!("{t}");
        if envs.iter().any(|e| e.interrupted) {
            println!(
                "(interrupted): a move was stopped half-way; the next command on the environment finishes it \
                 (`blast status -e PATH`), or `blast remove PATH` removes the environment"
            );
        }
        if envs.iter().any(|e| e.gone && !e.interrupted) {
            println!(
                "(gone): the directory is not there; `blast status -e PATH` says how to make it again, \
                 take it where it was moved, or forget the environment"
            );
        }
    }

    pub fn status(&self, r: &StatusReport) {
        written_through(&r.written_through);
        if self.json(r) {
            return;
        }
        println!("environment `{}`", r.env);
        println!("  path      {}", r.path);
        println!("  python    {}", printable(&r.python));
        let tags = if r.tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.tags.join(", "))
        };
        println!(
            "  HEAD      {}{tags}",
            r.head.as_ref().map(short).unwrap_or_default()
        );
        println!(
            "  size      {} in {} files",
            ByteSize(r.env_bytes),
            r.env_files
        );
        println!(
            "  store     {} ({} saved by storing identical files once)",
            ByteSize(r.store_bytes),
            ByteSize(r.saved_by_dedup)
        );
        if r.uncaptured.is_empty() {
            println!("  no uncaptured changes");
        } else {
            println!(
                "  {}, which `blast snapshot` keeps:",
                count(r.uncaptured.len(), "uncaptured change")
            );
            print_file_changes(&r.uncaptured[..r.uncaptured.len().min(STATUS_FILES)]);
            if r.uncaptured.len() > STATUS_FILES {
                println!(
                    "    … and {} more (`blast diff -e {} --files` lists them all)",
                    r.uncaptured.len() - STATUS_FILES,
                    printable(&r.path)
                );
            }
        }
        if !r.uncapturable.is_empty() {
            println!(
                "  {} no snapshot can hold (`blast snapshot` refuses them; remove them, or \
                 `blast rollback -e {} --force HEAD` discards them with every other uncaptured \
                 change):",
                count(r.uncapturable.len(), "path"),
                shell_word(&r.env)
            );
            print_uncapturable(&r.uncapturable);
        }
        if let Some(session) = &r.session {
            let uptime_s = session.uptime_seconds;
            println!(
                "  session   watcher pid {}, shell pid {}, up {}m{:02}s, {} captures{}",
                session.record.pid,
                session.record.shell_pid,
                uptime_s / 60,
                uptime_s % 60,
                session.captures,
                session
                    .last_capture
                    .as_ref()
                    .map(|c| {
                        format!(
                            ", last {} ({})",
                            short(&c.snapshot),
                            printable(c.message.trim())
                        )
                    })
                    .unwrap_or_default()
            );
        }
        println!("  {}", count(r.packages.len(), "package"));
        for p in &r.packages {
            println!("    {} {}", printable(&p.name), printable(&p.version));
        }
        if r.processes.is_empty() {
            println!("  no processes running from it");
        } else {
            let count = r.processes.len();
            let noun = if count == 1 { "process" } else { "processes" };
            println!("  {count} {noun} running from it:");
            let mut t = table();
            t.set_header(["    PID", "CPU", "MEMORY", "COMMAND"]);
            for p in &r.processes {
                t.add_row([
                    format!("    {}", p.pid),
                    format!("{:.1}%", p.cpu_percent),
                    ByteSize(p.memory_bytes).to_string(),
                    p.command.clone(),
                ]);
            }
            println!("{t}");
        }
    }

    pub fn stats(&self, r: &StatsReport) {
        if self.json(r) {
            return;
        }
        let seconds = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        let row = |what: &str, d: &Durations, level: String| {
            [
                what.to_owned(),
                d.count.to_string(),
                seconds(d.p50_seconds),
                seconds(d.p95_seconds),
                seconds(d.max_seconds),
                level,
            ]
        };
        let mut t = table();
        t.set_header(["TIMING", "SAMPLES", "P50", "P95", "MAX", "LEVEL"]);
        t.add_row(row(
            "install duration",
            &r.install.durations,
            level_word(r.install.level),
        ));
        t.add_row(row("capture latency", &r.capture, "-".into()));
        println!("{t}");
        println!(
            "install level judged on p95: warning over {} s, alert over {} s, critical over {} s",
            r.install.warning_over_seconds,
            r.install.alert_over_seconds,
            r.install.critical_over_seconds
        );
        println!();
        if r.envs.is_empty() {
            println!("no environments yet");
        } else {
            let mut t = table();
            t.set_header(["ENVIRONMENT", "SIZE", "FILES", "PATH"]);
            for e in &r.envs {
                t.add_row([
                    e.env.clone(),
                    ByteSize(e.bytes).to_string(),
                    e.files.to_string(),
                    e.path.clone(),
                ]);
            }
            println!("{t}");
        }
        println!();
        println!(
            "store     {} on disk; environments hold {} of files in {} of distinct objects (dedup ratio {:.2})",
            ByteSize(r.store_bytes),
            ByteSize(r.logical_bytes),
            ByteSize(r.unique_bytes),
            r.dedup_ratio
        );
        let d = &r.disk;
        // `df`'s share: of what is used or still available (the total holds reserved blocks too).
        println!(
            "disk      {:.1}% in use ({} used, {} available) at {} — {}, alert over {}%",
            d.used_percent,
            ByteSize(d.used_bytes),
            ByteSize(d.available_bytes),
            d.path,
            level_word(d.level),
            d.alert_over_percent
        );
    }

    pub fn tracking(&self, r: &Tracking) {
        if self.json(r) {
            return;
        }
        if r.enabled {
            let already = if r.was_on {
                " (already: its hook written again)"
            } else {
                ""
            };
            println!(
                "tracking imports in `{}`{already}: each Python process records its imports in {}",
                r.env, r.records
            );
            println!(
                "  hook files (not environment content): {}",
                r.files.join(", ")
            );
            println!("  `blast imports -e {}` reports them", shell_word(&r.env));
        } else {
            let records = match r.has_records {
                true => format!(" (what was recorded stays in {})", r.records),
                false => " (nothing was recorded)".to_owned(),
            };
            match r.was_on {
                true => println!("no longer tracking imports in `{}`{records}", r.env),
                false => println!(
                    "import tracking was not on in `{}`: nothing to turn off{records}",
                    r.env
                ),
            }
        }
    }

    pub fn imports(&self, r: &ImportsReport) {
        if self.json(r) {
            return;
        }
        print_problems(&r.problems);
        let state = if r.tracking {
            "tracking on"
        } else {
            "tracking off: `blast imports --enable` turns it on"
        };
        println!(
            "imports in `{}` (snapshot {}): {} process records, {state}",
            r.env,
            short(&r.snapshot),
            r.records
        );
        let dists = |list: &[DistributionImports]| {
            let mut t = table();
            t.set_header(["    NAME", "VERSION", "IMPORT NAMES"]);
            for d in list {
                t.add_row([
                    format!("    {}", d.name),
                    d.version.clone(),
                    dash_if_empty(d.top_level.join(" ")),
                ]);
            }
            t
        };
        if r.records == 0 {
            println!(
                "  nothing recorded yet: no Python process of the environment ran with tracking on"
            );
            return;
        }
        let distributions = |n: usize| match n {
            1 => "1 installed distribution".to_owned(),
            n => format!("{n} installed distributions"),
        };
        match (r.never_imported.len(), r.imported.len()) {
            (0, 0) => println!("  no installed distributions"),
            (0, imported) => println!("  {} imported: all of them", distributions(imported)),
            (never, imported) => {
                println!("  {} never imported:", distributions(never));
                println!("{}", dists(&r.never_imported));
                println!("  {} imported", distributions(imported));
            }
        }
        println!(
            "  imported, provided by no installed distribution: {}",
            dash_if_empty(r.not_provided.join(" "))
        );
        println!(
            "  imported from the project's own files: {}",
            dash_if_empty(r.local.join(" "))
        );
    }

    pub fn packages(&self, r: &PackagesReport) {
        if self.json(r) {
            return;
        }
        print_problems(&r.problems);
        uncaptured_packages(&r.uncaptured, "listed");
        if r.packages.is_empty() {
            println!(
                "no packages in `{}` (snapshot {})",
                r.env,
                short(&r.snapshot)
            );
            return;
        }
        let mut t = table();
        t.set_header(["NAME", "VERSION", "REQUIRES", "SCRIPTS"]);
        for p in &r.packages {
            let scripts: Vec<&str> = p
                .console_scripts
                .iter()
                .chain(&p.gui_scripts)
                .map(|e| e.name.as_str())
                .collect();
            t.add_row([
                printable(&p.name).into_owned(),
                printable(&p.version).into_owned(),
                dash_if_empty(
                    p.requires
                        .iter()
                        .map(|r| printable(r).into_owned())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                dash_if_empty(printable(&scripts.join(" ")).into_owned()),
            ]);
        }
        println!("{t}");
    }

    pub fn check(&self, r: &CheckReport) {
        if self.json(r) {
            return;
        }
        print_problems(&r.problems);
        uncaptured_packages(&r.uncaptured, "checked");
        if r.is_clean() {
            println!(
                "no broken requirements in `{}` ({} distribution{} in snapshot {})",
                r.env,
                r.distributions,
                if r.distributions == 1 { "" } else { "s" },
                short(&r.snapshot)
            );
            return;
        }
        let count = r.unsatisfied.len();
        println!(
            "{count} broken requirement{} in `{}` (snapshot {}):",
            if count == 1 { "" } else { "s" },
            r.env,
            short(&r.snapshot)
        );
        for u in &r.unsatisfied {
            println!("  {}", printable(&u.to_string()));
        }
        if let Some(explanation) = &r.explanation {
            println!("why:");
            for line in explanation.lines() {
                if line.is_empty() {
                    println!();
                } else {
                    println!("  {}", printable(line));
                }
            }
        }
    }

    pub fn removed(&self, removal: &Removal) {
        #[derive(Serialize)]
        struct Removed<'a> {
            removed: &'a str,
            path: &'a str,
            /// Set when only the record went: the directory is this other store's.
            kept_by: Option<&'a Path>,
        }
        let r = &removal.record;
        if self.json(&Removed {
            removed: r.label(),
            path: &removal.path,
            kept_by: removal.kept_by.as_deref(),
        }) {
            return;
        }
        if let Some(original) = &removal.kept_by {
            println!(
                "forgot `{}` in this store; its directory `{}` stays, with the store at `{}`",
                r.label(),
                printable(&removal.path),
                original.display()
            );
            return;
        }
        match &r.name {
            Some(name) => println!(
                "removed `{name}` ({}); its snapshots go with the next `blast clean`",
                printable(&removal.path)
            ),
            None => println!(
                "removed `{}`; its snapshots go with the next `blast clean`",
                printable(&removal.path)
            ),
        }
    }

    pub fn verify(&self, r: &VerifyReport) {
        if self.json(r) {
            return;
        }
        println!("checked {} store files", r.objects_checked);
        for c in &r.corrupt {
            println!("  CORRUPT {}", printable(c));
        }
        for m in &r.wrong_mode {
            println!("  MODE {}", printable(m));
        }
        for m in &r.missing {
            println!("  MISSING {}", printable(m));
        }
        for e in &r.envs {
            if let Some(store) = &e.kept_by {
                println!(
                    "  `{}` not compared: the store at `{}` keeps its directory (this store is a copy)",
                    e.env,
                    printable(store)
                );
            } else if let Some(err) = &e.error {
                println!("  `{}`: could not check:", e.env);
                for line in err.lines() {
                    println!("    {}", printable(line));
                }
            } else if e.drifted.is_empty() && e.uncapturable.is_empty() {
                println!("  `{}` matches its HEAD", e.env);
            } else {
                println!("  `{}` DRIFTED from its HEAD:", e.env);
                print_file_changes(&e.drifted);
                print_uncapturable(&e.uncapturable);
            }
        }
        if r.is_clean() {
            println!("all good");
            return;
        }
        println!("problems found:");
        let object = |path: &String| path.contains("/objects/");
        if r.corrupt.iter().any(|c| !object(c)) {
            println!(
                "  a corrupt layer or snapshot file cannot be rebuilt from the store: importing an image or \
                 pulling a reference that holds the snapshots that need it brings it back"
            );
        }
        if r.corrupt.iter().any(object) {
            println!(
                "  a corrupt object was most likely written in place through an environment's hardlinked file \
                 (as root, or after a chmod), and every environment linked to it drifted with it: remove it from \
                 the store (its name promises other bytes, and blast never rewrites an object it has), then \
                 bring the right bytes back by reinstalling the package that holds it \
                 (`blast pip -e ENV -- install --force-reinstall NAME`) or importing an image that has it"
            );
        }
        if !r.wrong_mode.is_empty() {
            println!(
                "  an object's mode changes with a chmod of an environment's hardlinked file (by root or \
                 the owner), and every environment linked to it shows the new mode: `chmod 444 FILE` \
                 (`chmod 555` for a `.x` file) restores it; `blast rollback -e ENV --force HEAD` then \
                 mends an environment still drifted"
            );
        }
        if !r.missing.is_empty() {
            println!(
                "  a missing file cannot be rebuilt from the store: importing an image or pulling a reference \
                 that holds the snapshots named (`blast import FILE`, `blast pull REF`) brings it back; a \
                 missing object also comes back with a reinstall of the package that holds it \
                 (`blast pip -e ENV -- install --force-reinstall NAME`)"
            );
        }
        for e in r.envs.iter().filter(|e| e.error.is_some()) {
            println!(
                "  `{}` could not be checked: what stopped it (above) comes first",
                e.env
            );
        }
        for e in r.envs.iter().filter(|e| !e.uncapturable.is_empty()) {
            println!(
                "  `{}` holds what no snapshot can (marked `!`): remove it, or `blast rollback -e {} \
                 --force HEAD` discards it with the other changes",
                e.env,
                shell_word(&e.env)
            );
        }
        // A rollback writes HEAD's objects: one that is damaged must be mended first (found by
        // exploratory testing: the rollback advised failed on it).
        let first = match r.corrupt.iter().any(object) {
            true => " (once the corrupt object is mended, as above: HEAD may need it)",
            false => "",
        };
        for e in r.envs.iter().filter(|e| !e.drifted.is_empty()) {
            println!(
                "  `{}`: `blast snapshot -e {}` keeps these changes as a new snapshot; \
                 `blast rollback -e {} --force HEAD` discards them{first}",
                e.env,
                shell_word(&e.env),
                shell_word(&e.env)
            );
        }
    }

    pub fn clean(&self, r: &CleanReport) {
        if self.json(r) {
            return;
        }
        let verb = if r.dry_run { "would remove" } else { "removed" };
        println!(
            "{verb} {}, {}, {}, {}; {} {}",
            count(r.objects_removed, "object"),
            count(r.layers_removed, "layer"),
            count(r.snapshots_removed, "snapshot"),
            count(r.history_dropped, "history entry"),
            ByteSize(r.bytes_freed),
            if r.dry_run { "would be freed" } else { "freed" }
        );
        if r.staging_reclaimed > 0 {
            println!("reclaimed {} abandoned staging areas", r.staging_reclaimed);
        }
    }
}

fn print_import(r: &ImportReport) {
    println!(
        "imported snapshot {} from {} ({}): {}",
        short(&r.head),
        r.image,
        ByteSize(r.image_bytes),
        count(r.packages, "package")
    );
    println!(
        "  new in the store: {}, {}, {} (of {}, {})",
        count(r.new_snapshots, "snapshot"),
        count(r.new_layers, "layer"),
        count(r.new_objects, "object"),
        r.objects,
        ByteSize(r.object_bytes)
    );
    if let Some(base) = &r.base {
        println!("  thin image over {}", short(base));
    }
    println!("  needs {}", printable(&r.python));
}

/// The engine's progress, drawn with indicatif: a bar when the total is known, else a spinner.
pub struct Bar {
    shown: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for Bar {
    fn begin(&self, phase: &'static str, total: Option<u64>) {
        if !self.shown {
            return;
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:>13} [{bar:24}] {binary_bytes}/{binary_total_bytes} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(phase);
        bar.enable_steady_tick(Duration::from_millis(100));
        if let Some(old) = self.current().replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, amount: u64) {
        if let Some(bar) = self.current().as_ref() {
            bar.inc(amount);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.current().take() {
            bar.finish_and_clear();
        }
    }
}

/// `ok` quietly, anything worse in capitals so it stands out.
fn level_word(level: Level) -> String {
    match level {
        Level::Ok => level.as_str().to_owned(),
        _ => level.as_str().to_uppercase(),
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

/// Distributions blast could not read in full: said on stderr, so the report itself stays clean.
fn print_problems(problems: &[String]) {
    for p in problems {
        eprintln!("warning: {}", printable(p));
    }
}

/// How many uncaptured changes `blast status` lists.
const STATUS_FILES: usize = 20;

fn print_file_changes(files: &[FileChange]) {
    for f in files {
        let mark = match f.change {
            "added" => '+',
            "removed" => '-',
            _ => 'M',
        };
        println!("    {mark} {}", printable(&f.path));
    }
}

/// What no snapshot can hold, a line each, marked `!`.
fn print_uncapturable(entries: &[Uncapturable]) {
    for entry in entries {
        println!("    ! {} ({})", printable(&entry.path), entry.kind);
    }
}

/// Warns of files written in place through their link to a store object.
fn written_through(files: &[WrittenThrough]) {
    for file in files {
        eprintln!(
            "blast: warning: `{}` was written in place, and it shares its bytes with the store's object {} \
             (a hardlink): that object no longer holds what its snapshots had, in every environment and \
             snapshot with it; `blast verify` names them. A file blast links is read-only: save a new \
             file over it instead (as `sed -i` does), or set BLAST_LINK_MODE=copy",
            printable(&file.path),
            file.object.short()
        );
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a message or a file name must not
/// move the cursor, recolour the terminal or make a line that looks like blast's own.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The note of an export or a push of an environment's HEAD while its directory holds changes no
/// snapshot has: they are left out, which the user may not expect.
fn note_uncaptured(paths: usize, what: &str) {
    if paths > 0 {
        eprintln!(
            "note: {paths} path{} of the environment differ{} from its HEAD, which {what} takes: those \
             changes are left out (`blast status` names them; `blast snapshot` captures them, then export \
             or push again)",
            if paths == 1 { "" } else { "s" },
            if paths == 1 { "s" } else { "" },
        );
    }
}

/// `n` things: `1 package`, `2 packages`, `3 history entries`.
fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str) -> String {
    match (n == N::from(1), one.strip_suffix('y')) {
        (true, _) => format!("1 {one}"),
        (false, Some(stem)) => format!("{n} {stem}ies"),
        (false, None) => format!("{n} {one}s"),
    }
}
