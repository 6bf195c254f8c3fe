//! Uniformity (mean pairwise cosine) and Uniformity Asymmetry from a category's
//! Gram blocks or vectors (`schemas::gram`): `U = mean of G over i < j`,
//! `UA = U(A) - U(B)`. Each category's blocks are computed once per model, layer and
//! pooling; the bootstrap and the pair-level view take theirs from the same blocks.

use schemas::gram::numpy_pairwise_sum_f32;
pub use schemas::gram::{Arithmetic, CategoryBlocks, CategoryGram, CategoryVectors};

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

/// UA of a category: from its Gram blocks as `ua`, or from its vectors (only ever
/// kept in exact arithmetic) as `(|sum x|^2 - sum |x|^2) / 2` over the `n(n-1)/2`
/// pairs of each side, the same sum without the `n x n` matrix.
pub fn ua_of(blocks: &CategoryBlocks, arithmetic: Arithmetic) -> f64 {
    match blocks {
        CategoryBlocks::Gram(g) => ua(g, arithmetic),
        CategoryBlocks::Vectors(v) => {
            debug_assert_eq!(arithmetic, Arithmetic::Exact, "vectors are an exact form");
            let count = (v.n * (v.n - 1) / 2) as f64;
            let side = |x: &[f64]| {
                let (sum, squares) = sum_and_squares(x, v.hidden);
                (dot(&sum, &sum) - squares) / 2.0 / count
            };
            side(&v.a) - side(&v.b)
        }
    }
}

/// The sum of a row-major matrix's rows and the sum of their squared norms.
pub fn sum_and_squares(x: &[f64], hidden: usize) -> (Vec<f64>, f64) {
    let mut sum = vec![0.0; hidden];
    let mut squares = 0.0;
    for row in x.chunks_exact(hidden) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
        squares += dot(row, row);
    }
    (sum, squares)
}

pub fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
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
