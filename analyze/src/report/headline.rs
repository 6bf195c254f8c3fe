//! The answer a reviewer reads first: one line with the verdict class and its key
//! numbers (the report's first line, results.json's `answer`, the CLI's first line),
//! then a few bullets with the evidence, each a fact the details below support.

use crate::analysis::results::{
    Analysis, AnswerClass, ModelPooling, PeakEvidence, Plateau, StabilityBootstrap,
};
use crate::format::{f3, pct, pv};
use crate::stats::correlation::{critical_r, PermutationKind};
use crate::stats::influence::{ALPHA, CARRY_SHARE, MIN_CATEGORIES, P_RATIO};

/// An unidentified peak's plateau: "a plateau from layer 2 to 30, 6%–94% of depth".
pub fn plateau_words(p: &Plateau) -> String {
    format!(
        "a plateau from layer {} to {}, {}–{} of depth",
        p.from_layer,
        p.to_layer,
        pct(p.from_pct),
        pct(p.to_pct)
    )
}

/// Where one model's |r| peak lies: its position, or that the data do not place it
/// and the plateau it may lie on.
fn peak_place(m: &ModelPooling) -> String {
    match &m.plateau {
        Some(p) => format!(
            "the |r| peak position is not identified by these data: {}",
            plateau_words(p)
        ),
        None => format!("|r| peak at {}", pct(m.abs_peak.pct)),
    }
}

/// The first line: the class, the peak positions, their spread against the
/// threshold, and the share of resamples that agree; where a model's peak is not
/// identified, its plateau instead, and why that leaves the answer unsettled.
pub fn headline(a: &Analysis) -> String {
    let c = a.answer_class();
    let p = a.primary();
    if c == AnswerClass::NotApplicable {
        return format!(
            "**{}**: one model ({}, {}); the cross-model question needs at least two.",
            c.as_str(),
            p.models.first().map_or("", |m| m.model.as_str()),
            p.models.first().map_or("n/a".into(), peak_place)
        );
    }
    let (placed, unplaced): (Vec<&ModelPooling>, Vec<&ModelPooling>) =
        p.models.iter().partition(|m| m.plateau.is_none());
    let positions = |models: &[&ModelPooling]| -> Vec<String> {
        models
            .iter()
            .map(|m| format!("{} {}", m.model, pct(m.abs_peak.pct)))
            .collect()
    };
    if !unplaced.is_empty() {
        let plateaus: Vec<String> = unplaced
            .iter()
            .filter_map(|m| {
                Some(format!(
                    "{} ({})",
                    m.model,
                    plateau_words(m.plateau.as_ref()?)
                ))
            })
            .collect();
        let rest = if placed.is_empty() {
            String::new()
        } else {
            format!(
                "; where it is identified, it lies at {} of depth",
                positions(&placed).join(", ")
            )
        };
        return format!(
            "**{}**: the |r| peak position is not identified by these data for {}{rest}; a position the data do not place cannot be compared across models.",
            c.as_str(),
            list(&plateaus)
        );
    }
    let abs = &p.abs_peak_analysis;
    let std = abs.std_peak_pct.unwrap_or(f64::NAN);
    format!(
        "**{}**: the |r| peak lies at {} of depth; their spread (std) is {std:.1} points, {} the threshold of {} points; {}.",
        c.as_str(),
        positions(&placed).join(", "),
        if std < abs.threshold_pct { "below" } else { "not below" },
        abs.threshold_pct,
        agreement(c, p.stability_abs.as_ref(), a.settings.bootstrap)
    )
}

/// "a", "a and b", "a, b and c".
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn agreement(c: AnswerClass, st: Option<&StabilityBootstrap>, n: usize) -> String {
    let Some(st) = st else {
        return "no bootstrap was run (--bootstrap 0), so its uncertainty is not measured, nor whether each peak position is identified".into();
    };
    let stable = st.share_stable * 100.0;
    match c {
        AnswerClass::Stable => format!("{stable:.1}% of {n} pair-bootstrap resamples agree"),
        AnswerClass::Shifts => format!(
            "{:.1}% of {n} pair-bootstrap resamples agree",
            100.0 - stable
        ),
        _ => format!(
            "the rule calls it stable in {stable:.1}% of {n} pair-bootstrap resamples and shifting in the rest"
        ),
    }
}

/// The evidence, 3 to 5 bullets: the seed's own statistic, whether one category
/// carries r, whether the p-values agree, the pair level, what n categories allow.
pub fn evidence(a: &Analysis) -> Vec<String> {
    let mut b = Vec::new();
    if a.primary().abs_peak_analysis.verdict_applicable {
        b.push(seed_statistic(a));
    }
    b.extend(super::robustness::bullet(a));
    b.push(carried(&a.peak_evidence, a.categories.len()));
    b.push(p_values(&a.peak_evidence, &permutation_floor(a)));
    b.extend(pair_level(&a.peak_evidence));
    b.push(categories(a));
    b
}

fn seed_statistic(a: &Analysis) -> String {
    let p = a.primary();
    let pa = &p.peak_analysis;
    let share = p
        .stability_max_pos
        .as_ref()
        .map(|st| format!(" (stable in {:.1}% of resamples)", st.share_stable * 100.0))
        .unwrap_or_default();
    let ci = p
        .stability_abs
        .as_ref()
        .map(|st| {
            format!(
                "; the |r| peaks' std has a 95% CI of {:.1}–{:.1} points",
                st.std_ci[0], st.std_ci[1]
            )
        })
        .unwrap_or_default();
    format!(
        "By the seed's own statistic (the max positive r peak) the std is {:.1} points, so the seed's rule says {}{share}{ci}.",
        pa.std_peak_pct.unwrap_or(f64::NAN),
        if pa.peaks_stable == Some(true) {
            "stable"
        } else {
            "shifts"
        }
    )
}

fn carried(ev: &[PeakEvidence], n: usize) -> String {
    if n < MIN_CATEGORIES {
        return format!(
            "With {n} categories, leaving one out leaves too few points for an r, so no category's influence can be told: every r here rests on all of them."
        );
    }
    let flagged: Vec<String> = ev
        .iter()
        .filter(|e| e.carried())
        .map(|e| {
            format!(
                "at {}'s peak (layer {}, r = {}) `{}` does: without it r = {} (p = {}), which {}",
                e.model,
                e.layer,
                f3(e.r),
                e.influential_category.as_deref().unwrap_or("?"),
                f3(e.r_without),
                pv(e.p_without),
                e.carried_because.join(" and ")
            )
        })
        .collect();
    if !flagged.is_empty() {
        let lever = ev.iter().any(|e| {
            e.carried_because
                .iter()
                .any(|w| *w != "takes p across 0.05")
        });
        return format!(
            "**One category carries r**: {}.{} (`category_scatter.png` rings it)",
            flagged.join("; "),
            if lever {
                " Read such an r as one point against a cluster"
            } else {
                ""
            }
        );
    }
    let largest = ev
        .iter()
        .filter(|e| e.r_without.is_finite())
        .max_by(|x, y| {
            (x.r - x.r_without)
                .abs()
                .total_cmp(&(y.r - y.r_without).abs())
        });
    match largest {
        Some(e) => format!(
            "No single category carries r at any model's peak: leaving out the most influential one keeps at least {:.0}% of |r| and its sign, and p below {ALPHA} where it was (largest change: {}, without `{}`, r {} → {}).",
            CARRY_SHARE * 100.0,
            e.model,
            e.influential_category.as_deref().unwrap_or("?"),
            f3(e.r),
            f3(e.r_without)
        ),
        None => "Leaving one category out gives no finite r at any peak, so no category's influence can be told.".into(),
    }
}

fn p_values(ev: &[PeakEvidence], floor: &str) -> String {
    let each = |e: &PeakEvidence| {
        format!(
            "{}: Pearson p {}, permutation p {}, Spearman ρ {}",
            e.model,
            pv(e.p),
            pv(e.perm_p),
            f3(e.spearman_rho)
        )
    };
    let flagged: Vec<String> = ev.iter().filter(|e| e.p_disagree).map(each).collect();
    // Ten times below, but the orderings could not give a permutation p that small
    // (`influence::p_disagree`): the gap is the design's, not a leverage point's.
    let coarse = ev
        .iter()
        .any(|e| !e.p_disagree && e.p * P_RATIO <= e.perm_p);
    if flagged.is_empty() && coarse {
        return format!(
            "Pearson's p is {P_RATIO:.0} times below the permutation p at some peak, but with these categories the permutation p cannot come out that small (its floor is {floor}), so the gap says nothing of a leverage point: {}.",
            ev.iter().map(each).collect::<Vec<_>>().join("; ")
        );
    }
    if flagged.is_empty() {
        return format!(
            "Pearson's p and the permutation p agree at every peak (Pearson's is never {P_RATIO:.0} times smaller): {}.",
            ev.iter().map(each).collect::<Vec<_>>().join("; ")
        );
    }
    format!(
        "**Pearson's p is {P_RATIO:.0} times below the permutation p or more**, the mark of one leverage point, so read the permutation p: {}.",
        flagged.join("; ")
    )
}

fn pair_level(ev: &[PeakEvidence]) -> Option<String> {
    let shown: Vec<&PeakEvidence> = ev.iter().filter(|e| e.pair_r.is_finite()).collect();
    let n = shown.first()?.n_pairs;
    let values: Vec<String> = shown
        .iter()
        .map(|e| format!("{} r = {} (p = {})", e.model, f3(e.pair_r), pv(e.pair_p)))
        .collect();
    let against: Vec<&str> = shown
        .iter()
        .filter(|e| e.pair_p < ALPHA && e.pair_r.signum() != e.r.signum())
        .map(|e| e.model.as_str())
        .collect();
    let weak: Vec<&str> = shown
        .iter()
        .filter(|e| e.pair_p >= ALPHA || !e.pair_p.is_finite())
        .map(|e| e.model.as_str())
        .collect();
    let confirmed = shown.len() - against.len() - weak.len();
    let verdict = if !against.is_empty() {
        format!(
            "it disagrees in sign with the category r at {} (p < {ALPHA})",
            against.join(", ")
        )
    } else if confirmed == 0 {
        format!("it reaches p < {ALPHA} at none of them, so it does not confirm the category r")
    } else if !weak.is_empty() {
        format!(
            "it has the category r's sign with p < {ALPHA} at {confirmed} of them and does not reach p < {ALPHA} at {}",
            weak.join(", ")
        )
    } else {
        format!("it agrees in sign with the category r and reaches p < {ALPHA} at every peak")
    };
    Some(format!(
        "At the same layers the pair level (n = {n} pairs): {}; {verdict}.",
        values.join(", ")
    ))
}

fn categories(a: &Analysis) -> String {
    let n = a.categories.len();
    format!(
        "Each category r rests on {n} categories (df = {}): one layer's |r| must exceed {:.3} for p < {ALPHA}, and the smallest attainable permutation p is {}.",
        n.saturating_sub(2),
        critical_r(n),
        permutation_floor(a)
    )
}

/// The smallest attainable permutation p: 1/n! exact, 1/(draws + 1) Monte Carlo,
/// to two significant digits (1/6! = 1.4e-3 must not read as 0.001).
pub fn permutation_floor(a: &Analysis) -> String {
    let n = a.categories.len();
    let two = |v: f64| {
        if v < 0.01 {
            format!("{v:.1e}")
        } else {
            format!("{v:.3}")
        }
    };
    match a.permutation_kind {
        PermutationKind::Exact => format!("1/{n}! = {}", two(1.0 / a.n_permutations as f64)),
        PermutationKind::MonteCarlo => format!(
            "1/({} + 1) = {} (Monte Carlo)",
            a.n_permutations,
            two(1.0 / (a.n_permutations + 1) as f64)
        ),
    }
}
