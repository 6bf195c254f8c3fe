//! One table per model of the primary pooling: every layer's seed-exact r and
//! the rigorous statistics, with what the permutation floor and the arithmetic allow.

use std::fmt::Write as _;

use crate::analysis::results::{Analysis, PoolingResult};
use crate::format::{f3, pct, pv};
use crate::stats::correlation::{PermutationKind, MAX_EXACT};
use crate::stats::uniformity::Arithmetic;

/// One table per model: every layer's seed-exact r and the rigorous statistics.
pub fn section(a: &Analysis) -> String {
    let mut out = String::new();
    let r = &mut out;
    let p = a.primary();
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
    out
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
    format!("Cosine arithmetic: {used}; {gap}{}.", sidecar_note(a))
}

/// Which models' cosines came from the sidecar, which holds float64 blocks only:
/// the other arithmetic needs the embeddings. ("The compact statistics" is the
/// sidecar's old name, kept in the wording until the golden outputs are re-pinned.)
fn sidecar_note(a: &Analysis) -> String {
    let from_sidecar: Vec<&str> = a
        .models
        .iter()
        .filter(|m| m.gram_source == schemas::GRAMS_FILE)
        .map(|m| m.display.as_str())
        .collect();
    if from_sidecar.is_empty() {
        return String::new();
    }
    format!(
        " ({} read the compact statistics, `{}`: float64 Gram blocks only, no embeddings; `--from-embeddings` reads the embeddings and computes the gap)",
        if from_sidecar.len() == a.models.len() { "every model".to_string() } else { from_sidecar.join(", ") },
        schemas::GRAMS_FILE
    )
}
