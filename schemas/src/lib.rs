//! The cache contract (v1) between `extract` and `analyze`, in one place.
//!
//! A cache is a directory per model holding `manifest.json`, `statements.parquet`
//! and `embeddings.parquet`. This crate names every file and column, owns the
//! manifest struct, writes the Parquet files atomically, and validates a cache
//! directory so that a reader gets either a whole cache or an error naming the
//! file and the problem. The prose spec is `schemas/CONTRACT.md`.

pub mod checkpoint;
mod contract;
mod error;
mod files;
pub mod gram;
mod manifest;
mod read;
mod validate;
mod write;

pub use contract::{
    embeddings_schema, statements_schema, Pooling, Side, EMBEDDINGS_FILE, MANIFEST_FILE,
    SCHEMA_VERSION, STATEMENTS_FILE,
};
pub use error::CacheError;
pub use files::{sha256_file, statements_digest, sync_dir, FileEntry};
pub use manifest::{ChunkInfo, DatasetInfo, Manifest, ModelInfo, ParityInfo, RunInfo, ShardInfo};
pub use read::{read_embeddings_layer, read_statements, LayerBlock};
pub use validate::{validate_cache, ValidCache};
pub use write::{
    remove_temp_files, write_json, write_manifest, write_statements, EmbeddingsWriter, StatementRow,
};
