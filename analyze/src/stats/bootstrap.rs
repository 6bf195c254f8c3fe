//! Stratified pair bootstrap: resample pairs with replacement within each
//! category, the same resample for every model (they all saw the same dataset).
//!
//! With counts `w` of a resample, the sum over position pairs p < q of the
//! resampled set is `sum_{i<j} w_i w_j G_ij + sum_i (w_i^2 - w_i)/2 G_ii`, a dot
//! product of a packed "counts" row with the packed upper triangle of `G`. Packing
//! `G_A - G_B` of every (model, layer) as columns turns a block of resamples into one
//! GEMM per category: `UA = M D / (n(n-1)/2)`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::correlation::pearson_r;
use super::uniformity::CategoryGram;

/// Pair counts of every resample, drawn once from the seed.
pub struct Resamples {
    pub n: usize,
    pub sizes: Vec<usize>,
    offsets: Vec<usize>,
    total: usize,
    counts: Vec<u16>,
}

impl Resamples {
    /// Resample `b` draws, for each category in order, `n_c` pair indices uniformly
    /// from `0..n_c` (ChaCha8 seeded with `seed`).
    pub fn draw(sizes: &[usize], n: usize, seed: u64) -> Self {
        let mut offsets = Vec::new();
        let mut total = 0;
        for &s in sizes {
            offsets.push(total);
            total += s;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u16; n * total];
        for b in 0..n {
            let row = &mut counts[b * total..(b + 1) * total];
            for (c, &s) in sizes.iter().enumerate() {
                for _ in 0..s {
                    row[offsets[c] + rng.random_range(0..s)] += 1;
                }
            }
        }
        Self {
            n,
            sizes: sizes.to_vec(),
            offsets,
            total,
            counts,
        }
    }

    pub fn counts(&self, b: usize, c: usize) -> &[u16] {
        let row = &self.counts[b * self.total..(b + 1) * self.total];
        &row[self.offsets[c]..self.offsets[c] + self.sizes[c]]
    }
}

fn packed_len(n: usize) -> usize {
    n * (n + 1) / 2
}

/// Packed upper triangle (diagonal included) of `G_A - G_B`.
pub fn packed_difference(g: &CategoryGram) -> Vec<f64> {
    let n = g.n;
    let mut out = Vec::with_capacity(packed_len(n));
    for i in 0..n {
        for j in i..n {
            out.push(g.a[i * n + j] - g.b[i * n + j]);
        }
    }
    out
}

/// Everything the bootstrap needs for one pooling: per category, the packed
/// differences of every column k = (model, layer) as a `P_c x K` row-major
/// matrix; per model and category, the pair preferences.
pub struct BootInput {
    pub k: usize,
    pub d: Vec<Vec<f64>>,
    pub model_of_k: Vec<usize>,
    pub prefs: Vec<Vec<Vec<f64>>>,
}

impl BootInput {
    /// `columns[k][c]` is the Gram pair of column k and category c.
    pub fn new(
        columns: &[&[CategoryGram]],
        model_of_k: Vec<usize>,
        prefs: Vec<Vec<Vec<f64>>>,
    ) -> Self {
        let k = columns.len();
        let n_cat = columns[0].len();
        let mut d = Vec::with_capacity(n_cat);
        for c in 0..n_cat {
            let p = packed_len(columns[0][c].n);
            let mut m = vec![0.0; p * k];
            for (col, grams) in columns.iter().enumerate() {
                for (row, v) in packed_difference(&grams[c]).into_iter().enumerate() {
                    m[row * k + col] = v;
                }
            }
            d.push(m);
        }
        Self {
            k,
            d,
            model_of_k,
            prefs,
        }
    }
}

const BLOCK: usize = 250;

/// Bootstrap r of every column for every resample: returns `K x B`, row k contiguous.
pub fn bootstrap_r(res: &Resamples, input: &BootInput) -> Vec<f64> {
    let k = input.k;
    let blocks: Vec<(usize, usize)> = (0..res.n)
        .step_by(BLOCK)
        .map(|s| (s, (s + BLOCK).min(res.n)))
        .collect();
    let parts: Vec<Vec<f64>> = blocks
        .par_iter()
        .map(|&(b0, b1)| block_r(res, input, b0, b1))
        .collect();
    let mut all = vec![0.0; k * res.n];
    for (&(b0, b1), part) in blocks.iter().zip(&parts) {
        let nb = b1 - b0;
        for col in 0..k {
            all[col * res.n + b0..col * res.n + b1]
                .copy_from_slice(&part[col * nb..(col + 1) * nb]);
        }
    }
    all
}

/// r of every column for the resamples `b0..b1`: `K x (b1 - b0)`, row k contiguous.
fn block_r(res: &Resamples, input: &BootInput, b0: usize, b1: usize) -> Vec<f64> {
    let k = input.k;
    let n_cat = res.sizes.len();
    let n_models = input.prefs.len();
    let nb = b1 - b0;
    // ua[c][b * k + col]
    let mut ua = Vec::with_capacity(n_cat);
    // pref[m][b * n_cat + c]
    let mut pref = vec![vec![0.0; nb * n_cat]; n_models];
    for c in 0..n_cat {
        let n = res.sizes[c];
        let p = packed_len(n);
        let mut m = vec![0.0; nb * p];
        for b in 0..nb {
            let w = res.counts(b0 + b, c);
            let row = &mut m[b * p..(b + 1) * p];
            let mut t = 0;
            for (i, &wi) in w.iter().enumerate() {
                let wi = f64::from(wi);
                row[t] = (wi * wi - wi) / 2.0;
                t += 1;
                for &wj in &w[i + 1..] {
                    row[t] = wi * f64::from(wj);
                    t += 1;
                }
            }
            for (mi, prefs) in input.prefs.iter().enumerate() {
                let s: f64 = w
                    .iter()
                    .zip(&prefs[c])
                    .map(|(&wi, &pi)| f64::from(wi) * pi)
                    .sum();
                pref[mi][b * n_cat + c] = s / n as f64;
            }
        }
        let mut out = vec![0.0; nb * k];
        // SAFETY: m is nb x p, d is p x k, out is nb x k, all row-major.
        unsafe {
            matrixmultiply::dgemm(
                nb,
                p,
                k,
                1.0 / (n * (n - 1) / 2) as f64,
                m.as_ptr(),
                p as isize,
                1,
                input.d[c].as_ptr(),
                k as isize,
                1,
                0.0,
                out.as_mut_ptr(),
                k as isize,
                1,
            );
        }
        ua.push(out);
    }
    let mut r = vec![0.0; k * nb];
    let mut x = vec![0.0; n_cat];
    for b in 0..nb {
        for col in 0..k {
            for c in 0..n_cat {
                x[c] = ua[c][b * k + col];
            }
            let m = input.model_of_k[col];
            r[col * nb + b] = pearson_r(&x, &pref[m][b * n_cat..(b + 1) * n_cat]);
        }
    }
    r
}

/// numpy's default (linear) percentile of the finite values; NaN if none.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::uniformity::{uniformity, Arithmetic};
    use schemas::gram::gram_f64 as gram;

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn quadratic_form_equals_uniformity_of_the_resampled_set() {
        let n = 5;
        let hidden = 3;
        let xa: Vec<f64> = (0..n * hidden)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let xb: Vec<f64> = (0..n * hidden)
            .map(|i| ((i * 5 % 13) as f64 - 6.0) / 4.0)
            .collect();
        let g = CategoryGram {
            n,
            a: gram(&xa, n, hidden),
            b: gram(&xb, n, hidden),
            ab: vec![0.0; n * n],
        };
        let res = Resamples::draw(&[n], 3, 7);
        let input = BootInput::new(
            &[std::slice::from_ref(&g)],
            vec![0],
            vec![vec![vec![0.0; n]]],
        );
        for b in 0..3 {
            let w = res.counts(b, 0);
            let idx: Vec<usize> = (0..n)
                .flat_map(|i| std::iter::repeat_n(i, w[i] as usize))
                .collect();
            let sub = |x: &[f64]| {
                idx.iter()
                    .flat_map(|&i| x[i * hidden..(i + 1) * hidden].to_vec())
                    .collect::<Vec<f64>>()
            };
            let u = |x: &[f64]| uniformity(&gram(&sub(x), n, hidden), n, Arithmetic::Exact);
            let ua = u(&xa) - u(&xb);
            let p = packed_len(n);
            let mut m = vec![0.0; p];
            let mut t = 0;
            for i in 0..n {
                let wi = f64::from(w[i]);
                m[t] = (wi * wi - wi) / 2.0;
                t += 1;
                for j in i + 1..n {
                    m[t] = wi * f64::from(w[j]);
                    t += 1;
                }
            }
            let q: f64 = m.iter().zip(&input.d[0]).map(|(a, b)| a * b).sum::<f64>()
                / (n * (n - 1) / 2) as f64;
            assert!((q - ua).abs() < 1e-12, "{q} vs {ua}");
        }
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
    }
}
