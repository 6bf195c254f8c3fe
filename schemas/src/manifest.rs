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
    /// Keyed by file name (`statements.parquet`, `embeddings.parquet`).
    pub files: BTreeMap<String, FileEntry>,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub path: String,
    pub sha256: String,
    /// Categories in dataset order.
    pub categories: Vec<String>,
    pub n_pairs: u32,
    pub n_statements: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub tool: String,
    pub onnxruntime_version: String,
    pub execution_provider: String,
    pub device_name: String,
    pub batch_size: u32,
    pub poolings: Vec<String>,
    pub started: String,
    pub finished: Option<String>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, CacheError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CacheError::new(path, format!("cannot read: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| CacheError::new(path, format!("not a valid cache manifest: {e}")))
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
