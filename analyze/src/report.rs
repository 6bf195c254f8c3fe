//! `report.md`: the answer in one paragraph with its uncertainty, then tables, the
//! seed's interpretation template filled in, and notes on the seed's quirks.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::analysis::{Analysis, PoolingResult, StabilityBootstrap};
use crate::correlation::{PermutationKind, MAX_EXACT};
use crate::uniformity::Arithmetic;

fn f3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.3}")
    } else {
        "n/a".into()
    }
}

fn pv(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v < 1e-3 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}%")
    } else {
        "n/a".into()
    }
}

/// What the share of resamples in which the verdict is "stable" says: a frequency
/// over resampled datasets, not the probability that the peaks are stable.
fn robustness(s: &StabilityBootstrap) -> &'static str {
    if s.share_stable >= 0.95 {
        "stable in at least 95% of resamples"
    } else if s.share_stable <= 0.05 {
        "shifting in at least 95% of resamples"
    } else {
        "split between resamples, so these data do not settle it"
    }
}

/// The answer, in one paragraph, with its uncertainty.
pub fn answer_paragraph(a: &Analysis) -> String {
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
            format!(
                "{} at layer {} ({}{ci}, r = {})",
                m.model,
                m.abs_peak.layer,
                pct(m.abs_peak.pct),
                f3(m.abs_peak.r)
            )
        })
        .collect();
    let _ = write!(s, "The |r| peak lies: {}. ", peaks.join("; "));
    let abs = &p.abs_peak_analysis;
    if !abs.verdict_applicable {
        let _ = write!(
            s,
            "With a single model the cross-model question (does the peak shift with size?) cannot be answered: the verdict is not applicable; add at least one more model."
        );
        return s;
    }
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

/// |r| needed for a two-sided p < 0.05 over `n` points (t with n - 2 df).
fn critical_r(n: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let df = n.saturating_sub(2) as f64;
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => {
            let t = t.inverse_cdf(0.975);
            t / (df + t * t).sqrt()
        }
        Err(_) => f64::NAN,
    }
}

/// What n categories allow: the |r| a single layer needs and the smallest
/// attainable permutation p (1/n! exact, 1/(draws + 1) Monte Carlo).
fn small_n_sentence(a: &Analysis) -> String {
    let n = a.categories.len();
    // Two significant digits: 1/6! = 1.4e-3 must not read as 0.001.
    let two = |v: f64| {
        if v < 0.01 {
            format!("{v:.1e}")
        } else {
            format!("{v:.3}")
        }
    };
    let floor = match a.permutation_kind {
        PermutationKind::Exact => format!("1/{n}! = {}", two(1.0 / a.n_permutations as f64)),
        PermutationKind::MonteCarlo => format!(
            "1/({} + 1) = {} (Monte Carlo)",
            a.n_permutations,
            two(1.0 / (a.n_permutations + 1) as f64)
        ),
    };
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

/// What `mean_skip_first` drops, per model: the BOS where the tokenizer adds one
/// (Gemma, LLaMA), the first real token where it does not (Pythia), as each
/// manifest records it.
fn first_token_note(a: &Analysis) -> String {
    let groups = [
        (Some(true), "the BOS token (their tokenizer adds one)"),
        (
            Some(false),
            "the first *real* token (their tokenizer adds no BOS)",
        ),
        (
            None,
            "the first token, BOS or not (their caches predate the record)",
        ),
    ];
    groups
        .iter()
        .filter_map(|(adds_bos, what)| {
            let names: Vec<&str> = a
                .models
                .iter()
                .filter(|m| m.manifest.model.adds_bos == *adds_bos)
                .map(|m| m.display.as_str())
                .collect();
            (!names.is_empty()).then(|| format!("for {} it drops {what}", names.join(", ")))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn seed_interpretation(p: &PoolingResult) -> String {
    // The notebook's section 7 template, filled in.
    let mut t = String::from(
        "## Pythia Scaling Analysis: Layer Correlation Across Model Sizes\n\n### Research Question\n> Does the layer-wise correlation pattern (where r flips from positive to negative) \n> shift with model size?\n\n### Models Tested\n",
    );
    for s in p.models.iter().map(|m| &m.seed_summary) {
        let _ = writeln!(
            t,
            "- **{}** ({} layers): Peak r = {:+.3} at {:.0}% depth",
            s.model, s.n_layers, s.max_pos_r, s.max_pos_pct
        );
    }
    let pa = &p.peak_analysis;
    match (pa.std_peak_pct, pa.peaks_stable) {
        (Some(std), Some(stable)) => {
            let _ = write!(
                t,
                "\n### Key Finding\n\nPeak position variability: {std:.1}% (std across models)\n\n"
            );
            if stable {
                let _ = write!(
                    t,
                    "\n**The peak position is STABLE** across model sizes (~{:.0}% depth).\n\nThis suggests:\n- The layer-wise correlation pattern is an architectural property, not emergent\n- The \"mid-layer regime\" appears at a consistent relative depth\n- Scale does not fundamentally change where the correlation sign flips\n",
                    pa.mean_peak_pct
                );
            } else {
                t.push_str(
                    "\n**The peak position SHIFTS** with model size.\n\nThis suggests:\n- The correlation pattern is scale-dependent\n- Larger models may develop different processing regimes\n- Emergent behavior in layer specialization\n",
                );
            }
        }
        _ => t.push_str(
            "\n### Key Finding\n\nOnly one model: the cross-model verdict is not applicable.\n",
        ),
    }
    t
}

pub fn render(a: &Analysis) -> String {
    let p = a.primary();
    let mut r = String::from("# Uniformity Asymmetry across model scale\n\n");
    let _ = writeln!(
        r,
        "> Does the layer range where |r| peaks shift with model size?\n"
    );
    let _ = writeln!(r, "## Answer\n\n{}\n", answer_paragraph(a));
    if let Some(c) = crate::report_training::checkpoint_paragraph(a) {
        let _ = writeln!(r, "{c}\n");
    }
    for w in &a.warnings {
        let _ = writeln!(r, "> Note: {w}\n");
    }
    models_table(&mut r, a);
    crate::report_training::section(&mut r, a);
    seed_summary_table(&mut r, p);
    r.push_str(&crate::cka_report::section(a));
    per_layer_tables(&mut r, a, p);
    other_poolings(&mut r, a);
    let _ = writeln!(
        r,
        "## The seed's interpretation (notebook section 7, filled in)\n"
    );
    r.push_str(&seed_interpretation(p));
    let _ = write!(r, "\n{}", crate::plots::figure_list(a));
    method_notes(&mut r, a);
    r
}

/// Which caches were compared, in size order, and where each came from.
fn models_table(r: &mut String, a: &Analysis) {
    let _ = writeln!(r, "## Models (ordered by parameter count)\n");
    let _ = writeln!(
        r,
        "The order comes from `model.n_parameters` in each cache's manifest.json (refused when implausible for the recorded n_layers and hidden_size); a manifest without it is ordered by n_layers·hidden², marked estimated.\n"
    );
    let _ = writeln!(
        r,
        "| Model | Cache folder | Layers | Hidden | Parameters | Dataset sha256 | Extracted on |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for m in &a.models {
        let params = match (m.n_parameters, m.size_estimated) {
            (Some(n), _) => n.to_string(),
            (None, _) => format!("~{} (n_layers·hidden², estimated)", m.size_for_ordering),
        };
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {}… | {} ({}) |",
            m.display,
            m.name,
            m.n_layers,
            m.hidden_size,
            params,
            &m.manifest
                .dataset
                .sha256
                .chars()
                .take(12)
                .collect::<String>(),
            m.manifest.run.device_name,
            m.manifest.run.execution_provider
        );
    }
}

/// The seed's per-model summary, with the |r| peak and its CI beside it.
fn seed_summary_table(r: &mut String, p: &PoolingResult) {
    let _ = writeln!(r, "\n## Seed-exact summary (pooling `{}`)\n", p.pooling);
    let _ = writeln!(r, "| Model | Layers | Peak r (max positive) | Peak @ | Max \\|r\\| | \\|r\\| peak @ (95% CI) | Most negative r | @ | Final r | Sign changes (midpoint) |");
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
    for m in &p.models {
        let s = &m.seed_summary;
        let ci = m
            .peak_bootstrap
            .as_ref()
            .map(|b| format!(" ({}–{})", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
            .unwrap_or_default();
        let sc: Vec<String> = s
            .sign_changes
            .iter()
            .map(|c| {
                format!(
                    "{}→{} ({:.0}%)",
                    c.layer_before, c.layer_after, c.midpoint_pct
                )
            })
            .collect();
        let _ = writeln!(
            r,
            "| {} | {} | {} | L{} ({}) | {} | L{} ({}){ci} | {} | L{} ({}) | {} | {} |",
            s.model,
            s.n_layers,
            f3(s.max_pos_r),
            s.max_pos_layer,
            pct(s.max_pos_pct),
            f3(m.abs_peak.r),
            m.abs_peak.layer,
            pct(m.abs_peak.pct),
            f3(s.max_neg_r),
            s.max_neg_layer,
            pct(s.max_neg_pct),
            f3(s.final_r),
            if sc.is_empty() {
                "none".into()
            } else {
                sc.join(", ")
            }
        );
    }
    let pa = &p.peak_analysis;
    let _ = writeln!(
        r,
        "\nSeed's peak_analysis (max positive r): mean {:.1}%, std {}, stable: {}.",
        pa.mean_peak_pct,
        pa.std_peak_pct
            .map(|v| format!("{v:.1}%"))
            .unwrap_or_else(|| "n/a".into()),
        pa.peaks_stable
            .map(|v| v.to_string())
            .unwrap_or_else(|| "not applicable (one model)".into())
    );
}

/// How far the other arithmetic moves r, for the per-layer section.
fn arithmetic_sentence(a: &Analysis, p: &PoolingResult) -> String {
    let (used, other) = match a.settings.arithmetic {
        Arithmetic::Exact => (
            "exact (float64 throughout)",
            "the notebook's float32 kernel (`--arithmetic seed`)",
        ),
        Arithmetic::Seed => (
            "seed (the notebook's float32 normalisation, kernel and mean)",
            "float64 (`--arithmetic exact`)",
        ),
    };
    let gap = p
        .arithmetic_gap
        .map(|g| {
            format!(
                "on these data {other} moves r by at most {g:.1e} (largest over models and layers)"
            )
        })
        .unwrap_or_else(|| format!("the gap to {other} was not computed"));
    format!("Cosine arithmetic: {used}; {gap}{}.", compact_note(a))
}

/// Which models' cosines came from the compact statistics, which hold float64
/// blocks only: the other arithmetic needs the embeddings.
fn compact_note(a: &Analysis) -> String {
    let compact: Vec<&str> = a
        .models
        .iter()
        .filter(|m| m.gram_source == schemas::GRAMS_FILE)
        .map(|m| m.display.as_str())
        .collect();
    if compact.is_empty() {
        return String::new();
    }
    format!(
        " ({} read the compact statistics, `{}`: float64 Gram blocks only, no embeddings; `--from-embeddings` reads the embeddings and computes the gap)",
        if compact.len() == a.models.len() { "every model".to_string() } else { compact.join(", ") },
        schemas::GRAMS_FILE
    )
}

/// The permutation floor and what it allows after Holm over `n_layers` layers.
fn floor_sentence(a: &Analysis, n_layers: usize) -> String {
    let holm_floor = (a.permutation_floor * n_layers as f64).min(1.0);
    format!(
        "Permutation floor {} ({}); over {n_layers} layers the smallest possible perm p Holm is {}, so it {} reach 0.05{}.",
        pv(a.permutation_floor),
        match a.permutation_kind {
            PermutationKind::Exact => format!("1/{}! : only {} orderings of {} categories exist", a.categories.len(), a.n_permutations, a.categories.len()),
            PermutationKind::MonteCarlo if a.categories.len() <= MAX_EXACT => {
                let n = a.categories.len();
                let exact = 1.0 / (1..=n).product::<usize>() as f64;
                format!(
                    "1/({} + 1) Monte Carlo draws, asked for; the draws sample the {n}! orderings, so p cannot in truth go below 1/{n}! = {exact:.1e}",
                    a.n_permutations
                )
            }
            PermutationKind::MonteCarlo => format!("1/({} + 1) Monte Carlo draws", a.n_permutations),
        },
        pv(holm_floor),
        if holm_floor <= 0.05 { "can" } else { "can never" },
        if holm_floor > 0.05 && a.permutation_kind == PermutationKind::Exact {
            "; more draws cannot help (every ordering is already counted), only more categories or fewer layers (`--layer-step`)"
        } else {
            ""
        }
    )
}

/// One table per model: every layer's seed-exact r and the rigorous statistics.
fn per_layer_tables(r: &mut String, a: &Analysis, p: &PoolingResult) {
    let _ = writeln!(r, "\n## Per-layer statistics (pooling `{}`)\n", p.pooling);
    let _ = writeln!(
        r,
        "r and p: Pearson over categories (seed-exact). p Holm: Holm-corrected across this model's layers. perm p: {} permutation p ({} orderings of the category preferences). CI: 2.5–97.5 percentile of {} stratified pair-bootstrap resamples. LOCO: range of r with one category left out. pair r: Pearson over pairs (n = {}) of the leave-pair-out centroid asymmetry (centring: {}) with the pair's preference.\n\n{}\n",
        match a.permutation_kind {
            PermutationKind::Exact => "exact",
            PermutationKind::MonteCarlo => "Monte Carlo",
        },
        a.n_permutations,
        a.settings.bootstrap,
        a.pairs_per_category.iter().sum::<usize>(),
        a.settings.pair_centring,
        arithmetic_sentence(a, p)
    );
    for m in &p.models {
        let _ = writeln!(
            r,
            "### {}\n\n{}\n",
            m.model,
            floor_sentence(a, m.layers.len())
        );
        let holm_floor = (a.permutation_floor * m.layers.len() as f64).min(1.0);
        let _ = writeln!(r, "| Layer | Depth | r | p | p Holm | perm p | perm p Holm (≥ {}) | Spearman ρ | 95% CI of r | LOCO r range | pair r | pair p |", pv(holm_floor));
        let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in &m.layers {
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} | {} | {} | {} | {} | [{}, {}] | [{}, {}] | {} | {} |",
                s.layer,
                pct(s.depth_pct),
                f3(s.r),
                pv(s.p),
                pv(s.p_holm),
                pv(s.perm_p),
                pv(s.perm_p_holm),
                f3(s.spearman_rho),
                f3(s.ci_low),
                f3(s.ci_high),
                f3(s.loco_min),
                f3(s.loco_max),
                f3(s.pair_r),
                pv(s.pair_p)
            );
        }
        let _ = writeln!(r);
    }
}

/// The sensitivity table: the same verdict under the cache's other poolings.
fn other_poolings(r: &mut String, a: &Analysis) {
    if a.poolings.len() > 1 {
        let _ = writeln!(r, "## Other poolings (sensitivity)\n");
        let _ = writeln!(r, "| Pooling | Model | \\|r\\| peak @ | 95% CI | max positive r @ | verdict (\\|r\\|) | stable in resamples |");
        let _ = writeln!(r, "|---|---|---|---|---|---|---|");
        for pr in &a.poolings {
            for m in &pr.models {
                let ci = m
                    .peak_bootstrap
                    .as_ref()
                    .map(|b| format!("{}–{}", pct(b.abs_pct_ci[0]), pct(b.abs_pct_ci[1])))
                    .unwrap_or_else(|| "n/a".into());
                let verdict = match pr.abs_peak_analysis.peaks_stable {
                    Some(true) => "stable",
                    Some(false) => "shifts",
                    None => "n/a",
                };
                let share = pr
                    .stability_abs
                    .as_ref()
                    .map(|s| format!("{:.1}%", s.share_stable * 100.0))
                    .unwrap_or_else(|| "n/a".into());
                let _ = writeln!(
                    r,
                    "| {} | {} | L{} ({}) | {} | L{} ({}) | {} | {} |",
                    pr.pooling,
                    m.model,
                    m.abs_peak.layer,
                    pct(m.abs_peak.pct),
                    ci,
                    m.seed_summary.max_pos_layer,
                    pct(m.seed_summary.max_pos_pct),
                    verdict,
                    share
                );
            }
        }
        let _ = writeln!(r);
    }
}

/// How each number was computed, and where the seed's method needs care.
fn method_notes(r: &mut String, a: &Analysis) {
    let _ = writeln!(
        r,
        "\n## Notes on the method and the seed's quirks\n\n\
- **Pooling.** `mean_skip_first` reproduces the seed's `hidden_states[l][0, 1:, :].mean(0)`. The seed meant to skip a BOS token; what it drops depends on the tokenizer: {}. `--pooling mean` (all tokens) and `--pooling last` (last token) are a flag away, and `--all-poolings` reports the cache's other poolings beside it as a sensitivity check.\n\
- **Max positive r vs |r|.** The seed tracks the *max positive* r (and calls it the peak), although the question asks where |r| peaks; when all r are negative its \"peak\" is the least negative layer. Both are reported; the answer above uses |r|.\n\
- **Layer sampling.** The seed samples every 4th layer plus the last (`--layer-step 4` reproduces it exactly); this run used step {}. Coarse sampling quantises peak positions to 4/n_layers of depth, which alone can move the std across the threshold.\n\
- **n = categories.** The seed's Pearson r runs over {} category means, so p uses {} degrees of freedom and one category can carry the whole correlation (see the leave-one-category-out range). The permutation p-value is exact for up to 8 categories (all n! orderings), otherwise Monte Carlo.\n\
- **Bootstrap.** Pairs are resampled with replacement within each category (stratified, seed {}), and the same resample is applied to every model, since all models saw the same dataset. Uniformity of a resample reuses the Gram matrices: for counts w, the sum over position pairs is (wᵀGw − Σ wᵢGᵢᵢ)/2, divided by n(n−1)/2, exactly the seed's `uniformity_score` on the resampled set.\n\
- **Pair-level view.** For pair i of category c: d_i = cos(a_i, m_A,c,−i) − cos(b_i, m_B,c,−i), where m_S,c,−i is the mean of the normalised vectors x/(|x| + 1e-10) of the *other* side-S statements of category c at that layer and pooling (leaving pair i out removes a bias of about 1/n that differs between 20- and 50-pair categories). With `--pair-centring category` the normalised vectors are first centred on the mean of all 2n statements of the category. d_i is correlated with the pair's preference NLL(B) − NLL(A) over all {} pairs.\n\
- **Verdict.** Population std (ddof 0) of the peak positions across models, `std < {}` → stable (the seed's rule, `--stability-threshold`).\n",
        first_token_note(a),
        a.settings.layer_step,
        a.categories.len(),
        a.categories.len().saturating_sub(2),
        a.settings.seed,
        a.pairs_per_category.iter().sum::<usize>(),
        a.settings.stability_threshold
    );
}

pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let path = out.join("report.md");
    std::fs::write(&path, render(a)).with_context(|| format!("{}: cannot write", path.display()))
}

#[cfg(test)]
mod tests {
    use super::critical_r;

    #[test]
    fn critical_r_matches_the_tables() {
        // Two-sided 5% critical values of Pearson r: df 4 -> 0.811, df 28 -> 0.361.
        assert!((critical_r(6) - 0.811).abs() < 1e-3);
        assert!((critical_r(30) - 0.361).abs() < 1e-3);
    }
}
