//! The verdict, computed once here and stored with the results, so that every output
//! reads it rather than computes it: per model whether its |r| peak position is
//! identified by these data (else the plateau it may lie anywhere on), and per
//! pooling the answer's class (stable, shifts, not settled, not applicable).

use super::results::{AnswerClass, LayerStats, ModelPooling, Plateau, StabilityBootstrap};
use crate::stats::peaks::PeakAnalysis;

/// Share of bootstrap resamples at which the verdict counts as settled either way.
pub const SETTLED_SHARE: f64 = 0.95;

/// Points of depth (of 100) at or beyond which a span covers "most of the depth", so
/// that the |r| peak position is not identified. Half the depth: a position that may
/// lie anywhere over half the model cannot even tell its early half from its late
/// half. It is also far wider than what the seed's rule resolves: positions spread
/// evenly over 50 points have a std of 50/√12 = 14.4 points, above the default
/// threshold of 10, so such a peak alone could make the rule say "shifts".
pub const MOST_OF_DEPTH_PCT: f64 = 50.0;

/// Judges whether the |r| peak position of `m` is identified, from its bootstrap
/// (without one nothing is judged: both criteria need it). Not identified where
/// (a) the peak position's bootstrap 95% CI spans `MOST_OF_DEPTH_PCT` or more, or
/// (b) the layers whose |r| reaches the peak layer's own 95% CI span that much: the
/// data cannot tell those layers' r from the peak's. The plateau then runs from the
/// first to the last layer that either criterion leaves possible.
pub fn identify_peak(m: &mut ModelPooling) {
    let Some(boot) = &m.peak_bootstrap else {
        return;
    };
    let Some(peak) = m.layers.iter().find(|s| s.layer == m.abs_peak.layer) else {
        return;
    };
    let within = within_peak_ci(&m.layers, peak);
    let ci = boot.abs_pct_ci;
    let possible: Vec<&LayerStats> = m
        .layers
        .iter()
        .filter(|s| within.contains(&s.layer) || (ci[0]..=ci[1]).contains(&s.depth_pct))
        .collect();
    let (Some(first_within), Some(last_within)) = (
        m.layers.iter().find(|s| within.contains(&s.layer)),
        m.layers.iter().rev().find(|s| within.contains(&s.layer)),
    ) else {
        return;
    };
    let peak_ci_span_pct = ci[1] - ci[0];
    let within_ci_span_pct = last_within.depth_pct - first_within.depth_pct;
    let identified = peak_ci_span_pct < MOST_OF_DEPTH_PCT && within_ci_span_pct < MOST_OF_DEPTH_PCT;
    m.abs_peak_identified = Some(identified);
    m.plateau = match (identified, possible.first(), possible.last()) {
        (false, Some(from), Some(to)) => Some(Plateau {
            from_layer: from.layer,
            to_layer: to.layer,
            from_pct: from.depth_pct,
            to_pct: to.depth_pct,
            peak_ci_span_pct,
            within_ci_span_pct,
        }),
        _ => None,
    };
}

/// The layers whose |r| reaches the lower end of the peak layer's 95% CI of |r|, the
/// peak among them. The CI is of r; in |r| it starts at the end nearer zero, or at
/// zero where it straddles zero (then every layer qualifies: the peak's r is not told
/// from none). |r| rather than r, because the peak is the |r| peak: a layer of the
/// other sign and as large an |r| is as much a candidate. This takes in every layer
/// whose r lies within the CI, and more. No layer's |r| exceeds the peak's, so only
/// the lower end matters.
fn within_peak_ci(layers: &[LayerStats], peak: &LayerStats) -> Vec<u32> {
    let floor = if peak.ci_low <= 0.0 && peak.ci_high >= 0.0 {
        0.0
    } else {
        peak.ci_low.abs().min(peak.ci_high.abs())
    };
    layers
        .iter()
        .filter(|s| s.layer == peak.layer || s.r.abs() >= floor)
        .map(|s| s.layer)
        .collect()
}

/// The answer's class for one pooling. Not applicable with one model. Not settled
/// where any compared model's peak position is not identified: the seed's rule
/// compares positions, and a position the data do not place cannot be compared (its
/// argmax is a draw from the plateau). Otherwise by the seed's rule on the |r| peak
/// and how often the pair bootstrap agrees: settled only where at least
/// `SETTLED_SHARE` of resamples say the same. Without a bootstrap (identification
/// then not judged), the rule's own call.
pub fn answer_class(
    models: &[ModelPooling],
    abs_peak_analysis: &PeakAnalysis,
    stability_abs: Option<&StabilityBootstrap>,
) -> AnswerClass {
    if !abs_peak_analysis.verdict_applicable {
        return AnswerClass::NotApplicable;
    }
    if models.iter().any(|m| m.abs_peak_identified == Some(false)) {
        return AnswerClass::NotSettled;
    }
    match stability_abs {
        Some(st) if st.share_stable >= SETTLED_SHARE => AnswerClass::Stable,
        Some(st) if st.share_stable <= 1.0 - SETTLED_SHARE => AnswerClass::Shifts,
        Some(_) => AnswerClass::NotSettled,
        None if abs_peak_analysis.peaks_stable == Some(true) => AnswerClass::Stable,
        None => AnswerClass::Shifts,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::analysis::results::PeakBootstrap;
    use crate::stats::peaks::{abs_peak, depth_pct, peak_analysis, seed_summary};

    const N_LAYERS: u32 = 20;

    /// A model with every layer 0..=N_LAYERS, r as given, each layer's 95% CI of r
    /// `r ± half_width`, and the peak position's CI `peak_ci` (% depth).
    fn model(r: &[f64], half_width: f64, peak_ci: Option<[f64; 2]>) -> ModelPooling {
        let layers: Vec<u32> = (0..r.len() as u32).collect();
        let stats = layers
            .iter()
            .zip(r)
            .map(|(&layer, &r)| LayerStats {
                layer,
                depth_pct: depth_pct(layer, N_LAYERS),
                r,
                p: f64::NAN,
                r_other_arithmetic: f64::NAN,
                p_holm: f64::NAN,
                perm_p: f64::NAN,
                perm_p_holm: f64::NAN,
                spearman_rho: f64::NAN,
                spearman_p: f64::NAN,
                ci_low: if peak_ci.is_some() {
                    r - half_width
                } else {
                    f64::NAN
                },
                ci_high: if peak_ci.is_some() {
                    r + half_width
                } else {
                    f64::NAN
                },
                boot_median: r,
                loco_r: Vec::new(),
                loco_min: f64::NAN,
                loco_max: f64::NAN,
                pair_r: f64::NAN,
                pair_p: f64::NAN,
                pair_rho: f64::NAN,
                pair_rho_p: f64::NAN,
                ua: Vec::new(),
                pref: Vec::new(),
                anisotropy: None,
            })
            .collect();
        let mut m = ModelPooling {
            model: "m".into(),
            n_layers: N_LAYERS,
            seed_summary: seed_summary("m", N_LAYERS, &layers, r),
            abs_peak: abs_peak(N_LAYERS, &layers, r),
            layers: stats,
            peak_bootstrap: peak_ci.map(|ci| PeakBootstrap {
                max_pos_pct_median: f64::NAN,
                max_pos_pct_ci: ci,
                abs_pct_median: f64::NAN,
                abs_pct_ci: ci,
                max_pos_layer_share: BTreeMap::new(),
                abs_layer_share: BTreeMap::new(),
            }),
            abs_peak_identified: None,
            plateau: None,
        };
        identify_peak(&mut m);
        m
    }

    /// A bump at `center` (layer) of `width` layers on a floor of `floor`.
    fn bump(center: f64, width: f64, floor: f64) -> Vec<f64> {
        (0..=N_LAYERS)
            .map(|l| floor + (1.0 - floor) * (-((f64::from(l) - center) / width).powi(2)).exp())
            .collect()
    }

    #[test]
    fn a_sharp_peak_is_identified_and_has_no_plateau() {
        let m = model(&bump(8.0, 1.5, 0.0), 0.1, Some([35.0, 45.0]));
        assert_eq!(m.abs_peak.layer, 8);
        assert_eq!(m.abs_peak_identified, Some(true));
        assert!(m.plateau.is_none());
    }

    #[test]
    fn a_flat_profile_is_a_plateau_over_the_layers_within_the_peaks_ci() {
        // r between 0.90 and 0.95 everywhere, the peak's CI ±0.1: every layer is within.
        let m = model(&bump(4.0, 3.0, 0.9), 0.1, Some([20.0, 30.0]));
        assert_eq!(m.abs_peak_identified, Some(false));
        let p = m.plateau.unwrap();
        assert_eq!((p.from_layer, p.to_layer), (0, N_LAYERS));
        assert_eq!((p.from_pct, p.to_pct), (0.0, 100.0));
        assert_eq!(p.within_ci_span_pct, 100.0);
        assert_eq!(p.peak_ci_span_pct, 10.0);
    }

    #[test]
    fn a_wandering_bootstrap_peak_alone_makes_a_plateau() {
        // Sharp in r, but the resampled peak ranges over 10%-70% of depth.
        let m = model(&bump(8.0, 1.5, 0.0), 0.1, Some([10.0, 70.0]));
        assert_eq!(m.abs_peak_identified, Some(false));
        let p = m.plateau.unwrap();
        assert_eq!((p.from_layer, p.to_layer), (2, 14));
        assert_eq!(p.peak_ci_span_pct, 60.0);
        assert!(p.within_ci_span_pct < MOST_OF_DEPTH_PCT);
    }

    #[test]
    fn the_span_is_judged_against_half_the_depth() {
        // Layers 0..=9 within the peak's CI: 45 points, identified; 0..=10: 50, not.
        let r_at = |last_within: u32| -> Vec<f64> {
            (0..=N_LAYERS)
                .map(|l| match l {
                    0 => 0.95,
                    l if l <= last_within => 0.9,
                    _ => 0.2,
                })
                .collect()
        };
        assert_eq!(
            model(&r_at(9), 0.1, Some([0.0, 5.0])).abs_peak_identified,
            Some(true)
        );
        let m = model(&r_at(10), 0.1, Some([0.0, 5.0]));
        assert_eq!(m.abs_peak_identified, Some(false));
        assert_eq!(m.plateau.unwrap().to_layer, 10);
    }

    #[test]
    fn the_other_sign_counts_in_r_and_a_ci_across_zero_admits_every_layer() {
        // Peak +0.9 at layer 2; layer 18 has r = -0.88: as large an |r|, far away.
        let mut r = vec![0.1; (N_LAYERS + 1) as usize];
        r[2] = 0.9;
        r[18] = -0.88;
        let m = model(&r, 0.05, Some([10.0, 15.0]));
        assert_eq!(m.abs_peak_identified, Some(false));
        let p = m.plateau.unwrap();
        assert_eq!((p.from_layer, p.to_layer), (2, 18));
        // A peak whose r is not told from zero: every layer is a candidate.
        let weak = model(
            &bump(8.0, 1.5, 0.0)
                .iter()
                .map(|v| v * 0.3)
                .collect::<Vec<_>>(),
            0.4,
            Some([35.0, 45.0]),
        );
        assert_eq!(weak.abs_peak_identified, Some(false));
        assert_eq!(weak.plateau.unwrap().within_ci_span_pct, 100.0);
    }

    #[test]
    fn without_a_bootstrap_nothing_is_judged() {
        let m = model(&bump(4.0, 3.0, 0.9), 0.1, None);
        assert_eq!(m.abs_peak_identified, None);
        assert!(m.plateau.is_none());
    }

    fn stability(share_stable: f64) -> StabilityBootstrap {
        StabilityBootstrap {
            share_stable,
            std_median: f64::NAN,
            std_ci: [f64::NAN; 2],
        }
    }

    #[test]
    fn a_plateau_leaves_the_answer_not_settled_whatever_the_bootstrap_says() {
        let sharp = model(&bump(8.0, 1.5, 0.0), 0.1, Some([35.0, 45.0]));
        let flat = model(&bump(8.0, 3.0, 0.9), 0.1, Some([35.0, 45.0]));
        let pa = peak_analysis(&[40.0, 40.0], 10.0);
        let both = [sharp.clone(), sharp.clone()];
        assert_eq!(
            answer_class(&both, &pa, Some(&stability(0.99))),
            AnswerClass::Stable
        );
        assert_eq!(
            answer_class(&both, &pa, Some(&stability(0.01))),
            AnswerClass::Shifts
        );
        assert_eq!(
            answer_class(&both, &pa, Some(&stability(0.5))),
            AnswerClass::NotSettled
        );
        let one_flat = [sharp.clone(), flat.clone()];
        for share in [0.0, 0.5, 1.0] {
            assert_eq!(
                answer_class(&one_flat, &pa, Some(&stability(share))),
                AnswerClass::NotSettled
            );
        }
        // One model: nothing to compare, plateau or not.
        let one = peak_analysis(&[40.0], 10.0);
        assert_eq!(
            answer_class(&[flat], &one, None),
            AnswerClass::NotApplicable
        );
    }

    #[test]
    fn without_a_bootstrap_the_rule_makes_the_call() {
        let flat = model(&bump(8.0, 3.0, 0.9), 0.1, None);
        let pair = [flat.clone(), flat];
        let stable = peak_analysis(&[40.0, 45.0], 10.0);
        let shifts = peak_analysis(&[10.0, 90.0], 10.0);
        assert_eq!(answer_class(&pair, &stable, None), AnswerClass::Stable);
        assert_eq!(answer_class(&pair, &shifts, None), AnswerClass::Shifts);
    }
}
