//! `results.json`: a superset of the seed's saved JSON. The seed's keys
//! (`timestamp`, `research_question`, `models.*.layer_results`, `summary`,
//! `peak_analysis`) keep their meanings and come from the primary pooling; the
//! rest (every pooling, the rigorous statistics, settings, provenance) sits beside them.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::analysis::results::Analysis;

/// The seed's wording of the question, kept verbatim for compatibility.
pub const SEED_QUESTION: &str = "Does the layer correlation peak shift with model size?";

pub fn to_json(a: &Analysis) -> Value {
    let primary = a.primary();
    let mut models = Map::new();
    for (entry, mp) in a.models.iter().zip(&primary.models) {
        let mut layer_results = Map::new();
        for s in &mp.layers {
            layer_results.insert(
                s.layer.to_string(),
                json!({"correlation": s.r, "p_value": s.p}),
            );
        }
        let key = if a
            .models
            .iter()
            .filter(|m| m.display == entry.display)
            .count()
            > 1
        {
            entry.name.clone()
        } else {
            entry.display.clone()
        };
        models.insert(
            key,
            json!({
                "model_name": entry.model_id,
                "n_layers": entry.n_layers,
                "layer_results": layer_results,
                "cache_folder": entry.name,
                "hidden_size": entry.hidden_size,
                "n_parameters": entry.n_parameters,
                "size_for_ordering": entry.params_for_ordering,
                "size_estimated": entry.params_estimated,
            }),
        );
    }
    let summary: Vec<Value> = primary
        .models
        .iter()
        .map(|m| serde_json::to_value(&m.seed_summary).unwrap_or(Value::Null))
        .collect();
    let pa = &primary.peak_analysis;
    json!({
        "timestamp": chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "research_question": SEED_QUESTION,
        "research_question_full": "Does the layer range where |r| peaks shift with model size?",
        "models": models,
        "summary": summary,
        "peak_analysis": {
            "mean_peak_pct": pa.mean_peak_pct,
            "std_peak_pct": pa.std_peak_pct,
            "peaks_stable": pa.peaks_stable,
            "verdict_applicable": pa.verdict_applicable,
            "threshold_pct": pa.threshold_pct,
            "n_models": pa.n_models,
        },
        "answer": crate::report::headline(a),
        "answer_class": a.answer_class(),
        "answer_evidence": crate::report::evidence(a),
        "answer_details": crate::report::answer_paragraph(a),
        "peak_evidence": a.peak_evidence,
        "primary_pooling": primary.pooling,
        "primary_geometry": primary.geometry,
        "categories": a.categories,
        "pairs_per_category": a.pairs_per_category,
        "permutation": {"kind": a.permutation_kind, "n": a.n_permutations},
        "settings": a.settings,
        "poolings": a.poolings,
        "robustness": a.robustness,
        "cka_alignment": a.cka,
        "provenance": a.models,
        "cross_size": cross_size(a),
        "training": a.training,
        "grid": a.grid,
        "gram_source": a.models.iter().map(|m| (m.name.clone(), Value::from(m.gram_source))).collect::<Map<String, Value>>(),
        "warnings": a.warnings,
        "timings_s": a.timings_s,
        "tool": format!("analyze {}", env!("CARGO_PKG_VERSION")),
    })
}

/// The cross-size view: which checkpoint of each size it compares, and its verdict.
fn cross_size(a: &Analysis) -> Value {
    let p = a.primary();
    json!({
        "step": a.selection.step,
        "rule": a.selection.rule,
        "caches": a.selection.chosen.iter().map(|m| &m.cache).collect::<Vec<_>>(),
        "abs_peak_analysis": p.abs_peak_analysis,
        "stability_abs": p.stability_abs,
        "peak_analysis": p.peak_analysis,
        "stability_max_pos": p.stability_max_pos,
    })
}

pub fn write(a: &Analysis, out: &Path) -> Result<()> {
    let path = out.join("results.json");
    let text = serde_json::to_string_pretty(&to_json(a))?;
    std::fs::write(&path, text + "\n").with_context(|| format!("{}: cannot write", path.display()))
}
