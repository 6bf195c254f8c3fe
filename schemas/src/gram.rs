//! Cosine Gram matrices of one category: the only thing every statistic of
//! `analyze` needs from the pooled embeddings.
//!
//! Each vector is normalised the seed's way, `x / (|x| + 1e-10)`, and the Gram
//! matrix of the `2n` vectors `A_1..A_n, B_1..B_n` of a category is kept as its
//! three blocks: `A A^T`, `B B^T` and `A B^T`. The cross block lets the pair-level
//! view centre vectors within the category; the two side blocks give uniformity.
//!
//! Two arithmetics. `Exact` works in float64 throughout. `Seed` reproduces the
//! notebook's `uniformity_score` on float32 embeddings: norms, division and the
//! `normalized @ normalized.T` kernel in float32, sums in numpy's pairwise order.
//! On anisotropic (trained) embeddings cosines sit near 1 and the two differ in
//! the sixth digit of r, so parity with the notebook needs its arithmetic.

use std::fmt;
use std::str::FromStr;

/// How cosines are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// The notebook's float32 normalisation and kernel.
    Seed,
    /// float64 throughout.
    Exact,
}

impl Arithmetic {
    pub const ALL: [Arithmetic; 2] = [Arithmetic::Seed, Arithmetic::Exact];

    pub fn as_str(self) -> &'static str {
        match self {
            Arithmetic::Seed => "seed",
            Arithmetic::Exact => "exact",
        }
    }

    /// The other one (the report states how far the two are apart).
    pub fn other(self) -> Arithmetic {
        match self {
            Arithmetic::Seed => Arithmetic::Exact,
            Arithmetic::Exact => Arithmetic::Seed,
        }
    }
}

impl fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arithmetic {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arithmetic::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown arithmetic '{s}' (expected seed or exact)"))
    }
}

/// The Gram blocks of one category (each `n x n`, row-major, pair order).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryGram {
    pub n: usize,
    /// `a[i*n+j] = <â_i, â_j>`
    pub a: Vec<f64>,
    /// `b[i*n+j] = <b̂_i, b̂_j>`
    pub b: Vec<f64>,
    /// `ab[i*n+j] = <â_i, b̂_j>`
    pub ab: Vec<f64>,
}

/// A category's pooled vectors, each normalised the seed's way `x / (|x| + 1e-10)` in
/// float64 (row-major `n x hidden`, pair order): the exact form kept instead of the
/// Gram blocks where a category has more pairs than the vectors have dimensions, so
/// that neither the sidecar nor an analysis grows with the square of the pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryVectors {
    pub n: usize,
    pub hidden: usize,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

impl CategoryVectors {
    /// From the raw float32 vectors of the A and B sides (`n x hidden` each).
    pub fn normalise(a: &[f32], b: &[f32], n: usize, hidden: usize) -> Self {
        assert_eq!(a.len(), n * hidden, "an n x hidden matrix");
        assert_eq!(b.len(), n * hidden, "an n x hidden matrix");
        let unit = |m: &[f32]| -> Vec<f64> {
            m.chunks_exact(hidden.max(1))
                .flat_map(|x| {
                    let d = x
                        .iter()
                        .map(|&v| f64::from(v) * f64::from(v))
                        .sum::<f64>()
                        .sqrt()
                        + 1e-10;
                    x.iter().map(move |&v| f64::from(v) / d)
                })
                .collect()
        };
        CategoryVectors {
            n,
            hidden,
            a: unit(a),
            b: unit(b),
        }
    }
}

/// What every exact statistic needs from one category: its Gram blocks (`2n^2`
/// values) or, when that is more than its vectors (`2 n hidden`), the vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoryBlocks {
    Gram(CategoryGram),
    Vectors(CategoryVectors),
}

impl CategoryBlocks {
    pub fn n(&self) -> usize {
        match self {
            CategoryBlocks::Gram(g) => g.n,
            CategoryBlocks::Vectors(v) => v.n,
        }
    }
}

/// The rule both the sidecar and an analysis from embeddings follow, so the two
/// compute every statistic from the same numbers: vectors for a category of more
/// pairs than dimensions, Gram blocks otherwise. It bounds the sidecar by twice the
/// embeddings (Gram blocks in float64 at `n <= hidden`) and keeps it at their size
/// beyond (the float32 vectors themselves).
pub fn keeps_vectors(n_pairs: usize, hidden: usize) -> bool {
    n_pairs > hidden
}

/// The exact form of one category (`keeps_vectors` decides which): `a_rows[i]` and
/// `b_rows[i]` are pair `i`'s statement rows in `matrix` (`rows x hidden`).
pub fn category_blocks(
    matrix: &[f32],
    hidden: usize,
    a_rows: &[usize],
    b_rows: &[usize],
) -> CategoryBlocks {
    let n = a_rows.len();
    if keeps_vectors(n, hidden) {
        let (a, b) = (
            gather(matrix, hidden, a_rows),
            gather(matrix, hidden, b_rows),
        );
        CategoryBlocks::Vectors(CategoryVectors::normalise(&a, &b, n, hidden))
    } else {
        CategoryBlocks::Gram(category_gram(
            matrix,
            hidden,
            a_rows,
            b_rows,
            Arithmetic::Exact,
        ))
    }
}

/// The rows `rows` of a row-major `hidden`-wide matrix, in that order.
pub fn gather(matrix: &[f32], hidden: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| matrix[r * hidden..(r + 1) * hidden].iter().copied())
        .collect()
}

/// numpy's `pairwise_sum` for float32 (`numpy/_core/src/umath/loops_utils.h.src`),
/// started from the additive identity as `np.add.reduce` does: the order of the
/// float32 additions decides the last bits the seed's numbers carry.
pub fn numpy_pairwise_sum_f32(a: &[f32]) -> f32 {
    0.0f32 + pairwise(a)
}

fn pairwise(a: &[f32]) -> f32 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0f32;
        for &v in a {
            res += v;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// The notebook's `embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-10)`
/// on float32 rows: squares, their pairwise sum, sqrt, epsilon and division all in float32.
fn normalised_f32(matrix: &[f32], hidden: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * hidden);
    let mut squares = vec![0.0f32; hidden];
    for &r in rows {
        let x = &matrix[r * hidden..(r + 1) * hidden];
        for (s, &v) in squares.iter_mut().zip(x) {
            *s = v * v;
        }
        let d = numpy_pairwise_sum_f32(&squares).sqrt() + 1e-10f32;
        out.extend(x.iter().map(|&v| v / d));
    }
    out
}

/// `X X^T` (float64) of a row-major `m x hidden` matrix, exactly symmetric so that
/// sums over `i<j` and `j<i` agree bit for bit.
pub fn gram_f64(x: &[f64], m: usize, hidden: usize) -> Vec<f64> {
    assert_eq!(x.len(), m * hidden, "an m x hidden matrix");
    let mut g = vec![0.0; m * m];
    upper_gram(x, hidden, 0..m, &mut g, m);
    symmetrise(&mut g, m);
    g
}

/// matrixmultiply's float64 kernels compute tiles of 8 rows (8 x 8 with AVX-512, 8 x 4
/// with AVX2): a split at a multiple of 8 leaves no half-empty tile above it.
const TILE: usize = 8;

/// Diagonal blocks up to this size are computed whole, their lower half wasted:
/// smaller calls spend more on packing than the products they save. At hidden 5120 and
/// the seed's categories (40 to 100 vectors) 32 was fastest with matrixmultiply's
/// AVX2/FMA kernel (20% faster than whole products; what toolchains before 1.89 get)
/// and within 3% of the best with its AVX-512 one, where packing, not arithmetic,
/// bounds the time and the halving gains 5%.
const LEAF: usize = 32;

/// The upper triangle, diagonal included, of the Gram matrix of `x`'s rows in `rows`
/// (row-major, `hidden` wide), written into `g` (`ld` wide) at the same indices; the
/// lower triangle is left unspecified. The triangle is all a symmetric matrix needs,
/// so only the off-diagonal rectangle of each halving is multiplied, with the two
/// diagonal halves in turn: about half the products of `X X^T`. matrixmultiply,
/// already a dependency for the bootstrap, picks its AVX-512, AVX2/FMA or portable
/// kernel at run time; faer or a BLAS would add minutes to a clean build on two
/// cores for no faster kernel on these shapes (tens to hundreds of rows, thousands
/// of columns), and a kernel of our own could not use AVX-512 on the workspace's
/// Rust 1.85. Each entry is summed in an order fixed by the shape alone, so the bits
/// do not depend on how callers spread work over threads.
fn upper_gram(x: &[f64], hidden: usize, rows: std::ops::Range<usize>, g: &mut [f64], ld: usize) {
    let n = rows.len();
    if n <= LEAF {
        product(x, hidden, rows.clone(), rows, g, ld);
        return;
    }
    // Past LEAF, half of n rounded up to a tile still leaves rows below it.
    let mid = rows.start + (n / 2).next_multiple_of(TILE);
    product(x, hidden, rows.start..mid, mid..rows.end, g, ld);
    upper_gram(x, hidden, rows.start..mid, g, ld);
    upper_gram(x, hidden, mid..rows.end, g, ld);
}

/// `g[i][j] = <x_i, x_j>` for `i` in `rows`, `j` in `cols`.
fn product(
    x: &[f64],
    hidden: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    g: &mut [f64],
    ld: usize,
) {
    if rows.is_empty() || cols.is_empty() {
        return;
    }
    assert!(rows.end * hidden <= x.len() && cols.end * hidden <= x.len());
    assert!(cols.end <= ld && (rows.end - 1) * ld + cols.end <= g.len());
    // SAFETY: checked above: the rows of `x` named lie in `x`, and the `rows x cols`
    // block of `g` at stride `ld` lies in `g`. B is `x`'s rows in `cols` read
    // transposed (row stride 1, column stride `hidden`).
    unsafe {
        matrixmultiply::dgemm(
            rows.len(),
            hidden,
            cols.len(),
            1.0,
            x[rows.start * hidden..].as_ptr(),
            hidden as isize,
            1,
            x[cols.start * hidden..].as_ptr(),
            1,
            hidden as isize,
            0.0,
            g[rows.start * ld + cols.start..].as_mut_ptr(),
            ld as isize,
            1,
        );
    }
}

/// numpy's `normalized @ normalized.T` on float32 goes to OpenBLAS (`ssyrk`), whose
/// Haswell-family kernels (AVX2 x86-64, numpy's wheels) sum each entry as one float32
/// fused multiply-add chain per block of 320 along `hidden`, the blocks then added in
/// float32. Matched entry for entry on real Gemma-3-270M vectors (hidden 640); a plain
/// sgemm differs in the last bit of most entries, and with cosines near 1 that moved r
/// by 5e-5. Other BLAS builds (MKL, Accelerate, other OpenBLAS kernels) block
/// differently: the notebook's own last digits depend on the machine it ran on.
const OPENBLAS_SGEMM_Q: usize = 320;

/// `X X^T` in float32 as OpenBLAS computes it (see `OPENBLAS_SGEMM_Q`), widened to f64.
fn gram_f32(x: &[f32], m: usize, hidden: usize) -> Vec<f64> {
    // Column-major copy, so that the chains of one row against many run over
    // contiguous memory and vectorise across output entries, not along the chain.
    let mut xt = vec![0.0f32; hidden * m];
    for (r, row) in x.chunks_exact(hidden).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            xt[k * m + r] = v;
        }
    }
    let mut g = vec![0.0f64; m * m];
    let mut acc = vec![0.0f32; m];
    let mut sum = vec![0.0f32; m];
    for i in 0..m {
        for (b, k0) in (0..hidden).step_by(OPENBLAS_SGEMM_Q).enumerate() {
            let k1 = (k0 + OPENBLAS_SGEMM_Q).min(hidden);
            acc[i..].fill(0.0);
            fma_chains(
                &mut acc[i..],
                &xt,
                m,
                i,
                x[i * hidden..][..hidden].as_ref(),
                k0..k1,
            );
            if b == 0 {
                sum[i..].copy_from_slice(&acc[i..]);
            } else {
                for (s, a) in sum[i..].iter_mut().zip(&acc[i..]) {
                    *s += *a;
                }
            }
        }
        for j in i..m {
            g[i * m + j] = f64::from(sum[j]);
        }
    }
    symmetrise(&mut g, m);
    g
}

/// `acc[j - i] = fma(row[k], X[j][k], acc[j - i])` for k in `ks`, j from `i`: one
/// float32 chain per entry. `mul_add` rounds once, as the FMA instruction does; where
/// the CPU has FMA the compiled loop uses it (fast), elsewhere libm's `fmaf` (same bits).
fn fma_chains(
    acc: &mut [f32],
    xt: &[f32],
    m: usize,
    i: usize,
    row: &[f32],
    ks: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA, checked just above.
        return unsafe { fma_chains_fma(acc, xt, m, i, row, ks) };
    }
    fma_chains_portable(acc, xt, m, i, row, ks);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma_chains_fma(
    acc: &mut [f32],
    xt: &[f32],
    m: usize,
    i: usize,
    row: &[f32],
    ks: std::ops::Range<usize>,
) {
    fma_chains_portable(acc, xt, m, i, row, ks);
}

#[inline(always)]
fn fma_chains_portable(
    acc: &mut [f32],
    xt: &[f32],
    m: usize,
    i: usize,
    row: &[f32],
    ks: std::ops::Range<usize>,
) {
    for k in ks {
        let a = row[k];
        let col = &xt[k * m + i..(k + 1) * m];
        for (c, &v) in acc.iter_mut().zip(col) {
            *c = a.mul_add(v, *c);
        }
    }
}

/// The cosine Gram matrix in float64 of `matrix`'s rows `rows`, each vector
/// normalised the seed's way, `x / (|x| + 1e-10)`. The normalisation is applied to
/// the products, `<x, y> / ((|x| + 1e-10)(|y| + 1e-10))`, the same numbers up to the
/// last bits, without a pass that divides every element; `|x|^2` is the product's own
/// diagonal.
fn cosines_f64(matrix: &[f32], hidden: usize, rows: &[usize]) -> Vec<f64> {
    let m = rows.len();
    let mut x = Vec::with_capacity(m * hidden);
    for &r in rows {
        x.extend(
            matrix[r * hidden..(r + 1) * hidden]
                .iter()
                .map(|&v| f64::from(v)),
        );
    }
    let mut g = vec![0.0; m * m];
    upper_gram(&x, hidden, 0..m, &mut g, m);
    let d: Vec<f64> = (0..m).map(|i| g[i * m + i].sqrt() + 1e-10).collect();
    for i in 0..m {
        for j in i..m {
            g[i * m + j] /= d[i] * d[j];
        }
    }
    symmetrise(&mut g, m);
    g
}

fn symmetrise(g: &mut [f64], m: usize) {
    for i in 0..m {
        for j in 0..i {
            g[i * m + j] = g[j * m + i];
        }
    }
}

/// The Gram blocks of one category: `a_rows[i]` and `b_rows[i]` are pair `i`'s
/// statement rows in `matrix` (`rows x hidden`, row-major).
pub fn category_gram(
    matrix: &[f32],
    hidden: usize,
    a_rows: &[usize],
    b_rows: &[usize],
    arithmetic: Arithmetic,
) -> CategoryGram {
    let n = a_rows.len();
    assert_eq!(n, b_rows.len(), "a category has as many A as B statements");
    let rows: Vec<usize> = a_rows.iter().chain(b_rows).copied().collect();
    let m = 2 * n;
    let joint = match arithmetic {
        Arithmetic::Exact => cosines_f64(matrix, hidden, &rows),
        Arithmetic::Seed => gram_f32(&normalised_f32(matrix, hidden, &rows), m, hidden),
    };
    CategoryGram::from_joint(&joint, n)
}

impl CategoryGram {
    /// The three blocks of the `2n x 2n` Gram matrix of `A_1..A_n, B_1..B_n`.
    pub fn from_joint(joint: &[f64], n: usize) -> Self {
        let m = 2 * n;
        let block = |r0: usize, c0: usize| -> Vec<f64> {
            (0..n)
                .flat_map(|i| joint[(r0 + i) * m + c0..(r0 + i) * m + c0 + n].to_vec())
                .collect()
        };
        CategoryGram {
            n,
            a: block(0, 0),
            b: block(n, n),
            ab: block(0, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_follows_numpy_blocking() {
        // Below 8 elements: a plain loop.
        assert_eq!(numpy_pairwise_sum_f32(&[1.0, 2.0, 3.0]), 6.0);
        // 1e8 + 1 + ... : the eight-way unrolled block keeps the ones in a separate
        // accumulator, so they survive where a plain float32 loop loses them.
        let mut v = vec![1.0f32; 16];
        v[0] = 1e8;
        let plain = v.iter().fold(0.0f32, |s, &x| s + x);
        assert_eq!(plain, 1e8);
        assert_eq!(numpy_pairwise_sum_f32(&v), 1e8 + 8.0);
        // Above 128: split at a multiple of 8.
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.1).collect();
        let exact: f64 = v.iter().map(|&x| f64::from(x)).sum();
        assert!((f64::from(numpy_pairwise_sum_f32(&v)) - exact).abs() / exact < 1e-6);
    }

    #[test]
    fn blocks_match_direct_dot_products_in_both_arithmetics() {
        let hidden = 3;
        let m = [
            1.0f32, 2.0, 3.0, 2.0, 4.0, 6.5, -1.0, 0.5, 0.0, 0.3, -2.0, 1.0,
        ];
        for arithmetic in Arithmetic::ALL {
            let g = category_gram(&m, hidden, &[0, 2], &[1, 3], arithmetic);
            let unit = |r: usize| -> Vec<f64> {
                let x: Vec<f64> = m[r * 3..r * 3 + 3].iter().map(|&v| v.into()).collect();
                let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                x.iter().map(|v| v / (n + 1e-10)).collect()
            };
            let dot = |p: usize, q: usize| -> f64 {
                unit(p).iter().zip(unit(q)).map(|(x, y)| x * y).sum()
            };
            let tol = if arithmetic == Arithmetic::Exact {
                1e-12
            } else {
                1e-6
            };
            assert!((g.a[1] - dot(0, 2)).abs() < tol);
            assert!((g.b[1] - dot(1, 3)).abs() < tol);
            assert!((g.ab[1] - dot(0, 3)).abs() < tol);
            assert!((g.ab[2] - dot(2, 1)).abs() < tol);
            assert!((g.a[0] - dot(0, 0)).abs() < tol);
        }
    }

    #[test]
    fn seed_kernel_chains_fused_multiply_adds_in_blocks_of_320() {
        let (m, hidden) = (3, 700);
        let x: Vec<f32> = (0..m * hidden)
            .map(|k| 1.0 + ((k * 7919 % 1009) as f32) * 1e-4)
            .collect();
        let g = gram_f32(&x, m, hidden);
        let chain = |i: usize, j: usize, ks: std::ops::Range<usize>| {
            ks.fold(0.0f32, |acc, k| {
                x[i * hidden + k].mul_add(x[j * hidden + k], acc)
            })
        };
        let blocked = |i, j| chain(i, j, 0..320) + chain(i, j, 320..640) + chain(i, j, 640..700);
        for (i, j) in [(0, 1), (0, 2), (1, 2), (1, 1)] {
            assert_eq!(g[i * m + j], f64::from(blocked(i, j)), "({i}, {j})");
        }
        // The blocking shows in the last bits: one unbroken chain differs somewhere.
        assert!([(0, 1), (0, 2), (1, 2)]
            .iter()
            .any(|&(i, j)| g[i * m + j] != f64::from(chain(i, j, 0..hidden))));
    }

    fn naive_dot(x: &[f64], hidden: usize, i: usize, j: usize) -> f64 {
        let (a, b) = (&x[i * hidden..][..hidden], &x[j * hidden..][..hidden]);
        a.iter().zip(b).map(|(p, q)| p * q).sum()
    }

    #[test]
    fn gram_halvings_give_every_product_and_an_exactly_symmetric_matrix() {
        let hidden = 37;
        // Below, at and above the leaf size, and a split leaving a partial tile.
        for m in [0, 1, 5, LEAF, LEAF + 1, 47, 100, 130] {
            let x: Vec<f64> = (0..m * hidden)
                .map(|k| ((k * 7919 % 1009) as f64 - 500.0) / 300.0)
                .collect();
            let g = gram_f64(&x, m, hidden);
            for i in 0..m {
                for j in 0..m {
                    let want = naive_dot(&x, hidden, i, j);
                    assert!(
                        (g[i * m + j] - want).abs() <= 1e-12 * want.abs().max(1.0),
                        "m {m} ({i}, {j})"
                    );
                    assert_eq!(g[i * m + j].to_bits(), g[j * m + i].to_bits());
                }
            }
        }
    }

    #[test]
    fn exact_cosines_normalise_as_the_seed_does() {
        let hidden = 50;
        let mut matrix: Vec<f32> = (0..6 * hidden)
            .map(|k| ((k * 31 % 17) as f32 - 8.0) / 5.0 + if k % hidden == 0 { 30.0 } else { 0.0 })
            .collect();
        // A zero vector: its norm is the epsilon alone, its cosines 0.
        matrix[5 * hidden..].fill(0.0);
        let g = category_gram(&matrix, hidden, &[0, 2, 4], &[1, 3, 5], Arithmetic::Exact);
        let unit = |r: usize| -> Vec<f64> {
            let x: Vec<f64> = matrix[r * hidden..][..hidden]
                .iter()
                .map(|&v| v.into())
                .collect();
            let d = x.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-10;
            x.iter().map(|v| v / d).collect()
        };
        let cos =
            |p: usize, q: usize| -> f64 { unit(p).iter().zip(unit(q)).map(|(a, b)| a * b).sum() };
        for i in 0..3 {
            for j in 0..3 {
                assert!((g.a[i * 3 + j] - cos(2 * i, 2 * j)).abs() < 1e-14);
                assert!((g.b[i * 3 + j] - cos(2 * i + 1, 2 * j + 1)).abs() < 1e-14);
                assert!((g.ab[i * 3 + j] - cos(2 * i, 2 * j + 1)).abs() < 1e-14);
            }
        }
        assert_eq!(g.b[8], 0.0);
    }

    #[test]
    fn arithmetic_names_round_trip() {
        for a in Arithmetic::ALL {
            assert_eq!(a.as_str().parse::<Arithmetic>(), Ok(a));
        }
        assert!("float".parse::<Arithmetic>().is_err());
    }
}
