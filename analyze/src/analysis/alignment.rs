//! Where each model's |r| peak lands in the largest model's depth, matched by
//! representation (linear CKA, `stats::cka`) rather than by percentage.

use schemas::Pooling;

use super::results::{Alignment, DepthMatch, ModelPooling};
use crate::stats::cka::CkaPair;
use crate::stats::peaks::{depth_pct, first_argmax};

const VECTORS: &str = "raw pooled vectors of every statement, column-centred, not normalised";

/// The alignment section from the pairs and the primary pooling's per-model results;
/// `skipped`: why the pairs were not computed (see `grams::read_all`).
pub fn alignment(
    skipped: Option<String>,
    pooling: Pooling,
    n_statements: usize,
    pairs: Vec<CkaPair>,
    models: &[ModelPooling],
) -> Alignment {
    let not_applicable = if models.len() < 2 {
        Some("a single model has no other model's layers to be aligned with".to_string())
    } else {
        skipped
    };
    let applicable = not_applicable.is_none();
    Alignment {
        applicable,
        not_applicable,
        pooling: pooling.as_str().to_string(),
        vectors: VECTORS,
        n_statements,
        reference: applicable.then(|| models[models.len() - 1].model.clone()),
        depth: if applicable {
            depth_matches(&pairs, models)
        } else {
            Vec::new()
        },
        pairs,
    }
}

/// Where each model's |r| peak lands in the reference (largest, last) model's depth.
fn depth_matches(pairs: &[CkaPair], models: &[ModelPooling]) -> Vec<DepthMatch> {
    let reference = models.len() - 1;
    let ref_n_layers = models[reference].n_layers;
    models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let peak = &m.abs_peak;
            let (matched_layer, cka) = if i == reference {
                (peak.layer, None)
            } else {
                let pair = pairs
                    .iter()
                    .find(|p| p.model_index == i && p.other_index == reference)?;
                let row = &pair.cka[pair.layers.iter().position(|&l| l == peak.layer)?];
                let best = first_argmax(row, |v| v);
                (pair.other_layers[best], Some(row[best]))
            };
            Some(DepthMatch {
                model: m.model.clone(),
                model_index: i,
                peak_layer: peak.layer,
                peak_pct: peak.pct,
                matched_layer,
                matched_pct: depth_pct(matched_layer, ref_n_layers),
                cka,
            })
        })
        .collect()
}
