//! Pearson (scipy.stats.pearsonr numerics), Spearman, exact/Monte Carlo
//! permutation p-values, Holm correction and leave-one-category-out r.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::function::beta::beta_reg;

/// Two-sided p of a correlation `r` over `n` points: Student t with `n - 2`
/// degrees of freedom, written as the regularised incomplete beta
/// `I_{1-r^2}((n-2)/2, 1/2)`, which is scipy's beta form and stays exact near |r| = 1.
pub fn r_p_value(r: f64, n: usize) -> f64 {
    if !r.is_finite() {
        return f64::NAN;
    }
    if n <= 2 {
        return 1.0;
    }
    let df = (n - 2) as f64;
    let x = (1.0 - r * r).clamp(0.0, 1.0);
    if x == 0.0 {
        return 0.0;
    }
    beta_reg(df / 2.0, 0.5, x).clamp(0.0, 1.0)
}

/// |r| needed for a two-sided p < 0.05 over `n` points (t with n - 2 df).
pub fn critical_r(n: usize) -> f64 {
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

/// Pearson r as scipy computes it: centre, scale each by its norm, dot, clip to [-1, 1].
/// NaN when either input is constant.
pub fn pearson_r(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let nx = x.iter().map(|v| (v - mx) * (v - mx)).sum::<f64>().sqrt();
    let ny = y.iter().map(|v| (v - my) * (v - my)).sum::<f64>().sqrt();
    if nx == 0.0 || ny == 0.0 {
        return f64::NAN;
    }
    let r: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| ((a - mx) / nx) * ((b - my) / ny))
        .sum();
    r.clamp(-1.0, 1.0)
}

/// `(r, p)` as `scipy.stats.pearsonr`.
pub fn pearson(x: &[f64], y: &[f64]) -> (f64, f64) {
    let r = pearson_r(x, y);
    (r, r_p_value(r, x.len()))
}

/// Ranks with ties averaged (1-based), as scipy.stats.rankdata.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rho and its two-sided t-distribution p (scipy.stats.spearmanr).
pub fn spearman(x: &[f64], y: &[f64]) -> (f64, f64) {
    pearson(&ranks(x), &ranks(y))
}

/// How a permutation p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PermutationKind {
    /// Every one of the n! orderings (n <= 8 categories).
    Exact,
    /// Seeded random orderings; p = (hits + 1) / (draws + 1).
    MonteCarlo,
}

/// All permutations of `0..n` (Heap's algorithm).
pub fn all_permutations(n: usize) -> Vec<Vec<usize>> {
    let mut a: Vec<usize> = (0..n).collect();
    let mut out = vec![a.clone()];
    let mut c = vec![0usize; n];
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                a.swap(0, i);
            } else {
                a.swap(c[i], i);
            }
            out.push(a.clone());
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    out
}

/// Up to this many categories every ordering is tested (8! = 40320), beyond it Monte Carlo.
pub const MAX_EXACT: usize = 8;

/// Orderings to test against: all n! for n <= MAX_EXACT, else `draws` seeded shuffles.
pub struct Permutations {
    pub kind: PermutationKind,
    pub orders: Vec<Vec<usize>>,
}

impl Permutations {
    /// Every ordering for up to `MAX_EXACT` items unless `monte_carlo` asks for draws.
    pub fn new(n: usize, draws: usize, seed: u64, monte_carlo: bool) -> Self {
        if n <= MAX_EXACT && !monte_carlo {
            Self {
                kind: PermutationKind::Exact,
                orders: all_permutations(n),
            }
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_9e37);
            let orders = (0..draws)
                .map(|_| {
                    let mut v: Vec<usize> = (0..n).collect();
                    for i in (1..n).rev() {
                        let j = rng.random_range(0..=i);
                        v.swap(i, j);
                    }
                    v
                })
                .collect();
            Self {
                kind: PermutationKind::MonteCarlo,
                orders,
            }
        }
    }

    /// The smallest p these orderings can give, whatever the data: with exact
    /// orderings only the observed one may reach |r_obs| (1/n!); Monte Carlo adds
    /// one to hits and draws (1/(draws+1)). Holm over L layers cannot go below L times it.
    pub fn floor(&self) -> f64 {
        match self.kind {
            PermutationKind::Exact => 1.0 / self.orders.len() as f64,
            PermutationKind::MonteCarlo => 1.0 / (self.orders.len() + 1) as f64,
        }
    }

    /// Two-sided permutation p of Pearson r: share of orderings of `y` with
    /// `|r| >= |r_obs|` (a 1e-12 tolerance absorbs rounding of ties).
    pub fn p_value(&self, x: &[f64], y: &[f64]) -> f64 {
        let obs = pearson_r(x, y).abs();
        if !obs.is_finite() {
            return f64::NAN;
        }
        let mut yp = vec![0.0; y.len()];
        let mut hits = 0usize;
        for o in &self.orders {
            for (k, &i) in o.iter().enumerate() {
                yp[k] = y[i];
            }
            if pearson_r(x, &yp).abs() >= obs - 1e-12 {
                hits += 1;
            }
        }
        match self.kind {
            PermutationKind::Exact => hits as f64 / self.orders.len() as f64,
            PermutationKind::MonteCarlo => (hits + 1) as f64 / (self.orders.len() + 1) as f64,
        }
    }
}

/// Holm step-down adjusted p-values (NaN stays NaN and is not counted).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = idx.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (k, &i) in idx.iter().enumerate() {
        let adj = ((m - k) as f64 * p[i]).min(1.0);
        running = running.max(adj);
        out[i] = running;
    }
    out
}

/// r with each category left out in turn (same order as the input).
pub fn leave_one_out(x: &[f64], y: &[f64]) -> Vec<f64> {
    let without = |v: &[f64], skip: usize| -> Vec<f64> {
        v.iter()
            .enumerate()
            .filter(|&(i, _)| i != skip)
            .map(|(_, &e)| e)
            .collect()
    };
    (0..x.len())
        .map(|skip| pearson_r(&without(x, skip), &without(y, skip)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn critical_r_matches_the_tables() {
        // Two-sided 5% critical values of Pearson r: df 4 -> 0.811, df 28 -> 0.361.
        assert!((super::critical_r(6) - 0.811).abs() < 1e-3);
        assert!((super::critical_r(30) - 0.361).abs() < 1e-3);
    }

    use super::*;

    #[test]
    fn pearson_matches_scipy_values() {
        // scipy.stats.pearsonr([1,2,3,4,5,6],[2,1,4,3,7,5]) -> (0.7917946548886294, 0.06051140336275671)
        let (r, p) = pearson(&[1., 2., 3., 4., 5., 6.], &[2., 1., 4., 3., 7., 5.]);
        assert!((r - 0.7917946548886294).abs() < 1e-12);
        assert!((p - 0.06051140336275671).abs() < 1e-12, "{p}");
    }

    #[test]
    fn permutations_and_holm() {
        assert_eq!(all_permutations(6).len(), 720);
        let h = holm(&[0.01, 0.04, 0.03]);
        assert!(
            (h[0] - 0.03).abs() < 1e-12
                && (h[2] - 0.06).abs() < 1e-12
                && (h[1] - 0.06).abs() < 1e-12
        );
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }

    #[test]
    fn monte_carlo_on_request_estimates_the_exact_p_and_cannot_beat_its_floor() {
        let x = [0.1, 0.5, 0.2, 0.9, 0.4, 0.7];
        let y = [0.0, 0.6, 0.1, 1.0, 0.5, 0.6];
        let exact = Permutations::new(6, 0, 1, false);
        assert_eq!(
            (exact.kind, exact.floor()),
            (PermutationKind::Exact, 1.0 / 720.0)
        );
        let mc = Permutations::new(6, 20_000, 1, true);
        assert_eq!(mc.kind, PermutationKind::MonteCarlo);
        assert_eq!(mc.floor(), 1.0 / 20_001.0);
        let (pe, pm) = (exact.p_value(&x, &y), mc.p_value(&x, &y));
        // Binomial sd of the estimate at p ~ 0.01 with 20,000 draws is ~7e-4.
        assert!((pe - pm).abs() < 3e-3, "exact {pe} vs Monte Carlo {pm}");
        assert!(pm >= 1.0 / 720.0 - 3e-3);
    }
}
