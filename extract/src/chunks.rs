//! Resumable partial results: each finished chunk of statements is written as
//! its own pair of Parquet files under `CACHE/NAME/.partial/`
//! (`chunk-NNNNNN.embeddings.parquet`, one row group per layer, then
//! `chunk-NNNNNN.statements.parquet`, whose presence marks the chunk done).
//! `run.json` ties the folder to one set of inputs. At the end the chunks are
//! merged layer by layer into the final files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use schemas::{
    read_embeddings_layer, read_statements, EmbeddingsWriter, FileEntry, Pooling, StatementRow,
};

use crate::dataset::Statement;

pub const PARTIAL_DIR: &str = ".partial";
const RUN_FILE: &str = "run.json";
const RUN_FORMAT: &str = "extract-partial/1";

/// What must match for partial results to be reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunKey {
    pub format: String,
    pub onnx_sha256: String,
    pub tokenizer_sha256: String,
    pub dataset_sha256: String,
    pub poolings: Vec<String>,
    pub n_layers: u32,
    pub hidden_size: u32,
}

impl RunKey {
    pub fn new(
        onnx: &str,
        tokenizer: &str,
        dataset: &str,
        poolings: &[Pooling],
        n_layers: u32,
        hidden_size: u32,
    ) -> RunKey {
        RunKey {
            format: RUN_FORMAT.to_string(),
            onnx_sha256: onnx.to_string(),
            tokenizer_sha256: tokenizer.to_string(),
            dataset_sha256: dataset.to_string(),
            poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
            n_layers,
            hidden_size,
        }
    }

    /// The fields that differ from `other`, for messages.
    pub fn differences(&self, other: &RunKey) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.onnx_sha256 != other.onnx_sha256 {
            d.push("model.onnx");
        }
        if self.tokenizer_sha256 != other.tokenizer_sha256 {
            d.push("tokenizer.json");
        }
        if self.dataset_sha256 != other.dataset_sha256 {
            d.push("dataset");
        }
        if self.poolings != other.poolings {
            d.push("poolings");
        }
        if self.n_layers != other.n_layers
            || self.hidden_size != other.hidden_size
            || self.format != other.format
        {
            d.push("model shape");
        }
        d
    }
}

/// A finished chunk on disk.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub index: u32,
    pub statements: PathBuf,
    pub embeddings: PathBuf,
    pub rows: Vec<StatementRow>,
}

pub struct Partial {
    pub dir: PathBuf,
    pub chunks: Vec<Chunk>,
    key: RunKey,
}

fn chunk_paths(dir: &Path, index: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("chunk-{index:06}.statements.parquet")),
        dir.join(format!("chunk-{index:06}.embeddings.parquet")),
    )
}

impl Partial {
    /// Opens `cache_dir/.partial` (creating it with `run.json` when absent),
    /// refusing one made for other inputs, dropping unfinished files and
    /// checking the finished chunks against the dataset.
    pub fn open(cache_dir: &Path, key: &RunKey, statements: &[Statement]) -> Result<Partial> {
        let dir = cache_dir.join(PARTIAL_DIR);
        let run_path = dir.join(RUN_FILE);
        if dir.is_dir() && run_path.is_file() {
            let text = std::fs::read_to_string(&run_path)
                .with_context(|| format!("cannot read {}", run_path.display()))?;
            let found: RunKey = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: unreadable ({e}); delete {} to start over",
                    run_path.display(),
                    dir.display()
                )
            })?;
            if found != *key {
                bail!(
                    "{} holds an unfinished run for other inputs ({} differ); pick another --name or delete that folder",
                    dir.display(),
                    found.differences(key).join(", ")
                );
            }
        } else {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let tmp = dir.join("run.json.tmp");
            std::fs::write(&tmp, serde_json::to_string_pretty(key)? + "\n")
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &run_path)
                .with_context(|| format!("cannot write {}", run_path.display()))?;
        }

        let mut indices = BTreeSet::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if name.ends_with(".tmp") && name != "run.json.tmp" {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if let Some(idx) = name
                .strip_prefix("chunk-")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<u32>().ok())
            {
                indices.insert(idx);
            }
        }
        let mut chunks = Vec::new();
        let mut seen = vec![false; statements.len()];
        for index in indices {
            let (st, emb) = chunk_paths(&dir, index);
            if !st.is_file() || !emb.is_file() {
                // never finished: its statements file is written last
                let _ = std::fs::remove_file(&st);
                let _ = std::fs::remove_file(&emb);
                continue;
            }
            let rows = read_statements(&st).with_context(|| {
                format!(
                    "unusable partial result; delete {} to start over",
                    dir.display()
                )
            })?;
            for r in &rows {
                let id = r.statement_id as usize;
                let ok = statements.get(id).is_some_and(|s| {
                    s.text == r.text && s.side == r.side && s.category == r.category
                });
                if !ok || seen[id] {
                    bail!(
                        "{}: statement {} does not belong here ({}); delete {} to start over",
                        st.display(),
                        r.statement_id,
                        if ok {
                            "seen twice"
                        } else {
                            "not in this dataset"
                        },
                        dir.display()
                    );
                }
                seen[id] = true;
            }
            chunks.push(Chunk {
                index,
                statements: st,
                embeddings: emb,
                rows,
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

    /// Writes a finished chunk: `rows[i]` with `pooled[i]`, the layout of
    /// [`crate::runtime::BatchResult::pooled`]. Rows are stored by statement id.
    pub fn write_chunk(&mut self, mut items: Vec<(StatementRow, Vec<f32>)>) -> Result<()> {
        items.sort_by_key(|(r, _)| r.statement_id);
        let index = self.chunks.last().map(|c| c.index + 1).unwrap_or(0);
        let (st, emb) = chunk_paths(&self.dir, index);
        let poolings = self.poolings();
        let (l1, h, np) = (
            self.key.n_layers as usize + 1,
            self.key.hidden_size as usize,
            poolings.len(),
        );
        let ids: Vec<u32> = items.iter().map(|(r, _)| r.statement_id).collect();
        let mut writer = EmbeddingsWriter::create(&emb, h, &poolings)?;
        for l in 0..l1 {
            let blocks: Vec<Vec<f32>> = (0..np)
                .map(|k| {
                    items
                        .iter()
                        .flat_map(|(_, v)| v[(l * np + k) * h..][..h].iter().copied())
                        .collect()
                })
                .collect();
            writer.write_layer(l as u32, &ids, blocks)?;
        }
        writer.finish()?;
        let rows: Vec<StatementRow> = items.into_iter().map(|(r, _)| r).collect();
        schemas::write_statements(&st, &rows)?;
        self.chunks.push(Chunk {
            index,
            statements: st,
            embeddings: emb,
            rows,
        });
        Ok(())
    }

    /// Merges the chunks into `out_dir`'s final files, layer by layer, rows by
    /// statement id; every statement must be present exactly once.
    pub fn assemble(&self, out_dir: &Path, n_statements: usize) -> Result<(FileEntry, FileEntry)> {
        let poolings = self.poolings();
        let (l1, h) = (
            self.key.n_layers as usize + 1,
            self.key.hidden_size as usize,
        );
        let mut rows: Vec<StatementRow> = self
            .chunks
            .iter()
            .flat_map(|c| c.rows.iter().cloned())
            .collect();
        rows.sort_by_key(|r| r.statement_id);
        if rows.len() != n_statements
            || rows
                .iter()
                .enumerate()
                .any(|(i, r)| r.statement_id as usize != i)
        {
            bail!(
                "{}: the chunks do not hold every statement exactly once; delete it and rerun",
                self.dir.display()
            );
        }
        let emb_path = out_dir.join(schemas::EMBEDDINGS_FILE);
        let mut writer = EmbeddingsWriter::create(&emb_path, h, &poolings)?;
        for l in 0..l1 {
            let mut blocks = Vec::with_capacity(self.chunks.len());
            for c in &self.chunks {
                let b = read_embeddings_layer(&c.embeddings, l, &poolings)?;
                if b.layer as usize != l || b.statement_ids.len() != c.rows.len() {
                    bail!(
                        "{}: row group {l} is not layer {l} of this chunk; delete {} and rerun",
                        c.embeddings.display(),
                        self.dir.display()
                    );
                }
                blocks.push(b);
            }
            // (statement id, block, row)
            let mut order: Vec<(u32, usize, usize)> = blocks
                .iter()
                .enumerate()
                .flat_map(|(bi, b)| {
                    b.statement_ids
                        .iter()
                        .enumerate()
                        .map(move |(ri, &id)| (id, bi, ri))
                })
                .collect();
            order.sort_unstable();
            if order.len() != n_statements
                || order
                    .iter()
                    .enumerate()
                    .any(|(i, &(id, _, _))| id as usize != i)
            {
                bail!(
                    "{}: layer {l} does not hold every statement exactly once; delete it and rerun",
                    self.dir.display()
                );
            }
            let ids: Vec<u32> = order.iter().map(|&(id, _, _)| id).collect();
            let vectors: Vec<Vec<f32>> = poolings
                .iter()
                .map(|p| {
                    let mut v = Vec::with_capacity(n_statements * h);
                    for &(_, bi, ri) in &order {
                        v.extend_from_slice(&blocks[bi].vectors[p][ri * h..(ri + 1) * h]);
                    }
                    v
                })
                .collect();
            writer.write_layer(l as u32, &ids, vectors)?;
        }
        let emb = writer.finish()?;
        let st = schemas::write_statements(&out_dir.join(schemas::STATEMENTS_FILE), &rows)?;
        Ok((st, emb))
    }

    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}
