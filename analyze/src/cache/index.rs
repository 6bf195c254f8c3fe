//! `analyze index`: adds the sidecar (`grams.parquet`) to caches made
//! before extract wrote them, and rebuilds a stale or damaged one, under the same
//! per-cache lock extract takes, so it never races an extraction into the folder.

use std::path::Path;

use anyhow::{anyhow, Result};
use schemas::{
    validate_cache, validate_cache_in, CacheLock, Manifest, Scope, EMBEDDINGS_FILE, GRAMS_FILE,
    GRAMS_FORMAT_VERSION, MANIFEST_FILE,
};

/// Indexes every model folder under `cache` (or the named ones); one line each.
/// Then rewrites the root card, which lists the complete model folders.
pub fn index(cache: &Path, only: Option<&[String]>) -> Result<Vec<String>> {
    let mut lines = super::discovery::model_dirs(cache, only)?
        .iter()
        .map(|(_, dir)| index_one(dir))
        .collect::<Result<Vec<_>>>()?;
    let listed = schemas::write_root_card(cache)?;
    lines.push(format!(
        "{}: lists {listed} model folders",
        cache.join(schemas::CARD_FILE).display()
    ));
    Ok(lines)
}

/// A cache whose sidecar already validates in the current format is left alone
/// (exit 0); one of an older format is upgraded where the embeddings are there to
/// compute it from (format 3 added what the centred geometry needs); otherwise the
/// rest of the cache must validate, and the sidecar is written beside it, then
/// listed by an atomic rewrite of the manifest. The embeddings are hashed once:
/// by the full validation of a listed sidecar, else by `add_sidecar` as it reads
/// them (the checks of `Scope::WithoutGrams` leave them to it).
fn index_one(dir: &Path) -> Result<String> {
    // A stray folder in the root gets no lock file and does not stop the others.
    if !dir.join(MANIFEST_FILE).exists() {
        return Ok(format!(
            "{}: skipped, not a model cache (no {MANIFEST_FILE})",
            dir.display()
        ));
    }
    let _lock = CacheLock::acquire(dir)?;
    let base = validate_cache_in(dir, Scope::WithoutGrams).map_err(|e| anyhow!("{e}"))?;
    let on_disk = Manifest::read(&dir.join(MANIFEST_FILE))?;
    let listed = on_disk.grams.is_some() || on_disk.files.contains_key(GRAMS_FILE);
    let format = on_disk.grams.as_ref().map(|g| g.format_version);
    let replaced = match listed.then(|| validate_cache(dir)) {
        Some(Ok(_))
            if format >= Some(GRAMS_FORMAT_VERSION)
                || !on_disk.files.contains_key(EMBEDDINGS_FILE) =>
        {
            return Ok(format!(
                "{}: already indexed ({GRAMS_FILE} matches its embeddings); nothing to do",
                dir.display()
            ))
        }
        Some(Ok(_)) => Some(format!(
            "format {} upgraded to {GRAMS_FORMAT_VERSION}",
            format.unwrap_or(0)
        )),
        Some(Err(e)) => Some(format!("replacing one that was refused: {e}")),
        None => None,
    };
    schemas::remove_temp_files(dir)?;
    let mut manifest = base.manifest;
    schemas::add_sidecar(dir, &mut manifest)?;
    // The card names the sidecar's config now; an older cache gets its first card.
    schemas::write_card(dir, &mut manifest)?;
    schemas::write_manifest(&dir.join(MANIFEST_FILE), &manifest)?;
    let bytes = manifest.files[GRAMS_FILE].bytes;
    Ok(match replaced {
        None => format!("{}: wrote {GRAMS_FILE} ({bytes} bytes)", dir.display()),
        Some(why) => format!(
            "{}: rebuilt {GRAMS_FILE} ({bytes} bytes), {why}",
            dir.display()
        ),
    })
}
