//! One cache on disk: `statements.parquet`, then `embeddings.parquet` with the
//! sidecar streamed from the same vectors (or the sidecar alone), then the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use schemas::{
    write_manifest, write_statements, DatasetInfo, EmbeddingsWriter, GramsWriter, Manifest,
    ModelInfo, Pooling, RunInfo, StatementRow, EMBEDDINGS_FILE, MANIFEST_FILE, SCHEMA_VERSION,
    STATEMENTS_FILE,
};

use crate::dataset::{statements, Dataset};
use crate::options::{Options, Spec};
use crate::plant::{plant, Checkpoint, Planted};
use crate::random::stream;

/// The checkpoints to write per model: one without a step in ladder mode.
pub(crate) fn checkpoints(options: &Options) -> Result<Vec<Option<Checkpoint>>> {
    let Some(steps) = &options.steps else {
        return Ok(vec![None]);
    };
    if steps.is_empty() {
        anyhow::bail!("--steps lists no step");
    }
    let settle_step = options.settle_step.unwrap_or(steps[steps.len() / 2]);
    Ok(steps
        .iter()
        .map(|&step| Some(Checkpoint { step, settle_step }))
        .collect())
}

/// One cache: statements, embeddings, then the manifest.
pub(crate) fn write_cache(
    options: &Options,
    dataset: &Dataset,
    mi: usize,
    spec: &Spec,
    checkpoint: Option<Checkpoint>,
) -> Result<PathBuf> {
    let name = match checkpoint {
        Some(c) => format!("{}-step{}", spec.name, c.step),
        None => spec.name.clone(),
    };
    let dir = options.out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    // Ladder caches keep the streams they always had; checkpoints get their own.
    let mseed = match checkpoint {
        Some(c) => stream(&[options.seed, 100 + mi as u64, 1 + c.step]),
        None => stream(&[options.seed, 100 + mi as u64]),
    };
    let (rows, cat_of, prefs) = statements(options, dataset, mseed);
    let st_entry = write_statements(&dir.join(STATEMENTS_FILE), &rows)?;
    let (profile, drive) = plant(mi, spec, checkpoint, options.flat, &cat_of, prefs);
    let planted = Planted::new(options, spec, mseed, profile, &cat_of, drive);
    let mut manifest = manifest(options, dataset, spec, &name, &rows);
    manifest.model.onnx_sha256 = model_hash(spec, options.seed, checkpoint);
    if let Some(c) = checkpoint {
        place(&mut manifest.model, spec, c);
    }
    manifest.files.insert(STATEMENTS_FILE.to_string(), st_entry);
    if options.sidecar_only {
        schemas::add_sidecar_from_vectors(&dir, &mut manifest, |layer| {
            Ok(options
                .poolings
                .iter()
                .copied()
                .zip(planted.layer(layer))
                .collect())
        })?;
    } else {
        // The sidecar streams from the vectors as they are written, as extract's does.
        let mut grams = (!options.no_grams)
            .then(|| GramsWriter::create(&dir, &manifest, &rows))
            .transpose()?;
        let entry = embeddings(&planted, &dir, grams.as_mut())?;
        manifest.files.insert(EMBEDDINGS_FILE.to_string(), entry);
        if let Some(grams) = grams {
            grams.finish(&mut manifest)?;
        }
    }
    write_manifest(&dir.join(MANIFEST_FILE), &manifest)?;
    Ok(dir)
}

/// A stand-in for the sha256 of model.onnx: sha256 of the model's spec, seed and step.
fn model_hash(spec: &Spec, seed: u64, checkpoint: Option<Checkpoint>) -> String {
    use sha2::{Digest, Sha256};
    let step = checkpoint.map_or(String::new(), |c| format!("|step{}", c.step));
    let text = format!(
        "synthetic|{}|{}|{}|{seed}{step}",
        spec.name, spec.layers, spec.hidden
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Series and size as extract derives them from a model id (else `synthetic` and
/// the spec's name), the checkpoint's revision and step.
fn place(m: &mut ModelInfo, spec: &Spec, c: Checkpoint) {
    let (series, size) = schemas::checkpoint::series_and_size(&spec.name)
        .unwrap_or_else(|| ("synthetic".into(), spec.name.clone()));
    m.series = Some(series);
    m.size = Some(size);
    m.revision = Some(format!("step{}", c.step));
    m.step = Some(c.step);
}

/// Writes every layer of every pooling to `embeddings.parquet`, and to `grams` when given.
fn embeddings(
    planted: &Planted,
    dir: &Path,
    mut grams: Option<&mut GramsWriter>,
) -> Result<schemas::FileEntry> {
    let ids: Vec<u32> = (0..planted.cat_of.len() as u32).collect();
    let poolings = &planted.options.poolings;
    let mut writer =
        EmbeddingsWriter::create(&dir.join(EMBEDDINGS_FILE), planted.hidden, poolings)?;
    for layer in 0..=planted.layers {
        let vectors = planted.layer(layer);
        if let Some(grams) = grams.as_deref_mut() {
            let by_pooling: BTreeMap<Pooling, &Vec<f32>> =
                poolings.iter().copied().zip(&vectors).collect();
            grams.add_layer(layer, &by_pooling)?;
        }
        writer.write_layer(layer, &ids, vectors)?;
    }
    Ok(writer.finish()?)
}

/// The manifest of one cache, its files, model hash and grid place still to fill in.
fn manifest(
    options: &Options,
    dataset: &Dataset,
    spec: &Spec,
    name: &str,
    rows: &[StatementRow],
) -> Manifest {
    let now = chrono::Local::now().to_rfc3339();
    Manifest {
        schema_version: SCHEMA_VERSION,
        complete: true,
        model: ModelInfo {
            id: format!("synthetic/{}", spec.name),
            revision: None,
            display_name: name.to_string(),
            n_layers: spec.layers,
            hidden_size: spec.hidden as u32,
            n_parameters: spec.params.filter(|_| !options.no_params),
            dtype: "float32".into(),
            // Filled with `model_hash`: each synthetic model gets its own "weights"
            // hash, as real ones do, so analyze's duplicate check sees a copy as one.
            onnx_sha256: String::new(),
            tokenizer_sha256: "0".repeat(64),
            files: Default::default(),
            adds_bos: Some(false),
            series: None,
            size: None,
            step: None,
        },
        dataset: DatasetInfo {
            path: format!("synthetic:{}", options.dataset_tag),
            sha256: dataset.sha256.clone(),
            categories: dataset.cat_names.clone(),
            n_pairs: dataset.n_pairs as u32,
            n_statements: rows.len() as u32,
            statements_sha256: Some(schemas::statements_digest(
                rows.iter().map(|r| (r.statement_id, r.text.as_str())),
            )),
        },
        run: RunInfo {
            tool: format!(
                "synth-cache {} (seed {}{})",
                env!("CARGO_PKG_VERSION"),
                options.seed,
                // The wording predates the name "sidecar-only": the golden outputs
                // record it.
                if options.sidecar_only {
                    ", compact-only: vectors generated at the full hidden size, not stored"
                } else {
                    ""
                }
            ),
            onnxruntime_version: "none (synthetic)".into(),
            execution_provider: "synthetic".into(),
            device_name: "none".into(),
            batch_size: 0,
            max_tokens: None,
            poolings: options
                .poolings
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            started: now.clone(),
            finished: Some(now),
            parity: None,
            chunks: Vec::new(),
            shard: None,
            timings_s: None,
        },
        files: Default::default(),
        grams: None,
    }
}
