//! The whole analysis, as a pipeline: load the caches (`load`) and choose the views
//! (`view`: poolings in geometries), read every layer (`read`) and reduce it to what
//! the statistics keep (`reduce`), the statistics of each view (`poolings`), the
//! robustness check across geometries (`robustness`), the CKA alignment
//! (`alignment`) and the training view (`training`), and the evidence at each model's
//! peak (`evidence`); `verdict` judges whether each peak is placed and the answer's
//! class; the checkpoint grid decides which caches are compared. Every
//! result type is in `results`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;

use crate::cache::ModelCache;
use crate::settings::AnalysisSettings;
use crate::stats::bootstrap::Resamples;
use crate::stats::correlation::Permutations;
use load::{chosen, load, model_entry};
use loaded::Loaded;
use poolings::{analyze_pooling, nan_warnings};
use results::{Analysis, Grid, PoolingResult};

mod alignment;
mod evidence;
mod grid;
mod load;
mod loaded;
mod poolings;
mod progress;
mod read;
mod reduce;
pub mod results;
mod robustness;
mod training;
pub mod verdict;
pub mod view;

/// The pair resamples, drawn once for the largest count: the cross-size bootstrap
/// and the training view each take its first rows.
fn draw_resamples(
    grid: &Grid,
    pairs_per_category: &[usize],
    settings: &AnalysisSettings,
) -> Option<Resamples> {
    let training = if grid.has_axis() {
        settings.training_bootstrap
    } else {
        0
    };
    let most = settings.bootstrap.max(training);
    (most > 0).then(|| Resamples::draw(pairs_per_category, most, settings.seed))
}

/// The note that one compared model has no cross-model verdict.
fn single_model_note(loaded: &[Loaded]) -> Option<String> {
    (loaded.len() < 2).then(|| format!(
        "only one model ({}): per-model results are reported, but the cross-model verdict needs at least 2 models and is not applicable",
        loaded[0].model.name
    ))
}

/// The category orderings the permutation p-values use: all n!, or Monte Carlo draws.
fn permutations(n_categories: usize, settings: &AnalysisSettings) -> Permutations {
    Permutations::new(
        n_categories,
        settings.permutations,
        settings.seed,
        settings.monte_carlo_permutations,
    )
}

/// Runs the pipeline on `settings`; the timings of its steps are in the result.
pub fn analyze(settings: &AnalysisSettings) -> Result<Analysis> {
    let t0 = Instant::now();
    let mut timings = BTreeMap::new();
    let (mut loaded, pairs_per_category, mut warnings) = load(settings)?;
    let caches: Vec<&ModelCache> = loaded.iter().map(|l| &l.model).collect();
    let grid = Grid::group(&caches)?;
    let selection = grid.select(settings.revision, &caches)?;
    let (views, not_computed) = view::views_to_analyse(&loaded, settings, &mut warnings);
    timings.insert("validate_and_statements".into(), t0.elapsed().as_secs_f64());

    let resamples = draw_resamples(&grid, &pairs_per_category, settings);
    let (cka_pairs, from_sidecar, cka_skipped) = read::read_all(
        &mut loaded,
        &views,
        &selection,
        &grid,
        resamples.as_ref(),
        settings,
        &mut timings,
    )?;

    let t2 = Instant::now();
    let training = grid
        .has_axis()
        .then(|| training::view(&grid, &loaded, settings));
    if training.is_some() {
        timings.insert("training_view".into(), t2.elapsed().as_secs_f64());
    }
    let loaded = chosen(loaded, &selection);
    warnings.extend(single_model_note(&loaded));
    let categories = loaded[0].stmts.categories.clone();
    let perms = permutations(categories.len(), settings);
    let results: Vec<PoolingResult> = (views.iter().enumerate())
        .map(|(pi, &view)| analyze_pooling(&loaded, pi, view, &perms, settings))
        .collect();
    let robustness =
        robustness::check(&views, &results, not_computed, settings.stability_threshold);
    warnings.extend(nan_warnings(&results));
    let peak_evidence = evidence::at_peaks(
        &results[0],
        &categories,
        pairs_per_category.iter().sum(),
        perms.floor(),
    );
    timings.insert("statistics".into(), t2.elapsed().as_secs_f64());
    if let Some(why) = cka_skipped.as_ref().filter(|_| !from_sidecar) {
        warnings.push(format!("the CKA depth alignment was skipped: {why}"));
    }
    let cka = alignment::alignment(
        cka_skipped,
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
        pairs_per_category,
        permutation_kind: perms.kind,
        n_permutations: perms.orders.len(),
        permutation_floor: perms.floor(),
        poolings: results,
        robustness,
        peak_evidence,
        cka,
        grid,
        selection,
        training,
        warnings,
        timings_s: timings,
    })
}
