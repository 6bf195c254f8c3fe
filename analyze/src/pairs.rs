//! The pair-level view (n = pairs, not categories).
//!
//! For pair `i` of category `c` at one layer and pooling:
//! `d_i = cos(a_i, m_A) - cos(b_i, m_B)`, where `m_S` is the arithmetic mean of
//! the normalised vectors `x / (|x| + 1e-10)` of every side-S statement of `c`
//! (pair `i` included). `d_i` is correlated with the pair's preference
//! `NLL(B) - NLL(A)` over all pairs.

use crate::correlation::{pearson, spearman};
use crate::uniformity::CategoryGram;

/// `cos(x_i, m)` with `m = mean_j x_j`, from the Gram matrix alone:
/// `x_i . m = rowsum_i / n`, `|m| = sqrt(sum G) / n`, `|x_i| = sqrt(G_ii)`.
pub fn centroid_cosines(g: &[f64], n: usize) -> Vec<f64> {
    let rows: Vec<f64> = (0..n).map(|i| g[i * n..(i + 1) * n].iter().sum()).collect();
    let total: f64 = rows.iter().sum();
    let m = total.max(0.0).sqrt();
    (0..n)
        .map(|i| {
            let d = g[i * n + i].max(0.0).sqrt() * m;
            if d > 0.0 {
                rows[i] / d
            } else {
                0.0
            }
        })
        .collect()
}

/// Per pair of one category, `cos(a_i, m_A) - cos(b_i, m_B)`.
pub fn pair_asymmetry(g: &CategoryGram) -> Vec<f64> {
    let ca = centroid_cosines(&g.a, g.n);
    let cb = centroid_cosines(&g.b, g.n);
    ca.iter().zip(&cb).map(|(a, b)| a - b).collect()
}

/// Pair-level statistics of one layer.
#[derive(Debug, Clone, Copy)]
pub struct PairLevel {
    pub r: f64,
    pub p: f64,
    pub rho: f64,
    pub rho_p: f64,
}

/// Pearson and Spearman of the asymmetry of every pair (categories concatenated in
/// order) with `prefs` (same order).
pub fn pair_level(grams: &[CategoryGram], prefs: &[f64]) -> PairLevel {
    let d: Vec<f64> = grams.iter().flat_map(pair_asymmetry).collect();
    let (r, p) = pearson(&d, prefs);
    let (rho, rho_p) = spearman(&d, prefs);
    PairLevel { r, p, rho, rho_p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uniformity::gram;

    #[test]
    fn centroid_cosine_matches_direct_computation() {
        let x = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        let g = gram(&x, 3, 2);
        let c = centroid_cosines(&g, 3);
        let m: [f64; 2] = [(1.0 + 0.6) / 3.0, (0.8 + 1.0) / 3.0];
        let mn = (m[0] * m[0] + m[1] * m[1]).sqrt();
        let want0 = m[0] / mn;
        assert!((c[0] - want0).abs() < 1e-12);
    }
}
