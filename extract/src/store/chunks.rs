//! Resumable partial results: each finished chunk of statements is written as
//! its own files under `CACHE/NAME/.partial/` (`chunk-NNNNNN.vectors`, the pooled
//! vectors in the scratch form of [`crate::store::vectors`], then `chunk-NNNNNN.run.json`,
//! how it was computed, then `chunk-NNNNNN.statements.parquet`, whose presence
//! marks the chunk done).
//! `run.json` ties the folder to one set of inputs and settings. At the end the
//! chunks are merged layer by layer into the final files. Everything here runs
//! under the cache's lock ([`schemas::CacheLock`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::buffer::ScalarBuffer;
use serde::{Deserialize, Serialize};

use schemas::{
    read_embeddings_layer, read_statements, ChunkInfo, EmbeddingsWriter, FileEntry, GramsWriter,
    LayerBlock, Manifest, Pooling, StatementRow,
};

use crate::inputs::dataset::Statement;
use crate::inputs::shard::Shard;
use crate::store::vectors::{self, Shape};

pub const PARTIAL_DIR: &str = ".partial";
const RUN_FILE: &str = "run.json";
const RUN_FORMAT: &str = "extract-partial/3";

/// What must match for partial results (or a complete cache) to belong to a run:
/// the same weights, tokenizer, dataset and output shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    /// sha256 of every file of the model directory, by name (external weights included).
    pub model_files: BTreeMap<String, String>,
    pub dtype: String,
    pub dataset_sha256: String,
    pub poolings: Vec<String>,
    pub n_layers: u32,
    pub hidden_size: u32,
    /// `(index, count)` of a shard cache (`--shard`); absent for a whole cache.
    #[serde(default)]
    pub shard: Option<(u32, u32)>,
}

impl RunKey {
    /// The shape of a chunk of `rows` statements' vectors.
    pub fn vectors_shape(&self, rows: usize) -> Shape {
        Shape {
            rows,
            layers: self.n_layers as usize + 1,
            poolings: self.poolings.len(),
            hidden: self.hidden_size as usize,
        }
    }

    /// What differs from `other`, for messages.
    pub fn differences(&self, other: &RunKey) -> Vec<String> {
        let mut d: Vec<String> = Vec::new();
        let names: BTreeSet<&String> = self
            .model_files
            .keys()
            .chain(other.model_files.keys())
            .collect();
        for name in names {
            if self.model_files.get(name) != other.model_files.get(name) {
                d.push(name.clone());
            }
        }
        if self.dtype != other.dtype {
            d.push("dtype".into());
        }
        if self.dataset_sha256 != other.dataset_sha256 {
            d.push("dataset".into());
        }
        if self.poolings != other.poolings {
            d.push("poolings".into());
        }
        if self.n_layers != other.n_layers || self.hidden_size != other.hidden_size {
            d.push("model shape".into());
        }
        if self.shard != other.shard {
            d.push("shard".into());
        }
        d
    }
}

/// How the chunks are computed. Chunks of other settings hold the same quantities
/// but not bit for bit the same numbers, so mixing them takes `--force-resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub execution_provider: String,
    pub batch_size: u32,
    pub max_tokens: Option<u32>,
}

impl Settings {
    fn differences(&self, other: &Settings) -> Vec<String> {
        let mut d = Vec::new();
        if self.execution_provider != other.execution_provider {
            d.push(format!(
                "execution provider {} -> {}",
                self.execution_provider, other.execution_provider
            ));
        }
        if self.batch_size != other.batch_size {
            d.push(format!(
                "batch size {} -> {}",
                self.batch_size, other.batch_size
            ));
        }
        if self.max_tokens != other.max_tokens {
            let show = |t: Option<u32>| t.map_or("none".to_string(), |t| t.to_string());
            d.push(format!(
                "max tokens {} -> {}",
                show(self.max_tokens),
                show(other.max_tokens)
            ));
        }
        d
    }
}

/// `.partial/run.json`: ties the folder to one set of inputs and settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RunFile {
    format: String,
    key: RunKey,
    settings: Settings,
}

/// A finished chunk.
#[derive(Debug)]
pub struct Chunk {
    pub info: ChunkInfo,
    /// By statement id.
    pub rows: Vec<StatementRow>,
    pub stored: Stored,
}

/// Where a finished chunk's vectors are.
#[derive(Debug)]
pub enum Stored {
    /// In `.partial/` (vectors file in the order of `rows`): a resumed run finds it.
    Files,
    /// Held in memory until the next save ([`Partial::save`]): `rows[i]`'s vectors
    /// are `buffer[order[i] * stride..][..stride]`, as the writer collected them.
    Memory { buffer: Vec<f32>, order: Vec<usize> },
}

pub struct Partial {
    pub dir: PathBuf,
    pub chunks: Vec<Chunk>,
    key: RunKey,
}

/// A chunk's files: vectors first, then its run info, then its statements,
/// whose presence marks the chunk finished.
struct ChunkPaths {
    vectors: PathBuf,
    info: PathBuf,
    statements: PathBuf,
}

impl ChunkPaths {
    fn remove(&self) {
        for p in [&self.statements, &self.info, &self.vectors] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn chunk_paths(dir: &Path, index: u32) -> ChunkPaths {
    let name = |what: &str| dir.join(format!("chunk-{index:06}.{what}"));
    ChunkPaths {
        vectors: name("vectors"),
        info: name("run.json"),
        statements: name("statements.parquet"),
    }
}

/// Creates `dir` with its run file, or checks that the unfinished run there is of
/// the same inputs and (unless `force`) settings.
fn check_run_file(dir: &Path, key: &RunKey, settings: &Settings, force: bool) -> Result<()> {
    let run_path = dir.join(RUN_FILE);
    let wanted = RunFile {
        format: RUN_FORMAT.to_string(),
        key: key.clone(),
        settings: settings.clone(),
    };
    if !run_path.is_file() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        return Ok(schemas::write_json(&run_path, &wanted)?);
    }
    let text = std::fs::read_to_string(&run_path)
        .with_context(|| format!("cannot read {}", run_path.display()))?;
    let found: RunFile = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: unreadable or from an older extract ({e}); {}",
            run_path.display(),
            start_over(dir)
        )
    })?;
    if found.format != RUN_FORMAT {
        bail!(
            "{} holds an unfinished run of another version of extract ({}, this one writes {RUN_FORMAT}); {}",
            dir.display(),
            found.format,
            start_over(dir)
        );
    }
    let inputs = found.key.differences(key);
    if !inputs.is_empty() {
        bail!(
            "{} holds an unfinished run for other inputs ({} differ); pick another --name or delete that folder",
            dir.display(),
            inputs.join(", ")
        );
    }
    let changed = found.settings.differences(settings);
    if changed.is_empty() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} holds an unfinished run made with other settings ({}); rerun with the earlier settings, or pass --force-resume to combine both (each chunk's provider is recorded in the manifest)",
            dir.display(),
            changed.join(", ")
        );
    }
    Ok(schemas::write_json(&run_path, &wanted)?)
}

/// The indices of the chunk files in `dir`, finished or not.
fn chunk_indices(dir: &Path) -> Result<BTreeSet<u32>> {
    let mut indices = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(idx) = name
            .strip_prefix("chunk-")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<u32>().ok())
        {
            indices.insert(idx);
        }
    }
    Ok(indices)
}

fn start_over(dir: &Path) -> String {
    format!("delete {} to start over", dir.display())
}

impl Partial {
    /// Opens `cache_dir/.partial` (creating it with `run.json` when absent) while
    /// the caller holds the cache's lock: refuses one made for other inputs, and one
    /// made with other settings unless `force`; drops unfinished chunks and temp
    /// files; checks the finished chunks against the dataset.
    pub fn open(
        cache_dir: &Path,
        key: &RunKey,
        settings: &Settings,
        force: bool,
        statements: &[Statement],
    ) -> Result<Partial> {
        let dir = cache_dir.join(PARTIAL_DIR);
        check_run_file(&dir, key, settings, force)?;
        schemas::remove_temp_files(&dir)?;
        let mut chunks = Vec::new();
        let mut seen = vec![false; statements.len()];
        let shard = key.shard.map(|(index, count)| Shard { index, count });
        for index in chunk_indices(&dir)? {
            let paths = chunk_paths(&dir, index);
            if !paths.statements.is_file() {
                // never finished: its statements file is written last
                paths.remove();
                continue;
            }
            let unusable = || format!("unusable partial result; {}", start_over(&dir));
            let info: ChunkInfo = std::fs::read_to_string(&paths.info)
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(serde_json::from_str(&t)?))
                .with_context(|| format!("{}: cannot read", paths.info.display()))
                .with_context(unusable)?;
            let rows = read_statements(&paths.statements).with_context(unusable)?;
            let shape = key.vectors_shape(rows.len());
            // Unsynced scratch (see crate::store::vectors): after a machine crash its bytes
            // may be gone while the statements file that marks it done survived.
            if let Err(e) = vectors::check(&paths.vectors, shape) {
                eprintln!(
                    "extract: {e}; its {} statements will be computed again",
                    rows.len()
                );
                paths.remove();
                continue;
            }
            for r in &rows {
                let id = r.statement_id as usize;
                let ok = statements.get(id).is_some_and(|s| {
                    s.text == r.text && s.side == r.side && s.category == r.category
                }) && shard.is_none_or(|s| s.contains(r.statement_id));
                if !ok || seen[id] {
                    bail!(
                        "{}: statement {} does not belong here ({}); {}",
                        paths.statements.display(),
                        r.statement_id,
                        if ok {
                            "seen twice"
                        } else {
                            "not in this dataset or shard"
                        },
                        start_over(&dir)
                    );
                }
                seen[id] = true;
            }
            chunks.push(Chunk {
                info,
                rows,
                stored: Stored::Files,
            });
        }
        Ok(Partial {
            dir,
            chunks,
            key: key.clone(),
        })
    }

    /// Statement ids already done.
    pub fn done(&self) -> BTreeSet<u32> {
        self.chunks
            .iter()
            .flat_map(|c| c.rows.iter().map(|r| r.statement_id))
            .collect()
    }

    fn poolings(&self) -> Vec<Pooling> {
        self.key
            .poolings
            .iter()
            .map(|p| p.parse().expect("poolings came from Pooling"))
            .collect()
    }

    /// Takes a finished chunk: `rows[i]` with the pooled vectors
    /// `vectors[i * stride..][..stride]` (`stride` = layers x poolings x hidden, in the
    /// layout of [`crate::model::forward::BatchOut::pooled_row`]), computed as `settings` and
    /// `device_name` say. It is held in memory until the next [`Self::save`].
    pub fn add_chunk(
        &mut self,
        rows: Vec<StatementRow>,
        vectors: Vec<f32>,
        settings: &Settings,
        device_name: &str,
    ) {
        let stride = self.key.vectors_shape(rows.len()).stride();
        assert_eq!(vectors.len(), rows.len() * stride, "one stride per row");
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].statement_id);
        let index = self.chunks.last().map(|c| c.info.index + 1).unwrap_or(0);
        let info = ChunkInfo {
            index,
            n_statements: rows.len() as u32,
            execution_provider: settings.execution_provider.clone(),
            device_name: device_name.to_string(),
            batch_size: settings.batch_size,
            max_tokens: settings.max_tokens,
            shard: None,
        };
        let rows: Vec<StatementRow> = order.iter().map(|&i| rows[i].clone()).collect();
        self.chunks.push(Chunk {
            info,
            rows,
            stored: Stored::Memory {
                buffer: vectors,
                order,
            },
        });
    }

    /// Floats held in memory by chunks not yet saved.
    pub fn held_floats(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match &c.stored {
                Stored::Memory { buffer, .. } => buffer.len(),
                Stored::Files => 0,
            })
            .sum()
    }

    /// Writes every chunk held in memory to `.partial/` (vectors, run info, then the
    /// statements file that marks it done), so that a killed run resumes from it.
    /// Returns the buffers it no longer needs, for the next chunks.
    pub fn save(&mut self) -> Result<Vec<Vec<f32>>> {
        let mut freed = Vec::new();
        for chunk in &mut self.chunks {
            let Stored::Memory { buffer, order } = &chunk.stored else {
                continue;
            };
            let paths = chunk_paths(&self.dir, chunk.info.index);
            let shape = self.key.vectors_shape(chunk.rows.len());
            let stride = shape.stride();
            let slices: Vec<&[f32]> = order
                .iter()
                .map(|&i| &buffer[i * stride..][..stride])
                .collect();
            vectors::write(&paths.vectors, shape, &slices)?;
            schemas::write_json(&paths.info, &chunk.info)?;
            schemas::write_statements(&paths.statements, &chunk.rows)?;
            if let Stored::Memory { mut buffer, .. } =
                std::mem::replace(&mut chunk.stored, Stored::Files)
            {
                buffer.clear();
                freed.push(buffer);
            }
        }
        Ok(freed)
    }

    /// What each chunk is, for the manifest.
    pub fn chunk_infos(&self) -> Vec<ChunkInfo> {
        self.chunks.iter().map(|c| c.info.clone()).collect()
    }

    /// Merges the chunks into `out_dir`'s final files, layer by layer, rows by
    /// statement id, computing the sidecar from each layer on the way; every statement
    /// of `ids` (ascending) must be present exactly once. Lists the three files in
    /// `m.files` (and the sidecar in `m.grams`); returns the time the sidecar took.
    pub fn assemble(&self, out_dir: &Path, ids: &[u32], m: &mut Manifest) -> Result<Duration> {
        let mut rows: Vec<StatementRow> = self
            .chunks
            .iter()
            .flat_map(|c| c.rows.iter().cloned())
            .collect();
        rows.sort_by_key(|r| r.statement_id);
        if !rows.iter().map(|r| r.statement_id).eq(ids.iter().copied()) {
            bail!(
                "{}: the chunks do not hold every statement exactly once; delete it and rerun",
                self.dir.display()
            );
        }
        let sources: Vec<Source> = self
            .chunks
            .iter()
            .map(|c| {
                let ids = c.rows.iter().map(|r| r.statement_id).collect();
                let shape = self.key.vectors_shape(c.rows.len());
                match &c.stored {
                    Stored::Files => Source::Chunk {
                        path: chunk_paths(&self.dir, c.info.index).vectors,
                        ids,
                        shape,
                    },
                    Stored::Memory { buffer, order } => Source::Memory {
                        buffer,
                        order,
                        ids,
                        shape,
                    },
                }
            })
            .collect();
        let mut grams = GramsWriter::create(out_dir, m, &rows)?;
        let (emb, sidecar) = combine_layers(
            &out_dir.join(schemas::EMBEDDINGS_FILE),
            &sources,
            ids,
            &self.poolings(),
            self.key.n_layers as usize + 1,
            self.key.hidden_size as usize,
            &mut grams,
        )
        .with_context(|| format!("delete {} and rerun", self.dir.display()))?;
        let st = schemas::write_statements(&out_dir.join(schemas::STATEMENTS_FILE), &rows)?;
        m.files.insert(schemas::STATEMENTS_FILE.to_string(), st);
        m.files.insert(schemas::EMBEDDINGS_FILE.to_string(), emb);
        let t = Instant::now();
        grams.finish(m)?;
        Ok(sidecar + t.elapsed())
    }

    pub fn remove(self) -> Result<()> {
        remove_leftovers(self.dir.parent().unwrap_or(Path::new(".")))
    }
}

/// Where [`combine_layers`] reads some statements of every layer from.
pub enum Source<'a> {
    /// A cache's `embeddings.parquet` (a shard's, for `extract merge`).
    Embeddings(PathBuf),
    /// A chunk's vectors file (`ids` in the file's row order).
    Chunk {
        path: PathBuf,
        ids: Vec<u32>,
        shape: Shape,
    },
    /// A chunk held in memory ([`Stored::Memory`]; `ids[i]` at row `order[i]`).
    Memory {
        buffer: &'a [f32],
        order: &'a [usize],
        ids: Vec<u32>,
        shape: Shape,
    },
}

impl Source<'_> {
    /// Where the statements come from, for a message.
    fn origin(&self) -> String {
        match self {
            Source::Embeddings(path) | Source::Chunk { path, .. } => path.display().to_string(),
            Source::Memory { .. } => "a chunk held in memory".to_string(),
        }
    }

    /// Layer `l` of this source's statements.
    fn layer(&self, l: usize, poolings: &[Pooling]) -> Result<Loaded<'_>> {
        match self {
            Source::Embeddings(path) => {
                let b = read_embeddings_layer(path, l, poolings)?;
                if b.layer as usize != l {
                    bail!("{}: row group {l} is not layer {l}", path.display());
                }
                Ok(Loaded::Read(b))
            }
            Source::Chunk { path, ids, shape } => {
                let blocks = vectors::Vectors::open(path, *shape)?.layer(l, path)?;
                Ok(Loaded::Read(LayerBlock {
                    layer: l as u32,
                    statement_ids: ids.clone(),
                    vectors: poolings.iter().copied().zip(blocks).collect(),
                }))
            }
            Source::Memory {
                buffer,
                order,
                ids,
                shape,
            } => Ok(Loaded::Held {
                buffer,
                order,
                ids,
                shape: *shape,
                l,
            }),
        }
    }
}

/// One layer of a [`Source`]: read from its file, or a held chunk's buffer lent as
/// it is, so that putting the rows in order is the only copy.
enum Loaded<'a> {
    Read(LayerBlock),
    Held {
        buffer: &'a [f32],
        order: &'a [usize],
        ids: &'a [u32],
        shape: Shape,
        l: usize,
    },
}

impl Loaded<'_> {
    fn ids(&self) -> &[u32] {
        match self {
            Loaded::Read(b) => &b.statement_ids,
            Loaded::Held { ids, .. } => ids,
        }
    }

    /// Row `i`'s vector (`h` floats) of pooling `p`, the `k`-th of the run's poolings.
    fn vector(&self, k: usize, p: Pooling, i: usize, h: usize) -> &[f32] {
        match self {
            Loaded::Read(b) => &b.vectors[&p][i * h..][..h],
            Loaded::Held {
                buffer,
                order,
                shape,
                l,
                ..
            } => &buffer[order[i] * shape.stride() + (l * shape.poolings + k) * h..][..h],
        }
    }
}

/// Writes `out` from sources that each hold some statements of every
/// layer: layer by layer, rows by statement id, so the result is byte for byte what
/// one writer of all rows would produce. Every id of `ids` (ascending) must be in
/// exactly one source. Each layer also goes to `grams`, so the sidecar needs no
/// second read of the embeddings; returns the time that took.
///
/// Three threads: one reads and orders layer l+1 while another computes layer l's
/// Gram blocks and this one encodes and writes it, so the file's sequential
/// encoding is not also waiting on the sidecar's arithmetic.
pub fn combine_layers(
    out: &Path,
    sources: &[Source<'_>],
    ids: &[u32],
    poolings: &[Pooling],
    n_layer_rows: usize,
    hidden: usize,
    grams: &mut GramsWriter,
) -> Result<(FileEntry, Duration)> {
    // Shared by the two consumers without a copy.
    type Layer = Vec<ScalarBuffer<f32>>;
    let mut writer = EmbeddingsWriter::create(out, hidden, poolings)?;
    let (to_grams, for_grams) = sync_channel::<Layer>(1);
    let (to_writer, for_writer) = sync_channel::<Layer>(1);
    let (read, sidecar, written) = std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<()> {
            for l in 0..n_layer_rows {
                let layer: Layer = layer_in_order(sources, ids, poolings, hidden, l)?
                    .into_iter()
                    .map(ScalarBuffer::from)
                    .collect();
                // A consumer that hung up failed: its error is the one to report.
                if to_grams.send(layer.clone()).is_err() || to_writer.send(layer).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let sidecar = s.spawn(move || -> Result<Duration> {
            let mut busy = Duration::ZERO;
            for (l, layer) in for_grams.iter().enumerate() {
                let t = Instant::now();
                let by_pooling: BTreeMap<Pooling, &ScalarBuffer<f32>> =
                    poolings.iter().copied().zip(&layer).collect();
                grams.add_layer(l as u32, &by_pooling)?;
                busy += t.elapsed();
            }
            Ok(busy)
        });
        // Owns its receiver, so an early return hangs up on the reader and it stops.
        let file = &mut writer;
        let written = (move || -> Result<usize> {
            let mut n = 0;
            for (l, layer) in for_writer.iter().enumerate() {
                file.write_layer(l as u32, ids, layer)?;
                n += 1;
            }
            Ok(n)
        })();
        (join(reader), join(sidecar), written)
    });
    read?;
    let sidecar = sidecar?;
    if written? != n_layer_rows {
        bail!(
            "{}: fewer layers written than {n_layer_rows}",
            out.display()
        );
    }
    Ok((writer.finish()?, sidecar))
}

/// A scoped thread's result, its panic passed on.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Layer `l` of every source, rows by statement id: one `ids.len() x hidden` block
/// per pooling.
fn layer_in_order(
    sources: &[Source<'_>],
    ids: &[u32],
    poolings: &[Pooling],
    hidden: usize,
    l: usize,
) -> Result<Vec<Vec<f32>>> {
    let loaded: Vec<Loaded> = sources
        .iter()
        .map(|src| src.layer(l, poolings))
        .collect::<Result<_>>()?;
    // (statement id, source, row)
    let mut order: Vec<(u32, usize, usize)> = loaded
        .iter()
        .enumerate()
        .flat_map(|(si, b)| {
            b.ids()
                .iter()
                .enumerate()
                .map(move |(ri, &id)| (id, si, ri))
        })
        .collect();
    order.sort_unstable();
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!(
            "{}: layer {l} holds statement_id {} a second time (also in {}); each statement must be there once",
            sources[w[1].1].origin(),
            w[1].0,
            sources[w[0].1].origin()
        );
    }
    if !order.iter().map(|&(id, _, _)| id).eq(ids.iter().copied()) {
        bail!("layer {l} of the sources does not hold every statement exactly once");
    }
    Ok(poolings
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let mut v = Vec::with_capacity(ids.len() * hidden);
            for &(_, si, ri) in &order {
                v.extend_from_slice(loaded[si].vector(k, p, ri, hidden));
            }
            v
        })
        .collect())
}

/// Removes `.partial/` and temp files from a cache folder whose manifest already
/// says complete (a run killed after its final manifest leaves them). Only under
/// the cache's lock.
pub fn remove_leftovers(cache_dir: &Path) -> Result<()> {
    let dir = cache_dir.join(PARTIAL_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    schemas::remove_temp_files(cache_dir)?;
    schemas::sync_dir(cache_dir).with_context(|| format!("cannot sync {}", cache_dir.display()))
}
