//! `grams.parquet`, the compact statistics: every category's cosine Gram blocks
//! ([`crate::gram::CategoryGram`], `Exact` arithmetic) for every layer and pooling.
//!
//! Every statistic of `analyze` depends on the pooled embeddings only through these
//! blocks, and they are a small fraction of the embeddings' size at real widths (a
//! category of n pairs keeps `2n(n+1)/2 + n^2` float64 per layer and pooling instead
//! of `2n * hidden` float32), so a reader of the sidecar never reads the embeddings.
//! The sidecar names the sha256 of the `embeddings.parquet` it was computed from,
//! twice: in the manifest's `grams` section and in its own key-value metadata, so
//! that neither a manifest from another extraction nor a sidecar copied from
//! another cache passes for this cache's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, ListArray, StringArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::basic::Compression;
use parquet::file::metadata::{FileMetaData, KeyValue};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::files::{check_sha256, sha256_bytes};
use crate::gram::{category_gram, Arithmetic, CategoryGram};
use crate::write::{close_writer, finish_file, open_writer, temp_path};
use crate::{
    read_embeddings_layer, read_statements, CacheError, FileEntry, Manifest, Pooling, Side,
    StatementRow, EMBEDDINGS_FILE, MANIFEST_FILE, STATEMENTS_FILE,
};

pub const GRAMS_FILE: &str = "grams.parquet";
/// Bumped whenever the sidecar's layout or meaning changes; readers refuse others.
pub const GRAMS_FORMAT_VERSION: u32 = 1;

const KEY_VERSION: &str = "ua.grams.format_version";
const KEY_ARITHMETIC: &str = "ua.grams.arithmetic";
const KEY_EMBEDDINGS: &str = "ua.grams.embeddings_sha256";

/// The manifest's `grams` section: what the sidecar holds and what it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GramsInfo {
    pub format_version: u32,
    /// Always `exact`: float64 normalisation and products.
    pub arithmetic: String,
    /// sha256 of the `embeddings.parquet` the blocks were computed from; null in a
    /// compact-only cache, whose writer held the vectors and wrote no embeddings.
    pub embeddings_sha256: Option<String>,
}

impl GramsInfo {
    fn exact(embeddings_sha256: Option<String>) -> Self {
        GramsInfo {
            format_version: GRAMS_FORMAT_VERSION,
            arithmetic: Arithmetic::Exact.as_str().to_string(),
            embeddings_sha256,
        }
    }

    /// How to replace a refused sidecar: from the embeddings, or, in a compact-only
    /// cache, which has none, only by writing the cache again.
    pub(crate) fn rebuild_hint(&self) -> &'static str {
        match self.embeddings_sha256 {
            Some(_) => "rebuild it with `analyze index --cache CACHE`",
            None => "this compact-only cache has no embeddings to rebuild it from: write the cache again",
        }
    }

    fn key_values(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new(KEY_VERSION.into(), self.format_version.to_string()),
            KeyValue::new(KEY_ARITHMETIC.into(), self.arithmetic.clone()),
            // No value in a compact-only sidecar: there are no embeddings to name.
            KeyValue::new(KEY_EMBEDDINGS.into(), self.embeddings_sha256.clone()),
        ]
    }
}

/// Rows `(layer, category)`, one row group per layer, categories in manifest order;
/// per pooling the blocks `A A^T` and `B B^T` as upper triangles (diagonal included,
/// row-major) and `A B^T` whole, pairs in `pair_index` order.
pub fn grams_schema(poolings: &[Pooling]) -> SchemaRef {
    let list = DataType::List(Arc::new(Field::new("item", DataType::Float64, false)));
    let mut fields = vec![
        Field::new("layer", DataType::UInt32, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("n_pairs", DataType::UInt32, false),
    ];
    for p in poolings {
        for block in BLOCKS {
            fields.push(Field::new(column_name(*p, block), list.clone(), false));
        }
    }
    Arc::new(Schema::new(fields))
}

const BLOCKS: [&str; 3] = ["a", "b", "ab"];

fn column_name(pooling: Pooling, block: &str) -> String {
    format!("{pooling}_{block}")
}

/// Writes the sidecar of a cache whose statements and embeddings are written and
/// listed in `manifest.files`, and records it there (`files` and `grams`). The
/// blocks come from the bytes on disk, so a resumed extraction, a merge and
/// `analyze index` write the same sidecar for the same embeddings.
pub fn add_grams(dir: &Path, manifest: &mut Manifest) -> Result<(), CacheError> {
    let embeddings = manifest.files.get(EMBEDDINGS_FILE).ok_or_else(|| {
        CacheError::new(
            dir.join(MANIFEST_FILE),
            format!("lists no entry for {EMBEDDINGS_FILE}"),
        )
    })?;
    let info = GramsInfo::exact(Some(embeddings.sha256.clone()));
    let source = Source::open(dir, manifest)?;
    let path = dir.join(EMBEDDINGS_FILE);
    let entry = write_sidecar(&source, &info, &path, |layer| {
        let block = read_embeddings_layer(&path, layer as usize, &source.poolings)?;
        if block.statement_ids != source.ids || block.layer != layer {
            return Err(CacheError::new(
                &path,
                format!("row group {layer} does not hold layer {layer} of the statements of {STATEMENTS_FILE} in their order"),
            ));
        }
        Ok(block.vectors)
    })?;
    record(manifest, entry, info);
    Ok(())
}

/// Writes the sidecar of a compact-only cache, one without `embeddings.parquet`:
/// `vectors(layer)` gives every pooling's `n_statements x hidden` matrix, rows in
/// the order of `statements.parquet`, which is written and listed. The blocks are
/// those [`add_grams`] computes from the same vectors written as embeddings.
pub fn add_compact_grams(
    dir: &Path,
    manifest: &mut Manifest,
    vectors: impl FnMut(u32) -> Result<BTreeMap<Pooling, Vec<f32>>, CacheError>,
) -> Result<(), CacheError> {
    if manifest.files.contains_key(EMBEDDINGS_FILE) {
        return Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!(
                "lists {EMBEDDINGS_FILE}: its sidecar must be computed from that file (add_grams)"
            ),
        ));
    }
    let info = GramsInfo::exact(None);
    let origin = dir.join(GRAMS_FILE);
    let entry = write_sidecar(&Source::open(dir, manifest)?, &info, &origin, vectors)?;
    record(manifest, entry, info);
    Ok(())
}

fn record(manifest: &mut Manifest, entry: FileEntry, info: GramsInfo) {
    manifest.files.insert(GRAMS_FILE.to_string(), entry);
    manifest.grams = Some(info);
}

/// Writes `grams.parquet` (temp file, rename) layer by layer from `vectors`;
/// `origin` is where the vectors came from, named when they hold non-finite values.
fn write_sidecar(
    source: &Source,
    info: &GramsInfo,
    origin: &Path,
    mut vectors: impl FnMut(u32) -> Result<BTreeMap<Pooling, Vec<f32>>, CacheError>,
) -> Result<FileEntry, CacheError> {
    let path = source.dir.join(GRAMS_FILE);
    let tmp = temp_path(&path);
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_key_value_metadata(Some(info.key_values()))
        .build();
    let schema = grams_schema(&source.poolings);
    let written = open_writer(&tmp, schema.clone(), props).and_then(|mut writer| {
        for layer in 0..=source.n_layers {
            let batch = source.layer_batch(layer, &vectors(layer)?, origin, &schema)?;
            writer
                .write(&batch)
                .and_then(|()| writer.flush())
                .map_err(|e| CacheError::new(&tmp, e.to_string()))?;
        }
        close_writer(writer, &tmp)
    });
    let rows = u64::from(source.n_layers + 1) * source.categories.len() as u64;
    finish_file(&tmp, &path, rows, written)
}

/// What the sidecar is computed from: the cache's statements, paired per category.
struct Source<'a> {
    dir: &'a Path,
    n_layers: u32,
    hidden: usize,
    poolings: Vec<Pooling>,
    categories: &'a [String],
    ids: Vec<u32>,
    /// Per category, the rows of its pairs' A and B statements in pair_index order.
    pairs: Vec<PairRows>,
}

impl<'a> Source<'a> {
    fn open(dir: &'a Path, manifest: &'a Manifest) -> Result<Source<'a>, CacheError> {
        let statements_path = dir.join(STATEMENTS_FILE);
        let rows = read_statements(&statements_path)?;
        let categories = &manifest.dataset.categories;
        Ok(Source {
            dir,
            n_layers: manifest.model.n_layers,
            hidden: manifest.model.hidden_size as usize,
            poolings: manifest.poolings(&dir.join(MANIFEST_FILE))?,
            categories,
            ids: rows.iter().map(|r| r.statement_id).collect(),
            pairs: category_rows(&rows, categories, &statements_path)?,
        })
    }

    /// One layer's row group: every category's blocks for every pooling.
    fn layer_batch(
        &self,
        layer: u32,
        vectors: &BTreeMap<Pooling, Vec<f32>>,
        origin: &Path,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, CacheError> {
        let n_cat = self.categories.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![layer; n_cat])),
            Arc::new(StringArray::from_iter_values(self.categories)),
            Arc::new(UInt32Array::from_iter_values(
                self.pairs.iter().map(|(a, _)| a.len() as u32),
            )),
        ];
        for p in &self.poolings {
            let matrix = &vectors[p];
            if matrix.len() != self.ids.len() * self.hidden {
                return Err(CacheError::new(
                    origin,
                    format!(
                        "layer {layer} ({p}): {} values given for {} statements of width {}",
                        matrix.len(),
                        self.ids.len(),
                        self.hidden
                    ),
                ));
            }
            if matrix.iter().any(|v| !v.is_finite()) {
                return Err(CacheError::new(
                    origin,
                    format!("layer {layer} ({p}) holds non-finite values"),
                ));
            }
            let grams: Vec<CategoryGram> = self
                .pairs
                .par_iter()
                .map(|(a, b)| category_gram(matrix, self.hidden, a, b, Arithmetic::Exact))
                .collect();
            columns.push(list(grams.iter().map(|g| upper_triangle(&g.a, g.n))));
            columns.push(list(grams.iter().map(|g| upper_triangle(&g.b, g.n))));
            columns.push(list(grams.iter().map(|g| g.ab.clone())));
        }
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| CacheError::new(self.dir.join(GRAMS_FILE), e.to_string()))
    }
}

fn list(values: impl Iterator<Item = Vec<f64>>) -> ArrayRef {
    let values: Vec<Vec<f64>> = values.collect();
    let offsets = OffsetBuffer::from_lengths(values.iter().map(Vec::len));
    let flat = Float64Array::from(values.concat());
    let item = Arc::new(Field::new("item", DataType::Float64, false));
    Arc::new(ListArray::new(item, offsets, Arc::new(flat), None))
}

/// Row-major upper triangle of a symmetric `n x n` matrix, diagonal included.
fn upper_triangle(g: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .flat_map(|i| g[i * n + i..(i + 1) * n].iter().copied())
        .collect()
}

/// The symmetric `n x n` matrix back from its upper triangle: the mirror image is
/// what `gram::category_gram` stores below the diagonal, bit for bit.
fn from_upper_triangle(t: &[f64], n: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    let mut k = 0;
    for i in 0..n {
        for j in i..n {
            g[i * n + j] = t[k];
            g[j * n + i] = t[k];
            k += 1;
        }
    }
    g
}

/// One category's statement rows: its pairs' A sides and B sides, pair by pair.
type PairRows = (Vec<usize>, Vec<usize>);

/// Per category (manifest order), the rows of its A and B statements, pairs in
/// `pair_index` order, as analyze pairs them.
fn category_rows(
    rows: &[StatementRow],
    categories: &[String],
    path: &Path,
) -> Result<Vec<PairRows>, CacheError> {
    let mut sides: Vec<BTreeMap<u32, [Option<usize>; 2]>> = vec![BTreeMap::new(); categories.len()];
    for (i, r) in rows.iter().enumerate() {
        let c = categories
            .iter()
            .position(|c| *c == r.category)
            .ok_or_else(|| {
                CacheError::new(
                    path,
                    format!(
                        "statement {} has a category the manifest does not list",
                        r.statement_id
                    ),
                )
            })?;
        let slot = &mut sides[c].entry(r.pair_index).or_default()[usize::from(r.side == Side::B)];
        if slot.replace(i).is_some() {
            return Err(CacheError::new(
                path,
                format!(
                    "category '{}' pair {} has two {} sides",
                    r.category,
                    r.pair_index,
                    r.side.as_str()
                ),
            ));
        }
    }
    sides
        .into_iter()
        .zip(categories)
        .map(|(pairs, name)| {
            pairs
                .into_iter()
                .map(|(pair, ab)| match ab {
                    [Some(a), Some(b)] => Ok((a, b)),
                    _ => Err(CacheError::new(
                        path,
                        format!("category '{name}' pair {pair} lacks its A or B side"),
                    )),
                })
                .collect::<Result<PairRows, CacheError>>()
        })
        .collect()
}

/// Checks the sidecar's own metadata against the manifest's `grams` section: a
/// sidecar of other embeddings (copied from another cache, or left by an earlier
/// extraction) is stale.
pub(crate) fn check_key_values(
    path: &Path,
    meta: &FileMetaData,
    info: &GramsInfo,
) -> Result<(), CacheError> {
    let have: BTreeMap<&str, Option<&str>> = meta
        .key_value_metadata()
        .into_iter()
        .flatten()
        .map(|kv| (kv.key.as_str(), kv.value.as_deref()))
        .collect();
    for kv in info.key_values() {
        let found = have.get(kv.key.as_str()).copied().flatten();
        if found != kv.value.as_deref() {
            return Err(CacheError::new(
                path,
                format!(
                    "stale: its {} is {} but manifest.json's grams section says {}; it was computed from other embeddings (copied from another cache or left by an earlier extraction); {}",
                    kv.key,
                    found.unwrap_or("absent"),
                    kv.value.as_deref().unwrap_or("absent"),
                    info.rebuild_hint()
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the blocks of the given poolings and layers from the sidecar of a cache
/// validated with `Scope::PreferGrams`: `[pooling][layer index][category]`. The
/// file is read once, checked against its sha256 in `files` (validation left that
/// to this read, so the bytes are read once) and decoded from memory.
/// `pairs_per_category` is what the statements hold; the sidecar must agree.
pub fn read_grams(
    dir: &Path,
    entry: &FileEntry,
    poolings: &[Pooling],
    layers: &[u32],
    categories: &[String],
    pairs_per_category: &[usize],
) -> Result<Vec<Vec<Vec<CategoryGram>>>, CacheError> {
    let path = dir.join(GRAMS_FILE);
    let bytes = Bytes::from(
        std::fs::read(&path).map_err(|e| CacheError::new(&path, format!("cannot read: {e}")))?,
    );
    check_sha256(&path, &sha256_bytes(&bytes), entry)?;
    poolings
        .iter()
        .map(|&p| {
            let rows = Rows {
                path: &path,
                layers,
                categories,
                pairs_per_category,
            };
            rows.read(bytes.clone(), p)
        })
        .collect()
}

/// Where one pooling's rows are read from and what they must describe.
struct Rows<'a> {
    path: &'a Path,
    layers: &'a [u32],
    categories: &'a [String],
    pairs_per_category: &'a [usize],
}

impl Rows<'_> {
    fn read(&self, bytes: Bytes, pooling: Pooling) -> Result<Vec<Vec<CategoryGram>>, CacheError> {
        let Rows {
            path,
            layers,
            categories,
            pairs_per_category,
        } = *self;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| CacheError::new(path, format!("not a readable Parquet file: {e}")))?;
        let wanted: Vec<String> = ["layer", "category", "n_pairs"]
            .into_iter()
            .map(String::from)
            .chain(BLOCKS.iter().map(|b| column_name(pooling, b)))
            .collect();
        let roots: Vec<usize> = wanted
            .iter()
            .map(|name| builder.schema().index_of(name))
            .collect::<Result<_, _>>()
            .map_err(|e| CacheError::new(path, format!("missing column: {e}")))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(layers.iter().map(|&l| l as usize).collect())
            .build()
            .map_err(|e| CacheError::new(path, e.to_string()))?;
        let mut out: Vec<Vec<CategoryGram>> = layers.iter().map(|_| Vec::new()).collect();
        let mut row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| CacheError::new(path, format!("cannot decode: {e}")))?;
            let rows = BatchRows::new(&batch, pooling, path)?;
            for i in 0..batch.num_rows() {
                let (li, c) = (row / categories.len(), row % categories.len());
                let want = Expected {
                    layer: *layers.get(li).ok_or_else(|| {
                        CacheError::new(path, "holds more rows than its row groups promise")
                    })?,
                    category: &categories[c],
                    n: pairs_per_category[c],
                };
                out[li].push(rows.gram(i, &want, path)?);
                row += 1;
            }
        }
        if row != layers.len() * categories.len() {
            return Err(CacheError::new(
                path,
                format!(
                    "holds {row} rows for the layers read, expected {}",
                    layers.len() * categories.len()
                ),
            ));
        }
        Ok(out)
    }
}

/// What one row of the sidecar must describe.
struct Expected<'a> {
    layer: u32,
    category: &'a str,
    n: usize,
}

/// The columns of one decoded batch of the sidecar, for one pooling.
struct BatchRows<'a> {
    layer: &'a arrow::array::PrimitiveArray<UInt32Type>,
    category: &'a StringArray,
    n_pairs: &'a arrow::array::PrimitiveArray<UInt32Type>,
    blocks: [&'a ListArray; 3],
}

impl<'a> BatchRows<'a> {
    fn new(batch: &'a RecordBatch, pooling: Pooling, path: &Path) -> Result<Self, CacheError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| CacheError::new(path, format!("missing column '{name}'")))
        };
        let bad = |name: &str| CacheError::new(path, format!("column '{name}' has the wrong type"));
        let u32s = |name: &str| {
            column(name)?
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(|| bad(name))
        };
        let list = |block: &str| {
            let name = column_name(pooling, block);
            column(&name)?
                .as_list_opt::<i32>()
                .ok_or_else(|| bad(&name))
        };
        Ok(BatchRows {
            layer: u32s("layer")?,
            category: column("category")?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad("category"))?,
            n_pairs: u32s("n_pairs")?,
            blocks: [list("a")?, list("b")?, list("ab")?],
        })
    }

    fn gram(&self, i: usize, want: &Expected, path: &Path) -> Result<CategoryGram, CacheError> {
        let (layer, category, n) = (
            self.layer.value(i),
            self.category.value(i),
            self.n_pairs.value(i) as usize,
        );
        if layer != want.layer || category != want.category || n != want.n {
            return Err(CacheError::new(
                path,
                format!(
                    "holds layer {layer}, category '{category}', {n} pairs where the cache has layer {}, category '{}', {} pairs",
                    want.layer, want.category, want.n
                ),
            ));
        }
        let triangle = n * (n + 1) / 2;
        let [a, b, ab] = [(0, triangle), (1, triangle), (2, n * n)].map(|(k, len)| {
            let values = self.blocks[k].value(i);
            let values = values
                .as_primitive_opt::<Float64Type>()
                .map(|v| v.values().to_vec());
            values.filter(|v| v.len() == len && v.iter().all(|x| x.is_finite()))
        });
        match (a, b, ab) {
            (Some(a), Some(b), Some(ab)) => Ok(CategoryGram {
                n,
                a: from_upper_triangle(&a, n),
                b: from_upper_triangle(&b, n),
                ab,
            }),
            _ => Err(CacheError::new(
                path,
                format!("layer {layer}, category '{category}': a block has the wrong length or non-finite values"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangles_round_trip_bit_for_bit() {
        let g = [1.0, 0.1 + 0.2, -0.5, 0.1 + 0.2, 1.0, 0.25, -0.5, 0.25, 1.0];
        let t = upper_triangle(&g, 3);
        assert_eq!(t, vec![1.0, 0.1 + 0.2, -0.5, 1.0, 0.25, 1.0]);
        assert_eq!(from_upper_triangle(&t, 3), g.to_vec());
    }
}
