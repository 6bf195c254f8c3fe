//! Files as the manifest lists them: size and sha256, the statements digest, syncing a folder.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::CacheError;

/// What the manifest records of each data file, so a reader can tell a whole
/// file from a truncated or altered one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A file's content against the sha256 its manifest entry records.
pub(crate) fn check_sha256(path: &Path, sha256: &str, entry: &FileEntry) -> Result<(), CacheError> {
    if sha256 != entry.sha256 {
        return Err(CacheError::new(
            path,
            "content does not match the sha256 in manifest.json: the file or the manifest was altered",
        ));
    }
    Ok(())
}

/// The digest of a dataset's statements as a cache stores them: sha256 (hex) over
/// `"{statement_id}\t{text}\n"` for each statement in id order (UTF-8). Recorded in the
/// manifest (`dataset.statements_sha256`) and recomputed by readers.
pub fn statements_digest<'a>(statements: impl IntoIterator<Item = (u32, &'a str)>) -> String {
    let mut hasher = Sha256::new();
    for (id, text) in statements {
        hasher.update(format!("{id}\t{text}\n").as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Flushes a directory's entries (a rename into it) to disk. Without it a crash of the
/// machine, not only of the process, could lose a rename that was already reported done.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_digest_is_sha256_of_the_lines() {
        // printf '0\tHello\n1\tWorld\n' | sha256sum
        assert_eq!(
            statements_digest([(0, "Hello"), (1, "World")]),
            "09236f14af710406ec7f3e4e9d074e63b7ac69c5822b9a4e118293097e983a8c"
        );
    }
}
