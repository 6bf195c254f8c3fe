//! The geometry in which UA's cosines are taken, and what the sidecar keeps
//! so that an analysis can change it without the embeddings.
//!
//! Trained decoders put almost all of a pooled vector's norm into a few "rogue"
//! dimensions (Timkey and van Schijndel 2021), so that every cosine between raw
//! vectors is near 1 and UA, a difference of such cosines, is decided by those
//! dimensions (Ethayarajh 2019 measures the same anisotropy). Three geometries:
//!
//! - `raw`: the vectors as pooled, the seed's;
//! - `centred`: each vector minus the layer's mean over all statements of the cache;
//! - `standardised`: centred, then each dimension divided by its standard deviation
//!   over those statements (a z-score per dimension).
//!
//! Every geometry normalises the seed's way, `x / (|x| + 1e-10)`, after its transform.
//!
//! Centred cosines follow from the raw cosine Gram blocks and, per statement, its norm
//! `|x_i|` and its dot product `<x_i, s>` with the layer's sum vector `s`:
//! `<x_i - m, x_j - m> = <x_i, x_j> - <x_i, s>/N - <x_j, s>/N + |s|^2/N^2` with `m = s/N`
//! and `|s|^2 = sum_i <x_i, s>`. So the sidecar keeps those two numbers per statement
//! (and, for a category kept as vectors, the mean vector itself), and both analysis
//! paths centre the same raw blocks with the same numbers ([`centre`]). Standardising
//! rescales each dimension, which no Gram of the raw vectors can undo: it needs the
//! vectors ([`standardised_blocks`]).

use std::fmt;
use std::str::FromStr;

use crate::gram::{gram_f64, keeps_vectors, CategoryBlocks, CategoryGram, CategoryVectors};

/// The seed's normalisation guard, `x / (|x| + EPS)`.
const EPS: f64 = 1e-10;

/// Dimensions whose share of the squared norm measures the rogue dimensions.
pub const TOP_DIMS: usize = 3;

/// Which vectors UA's cosines are taken between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Geometry {
    Raw,
    Centred,
    Standardised,
}

impl Geometry {
    pub const ALL: [Geometry; 3] = [Geometry::Raw, Geometry::Centred, Geometry::Standardised];

    pub fn as_str(self) -> &'static str {
        match self {
            Geometry::Raw => "raw",
            Geometry::Centred => "centred",
            Geometry::Standardised => "standardised",
        }
    }

    /// Standardised cosines need every vector; the others follow from the sidecar.
    pub fn needs_vectors(self) -> bool {
        self == Geometry::Standardised
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Geometry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Geometry::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| {
                format!("unknown geometry '{s}' (expected raw, centred or standardised)")
            })
    }
}

/// Per statement of one side of a category (pair order): what centring and the
/// anisotropy need beyond the cosine blocks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SideGeometry {
    /// `|x_i|`.
    pub norm: Vec<f64>,
    /// `<x_i, s>`, `s` the sum of the layer's vectors over all statements.
    pub dot: Vec<f64>,
    /// `<x̂_i, S>`, `S` the sum of the normalised vectors over all statements.
    pub unit_dot: Vec<f64>,
    /// The squared mass of `x_i` in the layer's [`TOP_DIMS`] dimensions of largest
    /// total squared value.
    pub top: Vec<f64>,
}

impl SideGeometry {
    fn gather(all: &SideGeometry, rows: &[usize]) -> SideGeometry {
        let pick = |v: &[f64]| rows.iter().map(|&r| v[r]).collect();
        SideGeometry {
            norm: pick(&all.norm),
            dot: pick(&all.dot),
            unit_dot: pick(&all.unit_dot),
            top: pick(&all.top),
        }
    }

    /// The four lists, in the sidecar's column order.
    pub fn lists(&self) -> [&Vec<f64>; 4] {
        [&self.norm, &self.dot, &self.unit_dot, &self.top]
    }

    /// All four lists hold `n` finite values.
    pub fn is_valid(&self, n: usize) -> bool {
        self.lists()
            .iter()
            .all(|v| v.len() == n && v.iter().all(|x| x.is_finite()))
    }
}

/// One category's statement geometry: its A and B sides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CategoryGeometry {
    pub a: SideGeometry,
    pub b: SideGeometry,
}

/// One layer of one pooling, every statement in row order, with the layer's mean.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGeometry {
    pub rows: SideGeometry,
    /// `s / N`, the layer's mean vector.
    pub mean: Vec<f64>,
}

impl LayerGeometry {
    /// From a layer's `N x hidden` matrix (rows: every statement of the cache). Every
    /// sum runs in row order, then dimension order, on one thread: the bits depend on
    /// the vectors alone, so the sidecar's writer and an analysis from the embeddings
    /// get the same numbers.
    pub fn of(matrix: &[f32], hidden: usize) -> Self {
        let rows: Vec<&[f32]> = matrix.chunks_exact(hidden.max(1)).collect();
        let n = rows.len();
        let mut sum = vec![0.0f64; hidden];
        let mut unit_sum = vec![0.0f64; hidden];
        let mut squares = vec![0.0f64; hidden];
        let mut norm = Vec::with_capacity(n);
        for x in &rows {
            let d = x
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt();
            for (((s, u), q), &v) in sum.iter_mut().zip(&mut unit_sum).zip(&mut squares).zip(*x) {
                let v = f64::from(v);
                *s += v;
                *u += v / (d + EPS);
                *q += v * v;
            }
            norm.push(d);
        }
        let mut order: Vec<usize> = (0..hidden).collect();
        order.sort_by(|&i, &j| squares[j].total_cmp(&squares[i]).then(i.cmp(&j)));
        let top_dims = &order[..TOP_DIMS.min(hidden)];
        let mut dot = Vec::with_capacity(n);
        let mut unit_dot = Vec::with_capacity(n);
        let mut top = Vec::with_capacity(n);
        for (x, &d) in rows.iter().zip(&norm) {
            let xs = || x.iter().map(|&v| f64::from(v));
            dot.push(xs().zip(&sum).map(|(v, s)| v * s).sum());
            unit_dot.push(xs().zip(&unit_sum).map(|(v, s)| v / (d + EPS) * s).sum());
            top.push(top_dims.iter().map(|&k| f64::from(x[k]).powi(2)).sum());
        }
        let mean = sum.iter().map(|s| s / n.max(1) as f64).collect();
        LayerGeometry {
            rows: SideGeometry {
                norm,
                dot,
                unit_dot,
                top,
            },
            mean,
        }
    }

    /// A category's share: `a_rows[i]`, `b_rows[i]` are pair `i`'s rows.
    pub fn category(&self, a_rows: &[usize], b_rows: &[usize]) -> CategoryGeometry {
        CategoryGeometry {
            a: SideGeometry::gather(&self.rows, a_rows),
            b: SideGeometry::gather(&self.rows, b_rows),
        }
    }
}

/// One layer's statement geometry as an analysis holds it: every category's, in the
/// cache's category order, and the layer's mean vector where some category is kept as
/// vectors (the only form that needs it).
#[derive(Debug, Clone, PartialEq)]
pub struct StatementGeometry {
    pub categories: Vec<CategoryGeometry>,
    pub mean: Option<Vec<f64>>,
}

impl StatementGeometry {
    pub fn centre(&self) -> LayerCentre {
        LayerCentre::of(&self.categories, self.mean.clone())
    }

    pub fn anisotropy(&self) -> Anisotropy {
        Anisotropy::of(&self.categories)
    }
}

/// What centring one layer needs besides each category's own numbers: the number of
/// statements, `|s|^2`, and the mean vector (for categories kept as vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCentre {
    pub n_statements: usize,
    pub sum_sq: f64,
    pub mean: Option<Vec<f64>>,
}

impl LayerCentre {
    /// From every category of the layer (`|s|^2 = sum_i <x_i, s>`, summed category by
    /// category, A then B, so that both analysis paths get the same bits).
    pub fn of(categories: &[CategoryGeometry], mean: Option<Vec<f64>>) -> Self {
        let sides = || categories.iter().flat_map(|c| [&c.a, &c.b]);
        LayerCentre {
            n_statements: sides().map(|s| s.dot.len()).sum(),
            sum_sq: sides().map(|s| s.dot.iter().sum::<f64>()).sum(),
            mean,
        }
    }
}

/// Anisotropy of one layer's raw vectors: the mean cosine over all pairs of distinct
/// statements, and the share of the total squared norm in the [`TOP_DIMS`] dimensions
/// that hold the most of it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Anisotropy {
    pub mean_cosine: f64,
    pub top_share: f64,
}

impl Anisotropy {
    /// From every category of the layer: `sum_{i != j} <x̂_i, x̂_j> = |S|^2 - sum_i |x̂_i|^2`.
    pub fn of(categories: &[CategoryGeometry]) -> Self {
        let sides = || categories.iter().flat_map(|c| [&c.a, &c.b]);
        let n: usize = sides().map(|s| s.norm.len()).sum();
        let s_sq: f64 = sides().map(|s| s.unit_dot.iter().sum::<f64>()).sum();
        let unit_sq: f64 = sides()
            .flat_map(|s| s.norm.iter())
            .map(|&d| (d / (d + EPS)).powi(2))
            .sum();
        let mass: f64 = sides().flat_map(|s| s.norm.iter()).map(|d| d * d).sum();
        let top: f64 = sides().flat_map(|s| s.top.iter()).sum();
        let pairs = (n * n.saturating_sub(1)) as f64;
        Anisotropy {
            mean_cosine: (s_sq - unit_sq) / pairs,
            top_share: top / mass,
        }
    }
}

/// One category's blocks in the centred geometry, from its raw blocks (exact
/// arithmetic), its statement geometry and the layer's.
pub fn centre(raw: &CategoryBlocks, g: &CategoryGeometry, layer: &LayerCentre) -> CategoryBlocks {
    let nn = layer.n_statements as f64;
    let q = layer.sum_sq / (nn * nn);
    match raw {
        CategoryBlocks::Gram(gram) => {
            let n = gram.n;
            // Centred norms: <x_i - m, x_i - m> from the raw diagonal (the seed's
            // normalised vectors have |x̂|^2 = (|x| / (|x| + eps))^2, not exactly 1).
            let raw_ip = |cos: f64, i: f64, j: f64| cos * (i + EPS) * (j + EPS);
            let cnorm = |side: &SideGeometry, diag: &[f64]| -> Vec<f64> {
                (0..n)
                    .map(|i| {
                        let c = raw_ip(diag[i * n + i], side.norm[i], side.norm[i])
                            - 2.0 * side.dot[i] / nn
                            + q;
                        c.max(0.0).sqrt()
                    })
                    .collect()
            };
            let (ca, cb) = (cnorm(&g.a, &gram.a), cnorm(&g.b, &gram.b));
            let block = |m: &[f64], x: &SideGeometry, cx: &[f64], y: &SideGeometry, cy: &[f64]| {
                let mut out = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        let ip = raw_ip(m[i * n + j], x.norm[i], y.norm[j])
                            - x.dot[i] / nn
                            - y.dot[j] / nn
                            + q;
                        out[i * n + j] = ip / ((cx[i] + EPS) * (cy[j] + EPS));
                    }
                }
                out
            };
            let (a, b) = (
                block(&gram.a, &g.a, &ca, &g.a, &ca),
                block(&gram.b, &g.b, &cb, &g.b, &cb),
            );
            CategoryBlocks::Gram(CategoryGram {
                n,
                a: symmetric(a, n),
                b: symmetric(b, n),
                ab: block(&gram.ab, &g.a, &ca, &g.b, &cb),
            })
        }
        CategoryBlocks::Vectors(v) => {
            let mean = layer
                .mean
                .as_deref()
                .expect("a category kept as vectors comes with the layer's mean");
            let side = |unit: &[f64], s: &SideGeometry| -> Vec<f64> {
                unit.chunks_exact(v.hidden.max(1))
                    .zip(&s.norm)
                    .flat_map(|(x, &d)| {
                        let c: Vec<f64> =
                            x.iter().zip(mean).map(|(u, m)| u * (d + EPS) - m).collect();
                        normalised(c)
                    })
                    .collect()
            };
            CategoryBlocks::Vectors(CategoryVectors {
                n: v.n,
                hidden: v.hidden,
                a: side(&v.a, &g.a),
                b: side(&v.b, &g.b),
            })
        }
    }
}

/// The upper triangle mirrored onto the lower, so sums over `i < j` and `j < i` agree
/// bit for bit (as `gram_f64` keeps them).
fn symmetric(mut g: Vec<f64>, n: usize) -> Vec<f64> {
    for i in 0..n {
        for j in 0..i {
            g[i * n + j] = g[j * n + i];
        }
    }
    g
}

fn normalised(x: Vec<f64>) -> Vec<f64> {
    let d = x.iter().map(|v| v * v).sum::<f64>().sqrt() + EPS;
    x.into_iter().map(|v| v / d).collect()
}

/// Each dimension's mean and standard deviation (population) over a layer's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardiser {
    pub mean: Vec<f64>,
    /// `1 / std`, 0 for a dimension constant over the statements (it carries nothing).
    pub inv_std: Vec<f64>,
}

impl Standardiser {
    pub fn of(matrix: &[f32], hidden: usize) -> Self {
        let rows = matrix.chunks_exact(hidden.max(1));
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0f64; hidden];
        for x in rows.clone() {
            for (m, &v) in mean.iter_mut().zip(x) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; hidden];
        for x in rows {
            for ((s, &v), m) in var.iter_mut().zip(x).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let inv_std = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 0.0 {
                    1.0 / sd
                } else {
                    0.0
                }
            })
            .collect();
        Standardiser { mean, inv_std }
    }
}

impl Standardiser {
    /// The z-scores of a layer's rows (as float32: what CKA takes).
    pub fn apply(&self, matrix: &[f32]) -> Vec<f32> {
        let hidden = self.mean.len().max(1);
        matrix
            .chunks_exact(hidden)
            .flat_map(|x| {
                x.iter()
                    .zip(&self.mean)
                    .zip(&self.inv_std)
                    .map(|((&v, m), s)| ((f64::from(v) - m) * s) as f32)
            })
            .collect()
    }
}

/// One category's blocks in the standardised geometry, in exact arithmetic and in the
/// form `keeps_vectors` picks, as the raw blocks are.
pub fn standardised_blocks(
    matrix: &[f32],
    hidden: usize,
    a_rows: &[usize],
    b_rows: &[usize],
    z: &Standardiser,
) -> CategoryBlocks {
    let n = a_rows.len();
    let unit_rows = |rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .flat_map(|&r| {
                let x = &matrix[r * hidden..(r + 1) * hidden];
                let c: Vec<f64> = x
                    .iter()
                    .zip(&z.mean)
                    .zip(&z.inv_std)
                    .map(|((&v, m), s)| (f64::from(v) - m) * s)
                    .collect();
                normalised(c)
            })
            .collect()
    };
    let (a, b) = (unit_rows(a_rows), unit_rows(b_rows));
    if keeps_vectors(n, hidden) {
        return CategoryBlocks::Vectors(CategoryVectors { n, hidden, a, b });
    }
    let joint: Vec<f64> = a.into_iter().chain(b).collect();
    let g = gram_f64(&joint, 2 * n, hidden);
    CategoryBlocks::Gram(CategoryGram::from_joint(&g, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gram::category_blocks;

    /// A layer with one rogue dimension holding most of every vector's norm.
    fn layer(n_rows: usize, hidden: usize) -> Vec<f32> {
        (0..n_rows * hidden)
            .map(|k| {
                let (r, d) = (k / hidden, k % hidden);
                let wobble = ((r * 31 + d * 17) % 23) as f32 / 23.0 - 0.5;
                if d == 1 {
                    100.0 + wobble
                } else {
                    wobble + 0.1 * (r % 3) as f32
                }
            })
            .collect()
    }

    fn cosines(vectors: &[Vec<f64>], i: usize, j: usize) -> f64 {
        let dot: f64 = vectors[i].iter().zip(&vectors[j]).map(|(x, y)| x * y).sum();
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt() + EPS;
        dot / (n(&vectors[i]) * n(&vectors[j]))
    }

    fn dense(b: &CategoryBlocks) -> CategoryGram {
        match b {
            CategoryBlocks::Gram(g) => g.clone(),
            CategoryBlocks::Vectors(v) => {
                let rows: Vec<f64> = v.a.iter().chain(&v.b).copied().collect();
                CategoryGram::from_joint(&gram_f64(&rows, 2 * v.n, v.hidden), v.n)
            }
        }
    }

    #[test]
    fn centring_the_blocks_equals_the_cosines_of_centred_vectors() {
        // hidden 6: three pairs keep Gram blocks, eight pairs keep vectors.
        for (n_pairs, hidden) in [(3, 6), (8, 6)] {
            let rows = 2 * n_pairs + 4; // four statements of another category
            let m = layer(rows, hidden);
            let (a, b): (Vec<usize>, Vec<usize>) = (
                (0..n_pairs).map(|i| 2 * i).collect(),
                (0..n_pairs).map(|i| 2 * i + 1).collect(),
            );
            let geo = LayerGeometry::of(&m, hidden);
            let cats = [
                geo.category(&a, &b),
                geo.category(
                    &[2 * n_pairs, 2 * n_pairs + 2],
                    &[2 * n_pairs + 1, 2 * n_pairs + 3],
                ),
            ];
            let centre_of = LayerCentre::of(&cats, Some(geo.mean.clone()));
            let raw = category_blocks(&m, hidden, &a, &b);
            assert_eq!(
                matches!(raw, CategoryBlocks::Vectors(_)),
                keeps_vectors(n_pairs, hidden)
            );
            let got = dense(&centre(&raw, &cats[0], &centre_of));
            let centred: Vec<Vec<f64>> = m
                .chunks_exact(hidden)
                .map(|x| {
                    x.iter()
                        .zip(&geo.mean)
                        .map(|(&v, mu)| f64::from(v) - mu)
                        .collect()
                })
                .collect();
            for i in 0..n_pairs {
                for j in 0..n_pairs {
                    for (block, p, q) in [
                        (&got.a, a[i], a[j]),
                        (&got.b, b[i], b[j]),
                        (&got.ab, a[i], b[j]),
                    ] {
                        let want = cosines(&centred, p, q);
                        // From the Gram form the centred inner product is a difference of
                        // numbers of size |x|^2 (here 1e4) that leaves about 0.3: float64's
                        // 1e-16 grows to about 1e-11 (Gemma-3-270M: 2e-11 of |UA|).
                        assert!(
                            (block[i * n_pairs + j] - want).abs() < 1e-9,
                            "{n_pairs} pairs: {} vs {want}",
                            block[i * n_pairs + j]
                        );
                    }
                }
            }
            // The raw cosines sit near 1; the centred ones do not.
            assert!(dense(&raw).ab.iter().all(|&c| c > 0.99));
            assert!(got.ab.iter().any(|&c| c < 0.9));
        }
    }

    #[test]
    fn standardising_takes_a_z_score_per_dimension() {
        let (hidden, rows) = (5, 10);
        let m = layer(rows, hidden);
        let z = Standardiser::of(&m, hidden);
        let blocks = dense(&standardised_blocks(&m, hidden, &[0, 2], &[1, 3], &z));
        let zs: Vec<Vec<f64>> = m
            .chunks_exact(hidden)
            .map(|x| {
                (0..hidden)
                    .map(|d| {
                        let col: Vec<f64> =
                            m.chunks_exact(hidden).map(|r| f64::from(r[d])).collect();
                        let mu = col.iter().sum::<f64>() / rows as f64;
                        let sd = (col.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / rows as f64)
                            .sqrt();
                        (f64::from(x[d]) - mu) / sd
                    })
                    .collect()
            })
            .collect();
        assert!((blocks.ab[1] - cosines(&zs, 0, 3)).abs() < 1e-12);
        assert!((blocks.a[1] - cosines(&zs, 0, 2)).abs() < 1e-12);
    }

    #[test]
    fn anisotropy_is_the_mean_cosine_and_the_top_dimensions_share() {
        let (hidden, rows) = (6, 8);
        let m = layer(rows, hidden);
        let geo = LayerGeometry::of(&m, hidden);
        let cats = [geo.category(&[0, 2, 4, 6], &[1, 3, 5, 7])];
        let got = Anisotropy::of(&cats);
        let vectors: Vec<Vec<f64>> = m
            .chunks_exact(hidden)
            .map(|x| x.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let mut sum = 0.0;
        for i in 0..rows {
            for j in 0..rows {
                if i != j {
                    sum += cosines(&vectors, i, j);
                }
            }
        }
        assert!((got.mean_cosine - sum / (rows * (rows - 1)) as f64).abs() < 1e-12);
        assert!(got.mean_cosine > 0.99);
        // Dimension 1 holds nearly all the mass; the top three hold more.
        let mass: f64 = vectors.iter().flatten().map(|v| v * v).sum();
        let dim1: f64 = vectors.iter().map(|v| v[1] * v[1]).sum();
        assert!(got.top_share >= dim1 / mass && got.top_share <= 1.0);
    }
}
