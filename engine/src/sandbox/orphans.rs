//! What an unconfined installer (`--no-sandbox`) leaves running: a build backend that pip started and
//! stopped waiting for when it was interrupted, a daemon a build script spawned. While the installer
//! runs, blast is a child subreaper, so such processes are re-parented to blast rather than to init;
//! once the installer has ended, blast kills and reaps them. The sandbox gets the same from its pid
//! namespace, which ends with its first process.

use std::collections::BTreeSet;

use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// blast as a child subreaper while this lives.
pub(super) struct Subreaper {
    was: bool,
    /// Children blast had before: not the installer's.
    before: BTreeSet<i32>,
}

impl Subreaper {
    pub(super) fn start() -> Subreaper {
        let was = prctl::get_child_subreaper().unwrap_or(false);
        let _ = prctl::set_child_subreaper(true);
        Subreaper {
            was,
            before: children(),
        }
    }

    /// Kills and reaps what the installer left: every child blast has now and had not before. A
    /// killed process's own children come to blast in turn, so this goes on until none is left.
    pub(super) fn end_leftovers(&self) {
        // Bounded: a fork bomb that outpaces the kills is left to the rest of the system.
        for _ in 0..64 {
            let left: Vec<i32> = children().difference(&self.before).copied().collect();
            if left.is_empty() {
                return;
            }
            for pid in left {
                let pid = Pid::from_raw(pid);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        let _ = prctl::set_child_subreaper(self.was);
    }
}

/// The pids of this process's children, from every thread's `children` list in `/proc`, or, on a
/// kernel without those lists (`CONFIG_PROC_CHILDREN`), from every process's parent.
fn children() -> BTreeSet<i32> {
    let lists: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .collect();
    if lists.is_empty() {
        return children_by_parent();
    }
    lists
        .iter()
        .flat_map(|list| list.split_whitespace().filter_map(|pid| pid.parse().ok()))
        .collect()
}

fn children_by_parent() -> BTreeSet<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command, which may hold spaces and parentheses: state, then the parent.
            let parent = stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?;
            (parent == me).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of listing children agree, so the fallback is right where it is needed.
    #[test]
    fn children_are_found_by_parent_as_by_the_kernels_lists() {
        let mut sleepers: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: BTreeSet<i32> = sleepers.iter().map(|c| c.id() as i32).collect();
        let (listed, by_parent) = (children(), children_by_parent());
        for child in &mut sleepers {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(pids.is_subset(&listed), "{pids:?} {listed:?}");
        assert!(pids.is_subset(&by_parent), "{pids:?} {by_parent:?}");
    }
}
