//! What the user asked for: the flags of `analyze [run]`, parsed by clap straight
//! into the settings the analysis reads and results.json records, so that a flag
//! is one field here. The field order is results.json's `settings` order.

use std::path::PathBuf;

use clap::Args;
use schemas::geometry::Geometry;
use schemas::{Pooling, Scope};
use serde::Serialize;

use crate::stats::pairs::Centring;
use crate::stats::uniformity::Arithmetic;

#[derive(Debug, Clone, Args, Serialize)]
pub struct AnalysisSettings {
    /// Cache folder holding one folder per model (written by extract), or its URL:
    /// http(s)://HOST/PATH or hf://datasets/ORG/NAME[@REVISION]/PATH (its model folders
    /// are --models, else those its root card README.md lists).
    #[arg(long)]
    #[serde(serialize_with = "lossy_path")]
    pub cache: PathBuf,
    /// Output folder for results.json, report.md, layer_correlations.csv and plots.
    #[arg(long)]
    #[serde(serialize_with = "lossy_path")]
    pub out: PathBuf,
    /// Only these model folders (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Analyse every Nth layer plus the last (the seed used 4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub layer_step: u32,
    /// Pooling that answers the question: mean_skip_first (seed-compatible), mean or last.
    #[arg(long, default_value = "mean_skip_first")]
    #[serde(serialize_with = "display")]
    pub pooling: Pooling,
    /// Geometry of UA's cosines: raw (the seed's pooled vectors), centred (minus the layer's mean over all statements) or standardised (centred, each dimension divided by its standard deviation; reads the embeddings).
    #[arg(long, default_value = "raw")]
    #[serde(serialize_with = "display")]
    pub geometry: Geometry,
    /// Do not also analyse the other geometries (by default the answer says whether each peak survives them).
    #[arg(long)]
    pub skip_robustness: bool,
    /// Cosine arithmetic: exact (float64) or seed (the notebook's float32 kernel, for parity with its numbers).
    #[arg(long, default_value = "exact")]
    #[serde(serialize_with = "display")]
    pub arithmetic: Arithmetic,
    /// Pair-level view: take cosines around the raw normalised vectors (none) or centre them on the category mean (category).
    #[arg(long, default_value = "none")]
    #[serde(serialize_with = "display")]
    pub pair_centring: Centring,
    /// Stratified pair-bootstrap resamples (0 turns the bootstrap off).
    #[arg(long, default_value_t = 10_000, value_parser = resamples)]
    pub bootstrap: usize,
    /// Seed of the bootstrap and of Monte Carlo permutations.
    // allow_hyphen_values: `--seed -1` is refused naming --seed, not as an unknown flag.
    #[arg(long, default_value_t = 42, allow_hyphen_values = true)]
    pub seed: u64,
    /// Peak-position std (points of % depth) below which peaks count as stable (the seed's 10).
    // allow_hyphen_values: `--stability-threshold -5` (or -inf) reaches the parser and
    // is refused with its reason rather than read as an unknown flag `-5`.
    #[arg(long, default_value_t = 10.0, value_parser = positive_finite, allow_hyphen_values = true)]
    pub stability_threshold: f64,
    /// Compare models extracted from different datasets (different dataset sha256).
    #[arg(long)]
    pub allow_mixed_datasets: bool,
    /// Monte Carlo permutations when there are more than 8 categories (else all n! are used).
    #[arg(long, default_value_t = 10_000, value_parser = draws)]
    pub permutations: usize,
    /// Draw --permutations random orderings even with 8 or fewer categories. It cannot
    /// resolve p below the exact floor 1/n! (the draws sample the same n! orderings);
    /// it gives the p-value that tools which always sample would report.
    #[arg(long)]
    pub monte_carlo_permutations: bool,
    /// Also analyse the cache's other poolings (a sensitivity section in the report; about 3x the reading time).
    // The fields are in results.json's order; --help lists this flag where it always
    // stood, after --allow-mixed-datasets: display order 11 ties with --permutations
    // (the 12th field) and sorts before it by name.
    // results.json keeps the field's old name, `other_poolings`.
    #[arg(long, display_order = 11)]
    #[serde(rename = "other_poolings")]
    pub all_poolings: bool,
    /// With training checkpoints: the step (stepN) whose caches the cross-size verdict compares [default: the latest step common to all sizes].
    #[arg(long, value_parser = step_revision)]
    pub revision: Option<u64>,
    /// With training checkpoints: resamples of the training view, the same at every step (0 turns it off).
    #[arg(long, default_value_t = 1_000, value_parser = resamples)]
    pub training_bootstrap: usize,
    /// Read the embeddings even where a cache has the sidecar (grams.parquet);
    /// `--arithmetic seed` always reads them.
    #[arg(long)]
    pub from_embeddings: bool,
    /// With --cache URL: where the fetched files are kept, shared with the Python reader [default: $UA_DOWNLOAD_DIR, else ~/.cache/ua-scaling/downloads].
    // Where the bytes sit changes no number, so results.json does not record it.
    #[arg(long)]
    #[serde(skip)]
    pub download_dir: Option<PathBuf>,
}

impl AnalysisSettings {
    /// The sidecar holds float64 Gram blocks and what centring needs: the
    /// seed's float32 arithmetic, the standardised geometry and `--from-embeddings`
    /// need the embeddings.
    pub fn scope(&self) -> Scope {
        match self.needs_embeddings() {
            None => Scope::PreferGrams,
            Some(_) => Scope::Full,
        }
    }

    /// The flag that makes this analysis read the embeddings, if any.
    pub fn needs_embeddings(&self) -> Option<&'static str> {
        if self.from_embeddings {
            Some("--from-embeddings")
        } else if self.arithmetic == Arithmetic::Seed {
            Some("--arithmetic seed")
        } else if self.geometry.needs_vectors() {
            Some("--geometry standardised")
        } else {
            None
        }
    }
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A folder name need not be UTF-8; results.json records it as best it can.
fn lossy_path<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Fewest resamples whose 2.5th and 97.5th percentiles are not the extremes.
pub const MIN_RESAMPLES: usize = 40;

/// `--bootstrap`, `--training-bootstrap`: 0 (off) or enough for a 95% interval.
fn resamples(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| "expected a count of resamples, e.g. 10000 (0 turns it off)".to_string())?;
    if n != 0 && n < MIN_RESAMPLES {
        return Err(format!(
            "{n} resamples cannot give a 95% interval (its 2.5th and 97.5th percentiles need at least {MIN_RESAMPLES}); pass 0 to turn it off, or {MIN_RESAMPLES} or more"
        ));
    }
    Ok(n)
}

/// Fewest Monte Carlo orderings: their p cannot go below 1/(draws + 1), which must
/// lie under a tenth of 0.05 for a p near 0.05 to be told from its floor (one draw
/// gave p = 0.5 whatever the data, and a confident flag beside it).
pub const MIN_PERMUTATIONS: usize = 200;

/// `--permutations`: 0 (with 8 or fewer categories, where every ordering is used and
/// no draws are made) or enough draws to resolve p.
fn draws(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| "expected a count of orderings, e.g. 10000".to_string())?;
    if n != 0 && n < MIN_PERMUTATIONS {
        return Err(format!(
            "{n} random orderings give a permutation p of at least 1/({n} + 1) = {:.3} whatever the data; pass {MIN_PERMUTATIONS} or more (default 10000)",
            1.0 / (n as f64 + 1.0)
        ));
    }
    Ok(n)
}

/// `--stability-threshold`: a std of peak positions is >= 0, so a threshold <= 0 or
/// NaN always says "shifts" and infinity always "stable".
fn positive_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of depth points, e.g. 10".to_string())?;
    if !v.is_finite() || v <= 0.0 {
        return Err("must be a finite number > 0 (points of % depth; the seed used 10)".into());
    }
    Ok(v)
}

/// `--revision`: a training step as Pythia names its revisions.
fn step_revision(s: &str) -> Result<u64, String> {
    schemas::checkpoint::step_of(s.trim())
        .ok_or_else(|| format!("'{s}' is not stepN (a training step, e.g. step143000)"))
}
