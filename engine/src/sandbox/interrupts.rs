//! SIGINT, SIGTERM and SIGHUP while a program runs for blast: they reach the program, which may clean up
//! and end as it likes, and blast stays to clean up after. Three links pass them on:
//!
//! - blast, while it waits on its child (the sandbox helper, or an unconfined installer): a signal sent
//!   to blast alone (`kill -INT`, an IDE's stop button, `timeout`) goes on to the child. One from the
//!   terminal (`si_code` `SI_KERNEL`: Ctrl-C, a hangup) is not passed on, as the terminal sent it to the
//!   child too, which is in blast's process group.
//! - the helper, to the sandbox's init: the sandbox runs in a session of its own, out of the terminal's
//!   reach.
//! - init, to every other process of the sandbox's pid namespace, as a terminal signals a whole process
//!   group (pip and the build backend it runs both see Ctrl-C).
//!
//! A second signal while the first is still being handled (a program that ignores it, a cleanup that
//! hangs) ends the child with SIGKILL, and with the helper the whole sandbox. The programs start with
//! the default dispositions: exec resets handled signals, and the handlers replaced whatever blast
//! inherited (a shell starts background jobs with SIGINT ignored, which exec would keep).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signals passed on.
const PASSED_ON: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Where signals go: the child blast or the helper waits on; 0 while there is none yet.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The first signal received since the forwarding started, and how many came.
static FIRST: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);
/// Whether a signal from the terminal is passed on too (the helper's case).
static FROM_TERMINAL_TOO: AtomicBool = AtomicBool::new(false);

extern "C" fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let child = CHILD.load(Ordering::SeqCst);
    if child <= 0 {
        return;
    }
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
    let from_terminal = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    // SAFETY: kill is async-signal-safe; a child that is gone already makes it fail, harmlessly.
    unsafe {
        if count >= 2 {
            libc::kill(child, libc::SIGKILL);
        } else if !from_terminal || FROM_TERMINAL_TOO.load(Ordering::SeqCst) {
            libc::kill(child, sig);
        }
    }
}

extern "C" fn to_everyone_else(sig: libc::c_int) {
    // SAFETY: from the pid namespace's init, -1 reaches every other process of the namespace.
    unsafe { libc::kill(-1, sig) };
}

fn install(handler: SigHandler, flags: SaFlags) -> Vec<(Signal, SigAction)> {
    // Restarted, so the wait for the child goes on after the handler ran.
    let action = SigAction::new(handler, flags | SaFlags::SA_RESTART, SigSet::empty());
    PASSED_ON
        .into_iter()
        .filter_map(|signal| {
            // SAFETY: the handlers only touch atomics and call kill, both async-signal-safe.
            let previous = unsafe { sigaction(signal, &action) }.ok()?;
            Some((signal, previous))
        })
        .collect()
}

/// blast's link: signals passed on to the child while this lives; the previous dispositions are put
/// back when dropped.
pub(super) struct Forwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl Forwarding {
    pub(super) fn start() -> Forwarding {
        CHILD.store(0, Ordering::SeqCst);
        FIRST.store(0, Ordering::SeqCst);
        COUNT.store(0, Ordering::SeqCst);
        FROM_TERMINAL_TOO.store(false, Ordering::SeqCst);
        Forwarding {
            previous: install(SigHandler::SigAction(pass_on), SaFlags::SA_SIGINFO),
        }
    }

    /// The child is started: a signal that came before it existed is passed on now.
    pub(super) fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        CHILD.store(pid, Ordering::SeqCst);
        let first = FIRST.load(Ordering::SeqCst);
        if first != 0 {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, first) };
        }
    }

    /// The first signal blast got meanwhile, if any: an install counts as interrupted by it, whatever
    /// the installer made of it (pip exits 1 on KeyboardInterrupt).
    pub(super) fn received(&self) -> Option<i32> {
        Some(FIRST.load(Ordering::SeqCst)).filter(|&sig| sig != 0)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        CHILD.store(0, Ordering::SeqCst);
        for (signal, previous) in &self.previous {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(*signal, previous) };
        }
    }
}

/// The helper's link, for the rest of its life: every signal goes on to the sandbox's `init`.
pub(super) fn pass_on_to_init(init: i32) {
    CHILD.store(init, Ordering::SeqCst);
    FROM_TERMINAL_TOO.store(true, Ordering::SeqCst);
    install(SigHandler::SigAction(pass_on), SaFlags::SA_SIGINFO);
}

/// Init's link, for the rest of its life: every signal goes on to the rest of the pid namespace. Init
/// must handle them to get them at all: the kernel drops a signal that a namespace's init leaves at its
/// default disposition.
pub(super) fn pass_on_to_namespace() {
    install(SigHandler::Handler(to_everyone_else), SaFlags::empty());
}
