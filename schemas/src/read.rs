//! Reading `statements.parquet` and one layer of `embeddings.parquet` (extract's merge
//! and resume; analyze reads through its own `cache` module).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Float64Type, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{CacheError, Pooling, StatementRow};

/// One layer of `embeddings.parquet` (one row group), as flat row-major blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBlock {
    pub layer: u32,
    pub statement_ids: Vec<u32>,
    /// Per pooling, `statement_ids.len() * hidden` floats.
    pub vectors: BTreeMap<Pooling, Vec<f32>>,
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, CacheError> {
    let file = File::open(path).map_err(|e| CacheError::new(path, format!("cannot open: {e}")))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| CacheError::new(path, format!("not a readable Parquet file: {e}")))
}

fn read_batches(
    builder: ParquetRecordBatchReaderBuilder<File>,
    path: &Path,
) -> Result<Vec<RecordBatch>, CacheError> {
    builder
        .build()
        .map_err(|e| CacheError::new(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CacheError::new(path, format!("cannot decode: {e}")))
}

fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a dyn Array, CacheError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| CacheError::new(path, format!("missing column '{name}'")))
}

/// Refuses a column holding a null (in a list column, a null list or value), which
/// would be read as a zero or as another row's value: the contract has none.
fn no_nulls(array: &dyn Array, name: &str, path: &Path) -> Result<(), CacheError> {
    let inner = array
        .as_fixed_size_list_opt()
        .map_or(0, |l| l.values().null_count());
    let count = array.null_count() + inner;
    if count > 0 {
        return Err(CacheError::new(
            path,
            format!("column `{name}` holds {count} null value(s); the contract has none: restore the file or extract again"),
        ));
    }
    Ok(())
}

/// Reads one row group of an embeddings file written by [`crate::EmbeddingsWriter`].
/// Used by extract (to assemble resumed chunks) and by tests; analyze reads
/// through polars.
pub fn read_embeddings_layer(
    path: &Path,
    row_group: usize,
    poolings: &[Pooling],
) -> Result<LayerBlock, CacheError> {
    let builder = open(path)?;
    if row_group >= builder.metadata().num_row_groups() {
        return Err(CacheError::new(
            path,
            format!("has no row group {row_group}"),
        ));
    }
    let batches = read_batches(builder.with_row_groups(vec![row_group]), path)?;
    let mut block = LayerBlock {
        layer: 0,
        statement_ids: Vec::new(),
        vectors: BTreeMap::new(),
    };
    for batch in &batches {
        let layers = column(batch, "layer", path)?.as_primitive_opt::<UInt32Type>();
        let layers = layers.ok_or_else(|| CacheError::new(path, "column 'layer' is not UInt32"))?;
        no_nulls(layers, "layer", path)?;
        block.layer = layers.value(0);
        if let Some(other) = layers.values().iter().find(|&&l| l != block.layer) {
            return Err(CacheError::new(
                path,
                format!(
                    "row group {row_group} holds layers {} and {other}: one row group per layer",
                    block.layer
                ),
            ));
        }
        let ids = column(batch, "statement_id", path)?
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| CacheError::new(path, "column 'statement_id' is not UInt32"))?;
        no_nulls(ids, "statement_id", path)?;
        block.statement_ids.extend(ids.values().iter().copied());
        for &p in poolings {
            no_nulls(column(batch, p.as_str(), path)?, p.as_str(), path)?;
            let list = column(batch, p.as_str(), path)?
                .as_fixed_size_list_opt()
                .ok_or_else(|| {
                    CacheError::new(path, format!("column '{p}' is not a fixed-size list"))
                })?;
            let values = list
                .values()
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| {
                    CacheError::new(path, format!("column '{p}' does not hold Float32"))
                })?;
            let start = list.offset() * list.value_length() as usize;
            let end = start + list.len() * list.value_length() as usize;
            block
                .vectors
                .entry(p)
                .or_default()
                .extend_from_slice(&values.values()[start..end]);
        }
    }
    Ok(block)
}

/// Reads a statements file written by [`crate::write_statements`].
pub fn read_statements(path: &Path) -> Result<Vec<StatementRow>, CacheError> {
    let batches = read_batches(open(path)?, path)?;
    let mut rows = Vec::new();
    let bad = |name: &str| CacheError::new(path, format!("column '{name}' has the wrong type"));
    for batch in &batches {
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            no_nulls(array, field.name(), path)?;
        }
        let u32s = |name: &str| {
            column(batch, name, path)?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad(name))
        };
        let strs = |name: &str| {
            column(batch, name, path)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(name))
        };
        let (ids, pairs, n_tokens, n_pred) = (
            u32s("statement_id")?,
            u32s("pair_index")?,
            u32s("n_tokens")?,
            u32s("n_predicted")?,
        );
        let (cats, sides, texts) = (strs("category")?, strs("side")?, strs("text")?);
        let nll_sum = column(batch, "nll_sum", path)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad("nll_sum"))?;
        for i in 0..batch.num_rows() {
            rows.push(StatementRow {
                statement_id: ids.value(i),
                category: cats.value(i).to_string(),
                pair_index: pairs.value(i),
                side: sides
                    .value(i)
                    .parse()
                    .map_err(|e: String| CacheError::new(path, e))?,
                text: texts.value(i).to_string(),
                n_tokens: n_tokens.value(i),
                nll_sum: nll_sum.value(i),
                n_predicted: n_pred.value(i),
            });
        }
    }
    Ok(rows)
}
