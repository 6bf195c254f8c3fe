//! One cache as the pipeline holds it: the model, its statements, the sampled
//! layers and what the statistics keep of each layer. Loaded by `load`, filled by
//! `read`, read by the statistics.

use schemas::geometry::Anisotropy;

use crate::cache::{ModelCache, Statements};
use crate::stats::pairs::PairLevel;

/// A cache in the pipeline; `layers_read` and the bootstrap stay empty until
/// `read` fills them.
pub struct Loaded {
    pub model: ModelCache,
    pub stmts: Statements,
    pub layers: Vec<u32>,
    /// layers_read[view][layer_index]
    pub layers_read: Vec<Vec<LayerSummary>>,
    /// boot[view]: r of every sampled layer in each of the first `boot_n`
    /// resamples, `layers x boot_n` (layer rows contiguous); empty where this cache
    /// is not compared across sizes.
    pub boot: Vec<Vec<f64>>,
    pub boot_n: usize,
    /// The |r|-peak position (% depth) in each training-view resample (primary
    /// pooling), for a cache in a size's checkpoint series.
    pub training_peaks: Option<Vec<f64>>,
}

/// What the statistics keep of one layer and pooling: the category Gram blocks it
/// was computed from are dropped once it is taken, so memory does not grow with
/// the square of the statements.
pub struct LayerSummary {
    /// UA of every category in the analysis arithmetic.
    pub ua: Vec<f64>,
    /// UA in the other arithmetic (primary view, raw geometry, from embeddings; else empty).
    pub ua_other: Vec<f64>,
    /// Of the pooling's raw vectors; None from a sidecar older than format 3.
    pub anisotropy: Option<Anisotropy>,
    pub pair: PairLevel,
}
