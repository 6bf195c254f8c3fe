//! Reading one layer and one pooling of `embeddings.parquet` (polars) into a
//! contiguous matrix.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use polars::prelude::*;
use schemas::{Pooling, EMBEDDINGS_FILE};

use super::parquet::read_parquet;
use super::types::{ModelCache, Statements};

/// Reads one layer and one pooling of `embeddings.parquet` (polars; the contract
/// puts layer l in row group l, rows `l*n .. (l+1)*n`, so only that row group is
/// decoded; the `layer` column is checked) as a row-major `n_statements x hidden`
/// f32 matrix in the statement order of `stmts`.
pub fn read_layer(
    model: &ModelCache,
    stmts: &Statements,
    layer: u32,
    pooling: Pooling,
) -> Result<Vec<f32>> {
    let path = model.cache.dir.join(EMBEDDINGS_FILE);
    let n = stmts.ids.len();
    let df = read_parquet(
        &path,
        &["statement_id", "layer", pooling.as_str()],
        Some((layer as usize * n, n)),
    )
    .map_err(|e| anyhow!("{e} (layer {layer}, {pooling})"))?;
    check_rows(&df, &path, layer, n)?;
    let hidden = model.hidden();
    let err = |e: PolarsError| anyhow!("{}: layer {layer}: {e}", path.display());
    let ids = df
        .column("statement_id")
        .map_err(err)?
        .u32()
        .map_err(err)?
        .clone();
    let arr = df
        .column(pooling.as_str())
        .map_err(err)?
        .array()
        .map_err(err)?
        .clone();
    if arr.width() != hidden {
        bail!(
            "{}: column '{pooling}' has width {} but hidden_size is {hidden}",
            path.display(),
            arr.width()
        );
    }
    let inner = arr.get_inner();
    // A null would be read as zeros or as another row's values: the contract has none.
    let nulls = [
        ("statement_id", ids.null_count()),
        (pooling.as_str(), arr.null_count() + inner.null_count()),
    ];
    if let Some((name, count)) = nulls.into_iter().find(|&(_, c)| c > 0) {
        bail!(
            "{}: layer {layer}: column `{name}` holds {count} null value(s); the contract has none: restore the file or extract again",
            path.display()
        );
    }
    let inner = inner.f32().map_err(err)?.rechunk();
    let values = inner.cont_slice().map_err(err)?;
    if values.len() != n * hidden {
        bail!(
            "{}: layer {layer} ({pooling}) holds {} values, expected {}",
            path.display(),
            values.len(),
            n * hidden
        );
    }
    let out = place_rows(ids.into_no_null_iter(), values, stmts, hidden, &path, layer)?;
    if values.iter().any(|v| !v.is_finite()) {
        bail!(
            "{}: layer {layer} ({pooling}) holds non-finite values",
            path.display()
        );
    }
    Ok(out)
}

/// The rows as an `n x hidden` matrix in the statement order of `stmts`: `ids[k]` is
/// row k's statement, and each statement must come exactly once.
fn place_rows(
    ids: impl Iterator<Item = u32>,
    values: &[f32],
    stmts: &Statements,
    hidden: usize,
    path: &Path,
    layer: u32,
) -> Result<Vec<f32>> {
    let n = stmts.ids.len();
    let mut out = vec![0f32; n * hidden];
    // n rows, each a distinct statement of the n: every statement exactly once.
    let mut seen = vec![false; n];
    for (k, id) in ids.enumerate() {
        let row = *stmts.row_of.get(&id).ok_or_else(|| {
            anyhow!(
                "{}: layer {layer} has statement_id {id} not in statements.parquet",
                path.display()
            )
        })?;
        if std::mem::replace(&mut seen[row], true) {
            bail!(
                "{}: layer {layer} holds statement_id {id} twice (so another statement not at all); the contract has each statement once per layer: restore the file or extract again",
                path.display()
            );
        }
        out[row * hidden..(row + 1) * hidden]
            .copy_from_slice(&values[k * hidden..(k + 1) * hidden]);
    }
    Ok(out)
}

/// The row group holds one row per statement, all of `layer`.
fn check_rows(df: &DataFrame, path: &Path, layer: u32, n: usize) -> Result<()> {
    if df.height() != n {
        bail!(
            "{}: layer {layer} holds {} rows, expected {n} (one per statement): layers are missing or duplicated",
            path.display(),
            df.height()
        );
    }
    let err = |e: PolarsError| anyhow!("{}: layer {layer}: {e}", path.display());
    if let Some(other) = df
        .column("layer")
        .map_err(err)?
        .u32()
        .map_err(err)?
        .into_no_null_iter()
        .find(|&v| v != layer)
    {
        bail!(
            "{}: row group {layer} holds layer {other}: layers are missing or out of order",
            path.display()
        );
    }
    Ok(())
}
