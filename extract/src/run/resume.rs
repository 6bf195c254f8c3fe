//! A run's identity: the inputs a cache must have been made from to be resumed or
//! reused ([`RunKey`]), and the check of an earlier run's manifest against them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use schemas::{Manifest, Pooling, MANIFEST_FILE};

use crate::inputs::dataset::Dataset;
use crate::model::model_dir::ModelDir;
use crate::run::options::Options;
use crate::store::chunks::RunKey;

/// What a cache must have been made from to be resumed or reused.
pub(crate) fn run_key(
    opts: &Options,
    data: &Dataset,
    model: &ModelDir,
    poolings: &[Pooling],
) -> RunKey {
    RunKey {
        model_files: model.files.clone(),
        dtype: model.dtype.as_str().to_string(),
        dataset_sha256: data.sha256.clone(),
        poolings: poolings.iter().map(|p| p.as_str().to_string()).collect(),
        n_layers: model.export.n_layers,
        hidden_size: model.export.hidden_size,
        shard: opts.shard.map(|s| (s.index, s.count)),
    }
}

/// A cache folder that already has a manifest.
pub(crate) enum Earlier {
    /// Complete and valid for these inputs: nothing to run.
    Complete(Box<Manifest>),
    /// Started at this time; its chunks are resumed.
    Started(String),
}

/// Checks an earlier run's manifest against these inputs (`key`, from the model
/// files as just hashed): refused when made from others.
pub(crate) fn earlier_run(cache_dir: &Path, key: &RunKey) -> Result<Earlier> {
    let manifest_path = cache_dir.join(MANIFEST_FILE);
    let m = Manifest::read(&manifest_path)?;
    let found = key_of(&m, &manifest_path)?;
    // A cache from before every model file was recorded names only these two.
    let mut comparable = key.clone();
    if m.model.files.is_empty() {
        comparable
            .model_files
            .retain(|name, _| found.model_files.contains_key(name));
    }
    let diff = found.differences(&comparable);
    if !diff.is_empty() {
        bail!(
            "{} holds a cache of other inputs ({} differ); pick another --name or delete that folder",
            cache_dir.display(),
            diff.join(", ")
        );
    }
    if !m.complete {
        return Ok(Earlier::Started(m.run.started));
    }
    schemas::validate_cache(cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}; the cache is marked complete but broken: delete {} and rerun",
            cache_dir.display()
        )
    })?;
    Ok(Earlier::Complete(Box::new(m)))
}

/// The inputs a manifest records, in [`RunKey`] form. Caches written before every
/// model file was recorded name only the graph and the tokenizer.
pub(crate) fn key_of(m: &Manifest, path: &Path) -> Result<RunKey> {
    let model_files = if m.model.files.is_empty() {
        BTreeMap::from([
            ("model.onnx".to_string(), m.model.onnx_sha256.clone()),
            (
                "tokenizer.json".to_string(),
                m.model.tokenizer_sha256.clone(),
            ),
        ])
    } else {
        m.model.files.clone()
    };
    Ok(RunKey {
        model_files,
        dtype: m.model.dtype.clone(),
        dataset_sha256: m.dataset.sha256.clone(),
        poolings: m
            .poolings(path)?
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        n_layers: m.model.n_layers,
        hidden_size: m.model.hidden_size,
        shard: m.run.shard.map(|s| (s.index, s.count)),
    })
}
