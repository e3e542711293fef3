//! `blast imports`: the import-tracking hook of an environment switched on or off, and what its
//! records say (see [`crate::imports`]).

use crate::error::Result;
use crate::imports::{self, ImportsReport, Tracking};
use crate::store::Store;

/// What the environment's records say about its installed distributions.
pub fn imports(store: &Store, selector: Option<&str>) -> Result<ImportsReport> {
    let env = store.open_env(selector)?;
    imports::report(store, &env)
}

/// Puts the hook into the environment (`enable`) or takes it out.
pub fn track_imports(store: &Store, selector: Option<&str>, enable: bool) -> Result<Tracking> {
    let env = store.open_env(selector)?;
    if enable {
        imports::enable_tracking(store, &env)
    } else {
        imports::disable_tracking(store, &env)
    }
}
