//! Named crash points for the crash-safety tests: when `BLAST_TEST_CRASH_AT` names a point, the process
//! kills itself with SIGKILL on reaching it, exactly as a power cut or `kill -9` would stop it there.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("BLAST_TEST_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
