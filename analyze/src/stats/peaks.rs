//! The seed's per-model peak and sign-change logic (section 5 of the notebook),
//! the |r| peak beside it, and the cross-model verdict.

use serde::Serialize;

/// `layer / n_layers * 100`, as the seed.
pub fn depth_pct(layer: u32, n_layers: u32) -> f64 {
    f64::from(layer) / f64::from(n_layers) * 100.0
}

#[derive(Debug, Clone, Serialize)]
pub struct SignChange {
    pub layer_before: u32,
    pub layer_after: u32,
    pub midpoint_pct: f64,
}

/// One entry of the seed's `summary` list (same keys, same meanings).
#[derive(Debug, Clone, Serialize)]
pub struct SeedSummary {
    pub model: String,
    pub n_layers: u32,
    pub max_pos_r: f64,
    pub max_pos_layer: u32,
    pub max_pos_pct: f64,
    pub max_neg_r: f64,
    pub max_neg_layer: u32,
    pub max_neg_pct: f64,
    pub final_r: f64,
    pub sign_changes: Vec<SignChange>,
}

/// Index of Python's `max(values, key=key)` + `list.index`: the first item is the
/// starting best and a later one replaces it only if its key is strictly greater.
/// So a NaN never replaces an earlier value, but a NaN in the first place is never
/// replaced (every comparison with it is false): the seed's behaviour, which
/// `nan_layers` warns about.
pub fn first_argmax(values: &[f64], key: impl Fn(f64) -> f64) -> usize {
    let mut best = 0;
    let mut best_key = key(values[0]);
    for (i, &v) in values.iter().enumerate().skip(1) {
        let k = key(v);
        if k > best_key {
            best = i;
            best_key = k;
        }
    }
    best
}

/// The sampled layers whose r is NaN (a constant UA or preference across categories).
pub fn nan_layers(layers: &[u32], r: &[f64]) -> Vec<u32> {
    layers
        .iter()
        .zip(r)
        .filter(|(_, v)| v.is_nan())
        .map(|(&l, _)| l)
        .collect()
}

/// The seed's summary for one model from its sampled layers (ascending) and their r.
pub fn seed_summary(model: &str, n_layers: u32, layers: &[u32], r: &[f64]) -> SeedSummary {
    let pos = first_argmax(r, |v| v);
    let neg = first_argmax(r, |v| -v);
    let last = layers.len() - 1;
    let mut sign_changes = Vec::new();
    for i in 0..last {
        if r[i] * r[i + 1] < 0.0 {
            let midpoint = f64::from(layers[i] + layers[i + 1]) / 2.0;
            sign_changes.push(SignChange {
                layer_before: layers[i],
                layer_after: layers[i + 1],
                midpoint_pct: midpoint / f64::from(n_layers) * 100.0,
            });
        }
    }
    SeedSummary {
        model: model.to_string(),
        n_layers,
        max_pos_r: r[pos],
        max_pos_layer: layers[pos],
        max_pos_pct: depth_pct(layers[pos], n_layers),
        max_neg_r: r[neg],
        max_neg_layer: layers[neg],
        max_neg_pct: depth_pct(layers[neg], n_layers),
        final_r: r[last],
        sign_changes,
    }
}

/// Where |r| peaks (first occurrence), beside the seed's max positive r.
#[derive(Debug, Clone, Serialize)]
pub struct AbsPeak {
    pub r: f64,
    pub layer: u32,
    pub pct: f64,
}

pub fn abs_peak(n_layers: u32, layers: &[u32], r: &[f64]) -> AbsPeak {
    let i = first_argmax(r, f64::abs);
    AbsPeak {
        r: r[i],
        layer: layers[i],
        pct: depth_pct(layers[i], n_layers),
    }
}

/// numpy's `np.mean` and `np.std` (ddof 0) for a handful of values.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).abs().powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The seed's `peak_analysis`, with the verdict left out (None) for fewer than 2 models.
#[derive(Debug, Clone, Serialize)]
pub struct PeakAnalysis {
    pub mean_peak_pct: f64,
    pub std_peak_pct: Option<f64>,
    pub peaks_stable: Option<bool>,
    pub n_models: usize,
    pub threshold_pct: f64,
    pub verdict_applicable: bool,
}

pub fn peak_analysis(peaks_pct: &[f64], threshold: f64) -> PeakAnalysis {
    let (mean, std) = mean_std(peaks_pct);
    let ok = peaks_pct.len() >= 2;
    PeakAnalysis {
        mean_peak_pct: mean,
        std_peak_pct: ok.then_some(std),
        peaks_stable: ok.then_some(std < threshold),
        n_models: peaks_pct.len(),
        threshold_pct: threshold,
        verdict_applicable: ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_reference_values() {
        // Pythia-410M from the seed's saved JSON.
        let layers = [0, 4, 8, 12, 16, 20, 24];
        let r = [
            -0.831263162366431,
            -0.9092815334431038,
            0.12213662706185907,
            -0.1932379518095443,
            -0.7901292580358887,
            -0.9717772987471962,
            -0.884901052996171,
        ];
        let s = seed_summary("m", 24, &layers, &r);
        assert_eq!((s.max_pos_layer, s.max_neg_layer), (8, 20));
        assert_eq!(s.sign_changes.len(), 2);
        assert!((s.sign_changes[1].midpoint_pct - 41.66666666666667).abs() < 1e-12);
        let pa = peak_analysis(&[33.33333333333333, 50.0, 25.0, 22.22222222222222], 10.0);
        assert!((pa.std_peak_pct.unwrap() - 10.825317547305483).abs() < 1e-12);
        assert!((pa.mean_peak_pct - 32.638888888888886).abs() < 1e-12);
        assert_eq!(pa.peaks_stable, Some(false));
    }

    #[test]
    fn nan_follows_pythons_max() {
        let nan = f64::NAN;
        // A later NaN never wins; a first NaN is never beaten.
        assert_eq!(first_argmax(&[0.1, nan, 0.5, 0.5], |v| v), 2);
        assert_eq!(first_argmax(&[nan, 0.9, -0.95], |v| v), 0);
        assert_eq!(first_argmax(&[0.2, -0.9, nan], f64::abs), 1);
        assert_eq!(nan_layers(&[0, 4, 8], &[nan, 0.1, nan]), vec![0, 8]);
    }
}
