//! Processes running from an environment, with their CPU and memory use (`blast status`, sessions).
//!
//! A process runs from an environment when its executable or one of its first two arguments lies under
//! the environment's directory. The arguments matter: a venv's `bin/python` is a symlink to the base
//! interpreter, so the kernel names the base interpreter as the executable, while `argv[0]` keeps the
//! path the program was started by (`/env/bin/python`, or the interpreter of a console script's
//! shebang) and `argv[1]` the script (`python /env/bin/tool`). A relative argument is taken from the
//! process's working directory; a bare command name (`python` found on `PATH`) says nothing and is not
//! matched.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sysinfo::{
    MINIMUM_CPU_UPDATE_INTERVAL, Pid, Process, ProcessRefreshKind, ProcessesToUpdate, System,
    UpdateKind,
};

/// Longest command line a report carries, in characters.
const COMMAND_CHARS: usize = 120;

/// One process running from an environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvProcess {
    pub pid: u32,
    /// The command line, its arguments joined by spaces, shortened to 120 characters.
    pub command: String,
    /// Percent of one CPU over the sampling interval (above 100 when it uses several).
    pub cpu_percent: f32,
    /// Resident memory.
    pub memory_bytes: u64,
}

/// Whether the process `pid` is stopped (Ctrl-Z in its terminal, SIGSTOP, or at a debugger's breakpoint).
pub fn is_stopped(pid: u32) -> bool {
    let mut system = System::new();
    let pid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    system.process(pid).is_some_and(|p| {
        matches!(
            p.status(),
            sysinfo::ProcessStatus::Stop | sysinfo::ProcessStatus::Tracing
        )
    })
}

/// The processes running from the environment at `env_root`, by pid. Reads only what the match needs
/// (executable, arguments, working directory) for every process; CPU and memory are read for the
/// matching ones only, twice [`MINIMUM_CPU_UPDATE_INTERVAL`] apart (CPU use is a difference), so an
/// environment nothing runs from costs one pass over `/proc` and no wait.
pub fn running_from(env_root: &Path) -> Vec<EnvProcess> {
    let roots = roots_of(env_root);
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing()
            .without_tasks()
            .with_exe(UpdateKind::OnlyIfNotSet)
            .with_cmd(UpdateKind::OnlyIfNotSet)
            .with_cwd(UpdateKind::OnlyIfNotSet),
    );
    let own = sysinfo::get_current_pid().ok();
    let mut pids: Vec<Pid> = system
        .processes()
        .values()
        .filter(|p| Some(p.pid()) != own && runs_from(p, &roots))
        .map(Process::pid)
        .collect();
    if pids.is_empty() {
        return Vec::new();
    }
    pids.sort();
    let usage = ProcessRefreshKind::nothing()
        .without_tasks()
        .with_cpu()
        .with_memory();
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, usage);
    std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL);
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, usage);
    pids.iter()
        .filter_map(|pid| system.process(*pid))
        .map(|p| EnvProcess {
            pid: p.pid().as_u32(),
            command: shortened(&command_line(p)),
            cpu_percent: p.cpu_usage(),
            memory_bytes: p.memory(),
        })
        .collect()
}

/// The environment's path as recorded and, when a symlink leads to it, as resolved: a process may have
/// been started by either.
fn roots_of(env_root: &Path) -> Vec<PathBuf> {
    let mut roots = vec![env_root.to_owned()];
    if let Ok(real) = std::fs::canonicalize(env_root)
        && real != env_root
    {
        roots.push(real);
    }
    roots
}

fn runs_from(process: &Process, roots: &[PathBuf]) -> bool {
    let under = |path: &Path| roots.iter().any(|root| path.starts_with(root));
    if process.exe().is_some_and(under) {
        return true;
    }
    process.cmd().iter().take(2).any(|arg| {
        let arg = Path::new(arg);
        if arg.is_absolute() {
            under(arg)
        } else if arg.components().count() > 1 {
            process.cwd().is_some_and(|cwd| under(&cwd.join(arg)))
        } else {
            false
        }
    })
}

fn command_line(process: &Process) -> String {
    let args: Vec<String> = process
        .cmd()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.is_empty() {
        // A kernel thread or a process that cleared its arguments: its name is all there is.
        process.name().to_string_lossy().into_owned()
    } else {
        args.join(" ")
    }
}

fn shortened(text: &str) -> String {
    if text.chars().count() <= COMMAND_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(COMMAND_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_command_lines_are_shortened_to_the_limit() {
        assert_eq!(shortened("python -c pass"), "python -c pass");
        let long = "x".repeat(300);
        let short = shortened(&long);
        assert_eq!(short.chars().count(), COMMAND_CHARS);
        assert!(short.ends_with('…'));
    }

    #[test]
    fn a_script_under_the_directory_is_found_by_its_argument() {
        let env = tempfile::tempdir().unwrap();
        let script = env.path().join("bin/wait.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "sleep 30\n").unwrap();
        // `sh SCRIPT`: the executable is /bin/sh, only argv[1] lies under the directory.
        let mut child = std::process::Command::new("sh")
            .arg(&script)
            .spawn()
            .unwrap();
        // Until it has exec'd, the child is a copy of this test (a CI run found it so).
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let started = std::time::Instant::now();
        while !std::fs::read(&cmdline).is_ok_and(|c| c.ends_with(b"bin/wait.sh\0")) {
            assert!(started.elapsed().as_secs() < 10, "sh never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let found = running_from(env.path());
        let _ = child.kill();
        let _ = child.wait();
        let ours: Vec<&EnvProcess> = found.iter().filter(|p| p.pid == child.id()).collect();
        assert_eq!(ours.len(), 1, "{found:?} lacks {}", child.id());
        assert!(ours[0].command.ends_with("bin/wait.sh"), "{found:?}");
        assert!(ours[0].memory_bytes > 0, "{found:?}");
        assert!(running_from(Path::new("/nonexistent/env")).is_empty());
    }
}
