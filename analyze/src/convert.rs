//! `analyze convert --format safetensors`: each model's pooled embeddings (one
//! tensor per layer and pooling, `layer_<l>.<pooling>` f32 `[n_statements, hidden]`)
//! and NLLs (`nll_mean` f64 `[n_statements]`), statement metadata as JSON strings
//! in `__metadata__`, for PyTorch (`safetensors.torch.load_file`) and numpy users.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use safetensors::tensor::{Dtype, TensorView};

use crate::cache::{discover, read_layer, read_statements, ModelCache};
use crate::output;

/// Writes `<out>/<model folder>.safetensors` for every (or every named) model, all
/// or nothing (see `output`); returns the paths and notes.
pub fn convert_to_safetensors(
    cache: &Path,
    out: &Path,
    only: Option<&[String]>,
    allow_mixed: bool,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let recovered = output::check(out, cache, output::Kind::Convert)?;
    let models = discover(cache, only, allow_mixed, schemas::Scope::Full)?;
    for m in &models {
        m.cache
            .require_embeddings("analyze convert")
            .map_err(|e| anyhow!("{e}"))?;
    }
    let (names, mut notes) = output::write_atomically(out, output::Kind::Convert, |dir| {
        models
            .iter()
            .map(|m| write_model(m, dir))
            .collect::<Result<Vec<_>>>()
    })?;
    notes.splice(0..0, recovered);
    Ok((names.into_iter().map(|n| out.join(n)).collect(), notes))
}

/// Writes one model's file into `dir`; returns its file name.
fn write_model(m: &ModelCache, dir: &Path) -> Result<String> {
    let stmts = read_statements(m)?;
    let n = stmts.ids.len();
    let hidden = m.hidden();
    let mut tensors: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = Vec::new();
    for layer in 0..=m.n_layers() {
        for &p in &m.cache.poolings {
            let v = read_layer(m, &stmts, layer, p)?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((
                format!("layer_{layer}.{p}"),
                bytes,
                Dtype::F32,
                vec![n, hidden],
            ));
        }
    }
    let nll: Vec<u8> = stmts
        .nll_mean
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    tensors.push(("nll_mean".into(), nll, Dtype::F64, vec![n]));
    let ids: Vec<u32> = stmts.ids.clone();
    let mut meta = HashMap::new();
    let j = |v: serde_json::Value| v.to_string();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert("model_id".into(), m.manifest().model.id.clone());
    meta.insert("display_name".into(), m.display().to_string());
    meta.insert("n_layers".into(), m.n_layers().to_string());
    meta.insert("hidden_size".into(), hidden.to_string());
    meta.insert(
        "poolings".into(),
        j(serde_json::json!(m
            .cache
            .poolings
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>())),
    );
    meta.insert("dataset_sha256".into(), m.manifest().dataset.sha256.clone());
    meta.insert("statement_id".into(), j(serde_json::json!(ids)));
    meta.insert("category".into(), j(serde_json::json!(stmts.category)));
    meta.insert("pair_index".into(), j(serde_json::json!(stmts.pair_index)));
    meta.insert("side".into(), j(serde_json::json!(stmts.side)));
    meta.insert("text".into(), j(serde_json::json!(stmts.text)));
    meta.insert("manifest".into(), serde_json::to_string(m.manifest())?);
    meta.insert(
        "layout".into(),
        "row i of every tensor is statement_id[i]; layer_<l>.<pooling> is hidden_states[l] pooled (0 = token embeddings); nll_mean is transformers' loss".into(),
    );
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, bytes, dtype, shape)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("{name}: {e}"))
        })
        .collect::<Result<_>>()?;
    let name = format!("{}.safetensors", m.name);
    let path = dir.join(&name);
    safetensors::serialize_to_file(views, Some(meta), &path)
        .map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
    Ok(name)
}
