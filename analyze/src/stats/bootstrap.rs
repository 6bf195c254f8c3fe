//! Stratified pair bootstrap: resample pairs with replacement within each
//! category, the same resample for every model (they all saw the same dataset).
//!
//! With counts `w` of a resample, the sum over position pairs p < q of the
//! resampled set is `sum_{i<j} w_i w_j G_ij + sum_i (w_i^2 - w_i)/2 G_ii`, which is
//! `(w^T G w - sum_i w_i G_ii) / 2`: a quadratic form in the category's Gram block.
//! Each category's UA in every resample is computed from its blocks while they are
//! at hand (`resampled_ua`), so an analysis keeps per layer only `n` numbers per
//! category, never the blocks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::correlation::pearson_r;
use super::uniformity::{dot, CategoryBlocks, CategoryGram};

/// Pair counts of every resample, drawn once from the seed.
pub struct Resamples {
    pub n: usize,
    pub pairs_per_category: Vec<usize>,
    offsets: Vec<usize>,
    total: usize,
    counts: Vec<u16>,
}

impl Resamples {
    /// Resample `b` draws, for each category in order, `n_c` pair indices uniformly
    /// from `0..n_c` (ChaCha8 seeded with `seed`).
    pub fn draw(pairs_per_category: &[usize], n: usize, seed: u64) -> Self {
        let mut offsets = Vec::new();
        let mut total = 0;
        for &s in pairs_per_category {
            offsets.push(total);
            total += s;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u16; n * total];
        for b in 0..n {
            let row = &mut counts[b * total..(b + 1) * total];
            for (c, &s) in pairs_per_category.iter().enumerate() {
                for _ in 0..s {
                    row[offsets[c] + rng.random_range(0..s)] += 1;
                }
            }
        }
        Self {
            n,
            pairs_per_category: pairs_per_category.to_vec(),
            offsets,
            total,
            counts,
        }
    }

    pub fn counts(&self, b: usize, c: usize) -> &[u16] {
        let row = &self.counts[b * self.total..(b + 1) * self.total];
        &row[self.offsets[c]..self.offsets[c] + self.pairs_per_category[c]]
    }
}

/// Resamples per block of `resampled_ua`: the block's weights (`BLOCK x n`) and its
/// products stay in cache-sized pieces while the GEMM kernel still sees long rows.
const BLOCK: usize = 256;
/// Rows of `D` per product in `quadratic_forms`: only the upper triangle of the
/// symmetric `D` is multiplied, in strips this tall.
const STRIP: usize = 64;

/// The first `n` resamples in blocks of `BLOCK`, as `(start, end)`.
fn blocks_of(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(BLOCK)
        .map(|s| (s, (s + BLOCK).min(n)))
        .collect()
}

/// UA of one category in each of the first `n` resamples. From its Gram blocks, with
/// `D = G_A - G_B` and counts `w`, the resampled set's sum over position pairs is
/// `(w^T D w - sum_i w_i D_ii) / 2`; from its vectors, `(|sum_i w_i x_i|^2 -
/// sum_i w_i |x_i|^2) / 2` for each side. Memory is the blocks (or vectors) and one
/// block of weights; nothing grows with the number of columns or resamples kept.
pub fn resampled_ua(blocks: &CategoryBlocks, res: &Resamples, c: usize, n: usize) -> Vec<f64> {
    let n_pairs = blocks.n();
    let count = (n_pairs * (n_pairs - 1) / 2) as f64;
    let ranges = blocks_of(n);
    let weights = |(b0, b1): (usize, usize)| -> Vec<f64> {
        (b0..b1)
            .flat_map(|b| res.counts(b, c).iter().map(|&x| f64::from(x)))
            .collect()
    };
    let sums: Vec<f64> = match blocks {
        CategoryBlocks::Gram(g) => {
            let d: Vec<f64> = g.a.iter().zip(&g.b).map(|(a, b)| a - b).collect();
            let diag: Vec<f64> = (0..n_pairs).map(|i| d[i * n_pairs + i]).collect();
            ranges
                .par_iter()
                .flat_map_iter(|&range| {
                    let w = weights(range);
                    let forms = quadratic_forms(&w, range.1 - range.0, &d, n_pairs);
                    let w_diag: Vec<f64> = w.chunks_exact(n_pairs).map(|w| dot(w, &diag)).collect();
                    forms.into_iter().zip(w_diag).map(|(q, wd)| (q - wd) / 2.0)
                })
                .collect()
        }
        CategoryBlocks::Vectors(v) => {
            let squares =
                |x: &[f64]| -> Vec<f64> { x.chunks_exact(v.hidden).map(|r| dot(r, r)).collect() };
            let (sq_a, sq_b) = (squares(&v.a), squares(&v.b));
            ranges
                .par_iter()
                .flat_map_iter(|&range| {
                    let nb = range.1 - range.0;
                    let w = weights(range);
                    let side = |x: &[f64], sq: &[f64]| -> Vec<f64> {
                        let s = weighted_sums(&w, nb, x, n_pairs, v.hidden);
                        s.chunks_exact(v.hidden)
                            .zip(w.chunks_exact(n_pairs))
                            .map(|(s, w)| (dot(s, s) - dot(w, sq)) / 2.0)
                            .collect()
                    };
                    let (a, b) = (side(&v.a, &sq_a), side(&v.b, &sq_b));
                    a.into_iter()
                        .zip(b)
                        .map(|(a, b)| a - b)
                        .collect::<Vec<f64>>()
                })
                .collect()
        }
    };
    sums.into_iter().map(|s| s / count).collect()
}

/// Bytes the packed counts of one block of resamples may take in
/// `resampled_ua_columns`; past that (categories of more than about 180 pairs) each
/// column takes its own quadratic forms, whose memory is the column's blocks alone.
const PACKED_BYTES: usize = 32 << 20;

/// `resampled_ua` of several columns (layers, or caches) of category `c` at once.
/// Where every column holds Gram blocks and the category is small, one GEMM per block
/// of resamples serves them all: the packed counts `M` (`BLOCK x n(n+1)/2`: row `b`
/// holds `w_i w_j` for `i < j` and `(w_i^2 - w_i)/2` on the diagonal) times the
/// packed differences `G_A - G_B` of every column. Building `M` is then shared by
/// the columns, and the products are large enough for the GEMM kernel, which the
/// small per-column forms of a 460-statement dataset are not.
pub fn resampled_ua_columns(
    columns: &[&CategoryBlocks],
    res: &Resamples,
    c: usize,
    n: usize,
) -> Vec<Vec<f64>> {
    let n_pairs = res.pairs_per_category[c];
    let p = n_pairs * (n_pairs + 1) / 2;
    let grams: Option<Vec<&CategoryGram>> = columns
        .iter()
        .map(|b| match b {
            CategoryBlocks::Gram(g) => Some(g),
            CategoryBlocks::Vectors(_) => None,
        })
        .collect();
    match grams {
        Some(grams) if grams.len() > 1 && BLOCK * p * 8 <= PACKED_BYTES => {
            packed_columns(&grams, res, c, n)
        }
        _ => columns.iter().map(|b| resampled_ua(b, res, c, n)).collect(),
    }
}

fn packed_columns(grams: &[&CategoryGram], res: &Resamples, c: usize, n: usize) -> Vec<Vec<f64>> {
    let n_pairs = res.pairs_per_category[c];
    let p = n_pairs * (n_pairs + 1) / 2;
    let k = grams.len();
    // d[t * k + col]: the packed upper triangle of column col's G_A - G_B.
    let mut d = vec![0.0; p * k];
    for (col, g) in grams.iter().enumerate() {
        let mut t = 0;
        for i in 0..n_pairs {
            for j in i..n_pairs {
                d[t * k + col] = g.a[i * n_pairs + j] - g.b[i * n_pairs + j];
                t += 1;
            }
        }
    }
    let scale = 1.0 / (n_pairs * (n_pairs - 1) / 2) as f64;
    let ranges = blocks_of(n);
    let parts: Vec<Vec<f64>> = ranges
        .par_iter()
        .map(|&(b0, b1)| {
            let nb = b1 - b0;
            let mut m = vec![0.0; nb * p];
            let mut w = vec![0.0; n_pairs];
            for (b, row) in m.chunks_exact_mut(p).enumerate() {
                for (x, &count) in w.iter_mut().zip(res.counts(b0 + b, c)) {
                    *x = f64::from(count);
                }
                // Row i of the triangle: its diagonal term, then w_i times the rest.
                let mut t = 0;
                for (i, &wi) in w.iter().enumerate() {
                    row[t] = (wi * wi - wi) / 2.0;
                    let rest = &w[i + 1..];
                    for (r, wj) in row[t + 1..t + 1 + rest.len()].iter_mut().zip(rest) {
                        *r = wi * wj;
                    }
                    t += 1 + rest.len();
                }
            }
            let mut out = vec![0.0; nb * k];
            // SAFETY: m is nb x p, d is p x k, out is nb x k, all row-major.
            unsafe {
                matrixmultiply::dgemm(
                    nb,
                    p,
                    k,
                    scale,
                    m.as_ptr(),
                    p as isize,
                    1,
                    d.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    k as isize,
                    1,
                );
            }
            out
        })
        .collect();
    (0..k)
        .map(|col| {
            parts
                .iter()
                .flat_map(|out| out.chunks_exact(k).map(move |row| row[col]))
                .collect()
        })
        .collect()
}

/// `W X` for weights `w` (`nb x n`) and vectors `x` (`n x hidden`), both row-major.
fn weighted_sums(w: &[f64], nb: usize, x: &[f64], n: usize, hidden: usize) -> Vec<f64> {
    let mut out = vec![0.0; nb * hidden];
    // SAFETY: w is nb x n, x is n x hidden and out nb x hidden, all row-major.
    unsafe {
        matrixmultiply::dgemm(
            nb,
            n,
            hidden,
            1.0,
            w.as_ptr(),
            n as isize,
            1,
            x.as_ptr(),
            hidden as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            hidden as isize,
            1,
        );
    }
    out
}

/// `w_b^T D w_b` for each of the `nb` rows of `w` (`nb x n`), `D` symmetric `n x n`:
/// strip `I` of rows contributes `w_I^T D_(I, I..) w_(I..)`, the part right of its
/// diagonal block twice, so only the upper triangle is multiplied.
fn quadratic_forms(w: &[f64], nb: usize, d: &[f64], n: usize) -> Vec<f64> {
    let mut forms = vec![0.0; nb];
    let mut q = vec![0.0; nb * n];
    for i0 in (0..n).step_by(STRIP) {
        let rows = STRIP.min(n - i0);
        let cols = n - i0;
        // SAFETY: w is nb x n (row stride n), D's strip is rows x cols from
        // (i0, i0) with row stride n, q holds nb x cols with row stride cols.
        unsafe {
            matrixmultiply::dgemm(
                nb,
                rows,
                cols,
                1.0,
                w.as_ptr().add(i0),
                n as isize,
                1,
                d.as_ptr().add(i0 * n + i0),
                n as isize,
                1,
                0.0,
                q.as_mut_ptr(),
                cols as isize,
                1,
            );
        }
        for (b, f) in forms.iter_mut().enumerate() {
            let wb = &w[b * n + i0..(b + 1) * n];
            let qb = &q[b * cols..(b + 1) * cols];
            let inside: f64 = wb[..rows].iter().zip(&qb[..rows]).map(|(x, y)| x * y).sum();
            let right: f64 = wb[rows..].iter().zip(&qb[rows..]).map(|(x, y)| x * y).sum();
            *f += inside + 2.0 * right;
        }
    }
    forms
}

/// Mean preference of one category in each of the first `n` resamples.
pub fn resampled_prefs(res: &Resamples, c: usize, prefs: &[f64], n: usize) -> Vec<f64> {
    (0..n)
        .map(|b| {
            let w = res.counts(b, c);
            let s: f64 = w.iter().zip(prefs).map(|(&wi, p)| f64::from(wi) * p).sum();
            s / prefs.len() as f64
        })
        .collect()
}

/// r across categories in each resample, from `ua[c][b]` and `prefs[c][b]`.
pub fn resampled_r(ua: &[&[f64]], prefs: &[Vec<f64>], n: usize) -> Vec<f64> {
    let mut x = vec![0.0; ua.len()];
    let mut y = vec![0.0; ua.len()];
    (0..n)
        .map(|b| {
            for (c, (xc, yc)) in x.iter_mut().zip(y.iter_mut()).enumerate() {
                *xc = ua[c][b];
                *yc = prefs[c][b];
            }
            pearson_r(&x, &y)
        })
        .collect()
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
    use crate::stats::uniformity::{uniformity, Arithmetic, CategoryGram, CategoryVectors};
    use schemas::gram::gram_f64 as gram;

    /// n spans several strips and the resamples several blocks, so the strip and
    /// block edges are crossed.
    #[test]
    fn resampled_ua_equals_uniformity_of_the_resampled_set() {
        let (n, hidden, draws) = (150, 4, 300);
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
        let res = Resamples::draw(&[3, n], draws, 7);
        let got = resampled_ua(&CategoryBlocks::Gram(g), &res, 1, draws);
        assert_eq!(got.len(), draws);
        for b in [0, 1, 255, 256, 299] {
            let w = res.counts(b, 1);
            let idx: Vec<usize> = (0..n)
                .flat_map(|i| std::iter::repeat_n(i, w[i] as usize))
                .collect();
            let sub = |x: &[f64]| {
                idx.iter()
                    .flat_map(|&i| x[i * hidden..(i + 1) * hidden].to_vec())
                    .collect::<Vec<f64>>()
            };
            let u = |x: &[f64]| uniformity(&gram(&sub(x), n, hidden), n, Arithmetic::Exact);
            let want = u(&xa) - u(&xb);
            assert!(
                (got[b] - want).abs() < 1e-12,
                "resample {b}: {} vs {want}",
                got[b]
            );
        }
        let prefs: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mean = resampled_prefs(&res, 1, &prefs, 2);
        let w = res.counts(0, 1);
        let want: f64 = w
            .iter()
            .zip(&prefs)
            .map(|(&c, p)| f64::from(c) * p)
            .sum::<f64>()
            / n as f64;
        assert_eq!(mean[0], want);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
    }

    /// The vector form, kept for categories of more pairs than dimensions, gives the
    /// Gram form's numbers (and the same UA).
    #[test]
    fn the_vector_form_resamples_as_the_gram_form() {
        use crate::stats::uniformity::ua_of;
        use schemas::gram::category_gram;
        let (n, hidden, draws) = (40, 3, 300);
        // A shared offset makes the vectors anisotropic, as trained models' are.
        let matrix: Vec<f32> = (0..2 * n * hidden)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) / 7.0 + if k % hidden == 1 { 3.0 } else { 0.0 })
            .collect();
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (n..2 * n).collect());
        let gram = CategoryBlocks::Gram(category_gram(&matrix, hidden, &a, &b, Arithmetic::Exact));
        let (ma, mb) = matrix.split_at(n * hidden);
        let vectors = CategoryBlocks::Vectors(CategoryVectors::normalise(ma, mb, n, hidden));
        let res = Resamples::draw(&[n], draws, 3);
        let (x, y) = (
            resampled_ua(&gram, &res, 0, draws),
            resampled_ua(&vectors, &res, 0, draws),
        );
        assert!(x.iter().zip(&y).all(|(x, y)| (x - y).abs() < 1e-12));
        assert!(
            (ua_of(&gram, Arithmetic::Exact) - ua_of(&vectors, Arithmetic::Exact)).abs() < 1e-12
        );
        assert!(
            x.iter().any(|v| (v - x[0]).abs() > 1e-6),
            "resamples differ"
        );
    }

    /// The shared GEMM of several Gram columns gives each column's own forms.
    #[test]
    fn columns_at_once_equal_each_column_alone() {
        use schemas::gram::category_gram;
        let (n, hidden, draws) = (30, 8, 600);
        let columns: Vec<CategoryBlocks> = (0..3)
            .map(|l| {
                let matrix: Vec<f32> = (0..2 * n * hidden)
                    .map(|k| ((k * (7 + l) % 19) as f32 - 9.0) / 5.0)
                    .collect();
                let (a, b): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (n..2 * n).collect());
                CategoryBlocks::Gram(category_gram(&matrix, hidden, &a, &b, Arithmetic::Exact))
            })
            .collect();
        let res = Resamples::draw(&[5, n], draws, 9);
        let refs: Vec<&CategoryBlocks> = columns.iter().collect();
        let together = resampled_ua_columns(&refs, &res, 1, draws);
        for (col, alone) in columns.iter().enumerate() {
            let alone = resampled_ua(alone, &res, 1, draws);
            assert_eq!(together[col].len(), draws);
            for (x, y) in together[col].iter().zip(&alone) {
                assert!((x - y).abs() < 1e-12, "column {col}: {x} vs {y}");
            }
        }
    }
}
