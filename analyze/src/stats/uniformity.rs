//! Uniformity (mean pairwise cosine) and Uniformity Asymmetry from a category's
//! Gram blocks (`schemas::gram`): `U = mean of G over i < j`, `UA = U(A) - U(B)`.
//! The Gram matrices are computed once per model, layer, pooling and category; the
//! bootstrap and the pair-level view reuse them.

use rayon::prelude::*;
use schemas::gram::{category_gram, numpy_pairwise_sum_f32};
pub use schemas::gram::{Arithmetic, CategoryGram};

use crate::cache::Pair;

/// Gram blocks of every category for one layer and pooling (`matrix` is
/// `n_statements x hidden`, row-major, in statement order).
pub fn category_grams(
    matrix: &[f32],
    hidden: usize,
    pairs: &[Vec<Pair>],
    arithmetic: Arithmetic,
) -> Vec<CategoryGram> {
    pairs
        .par_iter()
        .map(|cat| {
            let a: Vec<usize> = cat.iter().map(|p| p.a).collect();
            let b: Vec<usize> = cat.iter().map(|p| p.b).collect();
            category_gram(matrix, hidden, &a, &b, arithmetic)
        })
        .collect()
}

/// The seed's `uniformity_score`: mean of the strict upper triangle of `G`. In `Seed`
/// arithmetic the mean is numpy's: a float32 pairwise sum of `kernel[triu_indices]`
/// (row-major order) divided in float32; `Exact` sums in float64.
pub fn uniformity(g: &[f64], n: usize, arithmetic: Arithmetic) -> f64 {
    let count = n * (n - 1) / 2;
    let upper = (0..n).flat_map(|i| (i + 1..n).map(move |j| g[i * n + j]));
    match arithmetic {
        Arithmetic::Exact => upper.sum::<f64>() / count as f64,
        Arithmetic::Seed => {
            // Exact: the seed kernel's entries are float32 values widened to f64.
            let v: Vec<f32> = upper.map(|x| x as f32).collect();
            f64::from(numpy_pairwise_sum_f32(&v) / count as f32)
        }
    }
}

/// `UA = U(A) - U(B)` (the seed subtracts two Python floats: float64).
pub fn ua(g: &CategoryGram, arithmetic: Arithmetic) -> f64 {
    uniformity(&g.a, g.n, arithmetic) - uniformity(&g.b, g.n, arithmetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniformity_is_the_mean_of_the_upper_triangle() {
        let g = [1.0, 0.5, 0.25, 0.5, 1.0, -0.5, 0.25, -0.5, 1.0];
        for a in Arithmetic::ALL {
            assert!((uniformity(&g, 3, a) - 0.25 / 3.0).abs() < 1e-7);
        }
    }
}
