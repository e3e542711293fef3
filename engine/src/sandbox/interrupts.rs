//! SIGINT while blast waits on a child (the sandbox helper, or an unconfined installer): blast stays to
//! clean up after, and the interrupt goes on to the child. A Ctrl-C at a terminal reaches both anyway,
//! through the foreground process group; `kill -INT` of blast alone (an IDE's stop button, `timeout -s
//! INT`) now ends the run too, where ignoring it left the installer running. The child starts with the
//! default disposition: exec resets a handled signal, and the handler replaced whatever blast inherited
//! (a shell starts background jobs with SIGINT ignored, which exec would keep).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The child blast waits on; 0 while there is none yet.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Whether blast got SIGINT since [`Forwarding::start`].
static RECEIVED: AtomicBool = AtomicBool::new(false);

extern "C" fn forward(_: libc::c_int) {
    RECEIVED.store(true, Ordering::SeqCst);
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe; a child that is gone already makes it fail, harmlessly.
        unsafe { libc::kill(child, libc::SIGINT) };
    }
}

/// SIGINT forwarded to the child while this lives; the previous disposition is put back when dropped.
pub(super) struct Forwarding {
    previous: Option<SigAction>,
}

impl Forwarding {
    pub(super) fn start() -> Forwarding {
        CHILD.store(0, Ordering::SeqCst);
        RECEIVED.store(false, Ordering::SeqCst);
        // Restarted, so the wait for the child goes on after the handler ran.
        let action = SigAction::new(
            SigHandler::Handler(forward),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only touches atomics and calls kill, both async-signal-safe.
        let previous = unsafe { sigaction(Signal::SIGINT, &action) }.ok();
        Forwarding { previous }
    }

    /// The child is started: an interrupt that came before it existed is passed on now.
    pub(super) fn child_started(&self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else {
            return;
        };
        CHILD.store(pid, Ordering::SeqCst);
        if RECEIVED.load(Ordering::SeqCst) {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
    }

    /// Whether blast was interrupted meanwhile: the run counts as interrupted whatever the child made of
    /// the signal (pip catches it and exits 1; a build backend may ignore it and finish).
    pub(super) fn received(&self) -> bool {
        RECEIVED.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        CHILD.store(0, Ordering::SeqCst);
        if let Some(previous) = &self.previous {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(Signal::SIGINT, previous) };
        }
    }
}
