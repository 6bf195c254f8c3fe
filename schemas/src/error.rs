//! `CacheError`: every refusal names the file and the problem.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a cache file cannot be used: always names the file, so the user knows
/// which one to regenerate or inspect.
#[derive(Debug)]
pub struct CacheError {
    pub path: PathBuf,
    pub problem: String,
}

impl CacheError {
    pub fn new(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for CacheError {}
