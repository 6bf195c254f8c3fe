//! Linear CKA (Kornblith et al. 2019) between the layers of two models on the same
//! statements (where each model's |r| peak lands is `analysis::alignment`).
//!
//! `CKA(X, Y) = <Kx, Ky>_F / (|Kx|_F |Ky|_F)` with `K = Xc Xc^T`, `Xc` the
//! column-centred `n_statements x hidden` matrix of one layer. Two forms compute it
//! (`CkaForm`), equal up to roundoff:
//! - through the `n x n` Gram matrices, which lets models of different widths meet
//!   in the same space and makes all layer pairs of two models one matrix product,
//!   but holds n(n+1)/2 f64 per layer (6.4 GB at 40,000 statements);
//! - in feature space, `<Kx, Ky>_F = |Xc^T Yc|_F^2` and `|Kx|_F = |Xc^T Xc|_F`, which
//!   holds the centred features (n x hidden f64 per layer) and costs
//!   `n hx hy` per layer pair, linear in n.
//!
//! Either way each layer's part is built right after the layer is read, so no
//! model's embeddings are held beyond one layer.
//!
//! The vectors are the raw pooled vectors, centred but not normalised: CKA is already
//! invariant to isotropic scaling and orthogonal transforms, and per-statement
//! normalisation would hide the massive activations that are part of what a layer
//! represents.

use rayon::prelude::*;
use serde::Serialize;

/// Rows of the Gram computed per product: only the upper triangle is needed, and
/// blocks this size waste little work below the diagonal while keeping the
/// products large enough for the GEMM kernel.
const BLOCK: usize = 32;

/// Columns of `Yc` per product in the feature form: bounds the `hx x COLUMNS`
/// product each thread holds (16 MB at hx = 8192, where the whole `Xc^T Yc` would be
/// 512 MB) and splits a layer pair into tasks, while keeping the products large
/// enough for the GEMM kernel.
const COLUMNS: usize = 256;

/// How the CKA of two layers is computed (see the module notes). One form serves all
/// compared models, so that every pair is computed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CkaForm {
    /// The packed `n x n` centred Gram of each layer.
    Gram,
    /// The centred `n x hidden` features of each layer.
    Features,
}

/// The form that holds less per layer for every compared model: `Features` when
/// `n x h < n(n+1)/2`, i.e. `2h < n + 1`, for the widest of them (`hiddens`).
/// Memory is the only criterion, though where the Grams fit they are often faster:
/// a layer pair costs `n hx hy` multiply-adds in feature space, against `n^2 / 2`
/// once the Grams are built (`n^2 h / 2` per layer), so with many layers of wide
/// models the feature form pays for its memory in time.
pub fn choose(n: usize, hiddens: &[usize]) -> CkaForm {
    let widest = hiddens.iter().copied().max().unwrap_or(0);
    if 2 * widest < n + 1 {
        CkaForm::Features
    } else {
        CkaForm::Gram
    }
}

/// Bytes one layer of a model keeps in `form` (for an estimate before anything is
/// read; the transient working memory of building it is not counted).
pub fn bytes_per_layer(form: CkaForm, n: usize, hidden: usize) -> f64 {
    let values = match form {
        CkaForm::Gram => n as f64 * (n as f64 + 1.0) / 2.0,
        CkaForm::Features => n as f64 * hidden as f64,
    };
    values * std::mem::size_of::<f64>() as f64
}

/// What one layer keeps for CKA: its packed Gram or its centred features, with the
/// Frobenius norm of its centred Gram, computed here because the layers are built
/// in parallel while `ModelGrams::new` runs once per model.
#[derive(Debug, Clone)]
pub struct LayerCka {
    form: CkaForm,
    n: usize,
    /// The width of `data`'s rows in the feature form (only checked for the Gram).
    hidden: usize,
    data: Vec<f64>,
    norm: f64,
}

/// One layer (`n x hidden` row-major) in `form`.
pub fn layer(matrix: &[f32], n: usize, hidden: usize, form: CkaForm) -> LayerCka {
    let (data, norm) = match form {
        CkaForm::Gram => {
            let g = packed_gram(matrix, n, hidden);
            let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            (g, norm)
        }
        CkaForm::Features => {
            let x = centred(matrix, n, hidden);
            let norm = (0..hidden.div_ceil(COLUMNS))
                .map(|block| cross_squares(&x, hidden, &x, hidden, block, n))
                .sum::<f64>()
                .sqrt();
            (x, norm)
        }
    };
    LayerCka {
        form,
        n,
        hidden,
        data,
        norm,
    }
}

/// A layer's centred Gram packed as its upper triangle, row by row, with the
/// off-diagonal entries times √2 so that the dot product of two packed Grams is the
/// Frobenius product of the full ones.
fn packed_gram(matrix: &[f32], n: usize, hidden: usize) -> Vec<f64> {
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

/// The sum of squares of columns `block * COLUMNS..` (at most `COLUMNS` of them) of
/// `X^T Y`, for row-major `x` (`n x hx`) and `y` (`n x hy`): the Frobenius product
/// of the two layers' Grams, one column block at a time.
fn cross_squares(x: &[f64], hx: usize, y: &[f64], hy: usize, block: usize, n: usize) -> f64 {
    let first = block * COLUMNS;
    let cols = COLUMNS.min(hy - first);
    assert!(x.len() >= n * hx && y.len() >= n * hy);
    let mut c = vec![0.0; hx * cols];
    // SAFETY: X^T reads x[i + l*hx] (i < hx, l < n), within n*hx; the block of Y
    // reads y[first + l*hy + j] (j < cols, first + cols <= hy), within n*hy; c is
    // hx x cols.
    unsafe {
        matrixmultiply::dgemm(
            hx,
            n,
            cols,
            1.0,
            x.as_ptr(),
            1,
            hx as isize,
            y[first..].as_ptr(),
            hy as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            cols as isize,
            1,
        );
    }
    c.iter().map(|v| v * v).sum()
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

/// One model's CKA layers (packed Grams or centred features, see `CkaForm`), one per
/// analysed layer, contiguous so that in the Gram form all layer pairs of two models
/// are one matrix product.
#[derive(Debug, Clone)]
pub struct ModelGrams {
    name: String,
    form: CkaForm,
    n: usize,
    /// The width of each layer's features (feature form only).
    hidden: usize,
    /// f64 per layer in `data`.
    len: usize,
    layers: Vec<u32>,
    data: Vec<f64>,
    norms: Vec<f64>,
}

impl ModelGrams {
    /// Takes the per-layer parts one at a time, so that only one is ever held twice.
    /// All must share one form, statement count and width, one per layer (the
    /// products read `data` by these counts).
    pub fn new(name: String, layers: Vec<u32>, parts: Vec<LayerCka>) -> Self {
        assert_eq!(layers.len(), parts.len(), "CKA layers of {name}");
        let (form, n, hidden, len) = parts.first().map_or((CkaForm::Gram, 0, 0, 0), |p| {
            (p.form, p.n, p.hidden, p.data.len())
        });
        let mut data = Vec::with_capacity(len * parts.len());
        let mut norms = Vec::with_capacity(parts.len());
        for p in parts {
            assert!(
                (p.form, p.n, p.hidden, p.data.len()) == (form, n, hidden, len),
                "the CKA layers of {name} differ in form or shape"
            );
            norms.push(p.norm);
            data.extend_from_slice(&p.data);
        }
        ModelGrams {
            name,
            form,
            n,
            hidden,
            len,
            layers,
            data,
            norms,
        }
    }

    fn layer(&self, i: usize) -> &[f64] {
        &self.data[i * self.len..(i + 1) * self.len]
    }
}

/// CKA of every layer of `a` (rows) with every layer of `b` (columns). A layer whose
/// centred Gram is zero (all statements alike) has no CKA: NaN, null in JSON.
///
/// Panics if the two models differ in form or statement count (a caller's error:
/// one form serves all compared models, on the same statements).
pub fn cka_matrix(a: &ModelGrams, b: &ModelGrams) -> Vec<Vec<f64>> {
    let (la, lb) = (a.layers.len(), b.layers.len());
    assert!(
        la == 0 || lb == 0 || (a.form, a.n) == (b.form, b.n),
        "CKA of {} ({:?}, n = {}) with {} ({:?}, n = {})",
        a.name,
        a.form,
        a.n,
        b.name,
        b.form,
        b.n
    );
    let dots = match a.form {
        CkaForm::Gram => product(&a.data, la, &b.data, lb, a.len),
        CkaForm::Features => feature_dots(a, b),
    };
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

/// `<Ka_i, Kb_j>_F = |Xa_i^T Xb_j|_F^2` for every layer pair, row-major. Each task is
/// one column block of one pair, so that even two models of few layers keep every
/// core busy; the blocks are summed in order afterwards, so the result does not
/// depend on how the tasks were scheduled.
fn feature_dots(a: &ModelGrams, b: &ModelGrams) -> Vec<f64> {
    let (lb, blocks) = (b.layers.len(), b.hidden.div_ceil(COLUMNS).max(1));
    let parts: Vec<f64> = (0..a.layers.len() * lb * blocks)
        .into_par_iter()
        .map(|t| {
            let (pair, block) = (t / blocks, t % blocks);
            let (x, y) = (a.layer(pair / lb), b.layer(pair % lb));
            cross_squares(x, a.hidden, y, b.hidden, block, a.n)
        })
        .collect();
    parts.chunks_exact(blocks).map(|p| p.iter().sum()).collect()
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

    const FORMS: [CkaForm; 2] = [CkaForm::Gram, CkaForm::Features];

    fn model(name: &str, layers: &[Vec<f32>], n: usize, d: usize, form: CkaForm) -> ModelGrams {
        let parts = layers.iter().map(|m| layer(m, n, d, form)).collect();
        ModelGrams::new(name.into(), (0..layers.len() as u32).collect(), parts)
    }

    /// Linear CKA of two `n x d` row-major matrices (one layer of two models).
    fn linear_cka(x: &[f32], dx: usize, y: &[f32], dy: usize, n: usize, form: CkaForm) -> f64 {
        let gx = model("x", &[x.to_vec()], n, dx, form);
        let gy = model("y", &[y.to_vec()], n, dy, form);
        cka_matrix(&gx, &gy)[0][0]
    }

    /// CKA in each form.
    fn cka(x: &[f32], y: &[f32]) -> [f64; 2] {
        FORMS.map(|form| linear_cka(x, D, y, D, N, form))
    }

    #[test]
    fn one_with_itself() {
        let x = random(N, D, 1);
        for c in cka(&x, &x) {
            assert!((c - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn invariant_to_orthogonal_transforms() {
        let x = random(N, D, 2);
        let q = orthogonal(D, 3);
        // f32 storage of XQ limits agreement to float32 roundoff.
        for c in cka(&x, &times(&x, &q, D)) {
            assert!((c - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn invariant_to_isotropic_scaling() {
        let x = random(N, D, 4);
        let scaled: Vec<f32> = x.iter().map(|v| v * 7.5).collect();
        for c in cka(&x, &scaled) {
            assert!((c - 1.0).abs() < 1e-12);
        }
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
        for c in cka(&x, &stretched) {
            assert!(c < 0.5);
        }
    }

    #[test]
    fn symmetric_across_widths() {
        let x = random(N, D, 6);
        let y = random(N, 5, 7);
        for form in FORMS {
            let xy = linear_cka(&x, D, &y, 5, N, form);
            let yx = linear_cka(&y, 5, &x, D, N, form);
            assert!((xy - yx).abs() < 1e-14);
            assert!(xy > 0.0 && xy < 1.0);
        }
    }

    /// A layer with a few "massive activation" columns: in the thousands, varying by
    /// a tenth across statements, so that they dominate the centred Gram.
    fn massive(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = random(n, d, seed);
        for row in x.chunks_exact_mut(d) {
            row[0] = 3000.0 * (1.0 + 0.1 * rng.random_range(-1.0f32..1.0));
            row[d - 2] = -1500.0 * (1.0 + 0.1 * rng.random_range(-1.0f32..1.0));
        }
        x
    }

    /// Every statement alike (values that are not dyadic, so centring must still
    /// give exact zeros): no CKA.
    fn constant(n: usize, d: usize, seed: u64) -> Vec<f32> {
        random(1, d, seed).repeat(n)
    }

    /// `x M + noise` for a random `dx x dy` matrix `M`: a layer of the other width
    /// that shares much of `x`'s structure, so that its CKA with `x` is high.
    fn mixed(x: &[f32], n: usize, dx: usize, dy: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let m: Vec<f32> = (0..dx * dy).map(|_| rng.random_range(-1.0..1.0)).collect();
        let noise = random(n, dy, seed + 1);
        (0..n * dy)
            .map(|k| {
                let (i, j) = (k / dy, k % dy);
                let s: f32 = (0..dx).map(|l| x[i * dx + l] * m[l * dy + j]).sum();
                s + 0.3 * noise[k]
            })
            .collect()
    }

    /// Both forms of the CKA matrix of `a` (`n x da` layers) with `b`.
    fn both_forms(
        a: &[Vec<f32>],
        da: usize,
        b: &[Vec<f32>],
        db: usize,
        n: usize,
    ) -> [Vec<Vec<f64>>; 2] {
        FORMS.map(|form| cka_matrix(&model("a", a, n, da, form), &model("b", b, n, db, form)))
    }

    fn assert_close(x: f64, y: f64, tolerance: f64) {
        assert!(
            (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance,
            "{x} vs {y}"
        );
    }

    #[test]
    fn the_two_forms_agree() {
        let (n, hx, hy) = (50, 7, 11);
        let x0 = random(n, hx, 10);
        let a = vec![
            x0.clone(),
            massive(n, hx, 11),
            constant(n, hx, 12),
            random(n, hx, 13),
        ];
        let b = vec![
            mixed(&x0, n, hx, hy, 14),
            massive(n, hy, 16),
            random(n, hy, 17),
            constant(n, hy, 18),
            mixed(&a[1], n, hx, hy, 19),
        ];
        let [gram, features] = both_forms(&a, hx, &b, hy, n);
        assert_eq!((gram.len(), gram[0].len()), (a.len(), b.len()));
        for (g, f) in gram.iter().flatten().zip(features.iter().flatten()) {
            assert_close(*g, *f, 1e-12);
        }
        // The cases are what they say: high, massive-dominated, NaN for constants.
        assert!(gram[0][0] > 0.8, "{}", gram[0][0]);
        assert!(gram[1][4] > 0.8, "{}", gram[1][4]);
        assert!(gram[1][1] > 0.0 && gram[1][1] < 1.0);
        for row in [&gram[2], &features[2]] {
            assert!(row.iter().all(|c| c.is_nan()));
        }
        for m in [&gram, &features] {
            assert!(m.iter().all(|row| row[3].is_nan()));
        }
        assert!(gram.iter().flatten().filter(|c| c.is_nan()).count() == b.len() + a.len() - 1);
    }

    #[test]
    fn feature_blocks_cover_wide_layers() {
        // Wider than one block of columns, on either side of the product.
        let (n, wide, narrow) = (40, COLUMNS + 5, 3);
        let a = vec![random(n, wide, 20), massive(n, wide, 21)];
        let b = vec![random(n, narrow, 22), mixed(&a[0], n, wide, narrow, 23)];
        for (x, dx, y, dy) in [
            (&a, wide, &b, narrow),
            (&b, narrow, &a, wide),
            (&a, wide, &a, wide),
        ] {
            let [gram, features] = both_forms(x, dx, y, dy, n);
            for (g, f) in gram.iter().flatten().zip(features.iter().flatten()) {
                assert_close(*g, *f, 1e-12);
            }
        }
    }

    /// CKA straight from the definition: full `n x n` Grams of the centred matrices,
    /// centred here rather than by `centred`.
    fn naive_cka(x: &[f32], dx: usize, y: &[f32], dy: usize, n: usize) -> f64 {
        let gram = |m: &[f32], d: usize| {
            let mean: Vec<f64> = (0..d)
                .map(|j| (0..n).map(|i| f64::from(m[i * d + j])).sum::<f64>() / n as f64)
                .collect();
            let c = |i: usize, j: usize| f64::from(m[i * d + j]) - mean[j];
            (0..n * n)
                .map(|k| (0..d).map(|j| c(k / n, j) * c(k % n, j)).sum::<f64>())
                .collect::<Vec<f64>>()
        };
        let (kx, ky) = (gram(x, dx), gram(y, dy));
        let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(a, b)| a * b).sum::<f64>();
        dot(&kx, &ky) / (dot(&kx, &kx).sqrt() * dot(&ky, &ky).sqrt())
    }

    #[test]
    fn both_forms_match_the_definition() {
        let (n, hx, hy) = (50, 7, 11);
        let x = massive(n, hx, 30);
        let cases = [
            random(n, hy, 31),
            mixed(&x, n, hx, hy, 32),
            massive(n, hy, 33),
        ];
        for y in &cases {
            let expected = naive_cka(&x, hx, y, hy, n);
            for form in FORMS {
                assert_close(linear_cka(&x, hx, y, hy, n, form), expected, 1e-12);
            }
        }
    }

    #[test]
    fn choose_takes_the_smaller_form() {
        assert_eq!(choose(50, &[7, 11]), CkaForm::Features);
        assert_eq!(choose(50, &[7, 30]), CkaForm::Gram);
        // The widest model decides: equal memory stays with the Grams.
        assert_eq!(choose(40, &[20, 3]), CkaForm::Features);
        assert_eq!(choose(39, &[3, 20]), CkaForm::Gram);
        for n in 1..60 {
            for h in 1..40 {
                let smaller =
                    bytes_per_layer(CkaForm::Features, n, h) < bytes_per_layer(CkaForm::Gram, n, h);
                let expected = if smaller {
                    CkaForm::Features
                } else {
                    CkaForm::Gram
                };
                assert_eq!(choose(n, &[h]), expected, "n = {n}, h = {h}");
            }
        }
    }

    #[test]
    fn bytes_per_layer_counts_what_a_layer_keeps() {
        let (n, h) = (40_000, 4096);
        assert_eq!(
            bytes_per_layer(CkaForm::Gram, n, h),
            (n * (n + 1) / 2 * 8) as f64
        );
        assert_eq!(bytes_per_layer(CkaForm::Features, n, h), (n * h * 8) as f64);
        let x = random(N, D, 40);
        for form in FORMS {
            let kept = layer(&x, N, D, form).data.len() * std::mem::size_of::<f64>();
            assert_eq!(kept as f64, bytes_per_layer(form, N, D));
        }
    }

    #[test]
    #[should_panic(expected = "CKA of a")]
    fn the_forms_do_not_mix() {
        let x = [random(N, D, 50)];
        let a = model("a", &x, N, D, CkaForm::Gram);
        let b = model("b", &x, N, D, CkaForm::Features);
        cka_matrix(&a, &b);
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
