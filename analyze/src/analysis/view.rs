//! What the pipeline analyses: views, each a pooling in a geometry. The first view
//! answers the question (`--pooling`, `--geometry`); then, unless
//! `--skip-robustness`, the same pooling in every other geometry the caches allow
//! (the robustness check); then, with `--all-poolings`, the other poolings in the
//! chosen geometry (the sensitivity table).

use schemas::geometry::Geometry;
use schemas::{Pooling, GRAMS_FORMAT_VERSION};
use serde::Serialize;

use super::loaded::Loaded;
use crate::settings::AnalysisSettings;
use crate::stats::uniformity::Arithmetic;

/// One pooling in one geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub pooling: Pooling,
    pub geometry: Geometry,
}

/// A geometry the robustness check leaves out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotComputed {
    pub geometry: String,
    pub why: String,
}

/// The views to analyse, primary first, and the geometries left out of the
/// robustness check with their reasons. Poolings left out of `--all-poolings` are
/// noted in `warnings`.
pub fn views_to_analyse(
    loaded: &[Loaded],
    settings: &AnalysisSettings,
    warnings: &mut Vec<String>,
) -> (Vec<View>, Vec<NotComputed>) {
    let primary = View {
        pooling: settings.pooling,
        geometry: settings.geometry,
    };
    let mut views = vec![primary];
    let mut not_computed = Vec::new();
    if !settings.skip_robustness {
        for g in Geometry::ALL.into_iter().filter(|&g| g != primary.geometry) {
            match why_not(loaded, g) {
                None => views.push(View {
                    pooling: primary.pooling,
                    geometry: g,
                }),
                Some(why) => not_computed.push(NotComputed {
                    geometry: g.to_string(),
                    why,
                }),
            }
        }
    }
    if settings.all_poolings {
        for p in Pooling::ALL.into_iter().filter(|&p| p != primary.pooling) {
            let lacking: Vec<&str> = loaded
                .iter()
                .filter(|l| !l.model.cache.poolings.contains(&p))
                .map(|l| l.model.name.as_str())
                .collect();
            if lacking.is_empty() {
                views.push(View {
                    pooling: p,
                    geometry: primary.geometry,
                });
            } else {
                warnings.push(format!(
                    "--all-poolings: `{p}` is left out: {} {} not extracted with it",
                    lacking.join(", "),
                    if lacking.len() == 1 { "was" } else { "were" }
                ));
            }
        }
    }
    (views, not_computed)
}

/// Why geometry `g` cannot be computed from what this analysis reads, if it cannot:
/// standardising needs the embeddings; centring from the sidecar needs its statement
/// geometry (format 3).
pub fn why_not(loaded: &[Loaded], g: Geometry) -> Option<String> {
    let from_sidecar: Vec<&Loaded> = loaded.iter().filter(|l| l.model.cache.grams_only).collect();
    if from_sidecar.is_empty() || g == Geometry::Raw {
        return None;
    }
    let names = |ls: &[&Loaded]| -> String {
        ls.iter()
            .map(|l| l.model.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if g.needs_vectors() {
        return Some(format!(
            "it needs the embeddings, and {} {} read from {} (pass --from-embeddings)",
            names(&from_sidecar),
            if from_sidecar.len() == 1 {
                "was"
            } else {
                "were"
            },
            schemas::GRAMS_FILE
        ));
    }
    let old: Vec<&Loaded> = from_sidecar
        .into_iter()
        .filter(|l| sidecar_format(l) < 3)
        .collect();
    (!old.is_empty()).then(|| {
        format!(
            "the {} of {} predates the statement geometry it needs (format {GRAMS_FORMAT_VERSION}); upgrade it with `analyze index --cache CACHE`, or pass --from-embeddings",
            schemas::GRAMS_FILE,
            names(&old)
        )
    })
}

fn sidecar_format(l: &Loaded) -> u32 {
    l.model
        .manifest()
        .grams
        .as_ref()
        .map_or(0, |g| g.format_version)
}

/// The arithmetic a view's cosines are summed in: the seed's float32 kernel is the
/// seed's raw cosines, so every other geometry is taken in exact arithmetic.
pub fn arithmetic_of(view: View, settings: &AnalysisSettings) -> Arithmetic {
    if view.geometry == Geometry::Raw {
        settings.arithmetic
    } else {
        Arithmetic::Exact
    }
}
