//! Where the outputs go: the host thread turns each batch's outputs into rows and
//! chunks, the chunks are kept (in memory, then under `.partial/`) so that a killed
//! run resumes, and the assembly writes the final `embeddings.parquet`,
//! `statements.parquet` and the sidecar (`grams.parquet`) from them.

pub mod assemble;
pub mod chunks;
pub mod host_thread;
pub mod vectors;
