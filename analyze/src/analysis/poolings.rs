//! The statistics of one view (a pooling in a geometry) across the compared caches:
//! per layer the seed-exact r and the rigorous statistics, per model its peaks and
//! their bootstrap and whether it places them, across models the stability verdict.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::loaded::Loaded;
use super::results::{LayerStats, ModelPooling, PeakBootstrap, PoolingResult, StabilityBootstrap};
use super::verdict::{answer_class, identify_peak};
use super::view::View;
use crate::settings::AnalysisSettings;
use crate::stats::bootstrap::percentile;
use crate::stats::correlation::{holm, leave_one_out, pearson, spearman, Permutations};
use crate::stats::peaks::{
    abs_peak, depth_pct, first_argmax, mean_std, nan_layers, peak_analysis, seed_summary,
};

/// The results of view `pi` (`view`) over the compared caches, with the bootstrap
/// where `read` kept resamples.
pub fn analyze_pooling(
    loaded: &[Loaded],
    pi: usize,
    view: View,
    perms: &Permutations,
    settings: &AnalysisSettings,
) -> PoolingResult {
    let mut models: Vec<ModelPooling> = loaded
        .par_iter()
        .map(|l| model_pooling(l, pi, perms))
        .collect();
    let threshold = settings.stability_threshold;
    let mut stability_max_pos = None;
    let mut stability_abs = None;
    let n = loaded[0].boot_n;
    if n > 0 {
        let (mut pos_peaks, mut abs_peaks) = (Vec::new(), Vec::new());
        for (l, mp) in loaded.iter().zip(models.iter_mut()) {
            let (pos, abs) = attach_bootstrap(mp, &l.layers, &l.boot[pi], n);
            pos_peaks.push(pos);
            abs_peaks.push(abs);
        }
        stability_max_pos = stability(&pos_peaks, n, threshold);
        stability_abs = stability(&abs_peaks, n, threshold);
        models.iter_mut().for_each(identify_peak);
    }
    let pos: Vec<f64> = models.iter().map(|m| m.seed_summary.max_pos_pct).collect();
    let abs: Vec<f64> = models.iter().map(|m| m.abs_peak.pct).collect();
    let abs_peak_analysis = peak_analysis(&abs, threshold);
    PoolingResult {
        pooling: view.pooling.as_str().to_string(),
        geometry: view.geometry.as_str().to_string(),
        peak_analysis: peak_analysis(&pos, threshold),
        answer_class: answer_class(&models, &abs_peak_analysis, stability_abs.as_ref()),
        abs_peak_analysis,
        arithmetic_gap: if pi == 0 {
            arithmetic_gap(&models)
        } else {
            None
        },
        models,
        stability_max_pos,
        stability_abs,
    }
}

/// The per-layer statistics of one model and pooling (no bootstrap yet).
fn model_pooling(l: &Loaded, pi: usize, perms: &Permutations) -> ModelPooling {
    let n_layers = l.model.n_layers();
    let cat_prefs = l.stmts.category_prefs();
    let mut layers: Vec<LayerStats> = l
        .layers
        .iter()
        .zip(&l.layers_read[pi])
        .map(|(&layer, read)| {
            let ua = read.ua.clone();
            let (r, p) = pearson(&ua, &cat_prefs);
            let (rho, rho_p) = spearman(&ua, &cat_prefs);
            let loco = leave_one_out(&ua, &cat_prefs);
            let pl = read.pair;
            let r_other = if read.ua_other.is_empty() {
                f64::NAN
            } else {
                pearson(&read.ua_other, &cat_prefs).0
            };
            LayerStats {
                layer,
                depth_pct: depth_pct(layer, n_layers),
                r,
                p,
                r_other_arithmetic: r_other,
                p_holm: f64::NAN,
                perm_p: perms.p_value(&ua, &cat_prefs),
                perm_p_holm: f64::NAN,
                spearman_rho: rho,
                spearman_p: rho_p,
                ci_low: f64::NAN,
                ci_high: f64::NAN,
                boot_median: f64::NAN,
                loco_min: loco.iter().copied().fold(f64::INFINITY, f64::min),
                loco_max: loco.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                loco_r: loco,
                pair_r: pl.r,
                pair_p: pl.p,
                pair_rho: pl.rho,
                pair_rho_p: pl.rho_p,
                ua,
                pref: cat_prefs.clone(),
                anisotropy: read.anisotropy,
            }
        })
        .collect();
    let ps: Vec<f64> = layers.iter().map(|s| s.p).collect();
    let pps: Vec<f64> = layers.iter().map(|s| s.perm_p).collect();
    for (s, (a, b)) in layers.iter_mut().zip(holm(&ps).into_iter().zip(holm(&pps))) {
        s.p_holm = a;
        s.perm_p_holm = b;
    }
    let r: Vec<f64> = layers.iter().map(|s| s.r).collect();
    ModelPooling {
        model: l.model.display().to_string(),
        n_layers,
        seed_summary: seed_summary(l.model.display(), n_layers, &l.layers, &r),
        abs_peak: abs_peak(n_layers, &l.layers, &r),
        layers,
        peak_bootstrap: None,
        abs_peak_identified: None,
        plateau: None,
    }
}

/// Fills one model's CIs from its bootstrap rows (`layers x B`) and returns the
/// peak position (% depth) of every resample: max positive r, then |r|.
fn attach_bootstrap(
    mp: &mut ModelPooling,
    layers: &[u32],
    rows: &[f64],
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    for (li, s) in mp.layers.iter_mut().enumerate() {
        let row = &rows[li * n..(li + 1) * n];
        s.ci_low = percentile(row, 2.5);
        s.ci_high = percentile(row, 97.5);
        s.boot_median = percentile(row, 50.0);
    }
    let mut pos = Vec::with_capacity(n);
    let mut abs = Vec::with_capacity(n);
    let mut pos_share = BTreeMap::new();
    let mut abs_share = BTreeMap::new();
    let mut r = vec![0.0; layers.len()];
    for b in 0..n {
        for (li, v) in r.iter_mut().enumerate() {
            *v = rows[li * n + b];
        }
        let ip = first_argmax(&r, |v| v);
        let ia = first_argmax(&r, f64::abs);
        pos.push(depth_pct(layers[ip], mp.n_layers));
        abs.push(depth_pct(layers[ia], mp.n_layers));
        *pos_share.entry(layers[ip]).or_insert(0.0) += 1.0 / n as f64;
        *abs_share.entry(layers[ia]).or_insert(0.0) += 1.0 / n as f64;
    }
    mp.peak_bootstrap = Some(PeakBootstrap {
        max_pos_pct_median: percentile(&pos, 50.0),
        max_pos_pct_ci: [percentile(&pos, 2.5), percentile(&pos, 97.5)],
        abs_pct_median: percentile(&abs, 50.0),
        abs_pct_ci: [percentile(&abs, 2.5), percentile(&abs, 97.5)],
        max_pos_layer_share: pos_share,
        abs_layer_share: abs_share,
    });
    (pos, abs)
}

fn stability(peaks: &[Vec<f64>], n: usize, threshold: f64) -> Option<StabilityBootstrap> {
    if peaks.len() < 2 || n == 0 {
        return None;
    }
    let stds: Vec<f64> = (0..n)
        .map(|b| {
            let v: Vec<f64> = peaks.iter().map(|p| p[b]).collect();
            mean_std(&v).1
        })
        .collect();
    let stable = stds.iter().filter(|&&s| s < threshold).count();
    Some(StabilityBootstrap {
        share_stable: stable as f64 / n as f64,
        std_median: percentile(&stds, 50.0),
        std_ci: [percentile(&stds, 2.5), percentile(&stds, 97.5)],
    })
}

/// Largest `|r(seed) - r(exact)|` over every model and layer of the primary pooling.
fn arithmetic_gap(models: &[ModelPooling]) -> Option<f64> {
    models
        .iter()
        .flat_map(|m| &m.layers)
        .map(|s| (s.r - s.r_other_arithmetic).abs())
        .filter(|d| d.is_finite())
        .reduce(f64::max)
}

/// One note per model and pooling whose r is NaN at some layer.
pub fn nan_warnings(results: &[PoolingResult]) -> Vec<String> {
    results
        .iter()
        .flat_map(|p| {
            p.models.iter().filter_map(|m| {
                let layers: Vec<u32> = m.layers.iter().map(|s| s.layer).collect();
                let r: Vec<f64> = m.layers.iter().map(|s| s.r).collect();
                nan_note(
                    &format!("{} ({}, {})", m.model, p.pooling, p.geometry),
                    &layers,
                    &r,
                )
            })
        })
        .collect()
}

/// Names the layers whose r is NaN and what the seed's peak rule then does.
fn nan_note(what: &str, layers: &[u32], r: &[f64]) -> Option<String> {
    let nan = nan_layers(layers, r);
    let first = *nan.first()?;
    let rule = if first == layers[0] {
        "r is NaN at the first sampled layer, so, as Python's max() in the seed, every peak of this model is that layer (r = NaN)"
    } else {
        "as in the seed (Python's max()), a NaN never counts as a peak"
    };
    Some(format!(
        "{what}: r is NaN at layer{} {} (UA or the preferences are constant across categories); {rule}",
        if nan.len() == 1 { "" } else { "s" },
        nan.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::nan_note;

    #[test]
    fn nan_layers_are_named_with_the_rule_that_applies() {
        let nan = f64::NAN;
        assert_eq!(nan_note("m", &[0, 4], &[0.1, 0.2]), None);
        let later = nan_note("m (mean)", &[0, 4, 8], &[0.1, nan, nan]).unwrap();
        assert!(
            later.starts_with("m (mean): r is NaN at layers 4, 8"),
            "{later}"
        );
        assert!(later.contains("never counts as a peak"), "{later}");
        let first = nan_note("m", &[0, 4], &[nan, 0.3]).unwrap();
        assert!(
            first.contains("every peak of this model is that layer"),
            "{first}"
        );
    }
}
