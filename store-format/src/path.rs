//! Paths inside an environment: relative, normalized, UTF-8, never escaping.

/// Why a string is not a valid path inside an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path `{0}` is absolute")]
    Absolute(String),
    #[error("path `{0}` has an empty, `.` or `..` component")]
    NotNormal(String),
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
    #[error("path of {0} bytes is longer than 4096")]
    TooLong(usize),
}

/// Longest path accepted, matching Linux's PATH_MAX.
pub const MAX_PATH_LEN: usize = 4096;

/// Checks that `path` is a normalized relative path: `/`-separated components, none empty, `.` or `..`.
pub fn validate_rel_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(PathError::NotNormal(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths_only() {
        assert!(validate_rel_path("lib/python3.11/site-packages/a.py").is_ok());
        assert!(validate_rel_path("a..b/.c").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(validate_rel_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_rel_path(&"a".repeat(4097)).is_err());
    }
}
