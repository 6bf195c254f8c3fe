//! `extract`: runs an ONNX-exported language model (made by `scripts/export`)
//! once over a statement dataset and writes the cache of the `schemas` contract:
//! pooled hidden states of every layer and per-statement NLLs.

pub mod batch;
pub mod checkpoint;
pub mod chunks;
pub mod dataset;
pub mod forward;
pub mod graph;
pub mod merge;
pub mod model_dir;
pub mod nll;
pub mod parity;
pub mod pooling;
pub mod probe;
pub mod run;
pub mod runtime;
pub mod shard;
pub mod tokenize;
pub mod util;
pub mod vectors;
pub mod writer;

pub use run::{run, Options, Summary};
