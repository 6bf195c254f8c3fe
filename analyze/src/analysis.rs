//! The whole analysis: load, Gram matrices, seed-exact statistics, the rigorous
//! statistics (bootstrap, permutation, Spearman, Holm, leave-one-out, pair level).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use schemas::{Pooling, Scope};
use serde::Serialize;

use crate::bootstrap::{bootstrap_r, percentile, BootInput, Resamples};
use crate::cka;
use crate::correlation::{
    holm, leave_one_out, pearson, spearman, PermutationKind, Permutations, MAX_EXACT,
};
use crate::grid::{Grid, Selection};
use crate::load::{discover, read_layer, read_statements, ModelCache, Statements};
use crate::pairs::{pair_level, Centring};
use crate::peaks::{
    abs_peak, depth_pct, first_argmax, mean_std, nan_layers, peak_analysis, seed_summary, AbsPeak,
    PeakAnalysis, SeedSummary,
};
use crate::uniformity::{category_grams, ua, Arithmetic, CategoryGram};

mod training;
pub use training::{settling_index, SizeTraining, TrainingView, Verdict};

/// What the user asked for.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub cache: PathBuf,
    pub out: PathBuf,
    pub models: Option<Vec<String>>,
    pub layer_step: u32,
    #[serde(serialize_with = "display")]
    pub pooling: Pooling,
    /// How cosines are computed: the notebook's float32 kernel or float64.
    #[serde(serialize_with = "display")]
    pub arithmetic: Arithmetic,
    /// What the pair-level view's cosines are taken around.
    #[serde(serialize_with = "display")]
    pub pair_centring: Centring,
    pub bootstrap: usize,
    pub seed: u64,
    pub stability_threshold: f64,
    pub allow_mixed_datasets: bool,
    /// Monte Carlo draws when there are more than 8 categories.
    pub permutations: usize,
    /// Monte Carlo permutations even where every ordering could be tested.
    pub monte_carlo_permutations: bool,
    /// Also analyse the cache's other poolings (sensitivity).
    pub other_poolings: bool,
    /// The training step whose checkpoints the cross-size verdict compares
    /// (`--revision stepN`); None: the latest step common to all sizes.
    pub revision: Option<u64>,
    /// Resamples of the training view (the same at every step).
    pub training_bootstrap: usize,
    /// Read the embeddings even where a cache has compact statistics.
    pub from_embeddings: bool,
}

impl Settings {
    /// The compact statistics hold float64 Gram blocks only: the seed's float32
    /// arithmetic, and `--from-embeddings`, need the embeddings.
    pub fn scope(&self) -> Scope {
        match self.needs_embeddings() {
            None => Scope::PreferGrams,
            Some(_) => Scope::Full,
        }
    }

    /// The flag that makes this analysis read the embeddings, if any.
    fn needs_embeddings(&self) -> Option<&'static str> {
        if self.from_embeddings {
            Some("--from-embeddings")
        } else if self.arithmetic == Arithmetic::Seed {
            Some("--arithmetic seed")
        } else {
            None
        }
    }
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The seed's layer sampling: `range(0, n_layers + 1, step)` plus the last layer.
pub fn sampled_layers(n_layers: u32, step: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..=n_layers).step_by(step.max(1) as usize).collect();
    if *v.last().unwrap() != n_layers {
        v.push(n_layers);
    }
    v
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerStats {
    pub layer: u32,
    pub depth_pct: f64,
    /// Seed-exact Pearson r and its t-distribution p (n = categories).
    pub r: f64,
    pub p: f64,
    /// r in the other arithmetic (primary pooling only; NaN elsewhere).
    pub r_other_arithmetic: f64,
    pub p_holm: f64,
    pub perm_p: f64,
    pub perm_p_holm: f64,
    pub spearman_rho: f64,
    pub spearman_p: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub boot_median: f64,
    /// r with each category left out, in category order.
    pub loco_r: Vec<f64>,
    pub loco_min: f64,
    pub loco_max: f64,
    /// Pair level (n = pairs): r of per-pair centroid asymmetry with per-pair preference.
    pub pair_r: f64,
    pub pair_p: f64,
    pub pair_rho: f64,
    pub pair_rho_p: f64,
    /// Per category UA and preference (the seed's x and y).
    pub ua: Vec<f64>,
    pub pref: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeakBootstrap {
    pub max_pos_pct_median: f64,
    pub max_pos_pct_ci: [f64; 2],
    pub abs_pct_median: f64,
    pub abs_pct_ci: [f64; 2],
    /// Share of resamples whose peak falls on each sampled layer (keyed by layer).
    pub max_pos_layer_share: BTreeMap<u32, f64>,
    pub abs_layer_share: BTreeMap<u32, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelPooling {
    pub model: String,
    pub n_layers: u32,
    pub layers: Vec<LayerStats>,
    pub seed_summary: SeedSummary,
    pub abs_peak: AbsPeak,
    pub peak_bootstrap: Option<PeakBootstrap>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StabilityBootstrap {
    /// Share of resamples in which std of the peak positions < threshold.
    pub share_stable: f64,
    pub std_median: f64,
    pub std_ci: [f64; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolingResult {
    pub pooling: String,
    pub models: Vec<ModelPooling>,
    /// The seed's verdict (max positive r).
    pub peak_analysis: PeakAnalysis,
    /// The same verdict on the |r| peak.
    pub abs_peak_analysis: PeakAnalysis,
    pub stability_max_pos: Option<StabilityBootstrap>,
    pub stability_abs: Option<StabilityBootstrap>,
    /// Largest |r(seed) - r(exact)| over models and layers (primary pooling only).
    pub arithmetic_gap: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub display: String,
    pub model_id: String,
    pub n_layers: u32,
    pub hidden_size: u32,
    pub n_parameters: Option<u64>,
    pub size_for_ordering: u64,
    pub size_estimated: bool,
    pub layers_analyzed: Vec<u32>,
    /// Where the Gram blocks came from: `grams.parquet` (compact statistics, no
    /// embeddings read) or `embeddings.parquet`.
    pub gram_source: &'static str,
    pub manifest: schemas::Manifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub settings: Settings,
    pub models: Vec<ModelEntry>,
    pub categories: Vec<String>,
    pub pairs_per_category: Vec<usize>,
    pub permutation_kind: PermutationKind,
    pub n_permutations: usize,
    /// The smallest permutation p the design allows: 1/n! (exact) or 1/(draws+1).
    pub permutation_floor: f64,
    pub poolings: Vec<PoolingResult>,
    /// Layers of each model matched to the largest model's by representation (CKA).
    pub cka: cka::Alignment,
    /// The caches as series → sizes → steps, and the checkpoint per size compared.
    pub grid: Grid,
    pub selection: Selection,
    /// Present when some size has several checkpoints.
    pub training: Option<TrainingView>,
    pub warnings: Vec<String>,
    pub timings_s: BTreeMap<String, f64>,
}

impl Analysis {
    pub fn primary(&self) -> &PoolingResult {
        &self.poolings[0]
    }
}

/// Thread-seconds spent reading Parquet and building Gram matrices (for the benchmark).
static READ_NS: AtomicU64 = AtomicU64::new(0);
static GRAM_NS: AtomicU64 = AtomicU64::new(0);
static CKA_NS: AtomicU64 = AtomicU64::new(0);

struct Loaded {
    model: ModelCache,
    stmts: Statements,
    layers: Vec<u32>,
    /// grams[pooling][layer_index][category]
    grams: Vec<Vec<Vec<CategoryGram>>>,
    /// ua_other[layer_index][category]: UA of the primary pooling in the other arithmetic.
    ua_other: Vec<Vec<f64>>,
}

/// One layer read once: its category Grams, the UA of the other arithmetic (primary
/// pooling only) and its packed CKA Gram (when asked for).
struct LayerRead {
    grams: Vec<CategoryGram>,
    ua_other: Vec<f64>,
    cka: Option<Vec<f64>>,
}

/// What to compute from a layer besides its Grams in the chosen arithmetic.
#[derive(Clone, Copy)]
struct Extras {
    other_arithmetic: bool,
    cka: bool,
}

fn read_layer_grams(
    l: &Loaded,
    layer: u32,
    p: Pooling,
    arithmetic: Arithmetic,
    extras: Extras,
) -> Result<LayerRead> {
    let t = Instant::now();
    let m = read_layer(&l.model, &l.stmts, layer, p)?;
    READ_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let t = Instant::now();
    let hidden = l.model.hidden();
    let grams = category_grams(&m, hidden, &l.stmts.pairs, arithmetic);
    let other = arithmetic.other();
    let ua_other = if extras.other_arithmetic {
        category_grams(&m, hidden, &l.stmts.pairs, other)
            .iter()
            .map(|g| ua(g, other))
            .collect()
    } else {
        Vec::new()
    };
    GRAM_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let t = Instant::now();
    let cka = extras
        .cka
        .then(|| cka::packed_gram(&m, l.stmts.ids.len(), hidden));
    CKA_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(LayerRead {
        grams,
        ua_other,
        cka,
    })
}

/// Fewer categories leave r undefined (1), or ±1 by construction (2): no verdict
/// can rest on them.
pub const MIN_CATEGORIES: usize = 3;

/// The refusals that depend on the dataset rather than on one cache: too few
/// categories, and Monte Carlo permutations asked with no draws.
fn check_design(models: &[ModelCache], settings: &Settings) -> Result<()> {
    let m = &models[0];
    let cats = &m.manifest().dataset.categories;
    if cats.len() < MIN_CATEGORIES {
        bail!(
            "{}: the dataset has {} categor{} ({}); r across categories needs at least {MIN_CATEGORIES} (with 2 it is ±1 by construction); extract with a dataset of {MIN_CATEGORIES} or more categories",
            m.cache.dir.join(schemas::MANIFEST_FILE).display(),
            cats.len(),
            if cats.len() == 1 { "y" } else { "ies" },
            cats.join(", ")
        );
    }
    if (cats.len() > MAX_EXACT || settings.monte_carlo_permutations) && settings.permutations == 0 {
        let why = if settings.monte_carlo_permutations {
            "--monte-carlo-permutations asks for".to_string()
        } else {
            format!(
                "with {} categories (more than {MAX_EXACT}) permutation p-values are",
                cats.len()
            )
        };
        bail!(
            "--permutations 0: {why} Monte Carlo draws; pass --permutations 1000 or more (default 10000)"
        );
    }
    Ok(())
}

pub fn analyze(settings: &Settings) -> Result<Analysis> {
    let t0 = Instant::now();
    let mut timings = BTreeMap::new();
    let (mut loaded, sizes, mut warnings) = load(settings)?;
    let caches: Vec<&ModelCache> = loaded.iter().map(|l| &l.model).collect();
    let grid = Grid::group(&caches)?;
    let selection = grid.select(settings.revision, &caches)?;
    let poolings = poolings_to_analyse(&loaded, settings);
    timings.insert("validate_and_statements".into(), t0.elapsed().as_secs_f64());

    let (cka_pairs, compact) =
        read_all(&mut loaded, &poolings, &selection, settings, &mut timings)?;

    let t2 = Instant::now();
    let training = grid
        .has_axis()
        .then(|| training::view(&grid, &loaded, &sizes, settings));
    if training.is_some() {
        timings.insert("training_view".into(), t2.elapsed().as_secs_f64());
    }
    let loaded = chosen(loaded, &selection);
    if loaded.len() < 2 {
        warnings.push(format!(
            "only one model ({}): per-model results are reported, but the cross-model verdict needs at least 2 models and is not applicable",
            loaded[0].model.name
        ));
    }
    let categories = loaded[0].stmts.categories.clone();
    let perms = Permutations::new(
        categories.len(),
        settings.permutations,
        settings.seed,
        settings.monte_carlo_permutations,
    );
    let resamples = (settings.bootstrap > 0)
        .then(|| Resamples::draw(&sizes, settings.bootstrap, settings.seed));
    let results: Vec<PoolingResult> = poolings
        .iter()
        .enumerate()
        .map(|(pi, &pooling)| {
            analyze_pooling(&loaded, pi, pooling, &perms, resamples.as_ref(), settings)
        })
        .collect();
    warnings.extend(nan_warnings(&results));
    timings.insert("statistics".into(), t2.elapsed().as_secs_f64());
    let cka = cka::alignment(
        compact,
        settings.pooling,
        loaded[0].stmts.ids.len(),
        cka_pairs,
        &results[0].models,
    );
    timings.insert("total".into(), t0.elapsed().as_secs_f64());

    Ok(Analysis {
        settings: settings.clone(),
        models: loaded.iter().map(model_entry).collect(),
        categories,
        pairs_per_category: sizes,
        permutation_kind: perms.kind,
        n_permutations: perms.orders.len(),
        permutation_floor: perms.floor(),
        poolings: results,
        cka,
        grid,
        selection,
        training,
        warnings,
        timings_s: timings,
    })
}

/// Reads every cache's Gram blocks (see `compute_grams`) and the CKA matrices of the
/// checkpoints compared across sizes, recording the time each took. Returns the CKA
/// pairs (in the order of the cross-size results, which the alignment indexes) and
/// whether a compared cache came from compact statistics, which hold no vectors.
fn read_all(
    loaded: &mut [Loaded],
    poolings: &[Pooling],
    selection: &Selection,
    settings: &Settings,
    timings: &mut BTreeMap<String, f64>,
) -> Result<(Vec<cka::CkaPair>, bool)> {
    let t = Instant::now();
    let compared: Vec<usize> = selection.chosen.iter().map(|m| m.index).collect();
    let compact = compared.iter().any(|&i| loaded[i].model.cache.grams_only);
    // On the primary pooling only: its Grams ride along with the first read of each layer.
    let with_cka = compared.len() >= 2 && !compact;
    let mut cka_by_cache = Vec::with_capacity(loaded.len());
    for (i, l) in loaded.iter_mut().enumerate() {
        let want = with_cka && compared.contains(&i);
        cka_by_cache.push(compute_grams(l, poolings, settings.arithmetic, want)?);
    }
    let cka_grams: Vec<cka::ModelGrams> = compared
        .iter()
        .filter_map(|&i| cka_by_cache[i].take())
        .collect();
    timings.insert("read_and_gram".into(), t.elapsed().as_secs_f64());
    for (key, counter) in [
        ("read_cpu", &READ_NS),
        ("gram_cpu", &GRAM_NS),
        ("cka_gram_cpu", &CKA_NS),
    ] {
        timings.insert(key.into(), counter.swap(0, Ordering::Relaxed) as f64 * 1e-9);
    }
    let t = Instant::now();
    let pairs = cka::all_pairs(&cka_grams);
    timings.insert("cka_pairs".into(), t.elapsed().as_secs_f64());
    Ok((pairs, compact))
}

/// Discovers and checks the caches, reads their statements, and checks that every
/// model has the same pairs per category (the shared bootstrap needs it). Returns
/// the models, the pairs per category and the notes so far.
fn load(settings: &Settings) -> Result<(Vec<Loaded>, Vec<usize>, Vec<String>)> {
    let models = discover(
        &settings.cache,
        settings.models.as_deref(),
        settings.allow_mixed_datasets,
        settings.scope(),
    )?;
    check_design(&models, settings)?;
    if let Some(why) = settings.needs_embeddings() {
        for m in &models {
            m.cache
                .require_embeddings(why)
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    let mut warnings = crate::size::order_notes(&models);
    for m in &models {
        if !m.cache.poolings.contains(&settings.pooling) {
            bail!(
                "{}: holds poolings {:?} but --pooling asks for '{}'",
                m.cache.dir.join(schemas::MANIFEST_FILE).display(),
                m.manifest().run.poolings,
                settings.pooling
            );
        }
        if m.size_estimated {
            warnings.push(format!(
                "{}: manifest gives no n_parameters; ordered by n_layers * hidden_size^2 = {} instead",
                m.name, m.size
            ));
        }
    }
    let mut loaded = Vec::new();
    for m in models {
        let stmts = read_statements(&m)?;
        let layers = sampled_layers(m.n_layers(), settings.layer_step);
        loaded.push(Loaded {
            model: m,
            stmts,
            layers,
            grams: Vec::new(),
            ua_other: Vec::new(),
        });
    }
    let sizes: Vec<usize> = loaded[0].stmts.pairs.iter().map(Vec::len).collect();
    for l in &loaded[1..] {
        let s: Vec<usize> = l.stmts.pairs.iter().map(Vec::len).collect();
        if s != sizes {
            bail!(
                "{}: pairs per category {:?} differ from {}'s {:?}; the shared pair bootstrap needs the same pairs",
                l.model.cache.dir.join(schemas::STATEMENTS_FILE).display(),
                s,
                loaded[0].model.name,
                sizes
            );
        }
    }
    Ok((loaded, sizes, warnings))
}

/// The caches the cross-size verdict compares, one per size, in size order.
fn chosen(loaded: Vec<Loaded>, selection: &Selection) -> Vec<Loaded> {
    let mut slots: Vec<Option<Loaded>> = loaded.into_iter().map(Some).collect();
    selection
        .chosen
        .iter()
        .filter_map(|m| slots[m.index].take())
        .collect()
}

/// The primary pooling first, then (if asked) the other poolings every cache holds.
fn poolings_to_analyse(loaded: &[Loaded], settings: &Settings) -> Vec<Pooling> {
    let mut poolings = vec![settings.pooling];
    for p in Pooling::ALL {
        if settings.other_poolings
            && p != settings.pooling
            && loaded.iter().all(|l| l.model.cache.poolings.contains(&p))
        {
            poolings.push(p);
        }
    }
    poolings
}

/// Reads every sampled layer of every pooling and keeps only its category Gram
/// matrices; for the primary pooling also the UA of the other arithmetic (so the
/// report can say how much the choice matters on these data) and, if `with_cka`,
/// the layer's CKA Gram (returned).
fn compute_grams(
    l: &mut Loaded,
    poolings: &[Pooling],
    arithmetic: Arithmetic,
    with_cka: bool,
) -> Result<Option<cka::ModelGrams>> {
    let mut cka_grams = None;
    if l.model.cache.grams_only {
        read_grams(l, poolings)?;
        return Ok(None);
    }
    for (pi, &p) in poolings.iter().enumerate() {
        let extras = Extras {
            other_arithmetic: pi == 0,
            cka: with_cka && pi == 0,
        };
        let read: Vec<LayerRead> = l
            .layers
            .par_iter()
            .map(|&layer| read_layer_grams(l, layer, p, arithmetic, extras))
            .collect::<Result<_>>()?;
        let mut packed = Vec::new();
        let mut grams = Vec::new();
        for r in read {
            grams.push(r.grams);
            if pi == 0 {
                l.ua_other.push(r.ua_other);
            }
            packed.extend(r.cka);
        }
        l.grams.push(grams);
        if extras.cka {
            cka_grams = Some(cka::ModelGrams::new(
                l.model.display().to_string(),
                l.layers.clone(),
                packed,
            ));
        }
    }
    Ok(cka_grams)
}

/// The Gram blocks as the cache's sidecar stores them; without embeddings the other
/// arithmetic's UA stays uncomputed (`ua_other` empty).
fn read_grams(l: &mut Loaded, poolings: &[Pooling]) -> Result<()> {
    let t = Instant::now();
    let sizes: Vec<usize> = l.stmts.pairs.iter().map(Vec::len).collect();
    let cache = &l.model.cache;
    l.grams = schemas::read_grams(
        &cache.dir,
        &cache.manifest.files[schemas::GRAMS_FILE],
        poolings,
        &l.layers,
        &l.stmts.categories,
        &sizes,
    )
    .map_err(|e| anyhow!("{e}"))?;
    READ_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

fn model_entry(l: &Loaded) -> ModelEntry {
    let mi = &l.model.manifest().model;
    ModelEntry {
        name: l.model.name.clone(),
        display: mi.display_name.clone(),
        model_id: mi.id.clone(),
        n_layers: mi.n_layers,
        hidden_size: mi.hidden_size,
        n_parameters: mi.n_parameters,
        size_for_ordering: l.model.size,
        size_estimated: l.model.size_estimated,
        layers_analyzed: l.layers.clone(),
        gram_source: if l.model.cache.grams_only {
            schemas::GRAMS_FILE
        } else {
            schemas::EMBEDDINGS_FILE
        },
        manifest: l.model.manifest().clone(),
    }
}

/// One note per model and pooling whose r is NaN at some layer.
fn nan_warnings(results: &[PoolingResult]) -> Vec<String> {
    results
        .iter()
        .flat_map(|p| {
            p.models.iter().filter_map(|m| {
                let layers: Vec<u32> = m.layers.iter().map(|s| s.layer).collect();
                let r: Vec<f64> = m.layers.iter().map(|s| s.r).collect();
                nan_note(&format!("{} ({})", m.model, p.pooling), &layers, &r)
            })
        })
        .collect()
}

/// Names the layers whose r is NaN and what the seed's peak rule then does.
fn nan_note(what: &str, layers: &[u32], r: &[f64]) -> Option<String> {
    let nan = nan_layers(layers, r);
    let first = *nan.first()?;
    let rule = if first == layers[0] {
        "r is NaN at the first sampled layer, so, as Python's max() in the seed, every peak of this model is that layer (r = NaN)"
    } else {
        "as in the seed (Python's max()), a NaN never counts as a peak"
    };
    Some(format!(
        "{what}: r is NaN at layer{} {} (UA or the preferences are constant across categories); {rule}",
        if nan.len() == 1 { "" } else { "s" },
        nan.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    ))
}

fn stability(peaks: &[Vec<f64>], n: usize, threshold: f64) -> Option<StabilityBootstrap> {
    if peaks.len() < 2 || n == 0 {
        return None;
    }
    let stds: Vec<f64> = (0..n)
        .map(|b| {
            let v: Vec<f64> = peaks.iter().map(|p| p[b]).collect();
            mean_std(&v).1
        })
        .collect();
    let stable = stds.iter().filter(|&&s| s < threshold).count();
    Some(StabilityBootstrap {
        share_stable: stable as f64 / n as f64,
        std_median: percentile(&stds, 50.0),
        std_ci: [percentile(&stds, 2.5), percentile(&stds, 97.5)],
    })
}

/// Mean preference per category (the seed's y).
fn category_prefs(stmts: &Statements) -> Vec<f64> {
    stmts
        .pairs
        .iter()
        .map(|ps| ps.iter().map(|p| p.pref).sum::<f64>() / ps.len() as f64)
        .collect()
}

/// The per-layer statistics of one model and pooling (no bootstrap yet).
fn model_pooling(l: &Loaded, pi: usize, perms: &Permutations, settings: &Settings) -> ModelPooling {
    let n_layers = l.model.n_layers();
    let cat_prefs = category_prefs(&l.stmts);
    let pair_prefs: Vec<f64> = l.stmts.pairs.iter().flatten().map(|p| p.pref).collect();
    let mut layers: Vec<LayerStats> = l
        .layers
        .iter()
        .zip(&l.grams[pi])
        .enumerate()
        .map(|(li, (&layer, grams))| {
            let ua: Vec<f64> = grams.iter().map(|g| ua(g, settings.arithmetic)).collect();
            let (r, p) = pearson(&ua, &cat_prefs);
            let (rho, rho_p) = spearman(&ua, &cat_prefs);
            let loco = leave_one_out(&ua, &cat_prefs);
            let pl = pair_level(grams, &pair_prefs, settings.pair_centring);
            let r_other = l
                .ua_other
                .get(li)
                .filter(|_| pi == 0)
                .map_or(f64::NAN, |u| pearson(u, &cat_prefs).0);
            LayerStats {
                layer,
                depth_pct: depth_pct(layer, n_layers),
                r,
                p,
                r_other_arithmetic: r_other,
                p_holm: f64::NAN,
                perm_p: perms.p_value(&ua, &cat_prefs),
                perm_p_holm: f64::NAN,
                spearman_rho: rho,
                spearman_p: rho_p,
                ci_low: f64::NAN,
                ci_high: f64::NAN,
                boot_median: f64::NAN,
                loco_min: loco.iter().copied().fold(f64::INFINITY, f64::min),
                loco_max: loco.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                loco_r: loco,
                pair_r: pl.r,
                pair_p: pl.p,
                pair_rho: pl.rho,
                pair_rho_p: pl.rho_p,
                ua,
                pref: cat_prefs.clone(),
            }
        })
        .collect();
    let ps: Vec<f64> = layers.iter().map(|s| s.p).collect();
    let pps: Vec<f64> = layers.iter().map(|s| s.perm_p).collect();
    for (s, (a, b)) in layers.iter_mut().zip(holm(&ps).into_iter().zip(holm(&pps))) {
        s.p_holm = a;
        s.perm_p_holm = b;
    }
    let r: Vec<f64> = layers.iter().map(|s| s.r).collect();
    ModelPooling {
        model: l.model.display().to_string(),
        n_layers,
        seed_summary: seed_summary(l.model.display(), n_layers, &l.layers, &r),
        abs_peak: abs_peak(n_layers, &l.layers, &r),
        layers,
        peak_bootstrap: None,
    }
}

/// Bootstrap r of every (model, layer) of one pooling: `K x B`, one row per column
/// k in model-then-layer order.
fn bootstrap_columns(loaded: &[&Loaded], pi: usize, res: &Resamples) -> Vec<f64> {
    let mut columns: Vec<&[CategoryGram]> = Vec::new();
    let mut model_of_k = Vec::new();
    for (mi, l) in loaded.iter().enumerate() {
        for g in &l.grams[pi] {
            columns.push(g);
            model_of_k.push(mi);
        }
    }
    let prefs = loaded
        .iter()
        .map(|l| {
            l.stmts
                .pairs
                .iter()
                .map(|ps| ps.iter().map(|p| p.pref).collect())
                .collect()
        })
        .collect();
    bootstrap_r(res, &BootInput::new(&columns, model_of_k, prefs))
}

/// Fills one model's CIs from its bootstrap rows (`layers x B`) and returns the
/// peak position (% depth) of every resample: max positive r, then |r|.
fn attach_bootstrap(
    mp: &mut ModelPooling,
    layers: &[u32],
    rows: &[f64],
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    for (li, s) in mp.layers.iter_mut().enumerate() {
        let row = &rows[li * n..(li + 1) * n];
        s.ci_low = percentile(row, 2.5);
        s.ci_high = percentile(row, 97.5);
        s.boot_median = percentile(row, 50.0);
    }
    let mut pos = Vec::with_capacity(n);
    let mut abs = Vec::with_capacity(n);
    let mut pos_share = BTreeMap::new();
    let mut abs_share = BTreeMap::new();
    let mut r = vec![0.0; layers.len()];
    for b in 0..n {
        for (li, v) in r.iter_mut().enumerate() {
            *v = rows[li * n + b];
        }
        let ip = first_argmax(&r, |v| v);
        let ia = first_argmax(&r, f64::abs);
        pos.push(depth_pct(layers[ip], mp.n_layers));
        abs.push(depth_pct(layers[ia], mp.n_layers));
        *pos_share.entry(layers[ip]).or_insert(0.0) += 1.0 / n as f64;
        *abs_share.entry(layers[ia]).or_insert(0.0) += 1.0 / n as f64;
    }
    mp.peak_bootstrap = Some(PeakBootstrap {
        max_pos_pct_median: percentile(&pos, 50.0),
        max_pos_pct_ci: [percentile(&pos, 2.5), percentile(&pos, 97.5)],
        abs_pct_median: percentile(&abs, 50.0),
        abs_pct_ci: [percentile(&abs, 2.5), percentile(&abs, 97.5)],
        max_pos_layer_share: pos_share,
        abs_layer_share: abs_share,
    });
    (pos, abs)
}

/// Largest `|r(seed) - r(exact)|` over every model and layer of the primary pooling.
fn arithmetic_gap(models: &[ModelPooling]) -> Option<f64> {
    models
        .iter()
        .flat_map(|m| &m.layers)
        .map(|s| (s.r - s.r_other_arithmetic).abs())
        .filter(|d| d.is_finite())
        .reduce(f64::max)
}

fn analyze_pooling(
    loaded: &[Loaded],
    pi: usize,
    pooling: Pooling,
    perms: &Permutations,
    resamples: Option<&Resamples>,
    settings: &Settings,
) -> PoolingResult {
    let mut models: Vec<ModelPooling> = loaded
        .par_iter()
        .map(|l| model_pooling(l, pi, perms, settings))
        .collect();
    let threshold = settings.stability_threshold;
    let mut stability_max_pos = None;
    let mut stability_abs = None;
    if let Some(res) = resamples {
        let all: Vec<&Loaded> = loaded.iter().collect();
        let boot = bootstrap_columns(&all, pi, res);
        let n = res.n;
        let mut k = 0;
        let (mut pos_peaks, mut abs_peaks) = (Vec::new(), Vec::new());
        for (l, mp) in loaded.iter().zip(models.iter_mut()) {
            let nl = l.layers.len();
            let (pos, abs) = attach_bootstrap(mp, &l.layers, &boot[k * n..(k + nl) * n], n);
            k += nl;
            pos_peaks.push(pos);
            abs_peaks.push(abs);
        }
        stability_max_pos = stability(&pos_peaks, n, threshold);
        stability_abs = stability(&abs_peaks, n, threshold);
    }
    let pos: Vec<f64> = models.iter().map(|m| m.seed_summary.max_pos_pct).collect();
    let abs: Vec<f64> = models.iter().map(|m| m.abs_peak.pct).collect();
    PoolingResult {
        pooling: pooling.as_str().to_string(),
        peak_analysis: peak_analysis(&pos, threshold),
        abs_peak_analysis: peak_analysis(&abs, threshold),
        arithmetic_gap: if pi == 0 {
            arithmetic_gap(&models)
        } else {
            None
        },
        models,
        stability_max_pos,
        stability_abs,
    }
}

#[cfg(test)]
mod tests {
    use super::{nan_note, sampled_layers};

    #[test]
    fn nan_layers_are_named_with_the_rule_that_applies() {
        let nan = f64::NAN;
        assert_eq!(nan_note("m", &[0, 4], &[0.1, 0.2]), None);
        let later = nan_note("m (mean)", &[0, 4, 8], &[0.1, nan, nan]).unwrap();
        assert!(
            later.starts_with("m (mean): r is NaN at layers 4, 8"),
            "{later}"
        );
        assert!(later.contains("never counts as a peak"), "{later}");
        let first = nan_note("m", &[0, 4], &[nan, 0.3]).unwrap();
        assert!(
            first.contains("every peak of this model is that layer"),
            "{first}"
        );
    }

    #[test]
    fn seed_layer_sampling() {
        assert_eq!(sampled_layers(24, 4), vec![0, 4, 8, 12, 16, 20, 24]);
        assert_eq!(sampled_layers(6, 4), vec![0, 4, 6]);
        assert_eq!(sampled_layers(3, 1), vec![0, 1, 2, 3]);
    }
}
