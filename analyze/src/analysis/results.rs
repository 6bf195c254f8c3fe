//! The analysis' results, as results.json, the report and the figures read them:
//! per layer, per model and pooling, across models, the CKA alignment and the
//! training view. Filled by the pipeline's steps beside this file.

use std::collections::BTreeMap;

use serde::Serialize;

use schemas::geometry::Anisotropy;

use super::view::NotComputed;
use crate::settings::AnalysisSettings;
use crate::stats::cka::CkaPair;
use crate::stats::correlation::PermutationKind;
use crate::stats::peaks::{AbsPeak, PeakAnalysis, SeedSummary};

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
    /// Anisotropy of the pooling's raw vectors at this layer (whatever the geometry):
    /// null where a sidecar older than format 3 was read.
    pub anisotropy: Option<Anisotropy>,
}

/// What the r at one model's |r| peak (primary pooling) rests on: the category that
/// moves it most when left out, the agreement of its p-values, and the pair level.
#[derive(Debug, Clone, Serialize)]
pub struct PeakEvidence {
    pub model: String,
    pub layer: u32,
    pub depth_pct: f64,
    pub r: f64,
    pub p: f64,
    pub perm_p: f64,
    pub spearman_rho: f64,
    pub spearman_p: f64,
    /// The category whose removal moves r the most, and r and Pearson's p without it.
    pub influential_category: Option<String>,
    pub r_without: f64,
    pub p_without: f64,
    /// Why that category carries r (`stats::influence::carries`); empty when it does not.
    pub carried_because: Vec<&'static str>,
    /// Pearson's p at least `P_RATIO` times below the permutation p.
    pub p_disagree: bool,
    /// The pair-level view at the same layer (n = pairs).
    pub pair_r: f64,
    pub pair_p: f64,
    pub n_pairs: usize,
}

impl PeakEvidence {
    pub fn carried(&self) -> bool {
        !self.carried_because.is_empty()
    }
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
    /// Whether the data place the |r| peak (`verdict::identify_peak`); None without a
    /// bootstrap, which both of its criteria need.
    pub abs_peak_identified: Option<bool>,
    /// Where the peak may lie when it is not identified.
    pub plateau: Option<Plateau>,
}

/// The layers an unidentified |r| peak may lie on: from the first to the last layer
/// that the peak position's bootstrap 95% CI or the peak layer's 95% CI of |r| leaves
/// possible, with the two spans that decided (points of depth).
#[derive(Debug, Clone, Serialize)]
pub struct Plateau {
    pub from_layer: u32,
    pub to_layer: u32,
    pub from_pct: f64,
    pub to_pct: f64,
    /// Width of the peak position's bootstrap 95% CI.
    pub peak_ci_span_pct: f64,
    /// From the first to the last layer whose |r| reaches the peak layer's 95% CI.
    pub within_ci_span_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StabilityBootstrap {
    /// Share of resamples in which std of the peak positions < threshold.
    pub share_stable: f64,
    pub std_median: f64,
    pub std_ci: [f64; 2],
}

/// One view's results: a pooling in a geometry.
#[derive(Debug, Clone, Serialize)]
pub struct PoolingResult {
    pub pooling: String,
    /// raw, centred or standardised (`schemas::geometry`).
    pub geometry: String,
    pub models: Vec<ModelPooling>,
    /// The seed's verdict (max positive r).
    pub peak_analysis: PeakAnalysis,
    /// The same verdict on the |r| peak.
    pub abs_peak_analysis: PeakAnalysis,
    pub stability_max_pos: Option<StabilityBootstrap>,
    pub stability_abs: Option<StabilityBootstrap>,
    /// Largest |r(seed) - r(exact)| over models and layers (primary pooling only).
    pub arithmetic_gap: Option<f64>,
    /// The answer's class on these models (`verdict::answer_class`).
    pub answer_class: AnswerClass,
}

/// The answer's class: *stable*, *shifts* or *not settled by these data*; written
/// as the headline writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    Stable,
    Shifts,
    NotSettled,
    /// One model: nothing to compare.
    NotApplicable,
}

impl AnswerClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Stable => "Stable",
            AnswerClass::Shifts => "Shifts",
            AnswerClass::NotSettled => "Not settled by these data",
            AnswerClass::NotApplicable => "Not applicable",
        }
    }
}

impl Serialize for AnswerClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub display: String,
    pub model_id: String,
    pub n_layers: u32,
    pub hidden_size: u32,
    pub n_parameters: Option<u64>,
    // results.json keeps the fields' old names.
    #[serde(rename = "size_for_ordering")]
    pub params_for_ordering: u64,
    #[serde(rename = "size_estimated")]
    pub params_estimated: bool,
    pub layers_analyzed: Vec<u32>,
    /// Where the Gram blocks came from: `grams.parquet` (the sidecar, no
    /// embeddings read) or `embeddings.parquet`.
    pub gram_source: &'static str,
    pub manifest: schemas::Manifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub settings: AnalysisSettings,
    pub models: Vec<ModelEntry>,
    pub categories: Vec<String>,
    pub pairs_per_category: Vec<usize>,
    pub permutation_kind: PermutationKind,
    pub n_permutations: usize,
    /// The smallest permutation p the design allows: 1/n! (exact) or 1/(draws+1).
    pub permutation_floor: f64,
    /// Every view: the primary first, then the other geometries of its pooling
    /// (`robustness`), then the other poolings (`--all-poolings`).
    pub poolings: Vec<PoolingResult>,
    /// Whether the answer survives the other geometries.
    pub robustness: Robustness,
    /// At each model's |r| peak of the primary pooling, what its r rests on.
    pub peak_evidence: Vec<PeakEvidence>,
    /// Layers of each model matched to the largest model's by representation (CKA).
    pub cka: Alignment,
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

    /// The answer's class: the primary pooling's.
    pub fn answer_class(&self) -> AnswerClass {
        self.primary().answer_class
    }
}

/// A model's |r| peak carried to the reference (largest) model's depth through the
/// reference layer whose representation is most alike (argmax CKA).
#[derive(Debug, Clone, Serialize)]
pub struct DepthMatch {
    pub model: String,
    pub model_index: usize,
    pub peak_layer: u32,
    pub peak_pct: f64,
    pub matched_layer: u32,
    pub matched_pct: f64,
    /// CKA of the peak layer with the matched one; None for the reference itself.
    pub cka: Option<f64>,
}

/// The `cka_alignment` section of results.json.
#[derive(Debug, Clone, Serialize)]
pub struct Alignment {
    /// False with a single model (nothing to align) or from the sidecar (no vectors).
    pub applicable: bool,
    /// Why not, when not applicable.
    pub not_applicable: Option<String>,
    pub pooling: String,
    pub vectors: &'static str,
    pub n_statements: usize,
    /// The largest model, whose depth the others are mapped to.
    pub reference: Option<String>,
    /// Every pair of models, the smaller (in size order) as rows.
    pub pairs: Vec<CkaPair>,
    pub depth: Vec<DepthMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Settles,
    KeepsMoving,
    Undetermined,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Settles => "settles",
            Verdict::KeepsMoving => "keeps moving",
            Verdict::Undetermined => "undetermined",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Settling {
    /// None: the peak moves by the threshold or more up to the last step.
    pub step: Option<u64>,
    /// Nearest-rank 2.5–97.5% of the resamples' settling steps (the last step
    /// standing for "none").
    pub ci: Option<[u64; 2]>,
    /// Share of resamples whose peak settles before the last step.
    pub share_settled: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointPeak {
    pub cache: String,
    pub revision: Option<String>,
    pub step: u64,
    /// r at each sampled layer (the size's `layers`).
    pub r: Vec<f64>,
    pub abs_peak: AbsPeak,
    /// 2.5–97.5 percentile of the resamples' |r|-peak positions (% depth).
    pub peak_pct_ci: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeTraining {
    pub label: String,
    pub series: Option<String>,
    pub size: Option<String>,
    pub n_layers: u32,
    pub layers: Vec<u32>,
    pub depth_pct: Vec<f64>,
    pub checkpoints: Vec<CheckpointPeak>,
    pub settling: Settling,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainingView {
    pub pooling: String,
    /// Resamples of the training view (`--training-bootstrap`), the same at every step.
    pub bootstrap: usize,
    pub seed: u64,
    pub threshold_pct: f64,
    pub sizes: Vec<SizeTraining>,
}

/// One checkpoint: `index` into the model list it was grouped from.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub index: usize,
    pub cache: String,
    pub revision: Option<String>,
    pub step: Option<u64>,
}

/// The checkpoints of one size, in step order.
#[derive(Debug, Clone, Serialize)]
pub struct SizeGroup {
    pub series: Option<String>,
    pub size: Option<String>,
    /// `series size`, or the cache folder when the manifest does not say.
    pub label: String,
    pub members: Vec<Member>,
}

/// Every size, in the model order (parameter count).
#[derive(Debug, Clone, Serialize)]
pub struct Grid {
    pub sizes: Vec<SizeGroup>,
}

/// Which checkpoint per size the cross-size verdict used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    /// The common step; None without a revision axis and steps.
    pub step: Option<u64>,
    /// `latest common step`, `--revision`, or `one cache per size`.
    pub rule: String,
    /// Per size, the chosen checkpoint.
    pub chosen: Vec<Member>,
}

/// One model's |r| peak in the primary view and in another geometry of its pooling.
#[derive(Debug, Clone, Serialize)]
pub struct PeakMove {
    pub model: String,
    pub layer: u32,
    pub pct: f64,
    pub r: f64,
    pub other_layer: u32,
    pub other_pct: f64,
    pub other_r: f64,
    /// r in the other geometry at the primary peak's layer.
    pub other_r_at_layer: f64,
    /// The peak moves by less than the stability threshold (points of % depth).
    pub survives: bool,
}

/// The primary view against one other geometry of its pooling.
#[derive(Debug, Clone, Serialize)]
pub struct GeometryCheck {
    pub geometry: String,
    /// Index of its view in `Analysis::poolings`.
    pub view: usize,
    pub peaks: Vec<PeakMove>,
    /// The answer's class there, and whether it is the primary's.
    pub answer_class: AnswerClass,
    pub verdict_survives: bool,
}

/// The robustness check: the answer in the other geometries, and the geometries it
/// could not take (with why).
#[derive(Debug, Clone, Serialize)]
pub struct Robustness {
    pub geometry: String,
    pub threshold_pct: f64,
    pub checks: Vec<GeometryCheck>,
    pub not_computed: Vec<NotComputed>,
}
