//! Named points for the crash-safety tests: when `BLAST_TEST_CRASH_AT` names a point, the process kills
//! itself with SIGKILL on reaching it, exactly as a power cut or `kill -9` would stop it there; when
//! `BLAST_TEST_INTERRUPT_AT` names it, the thread that reaches it raises SIGINT, as Ctrl-C pressed at
//! that moment would, which blast must take as it takes one from its user.

use std::sync::OnceLock;

use nix::sys::signal::Signal;

pub fn point(name: &str) {
    static TARGETS: OnceLock<[Option<String>; 2]> = OnceLock::new();
    let [crash, interrupt] = TARGETS.get_or_init(|| {
        ["BLAST_TEST_CRASH_AT", "BLAST_TEST_INTERRUPT_AT"].map(|var| std::env::var(var).ok())
    });
    if crash.as_deref() == Some(name) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGKILL);
    }
    if interrupt.as_deref() == Some(name) {
        let _ = nix::sys::signal::raise(Signal::SIGINT);
    }
}
