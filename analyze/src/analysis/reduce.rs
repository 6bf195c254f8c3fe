//! The pipeline's reducing step: each layer's category blocks, as `read` produces
//! them, become what the statistics keep (`LayerSummary`, and the r of every
//! bootstrap resample), and the blocks are dropped. Layers wait in a batch of
//! bounded bytes so that many columns (layers of one cache, or of many small
//! caches) share each bootstrap GEMM (`resampled_ua_columns`), while a large
//! dataset's layers go one at a time: memory grows with the statements, not with
//! their square, and not with the number of caches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use schemas::geometry::Anisotropy;
use schemas::gram::keeps_vectors;

use super::loaded::{LayerSummary, Loaded};
use super::progress::Progress;
use super::training::resample_peaks;
use crate::stats::bootstrap::{resampled_prefs, resampled_r, resampled_ua_columns, Resamples};
use crate::stats::pairs::{pair_level, Centring, PairMoments};
use crate::stats::uniformity::{ua_of, Arithmetic, CategoryBlocks};

/// Bytes held for reducing at once: category blocks, or the resampled UA they give.
const BATCH_BYTES: usize = 64 << 20;

/// Bytes held for one category of `n` pairs: its three `n x n` Gram blocks or, kept
/// as vectors of a width, its two `n x width` matrices (float64 either way).
fn form_bytes(n: usize, vectors: Option<usize>) -> usize {
    match vectors {
        Some(width) => 2 * n * width * 8,
        None => 3 * n * n * 8,
    }
}

/// Bytes of one layer's category blocks for a cache of this shape.
fn layer_bytes(pairs_per_category: &[usize], hidden: usize) -> usize {
    pairs_per_category
        .iter()
        .map(|&n| form_bytes(n, keeps_vectors(n, hidden).then_some(hidden)))
        .sum()
}

/// Layers of this shape that fit in one batch (at least one).
pub(super) fn batch_layers(pairs_per_category: &[usize], hidden: usize) -> usize {
    (BATCH_BYTES / layer_bytes(pairs_per_category, hidden).max(1)).max(1)
}

/// How many resamples one cache needs, per pooling: the cross-size bootstrap's for a
/// compared cache (every pooling), the training view's for a checkpoint of a series
/// (primary pooling). The resamples are drawn once for the largest count, and every
/// shorter use takes their first rows, which a draw of its own count would give.
pub(super) struct Needs {
    pub compared: usize,
    pub training: usize,
}

impl Needs {
    fn of(&self, pi: usize) -> usize {
        self.compared.max(if pi == 0 { self.training } else { 0 })
    }
}

/// One layer's blocks of every category, with the other arithmetic's UA where it
/// was computed (else empty) and the anisotropy of the pooling's raw vectors where
/// the source holds what it needs.
pub(super) struct LayerBlocks {
    pub blocks: Vec<CategoryBlocks>,
    pub ua_other: Vec<f64>,
    pub anisotropy: Option<Anisotropy>,
}

/// One layer reduced: its summary and the r of each of its resamples.
struct Reduced {
    summary: LayerSummary,
    boot_r: Vec<f64>,
}

/// What one cache's layers are reduced with.
struct CacheInputs {
    needs: Needs,
    /// Mean preference of each category in each resample, `[category][resample]`.
    pref_boot: Vec<Vec<f64>>,
    pair_prefs: Vec<f64>,
    /// reduced[pooling][layer index], filled as batches are reduced.
    reduced: Vec<Vec<Option<Reduced>>>,
}

/// One layer of one view of one cache, waiting in the batch.
struct Column {
    cache: usize,
    pi: usize,
    li: usize,
    layer: LayerBlocks,
}

/// The batch, and what each cache's layers are reduced with.
pub(super) struct Reducer<'a> {
    res: Option<&'a Resamples>,
    /// Each view's arithmetic.
    arithmetics: Vec<Arithmetic>,
    centring: Centring,
    caches: Vec<CacheInputs>,
    pending: Vec<Column>,
    pending_bytes: usize,
    progress: Progress,
    /// Time spent reducing.
    pub spent: Duration,
}

impl<'a> Reducer<'a> {
    /// For `total` layers (caches x views x sampled layers), whose progress it shows.
    pub fn new(
        res: Option<&'a Resamples>,
        arithmetics: Vec<Arithmetic>,
        centring: Centring,
        total: usize,
    ) -> Self {
        Reducer {
            res,
            arithmetics,
            centring,
            caches: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            progress: Progress::new(total as u64),
            spent: Duration::ZERO,
        }
    }

    /// Registers the next cache (index `caches.len()`), before its layers come.
    pub fn add_cache(&mut self, l: &Loaded, n_poolings: usize, needs: Needs) {
        let most = match self.res {
            Some(_) => (0..n_poolings).map(|pi| needs.of(pi)).max().unwrap_or(0),
            None => 0,
        };
        let pref_boot = match self.res {
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
        self.caches.push(CacheInputs {
            needs,
            pref_boot,
            pair_prefs: l.stmts.pairs.iter().flatten().map(|p| p.pref).collect(),
            reduced: (0..n_poolings)
                .map(|_| l.layers.iter().map(|_| None).collect())
                .collect(),
        });
    }

    /// Queues layer `li` of pooling `pi` of `cache`; reduces the batch once full: its
    /// blocks, or the UA of its categories in every resample that reducing it makes
    /// (`--bootstrap 100000` makes few layers a full batch), reach `BATCH_BYTES`.
    pub fn push(&mut self, cache: usize, pi: usize, li: usize, layer: LayerBlocks) {
        let resampled = match self.res {
            Some(_) => self.caches[cache].needs.of(pi) * (layer.blocks.len() + 1) * 8,
            None => 0,
        };
        let blocks: usize = layer
            .blocks
            .iter()
            .map(|b| match b {
                CategoryBlocks::Gram(g) => form_bytes(g.n, None),
                CategoryBlocks::Vectors(v) => form_bytes(v.n, Some(v.hidden)),
            })
            .sum();
        self.pending_bytes += blocks.max(resampled);
        self.pending.push(Column {
            cache,
            pi,
            li,
            layer,
        });
        if self.pending_bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    fn resamples_of(&self, col: &Column) -> usize {
        match self.res {
            Some(_) => self.caches[col.cache].needs.of(col.pi),
            None => 0,
        }
    }

    /// Reduces every queued layer: per category one `resampled_ua_columns` over the
    /// layers that need the same number of resamples, then each layer's summary.
    pub fn flush(&mut self) {
        let t = Instant::now();
        let mut groups: BTreeMap<usize, Vec<Column>> = BTreeMap::new();
        let reducing = self.pending.len() as u64;
        for col in std::mem::take(&mut self.pending) {
            groups.entry(self.resamples_of(&col)).or_default().push(col);
        }
        self.pending_bytes = 0;
        for (n, columns) in groups {
            let n_cat = columns[0].layer.blocks.len();
            // boot_ua[category][column]
            let boot_ua: Vec<Vec<Vec<f64>>> = match self.res.filter(|_| n > 0) {
                Some(res) => (0..n_cat)
                    .map(|c| {
                        let blocks: Vec<&CategoryBlocks> =
                            columns.iter().map(|col| &col.layer.blocks[c]).collect();
                        resampled_ua_columns(&blocks, res, c, n)
                    })
                    .collect(),
                None => Vec::new(),
            };
            let me = &*self;
            let reduced: Vec<(usize, usize, usize, Reduced)> = columns
                .into_par_iter()
                .enumerate()
                .map(|(k, col)| {
                    let boot: Vec<&[f64]> = boot_ua.iter().map(|c| c[k].as_slice()).collect();
                    let arithmetic = me.arithmetics[col.pi];
                    let r = me.summarise(col.layer, &me.caches[col.cache], arithmetic, &boot, n);
                    (col.cache, col.pi, col.li, r)
                })
                .collect();
            for (cache, pi, li, r) in reduced {
                self.caches[cache].reduced[pi][li] = Some(r);
            }
        }
        self.progress.add(reducing);
        self.spent += t.elapsed();
    }

    /// Clears the progress bar once everything is reduced.
    pub fn done(&self) {
        self.progress.finish();
    }

    fn summarise(
        &self,
        layer: LayerBlocks,
        cache: &CacheInputs,
        arithmetic: Arithmetic,
        boot_ua: &[&[f64]],
        n: usize,
    ) -> Reduced {
        let ua = layer.blocks.iter().map(|g| ua_of(g, arithmetic)).collect();
        let asym: Vec<f64> = layer
            .blocks
            .iter()
            .flat_map(|g| PairMoments::of(g).asymmetry(self.centring))
            .collect();
        let boot_r = if boot_ua.is_empty() {
            Vec::new()
        } else {
            resampled_r(boot_ua, &cache.pref_boot, n)
        };
        Reduced {
            summary: LayerSummary {
                ua,
                ua_other: layer.ua_other,
                anisotropy: layer.anisotropy,
                pair: pair_level(&asym, &cache.pair_prefs),
            },
            boot_r,
        }
    }

    /// Stores in `l` (cache `cache`) what the statistics read once every one of its
    /// layers is reduced, and frees them here; false while some are still queued.
    /// A compared cache keeps its bootstrap rows (`layers x B`, its first
    /// `needs.compared` resamples); a checkpoint of a series keeps its training
    /// resamples' |r|-peak positions.
    pub fn finish(&mut self, cache: usize, l: &mut Loaded) -> bool {
        let inputs = &mut self.caches[cache];
        if inputs.reduced.iter().flatten().any(Option::is_none) {
            return false;
        }
        let reduced: Vec<Vec<Reduced>> = std::mem::take(&mut inputs.reduced)
            .into_iter()
            .map(|layers| layers.into_iter().flatten().collect())
            .collect();
        let needs = &inputs.needs;
        let drawn = self.res.is_some();
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
        inputs.pref_boot = Vec::new();
        l.layers_read = reduced
            .into_iter()
            .map(|layers| layers.into_iter().map(|r| r.summary).collect())
            .collect();
        true
    }
}
