//! The pipeline's evidence step: at each model's |r| peak of the primary pooling,
//! the category that moves r the most when left out, whether it carries r, whether
//! Pearson's p agrees with the permutation p, and the pair-level r beside it.

use super::results::{ModelPooling, PeakEvidence, PoolingResult};
use crate::stats::influence::{carries, most_influential, p_disagree};

/// One entry per model of `primary`, in model order; `floor` is the smallest
/// permutation p the orderings can give.
pub fn at_peaks(
    primary: &PoolingResult,
    categories: &[String],
    n_pairs: usize,
    floor: f64,
) -> Vec<PeakEvidence> {
    primary
        .models
        .iter()
        .filter_map(|m| at_peak(m, categories, n_pairs, floor))
        .collect()
}

fn at_peak(
    m: &ModelPooling,
    categories: &[String],
    n_pairs: usize,
    floor: f64,
) -> Option<PeakEvidence> {
    let s = m.layers.iter().find(|s| s.layer == m.abs_peak.layer)?;
    let inf = most_influential(s.r, &s.loco_r, categories.len());
    Some(PeakEvidence {
        model: m.model.clone(),
        layer: s.layer,
        depth_pct: s.depth_pct,
        r: s.r,
        p: s.p,
        perm_p: s.perm_p,
        spearman_rho: s.spearman_rho,
        spearman_p: s.spearman_p,
        influential_category: inf.map(|i| categories[i.index].clone()),
        r_without: inf.map_or(f64::NAN, |i| i.r_without),
        p_without: inf.map_or(f64::NAN, |i| i.p_without),
        carried_because: inf.map(|i| carries(s.r, s.p, &i)).unwrap_or_default(),
        p_disagree: p_disagree(s.p, s.perm_p, floor),
        pair_r: s.pair_r,
        pair_p: s.pair_p,
        n_pairs,
    })
}
