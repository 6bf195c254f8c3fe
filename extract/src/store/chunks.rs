//! Resumable partial results: each finished chunk of statements is written as
//! its own files under `CACHE/NAME/.partial/` (`chunk-NNNNNN.vectors`, the pooled
//! vectors in the scratch form of [`crate::store::vectors`], then `chunk-NNNNNN.run.json`,
//! how it was computed, then `chunk-NNNNNN.statements.parquet`, whose presence
//! marks the chunk done).
//! `run.json` ties the folder to one set of inputs and settings. At the end the
//! chunks are merged layer by layer into the final files ([`crate::store::assemble`]). Everything here runs
//! under the cache's lock ([`schemas::CacheLock`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use schemas::{read_statements, ChunkInfo, Pooling, StatementRow};

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
    pub vectors: ChunkVectors,
}

/// Where a finished chunk's vectors are.
#[derive(Debug)]
pub enum ChunkVectors {
    /// Saved in `.partial/` (vectors file in the order of `rows`): a resumed run finds it.
    Saved,
    /// Held in memory until the next save ([`Partial::save`]): `rows[i]`'s vectors
    /// are `buffer[order[i] * stride..][..stride]`, as the host thread collected them.
    Held { buffer: Vec<f32>, order: Vec<usize> },
}

pub struct Partial {
    pub dir: PathBuf,
    pub chunks: Vec<Chunk>,
    pub key: RunKey,
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
                vectors: ChunkVectors::Saved,
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

    pub fn poolings(&self) -> Vec<Pooling> {
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
            vectors: ChunkVectors::Held {
                buffer: vectors,
                order,
            },
        });
    }

    /// Floats held in memory by chunks not yet saved.
    pub fn held_floats(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match &c.vectors {
                ChunkVectors::Held { buffer, .. } => buffer.len(),
                ChunkVectors::Saved => 0,
            })
            .sum()
    }

    /// Writes every chunk held in memory to `.partial/` (vectors, run info, then the
    /// statements file that marks it done), so that a killed run resumes from it.
    /// Returns the buffers it no longer needs, for the next chunks.
    pub fn save(&mut self) -> Result<Vec<Vec<f32>>> {
        let mut freed = Vec::new();
        for chunk in &mut self.chunks {
            let ChunkVectors::Held { buffer, order } = &chunk.vectors else {
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
            if let ChunkVectors::Held { mut buffer, .. } =
                std::mem::replace(&mut chunk.vectors, ChunkVectors::Saved)
            {
                buffer.clear();
                freed.push(buffer);
            }
        }
        Ok(freed)
    }

    /// The vectors file of chunk `index`.
    pub fn vectors_path(&self, index: u32) -> PathBuf {
        chunk_paths(&self.dir, index).vectors
    }

    /// What each chunk is, for the manifest.
    pub fn chunk_infos(&self) -> Vec<ChunkInfo> {
        self.chunks.iter().map(|c| c.info.clone()).collect()
    }

    pub fn remove(self) -> Result<()> {
        remove_leftovers(self.dir.parent().unwrap_or(Path::new(".")))
    }
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
