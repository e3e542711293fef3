//! SIGINT, SIGTERM, SIGHUP and SIGQUIT while a program runs for blast: they reach the program, which may
//! clean up and end as it likes, and blast stays to clean up after. Three links pass them on:
//!
//! - blast, while it waits on its child (the sandbox helper, or an unconfined installer), which it
//!   starts in a process group of its own: every such signal blast gets (Ctrl-C at the terminal, `kill`,
//!   `timeout`, an IDE's stop button, one sent to blast's whole group) goes on to the child's group once.
//! - the helper, to the sandbox's init: the sandbox runs in a session of its own.
//! - init, to every other process of the sandbox's pid namespace, as a terminal signals a whole process
//!   group (pip and the build backend it runs both see Ctrl-C).
//!
//! One event often arrives as several copies: `timeout` signals blast and then its whole group, a
//! service manager signals every process of the service. A link drops an ending signal that comes
//! within [`DUPLICATE_MS`] of the same one it passed on before, so a cleanup is not interrupted by its
//! own cause. For an install, a later one within [`FORCE_WINDOW_MS`] (Ctrl-C pressed twice: a pip that
//! hangs) makes blast send SIGKILL instead, which ends the sandbox with its init. `blast run` passes
//! every one on, as the command run directly would get them: a REPL takes Ctrl-C after Ctrl-C.
//!
//! A signal blast inherited as ignored (`nohup`, a script's background job) stays ignored, for blast and
//! for what it starts. Otherwise the programs start with the default dispositions: exec resets handled
//! signals, and a program started with them held (init's, an unconfined installer) gets them back,
//! unblocked, just before its exec.
//!
//! Ctrl-Z and `fg` (SIGTSTP, SIGCONT) go the same way, and blast stops itself once it passed SIGTSTP on:
//! init stops the rest of the namespace with SIGSTOP, which reaches every process there, those in
//! groups of their own and those that handle or ignore SIGTSTP too, and continues it with SIGCONT. blast takes SIGTSTP only as its terminal's
//! foreground job, started by a shell with job control: otherwise it is dropped, as the kernel drops it
//! for an orphaned group, since nobody might ever continue a blast that holds the store's locks. The
//! program runs in a process group of its own below init, which is not orphaned: one that stops itself
//! (vim on Ctrl-Z, which it reads as a key) stops at once, as at a terminal. Init sees it stop, stops the
//! rest of the sandbox and tells blast, which then stops as for Ctrl-Z, or continues the sandbox where
//! it would not stop.
//!
//! Notices end nothing and go the same way, never dropped nor counted: SIGWINCH (the terminal was
//! resized) to the whole namespace, as a terminal sends it to its foreground group, so a REPL or a
//! full-screen program redraws; SIGUSR1 and SIGUSR2 to the program alone, as `kill PID` sends them (a
//! server's "reopen your logs" or "reload").

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signals passed on that ask the program to end.
const PASSED_ON: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
/// Stop and continue: passed on too, never counted towards forcing.
const JOB_CONTROL: [Signal; 2] = [Signal::SIGTSTP, Signal::SIGCONT];
/// Passed on, never dropped nor counted towards forcing nor as an interruption.
const NOTICES: [Signal; 3] = [Signal::SIGWINCH, Signal::SIGUSR1, Signal::SIGUSR2];

/// An ending signal this soon after the one passed on before is a copy of it, and dropped.
pub(super) const DUPLICATE_MS: i64 = 250;
/// For an install, an ending signal this soon after the one before (and not a copy) forces the end.
pub(super) const FORCE_WINDOW_MS: i64 = 3000;

/// Where signals go: the process group (blast's link) or process (the helper's) of the child; 0 while
/// there is none yet.
static TARGET: AtomicI32 = AtomicI32::new(0);
/// The first ending signal received since the forwarding started (blast's link), or one init got before
/// its program existed.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// An ending signal blast got before its child existed, until one side passes it on (blast's link).
static PENDING: AtomicI32 = AtomicI32::new(0);
/// When an ending signal was last passed on, in milliseconds of the monotonic clock (0: none yet),
/// and which.
static LAST_MS: AtomicI64 = AtomicI64::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether a second ending signal within the window sends SIGKILL (blast's link, for an install).
static FORCING: AtomicBool = AtomicBool::new(false);
/// Init's program, once started: until then a signal is kept in `FIRST` for it.
static PROGRAM: AtomicI32 = AtomicI32::new(0);
/// Whether blast may stop itself for Ctrl-Z ([`has_job_control_parent`], asked when it starts passing
/// signals on).
static STOPPABLE: AtomicBool = AtomicBool::new(false);
/// What blast sends its child's group for SIGTSTP: SIGSTOP for a child in a session of its own, whose
/// orphaned group the kernel would not stop with SIGTSTP.
static STOP_WITH: AtomicI32 = AtomicI32::new(libc::SIGTSTP);

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

/// What a link does with an ending signal.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A copy of the one passed on before: dropped.
    Copy,
    PassOn,
    /// SIGKILL instead.
    Force,
}

/// The verdict on an ending signal `since` milliseconds after the one passed on before (`None`: the
/// first), which was the same signal or not.
fn verdict(since: Option<i64>, same: bool, forcing: bool) -> Verdict {
    match since {
        Some(ms) if same && ms < DUPLICATE_MS => Verdict::Copy,
        Some(ms) if forcing && ms < FORCE_WINDOW_MS => Verdict::Force,
        _ => Verdict::PassOn,
    }
}

/// The verdict on ending signal `sig` coming now, which is remembered unless it is a copy.
fn judge_ending(sig: libc::c_int) -> Verdict {
    let last = LAST_MS.load(Ordering::SeqCst);
    let same = LAST_SIGNAL.load(Ordering::SeqCst) == sig;
    let since = (last != 0).then(|| now_ms() - last);
    let verdict = verdict(since, same, FORCING.load(Ordering::SeqCst));
    if verdict != Verdict::Copy {
        passed_on_now(sig);
    }
    verdict
}

/// Remembers that ending signal `sig` was passed on now.
fn passed_on_now(sig: libc::c_int) {
    LAST_MS.store(now_ms(), Ordering::SeqCst);
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Sends `sig` to `target`; a target that is gone makes it fail, harmlessly.
fn send(target: i32, sig: libc::c_int) {
    // SAFETY: kill is async-signal-safe.
    unsafe { libc::kill(target, sig) };
}

extern "C" fn pass_on(sig: libc::c_int) {
    keeping_errno(|| {
        let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let target = TARGET.load(Ordering::SeqCst);
        if target == 0 {
            // Kept for the child; if it was started meanwhile, whichever side takes it passes it on.
            let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            let target = TARGET.load(Ordering::SeqCst);
            if target != 0 {
                let pending = PENDING.swap(0, Ordering::SeqCst);
                if pending != 0 {
                    send(target, pending);
                }
            }
            return;
        }
        match judge_ending(sig) {
            Verdict::Copy => {}
            Verdict::PassOn => send(target, sig),
            Verdict::Force => send(target, libc::SIGKILL),
        }
    });
}

/// Whether this process's group owns its controlling terminal (found through the standard descriptors,
/// else `/dev/tty`): Ctrl-Z at that terminal is for it.
fn is_foreground_job() -> bool {
    // SAFETY: tcgetpgrp, getpgrp, open and close are async-signal-safe; a descriptor that is not the
    // controlling terminal fails.
    unsafe {
        let owns = |fd| {
            let owner = libc::tcgetpgrp(fd);
            owner > 0 && owner == libc::getpgrp()
        };
        if (0..3).any(owns) {
            return true;
        }
        let tty = libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if tty < 0 {
            return false;
        }
        let owned = owns(tty);
        libc::close(tty);
        owned
    }
}

/// Whether a stopped blast would be seen and continued: its parent, in its session but in another
/// process group, is a shell with job control. Otherwise its group is orphaned, where the kernel
/// drops SIGTSTP too (`sh -c`, `ssh -t host blast …`, a session of its own).
fn has_job_control_parent() -> bool {
    // SAFETY: getppid, getpgid, getsid and getpgrp only read process attributes.
    unsafe {
        let parent = libc::getppid();
        let group = libc::getpgid(parent);
        group > 0 && group != libc::getpgrp() && libc::getsid(parent) == libc::getsid(0)
    }
}

extern "C" fn pass_on_job_control(sig: libc::c_int) {
    keeping_errno(|| {
        let target = TARGET.load(Ordering::SeqCst);
        // blast's link: its child's group; the helper's: init.
        let blast = target <= 0;
        if sig == libc::SIGTSTP
            && blast
            && !(STOPPABLE.load(Ordering::SeqCst) && is_foreground_job())
        {
            return;
        }
        if target != 0 {
            let sent = match (sig, blast) {
                (libc::SIGTSTP, true) => STOP_WITH.load(Ordering::SeqCst),
                _ => sig,
            };
            send(target, sent);
        }
        // blast, not the helper: a shell waits for its job to stop.
        if sig == libc::SIGTSTP && blast {
            // SAFETY: getpid is async-signal-safe.
            send(unsafe { libc::getpid() }, libc::SIGSTOP);
        }
    });
}

extern "C" fn pass_on_notice(sig: libc::c_int) {
    keeping_errno(|| {
        let target = TARGET.load(Ordering::SeqCst);
        if target != 0 {
            send(target, sig);
        }
    });
}

extern "C" fn notice_in_namespace(sig: libc::c_int) {
    keeping_errno(|| {
        // From the pid namespace's init, -1 reaches every other process of the namespace.
        let target = match sig {
            libc::SIGWINCH => -1,
            _ => PROGRAM.load(Ordering::SeqCst),
        };
        if target != 0 {
            send(target, sig);
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
        send(-1, sent);
    });
}

/// blast's answer to a program that stopped itself (vim and less stop their group on Ctrl-Z, which they
/// read as a key; a shell's `suspend`), which init stopped the rest of the sandbox for: blast stops too
/// when a shell would see it and continue it, as for Ctrl-Z; otherwise the sandbox goes on at once, as
/// the kernel drops such a stop in a group nobody would continue.
pub(super) fn program_stopped_itself() {
    if STOPPABLE.load(Ordering::SeqCst) && is_foreground_job() {
        // SAFETY: getpid only reads.
        send(unsafe { libc::getpid() }, libc::SIGSTOP);
    } else {
        let target = TARGET.load(Ordering::SeqCst);
        if target != 0 {
            send(target, libc::SIGCONT);
        }
    }
}

extern "C" fn to_everyone_else(sig: libc::c_int) {
    keeping_errno(|| {
        if PROGRAM.load(Ordering::SeqCst) == 0 {
            let _ = FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        if judge_ending(sig) != Verdict::Copy {
            send(-1, sig);
        }
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
        // SAFETY: the handlers only touch atomics and call kill, clock_gettime, tcgetpgrp, getpgrp
        // and getpid, all async-signal-safe.
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
    PASSED_ON
        .into_iter()
        .chain(JOB_CONTROL)
        .chain(NOTICES)
        .collect()
}

/// The child blast passes signals on to.
pub(super) enum Child {
    /// The sandbox's helper, which passes them on in turn; with `forcing`, a second ending signal
    /// within [`FORCE_WINDOW_MS`] sends SIGKILL.
    Helper { forcing: bool },
    /// An unconfined installer, in a session of its own (so that nothing it runs can prompt at the
    /// terminal), with forcing.
    Installer,
}

/// blast's link: signals passed on to the child's process group while this lives; the previous
/// dispositions are put back when dropped.
pub(super) struct Forwarding {
    previous: Vec<(Signal, SigAction)>,
}

impl Forwarding {
    pub(super) fn start(child: Child) -> Forwarding {
        let (forcing, stop_with) = match child {
            Child::Helper { forcing } => (forcing, libc::SIGTSTP),
            Child::Installer => (true, libc::SIGSTOP),
        };
        TARGET.store(0, Ordering::SeqCst);
        FIRST.store(0, Ordering::SeqCst);
        PENDING.store(0, Ordering::SeqCst);
        LAST_MS.store(0, Ordering::SeqCst);
        LAST_SIGNAL.store(0, Ordering::SeqCst);
        FORCING.store(forcing, Ordering::SeqCst);
        STOP_WITH.store(stop_with, Ordering::SeqCst);
        STOPPABLE.store(has_job_control_parent(), Ordering::SeqCst);
        let mut previous = install(&PASSED_ON, pass_on);
        previous.extend(install(&JOB_CONTROL, pass_on_job_control));
        previous.extend(install(&NOTICES, pass_on_notice));
        // A signal a latch noted before (while blast set the run up) goes to the child at its start;
        // read once these handlers take new ones, so none falls between the two.
        let noted = LATCHED.load(Ordering::SeqCst);
        if noted != 0 {
            let _ = FIRST.compare_exchange(0, noted, Ordering::SeqCst, Ordering::SeqCst);
            let _ = PENDING.compare_exchange(0, noted, Ordering::SeqCst, Ordering::SeqCst);
        }
        Forwarding { previous }
    }

    /// Holds the signals on this thread while blast starts its child: between the child's fork and
    /// its exec, blast's handlers would take one sent to it, and lose it. The child starts with them
    /// held: the helper holds them anyway, an unconfined installer lets them go in its `pre_exec`
    /// ([`defaults_for_program`]). Those that come meanwhile go on once the hold is dropped.
    pub(super) fn hold_for_spawn(&self) -> SpawnHold {
        let mut previous = SigSet::empty();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&passed_on()),
            Some(&mut previous),
        );
        SpawnHold { previous }
    }

    /// The child is started, in a process group of its own: a signal that came before goes on now.
    pub(super) fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        TARGET.store(-pid, Ordering::SeqCst);
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if pending != 0 {
            passed_on_now(pending);
            send(-pid, pending);
        }
    }

    /// The child is gone (reaped, or about to be): its pid may be anyone's next.
    pub(super) fn child_ended(&self) {
        TARGET.store(0, Ordering::SeqCst);
    }

    /// The first ending signal blast got meanwhile, if any: an install counts as interrupted by it,
    /// whatever the installer made of it (pip exits 1 on KeyboardInterrupt).
    pub(super) fn received(&self) -> Option<i32> {
        Some(FIRST.load(Ordering::SeqCst)).filter(|&sig| sig != 0)
    }
}

/// The first ending signal since the outermost [`Latch`] was set, and when it came (monotonic ms).
static LATCHED: AtomicI32 = AtomicI32::new(0);
static LATCHED_MS: AtomicI64 = AtomicI64::new(0);
/// How many latches are set: one set inside another (an install's, inside the command's that prints its
/// report) keeps what the outer one noted.
static LATCHES: AtomicUsize = AtomicUsize::new(0);

/// Around a program blast runs and the commit of what it did (an install): an ending signal that comes
/// while no program runs is noted, not obeyed, so blast can stop where stopping changes nothing (before
/// HEAD moves), or finish a move it began, instead of dying with its work half done. While a program
/// runs, [`Forwarding`] takes the signals (one noted before goes to the program at its start), and
/// gives them back to the latch after. A second noted one ends blast as it would have (a move killed
/// midway is finished by the next command), but for a copy of the first within [`DUPLICATE_MS`]
/// (`timeout` signals blast, then its whole group). An inherited SIG_IGN stays. The dispositions before
/// are put back when dropped.
pub struct Latch {
    previous: Vec<(Signal, SigAction)>,
}

impl Latch {
    pub fn set() -> Latch {
        if LATCHES.fetch_add(1, Ordering::SeqCst) == 0 {
            LATCHED.store(0, Ordering::SeqCst);
            LATCHED_MS.store(0, Ordering::SeqCst);
        }
        Latch {
            previous: install(&PASSED_ON, note),
        }
    }

    /// The first ending signal that came while no program ran, if any.
    pub fn received(&self) -> Option<i32> {
        Self::noted()
    }

    /// As [`Latch::received`], for code that holds no latch itself: what a latch set around it noted
    /// (a wait for a lock gives up on it), or nothing when none is set.
    pub fn noted() -> Option<i32> {
        Some(LATCHED.load(Ordering::SeqCst))
            .filter(|&sig| sig != 0 && LATCHES.load(Ordering::SeqCst) > 0)
    }
}

impl Drop for Latch {
    fn drop(&mut self) {
        for (signal, previous) in &self.previous {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(*signal, previous) };
        }
        if LATCHES.fetch_sub(1, Ordering::SeqCst) == 1 {
            LATCHED.store(0, Ordering::SeqCst);
        }
    }
}

extern "C" fn note(sig: libc::c_int) {
    keeping_errno(|| {
        let now = now_ms();
        // The time first: a copy handled on another thread meanwhile finds it.
        let _ = LATCHED_MS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        let first = match LATCHED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return,
            Err(first) => first,
        };
        if first == sig && now - LATCHED_MS.load(Ordering::SeqCst) < DUPLICATE_MS {
            return;
        }
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    });
}

/// The signals held on this thread while blast starts its child ([`Forwarding::hold_for_spawn`]).
pub(super) struct SpawnHold {
    previous: SigSet,
}

impl Drop for SpawnHold {
    fn drop(&mut self) {
        let _ = self.previous.thread_set_mask();
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

/// The signals wait, blocked, until a link is there to pass them on: the helper's first thing (they
/// stay blocked in init, which the helper forks, until init's own link is there), and init's around
/// the fork of its program.
pub(super) fn hold() {
    let _ = passed_on().thread_block();
}

/// The helper's link, for the rest of its life: every signal goes on to the sandbox's init. Those that
/// came while they were held go on now. Forcing is blast's: the helper passes on what comes.
pub(super) fn pass_on_to_init(init: i32) {
    TARGET.store(init, Ordering::SeqCst);
    FORCING.store(false, Ordering::SeqCst);
    install(&PASSED_ON, pass_on);
    install(&JOB_CONTROL, pass_on_job_control);
    install(&NOTICES, pass_on_notice);
    let _ = passed_on().thread_unblock();
}

/// Init's link, for the rest of its life: every signal goes on to the rest of the pid namespace. Init
/// must handle them to get them at all: the kernel drops a signal that a namespace's init leaves at its
/// default disposition. One that came before the program started is kept for it ([`program_started`]).
pub(super) fn pass_on_to_namespace() {
    install(&PASSED_ON, to_everyone_else);
    install(&JOB_CONTROL, stop_or_continue_everyone_else);
    install(&NOTICES, notice_in_namespace);
    let _ = passed_on().thread_unblock();
}

/// In a program started with the signals held (init's, blast's unconfined installer), between fork and
/// exec: the default dispositions (an inherited SIG_IGN stays), then the signals that came meanwhile,
/// which end it as they would have ended the program. Async-signal-safe: sigaction and sigprocmask.
pub(super) fn defaults_for_program() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in passed_on().iter() {
        // SAFETY: sets this process's own dispositions; it is single-threaded.
        if let Ok(previous) = unsafe { sigaction(signal, &default) }
            && matches!(previous.handler(), SigHandler::SigIgn)
        {
            // SAFETY: as above.
            let _ = unsafe { sigaction(signal, &previous) };
        }
    }
    let _ = passed_on().thread_unblock();
}

/// Init has started its program, with the signals held since before the fork: they are passed on
/// again, and one kept for the program goes to it now.
pub(super) fn program_started(pid: i32) {
    PROGRAM.store(pid, Ordering::SeqCst);
    let first = FIRST.swap(0, Ordering::SeqCst);
    let _ = passed_on().thread_unblock();
    if first != 0 {
        passed_on_now(first);
        send(pid, first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_one_signal_are_dropped_and_a_second_forces_only_where_forcing_is_on() {
        for forcing in [false, true] {
            assert_eq!(verdict(None, false, forcing), Verdict::PassOn);
            assert_eq!(verdict(Some(0), true, forcing), Verdict::Copy);
            assert_eq!(
                verdict(Some(DUPLICATE_MS - 1), true, forcing),
                Verdict::Copy
            );
            assert_eq!(
                verdict(Some(FORCE_WINDOW_MS), true, forcing),
                Verdict::PassOn
            );
        }
        assert_eq!(verdict(Some(DUPLICATE_MS), true, true), Verdict::Force);
        assert_eq!(
            verdict(Some(FORCE_WINDOW_MS - 1), true, true),
            Verdict::Force
        );
        assert_eq!(verdict(Some(DUPLICATE_MS), true, false), Verdict::PassOn);
        assert_eq!(
            verdict(Some(FORCE_WINDOW_MS - 1), true, false),
            Verdict::PassOn
        );
        // Another signal is never a copy: SIGTERM then SIGHUP (a service manager's stop) both go on,
        // and for an install the second forces.
        assert_eq!(verdict(Some(0), false, false), Verdict::PassOn);
        assert_eq!(verdict(Some(0), false, true), Verdict::Force);
    }
}
