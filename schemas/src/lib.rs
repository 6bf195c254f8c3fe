//! The cache contract (v1) between `extract` and `analyze`, in one place.
//!
//! A cache is a directory per model holding `manifest.json`, `statements.parquet`,
//! `embeddings.parquet` and, in caches made since it exists, `grams.parquet` (the
//! sidecar). This crate names every file and column, owns the
//! manifest struct, writes the Parquet files atomically, and validates a cache
//! directory so that a reader gets either a whole cache or an error naming the
//! file and the problem. The prose spec is `schemas/CONTRACT.md`.

mod card;
pub mod checkpoint;
mod contract;
mod error;
mod files;
pub mod geometry;
pub mod gram;
mod layers;
mod lock;
mod manifest;
mod read;
mod root_card;
mod sidecar;
mod system;
mod validate;
mod write;

pub use card::{card_text, write_card, CARD_FILE};
pub use contract::{
    embeddings_schema, statements_schema, Pooling, Side, StatementRow, EMBEDDINGS_FILE,
    MANIFEST_FILE, SCHEMA_VERSION, STATEMENTS_FILE,
};
pub use error::CacheError;
pub use files::{sha256_file, statements_digest, sync_dir, FileEntry};
pub use lock::{CacheLock, LOCK_FILE, ROOT_LOCK_FILE};
pub use manifest::{
    ChunkInfo, DatasetInfo, Float64Parity, GramsInfo, Manifest, ModelInfo, ParityInfo, RunInfo,
    ShardInfo, Timings,
};
pub use read::{read_embeddings_layer, read_statements, LayerBlock};
pub use root_card::{listed_models, root_card_text, write_root_card};
pub use sidecar::{
    add_sidecar, add_sidecar_from_vectors, grams_schema, read_grams, read_grams_each, GramsShape,
    GramsWriter, SidecarLayer, GRAMS_FILE, GRAMS_FORMAT_VERSION, GRAMS_FORMAT_VERSIONS,
};
pub use system::{available_disk, available_memory};
pub use validate::{validate_cache, validate_cache_in, Scope, ValidCache};
pub use write::{
    remove_temp_files, write_json, write_manifest, write_statements, write_text, EmbeddingsWriter,
};
