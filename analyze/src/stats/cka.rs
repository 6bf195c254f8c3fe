//! Linear CKA (Kornblith et al. 2019) between the layers of two models on the same
//! statements (where each model's |r| peak lands is `analysis::alignment`).
//!
//! `CKA(X, Y) = <Kx, Ky>_F / (|Kx|_F |Ky|_F)` with `K = Xc Xc^T`, `Xc` the
//! column-centred `n_statements x hidden` matrix of one layer. Going through the
//! `n x n` Gram matrices lets models of different widths meet in the same space, and
//! each layer's Gram is built right after the layer is read, so no model's
//! embeddings are held beyond one layer.
//!
//! The vectors are the raw pooled vectors, centred but not normalised: CKA is already
//! invariant to isotropic scaling and orthogonal transforms, and per-statement
//! normalisation would hide the massive activations that are part of what a layer
//! represents.

use serde::Serialize;

/// Rows of the Gram computed per product: only the upper triangle is needed, and
/// blocks this size waste little work below the diagonal while keeping the
/// products large enough for the GEMM kernel.
const BLOCK: usize = 32;

/// A layer's centred Gram packed as its upper triangle, row by row, with the
/// off-diagonal entries times √2 so that the dot product of two packed Grams is the
/// Frobenius product of the full ones.
pub fn packed_gram(matrix: &[f32], n: usize, hidden: usize) -> Vec<f64> {
    let x = centred(matrix, n, hidden);
    let mut packed = Vec::with_capacity(n * (n + 1) / 2);
    for start in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - start);
        let block = product(
            &x[start * hidden..],
            rows,
            &x[start * hidden..],
            n - start,
            hidden,
        );
        pack_rows(&block, rows, n - start, &mut packed);
    }
    packed
}

/// The matrix in f64 with each column's mean subtracted.
fn centred(matrix: &[f32], n: usize, hidden: usize) -> Vec<f64> {
    let mut mean = vec![0.0f64; hidden];
    for row in matrix.chunks_exact(hidden) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    matrix
        .chunks_exact(hidden)
        .flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m))
        .collect()
}

/// `A B^T` for row-major `a` (`m x k`) and `b` (`n x k`).
fn product(a: &[f64], m: usize, b: &[f64], n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    // SAFETY: a covers m*k, b covers n*k and c m*n f64 with the given strides.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// Appends the upper-triangle part of a block of Gram rows: row `i` of the block
/// starts at its diagonal, column `i` of `block` (`rows x cols`).
fn pack_rows(block: &[f64], rows: usize, cols: usize, packed: &mut Vec<f64>) {
    for i in 0..rows {
        let row = &block[i * cols..(i + 1) * cols];
        packed.push(row[i]);
        packed.extend(row[i + 1..].iter().map(|v| v * std::f64::consts::SQRT_2));
    }
}

/// One model's packed Grams, one per analysed layer, contiguous so that all layer
/// pairs of two models are one matrix product.
#[derive(Debug, Clone)]
pub struct ModelGrams {
    name: String,
    len: usize,
    layers: Vec<u32>,
    data: Vec<f64>,
    norms: Vec<f64>,
}

impl ModelGrams {
    /// Takes the per-layer packed Grams one at a time, so that only one is ever held twice.
    pub fn new(name: String, layers: Vec<u32>, grams: Vec<Vec<f64>>) -> Self {
        let len = grams.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(len * grams.len());
        let mut norms = Vec::with_capacity(grams.len());
        for g in grams {
            norms.push(g.iter().map(|v| v * v).sum::<f64>().sqrt());
            data.extend_from_slice(&g);
        }
        ModelGrams {
            name,
            len,
            layers,
            data,
            norms,
        }
    }
}

/// CKA of every layer of `a` (rows) with every layer of `b` (columns). A layer whose
/// centred Gram is zero (all statements alike) has no CKA: NaN, null in JSON.
pub fn cka_matrix(a: &ModelGrams, b: &ModelGrams) -> Vec<Vec<f64>> {
    let (la, lb) = (a.layers.len(), b.layers.len());
    let dots = product(&a.data, la, &b.data, lb, a.len);
    dots.chunks_exact(lb.max(1))
        .zip(&a.norms)
        .map(|(row, na)| {
            row.iter()
                .zip(&b.norms)
                .map(|(d, nb)| d / (na * nb))
                .collect()
        })
        .collect()
}

/// The CKA matrix of one pair of models: rows are `model`'s layers, columns `other`'s;
/// the indices are the models' places in size order (names may repeat).
#[derive(Debug, Clone, Serialize)]
pub struct CkaPair {
    pub model: String,
    pub other: String,
    pub model_index: usize,
    pub other_index: usize,
    pub layers: Vec<u32>,
    pub other_layers: Vec<u32>,
    pub cka: Vec<Vec<f64>>,
}

/// CKA matrices of every pair of models (`models` in size order).
pub fn all_pairs(models: &[ModelGrams]) -> Vec<CkaPair> {
    let mut pairs = Vec::new();
    for (i, a) in models.iter().enumerate() {
        for (j, b) in models.iter().enumerate().skip(i + 1) {
            pairs.push(CkaPair {
                model: a.name.clone(),
                other: b.name.clone(),
                model_index: i,
                other_index: j,
                layers: a.layers.clone(),
                other_layers: b.layers.clone(),
                cka: cka_matrix(a, b),
            });
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const N: usize = 150;
    const D: usize = 12;

    fn random(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A shared offset so that centring matters.
        (0..n * d)
            .map(|k| rng.random_range(-1.0f32..1.0) + (k % d) as f32)
            .collect()
    }

    /// `x Q` for row-major `x` (`n x d`) and `Q` (`d x d`), in f32 as a cache holds it.
    fn times(x: &[f32], q: &[f64], d: usize) -> Vec<f32> {
        x.chunks_exact(d)
            .flat_map(|row| {
                (0..d).map(move |j| {
                    (0..d)
                        .map(|k| f64::from(row[k]) * q[k * d + j])
                        .sum::<f64>() as f32
                })
            })
            .collect()
    }

    /// An orthogonal `d x d` matrix: Gram–Schmidt on random columns.
    fn orthogonal(d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cols: Vec<Vec<f64>> = Vec::new();
        while cols.len() < d {
            let mut v: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            for c in &cols {
                let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            cols.push(v.into_iter().map(|a| a / norm).collect());
        }
        (0..d * d).map(|k| cols[k % d][k / d]).collect()
    }

    /// Linear CKA of two `n x d` row-major matrices (one layer of two models).
    fn linear_cka(x: &[f32], dx: usize, y: &[f32], dy: usize, n: usize) -> f64 {
        let gx = ModelGrams::new("x".into(), vec![0], vec![packed_gram(x, n, dx)]);
        let gy = ModelGrams::new("y".into(), vec![0], vec![packed_gram(y, n, dy)]);
        cka_matrix(&gx, &gy)[0][0]
    }

    fn cka(x: &[f32], y: &[f32]) -> f64 {
        linear_cka(x, D, y, D, N)
    }

    #[test]
    fn one_with_itself() {
        let x = random(N, D, 1);
        assert!((cka(&x, &x) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn invariant_to_orthogonal_transforms() {
        let x = random(N, D, 2);
        let q = orthogonal(D, 3);
        // f32 storage of XQ limits agreement to float32 roundoff.
        assert!((cka(&x, &times(&x, &q, D)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn invariant_to_isotropic_scaling() {
        let x = random(N, D, 4);
        let scaled: Vec<f32> = x.iter().map(|v| v * 7.5).collect();
        assert!((cka(&x, &scaled) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn not_invariant_to_non_isotropic_scaling() {
        let x = random(N, D, 5);
        let stretched: Vec<f32> = x
            .chunks_exact(D)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(j, v)| if j == 0 { v * 20.0 } else { *v })
            })
            .collect();
        assert!(cka(&x, &stretched) < 0.5);
    }

    #[test]
    fn symmetric_across_widths() {
        let x = random(N, D, 6);
        let y = random(N, 5, 7);
        let (xy, yx) = (linear_cka(&x, D, &y, 5, N), linear_cka(&y, 5, &x, D, N));
        assert!((xy - yx).abs() < 1e-14);
        assert!(xy > 0.0 && xy < 1.0);
    }

    #[test]
    fn packing_keeps_the_frobenius_product_across_blocks() {
        let n = BLOCK * 2 + 7;
        let x = random(n, 3, 8);
        let packed = packed_gram(&x, n, 3);
        let xc = centred(&x, n, 3);
        let full = product(&xc, n, &xc, n, 3);
        let frob: f64 = full.iter().map(|v| v * v).sum();
        let via_packed: f64 = packed.iter().map(|v| v * v).sum();
        assert_eq!(packed.len(), n * (n + 1) / 2);
        assert!((frob - via_packed).abs() <= 1e-12 * frob);
    }
}
