//! Reading `grams.parquet`, the compact statistics: the float64 Gram blocks of
//! every category, layer and pooling, through `schemas`, which writes them.

use anyhow::{anyhow, Result};
use schemas::gram::CategoryGram;
use schemas::{Pooling, GRAMS_FILE};

use super::types::{ModelCache, Statements};

/// The Gram blocks `[pooling][layer][category]` of `layers` as the sidecar stores
/// them, checked against the statements' categories and pairs per category.
pub fn read_grams(
    model: &ModelCache,
    stmts: &Statements,
    poolings: &[Pooling],
    layers: &[u32],
) -> Result<Vec<Vec<Vec<CategoryGram>>>> {
    let sizes: Vec<usize> = stmts.pairs.iter().map(Vec::len).collect();
    let cache = &model.cache;
    schemas::read_grams(
        &cache.dir,
        &cache.manifest.files[GRAMS_FILE],
        poolings,
        layers,
        &stmts.categories,
        &sizes,
    )
    .map_err(|e| anyhow!("{e}"))
}
