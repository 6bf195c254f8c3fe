//! `synth-cache`: writes a synthetic cache (through schemas' writers) with real
//! structure, deterministic from a seed, for tests and benchmarks.
//!
//! Each model gets a shared direction `u` and one direction per category and side.
//! A statement's vector at layer l is `u + a * v_{c,S} + noise`, where the side
//! coefficient `a` moves with the category's preference times a layer profile
//! `k(t)` (a bump at a model-dependent depth, a negative lobe near the top), so
//! UA correlates with preference positively mid-depth and negatively late.
//! With `--massive count:scale`, a few fixed dimensions carry values in the
//! thousands in every statement, as in trained LMs: cosines then sit near 1 and
//! float32 arithmetic shows in the sixth digit of r. With `--rogue DEPTH`, the
//! layers around DEPTH get one rogue dimension (a value about 50 times every other
//! part's norm, the same in every statement) while the planted directions give way
//! to noise scaled with each statement's side and pair preference: the raw cosines
//! then rank UA by those norms, which centring takes away, so the raw |r| peak sits at DEPTH and the
//! centred one at the planted profile's own peak (the geometry's robustness test).
//!
//! The data's way: `options` (what to write) -> `dataset` (the statements and
//! their preferences, shared by every model) -> `plant` (each model's vectors,
//! layer by layer) -> `cache` (statements, embeddings and sidecar, manifest).
//! `random` holds the deterministic streams every step draws from.

mod cache;
mod dataset;
pub mod options;
mod plant;
mod random;

use std::path::Path;

use anyhow::Result;

pub use options::Options;

/// Writes every cache `options` asks for (one per model, or per model and step in
/// grid mode), calling `wrote` with each folder as soon as it is complete.
pub fn write_caches(options: &Options, mut wrote: impl FnMut(&Path)) -> Result<()> {
    let dataset = dataset::dataset(options);
    let checkpoints = cache::checkpoints(options)?;
    for (mi, spec) in options.models.iter().enumerate() {
        for &checkpoint in &checkpoints {
            let dir = cache::write_cache(options, &dataset, mi, spec, checkpoint)?;
            wrote(&dir);
        }
    }
    Ok(())
}
