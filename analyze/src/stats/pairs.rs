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
use super::uniformity::{dot, sum_and_squares, CategoryBlocks, CategoryGram, CategoryVectors};

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

/// What the pair-level view needs from a category's joint Gram matrix
/// `J = [[A, AB], [AB^T, B]]`: its row sums and diagonal, `O(n)` numbers, so the
/// blocks can be dropped once these are taken.
pub struct PairMoments {
    /// `sum_j A_ij`
    rows_a: Vec<f64>,
    /// `sum_j B_ij`
    rows_b: Vec<f64>,
    /// `sum_j AB_ij` (pair `i`'s A statement against every B)
    rows_ab: Vec<f64>,
    /// `sum_j AB_ji` (pair `i`'s B statement against every A)
    cols_ab: Vec<f64>,
    diag_a: Vec<f64>,
    diag_b: Vec<f64>,
}

impl PairMoments {
    pub fn of(blocks: &CategoryBlocks) -> Self {
        match blocks {
            CategoryBlocks::Gram(g) => Self::from_gram(g),
            CategoryBlocks::Vectors(v) => Self::from_vectors(v),
        }
    }

    /// The same sums as dot products with each side's sum vector: `O(n hidden)`.
    fn from_vectors(v: &CategoryVectors) -> Self {
        let h = v.hidden;
        let (sum_a, _) = sum_and_squares(&v.a, h);
        let (sum_b, _) = sum_and_squares(&v.b, h);
        let with =
            |x: &[f64], s: &[f64]| -> Vec<f64> { x.chunks_exact(h).map(|r| dot(r, s)).collect() };
        let norms = |x: &[f64]| -> Vec<f64> { x.chunks_exact(h).map(|r| dot(r, r)).collect() };
        PairMoments {
            rows_a: with(&v.a, &sum_a),
            rows_b: with(&v.b, &sum_b),
            rows_ab: with(&v.a, &sum_b),
            cols_ab: with(&v.b, &sum_a),
            diag_a: norms(&v.a),
            diag_b: norms(&v.b),
        }
    }

    pub fn from_gram(g: &CategoryGram) -> Self {
        let n = g.n;
        let rows = |m: &[f64]| -> Vec<f64> { m.chunks_exact(n).map(|r| r.iter().sum()).collect() };
        let diag = |m: &[f64]| -> Vec<f64> { (0..n).map(|i| m[i * n + i]).collect() };
        PairMoments {
            rows_a: rows(&g.a),
            rows_b: rows(&g.b),
            rows_ab: rows(&g.ab),
            cols_ab: (0..n)
                .map(|i| (0..n).map(|j| g.ab[j * n + i]).sum())
                .collect(),
            diag_a: diag(&g.a),
            diag_b: diag(&g.b),
        }
    }

    /// Per pair, `cos(a_i, m_A^(-i)) - cos(b_i, m_B^(-i))`.
    pub fn asymmetry(&self, centring: Centring) -> Vec<f64> {
        let (a, b) = match centring {
            Centring::None => (
                leave_out_cosines(&self.rows_a, &self.diag_a),
                leave_out_cosines(&self.rows_b, &self.diag_b),
            ),
            Centring::Category => {
                let (ya, yb) = self.centred_sides();
                (
                    leave_out_cosines(&ya.0, &ya.1),
                    leave_out_cosines(&yb.0, &yb.1),
                )
            }
        };
        a.iter().zip(&b).map(|(x, y)| x - y).collect()
    }

    /// Row sums and diagonals of the side blocks of `H J H`, `H` centring on the mean
    /// of the `2n` vectors: `Y_pq = J_pq - rho_p - rho_q + tau` with `rho` the row
    /// means of `J` and `tau` its grand mean, summed over `q` in closed form.
    #[allow(clippy::type_complexity)]
    fn centred_sides(&self) -> ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>)) {
        let n = self.rows_a.len();
        let m = (2 * n) as f64;
        let rho = |side: &[f64], cross: &[f64]| -> Vec<f64> {
            side.iter().zip(cross).map(|(s, x)| (s + x) / m).collect()
        };
        let rho_a = rho(&self.rows_a, &self.rows_ab);
        let rho_b = rho(&self.rows_b, &self.cols_ab);
        let (sum_a, sum_b) = (rho_a.iter().sum::<f64>(), rho_b.iter().sum::<f64>());
        let tau = (sum_a + sum_b) / m;
        let nf = n as f64;
        let side = |rows: &[f64], diag: &[f64], rho: &[f64], sum: f64| {
            let r = rows
                .iter()
                .zip(rho)
                .map(|(row, p)| row - nf * p - sum + nf * tau)
                .collect();
            let d = diag
                .iter()
                .zip(rho)
                .map(|(g, p)| g - 2.0 * p + tau)
                .collect();
            (r, d)
        };
        (
            side(&self.rows_a, &self.diag_a, &rho_a, sum_a),
            side(&self.rows_b, &self.diag_b, &rho_b, sum_b),
        )
    }
}

/// `cos(x_i, mean_{j != i} x_j)` from the Gram matrix's row sums `R_i` and diagonal
/// alone: with total `T`, `x_i . m = (R_i - G_ii)/(n-1)` and
/// `|m|^2 = (T - 2 R_i + G_ii)/(n-1)^2`; the `n-1` cancels. A zero vector or centroid
/// gives 0.
fn leave_out_cosines(rows: &[f64], diag: &[f64]) -> Vec<f64> {
    let total: f64 = rows.iter().sum();
    rows.iter()
        .zip(diag)
        .map(|(&r, &gii)| {
            let d = gii.max(0.0).sqrt() * (total - 2.0 * r + gii).max(0.0).sqrt();
            if d > 0.0 {
                (r - gii) / d
            } else {
                0.0
            }
        })
        .collect()
}

/// Pair-level statistics of one layer.
#[derive(Debug, Clone, Copy)]
pub struct PairLevel {
    pub r: f64,
    pub p: f64,
    pub rho: f64,
    pub rho_p: f64,
}

/// Pearson and Spearman of the pairs' asymmetries `d` (categories concatenated in
/// order) with `prefs` (same order).
pub fn pair_level(d: &[f64], prefs: &[f64]) -> PairLevel {
    let (r, p) = pearson(d, prefs);
    let (rho, rho_p) = spearman(d, prefs);
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
        let moments =
            PairMoments::from_gram(&category_gram(&matrix, hidden, &a, &b, Arithmetic::Exact));
        let plain = moments.asymmetry(Centring::None);
        let centred = moments.asymmetry(Centring::Category);
        // The vector form (kept for categories of more pairs than dimensions) agrees.
        let (ma, mb) = matrix.split_at(n * hidden);
        let vectors = PairMoments::of(&CategoryBlocks::Vectors(CategoryVectors::normalise(
            ma, mb, n, hidden,
        )));
        for c in [Centring::None, Centring::Category] {
            let (x, y) = (vectors.asymmetry(c), moments.asymmetry(c));
            assert!(
                x.iter().zip(&y).all(|(x, y)| (x - y).abs() < 1e-12),
                "{c}: {x:?} vs {y:?}"
            );
        }
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
