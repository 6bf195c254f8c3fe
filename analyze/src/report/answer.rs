//! The report's head: the headline and its evidence, the question, the answer in
//! one paragraph with its uncertainty (results.json's `answer_details`), and the notes.

use std::fmt::Write as _;

use super::headline::{evidence, headline, permutation_floor, plateau_words};
use super::training::checkpoint_paragraph;
use crate::analysis::results::{Analysis, StabilityBootstrap};
use crate::analysis::verdict::SETTLED_SHARE;
use crate::format::{f3, pct};
use crate::stats::correlation::critical_r;

/// What the share of resamples in which the verdict is "stable" says: a frequency
/// over resampled datasets, not the probability that the peaks are stable.
fn robustness(s: &StabilityBootstrap) -> &'static str {
    if s.share_stable >= SETTLED_SHARE {
        "stable in at least 95% of resamples"
    } else if s.share_stable <= 1.0 - SETTLED_SHARE {
        "shifting in at least 95% of resamples"
    } else {
        "split between resamples, so these data do not settle it"
    }
}

/// The question, the answer, the checkpoint compared (with a revision axis) and
/// the analysis' notes.
pub fn section(a: &Analysis) -> String {
    let mut r = format!("{}\n\n", headline(a));
    for b in evidence(a) {
        let _ = writeln!(r, "- {b}");
    }
    r.push_str("\n# Uniformity Asymmetry across model scale\n\n");
    let _ = writeln!(
        r,
        "> Does the layer range where |r| peaks shift with model size?\n"
    );
    let _ = writeln!(r, "## Answer in detail\n\n{}\n", answer_paragraph(a));
    if let Some(c) = checkpoint_paragraph(a) {
        let _ = writeln!(r, "{c}\n");
    }
    for w in &a.warnings {
        let _ = writeln!(r, "> Note: {w}\n");
    }
    r
}

/// The answer, in one paragraph, with its uncertainty.
pub fn answer_paragraph(a: &Analysis) -> String {
    let mut s = peaks_sentences(a);
    if a.primary().abs_peak_analysis.verdict_applicable {
        s.push_str(&verdict_sentences(a));
    } else {
        s.push_str("With a single model the cross-model question (does the peak shift with size?) cannot be answered: the verdict is not applicable; add at least one more model.");
    }
    s
}

/// What was analysed and where each model's |r| peak lies.
fn peaks_sentences(a: &Analysis) -> String {
    let p = a.primary();
    let n = p.models.len();
    let mut s = String::new();
    let layers_desc = if a.settings.layer_step == 1 {
        "every layer".to_string()
    } else {
        format!("every {}th layer plus the last", a.settings.layer_step)
    };
    let _ = write!(
        s,
        "Pooling `{}`, {} model{}, {}, r over {} categories. ",
        p.pooling,
        n,
        if n == 1 { "" } else { "s" },
        layers_desc,
        a.categories.len()
    );
    let peaks: Vec<String> = p
        .models
        .iter()
        .map(|m| {
            let ci = m
                .peak_bootstrap
                .as_ref()
                .map(|b| format!(", 95% CI {}–{}", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
                .unwrap_or_default();
            let place = m
                .plateau
                .as_ref()
                .map(|pl| {
                    format!(
                        "; its position is not identified by these data: {}",
                        plateau_words(pl)
                    )
                })
                .unwrap_or_default();
            format!(
                "{} at layer {} ({}{ci}, r = {}{place})",
                m.model,
                m.abs_peak.layer,
                pct(m.abs_peak.pct),
                f3(m.abs_peak.r)
            )
        })
        .collect();
    let _ = write!(s, "The |r| peak lies: {}. ", peaks.join("; "));
    s
}

/// The verdict across models by the seed's rule, on |r| and on its own statistic,
/// with how often resamples agree, and what the number of categories allows.
fn verdict_sentences(a: &Analysis) -> String {
    let p = a.primary();
    let abs = &p.abs_peak_analysis;
    let mut s = String::new();
    let std = abs.std_peak_pct.unwrap_or(f64::NAN);
    let _ = write!(
        s,
        "Across models the |r| peak position has mean {:.1}% and population std {:.1} points of depth, {} the threshold of {} points, so by the seed's rule the peak {}",
        abs.mean_peak_pct,
        std,
        if std < abs.threshold_pct { "below" } else { "not below" },
        abs.threshold_pct,
        if abs.peaks_stable == Some(true) { "is STABLE across scale" } else { "SHIFTS with model size" }
    );
    if let Some(st) = &p.stability_abs {
        let _ = write!(
            s,
            "; in {} stratified pair-bootstrap resamples the verdict \"stable\" holds in {:.1}% of them (std 95% CI {:.1}–{:.1}): {}",
            a.settings.bootstrap,
            st.share_stable * 100.0,
            st.std_ci[0],
            st.std_ci[1],
            robustness(st)
        );
    }
    if p.models.iter().any(|m| m.plateau.is_some()) {
        let _ = write!(
            s,
            ". Whatever the spread, the answer is not settled by these data: a model's |r| peak position is not identified, and a position the data do not place cannot be compared across models"
        );
    }
    let pa = &p.peak_analysis;
    let _ = write!(
        s,
        ". The seed's own statistic (max positive r) gives mean {:.1}%, std {:.1} → {}",
        pa.mean_peak_pct,
        pa.std_peak_pct.unwrap_or(f64::NAN),
        if pa.peaks_stable == Some(true) {
            "STABLE"
        } else {
            "SHIFTS"
        }
    );
    if let Some(st) = &p.stability_max_pos {
        let _ = write!(
            s,
            " (stable in {:.1}% of resamples)",
            st.share_stable * 100.0
        );
    }
    let _ = write!(s, ". {}", small_n_sentence(a));
    s
}

/// Below this many categories a single layer's r says little (|r| > 0.63 is needed
/// for p < 0.05 at n = 10), and the report says so.
const FEW_CATEGORIES: usize = 10;

/// What n categories allow: the |r| a single layer needs and the smallest
/// attainable permutation p (1/n! exact, 1/(draws + 1) Monte Carlo).
fn small_n_sentence(a: &Analysis) -> String {
    let n = a.categories.len();
    let floor = permutation_floor(a);
    format!(
        "Each r rests on {}{n} categories (df = {}): at one layer |r| must exceed {:.3} for p < 0.05, and the smallest attainable permutation p is {floor}{}; see the Holm-corrected and permutation p-values below.",
        if n < FEW_CATEGORIES { "only " } else { "" },
        n.saturating_sub(2),
        critical_r(n),
        if n < FEW_CATEGORIES {
            ", so single-layer p-values are weak"
        } else {
            ""
        }
    )
}
