//! `grams.parquet`, the sidecar: every category's cosine Gram blocks
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float32Array, Float64Array, ListArray, StringArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema, SchemaRef, UInt32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::basic::Compression;
use parquet::file::metadata::{FileMetaData, KeyValue};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rayon::prelude::*;

use crate::files::{check_sha256, sha256_file};
use crate::geometry::{CategoryGeometry, LayerGeometry, SideGeometry, StatementGeometry};
use crate::gram::{
    category_gram, gather, keeps_vectors, Arithmetic, CategoryBlocks, CategoryGram, CategoryVectors,
};
use crate::layers::for_each_layer;
use crate::write::{close_writer, finish_file, open_writer, temp_path, ParquetWriter};
use crate::{
    read_statements, CacheError, FileEntry, GramsInfo, Manifest, Pooling, Side, StatementRow,
    EMBEDDINGS_FILE, MANIFEST_FILE, STATEMENTS_FILE,
};

pub const GRAMS_FILE: &str = "grams.parquet";
/// Bumped whenever the sidecar's layout or meaning changes; readers refuse versions
/// they do not know. Version 2 added the vector columns, version 3 the statement
/// geometry (norms, dot products with the layer's sum, the layer's mean) that the
/// centred geometry and the anisotropy need; version 1 and 2 files are still read,
/// without them.
pub const GRAMS_FORMAT_VERSION: u32 = 3;
/// Every version this reader reads.
pub const GRAMS_FORMAT_VERSIONS: [u32; 3] = [1, 2, 3];

const KEY_VERSION: &str = "ua.grams.format_version";
const KEY_ARITHMETIC: &str = "ua.grams.arithmetic";
const KEY_EMBEDDINGS: &str = "ua.grams.embeddings_sha256";

impl GramsInfo {
    fn exact(embeddings_sha256: Option<String>) -> Self {
        GramsInfo {
            format_version: GRAMS_FORMAT_VERSION,
            arithmetic: Arithmetic::Exact.as_str().to_string(),
            embeddings_sha256,
        }
    }

    /// How to replace a refused sidecar: from the embeddings, or, in a sidecar-only
    /// cache, which has none, only by writing the cache again.
    pub(crate) fn rebuild_hint(&self) -> &'static str {
        match self.embeddings_sha256 {
            Some(_) => "rebuild it with `analyze index --cache CACHE`",
            None => "this sidecar-only cache has no embeddings to rebuild it from: write the cache again",
        }
    }

    fn key_values(&self) -> Vec<KeyValue> {
        let mut kv = self.format_key_values();
        kv.push(self.source_key_value());
        kv
    }

    /// What the file holds: known when it is opened.
    fn format_key_values(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new(KEY_VERSION.into(), self.format_version.to_string()),
            KeyValue::new(KEY_ARITHMETIC.into(), self.arithmetic.clone()),
        ]
    }

    /// What it came from: known once the embeddings are written, so appended to the
    /// footer when the file is closed ([`GramsWriter::finish`]). No value in a
    /// sidecar-only cache's sidecar: there are no embeddings to name.
    fn source_key_value(&self) -> KeyValue {
        KeyValue::new(KEY_EMBEDDINGS.into(), self.embeddings_sha256.clone())
    }
}

/// Rows `(layer, category)`, one row group per layer, categories in manifest order;
/// per pooling the blocks `A A^T` and `B B^T` as upper triangles (diagonal included,
/// row-major) and `A B^T` whole, pairs in `pair_index` order.
pub fn grams_schema(poolings: &[Pooling]) -> SchemaRef {
    grams_schema_of(GRAMS_FORMAT_VERSION, poolings)
}

/// The columns of a sidecar of format `version` (1: no vector columns).
pub(crate) fn grams_schema_of(version: u32, poolings: &[Pooling]) -> SchemaRef {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    let mut fields = vec![
        Field::new("layer", DataType::UInt32, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("n_pairs", DataType::UInt32, false),
    ];
    for p in poolings {
        for block in BLOCKS {
            fields.push(Field::new(
                column_name(*p, block),
                list(DataType::Float64),
                false,
            ));
        }
        for side in VECTORS.iter().filter(|_| version >= 2) {
            fields.push(Field::new(
                column_name(*p, side),
                list(DataType::Float32),
                false,
            ));
        }
        for column in GEOMETRY.iter().filter(|_| version >= 3) {
            fields.push(Field::new(
                column_name(*p, column),
                list(DataType::Float64),
                false,
            ));
        }
    }
    Arc::new(Schema::new(fields))
}

const BLOCKS: [&str; 3] = ["a", "b", "ab"];
/// A category kept as its vectors (`gram::keeps_vectors`): the raw float32 A and B
/// vectors, `n x hidden` each, as `embeddings.parquet` holds them.
const VECTORS: [&str; 2] = ["va", "vb"];
/// The statement geometry (format 3, `geometry::SideGeometry` per side, then the
/// layer's mean vector on rows kept as vectors, empty elsewhere).
const GEOMETRY: [&str; 9] = [
    "norm_a",
    "norm_b",
    "dot_a",
    "dot_b",
    "unit_dot_a",
    "unit_dot_b",
    "top_a",
    "top_b",
    "mean",
];

fn column_name(pooling: Pooling, block: &str) -> String {
    format!("{pooling}_{block}")
}

/// Writes the sidecar of a cache whose statements and embeddings are written and
/// listed in `manifest.files`, and records it there (`files` and `grams`). The
/// blocks come from the bytes on disk, read once: every byte is hashed as it is
/// read, and embeddings whose sha256 is not the one `files` records are refused
/// before anything is written. A resumed extraction, a merge and `analyze index`
/// write the same sidecar for the same embeddings, the bytes [`GramsWriter`] writes
/// from the same vectors in memory.
pub fn add_sidecar(dir: &Path, manifest: &mut Manifest) -> Result<(), CacheError> {
    let Some(embeddings) = manifest.files.get(EMBEDDINGS_FILE).cloned() else {
        return Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!("lists no entry for {EMBEDDINGS_FILE}"),
        ));
    };
    let statements = read_statements(&dir.join(STATEMENTS_FILE))?;
    let ids: Vec<u32> = statements.iter().map(|r| r.statement_id).collect();
    let mut writer = GramsWriter::create(dir, manifest, &statements)?;
    let path = dir.join(EMBEDDINGS_FILE);
    let poolings = writer.plan.poolings.clone();
    let mut next = 0;
    let sha256 = for_each_layer(&path, &poolings, ids.len(), |block| {
        if block.statement_ids != ids || block.layers.iter().any(|&l| l != next) {
            return Err(CacheError::new(
                &path,
                format!("row group {next} does not hold layer {next} of the statements of {STATEMENTS_FILE} in their order"),
            ));
        }
        writer.add_layer(next, &block.vectors)?;
        next += 1;
        Ok(())
    })?;
    if next != manifest.model.n_layers + 1 {
        return Err(CacheError::new(
            &path,
            format!(
                "holds {next} row groups but the manifest's {} layers need {}",
                manifest.model.n_layers,
                manifest.model.n_layers + 1
            ),
        ));
    }
    check_sha256(&path, &sha256, &embeddings)?;
    writer.finish(manifest)
}

/// Writes the sidecar of a sidecar-only cache, one without `embeddings.parquet`:
/// `vectors(layer)` gives every pooling's `n_statements x hidden` matrix, rows in
/// the order of `statements.parquet`, which is written and listed. The blocks are
/// those [`add_sidecar`] computes from the same vectors written as embeddings.
pub fn add_sidecar_from_vectors(
    dir: &Path,
    manifest: &mut Manifest,
    mut vectors: impl FnMut(u32) -> Result<BTreeMap<Pooling, Vec<f32>>, CacheError>,
) -> Result<(), CacheError> {
    if manifest.files.contains_key(EMBEDDINGS_FILE) {
        return Err(CacheError::new(
            dir.join(MANIFEST_FILE),
            format!(
                "lists {EMBEDDINGS_FILE}: its sidecar must be computed from that file (add_sidecar)"
            ),
        ));
    }
    let statements = read_statements(&dir.join(STATEMENTS_FILE))?;
    let mut writer = GramsWriter::create(dir, manifest, &statements)?;
    writer.origin = dir.join(GRAMS_FILE);
    for layer in 0..=manifest.model.n_layers {
        writer.add_layer(layer, &vectors(layer)?)?;
    }
    writer.finish(manifest)
}

/// Streams `grams.parquet` from each layer's vectors as they are produced, so that
/// a writer of `embeddings.parquet` never reads them back: the bytes are those
/// [`add_sidecar`] writes from the same embeddings on disk (it reads them back into
/// this writer). Dropping it unfinished removes its temp file.
///
/// extract, assembling `embeddings.parquet` layer by layer (`combine_layers`), calls:
///
/// ```text
/// // `manifest`: model, dataset.categories and run.poolings filled in; `rows`: the
/// // statements as statements.parquet holds them (its order is the vectors' row order)
/// let mut grams = GramsWriter::create(cache_dir, &manifest, &rows)?;
/// for layer in 0..=n_layers {
///     let vectors: Vec<Vec<f32>> = ...;   // per pooling of run.poolings, rows x hidden
///     let by_pooling: BTreeMap<Pooling, &Vec<f32>> = poolings.iter().copied().zip(&vectors).collect();
///     grams.add_layer(layer, &by_pooling)?;
///     embeddings.write_layer(layer, ids, vectors)?;
/// }
/// manifest.files.insert(EMBEDDINGS_FILE.into(), embeddings.finish()?);
/// grams.finish(&mut manifest)?;   // names the embeddings' sha256, lists grams.parquet
/// ```
///
/// `finish` commits `grams.parquet` under its name; only the final manifest lists
/// it, so a run killed before that leaves nothing listed and its resumed run writes
/// the same bytes again. `add_layer` computes on rayon's pool and returns when the
/// layer is written: a caller that reads its next layer on a thread of its own
/// meanwhile overlaps the two.
pub struct GramsWriter {
    plan: Plan,
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ParquetWriter>,
    schema: SchemaRef,
    /// The next layer `add_layer` takes.
    next: u32,
    /// Where the vectors come from, named when they are unusable: the embeddings
    /// they are written to, or the sidecar itself in a sidecar-only cache.
    origin: PathBuf,
}

impl GramsWriter {
    /// Opens `dir/grams.parquet`'s temp file for the cache `manifest` describes
    /// (`model.n_layers`, `model.hidden_size`, `dataset.categories`,
    /// `run.poolings`), whose statements are `statements` in the order of
    /// `statements.parquet`: the order of every layer's rows.
    pub fn create(
        dir: &Path,
        manifest: &Manifest,
        statements: &[StatementRow],
    ) -> Result<Self, CacheError> {
        let categories = manifest.dataset.categories.clone();
        let plan = Plan {
            n_layers: manifest.model.n_layers,
            hidden: manifest.model.hidden_size as usize,
            poolings: manifest.poolings(&dir.join(MANIFEST_FILE))?,
            n_rows: statements.len(),
            pairs: category_rows(statements, &categories, &dir.join(STATEMENTS_FILE))?,
            categories,
        };
        let path = dir.join(GRAMS_FILE);
        let tmp = temp_path(&path);
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_key_value_metadata(Some(GramsInfo::exact(None).format_key_values()))
            .build();
        let schema = grams_schema(&plan.poolings);
        let writer = open_writer(&tmp, schema.clone(), props)?;
        Ok(GramsWriter {
            plan,
            path,
            tmp,
            writer: Some(writer),
            schema,
            next: 0,
            origin: dir.join(EMBEDDINGS_FILE),
        })
    }

    /// Adds `layer`'s row group (layers come in order, from 0): `vectors` holds
    /// every pooling of the manifest's `run.poolings`, each an `n_statements x
    /// hidden` matrix, rows in the order of the statements given to `create`.
    pub fn add_layer<V: AsRef<[f32]>>(
        &mut self,
        layer: u32,
        vectors: &BTreeMap<Pooling, V>,
    ) -> Result<(), CacheError> {
        if layer != self.next || layer > self.plan.n_layers {
            return Err(CacheError::new(
                &self.tmp,
                format!(
                    "layer {layer} given where layer {} of 0..={} comes next",
                    self.next, self.plan.n_layers
                ),
            ));
        }
        let matrices = self
            .plan
            .poolings
            .iter()
            .map(|p| {
                let m = vectors.get(p).map(AsRef::as_ref).ok_or_else(|| {
                    CacheError::new(&self.origin, format!("layer {layer}: no {p} vectors given"))
                })?;
                self.plan.check_shape(layer, *p, m, &self.origin)?;
                Ok(m)
            })
            .collect::<Result<Vec<&[f32]>, CacheError>>()?;
        let grams = self.plan.grams(&matrices);
        // A non-finite value makes its vector's squared norm (the diagonal) and so its
        // cosines non-finite, and every statement is in some category: checking the
        // blocks checks the vectors, at about 1% of the reads.
        for (p, grams) in self.plan.poolings.iter().zip(&grams) {
            if !grams.stored.iter().all(SidecarCategory::is_finite) || !grams.geometry_is_finite() {
                return Err(CacheError::new(
                    &self.origin,
                    format!("layer {layer} ({p}) holds non-finite values"),
                ));
            }
        }
        let batch = self
            .plan
            .layer_batch(layer, &grams, &self.schema, &self.tmp)?;
        let writer = self.writer.as_mut().expect("open until finish");
        writer
            .write(&batch)
            .and_then(|()| writer.flush())
            .map_err(|e| CacheError::new(&self.tmp, e.to_string()))?;
        self.next += 1;
        Ok(())
    }

    /// Completes `grams.parquet` once every layer was added: names the sha256 of the
    /// `embeddings.parquet` that `manifest.files` lists (none in a sidecar-only
    /// cache), moves the file into place and records it in `manifest` (`files` and
    /// `grams`). The manifest itself is the caller's to write.
    pub fn finish(mut self, manifest: &mut Manifest) -> Result<(), CacheError> {
        if self.next != self.plan.n_layers + 1 {
            return Err(CacheError::new(
                &self.tmp,
                format!(
                    "finished after {} of the {} layers",
                    self.next,
                    self.plan.n_layers + 1
                ),
            ));
        }
        let sha256 = manifest
            .files
            .get(EMBEDDINGS_FILE)
            .map(|e| e.sha256.clone());
        let info = GramsInfo::exact(sha256);
        let mut writer = self.writer.take().expect("open until finish");
        writer.append_key_value_metadata(info.source_key_value());
        let written = close_writer(writer, &self.tmp);
        let rows = u64::from(self.plan.n_layers + 1) * self.plan.categories.len() as u64;
        let entry = finish_file(&self.tmp, &self.path, rows, written)?;
        manifest.files.insert(GRAMS_FILE.to_string(), entry);
        manifest.grams = Some(info);
        Ok(())
    }
}

impl Drop for GramsWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// What the sidecar is computed from: the cache's shape and its statements, paired
/// per category.
struct Plan {
    n_layers: u32,
    hidden: usize,
    poolings: Vec<Pooling>,
    categories: Vec<String>,
    n_rows: usize,
    /// Per category, the rows of its pairs' A and B statements in pair_index order.
    pairs: Vec<PairRows>,
}

impl Plan {
    /// One pooling's matrix has the cache's shape.
    fn check_shape(
        &self,
        layer: u32,
        p: Pooling,
        matrix: &[f32],
        origin: &Path,
    ) -> Result<(), CacheError> {
        if matrix.len() != self.n_rows * self.hidden {
            return Err(CacheError::new(
                origin,
                format!(
                    "layer {layer} ({p}): {} values given for {} statements of width {}",
                    matrix.len(),
                    self.n_rows,
                    self.hidden
                ),
            ));
        }
        Ok(())
    }

    /// Every category's blocks (or vectors) and statement geometry, per pooling of
    /// `matrices`: the blocks as one task per (pooling, category) on rayon's pool, the
    /// geometry as one task per pooling; each task's arithmetic is its own, so the bits
    /// do not depend on the number of threads.
    fn grams(&self, matrices: &[&[f32]]) -> Vec<PoolingLayer> {
        let hidden = self.hidden;
        let geometry: Vec<LayerGeometry> = matrices
            .par_iter()
            .map(|m| LayerGeometry::of(m, hidden))
            .collect();
        let stored = self.blocks(matrices);
        stored
            .into_iter()
            .zip(geometry)
            .map(|(stored, g)| PoolingLayer {
                stored,
                categories: self.pairs.iter().map(|(a, b)| g.category(a, b)).collect(),
                mean: g.mean,
            })
            .collect()
    }

    fn blocks(&self, matrices: &[&[f32]]) -> Vec<Vec<SidecarCategory>> {
        let tasks: Vec<(&[f32], &PairRows)> = matrices
            .iter()
            .flat_map(|&m| self.pairs.iter().map(move |rows| (m, rows)))
            .collect();
        let hidden = self.hidden;
        let mut grams: Vec<SidecarCategory> = tasks
            .into_par_iter()
            .map(|(m, (a, b))| {
                if keeps_vectors(a.len(), hidden) {
                    SidecarCategory::Vectors(gather(m, hidden, a), gather(m, hidden, b))
                } else {
                    SidecarCategory::Gram(category_gram(m, hidden, a, b, Arithmetic::Exact))
                }
            })
            .collect();
        let n_cat = self.pairs.len();
        (0..matrices.len())
            .map(|_| grams.drain(..n_cat).collect())
            .collect()
    }

    /// One layer's row group from its blocks, `grams[pooling]`.
    fn layer_batch(
        &self,
        layer: u32,
        grams: &[PoolingLayer],
        schema: &SchemaRef,
        path: &Path,
    ) -> Result<RecordBatch, CacheError> {
        let n_cat = self.categories.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![layer; n_cat])),
            Arc::new(StringArray::from_iter_values(&self.categories)),
            Arc::new(UInt32Array::from_iter_values(
                self.pairs.iter().map(|(a, _)| a.len() as u32),
            )),
        ];
        for PoolingLayer {
            stored: grams,
            categories,
            mean,
        } in grams
        {
            let gram = |block: fn(&CategoryGram) -> Vec<f64>| {
                list(grams.iter().map(|s| match s {
                    SidecarCategory::Gram(g) => block(g),
                    SidecarCategory::Vectors(..) => Vec::new(),
                }))
            };
            columns.push(gram(|g| upper_triangle(&g.a, g.n)));
            columns.push(gram(|g| upper_triangle(&g.b, g.n)));
            columns.push(gram(|g| g.ab.clone()));
            columns.push(list32(grams.iter().map(|s| match s {
                SidecarCategory::Vectors(a, _) => a.clone(),
                SidecarCategory::Gram(_) => Vec::new(),
            })));
            columns.push(list32(grams.iter().map(|s| match s {
                SidecarCategory::Vectors(_, b) => b.clone(),
                SidecarCategory::Gram(_) => Vec::new(),
            })));
            // GEOMETRY's order: each of a side's lists, A then B.
            for k in 0..4 {
                columns.push(list(categories.iter().map(|c| c.a.lists()[k].clone())));
                columns.push(list(categories.iter().map(|c| c.b.lists()[k].clone())));
            }
            columns.push(list(grams.iter().map(|s| match s {
                SidecarCategory::Vectors(..) => mean.clone(),
                SidecarCategory::Gram(_) => Vec::new(),
            })));
        }
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| CacheError::new(path, e.to_string()))
    }
}

/// One layer of one pooling as the sidecar stores it: each category's blocks and
/// statement geometry, and the layer's mean (kept on the rows stored as vectors).
struct PoolingLayer {
    stored: Vec<SidecarCategory>,
    categories: Vec<CategoryGeometry>,
    mean: Vec<f64>,
}

impl PoolingLayer {
    fn geometry_is_finite(&self) -> bool {
        let n = |s: &SideGeometry| s.norm.len();
        self.mean.iter().all(|v| v.is_finite())
            && self
                .categories
                .iter()
                .all(|c| c.a.is_valid(n(&c.a)) && c.b.is_valid(n(&c.b)))
    }
}

/// One category as the sidecar stores it: Gram blocks, or the raw A and B vectors.
enum SidecarCategory {
    Gram(CategoryGram),
    Vectors(Vec<f32>, Vec<f32>),
}

impl SidecarCategory {
    fn is_finite(&self) -> bool {
        match self {
            SidecarCategory::Gram(g) => [&g.a, &g.b, &g.ab]
                .into_iter()
                .flatten()
                .all(|v| v.is_finite()),
            SidecarCategory::Vectors(a, b) => a.iter().chain(b).all(|v| v.is_finite()),
        }
    }
}

fn list(values: impl Iterator<Item = Vec<f64>>) -> ArrayRef {
    let values: Vec<Vec<f64>> = values.collect();
    let offsets = OffsetBuffer::from_lengths(values.iter().map(Vec::len));
    let flat = Float64Array::from(values.concat());
    let item = Arc::new(Field::new("item", DataType::Float64, false));
    Arc::new(ListArray::new(item, offsets, Arc::new(flat), None))
}

fn list32(values: impl Iterator<Item = Vec<f32>>) -> ArrayRef {
    let values: Vec<Vec<f32>> = values.collect();
    let offsets = OffsetBuffer::from_lengths(values.iter().map(Vec::len));
    let flat = Float32Array::from(values.concat());
    let item = Arc::new(Field::new("item", DataType::Float32, false));
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
/// validated with `Scope::PreferGrams`: `[pooling][layer index][category]`. See
/// [`read_grams_each`], which this collects.
pub fn read_grams(
    dir: &Path,
    entry: &FileEntry,
    poolings: &[Pooling],
    layers: &[u32],
    shape: &GramsShape,
) -> Result<Vec<Vec<Vec<CategoryBlocks>>>, CacheError> {
    let mut out: Vec<Vec<Vec<CategoryBlocks>>> = poolings.iter().map(|_| Vec::new()).collect();
    read_grams_each(dir, entry, poolings, layers, shape, |pi, layer| {
        out[pi].push(layer.blocks)
    })?;
    Ok(out)
}

/// What a sidecar's rows must describe: the cache's categories, its pairs per
/// category (what the statements hold) and its hidden size, which decides whether
/// a category is kept as Gram blocks or as vectors.
pub struct GramsShape<'a> {
    pub categories: &'a [String],
    pub pairs_per_category: &'a [usize],
    pub hidden: usize,
}

/// One layer of one pooling as the sidecar holds it.
pub struct SidecarLayer {
    /// Every category's blocks (or vectors), in the cache's category order.
    pub blocks: Vec<CategoryBlocks>,
    /// The statement geometry; `None` in a sidecar of format 1 or 2.
    pub geometry: Option<StatementGeometry>,
}

/// Reads the sidecar layer by layer: `each(pooling index, layer)` for each pooling
/// of `poolings` in turn, its layers in the order of `layers`, so a
/// reader holds one layer's blocks at a time however large the file. The file's
/// sha256 is checked against `files` first, by a streaming pass (validation left it
/// to this read), and every row against `shape`.
pub fn read_grams_each(
    dir: &Path,
    entry: &FileEntry,
    poolings: &[Pooling],
    layers: &[u32],
    shape: &GramsShape,
    mut each: impl FnMut(usize, SidecarLayer),
) -> Result<(), CacheError> {
    let path = dir.join(GRAMS_FILE);
    let cannot = |e: std::io::Error| CacheError::new(&path, format!("cannot read: {e}"));
    check_sha256(&path, &sha256_file(&path).map_err(cannot)?, entry)?;
    for (pi, &p) in poolings.iter().enumerate() {
        let rows = Rows {
            path: &path,
            layers,
            shape,
        };
        let file = std::fs::File::open(&path).map_err(cannot)?;
        rows.read(file, p, |grams| each(pi, grams))?;
    }
    Ok(())
}

/// Where one pooling's rows are read from and what they must describe.
struct Rows<'a> {
    path: &'a Path,
    layers: &'a [u32],
    shape: &'a GramsShape<'a>,
}

impl Rows<'_> {
    /// Decodes one pooling's rows, one layer (row group) per batch, handing each
    /// layer to `each`.
    fn read(
        &self,
        file: std::fs::File,
        pooling: Pooling,
        mut each: impl FnMut(SidecarLayer),
    ) -> Result<(), CacheError> {
        let Rows {
            path,
            layers,
            shape,
        } = *self;
        let (categories, pairs_per_category) = (shape.categories, shape.pairs_per_category);
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| CacheError::new(path, format!("not a readable Parquet file: {e}")))?;
        let (roots, with_vectors, with_geometry) = projection(builder.schema(), pooling, path)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(layers.iter().map(|&l| l as usize).collect())
            .with_batch_size(categories.len().max(1))
            .build()
            .map_err(|e| CacheError::new(path, e.to_string()))?;
        let mut layer = LayerRows::default();
        let mut row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| CacheError::new(path, format!("cannot decode: {e}")))?;
            let rows = BatchRows::new(&batch, pooling, with_vectors, with_geometry, path)?;
            for i in 0..batch.num_rows() {
                let (li, c) = (row / categories.len(), row % categories.len());
                let want = Expected {
                    layer: *layers.get(li).ok_or_else(|| {
                        CacheError::new(path, "holds more rows than its row groups promise")
                    })?,
                    category: &categories[c],
                    n: pairs_per_category[c],
                };
                layer
                    .blocks
                    .push(rows.blocks(i, &want, shape.hidden, path)?);
                if with_geometry {
                    let (g, mean) = rows.geometry(i, &want, shape.hidden, path)?;
                    layer.geometry.push(g);
                    layer.mean = layer.mean.or(mean);
                }
                row += 1;
                if layer.blocks.len() == categories.len() {
                    let LayerRows {
                        blocks,
                        geometry,
                        mean,
                    } = std::mem::take(&mut layer);
                    each(SidecarLayer {
                        blocks,
                        geometry: with_geometry.then_some(StatementGeometry {
                            categories: geometry,
                            mean,
                        }),
                    });
                }
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
        Ok(())
    }
}

/// One layer's rows as they are decoded.
#[derive(Default)]
struct LayerRows {
    blocks: Vec<CategoryBlocks>,
    geometry: Vec<CategoryGeometry>,
    mean: Option<Vec<f64>>,
}

/// The columns one pooling is read from (as root indices), and whether the file has
/// the vector columns (not in version 1) and the statement geometry (not before
/// version 3).
fn projection(
    schema: &Schema,
    pooling: Pooling,
    path: &Path,
) -> Result<(Vec<usize>, bool, bool), CacheError> {
    let has = |column: &str| schema.index_of(&column_name(pooling, column)).is_ok();
    let (with_vectors, with_geometry) = (has(VECTORS[0]), has(GEOMETRY[0]));
    let wanted: Vec<String> = ["layer", "category", "n_pairs"]
        .into_iter()
        .map(String::from)
        .chain(
            BLOCKS
                .iter()
                .chain(VECTORS.iter().filter(|_| with_vectors))
                .chain(GEOMETRY.iter().filter(|_| with_geometry))
                .map(|b| column_name(pooling, b)),
        )
        .collect();
    let roots = wanted
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<Result<_, _>>()
        .map_err(|e| CacheError::new(path, format!("missing column: {e}")))?;
    Ok((roots, with_vectors, with_geometry))
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
    /// `va`, `vb`; absent in a version 1 file.
    vectors: Option<[&'a ListArray; 2]>,
    /// The `GEOMETRY` columns; absent in version 1 and 2 files.
    geometry: Option<Vec<&'a ListArray>>,
}

impl<'a> BatchRows<'a> {
    fn new(
        batch: &'a RecordBatch,
        pooling: Pooling,
        with_vectors: bool,
        with_geometry: bool,
        path: &Path,
    ) -> Result<Self, CacheError> {
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
            vectors: if with_vectors {
                Some([list(VECTORS[0])?, list(VECTORS[1])?])
            } else {
                None
            },
            geometry: if with_geometry {
                Some(GEOMETRY.iter().map(|c| list(c)).collect::<Result<_, _>>()?)
            } else {
                None
            },
        })
    }

    /// Row `i`'s statement geometry (its layer, category and size already checked by
    /// `blocks`), and the layer's mean where the row keeps vectors.
    fn geometry(
        &self,
        i: usize,
        want: &Expected,
        hidden: usize,
        path: &Path,
    ) -> Result<(CategoryGeometry, Option<Vec<f64>>), CacheError> {
        let columns = self.geometry.as_ref().expect("read with geometry columns");
        let values = |k: usize| -> Option<Vec<f64>> {
            let v = columns[k].value(i);
            v.as_primitive_opt::<Float64Type>()
                .map(|v| v.values().to_vec())
        };
        let wrong = || {
            CacheError::new(
                path,
                format!(
                    "layer {}, category '{}': the statement geometry has the wrong length or non-finite values",
                    want.layer, want.category
                ),
            )
        };
        let side = |k: usize| -> Option<SideGeometry> {
            Some(SideGeometry {
                norm: values(k)?,
                dot: values(k + 2)?,
                unit_dot: values(k + 4)?,
                top: values(k + 6)?,
            })
            .filter(|s| s.is_valid(want.n))
        };
        let (a, b) = (side(0).ok_or_else(wrong)?, side(1).ok_or_else(wrong)?);
        let mean = values(8).ok_or_else(wrong)?;
        let mean_len = if keeps_vectors(want.n, hidden) {
            hidden
        } else {
            0
        };
        if mean.len() != mean_len || !mean.iter().all(|v| v.is_finite()) {
            return Err(wrong());
        }
        Ok((
            CategoryGeometry { a, b },
            (!mean.is_empty()).then_some(mean),
        ))
    }

    /// Row `i` as the category's exact form: its vectors where the file has vector
    /// columns and `keeps_vectors` says so, else its Gram blocks.
    fn blocks(
        &self,
        i: usize,
        want: &Expected,
        hidden: usize,
        path: &Path,
    ) -> Result<CategoryBlocks, CacheError> {
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
        let wrong = || {
            CacheError::new(
                path,
                format!("layer {layer}, category '{category}': a block has the wrong length or values that are no cosines (non-finite, or beyond ±1)"),
            )
        };
        let lengths =
            |lists: &[&ListArray]| lists.iter().map(|l| l.value_length(i)).collect::<Vec<_>>();
        match self.vectors {
            Some(sides) if keeps_vectors(n, hidden) => {
                let [a, b] = sides.map(|l| {
                    let values = l.value(i);
                    values
                        .as_primitive_opt::<Float32Type>()
                        .map(|v| v.values().to_vec())
                        .filter(|v| v.len() == n * hidden && v.iter().all(|x| x.is_finite()))
                });
                let grams_empty = lengths(&self.blocks).iter().all(|&len| len == 0);
                match (a, b) {
                    (Some(a), Some(b)) if grams_empty => Ok(CategoryBlocks::Vectors(
                        CategoryVectors::normalise(&a, &b, n, hidden),
                    )),
                    _ => Err(wrong()),
                }
            }
            sides => {
                if sides.is_some_and(|s| lengths(&s).iter().any(|&len| len != 0)) {
                    return Err(wrong());
                }
                self.gram(i, n).map(CategoryBlocks::Gram).ok_or_else(wrong)
            }
        }
    }

    fn gram(&self, i: usize, n: usize) -> Option<CategoryGram> {
        let triangle = n * (n + 1) / 2;
        let [a, b, ab] = [(0, triangle), (1, triangle), (2, n * n)].map(|(k, len)| {
            let values = self.blocks[k].value(i);
            let values = values
                .as_primitive_opt::<Float64Type>()
                .map(|v| v.values().to_vec());
            // Cosines of vectors normalised to at most unit length: within ±1, and
            // rounding moves them by about 1e-16 (a crafted 2.0 passed).
            values.filter(|v| v.len() == len && v.iter().all(|x| x.abs() <= 1.0 + 1e-9))
        });
        Some(CategoryGram {
            n,
            a: from_upper_triangle(&a?, n),
            b: from_upper_triangle(&b?, n),
            ab: ab?,
        })
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
