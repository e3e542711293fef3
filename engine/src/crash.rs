//! Named points for the crash-safety tests: when `BLAST_TEST_CRASH_AT` names a point, the process kills
//! itself with SIGKILL on reaching it, exactly as a power cut or `kill -9` would stop it there; when
//! `BLAST_TEST_INTERRUPT_AT` names it, the thread that reaches it raises SIGINT, as Ctrl-C pressed at
//! that moment would, which blast must take as it takes one from its user; when `BLAST_TEST_STOP_AT`
//! names it, the process stops itself (SIGSTOP) there, for a test to run another process meanwhile and
//! let it go on with SIGCONT.

use std::sync::OnceLock;

use nix::sys::signal::Signal;

pub fn point(name: &str) {
    static TARGETS: OnceLock<[Option<String>; 3]> = OnceLock::new();
    let [crash, interrupt, stop] = TARGETS.get_or_init(|| {
        [
            "BLAST_TEST_CRASH_AT",
            "BLAST_TEST_INTERRUPT_AT",
            "BLAST_TEST_STOP_AT",
        ]
        .map(|var| std::env::var(var).ok())
    });
    if crash.as_deref() == Some(name) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGKILL);
    }
    if interrupt.as_deref() == Some(name) {
        let _ = nix::sys::signal::raise(Signal::SIGINT);
    }
    if stop.as_deref() == Some(name) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGSTOP);
    }
}
