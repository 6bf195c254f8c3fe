//! The report's second answer: each model's |r| peak carried to the largest model's
//! depth by representation (linear CKA) rather than by percentage.

use std::fmt::Write as _;

use crate::analysis::results::{Alignment, Analysis, DepthMatch};
use crate::format::pct;
use crate::stats::peaks::mean_std;

/// The section: method, table, and whether the peaks meet at one depth.
pub fn section(a: &Analysis) -> String {
    let c = &a.cka;
    let mut s = format!(
        "\n## Depth aligned by representation (linear CKA, pooling `{}`)\n\n",
        c.pooling
    );
    if let Some(why) = &c.not_applicable {
        let _ = writeln!(s, "Not computed: {why}.\n");
        return s;
    }
    s.push_str(&method(c));
    s.push_str(&table(c));
    let _ = writeln!(s, "\n{}\n", reading(c, a.settings.stability_threshold));
    s
}

fn method(c: &Alignment) -> String {
    format!(
        "\"Same % depth\" assumes that layer k of an L-layer model does the work of layer k·L'/L of another. Here each model's layers are matched to those of the largest model, {}, by what they represent: linear CKA (Kornblith et al. 2019) over the pooled vectors of all {} statements, CKA = ⟨Kx, Ky⟩_F / (‖Kx‖_F ‖Ky‖_F) with K = Xc Xcᵀ and Xc the column-centred statements × hidden matrix of one layer. The vectors are the raw pooled ones, centred but not normalised: CKA is invariant to rotations and to isotropic scaling of either model, not to rescaling single dimensions, so massive activations weigh in. A model's |r| peak layer is mapped to the layer of {} with the highest CKA. The CKA matrix of every pair of models is in results.json (`cka_alignment`); each model against {} is drawn in `cka_alignment.png`.\n\n",
        reference(c),
        c.n_statements,
        reference(c),
        reference(c)
    )
}

fn reference(c: &Alignment) -> &str {
    c.reference.as_deref().unwrap_or_default()
}

fn table(c: &Alignment) -> String {
    let mut t = format!(
        "| Model | \\|r\\| peak layer | % depth | Best-matching layer of {0} | Its % depth | CKA |\n|---|---|---|---|---|---|\n",
        reference(c)
    );
    for d in &c.depth {
        let cka = d
            .cka
            .map_or_else(|| "(reference)".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            d.model,
            d.peak_layer,
            pct(d.peak_pct),
            d.matched_layer,
            pct(d.matched_pct),
            cka
        );
    }
    t
}

/// Population std (the seed's rule) of the peak positions, by % depth and by
/// representation, each against the stability threshold.
fn reading(c: &Alignment, threshold: f64) -> String {
    let by_pct: Vec<f64> = c.depth.iter().map(|d| d.peak_pct).collect();
    let by_cka: Vec<f64> = c.depth.iter().map(|d| d.matched_pct).collect();
    let (std_pct, std_cka) = (mean_std(&by_pct).1, mean_std(&by_cka).1);
    let same = |std: f64| std < threshold;
    let agreement = if same(std_pct) == same(std_cka) {
        "The two readings agree."
    } else {
        "The two readings disagree: the % depth answer rests on the assumption that layers correspond by percentage, which CKA does not support here."
    };
    let matched: Vec<f64> = c.depth.iter().filter_map(|d| d.cka).collect();
    let lo = matched.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = matched.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "By % depth the |r| peaks spread with std {std_pct:.1} points; carried to {}'s layers by CKA they lie at {} of its depth, std {std_cka:.1} points, {} the threshold of {threshold} points: the peaks {} at the same representational depth. {agreement} The best matches have CKA {lo:.3}–{hi:.3}; a low value means no layer of {} represents the statements like the peak layer does, and its match says little.",
        reference(c),
        positions(&c.depth),
        if same(std_cka) { "below" } else { "not below" },
        if same(std_cka) { "land" } else { "do not land" },
        reference(c)
    )
}

fn positions(depth: &[DepthMatch]) -> String {
    depth
        .iter()
        .map(|d| format!("{} (layer {})", pct(d.matched_pct), d.matched_layer))
        .collect::<Vec<_>>()
        .join(", ")
}
