//! polars' Parquet reader of a column subset and a row slice, shared by the
//! readers of `statements.parquet` and `embeddings.parquet`.

use std::path::Path;

use anyhow::{anyhow, Result};
use polars::prelude::*;

/// Reads `columns` of the rows `slice = (offset, len)` (all rows when None) with
/// polars' Parquet reader, which decodes only the row groups the slice touches.
pub fn read_parquet(
    path: &Path,
    columns: &[&str],
    slice: Option<(usize, usize)>,
) -> Result<DataFrame> {
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    ParquetReader::new(file)
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .with_slice(slice)
        .read_parallel(ParallelStrategy::None)
        .finish()
        .map_err(|e| anyhow!("{}: not a readable Parquet file: {e}", path.display()))
}
