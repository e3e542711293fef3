//! Small filesystem helpers that tolerate what a crash or a concurrent process may leave behind.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Removes a file, directory tree or symlink; a path that is already gone is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("inspecting", path),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).at("removing", path),
        _ => Ok(()),
    }
}

pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e).at("removing", path),
        _ => Ok(()),
    }
}
