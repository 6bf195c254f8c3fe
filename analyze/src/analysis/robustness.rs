//! The robustness check: does the answer survive the geometry? Each model's |r| peak
//! in the primary view against the same pooling's peak in every other geometry that
//! was computed, and the answer's class there (`verdict::answer_class`, which the
//! plateaus enter).

use super::results::{GeometryCheck, PeakMove, PoolingResult, Robustness};
use super::view::{NotComputed, View};

/// `results[k]` is the result of `views[k]`; the primary is `results[0]`. A peak
/// survives where it moves by less than `threshold` points of depth, the distance
/// the seed's rule calls a shift between models.
pub fn check(
    views: &[View],
    results: &[PoolingResult],
    not_computed: Vec<NotComputed>,
    threshold: f64,
) -> Robustness {
    let primary = &results[0];
    let checks = views
        .iter()
        .zip(results)
        .enumerate()
        .skip(1)
        .filter(|(_, (v, _))| v.pooling == views[0].pooling)
        .map(|(view, (v, other))| {
            let peaks = primary
                .models
                .iter()
                .zip(&other.models)
                .map(|(m, o)| {
                    let at = m.layers.iter().position(|s| s.layer == m.abs_peak.layer);
                    PeakMove {
                        model: m.model.clone(),
                        layer: m.abs_peak.layer,
                        pct: m.abs_peak.pct,
                        r: m.abs_peak.r,
                        other_layer: o.abs_peak.layer,
                        other_pct: o.abs_peak.pct,
                        other_r: o.abs_peak.r,
                        other_r_at_layer: at.map_or(f64::NAN, |i| o.layers[i].r),
                        survives: (o.abs_peak.pct - m.abs_peak.pct).abs() < threshold,
                    }
                })
                .collect();
            GeometryCheck {
                geometry: v.geometry.to_string(),
                view,
                peaks,
                answer_class: other.answer_class,
                verdict_survives: other.answer_class == primary.answer_class,
            }
        })
        .collect();
    Robustness {
        geometry: views[0].geometry.to_string(),
        threshold_pct: threshold,
        checks,
        not_computed,
    }
}
