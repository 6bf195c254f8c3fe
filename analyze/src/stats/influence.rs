//! Influence at a peak: which category moves r the most when left out, whether one
//! category carries r, and whether Pearson's p agrees with the permutation p. With a
//! handful of categories, one far from the others on both axes makes a line by
//! itself; these flags say so where the answer is read.

use super::correlation::r_p_value;

/// One category carries r when leaving it out leaves less than this share of |r|.
pub const CARRY_SHARE: f64 = 0.5;
/// ... or moves Pearson's p across this level.
pub const ALPHA: f64 = 0.05;
/// Pearson's p and the permutation p disagree when Pearson's is this many times
/// smaller, or smaller still: the t distribution trusts a line one point can make.
pub const P_RATIO: f64 = 10.0;

/// The category whose removal moves r the most, and r and p without it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Influence {
    pub index: usize,
    pub r_without: f64,
    /// Pearson's p of `r_without` over the remaining categories.
    pub p_without: f64,
}

/// Fewer categories than this leave too few points, once one is out, for an r that
/// means anything (two points always give ±1).
pub const MIN_CATEGORIES: usize = 4;

/// `loco_r[i]`: r with category `i` left out of `n` categories. None with fewer than
/// `MIN_CATEGORIES` categories or when no leave-one-out r is finite.
pub fn most_influential(r: f64, loco_r: &[f64], n: usize) -> Option<Influence> {
    if n < MIN_CATEGORIES {
        return None;
    }
    let (index, &r_without) = loco_r
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| (a.1 - r).abs().total_cmp(&(b.1 - r).abs()))?;
    Some(Influence {
        index,
        r_without,
        p_without: r_p_value(r_without, n.saturating_sub(1)),
    })
}

/// Why one category carries r (empty when it does not): its removal halves |r|,
/// changes the sign, or takes p from below `ALPHA` to above it. A removal that makes
/// r stronger shows a category holding r down, not carrying it.
pub fn carries(r: f64, p: f64, inf: &Influence) -> Vec<&'static str> {
    let mut why = Vec::new();
    if inf.r_without.abs() < CARRY_SHARE * r.abs() {
        why.push("halves |r|");
    }
    if inf.r_without.signum() != r.signum() && inf.r_without != 0.0 {
        why.push("changes the sign of r");
    }
    if p < ALPHA && inf.p_without >= ALPHA {
        why.push("takes p across 0.05");
    }
    why
}

/// Whether Pearson's p is `P_RATIO` times smaller than the permutation p, or smaller
/// still, where the permutation p could have come out below that: the orderings'
/// `floor` (1/n! with few categories, 1/(draws + 1) by Monte Carlo) lies under
/// `P_RATIO` times Pearson's p. Above it, the permutation p is that large whatever
/// the data.
pub fn p_disagree(pearson_p: f64, permutation_p: f64, floor: f64) -> bool {
    let bound = pearson_p * P_RATIO;
    pearson_p.is_finite() && permutation_p.is_finite() && bound <= permutation_p && floor < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::correlation::{leave_one_out, pearson};

    /// Five categories in a cluster without a trend, one far away on both axes.
    const LEVERAGE: ([f64; 6], [f64; 6]) = (
        [0.01, 0.02, 0.00, 0.015, 0.005, 0.30],
        [0.10, -0.05, 0.02, -0.08, 0.06, 1.50],
    );
    /// Six categories on a noisy line: no one of them makes it.
    const SPREAD: ([f64; 6], [f64; 6]) = (
        [0.01, 0.05, 0.10, 0.14, 0.20, 0.25],
        [0.05, 0.30, 0.45, 0.80, 0.90, 1.30],
    );

    fn flags(x: &[f64], y: &[f64]) -> (Influence, Vec<&'static str>) {
        let (r, p) = pearson(x, y);
        let inf = most_influential(r, &leave_one_out(x, y), x.len()).unwrap();
        let why = carries(r, p, &inf);
        (inf, why)
    }

    #[test]
    fn a_far_category_carries_r() {
        let (x, y) = LEVERAGE;
        let (inf, why) = flags(&x, &y);
        assert_eq!(inf.index, 5, "the far category");
        // r +0.988 (p 2e-4) without it -0.592 (p 0.29): the cluster alone trends down.
        assert_eq!(
            why,
            ["changes the sign of r", "takes p across 0.05"],
            "r without: {}",
            inf.r_without
        );
    }

    #[test]
    fn a_spread_line_is_carried_by_none() {
        let (x, y) = SPREAD;
        let (inf, why) = flags(&x, &y);
        assert!(
            why.is_empty(),
            "{why:?} (category {}, r without {})",
            inf.index,
            inf.r_without
        );
    }

    #[test]
    fn a_sign_change_is_named() {
        let inf = Influence {
            index: 0,
            r_without: -0.2,
            p_without: 0.7,
        };
        assert!(carries(0.3, 0.6, &inf).contains(&"changes the sign of r"));
        assert!(!carries(-0.3, 0.6, &inf).contains(&"changes the sign of r"));
    }

    #[test]
    fn a_removal_that_strengthens_r_carries_nothing() {
        let inf = Influence {
            index: 0,
            r_without: 0.92,
            p_without: 0.027,
        };
        assert!(carries(0.77, 0.071, &inf).is_empty());
    }

    #[test]
    fn three_categories_tell_no_influence() {
        assert_eq!(most_influential(0.9, &[1.0, -1.0, 1.0], 3), None);
    }

    #[test]
    fn pearson_ten_times_below_the_permutation_p_disagrees() {
        assert!(p_disagree(5e-5, 0.019, 1e-4));
        assert!(p_disagree(0.001, 0.01, 1e-4));
        assert!(!p_disagree(0.002, 0.01, 1e-4));
        assert!(!p_disagree(f64::NAN, 0.01, 1e-4));
        // Orderings that cannot give a p below 10x Pearson's say nothing about it:
        // 3 categories (1/3! = 0.167), and one Monte Carlo draw (1/2).
        assert!(!p_disagree(0.01, 1.0 / 6.0, 1.0 / 6.0));
        assert!(!p_disagree(0.043, 0.5, 0.5));
        assert!(p_disagree(0.043, 0.5, 1.0 / 24.0));
    }
}
