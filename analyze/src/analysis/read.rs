//! The pipeline's reading step: every sampled layer of every pooling read once and
//! reduced to what the statistics keep (`LayerSummary`, and the r of each bootstrap
//! resample), with the CKA Grams of the compared caches. A category's Gram blocks
//! (from the embeddings, or from the compact statistics where a cache has them)
//! are held only while their category is summarised: memory grows with the
//! statements, not with their square.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use rayon::prelude::*;
use schemas::gram::{category_blocks, category_gram};
use schemas::Pooling;

use super::loaded::{LayerSummary, Loaded};
use super::results::{Grid, Selection};
use super::training::resample_peaks;
use crate::cache::{read_grams, read_layer, Pair};
use crate::settings::AnalysisSettings;
use crate::stats::bootstrap::{resampled_prefs, resampled_r, resampled_ua, Resamples};
use crate::stats::cka;
use crate::stats::pairs::{pair_level, PairMoments};
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

/// How many resamples one cache needs, per pooling: the cross-size bootstrap's for a
/// compared cache (every pooling), the training view's for a checkpoint of a series
/// (primary pooling). The resamples are drawn once for the largest count, and every
/// shorter use takes their first rows, which a draw of its own count would give.
struct Needs {
    compared: usize,
    training: usize,
}

impl Needs {
    fn of(&self, pi: usize) -> usize {
        self.compared.max(if pi == 0 { self.training } else { 0 })
    }
}

/// What one layer's summary is computed with.
struct Plan<'a> {
    arithmetic: Arithmetic,
    centring: crate::stats::pairs::Centring,
    res: Option<&'a Resamples>,
    /// Resamples of this pooling (0: no bootstrap).
    n_boot: usize,
    /// Mean preference of each category in each resample, `[category][resample]`.
    pref_boot: &'a [Vec<f64>],
    pair_prefs: &'a [f64],
}

/// One layer reduced: its summary and the r of each of its resamples.
struct Reduced {
    summary: LayerSummary,
    boot_r: Vec<f64>,
}

impl Plan<'_> {
    /// Summarises one layer from its category Grams, each dropped once it is used
    /// (`grams` yields them in category order); `ua_other` is the other
    /// arithmetic's UA where it was computed.
    fn reduce(&self, grams: impl Iterator<Item = CategoryBlocks>, ua_other: Vec<f64>) -> Reduced {
        let (mut uas, mut asym, mut boot_ua) = (Vec::new(), Vec::new(), Vec::new());
        for (c, g) in grams.enumerate() {
            uas.push(ua_of(&g, self.arithmetic));
            asym.extend(PairMoments::of(&g).asymmetry(self.centring));
            if let Some(res) = self.res.filter(|_| self.n_boot > 0) {
                boot_ua.push(resampled_ua(&g, res, c, self.n_boot));
            }
        }
        let boot_r = if boot_ua.is_empty() {
            Vec::new()
        } else {
            resampled_r(&boot_ua, self.pref_boot, self.n_boot)
        };
        Reduced {
            summary: LayerSummary {
                ua: uas,
                ua_other,
                pair: pair_level(&asym, self.pair_prefs),
            },
            boot_r,
        }
    }
}

/// One layer read from the embeddings and reduced, with what CKA keeps of it when
/// asked for (in that form) and the time each step took.
fn read_layer_reduced(
    l: &Loaded,
    layer: u32,
    p: Pooling,
    plan: &Plan,
    other_arithmetic: bool,
    cka_form: Option<cka::CkaForm>,
) -> Result<(Reduced, Option<cka::LayerCka>, CpuTime)> {
    let t = Instant::now();
    let m = read_layer(&l.model, &l.stmts, layer, p)?;
    let read = t.elapsed();
    let t = Instant::now();
    let hidden = l.model.hidden();
    // The seed's arithmetic is a Gram computation (its float32 kernel); the exact one
    // keeps whichever form `category_blocks` picks, as the sidecar does.
    let gram = |cat: &Vec<Pair>, arithmetic: Arithmetic| {
        let a: Vec<usize> = cat.iter().map(|p| p.a).collect();
        let b: Vec<usize> = cat.iter().map(|p| p.b).collect();
        match arithmetic {
            Arithmetic::Exact => category_blocks(&m, hidden, &a, &b),
            Arithmetic::Seed => CategoryBlocks::Gram(category_gram(&m, hidden, &a, &b, arithmetic)),
        }
    };
    let other = plan.arithmetic.other();
    let ua_other = if other_arithmetic {
        l.stmts
            .pairs
            .iter()
            .map(|cat| ua_of(&gram(cat, other), other))
            .collect()
    } else {
        Vec::new()
    };
    let reduced = plan.reduce(
        l.stmts.pairs.iter().map(|cat| gram(cat, plan.arithmetic)),
        ua_other,
    );
    let gram_time = t.elapsed();
    let t = Instant::now();
    let cka = cka_form.map(|form| cka::layer(&m, l.stmts.ids.len(), hidden, form));
    Ok((
        reduced,
        cka,
        CpuTime {
            read,
            gram: gram_time,
            cka: t.elapsed(),
        },
    ))
}

/// Reads and reduces every cache (see `reduce_cache`) and the CKA matrices of the
/// checkpoints compared across sizes, recording the time each took. Returns the CKA
/// pairs (in the order of the cross-size results, which the alignment indexes),
/// whether a compared cache came from compact statistics, which hold no vectors, and
/// why the pairs were not computed, if they were not.
pub fn read_all(
    loaded: &mut [Loaded],
    poolings: &[Pooling],
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
    let compact = compared.iter().any(|&i| loaded[i].model.cache.grams_only);
    let form = if compact {
        Err(COMPACT.to_string())
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
    for (i, l) in loaded.iter_mut().enumerate() {
        let needs = Needs {
            compared: if compared.contains(&i) {
                settings.bootstrap
            } else {
                0
            },
            training: if in_series.contains(&i) {
                settings.training_bootstrap
            } else {
                0
            },
        };
        let want_cka = with_cka.filter(|_| compared.contains(&i));
        let (grams, spent) = reduce_cache(l, poolings, res, &needs, settings, want_cka)?;
        cka_by_cache.push(grams);
        cpu += spent;
    }
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
    Ok((pairs, compact, skipped))
}

const COMPACT: &str = "the caches were read from their compact statistics (grams.parquet), which hold no vectors across categories; `--from-embeddings` computes it";

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

/// Reads every sampled layer of every pooling and keeps its summary; for the primary
/// pooling also the UA of the other arithmetic (so the report can say how much the
/// choice matters on these data) and, with a CKA form, what CKA keeps of the layer
/// (returned, with the time spent). The bootstrap rows are kept for a compared
/// cache; a checkpoint of a series keeps only its resamples' peak positions.
fn reduce_cache(
    l: &mut Loaded,
    poolings: &[Pooling],
    res: Option<&Resamples>,
    needs: &Needs,
    settings: &AnalysisSettings,
    with_cka: Option<cka::CkaForm>,
) -> Result<(Option<cka::ModelGrams>, CpuTime)> {
    let mut cka_grams = None;
    let mut cpu = CpuTime::default();
    let most = res.map_or(0, |_| {
        (0..poolings.len())
            .map(|pi| needs.of(pi))
            .max()
            .unwrap_or(0)
    });
    let pref_boot: Vec<Vec<f64>> = match res {
        Some(res) if most > 0 => l
            .stmts
            .pairs
            .iter()
            .enumerate()
            .map(|(c, cat)| {
                let prefs: Vec<f64> = cat.iter().map(|p| p.pref).collect();
                resampled_prefs(res, c, &prefs, most)
            })
            .collect(),
        _ => Vec::new(),
    };
    let pair_prefs: Vec<f64> = l.stmts.pairs.iter().flatten().map(|p| p.pref).collect();
    let plan = |pi: usize| Plan {
        arithmetic: settings.arithmetic,
        centring: settings.pair_centring,
        res,
        n_boot: if res.is_some() { needs.of(pi) } else { 0 },
        pref_boot: &pref_boot,
        pair_prefs: &pair_prefs,
    };
    let mut reduced: Vec<Vec<Reduced>> = Vec::with_capacity(poolings.len());
    if l.model.cache.grams_only {
        // Without embeddings the other arithmetic's UA stays uncomputed (`ua_other` empty).
        let t = Instant::now();
        let plans: Vec<Plan> = (0..poolings.len()).map(plan).collect();
        let mut by_pooling: Vec<Vec<Reduced>> = poolings.iter().map(|_| Vec::new()).collect();
        read_grams(&l.model, &l.stmts, poolings, &l.layers, |pi, grams| {
            by_pooling[pi].push(plans[pi].reduce(grams.into_iter(), Vec::new()));
        })?;
        cpu.read = t.elapsed();
        reduced = by_pooling;
    } else {
        for (pi, &p) in poolings.iter().enumerate() {
            let plan = plan(pi);
            let cka_here = with_cka.filter(|_| pi == 0);
            let read: Vec<(Reduced, Option<cka::LayerCka>, CpuTime)> = l
                .layers
                .par_iter()
                .map(|&layer| read_layer_reduced(l, layer, p, &plan, pi == 0, cka_here))
                .collect::<Result<_>>()?;
            let mut packed = Vec::new();
            let mut layers = Vec::with_capacity(read.len());
            for (r, g, spent) in read {
                layers.push(r);
                packed.extend(g);
                cpu += spent;
            }
            reduced.push(layers);
            if cka_here.is_some() {
                cka_grams = Some(cka::ModelGrams::new(
                    l.model.display().to_string(),
                    l.layers.clone(),
                    packed,
                ));
            }
        }
    }
    keep(l, reduced, needs, res.is_some());
    Ok((cka_grams, cpu))
}

/// Stores the summaries, and of the bootstrap what the statistics read: the rows of
/// a compared cache (`layers x B`, its first `needs.compared` resamples) and the
/// training resamples' |r|-peak positions of a checkpoint in a series.
fn keep(l: &mut Loaded, reduced: Vec<Vec<Reduced>>, needs: &Needs, drawn: bool) {
    let rows = |layers: &[Reduced], n: usize| -> Vec<f64> {
        layers
            .iter()
            .flat_map(|r| r.boot_r[..n].iter().copied())
            .collect()
    };
    if drawn && needs.training > 0 {
        let n = needs.training;
        l.training_peaks = Some(resample_peaks(
            &rows(&reduced[0], n),
            &l.layers,
            l.model.n_layers(),
            n,
        ));
    }
    if drawn && needs.compared > 0 {
        l.boot_n = needs.compared;
        l.boot = reduced
            .iter()
            .map(|layers| rows(layers, needs.compared))
            .collect();
    }
    l.layers_read = reduced
        .into_iter()
        .map(|layers| layers.into_iter().map(|r| r.summary).collect())
        .collect();
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
