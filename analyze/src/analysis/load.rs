//! The pipeline's first step: discover and check the caches, read their
//! statements, and choose the layers to analyse.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use schemas::geometry::Geometry;

use super::loaded::Loaded;
use super::results::{ModelEntry, Selection};
use crate::cache::{discover, params, read_statements, remote, ModelCache};
use crate::settings::AnalysisSettings;
use crate::stats::correlation::MAX_EXACT;
use crate::stats::uniformity::Arithmetic;

/// The seed's layer sampling: `range(0, n_layers + 1, step)` plus the last layer.
fn sampled_layers(n_layers: u32, step: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..=n_layers).step_by(step.max(1) as usize).collect();
    if *v.last().unwrap() != n_layers {
        v.push(n_layers);
    }
    v
}

/// Fewer categories leave r undefined (1), or ±1 by construction (2): no verdict
/// can rest on them.
const MIN_CATEGORIES: usize = 3;

/// The refusals that depend on the dataset rather than on one cache: too few
/// categories, and Monte Carlo permutations asked with no draws.
fn check_design(models: &[ModelCache], settings: &AnalysisSettings) -> Result<()> {
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

/// The geometry that answers the question must be computable from what is read:
/// the seed's float32 arithmetic is its raw cosines, and centring from a sidecar needs
/// the statement geometry of format 3.
fn check_geometry(models: &[ModelCache], settings: &AnalysisSettings) -> Result<()> {
    if settings.geometry != Geometry::Raw && settings.arithmetic == Arithmetic::Seed {
        bail!(
            "--arithmetic seed reproduces the seed's float32 cosines of the raw vectors; it takes --geometry raw, not --geometry {}",
            settings.geometry
        );
    }
    if settings.geometry != Geometry::Centred {
        return Ok(());
    }
    for m in models.iter().filter(|m| m.cache.grams_only) {
        let format = m.manifest().grams.as_ref().map_or(0, |g| g.format_version);
        if format < 3 {
            bail!(
                "{}: format {format}, without the statement geometry that --geometry centred needs; upgrade it with `analyze index --cache {}`, or pass --from-embeddings",
                m.cache.dir.join(schemas::GRAMS_FILE).display(),
                m.cache.dir.parent().unwrap_or(&m.cache.dir).display()
            );
        }
    }
    Ok(())
}

/// Refuses resampling and permutation counts whose arrays cannot fit in the memory
/// available, before anything is allocated: `--bootstrap 1000000000` would ask for
/// hundreds of GB and abort.
fn check_memory(models: &[ModelCache], settings: &AnalysisSettings) -> Result<()> {
    let Some(available) = schemas::available_memory() else {
        return Ok(());
    };
    let m = models[0].manifest();
    let n_pairs = f64::from(m.dataset.n_pairs);
    let n_categories = m.dataset.categories.len() as f64;
    let views = (if settings.all_poolings { 3.0 } else { 1.0 })
        + (if settings.skip_robustness { 0.0 } else { 2.0 });
    let columns: f64 = models
        .iter()
        .map(|c| f64::from(c.manifest().model.n_layers + 1))
        .sum::<f64>()
        * views;
    // Per resample: a u16 count per pair, an f64 r per (model, layer, view) column. A
    // bound: a checkpoint of a series keeps only its resamples' peaks (`reduce`).
    let per_resample = n_pairs * 2.0 + columns * 8.0;
    let monte_carlo = m.dataset.categories.len() > MAX_EXACT || settings.monte_carlo_permutations;
    let needs = [
        ("--bootstrap", settings.bootstrap as f64 * per_resample),
        (
            "--training-bootstrap",
            settings.training_bootstrap as f64 * per_resample,
        ),
        (
            "--permutations",
            if monte_carlo {
                settings.permutations as f64 * (n_categories * 8.0 + 24.0)
            } else {
                0.0
            },
        ),
    ];
    let total: f64 = needs.iter().map(|n| n.1).sum();
    if total <= available as f64 {
        return Ok(());
    }
    let (flag, bytes) = needs
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three entries");
    let value = match flag {
        "--bootstrap" => settings.bootstrap,
        "--training-bootstrap" => settings.training_bootstrap,
        _ => settings.permutations,
    };
    bail!(
        "{flag} {value}: needs about {:.1} GB for its {}, more than the {:.1} GB of memory available; pass a smaller count (the defaults: --bootstrap 10000, --training-bootstrap 1000, --permutations 10000)",
        bytes / 1e9,
        if flag == "--permutations" { "orderings" } else { "resamples" },
        available as f64 / 1e9
    )
}

/// The folder to read and the model folders in it to read (`--models`): `--cache`
/// itself, or, for a URL, the local copy of what this run reads, fetched first
/// (the models are then those fetched: the download folder may hold others).
fn local_root(settings: &AnalysisSettings) -> Result<(PathBuf, Option<Vec<String>>)> {
    if !remote::is_url(&settings.cache) {
        return Ok((settings.cache.clone(), settings.models.clone()));
    }
    let url = settings.cache.to_string_lossy();
    let dir = match &settings.download_dir {
        Some(d) => d.clone(),
        None => remote::default_download_dir()?,
    };
    let fetched = remote::fetch(
        &url,
        settings.models.as_deref(),
        settings.needs_embeddings().is_some(),
        &dir,
    )?;
    eprintln!(
        "fetched {:.1} MB from {url} into {}",
        fetched.bytes as f64 / 1e6,
        fetched.root.display()
    );
    Ok((fetched.root, Some(fetched.models)))
}

/// Discovers and checks the caches, reads their statements, and checks that every
/// model has the same pairs per category (the shared bootstrap needs it). Returns
/// the models, the pairs per category and the notes so far.
pub fn load(settings: &AnalysisSettings) -> Result<(Vec<Loaded>, Vec<usize>, Vec<String>)> {
    let (root, only) = local_root(settings)?;
    let models = discover(
        &root,
        only.as_deref(),
        settings.allow_mixed_datasets,
        settings.scope(),
    )?;
    check_design(&models, settings)?;
    check_memory(&models, settings)?;
    if let Some(why) = settings.needs_embeddings() {
        for m in &models {
            m.cache
                .require_embeddings(why)
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    let mut warnings = params::order_notes(&models);
    check_geometry(&models, settings)?;
    for m in &models {
        if !m.cache.poolings.contains(&settings.pooling) {
            bail!(
                "{}: holds poolings {:?} but --pooling asks for '{}'",
                m.cache.dir.join(schemas::MANIFEST_FILE).display(),
                m.manifest().run.poolings,
                settings.pooling
            );
        }
        if m.params_estimated {
            warnings.push(format!(
                "{}: manifest gives no n_parameters; ordered by n_layers * hidden_size^2 = {} instead",
                m.name, m.params
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
            layers_read: Vec::new(),
            boot: Vec::new(),
            boot_n: 0,
            training_peaks: None,
        });
    }
    let pairs_per_category: Vec<usize> = loaded[0].stmts.pairs.iter().map(Vec::len).collect();
    for l in &loaded[1..] {
        let s: Vec<usize> = l.stmts.pairs.iter().map(Vec::len).collect();
        if s != pairs_per_category {
            bail!(
                "{}: pairs per category {:?} differ from {}'s {:?}; the shared pair bootstrap needs the same pairs",
                l.model.cache.dir.join(schemas::STATEMENTS_FILE).display(),
                s,
                loaded[0].model.name,
                pairs_per_category
            );
        }
    }
    Ok((loaded, pairs_per_category, warnings))
}

/// The caches the cross-size verdict compares, one per size, in size order.
pub fn chosen(loaded: Vec<Loaded>, selection: &Selection) -> Vec<Loaded> {
    let mut slots: Vec<Option<Loaded>> = loaded.into_iter().map(Some).collect();
    selection
        .chosen
        .iter()
        .filter_map(|m| slots[m.index].take())
        .collect()
}

/// What results.json and the report say about one compared cache.
pub fn model_entry(l: &Loaded) -> ModelEntry {
    let mi = &l.model.manifest().model;
    ModelEntry {
        name: l.model.name.clone(),
        display: mi.display_name.clone(),
        model_id: mi.id.clone(),
        n_layers: mi.n_layers,
        hidden_size: mi.hidden_size,
        n_parameters: mi.n_parameters,
        params_for_ordering: l.model.params,
        params_estimated: l.model.params_estimated,
        layers_analyzed: l.layers.clone(),
        gram_source: if l.model.cache.grams_only {
            schemas::GRAMS_FILE
        } else {
            schemas::EMBEDDINGS_FILE
        },
        manifest: l.model.manifest().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::sampled_layers;

    #[test]
    fn seed_layer_sampling() {
        assert_eq!(sampled_layers(24, 4), vec![0, 4, 8, 12, 16, 20, 24]);
        assert_eq!(sampled_layers(6, 4), vec![0, 4, 6]);
        assert_eq!(sampled_layers(3, 1), vec![0, 1, 2, 3]);
    }
}
