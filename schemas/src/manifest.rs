//! `manifest.json`: provenance, row counts, the files' sha256, `complete`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CacheError, FileEntry, Pooling};

/// `manifest.json`: provenance of one model's cache and the state of its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// True only once every data file is written whole and listed in `files`.
    pub complete: bool,
    pub model: ModelInfo,
    pub dataset: DatasetInfo,
    pub run: RunInfo,
    /// Keyed by file name (`statements.parquet`, `embeddings.parquet`, `grams.parquet`).
    pub files: BTreeMap<String, FileEntry>,
    /// The sidecar (`grams.parquet`), when `files` lists it.
    /// Absent in caches made before it existed, which stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grams: Option<GramsInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Hub id or local path the export started from.
    pub id: String,
    pub revision: Option<String>,
    pub display_name: String,
    /// Transformer blocks; the cache holds layers `0..=n_layers`.
    pub n_layers: u32,
    pub hidden_size: u32,
    /// Parameter count, used to order models by size; absent when the export did not say.
    pub n_parameters: Option<u64>,
    pub dtype: String,
    pub onnx_sha256: String,
    pub tokenizer_sha256: String,
    /// sha256 of every file of the model directory that extract read (graph, external
    /// weights, tokenizer, config), by file name: two checkpoints of one size can share
    /// a byte-identical `model.onnx` and differ only in `model.onnx.data`.
    /// Empty in caches written before it was recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Whether the tokenizer puts a special token (BOS) before every statement, so
    /// that `mean_skip_first` drops it rather than a real token. Null when unknown.
    #[serde(default)]
    pub adds_bos: Option<bool>,
    /// Model family (`pythia`) and size within it (`410m`): caches sharing both are
    /// checkpoints of one model. Null when unknown (and in older caches).
    #[serde(default)]
    pub series: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    /// Training step of this checkpoint, from a `stepN` revision
    /// ([`crate::checkpoint::step_of`]). Null when unknown.
    #[serde(default)]
    pub step: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub path: String,
    pub sha256: String,
    /// Categories in dataset order.
    pub categories: Vec<String>,
    pub n_pairs: u32,
    pub n_statements: u32,
    /// [`crate::statements_digest`] of the statements, so a reader can tell that
    /// `statements.parquet` holds this dataset's texts in this order even when the
    /// file's own sha256 in `files` was rewritten. Null in older caches.
    #[serde(default)]
    pub statements_sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub tool: String,
    pub onnxruntime_version: String,
    pub execution_provider: String,
    pub device_name: String,
    /// Most statements per forward pass.
    pub batch_size: u32,
    /// Most tokens per forward pass (padding included), when batches were cut by tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    pub poolings: Vec<String>,
    pub started: String,
    pub finished: Option<String>,
    /// The parity pre-check on export.json's probes. Null in older caches.
    #[serde(default)]
    pub parity: Option<ParityInfo>,
    /// Each chunk of statements and the run that made it: a resumed extraction can
    /// combine chunks of several runs. Empty in older caches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkInfo>,
    /// Set only in a shard cache (`extract --shard`): which slice of the dataset it
    /// holds. Absent in whole caches, merged ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Where the last run's time went. Absent in older caches and in merged ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_s: Option<Timings>,
}

/// Seconds of the run that completed the cache, by step. The forward passes and the
/// host's work overlap (a writer thread reduces and writes while the device runs the
/// next batch), so the steps add up to more than `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Creating the ONNX Runtime session (loading and optimizing the graph).
    pub session: f64,
    /// Hashing the model's files, concurrently with the session on a fresh run.
    pub hashing: f64,
    /// The parity probes: one batch through the session.
    pub probes: f64,
    /// Inside ONNX Runtime's run calls, the device's work and its copies.
    pub forward: f64,
    /// Host work on the graph's outputs: choosing the poolings, NLL means, checks.
    pub host_reduction: f64,
    /// The Gram blocks of `grams.parquet`, on a thread of their own while the final
    /// embeddings are written (so inside `writing`'s time).
    pub sidecar: f64,
    /// The chunks, then assembling the final files (the sidecar's time included).
    pub writing: f64,
    /// From the start of the run to the complete manifest.
    pub total: f64,
}

/// A shard cache holds the statements of the global pairs `p` with
/// `p % count == index`, under their global statement ids; `dataset.n_pairs` and
/// `dataset.n_statements` still describe the whole dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub index: u32,
    pub count: u32,
    /// Statements in this shard: the row count of `statements.parquet` and of each
    /// layer of `embeddings.parquet`.
    pub n_statements: u32,
}

/// What extract's parity pre-check saw (see `extract/src/parity.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParityInfo {
    pub n_probes: usize,
    /// The dtype's bound times the slack: what each error against transformers' values
    /// was held to where export.json has no float64 probes, the floor of the allowance
    /// against float64 where it has.
    pub bound: f64,
    pub slack: f64,
    /// The largest relative errors against transformers' values in the export dtype
    /// (the rule's numbers before float64 probes, kept for continuity).
    pub max_embedding_error: f64,
    pub max_nll_error: f64,
    /// The check against export.json's float64 probes; absent where it has none (older
    /// exports), and then the errors above were held to `bound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float64: Option<Float64Parity>,
}

/// extract's and transformers' distance from the float64 probes (the truth), and how
/// much of what the rule allows was used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64Parity {
    /// The allowance: max(bound, this x transformers' own error) times the slack.
    pub transformers_factor: f64,
    pub max_embedding_error: f64,
    pub max_nll_error: f64,
    /// transformers' own values (export.json's probes) against float64.
    pub max_transformers_embedding_error: f64,
    pub max_transformers_nll_error: f64,
    /// The largest error over its allowance (at most 1 in an accepted run).
    pub max_of_allowed: f64,
}

impl Float64Parity {
    /// The larger of each field: what several runs on the same probes saw together.
    pub fn worst(&self, other: &Self) -> Self {
        Self {
            transformers_factor: self.transformers_factor.max(other.transformers_factor),
            max_embedding_error: self.max_embedding_error.max(other.max_embedding_error),
            max_nll_error: self.max_nll_error.max(other.max_nll_error),
            max_transformers_embedding_error: self
                .max_transformers_embedding_error
                .max(other.max_transformers_embedding_error),
            max_transformers_nll_error: self
                .max_transformers_nll_error
                .max(other.max_transformers_nll_error),
            max_of_allowed: self.max_of_allowed.max(other.max_of_allowed),
        }
    }
}

/// One chunk of a cache's statements and how it was computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub index: u32,
    pub n_statements: u32,
    pub execution_provider: String,
    pub device_name: String,
    pub batch_size: u32,
    /// The token budget per batch, when batches were cut by tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// In a merged cache, the shard the chunk was computed in (its `index` counts
    /// within that shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

impl Manifest {
    /// Rows per layer in this cache: the shard's statements in a shard cache, else
    /// the whole dataset's.
    pub fn n_rows(&self) -> u32 {
        self.run
            .shard
            .map_or(self.dataset.n_statements, |s| s.n_statements)
    }

    pub fn read(path: &Path) -> Result<Manifest, CacheError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CacheError::new(path, format!("cannot read: {e}")))?;
        // An editor's byte order mark is no part of the JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // Another version's keys differ: name the version, not the first key missing.
        let version = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("schema_version").and_then(serde_json::Value::as_u64));
        if let Some(v) = version.filter(|&v| v != u64::from(crate::SCHEMA_VERSION)) {
            return Err(CacheError::new(
                path,
                format!(
                    "cache contract version {v} but this tool reads version {}; use the tool version that wrote it, or extract again",
                    crate::SCHEMA_VERSION
                ),
            ));
        }
        let mut manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| CacheError::new(path, format!("not a valid cache manifest: {e}")))?;
        manifest.lowercase_hashes();
        Ok(manifest)
    }

    /// Hex digits are read in either case (extract's check of the model files takes
    /// export.json's either way): every sha256 is compared in lower case, as written.
    fn lowercase_hashes(&mut self) {
        let hashes = self
            .files
            .values_mut()
            .map(|e| &mut e.sha256)
            .chain(self.model.files.values_mut())
            .chain([
                &mut self.model.onnx_sha256,
                &mut self.model.tokenizer_sha256,
                &mut self.dataset.sha256,
            ])
            .chain(self.dataset.statements_sha256.as_mut())
            .chain(
                self.grams
                    .as_mut()
                    .and_then(|g| g.embeddings_sha256.as_mut()),
            );
        for h in hashes {
            h.make_ascii_lowercase();
        }
    }

    /// The poolings this cache stores, in manifest order.
    pub fn poolings(&self, path: &Path) -> Result<Vec<Pooling>, CacheError> {
        self.run
            .poolings
            .iter()
            .map(|p| p.parse().map_err(|e: String| CacheError::new(path, e)))
            .collect()
    }
}

/// The manifest's `grams` section: what the sidecar holds and what it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GramsInfo {
    pub format_version: u32,
    /// Always `exact`: float64 normalisation and products.
    pub arithmetic: String,
    /// sha256 of the `embeddings.parquet` the blocks were computed from; null in a
    /// sidecar-only cache, whose writer held the vectors and wrote no embeddings.
    pub embeddings_sha256: Option<String>,
}
