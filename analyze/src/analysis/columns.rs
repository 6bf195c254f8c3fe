//! The pair bootstrap over loaded caches: r of every (model, layer) column in
//! every resample, shared by the cross-size statistics and the training view.

use super::loaded::Loaded;
use crate::stats::bootstrap::{bootstrap_r, BootInput, Resamples};
use crate::stats::uniformity::CategoryGram;

/// Bootstrap r of every (model, layer) of one pooling: `K x B`, one row per column
/// k in model-then-layer order.
pub fn bootstrap_columns(loaded: &[&Loaded], pi: usize, res: &Resamples) -> Vec<f64> {
    let mut columns: Vec<&[CategoryGram]> = Vec::new();
    let mut model_of_k = Vec::new();
    for (mi, l) in loaded.iter().enumerate() {
        for g in &l.grams[pi] {
            columns.push(g);
            model_of_k.push(mi);
        }
    }
    let prefs = loaded
        .iter()
        .map(|l| {
            l.stmts
                .pairs
                .iter()
                .map(|ps| ps.iter().map(|p| p.pref).collect())
                .collect()
        })
        .collect();
    bootstrap_r(res, &BootInput::new(&columns, model_of_k, prefs))
}
