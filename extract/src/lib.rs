//! `extract`: runs an ONNX-exported language model (made by `scripts/export`)
//! once over a statement dataset and writes the cache of the `schemas` contract:
//! pooled hidden states of every layer and per-statement NLLs.
//!
//! The folders follow the data through a run: [`inputs`] (the dataset, its tokens
//! and batches, the shard and the model's place in the grid) go through [`model`]
//! (the ONNX session, proven on the probes first) into [`store`] (chunks under
//! `.partial/`, then the final files); [`run`] orders the steps and [`merge`] joins
//! the caches of a sharded run.

pub mod inputs;
pub mod merge;
pub mod model;
pub mod run;
pub mod store;
