//! The points figures draw from a model's results: its r by layer or depth, and
//! the band of its bootstrap CI.

use crate::analysis::results::ModelPooling;

pub fn curve(m: &ModelPooling, by_depth: bool) -> Vec<(f64, f64)> {
    m.layers
        .iter()
        .filter(|s| s.r.is_finite())
        .map(|s| {
            let x = if by_depth {
                s.depth_pct
            } else {
                f64::from(s.layer)
            };
            (x, s.r)
        })
        .collect()
}

/// The band between each layer's bootstrap bounds, where the bootstrap ran.
pub fn band(m: &ModelPooling) -> Vec<(f64, f64)> {
    let bounded = || {
        m.layers
            .iter()
            .filter(|s| s.ci_low.is_finite() && s.ci_high.is_finite())
    };
    bounded()
        .map(|s| (s.depth_pct, s.ci_high))
        .chain(bounded().rev().map(|s| (s.depth_pct, s.ci_low)))
        .collect()
}
