//! Finding the model folders of a cache and validating each (through `schemas`),
//! refusing one model counted twice and implausible parameter counts, in size order.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use schemas::{Scope, ValidCache};

use super::types::ModelCache;
use super::{identity, params};

/// The model folders under `cache` (or the named ones), by name.
pub fn model_dirs(cache: &Path, only: Option<&[String]>) -> Result<Vec<(String, PathBuf)>> {
    if !cache.is_dir() {
        bail!(
            "{}: is not a directory (expected a cache folder holding one folder per model)",
            cache.display()
        );
    }
    let mut dirs: Vec<(String, PathBuf)> = Vec::new();
    for entry in
        std::fs::read_dir(cache).with_context(|| format!("{}: cannot list", cache.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list", cache.display()))?;
        let path = entry.path();
        if path.is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                dirs.push((name, path));
            }
        }
    }
    dirs.sort();
    if let Some(only) = only {
        identity::check_names(only)?;
        let mut chosen = Vec::new();
        for want in only {
            match dirs.iter().find(|(n, _)| n == want) {
                Some(d) => chosen.push(d.clone()),
                None => {
                    let have: Vec<&str> = dirs.iter().map(|(n, _)| n.as_str()).collect();
                    bail!(
                        "{}: --models names '{want}' but the cache holds no such model folder (found: {})",
                        cache.display(),
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    );
                }
            }
        }
        dirs = chosen;
    }
    if dirs.is_empty() {
        bail!(
            "{}: holds no model folders (expected CACHE/<model>/manifest.json written by extract)",
            cache.display()
        );
    }
    Ok(dirs)
}

/// Finds the model directories under `cache` (or the named ones), validates each as
/// far as `scope` says, refuses one model counted twice (`identity`) and
/// implausible parameter counts (`params`), and orders them by parameter count.
pub fn discover(
    cache: &Path,
    only: Option<&[String]>,
    allow_mixed: bool,
    scope: Scope,
) -> Result<Vec<ModelCache>> {
    let dirs = model_dirs(cache, only)?;
    identity::check_same_folders(&dirs)?;
    // Validation hashes every file; models are independent, so check them in parallel
    // and report the first failure in folder order.
    let cache_root = cache;
    let checked: Vec<Result<ValidCache>> = dirs
        .par_iter()
        .map(|(_, dir)| schemas::validate_cache_in(dir, scope).map_err(|e| anyhow!("{e}")))
        .collect();
    let mut models = Vec::new();
    for ((name, _), cache) in dirs.into_iter().zip(checked) {
        let cache = cache?;
        let manifest_path = cache.dir.join(schemas::MANIFEST_FILE);
        // A shard holds a slice of the statements: analysed alone it would silently
        // be another, smaller dataset.
        if let Some(shard) = cache.manifest.run.shard {
            bail!(
                "{}: a shard cache (shard {}/{} of one extraction), not a whole model; join the shards with `extract merge --out CACHE --name NAME SHARD_DIR...` and move the shard folders out of {}",
                cache.dir.display(),
                shard.index,
                shard.count,
                cache_root.display()
            );
        }
        let (params, params_estimated) =
            params::params_for_ordering(&manifest_path, &cache.manifest.model)?;
        models.push(ModelCache {
            name,
            cache,
            params,
            params_estimated,
        });
    }
    identity::check_same_weights(&models)?;
    let first = &models[0];
    for m in &models[1..] {
        let (a, b) = (&first.manifest().dataset, &m.manifest().dataset);
        if a.sha256 != b.sha256 && !allow_mixed {
            bail!(
                "{}: extracted from dataset sha256 {} but {} used {}: the models saw different datasets; pass --allow-mixed-datasets to compare them anyway",
                m.cache.dir.join(schemas::MANIFEST_FILE).display(),
                b.sha256,
                first.name,
                a.sha256
            );
        }
        if a.categories != b.categories {
            bail!(
                "{}: dataset categories {:?} differ from {}'s {:?}; the models cannot be compared category by category",
                m.cache.dir.join(schemas::MANIFEST_FILE).display(),
                b.categories,
                first.name,
                a.categories
            );
        }
    }
    models.sort_by(|a, b| a.params.cmp(&b.params).then_with(|| a.name.cmp(&b.name)));
    Ok(models)
}
