//! The pipeline's reading step: every sampled layer of every pooling read once,
//! kept as its category Gram blocks (from the embeddings, or from the compact
//! statistics where a cache has them), with the CKA Grams of the compared caches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use rayon::prelude::*;
use schemas::Pooling;

use super::loaded::Loaded;
use super::results::Selection;
use crate::cache::{read_grams, read_layer};
use crate::settings::AnalysisSettings;
use crate::stats::cka;
use crate::stats::uniformity::{category_grams, ua, Arithmetic, CategoryGram};

/// Thread time spent on the layers read in parallel (the benchmark's breakdown):
/// reading Parquet, building the category Grams, building the CKA Grams.
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

/// One layer read once: its category Grams, the UA of the other arithmetic (primary
/// pooling only), its packed CKA Gram (when asked for) and the time each took.
struct LayerRead {
    grams: Vec<CategoryGram>,
    ua_other: Vec<f64>,
    cka: Option<Vec<f64>>,
    cpu: CpuTime,
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
    let read = t.elapsed();
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
    let gram = t.elapsed();
    let t = Instant::now();
    let cka = extras
        .cka
        .then(|| cka::packed_gram(&m, l.stmts.ids.len(), hidden));
    Ok(LayerRead {
        grams,
        ua_other,
        cka,
        cpu: CpuTime {
            read,
            gram,
            cka: t.elapsed(),
        },
    })
}

/// Reads every cache's Gram blocks (see `compute_grams`) and the CKA matrices of the
/// checkpoints compared across sizes, recording the time each took. Returns the CKA
/// pairs (in the order of the cross-size results, which the alignment indexes),
/// whether a compared cache came from compact statistics, which hold no vectors, and
/// why the pairs were not computed, if they were not.
pub fn read_all(
    loaded: &mut [Loaded],
    poolings: &[Pooling],
    selection: &Selection,
    settings: &AnalysisSettings,
    timings: &mut BTreeMap<String, f64>,
) -> Result<(Vec<cka::CkaPair>, bool, Option<String>)> {
    let t = Instant::now();
    let compared: Vec<usize> = selection.chosen.iter().map(|m| m.index).collect();
    let compact = compared.iter().any(|&i| loaded[i].model.cache.grams_only);
    let skipped = if compact {
        Some(COMPACT.to_string())
    } else if compared.len() >= 2 {
        cka_too_large(loaded, &compared)
    } else {
        None
    };
    // On the primary pooling only: its Grams ride along with the first read of each layer.
    let with_cka = compared.len() >= 2 && skipped.is_none();
    let mut cka_by_cache = Vec::with_capacity(loaded.len());
    let mut cpu = CpuTime::default();
    for (i, l) in loaded.iter_mut().enumerate() {
        let want = with_cka && compared.contains(&i);
        let (grams, spent) = compute_grams(l, poolings, settings.arithmetic, want)?;
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

/// Why the CKA Grams cannot be held, if they cannot: each analysed layer of each
/// compared model keeps its packed `n x n` Gram (n(n+1)/2 f64), which at 40,000
/// statements is 6.4 GB per layer; the estimate comes before anything is read.
fn cka_too_large(loaded: &[Loaded], compared: &[usize]) -> Option<String> {
    let available = schemas::available_memory()? as f64;
    let n = loaded[compared[0]].stmts.ids.len() as f64;
    let layers: usize = compared.iter().map(|&i| loaded[i].layers.len()).sum();
    let need = layers as f64 * n * (n + 1.0) / 2.0 * 8.0;
    (need > CKA_MEMORY_SHARE * available).then(|| {
        format!(
            "its n x n Gram matrices (n = {n} statements) need about {:.1} GB for {layers} layers of {} models, more than half the {:.1} GB of memory available; analyse fewer layers (--layer-step) or models (--models), or fewer statements",
            need / 1e9,
            compared.len(),
            available / 1e9
        )
    })
}

/// Reads every sampled layer of every pooling and keeps only its category Gram
/// matrices; for the primary pooling also the UA of the other arithmetic (so the
/// report can say how much the choice matters on these data) and, if `with_cka`,
/// the layer's CKA Gram (returned, with the time spent).
fn compute_grams(
    l: &mut Loaded,
    poolings: &[Pooling],
    arithmetic: Arithmetic,
    with_cka: bool,
) -> Result<(Option<cka::ModelGrams>, CpuTime)> {
    let mut cka_grams = None;
    let mut cpu = CpuTime::default();
    if l.model.cache.grams_only {
        // Without embeddings the other arithmetic's UA stays uncomputed (`ua_other` empty).
        let t = Instant::now();
        l.grams = read_grams(&l.model, &l.stmts, poolings, &l.layers)?;
        cpu.read = t.elapsed();
        return Ok((None, cpu));
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
            cpu += r.cpu;
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
    Ok((cka_grams, cpu))
}
