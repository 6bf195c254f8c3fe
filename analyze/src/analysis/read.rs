//! The pipeline's reading step: every sampled layer of every pooling read once, as
//! each category's Gram blocks (or vectors) from the embeddings, or from the sidecar
//! (`grams.parquet`) where a cache has one, taken into each view's geometry and handed to
//! `reduce`; with the CKA Grams of the caches compared across sizes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use rayon::prelude::*;
use schemas::geometry::{
    centre, standardised_blocks, Geometry, LayerGeometry, Standardiser, StatementGeometry,
};
use schemas::gram::{category_blocks, category_gram};
use schemas::{Pooling, SidecarLayer};

use super::loaded::Loaded;
use super::reduce::{batch_layers, LayerBlocks, Needs, Reducer};
use super::results::{Grid, Selection};
use super::view::{arithmetic_of, View};
use crate::cache::{read_layer, read_sidecar, Pair};
use crate::settings::AnalysisSettings;
use crate::stats::bootstrap::Resamples;
use crate::stats::cka;
use crate::stats::uniformity::{ua_of, Arithmetic, CategoryBlocks};

/// Thread time spent on the layers read in parallel (the benchmark's breakdown):
/// reading Parquet, summarising the category Grams, building the CKA Grams.
#[derive(Debug, Default, Clone, Copy)]
struct CpuTime {
    read: Duration,
    gram: Duration,
    cka: Duration,
}

impl std::ops::AddAssign for CpuTime {
    fn add_assign(&mut self, o: CpuTime) {
        self.read += o.read;
        self.gram += o.gram;
        self.cka += o.cka;
    }
}

/// One layer's matrix of one pooling as read from the embeddings, with each
/// category's A and B rows: the blocks of every geometry come from it.
struct LayerMatrix {
    m: Vec<f32>,
    hidden: usize,
    rows: Vec<(Vec<usize>, Vec<usize>)>,
}

impl LayerMatrix {
    fn new(m: Vec<f32>, hidden: usize, pairs: &[Vec<Pair>]) -> Self {
        let rows = pairs
            .iter()
            .map(|cat| {
                (
                    cat.iter().map(|p| p.a).collect(),
                    cat.iter().map(|p| p.b).collect(),
                )
            })
            .collect();
        LayerMatrix { m, hidden, rows }
    }

    /// The raw blocks. The seed's arithmetic is a Gram computation (its float32
    /// kernel); the exact one keeps whichever form `category_blocks` picks, as the
    /// sidecar does.
    fn raw(&self, arithmetic: Arithmetic) -> Vec<CategoryBlocks> {
        self.rows
            .iter()
            .map(|(a, b)| match arithmetic {
                Arithmetic::Exact => category_blocks(&self.m, self.hidden, a, b),
                Arithmetic::Seed => {
                    CategoryBlocks::Gram(category_gram(&self.m, self.hidden, a, b, arithmetic))
                }
            })
            .collect()
    }

    /// Every statement's geometry, as the sidecar's writer computes it.
    fn statements(&self) -> StatementGeometry {
        let g = LayerGeometry::of(&self.m, self.hidden);
        StatementGeometry {
            categories: self.rows.iter().map(|(a, b)| g.category(a, b)).collect(),
            mean: Some(g.mean),
        }
    }

    fn standardised(&self, z: &Standardiser) -> Vec<CategoryBlocks> {
        self.rows
            .iter()
            .map(|(a, b)| standardised_blocks(&self.m, self.hidden, a, b, z))
            .collect()
    }
}

/// One layer of pooling `p` read from the embeddings as its category blocks in the
/// geometry of each of `views` (the views of that pooling), with what CKA keeps of it
/// when asked for (in that form) and the time each step took. `primary`: `views[0]`
/// is the analysis' first view, whose UA is also computed in the other arithmetic.
fn read_layer_blocks(
    l: &Loaded,
    layer: u32,
    p: Pooling,
    views: &[View],
    primary: bool,
    settings: &AnalysisSettings,
    cka_form: Option<cka::CkaForm>,
) -> Result<(Vec<LayerBlocks>, Option<cka::LayerCka>, CpuTime)> {
    let t = Instant::now();
    let hidden = l.model.hidden();
    let lm = LayerMatrix::new(
        read_layer(&l.model, &l.stmts, layer, p)?,
        hidden,
        &l.stmts.pairs,
    );
    let read = t.elapsed();
    let t = Instant::now();
    let statements = lm.statements();
    let needs = |geometry| views.iter().any(|v| v.geometry == geometry);
    let standardiser = needs(Geometry::Standardised).then(|| Standardiser::of(&lm.m, hidden));
    let exact_raw =
        |v: &View| v.geometry == Geometry::Raw && arithmetic_of(*v, settings) == Arithmetic::Exact;
    let exact = (needs(Geometry::Centred) || views.iter().any(exact_raw))
        .then(|| lm.raw(Arithmetic::Exact));
    // Each geometry appears once among a pooling's views: its blocks are moved, not copied.
    let mut centred_blocks = exact
        .as_ref()
        .filter(|_| needs(Geometry::Centred))
        .map(|raw| centred(raw, &statements));
    let mut exact = exact;
    let anisotropy = Some(statements.anisotropy());
    let layers = views
        .iter()
        .enumerate()
        .map(|(k, &view)| {
            let arithmetic = arithmetic_of(view, settings);
            let blocks = match view.geometry {
                Geometry::Raw if arithmetic == Arithmetic::Seed => lm.raw(Arithmetic::Seed),
                Geometry::Raw => exact.take().expect("computed for a raw exact view"),
                Geometry::Centred => centred_blocks.take().expect("computed for centring"),
                Geometry::Standardised => {
                    lm.standardised(standardiser.as_ref().expect("computed for the view"))
                }
            };
            // The other arithmetic is the seed's question about raw cosines.
            let ua_other = if primary && k == 0 && view.geometry == Geometry::Raw {
                let other = arithmetic.other();
                lm.raw(other).iter().map(|b| ua_of(b, other)).collect()
            } else {
                Vec::new()
            };
            LayerBlocks {
                blocks,
                ua_other,
                anisotropy,
            }
        })
        .collect();
    let gram_time = t.elapsed();
    let t = Instant::now();
    // CKA centres every feature itself, so it is the same for raw and centred vectors;
    // standardising rescales the features, so CKA then takes the z-scores.
    let n = l.stmts.ids.len();
    let cka = cka_form.map(|form| match (&standardiser, views[0].geometry) {
        (Some(z), Geometry::Standardised) => cka::layer(&z.apply(&lm.m), n, hidden, form),
        _ => cka::layer(&lm.m, n, hidden, form),
    });
    Ok((
        layers,
        cka,
        CpuTime {
            read,
            gram: gram_time,
            cka: t.elapsed(),
        },
    ))
}

/// Every category of a layer centred (`schemas::geometry::centre`), from its raw exact
/// blocks: the sidecar and the embeddings give the same numbers to this function.
fn centred(raw: &[CategoryBlocks], statements: &StatementGeometry) -> Vec<CategoryBlocks> {
    let layer = statements.centre();
    raw.iter()
        .zip(&statements.categories)
        .map(|(b, g)| centre(b, g, &layer))
        .collect()
}

/// One layer of the sidecar in a view's geometry (raw or centred: `view::why_not`
/// keeps the others away from a sidecar).
fn sidecar_blocks(layer: &SidecarLayer, geometry: Geometry) -> Vec<CategoryBlocks> {
    match (geometry, &layer.geometry) {
        (Geometry::Centred, Some(statements)) => centred(&layer.blocks, statements),
        (Geometry::Raw, _) => layer.blocks.clone(),
        _ => unreachable!("view::why_not admits only raw and, from format 3, centred"),
    }
}

/// Reads every cache (`read_cache`) into the reducer (`reduce`) and the CKA matrices of the
/// checkpoints compared across sizes, recording the time each took. Returns the CKA
/// pairs (in the order of the cross-size results, which the alignment indexes),
/// whether a compared cache was read from its sidecar, which holds no vectors, and
/// why the pairs were not computed, if they were not.
pub fn read_all(
    loaded: &mut [Loaded],
    views: &[View],
    selection: &Selection,
    grid: &Grid,
    res: Option<&Resamples>,
    settings: &AnalysisSettings,
    timings: &mut BTreeMap<String, f64>,
) -> Result<(Vec<cka::CkaPair>, bool, Option<String>)> {
    let t = Instant::now();
    let compared: Vec<usize> = selection.chosen.iter().map(|m| m.index).collect();
    let in_series: Vec<usize> = grid
        .sizes
        .iter()
        .filter(|g| g.members.len() > 1)
        .flat_map(|g| g.members.iter().map(|m| m.index))
        .collect();
    let from_sidecar = compared.iter().any(|&i| loaded[i].model.cache.grams_only);
    let form = if from_sidecar {
        Err(NO_VECTORS_IN_SIDECAR.to_string())
    } else if compared.len() >= 2 {
        cka_form(loaded, &compared)
    } else {
        Err(String::new())
    };
    let skipped = form.clone().err().filter(|why| !why.is_empty());
    // On the primary pooling only: its Grams ride along with the first read of each layer.
    let with_cka = form.ok();
    let mut cka_by_cache = Vec::with_capacity(loaded.len());
    let mut cpu = CpuTime::default();
    let total = loaded.iter().map(|l| l.layers.len()).sum::<usize>() * views.len();
    let arithmetics = views.iter().map(|&v| arithmetic_of(v, settings)).collect();
    let mut reducer = Reducer::new(res, arithmetics, settings.pair_centring, total);
    // Caches are finished in order, each once its last layer is reduced, so that at
    // most a batch's worth of caches is held unreduced.
    let mut finished = 0;
    for i in 0..loaded.len() {
        let needs = Needs {
            compared: settings.bootstrap * usize::from(compared.contains(&i)),
            training: settings.training_bootstrap * usize::from(in_series.contains(&i)),
        };
        reducer.add_cache(&loaded[i], views.len(), needs);
        let want_cka = with_cka.filter(|_| compared.contains(&i));
        let (grams, spent) = read_cache(&loaded[i], i, views, settings, want_cka, &mut reducer)?;
        cka_by_cache.push(grams);
        cpu += spent;
        while finished <= i && reducer.finish(finished, &mut loaded[finished]) {
            finished += 1;
        }
    }
    reducer.flush();
    reducer.done();
    while finished < loaded.len() && reducer.finish(finished, &mut loaded[finished]) {
        finished += 1;
    }
    cpu.gram += reducer.spent;
    let cka_grams: Vec<cka::ModelGrams> = compared
        .iter()
        .filter_map(|&i| cka_by_cache[i].take())
        .collect();
    timings.insert("read_and_gram".into(), t.elapsed().as_secs_f64());
    for (key, spent) in [
        ("read_cpu", cpu.read),
        ("gram_cpu", cpu.gram),
        ("cka_gram_cpu", cpu.cka),
    ] {
        timings.insert(key.into(), spent.as_secs_f64());
    }
    let t = Instant::now();
    let pairs = cka::all_pairs(&cka_grams);
    timings.insert("cka_pairs".into(), t.elapsed().as_secs_f64());
    Ok((pairs, from_sidecar, skipped))
}

// "Compact statistics" is the sidecar's old name, kept in the report's wording
// until the golden outputs are re-pinned.
const NO_VECTORS_IN_SIDECAR: &str = "the caches were read from their compact statistics (grams.parquet), which hold no vectors across categories; `--from-embeddings` computes it";

/// Share of the available memory the CKA Grams may take: the rest of the analysis
/// holds the category Grams and the bootstrap beside them.
const CKA_MEMORY_SHARE: f64 = 0.5;

/// How CKA is computed for the compared caches, or why it cannot be (see `decide`).
fn cka_form(loaded: &[Loaded], compared: &[usize]) -> Result<cka::CkaForm, String> {
    let Some(available) = schemas::available_memory() else {
        return Ok(cka::CkaForm::Gram);
    };
    let n = loaded[compared[0]].stmts.ids.len();
    let models: Vec<(usize, usize)> = compared
        .iter()
        .map(|&i| (loaded[i].layers.len(), loaded[i].model.hidden()))
        .collect();
    decide(n, &models, available as f64)
}

/// Each analysed layer of each compared model (`models`: layers, hidden size) keeps
/// its packed `n x n` Gram (n(n+1)/2 f64, 6.4 GB per layer at 40,000 statements),
/// the faster form where it fits in half of `available`, or else its centred
/// `n x hidden` features where those are smaller (more statements than twice the
/// widest hidden size) and fit. The estimate comes before anything is read.
fn decide(n: usize, models: &[(usize, usize)], available: f64) -> Result<cka::CkaForm, String> {
    let need = |form| -> f64 {
        models
            .iter()
            .map(|&(layers, hidden)| layers as f64 * cka::bytes_per_layer(form, n, hidden))
            .sum()
    };
    let budget = CKA_MEMORY_SHARE * available;
    if need(cka::CkaForm::Gram) <= budget {
        return Ok(cka::CkaForm::Gram);
    }
    let hiddens: Vec<usize> = models.iter().map(|&(_, h)| h).collect();
    let form = cka::choose(n, &hiddens);
    if need(form) <= budget {
        return Ok(form);
    }
    let what = match form {
        cka::CkaForm::Gram => "its n x n Gram matrices",
        cka::CkaForm::Features => "its centred n x hidden features (smaller than the n x n Grams)",
    };
    let layers: usize = models.iter().map(|&(l, _)| l).sum();
    Err(format!(
        "{what} (n = {n} statements) need about {:.1} GB for {layers} layers of {} models, more than half the {:.1} GB of memory available; analyse fewer layers (--layer-step) or models (--models), or fewer statements",
        need(form) / 1e9,
        models.len(),
        available / 1e9
    ))
}

/// The poolings of `views` in the order they first appear, each with the indices of
/// its views: each pooling is read once and serves every geometry.
fn by_pooling(views: &[View]) -> Vec<(Pooling, Vec<usize>)> {
    let mut out: Vec<(Pooling, Vec<usize>)> = Vec::new();
    for (vi, v) in views.iter().enumerate() {
        match out.iter_mut().find(|(p, _)| *p == v.pooling) {
            Some((_, vis)) => vis.push(vi),
            None => out.push((v.pooling, vec![vi])),
        }
    }
    out
}

/// Reads every sampled layer of every pooling of cache `i` into `reducer`, once per
/// pooling, in the geometry of each of its views; for the primary view also the UA of
/// the other arithmetic (so the report can say how much the choice matters on these
/// data) and, with a CKA form, what CKA keeps of the layer (returned, with the time
/// spent).
fn read_cache(
    l: &Loaded,
    i: usize,
    views: &[View],
    settings: &AnalysisSettings,
    with_cka: Option<cka::CkaForm>,
    reducer: &mut Reducer,
) -> Result<(Option<cka::ModelGrams>, CpuTime)> {
    let mut cpu = CpuTime::default();
    let poolings = by_pooling(views);
    if l.model.cache.grams_only {
        // Without embeddings the other arithmetic's UA stays uncomputed (`ua_other` empty).
        let (t, before) = (Instant::now(), reducer.spent);
        let mut next = vec![0; views.len()];
        let read: Vec<Pooling> = poolings.iter().map(|(p, _)| *p).collect();
        read_sidecar(&l.model, &l.stmts, &read, &l.layers, |pi, layer| {
            let anisotropy = layer.geometry.as_ref().map(StatementGeometry::anisotropy);
            for &vi in &poolings[pi].1 {
                let blocks = LayerBlocks {
                    blocks: sidecar_blocks(&layer, views[vi].geometry),
                    ua_other: Vec::new(),
                    anisotropy,
                };
                reducer.push(i, vi, next[vi], blocks);
                next[vi] += 1;
            }
        })?;
        // Batches that fill during the read are reduced inside it: not reading time.
        cpu.read = t.elapsed().saturating_sub(reducer.spent - before);
        return Ok((None, cpu));
    }
    let pairs_per_category: Vec<usize> = l.stmts.pairs.iter().map(Vec::len).collect();
    let mut cka_grams = None;
    for (p, vis) in &poolings {
        // Each layer read becomes one set of blocks per geometry.
        let batch = (batch_layers(&pairs_per_category, l.model.hidden()) / vis.len()).max(1);
        let primary = vis[0] == 0;
        let cka_here = with_cka.filter(|_| primary);
        let these: Vec<View> = vis.iter().map(|&vi| views[vi]).collect();
        let mut packed = Vec::new();
        for (c, chunk) in l.layers.chunks(batch).enumerate() {
            let read: Vec<(Vec<LayerBlocks>, Option<cka::LayerCka>, CpuTime)> = chunk
                .par_iter()
                .map(|&layer| read_layer_blocks(l, layer, *p, &these, primary, settings, cka_here))
                .collect::<Result<_>>()?;
            for (k, (blocks, g, spent)) in read.into_iter().enumerate() {
                for (&vi, b) in vis.iter().zip(blocks) {
                    reducer.push(i, vi, c * batch + k, b);
                }
                packed.extend(g);
                cpu += spent;
            }
        }
        if cka_here.is_some() {
            cka_grams = Some(cka::ModelGrams::new(
                l.model.display().to_string(),
                l.layers.clone(),
                packed,
            ));
        }
    }
    Ok((cka_grams, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::cka::CkaForm;

    #[test]
    fn cka_takes_the_grams_where_they_fit_then_the_features_then_nothing() {
        let gb = 1e9;
        // 1,000 statements: 4 MB per layer as a Gram.
        assert_eq!(
            decide(1_000, &[(10, 64), (12, 64)], 8.0 * gb),
            Ok(CkaForm::Gram)
        );
        // 60,000 statements at width 8: 14.4 GB per layer as a Gram, 3.8 MB as features.
        assert_eq!(
            decide(60_000, &[(4, 8), (5, 8)], 8.0 * gb),
            Ok(CkaForm::Features)
        );
        // Wide enough that the features are not smaller, and the Grams do not fit.
        let why = decide(60_000, &[(4, 40_000), (5, 40_000)], 8.0 * gb).unwrap_err();
        assert!(
            why.contains("n x n Gram matrices") && why.contains("n = 60000"),
            "{why}"
        );
        // Smaller, but still too large.
        let why = decide(60_000, &[(40, 2_048), (40, 2_048)], 8.0 * gb).unwrap_err();
        assert!(
            why.contains("centred n x hidden features") && why.contains("78.6 GB"),
            "{why}"
        );
    }
}
