//! The statements digest (`dataset.statements_sha256`): sha256, in hex, over the
//! statements in `statement_id` order of the UTF-8 bytes `"{statement_id}\t{text}\n"`.
//! `extract` records it; recomputing it here catches a `statements.parquet` swapped
//! in from another run even when its file hash in the manifest was made to match.

use std::path::Path;

use anyhow::{bail, Result};

/// [`schemas::statements_digest`] of `(statement_id, text)` rows, sorted by id
/// first so that the file's row order does not matter.
pub fn digest_in_id_order(rows: &[(u32, &str)]) -> String {
    let mut sorted: Vec<(u32, &str)> = rows.to_vec();
    sorted.sort_by_key(|(id, _)| *id);
    schemas::statements_digest(sorted)
}

/// Compares the digest of the rows with the manifest's `recorded` one; older
/// caches record none and are not checked.
pub fn check(statements: &Path, recorded: Option<&str>, rows: &[(u32, &str)]) -> Result<()> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    let found = digest_in_id_order(rows);
    if !found.eq_ignore_ascii_case(recorded) {
        bail!(
            "{}: its (statement_id, text) digest is {found} but manifest.json records dataset.statements_sha256 {recorded}: the file holds other statements than this cache was extracted from; re-run extract for this model",
            statements.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        // printf '0\ta\n1\tb\n' | sha256sum
        assert_eq!(
            digest_in_id_order(&[(1, "b"), (0, "a")]),
            "a2b804b1740ccd2fc6e05d726ef2753cc62bc024e643716f632d0d01a2736de6"
        );
        // printf '0\tWater is wet\n1\tWasser ist nass \xc3\xa4\n' | sha256sum
        assert_eq!(
            digest_in_id_order(&[(0, "Water is wet"), (1, "Wasser ist nass ä")]),
            "cf950e7982cc6fe3a99d6f7dffab4ef989e0d29368e21236e74b90a293c698aa"
        );
    }

    #[test]
    fn a_mismatch_names_the_file_and_no_digest_is_skipped() {
        let p = Path::new("c/m/statements.parquet");
        let rows = [(0, "a"), (1, "b")];
        check(p, None, &rows).unwrap();
        check(
            p,
            Some("A2B804B1740CCD2FC6E05D726EF2753CC62BC024E643716F632D0D01A2736DE6"),
            &rows,
        )
        .unwrap();
        let e = check(p, Some(&"0".repeat(64)), &rows)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c/m/statements.parquet: ") && e.contains("statements_sha256"),
            "{e}"
        );
    }
}
