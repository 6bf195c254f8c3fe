//! The manifest a run writes before its first forward pass (`complete` false), so
//! that a killed run is resumed from it; the files and `complete` come at the end.

use std::collections::BTreeMap;

use anyhow::Result;
use schemas::{DatasetInfo, Manifest, ModelInfo, RunInfo, SCHEMA_VERSION};

use crate::model::runtime::Runtime;
use crate::run::context::RunContext;

/// The manifest of a run under way (`complete` false, no files listed), begun at
/// `started` (an earlier, resumed run's start). The caller adds the model's place
/// in the grid, the parity the probes proved and the shard.
pub(crate) fn under_way(ctx: &RunContext, rt: &Runtime, started: &str) -> Result<Manifest> {
    let RunContext {
        data,
        model,
        tok,
        name,
        settings,
        poolings,
        ..
    } = *ctx;
    Ok(Manifest {
        schema_version: SCHEMA_VERSION,
        complete: false,
        model: ModelInfo {
            id: model.export.source.model.clone(),
            // Set by the caller from `Place`, with series, size and step.
            revision: None,
            display_name: name.to_string(),
            n_layers: model.export.n_layers,
            hidden_size: model.export.hidden_size,
            n_parameters: model.export.n_parameters,
            dtype: model.dtype.as_str().to_string(),
            onnx_sha256: model.onnx_sha256.clone(),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
            files: model.files.clone(),
            adds_bos: Some(tok.adds_bos()?),
            series: None,
            size: None,
            step: None,
        },
        dataset: DatasetInfo {
            path: data.path.display().to_string(),
            sha256: data.sha256.clone(),
            categories: data.categories.clone(),
            n_pairs: data.n_pairs,
            n_statements: data.statements.len() as u32,
            statements_sha256: Some(schemas::statements_digest(
                data.statements.iter().map(|s| (s.id, s.text.as_str())),
            )),
        },
        run: RunInfo {
            tool: format!("extract {}", env!("CARGO_PKG_VERSION")),
            onnxruntime_version: rt.ort_version.clone(),
            execution_provider: rt.provider.to_string(),
            device_name: rt.device_name.clone(),
            batch_size: settings.batch_size,
            max_tokens: settings.max_tokens,
            poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
            started: started.to_string(),
            finished: None,
            parity: None,
            chunks: Vec::new(),
            shard: None,
            timings_s: None,
        },
        files: BTreeMap::new(),
        grams: None,
    })
}
