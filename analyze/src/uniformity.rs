//! Uniformity (mean pairwise cosine) through Gram matrices of normalised vectors.
//!
//! For a category and side, `G = X X^T` where each row of `X` is `x / (|x| + 1e-10)`
//! in f64, exactly the seed's normalisation. `U = mean of G over i < j`. The Gram
//! matrices are computed once per model, layer, pooling, category and side; the
//! bootstrap and the pair-level view reuse them.

use crate::load::Pair;

/// Full `n x n` Gram matrices of the A and B sides of one category.
#[derive(Debug, Clone)]
pub struct CategoryGram {
    pub n: usize,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

/// Normalised rows `x / (|x| + 1e-10)` (f64) of the given statement rows.
fn normalised(matrix: &[f32], hidden: usize, rows: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut out = Vec::new();
    for r in rows {
        let x = &matrix[r * hidden..(r + 1) * hidden];
        let norm = x
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let d = norm + 1e-10;
        out.extend(x.iter().map(|&v| f64::from(v) / d));
    }
    out
}

/// `X X^T` for a row-major `n x hidden` matrix.
pub fn gram(x: &[f64], n: usize, hidden: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    // SAFETY: the pointers cover n*hidden, hidden*n and n*n f64 with the given strides.
    unsafe {
        matrixmultiply::dgemm(
            n,
            hidden,
            n,
            1.0,
            x.as_ptr(),
            hidden as isize,
            1,
            x.as_ptr(),
            1,
            hidden as isize,
            0.0,
            g.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    // Exact symmetry, so that i<j and j<i sums agree bit for bit.
    for i in 0..n {
        for j in 0..i {
            g[i * n + j] = g[j * n + i];
        }
    }
    g
}

/// Gram matrices of every category for one layer and pooling (`matrix` is
/// `n_statements x hidden`, row-major, in statement order).
pub fn category_grams(matrix: &[f32], hidden: usize, pairs: &[Vec<Pair>]) -> Vec<CategoryGram> {
    pairs
        .iter()
        .map(|cat| {
            let n = cat.len();
            let xa = normalised(matrix, hidden, cat.iter().map(|p| p.a));
            let xb = normalised(matrix, hidden, cat.iter().map(|p| p.b));
            CategoryGram {
                n,
                a: gram(&xa, n, hidden),
                b: gram(&xb, n, hidden),
            }
        })
        .collect()
}

/// The seed's `uniformity_score`: mean of the strict upper triangle of `G`.
pub fn uniformity(g: &[f64], n: usize) -> f64 {
    let mut s = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            s += g[i * n + j];
        }
    }
    s / (n * (n - 1) / 2) as f64
}

impl CategoryGram {
    /// `UA = U(A) - U(B)`.
    pub fn ua(&self) -> f64 {
        uniformity(&self.a, self.n) - uniformity(&self.b, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniformity_of_identical_vectors_is_one_and_gram_matches_dot() {
        let m = vec![1.0f32, 2.0, 3.0, 2.0, 4.0, 6.0, -1.0, 0.5, 0.0];
        let x = normalised(&m, 3, 0..3);
        let g = gram(&x, 3, 3);
        assert!((g[1] - 1.0).abs() < 1e-9);
        let dot02: f64 = (0..3).map(|k| x[k] * x[6 + k]).sum();
        assert!((g[2] - dot02).abs() < 1e-12);
        let u = uniformity(&g, 3);
        assert!((u - (g[1] + g[2] + g[5]) / 3.0).abs() < 1e-12);
    }
}
