//! One cache as the pipeline holds it: the model, its statements, the sampled
//! layers and the Gram blocks read so far. Loaded by `load`, filled by `grams`,
//! read by the statistics.

use crate::cache::{ModelCache, Statements};
use crate::stats::uniformity::CategoryGram;

/// A cache in the pipeline; `grams` and `ua_other` stay empty until `grams` reads it.
pub struct Loaded {
    pub model: ModelCache,
    pub stmts: Statements,
    pub layers: Vec<u32>,
    /// grams[pooling][layer_index][category]
    pub grams: Vec<Vec<Vec<CategoryGram>>>,
    /// ua_other[layer_index][category]: UA of the primary pooling in the other arithmetic.
    pub ua_other: Vec<Vec<f64>>,
}
