//! Reading `grams.parquet`, the sidecar: the float64 Gram blocks (or the
//! vectors) of every category, layer and pooling, through `schemas`, which writes them.

use anyhow::{anyhow, Result};
use schemas::{Pooling, SidecarLayer, GRAMS_FILE};

use super::types::{ModelCache, Statements};

/// The Gram blocks of `layers` as the sidecar stores them, with the statement
/// geometry where it has it, checked against the statements' categories and pairs per
/// category, handed to `each(pooling index, layer)` one layer at a time.
pub fn read_sidecar(
    model: &ModelCache,
    stmts: &Statements,
    poolings: &[Pooling],
    layers: &[u32],
    each: impl FnMut(usize, SidecarLayer),
) -> Result<()> {
    let pairs_per_category: Vec<usize> = stmts.pairs.iter().map(Vec::len).collect();
    let cache = &model.cache;
    schemas::read_grams_each(
        &cache.dir,
        &cache.manifest.files[GRAMS_FILE],
        poolings,
        layers,
        &schemas::GramsShape {
            categories: &stmts.categories,
            pairs_per_category: &pairs_per_category,
            hidden: model.hidden(),
        },
        each,
    )
    .map_err(|e| anyhow!("{e}"))
}
