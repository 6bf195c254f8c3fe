//! One writer per cache folder: an exclusive lock on `CACHE/NAME/.lock`, taken by
//! `extract` for a run or a merge and by `analyze index` while it adds the sidecar.
//!
//! The lock is the operating system's (`File::try_lock`, flock on Unix), so it
//! dies with its process: a run killed by SIGKILL, the OOM killer or a scheduler's
//! preemption never blocks the next one. The file itself stays (removing it would
//! let two later runs lock two different files) and holds the holder's pid, host
//! and start time, for the second writer's message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::CacheError;

pub const LOCK_FILE: &str = ".lock";
/// The cache root's lock, held while the root card (`root_card.rs`) is rewritten.
pub const ROOT_LOCK_FILE: &str = ".root.lock";

/// Held for the whole run; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    pub path: PathBuf,
}

impl CacheLock {
    /// Creates `cache_dir` if needed and locks it, or refuses at once naming the holder.
    pub fn acquire(cache_dir: &Path) -> Result<CacheLock, CacheError> {
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| CacheError::new(cache_dir, format!("cannot create: {e}")))?;
        let path = cache_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CacheError::new(&path, format!("cannot open: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(CacheError::new(
                    cache_dir,
                    format!("another extract (or analyze index) is writing this cache ({}); wait for it to finish (rerun then to resume or confirm), or pick another --name",
                    if holder.is_empty() { "holder unknown: it has just started" } else { holder }),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(CacheError::new(&path, format!("cannot lock ({e}); on a network file system, make sure it supports flock, or write the cache to a local disk")));
            }
        }
        let holder = format!(
            "pid {} on {}, started {}",
            std::process::id(),
            host_name(),
            chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|e| CacheError::new(&path, format!("cannot write: {e}")))?;
        Ok(CacheLock { _file: file, path })
    }

    /// Locks the cache root `root` (which must exist), waiting for another holder:
    /// the root card is rewritten in a moment, and the writers of a job array's
    /// caches finish at nearly the same time.
    pub fn root(root: &Path) -> Result<CacheLock, CacheError> {
        let path = root.join(ROOT_LOCK_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CacheError::new(&path, format!("cannot open: {e}")))?;
        file.lock().map_err(|e| {
            CacheError::new(
                &path,
                format!("cannot lock ({e}); on a network file system, make sure it supports flock"),
            )
        })?;
        Ok(CacheLock { _file: file, path })
    }
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let first = CacheLock::acquire(&dir).unwrap();
        let err = CacheLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("another extract"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        // released with its holder
        CacheLock::acquire(&dir).unwrap();
    }
}
