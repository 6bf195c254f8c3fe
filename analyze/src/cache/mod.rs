//! The caches `extract` writes, as analyze reads them: discovery and validation,
//! and the only Parquet reading in analyze, one reader per contract file
//! (`statements.parquet`, one layer and pooling of `embeddings.parquet`,
//! `grams.parquet`), plus `analyze index`, which adds the last to a cache, and
//! `remote`, which fetches a cache root given as a URL into a local folder.

pub mod digest;
pub mod discovery;
pub mod embeddings;
pub mod identity;
pub mod index;
pub mod params;
mod parquet;
pub mod remote;
pub mod sidecar;
pub mod statements;
pub mod types;

pub use discovery::discover;
pub use embeddings::read_layer;
pub use sidecar::read_sidecar;
pub use statements::read_statements;
pub use types::{ModelCache, Pair, Statements};
