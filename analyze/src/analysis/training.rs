//! The training view: per size with several checkpoints, r at every layer and
//! step, where |r| peaks at each step (with a bootstrap CI from the same
//! resamples at every step), and the step after which that peak stops moving.
//!
//! **Settling step.** With |r|-peak positions `p_1 … p_T` (% depth) at steps
//! `s_1 < … < s_T`, the settling index is the smallest `i` with
//! `|p_j − p_T| < threshold` for every `j ≥ i` (the seed's stability threshold, in
//! points of depth, strict as in its `std < threshold`). The settling step is
//! `s_i` when `i < T`; when only the last step qualifies there is none.
//!
//! **Its uncertainty.** The same rule in every pair-bootstrap resample (its own
//! peak positions, its own final position) gives a settling step per resample,
//! counted as `s_T` when it has none; the CI is the 2.5% and 97.5% nearest-rank
//! quantiles of those steps, so both ends are checkpoints.
//!
//! **Verdict per size.** *settles*: a settling step exists and the CI's upper end
//! is before the last step (in at least 97.5% of resamples the peak has settled
//! before the last checkpoint). *keeps moving*: no settling step before the last.
//! *undetermined*: a settling step exists but the CI reaches the last step, or
//! there is no bootstrap to tell.

use super::loaded::Loaded;
use super::results::{
    CheckpointPeak, Grid, Settling, SizeGroup, SizeTraining, TrainingView, Verdict,
};
use crate::settings::AnalysisSettings;
use crate::stats::bootstrap::percentile;
use crate::stats::correlation::pearson;
use crate::stats::peaks::{abs_peak, depth_pct, first_argmax};

/// The view over every size with several checkpoints (primary pooling), from what
/// `read` kept: each checkpoint's layer summaries and its resamples' peak positions.
pub(super) fn view(grid: &Grid, loaded: &[Loaded], settings: &AnalysisSettings) -> TrainingView {
    let n = settings.training_bootstrap;
    let sizes = grid
        .sizes
        .iter()
        .filter(|g| g.members.len() > 1)
        .map(|g| size_training(g, loaded, settings))
        .collect();
    TrainingView {
        pooling: settings.pooling.as_str().to_string(),
        bootstrap: n,
        seed: settings.seed,
        threshold_pct: settings.stability_threshold,
        sizes,
    }
}

/// r of every sampled layer of one cache, primary pooling.
fn layer_r(l: &Loaded) -> Vec<f64> {
    let prefs = l.stmts.category_prefs();
    l.layers_read[0]
        .iter()
        .map(|read| pearson(&read.ua, &prefs).0)
        .collect()
}

fn size_training(g: &SizeGroup, loaded: &[Loaded], settings: &AnalysisSettings) -> SizeTraining {
    let members: Vec<&Loaded> = g.members.iter().map(|m| &loaded[m.index]).collect();
    let layers = members[0].layers.clone();
    let n_layers = members[0].model.n_layers();
    let boot_peaks: Option<Vec<Vec<f64>>> =
        members.iter().map(|l| l.training_peaks.clone()).collect();
    let checkpoints: Vec<CheckpointPeak> = g
        .members
        .iter()
        .zip(&members)
        .enumerate()
        .map(|(t, (m, l))| {
            let r = layer_r(l);
            CheckpointPeak {
                cache: m.cache.clone(),
                revision: m.revision.clone(),
                step: m.step.unwrap_or_default(),
                abs_peak: abs_peak(n_layers, &layers, &r),
                r,
                peak_pct_ci: boot_peaks
                    .as_ref()
                    .map(|b| [percentile(&b[t], 2.5), percentile(&b[t], 97.5)]),
            }
        })
        .collect();
    let settling = settling(
        &checkpoints,
        boot_peaks.as_deref(),
        settings.stability_threshold,
    );
    SizeTraining {
        label: g.label.clone(),
        series: g.series.clone(),
        size: g.size.clone(),
        n_layers,
        depth_pct: layers.iter().map(|&l| depth_pct(l, n_layers)).collect(),
        layers,
        checkpoints,
        settling,
    }
}

/// The |r|-peak position (% depth) of every resample from one cache's bootstrap
/// rows (`layers x B`).
pub(super) fn resample_peaks(rows: &[f64], layers: &[u32], n_layers: u32, n: usize) -> Vec<f64> {
    let mut r = vec![0.0; layers.len()];
    (0..n)
        .map(|b| {
            for (li, v) in r.iter_mut().enumerate() {
                *v = rows[li * n + b];
            }
            depth_pct(layers[first_argmax(&r, f64::abs)], n_layers)
        })
        .collect()
}

/// The settling index of peak positions in step order (see the module comment):
/// `len - 1` when only the last position is within the threshold of itself.
fn settling_index(peaks: &[f64], threshold: f64) -> usize {
    let last = peaks[peaks.len() - 1];
    let mut i = peaks.len() - 1;
    while i > 0 && (peaks[i - 1] - last).abs() < threshold {
        i -= 1;
    }
    i
}

/// Nearest-rank quantile `q` (0..1) of sorted values.
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn settling(
    checkpoints: &[CheckpointPeak],
    boot_peaks: Option<&[Vec<f64>]>,
    threshold: f64,
) -> Settling {
    let steps: Vec<u64> = checkpoints.iter().map(|c| c.step).collect();
    let last = steps.len() - 1;
    let peaks: Vec<f64> = checkpoints.iter().map(|c| c.abs_peak.pct).collect();
    let i = settling_index(&peaks, threshold);
    let step = (i < last).then(|| steps[i]);
    let boot = boot_peaks.map(|b| boot_settling(&steps, b, threshold));
    Settling {
        step,
        ci: boot.map(|b| b.0),
        share_settled: boot.map(|b| b.1),
        verdict: verdict(step, boot.map(|b| b.0), steps[last]),
    }
}

/// The settling step of every resample (`boot_peaks[step][resample]`, % depth): its
/// nearest-rank 95% interval and the share of resamples settled before the last step.
fn boot_settling(steps: &[u64], boot_peaks: &[Vec<f64>], threshold: f64) -> ([u64; 2], f64) {
    let last = steps[steps.len() - 1];
    let n = boot_peaks[0].len();
    let mut settled: Vec<u64> = (0..n)
        .map(|k| {
            let p: Vec<f64> = boot_peaks.iter().map(|t| t[k]).collect();
            steps[settling_index(&p, threshold)]
        })
        .collect();
    settled.sort_unstable();
    let share = settled.iter().filter(|&&s| s < last).count() as f64 / n as f64;
    (
        [nearest_rank(&settled, 0.025), nearest_rank(&settled, 0.975)],
        share,
    )
}

/// Settles only if the point estimate exists and the whole CI lies before the last
/// step; no settling step before the last is "keeps moving".
fn verdict(step: Option<u64>, ci: Option<[u64; 2]>, last_step: u64) -> Verdict {
    match (step, ci) {
        (None, _) => Verdict::KeepsMoving,
        (Some(_), Some(ci)) if ci[1] < last_step => Verdict::Settles,
        _ => Verdict::Undetermined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_index_is_the_start_of_the_final_run() {
        assert_eq!(settling_index(&[80.0, 60.0, 30.0, 25.0, 28.0], 10.0), 2);
        assert_eq!(settling_index(&[30.0, 30.0, 30.0], 10.0), 0);
        // Back out of the threshold late: only what follows counts.
        assert_eq!(settling_index(&[30.0, 30.0, 70.0, 30.0, 32.0], 10.0), 3);
        assert_eq!(settling_index(&[10.0, 40.0, 70.0], 10.0), 2);
        // Strict, as the seed's std < threshold.
        assert_eq!(settling_index(&[40.0, 30.0], 10.0), 1);
    }

    #[test]
    fn verdicts_follow_the_settling_step_and_its_interval() {
        let steps = [0, 1000, 2000, 3000];
        // Every resample settles at step 1000: a CI of one checkpoint, before the last.
        let settled = vec![vec![70.0; 5], vec![30.0; 5], vec![31.0; 5], vec![30.0; 5]];
        let (ci, share) = boot_settling(&steps, &settled, 10.0);
        assert_eq!((ci, share), ([1000, 1000], 1.0));
        assert_eq!(verdict(Some(1000), Some(ci), 3000), Verdict::Settles);
        // Half the resamples only settle at the last step: the CI reaches it.
        let mixed: Vec<Vec<f64>> = settled
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                if i == 2 {
                    r[..3].fill(90.0);
                }
                r
            })
            .collect();
        let (ci, share) = boot_settling(&steps, &mixed, 10.0);
        assert_eq!((ci, share), ([1000, 3000], 0.4));
        assert_eq!(verdict(Some(1000), Some(ci), 3000), Verdict::Undetermined);
        assert_eq!(verdict(None, Some(ci), 3000), Verdict::KeepsMoving);
        assert_eq!(verdict(Some(1000), None, 3000), Verdict::Undetermined);
    }

    #[test]
    fn nearest_rank_quantiles_are_values() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&v, 0.025), 25);
        assert_eq!(nearest_rank(&v, 0.975), 975);
        assert_eq!(nearest_rank(&[7], 0.025), 7);
    }
}
