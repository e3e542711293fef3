//! SIGINT, SIGTERM and SIGHUP while a program runs for blast: they reach the program, which may clean up
//! and end as it likes, and blast stays to clean up after. Three links pass them on:
//!
//! - blast, while it waits on its child (the sandbox helper, or an unconfined installer), which it
//!   starts in a process group of its own: every such signal blast gets (Ctrl-C at the terminal, `kill`,
//!   `timeout`, an IDE's stop button, one sent to blast's whole group) goes on to the child's group once.
//! - the helper, to the sandbox's init: the sandbox runs in a session of its own.
//! - init, to every other process of the sandbox's pid namespace, as a terminal signals a whole process
//!   group (pip and the build backend it runs both see Ctrl-C).
//!
//! A second signal within [`FORCE_WINDOW_MS`] of the one before (Ctrl-C pressed twice: a program that
//! ignores the first, a cleanup that hangs) sends SIGKILL instead, which ends the sandbox with its init.
//! A signal blast inherited as ignored (`nohup`, a script's background job) stays ignored, for blast and
//! for what it starts. Otherwise the programs start with the default dispositions: exec resets handled
//! signals.
//!
//! Ctrl-Z and `fg` (SIGTSTP, SIGCONT) go the same way, and blast stops itself once it passed SIGTSTP on:
//! init stops the rest of the namespace with SIGSTOP (its process group is orphaned, so the kernel would
//! drop a SIGTSTP there) and continues it with SIGCONT.

use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signals passed on.
const PASSED_ON: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];
/// Stop and continue: passed on too, never counted towards forcing.
const JOB_CONTROL: [Signal; 2] = [Signal::SIGTSTP, Signal::SIGCONT];

/// A signal this soon after the one before forces the end.
pub(super) const FORCE_WINDOW_MS: i64 = 3000;

/// Where signals go: the process group (blast's link) or process (the helper's) of the child; 0 while
/// there is none yet.
static TARGET: AtomicI32 = AtomicI32::new(0);
/// The first signal received since the forwarding started (blast's link), or one init got before its
/// program existed.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// When the last signal came, in milliseconds of the monotonic clock (0: none yet).
static LAST_MS: AtomicI64 = AtomicI64::new(0);
/// Init's program, once started: until then a signal is kept in `FIRST` for it.
static PROGRAM: AtomicI32 = AtomicI32::new(0);

/// Milliseconds of the monotonic clock; `clock_gettime` is async-signal-safe.
fn now_ms() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a timespec of its own type.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec * 1000 + now.tv_nsec / 1_000_000
}

/// Runs `f` with `errno` as it was: a handler must not change it under the code it interrupted.
fn keeping_errno(f: impl FnOnce()) {
    // SAFETY: the calling thread's errno, read and written back.
    unsafe {
        let errno = *libc::__errno_location();
        f();
        *libc::__errno_location() = errno;
    }
}

extern "C" fn pass_on(sig: libc::c_int) {
    keeping_errno(|| {
        let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let now = now_ms();
        let last = LAST_MS.swap(now, Ordering::SeqCst);
        let target = TARGET.load(Ordering::SeqCst);
        if target == 0 {
            return;
        }
        let forced = last != 0 && now - last < FORCE_WINDOW_MS;
        // SAFETY: kill is async-signal-safe; a target that is gone makes it fail, harmlessly.
        unsafe { libc::kill(target, if forced { libc::SIGKILL } else { sig }) };
    });
}

extern "C" fn pass_on_job_control(sig: libc::c_int) {
    keeping_errno(|| {
        let target = TARGET.load(Ordering::SeqCst);
        // SAFETY: kill and getpid are async-signal-safe.
        unsafe {
            if target != 0 {
                libc::kill(target, sig);
            }
            // blast, not the helper: a shell waits for its job to stop.
            if sig == libc::SIGTSTP && target < 0 {
                libc::kill(libc::getpid(), libc::SIGSTOP);
            }
        }
    });
}

extern "C" fn stop_or_continue_everyone_else(sig: libc::c_int) {
    keeping_errno(|| {
        let sent = if sig == libc::SIGTSTP {
            libc::SIGSTOP
        } else {
            sig
        };
        // SAFETY: from the pid namespace's init, -1 reaches every other process of the namespace.
        unsafe { libc::kill(-1, sent) };
    });
}

extern "C" fn to_everyone_else(sig: libc::c_int) {
    keeping_errno(|| {
        if PROGRAM.load(Ordering::SeqCst) == 0 {
            let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        // SAFETY: from the pid namespace's init, -1 reaches every other process of the namespace.
        unsafe { libc::kill(-1, sig) };
    });
}

/// Installs `handler` for those of `signals` not inherited as ignored; returns what it replaced.
fn install(signals: &[Signal], handler: extern "C" fn(libc::c_int)) -> Vec<(Signal, SigAction)> {
    // Restarted, so the wait for the child goes on after the handler ran.
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let mut replaced = Vec::new();
    for &signal in signals {
        // SAFETY: the handlers only touch atomics and call kill and clock_gettime, all
        // async-signal-safe.
        let Ok(previous) = (unsafe { sigaction(signal, &action) }) else {
            continue;
        };
        if matches!(previous.handler(), SigHandler::SigIgn) {
            // SAFETY: puts back the inherited SIG_IGN.
            let _ = unsafe { sigaction(signal, &previous) };
        } else {
            replaced.push((signal, previous));
        }
    }
    replaced
}

fn passed_on() -> SigSet {
    PASSED_ON.into_iter().chain(JOB_CONTROL).collect()
}

/// blast's link: signals passed on to the child's process group while this lives; the previous
/// dispositions are put back when dropped.
pub(super) struct Forwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl Forwarding {
    pub(super) fn start() -> Forwarding {
        TARGET.store(0, Ordering::SeqCst);
        FIRST.store(0, Ordering::SeqCst);
        LAST_MS.store(0, Ordering::SeqCst);
        let mut previous = install(&PASSED_ON, pass_on);
        previous.extend(install(&JOB_CONTROL, pass_on_job_control));
        Forwarding { previous }
    }

    /// The child is started, in a process group of its own: a signal that came before is passed on now.
    pub(super) fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        TARGET.store(-pid, Ordering::SeqCst);
        let first = FIRST.load(Ordering::SeqCst);
        if first != 0 {
            // SAFETY: signals our own child's group.
            unsafe { libc::kill(-pid, first) };
        }
    }

    /// The child is gone (reaped, or about to be): its pid may be anyone's next.
    pub(super) fn child_ended(&self) {
        TARGET.store(0, Ordering::SeqCst);
    }

    /// The first signal blast got meanwhile, if any: an install counts as interrupted by it, whatever
    /// the installer made of it (pip exits 1 on KeyboardInterrupt).
    pub(super) fn received(&self) -> Option<i32> {
        Some(FIRST.load(Ordering::SeqCst)).filter(|&sig| sig != 0)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        TARGET.store(0, Ordering::SeqCst);
        for (signal, previous) in &self.previous {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(*signal, previous) };
        }
    }
}

/// The helper, first thing: the signals wait, blocked, until a link is there to pass them on (they
/// stay blocked in init, which the helper forks, until init's own link is there).
pub(super) fn hold() {
    let _ = passed_on().thread_block();
}

/// The helper's link, for the rest of its life: every signal goes on to the sandbox's init. Those that
/// came while they were held go on now.
pub(super) fn pass_on_to_init(init: i32) {
    TARGET.store(init, Ordering::SeqCst);
    install(&PASSED_ON, pass_on);
    install(&JOB_CONTROL, pass_on_job_control);
    let _ = passed_on().thread_unblock();
}

/// Init's link, for the rest of its life: every signal goes on to the rest of the pid namespace. Init
/// must handle them to get them at all: the kernel drops a signal that a namespace's init leaves at its
/// default disposition. One that came before the program started is kept for it ([`program_started`]).
pub(super) fn pass_on_to_namespace() {
    install(&PASSED_ON, to_everyone_else);
    install(&JOB_CONTROL, stop_or_continue_everyone_else);
    let _ = passed_on().thread_unblock();
}

/// Init has started its program: a signal kept for it goes to it now.
pub(super) fn program_started(pid: i32) {
    PROGRAM.store(pid, Ordering::SeqCst);
    let first = FIRST.swap(0, Ordering::SeqCst);
    if first != 0 {
        // SAFETY: signals init's own child.
        unsafe { libc::kill(pid, first) };
    }
}
