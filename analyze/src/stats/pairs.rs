//! The pair-level view (n = pairs, not categories).
//!
//! For pair `i` of category `c` at one layer and pooling:
//! `d_i = cos(a_i, m_A^(-i)) - cos(b_i, m_B^(-i))`, where `m_S^(-i)` is the mean of
//! the normalised vectors `x / (|x| + 1e-10)` of the other side-S statements of `c`
//! (pair `i` left out: a centroid that contains the pair itself pulls its cosine up
//! by about 1/n, more in 20-pair than in 50-pair categories). `d_i` is correlated
//! with the pair's preference `NLL(B) - NLL(A)` over all pairs.
//!
//! With `Centring::Category`, the normalised vectors are first centred on the mean
//! of all `2n` statements of the category, so that the direction shared by both
//! sides (large in anisotropic models) no longer dominates every cosine.

use std::fmt;
use std::str::FromStr;

use super::correlation::{pearson, spearman};
use super::uniformity::CategoryGram;

/// What the pair-level cosines are taken around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Centring {
    /// The normalised vectors as they are.
    None,
    /// Normalised vectors minus the category's mean over both sides.
    Category,
}

impl Centring {
    pub fn as_str(self) -> &'static str {
        match self {
            Centring::None => "none",
            Centring::Category => "category",
        }
    }
}

impl fmt::Display for Centring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Centring {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Centring::None),
            "category" => Ok(Centring::Category),
            _ => Err(format!(
                "unknown centring '{s}' (expected none or category)"
            )),
        }
    }
}

/// `cos(x_i, mean_{j != i} x_j)` from the Gram matrix alone: with row sums `R_i`
/// and total `T`, `x_i . m = (R_i - G_ii)/(n-1)` and
/// `|m|^2 = (T - 2 R_i + G_ii)/(n-1)^2`; the `n-1` cancels. A zero vector or centroid
/// gives 0.
pub fn leave_out_cosines(g: &[f64], n: usize) -> Vec<f64> {
    let rows: Vec<f64> = (0..n).map(|i| g[i * n..(i + 1) * n].iter().sum()).collect();
    let total: f64 = rows.iter().sum();
    (0..n)
        .map(|i| {
            let gii = g[i * n + i];
            let d = gii.max(0.0).sqrt() * (total - 2.0 * rows[i] + gii).max(0.0).sqrt();
            if d > 0.0 {
                (rows[i] - gii) / d
            } else {
                0.0
            }
        })
        .collect()
}

/// The side blocks of `H J H`, where `J` is the joint `2n x 2n` Gram matrix
/// `[[A, AB], [AB^T, B]]` and `H` centres on the mean of its `2n` vectors:
/// `Y_pq = J_pq - rho_p - rho_q + tau`, `rho` the row means, `tau` the grand mean.
fn centred_sides(g: &CategoryGram) -> (Vec<f64>, Vec<f64>) {
    let n = g.n;
    let m = (2 * n) as f64;
    // Row sums of the joint matrix: A rows see A and AB, B rows see AB^T and B.
    let rho_a: Vec<f64> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| g.a[i * n + j] + g.ab[i * n + j])
                .sum::<f64>()
                / m
        })
        .collect();
    let rho_b: Vec<f64> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| g.ab[j * n + i] + g.b[i * n + j])
                .sum::<f64>()
                / m
        })
        .collect();
    let tau = (rho_a.iter().sum::<f64>() + rho_b.iter().sum::<f64>()) / m;
    let centre = |block: &[f64], rho: &[f64]| -> Vec<f64> {
        (0..n * n)
            .map(|k| block[k] - rho[k / n] - rho[k % n] + tau)
            .collect()
    };
    (centre(&g.a, &rho_a), centre(&g.b, &rho_b))
}

/// Per pair of one category, `cos(a_i, m_A^(-i)) - cos(b_i, m_B^(-i))`.
pub fn pair_asymmetry(g: &CategoryGram, centring: Centring) -> Vec<f64> {
    let (a, b) = match centring {
        Centring::None => (leave_out_cosines(&g.a, g.n), leave_out_cosines(&g.b, g.n)),
        Centring::Category => {
            let (ya, yb) = centred_sides(g);
            (leave_out_cosines(&ya, g.n), leave_out_cosines(&yb, g.n))
        }
    };
    a.iter().zip(&b).map(|(x, y)| x - y).collect()
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
pub fn pair_level(grams: &[CategoryGram], prefs: &[f64], centring: Centring) -> PairLevel {
    let d: Vec<f64> = grams
        .iter()
        .flat_map(|g| pair_asymmetry(g, centring))
        .collect();
    let (r, p) = pearson(&d, prefs);
    let (rho, rho_p) = spearman(&d, prefs);
    PairLevel { r, p, rho, rho_p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::gram::{category_gram, Arithmetic};

    fn unit(x: &[f64]) -> Vec<f64> {
        let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        x.iter().map(|v| v / n).collect()
    }

    fn cos(x: &[f64], y: &[f64]) -> f64 {
        let d: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        d / (x.iter().map(|v| v * v).sum::<f64>().sqrt()
            * y.iter().map(|v| v * v).sum::<f64>().sqrt())
    }

    fn mean(rows: &[Vec<f64>]) -> Vec<f64> {
        let k = rows.len() as f64;
        (0..rows[0].len())
            .map(|d| rows.iter().map(|r| r[d]).sum::<f64>() / k)
            .collect()
    }

    /// The definition, vector by vector: normalise, optionally centre on the
    /// category mean, then the cosine with the mean of the other pairs' vectors.
    fn direct(matrix: &[f32], hidden: usize, n: usize, centring: Centring) -> Vec<f64> {
        let rows: Vec<Vec<f64>> = (0..2 * n)
            .map(|r| {
                unit(
                    &matrix[r * hidden..(r + 1) * hidden]
                        .iter()
                        .map(|&v| v.into())
                        .collect::<Vec<f64>>(),
                )
            })
            .collect();
        let mu = mean(&rows);
        let rows: Vec<Vec<f64>> = match centring {
            Centring::None => rows,
            Centring::Category => rows
                .iter()
                .map(|r| r.iter().zip(&mu).map(|(x, m)| x - m).collect())
                .collect(),
        };
        let side_cos = |side: &[Vec<f64>], i: usize| {
            let others: Vec<Vec<f64>> = side
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, r)| r.clone())
                .collect();
            cos(&side[i], &mean(&others))
        };
        let (a, b) = rows.split_at(n);
        (0..n).map(|i| side_cos(a, i) - side_cos(b, i)).collect()
    }

    #[test]
    fn leave_pair_out_asymmetry_matches_direct_computation_with_and_without_centring() {
        let (n, hidden) = (5, 7);
        // A shared offset makes the vectors anisotropic, so centring changes the answer.
        let matrix: Vec<f32> = (0..2 * n * hidden)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) / 7.0 + if k % hidden == 2 { 9.0 } else { 0.0 })
            .collect();
        let a: Vec<usize> = (0..n).collect();
        let b: Vec<usize> = (n..2 * n).collect();
        let g = category_gram(&matrix, hidden, &a, &b, Arithmetic::Exact);
        let plain = pair_asymmetry(&g, Centring::None);
        let centred = pair_asymmetry(&g, Centring::Category);
        for (got, want) in [
            (&plain, direct(&matrix, hidden, n, Centring::None)),
            (&centred, direct(&matrix, hidden, n, Centring::Category)),
        ] {
            for (x, y) in got.iter().zip(&want) {
                assert!((x - y).abs() < 1e-12, "{x} vs {y}");
            }
        }
        assert!(plain
            .iter()
            .zip(&centred)
            .any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn centring_names_round_trip() {
        for c in [Centring::None, Centring::Category] {
            assert_eq!(c.as_str().parse::<Centring>(), Ok(c));
        }
        assert!("pair".parse::<Centring>().is_err());
    }
}
