//! Cache discovery and validation (through `schemas`), and polars reading of one
//! layer and pooling at a time into a contiguous matrix, plus the statements.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;
use rayon::prelude::*;
use schemas::{Manifest, Pooling, Scope, Side, ValidCache, EMBEDDINGS_FILE, STATEMENTS_FILE};

/// One model's validated cache, with where its size estimate came from.
#[derive(Debug, Clone)]
pub struct ModelCache {
    pub name: String,
    pub cache: ValidCache,
    /// Parameter count used to order models.
    pub size: u64,
    /// True when the manifest gave no parameter count and `n_layers * hidden^2` stands in.
    pub size_estimated: bool,
}

impl ModelCache {
    pub fn manifest(&self) -> &Manifest {
        &self.cache.manifest
    }
    pub fn display(&self) -> &str {
        &self.cache.manifest.model.display_name
    }
    pub fn n_layers(&self) -> u32 {
        self.cache.manifest.model.n_layers
    }
    pub fn hidden(&self) -> usize {
        self.cache.manifest.model.hidden_size as usize
    }
}

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
        crate::identity::check_names(only)?;
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
/// implausible sizes (`size`), and orders them by parameter count.
pub fn discover(
    cache: &Path,
    only: Option<&[String]>,
    allow_mixed: bool,
    scope: Scope,
) -> Result<Vec<ModelCache>> {
    let dirs = model_dirs(cache, only)?;
    crate::identity::check_same_folders(&dirs)?;
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
        let (size, size_estimated) =
            crate::size::size_for_ordering(&manifest_path, &cache.manifest.model)?;
        models.push(ModelCache {
            name,
            cache,
            size,
            size_estimated,
        });
    }
    crate::identity::check_same_weights(&models)?;
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
    models.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.name.cmp(&b.name)));
    Ok(models)
}

/// Row indices of a pair's A and B statements, while they are being collected.
type SidesOfPair = (Option<usize>, Option<usize>);

/// A statement pair: the row indices (into the statement order) of its A and B sides.
#[derive(Debug, Clone)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    /// `NLL(B) - NLL(A)`: positive means the model prefers A.
    pub pref: f64,
}

/// The statements of one model's cache, grouped by category (dataset order) and
/// pair (pair_index order).
#[derive(Debug, Clone)]
pub struct Statements {
    /// Statement ids in file order; `row_of[id]` maps back.
    pub ids: Vec<u32>,
    pub row_of: BTreeMap<u32, usize>,
    pub categories: Vec<String>,
    /// Per category, its pairs in pair_index order.
    pub pairs: Vec<Vec<Pair>>,
    pub nll_mean: Vec<f64>,
    pub category: Vec<String>,
    pub pair_index: Vec<u32>,
    pub side: Vec<String>,
    pub text: Vec<String>,
}

/// Reads `columns` of the rows `slice = (offset, len)` (all rows when None) with
/// polars' Parquet reader, which decodes only the row groups the slice touches.
fn read_parquet(path: &Path, columns: &[&str], slice: Option<(usize, usize)>) -> Result<DataFrame> {
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("{}: cannot open: {e}", path.display()))?;
    ParquetReader::new(file)
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .with_slice(slice)
        .read_parallel(ParallelStrategy::None)
        .finish()
        .map_err(|e| anyhow!("{}: not a readable Parquet file: {e}", path.display()))
}

/// Reads `statements.parquet` with polars and pairs A with B per category.
pub fn read_statements(model: &ModelCache) -> Result<Statements> {
    let path = model.cache.dir.join(STATEMENTS_FILE);
    let df = read_parquet(
        &path,
        &[
            "statement_id",
            "category",
            "pair_index",
            "side",
            "text",
            "nll_mean",
        ],
        None,
    )?;
    let err = |e: PolarsError| anyhow!("{}: {e}", path.display());
    let ids: Vec<u32> = df
        .column("statement_id")
        .map_err(err)?
        .u32()
        .map_err(err)?
        .into_no_null_iter()
        .collect();
    let strs = |name: &str| -> Result<Vec<String>> {
        Ok(df
            .column(name)
            .map_err(err)?
            .str()
            .map_err(err)?
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect())
    };
    let category = strs("category")?;
    let side = strs("side")?;
    let text = strs("text")?;
    let pair_index: Vec<u32> = df
        .column("pair_index")
        .map_err(err)?
        .u32()
        .map_err(err)?
        .into_no_null_iter()
        .collect();
    let nll_mean: Vec<f64> = df
        .column("nll_mean")
        .map_err(err)?
        .f64()
        .map_err(err)?
        .into_no_null_iter()
        .collect();

    let rows: Vec<(u32, &str)> = ids
        .iter()
        .copied()
        .zip(text.iter().map(String::as_str))
        .collect();
    let recorded = model.manifest().dataset.statements_sha256.as_deref();
    crate::digest::check(&path, recorded, &rows)?;

    let categories = model.manifest().dataset.categories.clone();
    let mut sides: Vec<BTreeMap<u32, SidesOfPair>> = vec![BTreeMap::new(); categories.len()];
    let mut row_of = BTreeMap::new();
    for (row, &id) in ids.iter().enumerate() {
        if row_of.insert(id, row).is_some() {
            bail!("{}: statement_id {id} appears twice", path.display());
        }
        if !nll_mean[row].is_finite() {
            bail!(
                "{}: statement {id} has a non-finite nll_mean",
                path.display()
            );
        }
        let c = categories
            .iter()
            .position(|c| *c == category[row])
            .ok_or_else(|| {
                anyhow!(
                    "{}: statement {id} has category '{}' which the manifest does not list",
                    path.display(),
                    category[row]
                )
            })?;
        let slot = sides[c].entry(pair_index[row]).or_default();
        let s: Side = side[row]
            .parse()
            .map_err(|e: String| anyhow!("{}: {e}", path.display()))?;
        let target = match s {
            Side::A => &mut slot.0,
            Side::B => &mut slot.1,
        };
        if target.replace(row).is_some() {
            bail!(
                "{}: category '{}' pair {} has two {} sides",
                path.display(),
                category[row],
                pair_index[row],
                s.as_str()
            );
        }
    }
    let mut pairs = Vec::new();
    for (c, map) in sides.into_iter().enumerate() {
        let mut list = Vec::new();
        for (pi, (a, b)) in map {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                _ => bail!(
                    "{}: category '{}' pair {pi} lacks its A or B side",
                    path.display(),
                    categories[c]
                ),
            };
            list.push(Pair {
                a,
                b,
                pref: nll_mean[b] - nll_mean[a],
            });
        }
        if list.len() < 2 {
            bail!(
                "{}: category '{}' has {} pairs; uniformity needs at least 2",
                path.display(),
                categories[c],
                list.len()
            );
        }
        pairs.push(list);
    }
    Ok(Statements {
        ids,
        row_of,
        categories,
        pairs,
        nll_mean,
        category,
        pair_index,
        side,
        text,
    })
}

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
    let hidden = model.hidden();
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
    let mut out = vec![0f32; n * hidden];
    for (k, id) in ids.into_no_null_iter().enumerate() {
        let row = *stmts.row_of.get(&id).ok_or_else(|| {
            anyhow!(
                "{}: layer {layer} has statement_id {id} not in statements.parquet",
                path.display()
            )
        })?;
        out[row * hidden..(row + 1) * hidden]
            .copy_from_slice(&values[k * hidden..(k + 1) * hidden]);
    }
    if values.iter().any(|v| !v.is_finite()) {
        bail!(
            "{}: layer {layer} ({pooling}) holds non-finite values",
            path.display()
        );
    }
    Ok(out)
}
